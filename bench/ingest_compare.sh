#!/bin/bash
# Ingest throughput of several collector binaries side by side, one command:
#   bash bench/ingest_compare.sh BIN_A BIN_B [BIN_C ...]
#
# The throughput phase of bench/ingest.sh (one pre-encoded 512-span mesh frame replayed by h2load over
# CLIENTS connections x STREAMS streams, durability on), run ROUNDS times per binary in alternation
# (A B A B ...) so that a noisy neighbour hits every binary alike. Each round starts a fresh collector
# on a fresh data dir, warms up WARMUP s and measures DURATION s. Per round: spans/s acknowledged (delta
# of meshscope_spans_accepted_total / wall time), collector CPU s per million spans (utime+stime) and
# its peak RSS (VmHWM, over warm-up and run). Prints the median of each binary and its ratio to the
# first binary.
#
# Knobs: ROUNDS=3 DURATION=10 WARMUP=3 CLIENTS=4 STREAMS=8 PIN=1 (collector on CPU1, h2load on CPU0;
#   PIN=0 leaves both unpinned, so the collector may use both cores) COLLECTOR_FLAGS="..." KEEP=1.
# Bounded: every run has a time limit; every process started here is killed on exit.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

[ $# -ge 2 ] || die "usage: bash bench/ingest_compare.sh BIN_A BIN_B [BIN_C ...]"
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-3}; CLIENTS=${CLIENTS:-4}
STREAMS=${STREAMS:-8}; PIN=${PIN:-1}
read -r -a CFLAGS <<<"${COLLECTOR_FLAGS:-}"
C_CPU=""; L_PIN=()
if [ "$PIN" = 1 ]; then C_CPU=1; L_PIN=(taskset -c 0); fi
for bin in "$@"; do [ -x "$bin" ] || die "not an executable: $bin"; done
ensure_setup
WORK=$(mktemp -d /tmp/meshscope-ingest-compare.XXXXXX)
TCK=$(clk_tck)
FRAME=$WORK/frame.grpc
"$PY" "$BENCH/make_mesh_frame.py" "$FRAME" >&2 || die "frame generation failed"
URL_PATH=/opentelemetry.proto.collector.trace.v1.TraceService/Export

h2() { # seconds -> h2load output
  timeout $(($1 + 60)) "${L_PIN[@]}" h2load -t1 -c"$CLIENTS" -m"$STREAMS" -D "$1" -d "$FRAME" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$GRPC_PORT$URL_PATH" 2>&1
}

log "$(machine_line 2>/dev/null || nproc) | load $(cut -d' ' -f1-3 /proc/loadavg) | ROUNDS=$ROUNDS DURATION=$DURATION PIN=$PIN"
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 1 $#); do
    BIN=${!i}
    dir=$WORK/r$round-b$i
    mkdir -p "$dir"
    start_collector "$dir/data" "$dir/collector.log" "$C_CPU" "${CFLAGS[@]}"
    h2 "$WARMUP" >/dev/null
    acc0=$(metric meshscope_spans_accepted_total); ref0=$(metric meshscope_requests_refused_total)
    cpu0=$(cpu_ticks "$COLLECTOR_PID"); t0=$(date +%s.%N)
    h2 "$DURATION" >"$dir/h2load.txt"
    t1=$(date +%s.%N); cpu1=$(cpu_ticks "$COLLECTOR_PID")
    acc1=$(metric meshscope_spans_accepted_total); ref1=$(metric meshscope_requests_refused_total)
    hwm=$(awk '$1 == "VmHWM:" {printf "%.0f", $2 / 1024}' "/proc/$COLLECTOR_PID/status")
    stop_collector
    [ -n "${KEEP:-}" ] || rm -rf "$dir/data"
    sps=$(echo "($acc1 - $acc0) / ($t1 - $t0)" | bc -l | xargs printf '%.0f')
    cpm=$(echo "($cpu1 - $cpu0) / $TCK / (($acc1 - $acc0) / 1000000)" | bc -l | xargs printf '%.2f')
    echo "$i $sps $cpm $((ref1 - ref0)) $hwm" >>"$WORK/results"
    log "round $round, binary $i: $sps spans/s, $cpm CPU s per million spans, $((ref1 - ref0)) requests refused, peak RSS $hwm MiB"
  done
done

median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
echo "| binary | spans/s (median of $ROUNDS) | ratio | CPU s per million spans | ratio | refused requests | peak RSS MiB (max) |"
echo "|---|---|---|---|---|---|---|"
for i in $(seq 1 $#); do
  sps=$(awk -v b="$i" '$1 == b {print $2}' "$WORK/results" | median)
  cpm=$(awk -v b="$i" '$1 == b {print $3}' "$WORK/results" | median)
  refused=$(awk -v b="$i" '$1 == b {s += $4} END {print s}' "$WORK/results")
  hwm=$(awk -v b="$i" '$1 == b && $5 > m {m = $5} END {print m + 0}' "$WORK/results")
  [ "$i" = 1 ] && { sps1=$sps; cpm1=$cpm; }
  printf '| %s | %.0f | %.2f× | %.2f | %.2f× | %s | %s |\n' "${!i}" "$sps" "$(echo "$sps / $sps1" | bc -l)" \
    "$cpm" "$(echo "$cpm / $cpm1" | bc -l)" "$refused" "$hwm"
done
