#!/bin/bash
# Query benchmark, one command:  bash bench/query.sh
#
# 1. release build; collector on a fresh temp dir and free loopback ports (not pinned: queries may use both cores).
# 2. fill: FILL_SPANS (default 10M) spans of distinct mesh traces (bench/otlp_send.py: fresh ids per frame,
#    traces starting over the last 2 hours), sent over gRPC as 512-span requests; one trace id per request is
#    kept for lookups. Bounded by FILL_MAX_SECONDS (default 900); a partial fill is reported as such.
# 3. SIGTERM + restart so everything is in Parquet; wait until compaction settles (no hour partition with
#    >= 4 files under 64 MiB and no manifest change for 40 s; at most COMPACT_MAX_SECONDS, default 420).
# 4. bench/query_bench.py: trace by id (200 ids, no time hint), search (50 runs), p99-per-service aggregate via
#    /api/sql and via DuckDB on the same Parquet files (1 thread and default threads), ratio.
# Knobs: FILL_SPANS=10000000 FILL_CONC=8 FILL_MAX_SECONDS=900 COMPACT_MAX_SECONDS=420 COLLECTOR_FLAGS=...
#        KEEP=1 (keep the temp dir) NOBUILD=1
#        REUSE=/tmp/meshscope-query.XXXXXX: skip steps 2-3 and measure (step 4 only) on the data dir and trace
#        ids a KEEP=1 run left there, e.g. to compare two builds on the same files (searches cover the last
#        hour from now, so reuse a fill within the hour after it). The dir is kept; it may be compacted further.
# The binary is $CARGO_TARGET_DIR/release/meshscope when CARGO_TARGET_DIR is set (MESHSCOPE_BIN overrides).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

FILL_SPANS=${FILL_SPANS:-10000000}; FILL_CONC=${FILL_CONC:-8}; FILL_MAX_SECONDS=${FILL_MAX_SECONDS:-900}
COMPACT_MAX_SECONDS=${COMPACT_MAX_SECONDS:-420}; SPANS=512
read -r -a CFLAGS <<<"${COLLECTOR_FLAGS:-}"
[ -z "${MESHSCOPE_BIN:-}" ] && [ -n "${CARGO_TARGET_DIR:-}" ] && BIN=$CARGO_TARGET_DIR/release/meshscope

ensure_setup
[ -n "${NOBUILD:-}" ] || build_release
[ -x "$BIN" ] || die "no $BIN"
if [ -n "${REUSE:-}" ]; then
  KEEP=1; WORK=$REUSE; D=$WORK/data; LOGF=$WORK/collector.log
  [ -f "$D/manifest.json" ] && [ -f "$WORK/trace_ids.txt" ] || die "REUSE=$REUSE holds no data/manifest.json and trace_ids.txt"
  LOAD0=$(cut -d' ' -f1-3 /proc/loadavg); DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
  start_collector "$D" "$LOGF" "" "${CFLAGS[@]}"
  read -r FILES ROWS BYTES <<<"$(manifest_stats "$D")"
  log "reusing $D: $FILES files, $ROWS rows, $BYTES bytes; measuring queries"
  ROWS_MD=$("$PY" "$BENCH/query_bench.py" --api 127.0.0.1:$API_PORT --data-dir "$D" --trace-ids "$WORK/trace_ids.txt" \
    --json "$WORK/query-reuse.json") || die "query_bench.py failed"
  HWM2=$(vm_kib "$COLLECTOR_PID" VmHWM)
  stop_collector
  cat <<EOF

### Query on reused data — $DATE

Command: \`REUSE=$REUSE bash bench/query.sh\`, binary $BIN ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null))
Machine: $(machine_line); load average at start: $LOAD0
Data: $ROWS spans, $FILES Parquet files, $BYTES bytes; collector peak RSS $((HWM2 / 1024)) MiB (start + queries).

| figure | value | target |
|---|---|---|
$ROWS_MD
EOF
  exit 0
fi
WORK=$(mktemp -d /tmp/meshscope-query.XXXXXX)
log "work dir $WORK"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg); DATE=$(date -u '+%Y-%m-%d %H:%M UTC'); COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo "+dirty")
D=$WORK/data; LOGF=$WORK/collector.log
TCK=$(clk_tck)

start_collector "$D" "$LOGF" "" "${CFLAGS[@]}"
PID=$COLLECTOR_PID
NFR=$(( (FILL_SPANS + SPANS - 1) / SPANS ))
log "fill: $NFR frames x $SPANS spans, traces over the last 2 h, conc $FILL_CONC"
cpu0=$(cpu_ticks "$PID")
FILL_JSON=$("$PY" "$BENCH/otlp_send.py" --target 127.0.0.1:$GRPC_PORT --frames "$NFR" --conc "$FILL_CONC" \
  --spread 7200 --max-seconds "$FILL_MAX_SECONDS" --trace-ids "$WORK/trace_ids.txt")
cpu1=$(cpu_ticks "$PID")
echo "$FILL_JSON" >&2
jget() { echo "$FILL_JSON" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
SENT_OK=$(jget spans_ok); FILL_S=$(jget seconds); FILL_SPS=$(jget spans_per_s); COMPLETE=$(jget complete)
FILL_RETRIES=$(jget retries); FILL_ERRORS=$(jget errors)
FILL_CPU=$(echo "($cpu1 - $cpu0) / $TCK" | bc -l | xargs printf '%.0f')
sleep 2
TOTAL=$(metric meshscope_spans_accepted_total); COUNT1=$(sql_scalar 'SELECT count(*) AS n FROM spans')
HWM=$(vm_kib "$PID" VmHWM)
log "filled: $SENT_OK spans OK in ${FILL_S}s ($FILL_SPS/s); accepted metric $TOTAL; SQL count $COUNT1; peak RSS $((HWM / 1024)) MiB"
stop_collector; STOP="$STOP_RC in ${STOP_SECS}s"
log "SIGTERM: exit $STOP"
start_collector "$D" "$LOGF" "" "${CFLAGS[@]}"
PID=$COLLECTOR_PID
log "waiting for compaction to settle (max ${COMPACT_MAX_SECONDS}s)"
WAITED=$(wait_compaction "$D" "$COMPACT_MAX_SECONDS")
COUNT2=$(sql_scalar 'SELECT count(*) AS n FROM spans')
read -r FILES ROWS BYTES <<<"$(manifest_stats "$D")"
PARTS=$(manifest_partitions "$D")
log "after restart: SQL count $COUNT2; manifest $FILES files, $ROWS rows, $BYTES bytes ($PARTS); compaction wait ${WAITED}s"

CHECKS=()
[ "$COMPLETE" = True ] || CHECKS+=("fill incomplete: $SENT_OK of $((NFR * SPANS)) spans answered OK within ${FILL_MAX_SECONDS}s")
[ "$TOTAL" = "$SENT_OK" ] || CHECKS+=("accepted metric $TOTAL != spans answered OK $SENT_OK")
[ "$COUNT1" = "$SENT_OK" ] || CHECKS+=("SQL count before SIGTERM $COUNT1 != spans answered OK $SENT_OK")
[ "$COUNT2" = "$SENT_OK" ] || CHECKS+=("SQL count after restart $COUNT2 != spans answered OK $SENT_OK")
[ "$ROWS" = "$SENT_OK" ] || CHECKS+=("manifest rows $ROWS != spans answered OK $SENT_OK")
[ "${STOP%% *}" = 0 ] || CHECKS+=("SIGTERM exit $STOP")
[ -f "$WORK/rss-cap-hit" ] && CHECKS+=("$(cat "$WORK/rss-cap-hit")")

log "measuring queries"
ROWS_MD=$("$PY" "$BENCH/query_bench.py" --api 127.0.0.1:$API_PORT --data-dir "$D" --trace-ids "$WORK/trace_ids.txt" \
  --json "$WORK/query.json") || CHECKS+=("query_bench.py failed (see above)")
QCPU=$(cpu_ticks "$PID"); HWM2=$(vm_kib "$PID" VmHWM)
stop_collector
[ "${KEEP:-}" ] && log "raw figures: $WORK/query.json"

cat <<EOF

### Query — $DATE

Command: \`bash bench/query.sh\` (FILL_SPANS=$FILL_SPANS${COLLECTOR_FLAGS:+ COLLECTOR_FLAGS="$COLLECTOR_FLAGS"}), commit $COMMIT
Machine: $(machine_line); load average at start: $LOAD0
Data: $ROWS spans of distinct mesh traces over the last 2 h (partitions $PARTS), $FILES Parquet files, $BYTES bytes
($(echo "$BYTES / ($ROWS + 0.000001)" | bc -l | xargs printf '%.1f') B/span); fill $SENT_OK spans in ${FILL_S} s = $FILL_SPS spans/s
(Python sender and collector sharing 2 cores; collector CPU during fill $FILL_CPU s; $FILL_RETRIES requests refused
and retried by the sender: $FILL_ERRORS); collector peak RSS
$((HWM / 1024)) MiB during fill, $((HWM2 / 1024)) MiB after restart and queries. SIGTERM exit: $STOP; compaction wait ${WAITED}s.
No pinning; the collector was idle (compaction settled) while the queries and DuckDB ran.

| figure | value | target |
|---|---|---|
$ROWS_MD
EOF
if [ ${#CHECKS[@]} -gt 0 ]; then
  echo; echo "**Checks FAILED:**"; for c in "${CHECKS[@]}"; do echo "- $c"; done
  exit 2
fi
echo; echo "Checks: all counts agree (acknowledged = stored = persisted)."
