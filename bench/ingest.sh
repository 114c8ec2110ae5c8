#!/bin/bash
# Ingest benchmark, one command:  bash bench/ingest.sh
#
# Phase A (throughput): release build; collector on a fresh temp dir and free loopback ports, pinned to CPU1;
#   h2load pinned to CPU0 replays ONE pre-encoded 512-span mesh request (bench/make_mesh_frame.py) over
#   CLIENTS connections x STREAMS streams for WARMUP + DURATION seconds. Reported: spans/s acknowledged
#   (delta of meshscope_spans_accepted_total over the measured window; h2load counts a gRPC error as a 200,
#   so its count is only shown beside it), SQL count(*) == accepted check, collector CPU s per million spans
#   (utime+stime from /proc/PID/stat), peak RSS (VmHWM). Then SIGTERM (time to exit, exit code), restart,
#   count again, wait for compaction, bytes/span from manifest.json. The replayed frame repeats the same
#   512 trace/span ids, which Parquet dictionaries compress far better than real data: that bytes/span
#   figure is shown for completeness only.
# Phase B (on-disk size, realistic): a second fresh collector receives DISTINCT_SPANS spans of distinct
#   frames (fresh ids, url ids, request ids, times) from bench/otlp_send.py (grpcio, pinned to CPU0); SIGTERM,
#   restart, count check, wait for compaction; bytes/span = sum(bytes)/sum(rows) of the spans files in
#   manifest.json. Its spans/s is that of a Python sender and is reported as secondary.
#
# Knobs (environment): DURATION=30 WARMUP=3 CLIENTS=4 STREAMS=8 PIN=1 DISTINCT_SPANS=1000000
#   COLLECTOR_FLAGS="--memory-limit 1GiB" (extra collector flags) KEEP=1 (keep the temp dir) NOBUILD=1
#   PROFILE=1 (perf record -g on the collector during phase A; prints the top symbols; lowers throughput)
# Bounded: every wait has a limit; all processes started here are killed on exit.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

DURATION=${DURATION:-30}; WARMUP=${WARMUP:-3}; CLIENTS=${CLIENTS:-4}; STREAMS=${STREAMS:-8}
PIN=${PIN:-1}; DISTINCT_SPANS=${DISTINCT_SPANS:-1000000}; SPANS=512
read -r -a CFLAGS <<<"${COLLECTOR_FLAGS:-}"
C_CPU=""; L_PIN=()
if [ "$PIN" = 1 ]; then C_CPU=1; L_PIN=(taskset -c 0); fi

ensure_setup
[ -n "${NOBUILD:-}" ] || build_release
[ -x "$BIN" ] || die "no $BIN"
WORK=$(mktemp -d /tmp/meshscope-ingest.XXXXXX)
log "work dir $WORK"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg); DATE=$(date -u '+%Y-%m-%d %H:%M UTC'); COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo "+dirty")
TCK=$(clk_tck)

FRAME=$WORK/frame.grpc
FRAME_INFO=$("$PY" "$BENCH/make_mesh_frame.py" "$FRAME") || die "frame generation failed"
log "$FRAME_INFO"
AVG_BYTES=$(echo "$FRAME_INFO" | sed -n 's/.*avg \([0-9]*\) encoded bytes\/span.*/\1/p')
URL_PATH=/opentelemetry.proto.collector.trace.v1.TraceService/Export

run_h2load() { # seconds -> h2load output
  timeout $(($1 + 60)) "${L_PIN[@]}" h2load -t1 -c"$CLIENTS" -m"$STREAMS" -D "$1" -d "$FRAME" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$GRPC_PORT$URL_PATH" 2>&1
}

# ---------------- Phase A: throughput with a replayed frame ----------------
A=$WORK/a; mkdir -p "$A"
start_collector "$A/data" "$A/collector.log" "$C_CPU" "${CFLAGS[@]}"
PID=$COLLECTOR_PID
log "warm-up ${WARMUP}s"
run_h2load "$WARMUP" >"$A/h2load-warmup.txt"
acc0=$(metric meshscope_spans_accepted_total); ref0=$(metric meshscope_requests_refused_total); cpu0=$(cpu_ticks "$PID")
threads_cpu "$PID" >"$A/threads0.txt"
if [ -n "${PROFILE:-}" ]; then  # perf samples the collector during the window (costs some throughput)
  perf record -F 499 -g -p "$PID" -o "$A/perf.data" -- sleep "$DURATION" >"$A/perf-record.log" 2>&1 &
  PERF_PID=$!; STARTED_PIDS+=("$PERF_PID")
fi
t0=$(date +%s.%N)
log "measuring ${DURATION}s: h2load -c$CLIENTS -m$STREAMS$( [ "$PIN" = 1 ] && echo " (h2load CPU0; collector CPU1)")"
run_h2load "$DURATION" >"$A/h2load.txt"
t1=$(date +%s.%N); cpu1=$(cpu_ticks "$PID")
threads_cpu "$PID" >"$A/threads1.txt"
THREADS_A=$(threads_delta "$A/threads0.txt" "$A/threads1.txt" "$TCK" | head -6 | paste -sd ';' | sed 's/;/; /g')
if [ -n "${PROFILE:-}" ]; then
  wait "$PERF_PID" 2>/dev/null
  perf report -i "$A/perf.data" --no-children --sort symbol --percent-limit 1 --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -30 >"$A/perf-top.txt"
  perf report -i "$A/perf.data" --children --sort symbol --percent-limit 3 --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -40 >"$A/perf-children.txt"
  log "perf: top self-time symbols (full reports in $A/perf-*.txt, KEEP=1 keeps them)"; cat "$A/perf-top.txt" >&2
fi
acc1=$(metric meshscope_spans_accepted_total); ref1=$(metric meshscope_requests_refused_total)
rej1=$(metric meshscope_spans_rejected_total)
cat "$A/h2load.txt" | grep -E '^(finished|requests|status codes|time for request)' >&2
H2_OK=$(awk '/^requests:/ {print $8}' "$A/h2load.txt"); H2_FAIL=$(awk '/^requests:/ {print $10}' "$A/h2load.txt")
H2_2XX=$(awk '/^status codes:/ {print $3}' "$A/h2load.txt"); H2_MEAN=$(awk '/^time for request:/ {print $6}' "$A/h2load.txt")
ELAPSED=$(echo "$t1 - $t0" | bc -l)
ACC=$((acc1 - acc0))
SPS=$(echo "$ACC / $ELAPSED" | bc -l | xargs printf '%.0f')
H2_SPS=$(echo "${H2_2XX:-0} * $SPANS / $ELAPSED" | bc -l | xargs printf '%.0f')
CPU_S=$(echo "($cpu1 - $cpu0) / $TCK" | bc -l)
CPU_PER_M=$( [ "$ACC" -gt 0 ] && echo "$CPU_S / ($ACC / 1000000)" | bc -l | xargs printf '%.2f' || echo n/a)
REFUSED=$((ref1 - ref0))
REFUSED_PCT=$( [ "${H2_2XX:-0}" -gt 0 ] && echo "100 * $REFUSED / $H2_2XX" | bc -l | xargs printf '%.0f' || echo n/a)
CORES=$(echo "$CPU_S / $ELAPSED" | bc -l | xargs printf '%.2f')
sleep 2
HWM_A=$(vm_kib "$PID" VmHWM); RSS_A=$(vm_kib "$PID" VmRSS)
TOTAL_A=$(metric meshscope_spans_accepted_total)
COUNT_A=$(sql_scalar 'SELECT count(*) AS n FROM spans')
WAL_A=$(du -sb "$A/data/wal" 2>/dev/null | cut -f1)
log "accepted $ACC in ${ELAPSED}s = $SPS spans/s; h2load 2xx x 512 = $H2_SPS/s; refused requests +$((ref1 - ref0)); total accepted $TOTAL_A, SQL count $COUNT_A"
stop_collector; STOP_A="$STOP_RC in ${STOP_SECS}s"
log "SIGTERM: exit $STOP_A"
start_collector "$A/data" "$A/collector.log" "$C_CPU" "${CFLAGS[@]}"
COUNT_A2=$(sql_scalar 'SELECT count(*) AS n FROM spans')
log "after restart: SQL count $COUNT_A2; waiting for compaction"
WAITED_A=$(wait_compaction "$A/data" 240)
read -r FILES_A ROWS_A BYTES_A <<<"$(manifest_stats "$A/data")"
BPS_A=$( [ "$ROWS_A" -gt 0 ] && echo "$BYTES_A / $ROWS_A" | bc -l | xargs printf '%.1f' || echo n/a)
log "replayed-frame data: $FILES_A files, $ROWS_A rows, $BYTES_A bytes = $BPS_A B/span (waited ${WAITED_A}s)"
stop_collector

# ---------------- Phase B: bytes/span on distinct data ----------------
B=$WORK/b; mkdir -p "$B"
NFR=$(( (DISTINCT_SPANS + SPANS - 1) / SPANS ))
start_collector "$B/data" "$B/collector.log" "$C_CPU" "${CFLAGS[@]}"
PID=$COLLECTOR_PID
cpub0=$(cpu_ticks "$PID")
log "sending $NFR distinct frames ($((NFR * SPANS)) spans) with otlp_send.py"
SEND_JSON=$("${L_PIN[@]}" "$PY" "$BENCH/otlp_send.py" --target 127.0.0.1:$GRPC_PORT --frames "$NFR" --conc 8 --max-seconds 600)
cpub1=$(cpu_ticks "$PID")
echo "$SEND_JSON" >&2
jget() { echo "$SEND_JSON" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
SENT_OK=$(jget spans_ok); SEND_SPS=$(jget spans_per_s); SEND_LOST=$(jget frames_lost); SEND_RETRIES=$(jget retries)
B_AVG_BYTES=$(jget avg_encoded_bytes_per_span)
CPU_B_PER_M=$( [ "$SENT_OK" -gt 0 ] && echo "($cpub1 - $cpub0) / $TCK / ($SENT_OK / 1000000)" | bc -l | xargs printf '%.2f' || echo n/a)
sleep 2
TOTAL_B=$(metric meshscope_spans_accepted_total); COUNT_B=$(sql_scalar 'SELECT count(*) AS n FROM spans')
HWM_B=$(vm_kib "$PID" VmHWM)
stop_collector; STOP_B="$STOP_RC in ${STOP_SECS}s"
log "SIGTERM: exit $STOP_B"
start_collector "$B/data" "$B/collector.log" "$C_CPU" "${CFLAGS[@]}"
COUNT_B2=$(sql_scalar 'SELECT count(*) AS n FROM spans')
log "after restart: SQL count $COUNT_B2 (sent OK $SENT_OK); waiting for compaction"
WAITED_B=$(wait_compaction "$B/data" 240)
read -r FILES_B ROWS_B BYTES_B <<<"$(manifest_stats "$B/data")"
BPS_B=$( [ "$ROWS_B" -gt 0 ] && echo "$BYTES_B / $ROWS_B" | bc -l | xargs printf '%.1f' || echo n/a)
DU_B=$(du -sb "$B/data/tables/spans" 2>/dev/null | cut -f1)
PARTS_B=$(manifest_partitions "$B/data")
stop_collector

# ---------------- checks + summary ----------------
CHECKS=()
# h2load ends each run with up to CLIENTS x STREAMS requests in flight and resets them; the collector may
# still store such a request without counting it as acknowledged (the answer never went out). So phase A's
# stored rows may exceed the acknowledged count by at most 2 runs x CLIENTS x STREAMS x 512; fewer rows than
# acknowledged is a loss.
SLACK=$((2 * CLIENTS * STREAMS * SPANS))
for pair in "SQL count before SIGTERM:$COUNT_A" "SQL count after restart:$COUNT_A2" "manifest rows:$ROWS_A"; do
  what=${pair%%:*}; n=${pair##*:}
  if ! [[ "$n" =~ ^[0-9]+$ ]]; then CHECKS+=("phase A: $what is '$n'")
  elif [ "$n" -lt "$TOTAL_A" ]; then CHECKS+=("phase A: $what $n < acknowledged $TOTAL_A: acknowledged spans LOST")
  elif [ "$n" -gt $((TOTAL_A + SLACK)) ]; then CHECKS+=("phase A: $what $n > acknowledged $TOTAL_A + in-flight slack $SLACK")
  fi
done
UNACKED_A=$(( ${COUNT_A2:-0} - TOTAL_A ))
[ "$TOTAL_B" = "$SENT_OK" ] || CHECKS+=("phase B: accepted metric $TOTAL_B != spans answered OK $SENT_OK")
[ "$COUNT_B2" = "$SENT_OK" ] || CHECKS+=("phase B: SQL count after restart $COUNT_B2 != spans answered OK $SENT_OK")
[ "$ROWS_B" = "$SENT_OK" ] || CHECKS+=("phase B: manifest rows $ROWS_B != spans answered OK $SENT_OK")
[ "$SEND_LOST" = 0 ] || CHECKS+=("phase B: $SEND_LOST frames lost (non-retryable errors)")
[ -f "$WORK/rss-cap-hit" ] && CHECKS+=("$(cat "$WORK/rss-cap-hit")")
[ "${STOP_A%% *}" = 0 ] || CHECKS+=("phase A: SIGTERM exit $STOP_A")
[ "${STOP_B%% *}" = 0 ] || CHECKS+=("phase B: SIGTERM exit $STOP_B")
grep -hiE 'panic|ERROR' "$A/collector.log" "$B/collector.log" | head -5 | sed 's/^/collector log: /' | while read -r l; do echo "$l" >&2; done

cat <<EOF

### Ingest — $DATE

Command: \`bash bench/ingest.sh\` (DURATION=$DURATION WARMUP=$WARMUP CLIENTS=$CLIENTS STREAMS=$STREAMS PIN=$PIN DISTINCT_SPANS=$DISTINCT_SPANS${COLLECTOR_FLAGS:+ COLLECTOR_FLAGS="$COLLECTOR_FLAGS"}), commit $COMMIT
Machine: $(machine_line); load average at start: $LOAD0
Pinning: $( [ "$PIN" = 1 ] && echo "collector \`taskset -c 1\`, load generators \`taskset -c 0\`" || echo none)

| figure | value | target |
|---|---|---|
| spans/s acknowledged (h2load, one replayed 512-span frame, ${DURATION}s, -c$CLIENTS -m$STREAMS) | **$SPS** | ≥ 400000 |
| requests refused (gRPC error, e.g. RESOURCE_EXHAUSTED) in that window | $REFUSED of ${H2_2XX:-?} answered ($REFUSED_PCT %) | |
| collector CPU per million spans (phase A) | $CPU_PER_M s ($CORES cores busy) | |
| collector peak RSS (VmHWM), phase A / phase B | $((HWM_A / 1024)) MiB / $((HWM_B / 1024)) MiB | |
| bytes per span on disk, distinct data ($ROWS_B spans, $FILES_B files after compaction) | **$BPS_B** | ≤ 40 |
| bytes per span on disk, replayed frame (same 512 ids repeated; not representative) | $BPS_A ($FILES_A files) | |
| encoded OTLP size per span | $AVG_BYTES B (phase A frame), $B_AVG_BYTES B (phase B frames) | |
| spans/s acknowledged, distinct frames from the Python grpcio sender (sender-bound?) | $SEND_SPS (CPU $CPU_B_PER_M s per million spans) | |

Details: phase A accepted $ACC spans in $(printf '%.1f' "$ELAPSED") s; h2load: ${H2_OK:-?} requests succeeded, ${H2_FAIL:-?} failed, ${H2_2XX:-?} HTTP 2xx (= $H2_SPS spans/s if every 200 were a gRPC OK), mean request time ${H2_MEAN:-?}; refused requests during the window: $((ref1 - ref0)); rejected spans: $rej1. Totals accepted / SQL count before SIGTERM / after restart / manifest rows: $TOTAL_A / $COUNT_A / $COUNT_A2 / $ROWS_A ($UNACKED_A spans stored but not counted as acknowledged: requests h2load reset in flight when its runs ended). WAL size before SIGTERM: ${WAL_A:-?} B. Collector CPU by thread name in the window: $THREADS_A. SIGTERM exit: $STOP_A. Compaction wait: ${WAITED_A}s.
Phase B: $SENT_OK spans answered OK ($SEND_RETRIES retries, $SEND_LOST lost); accepted metric $TOTAL_B; SQL count before SIGTERM $COUNT_B, after restart $COUNT_B2; manifest $ROWS_B rows in $BYTES_B bytes ($DU_B bytes under tables/spans; files per partition: $PARTS_B); SIGTERM exit: $STOP_B; compaction wait ${WAITED_B}s.
EOF
if [ ${#CHECKS[@]} -gt 0 ]; then
  echo; echo "**Checks FAILED:**"; for c in "${CHECKS[@]}"; do echo "- $c"; done
  exit 2
fi
echo; echo "Checks: no acknowledged span lost (phase B: acknowledged = stored = persisted exactly; phase A: stored = acknowledged + $UNACKED_A from requests reset in flight)."
