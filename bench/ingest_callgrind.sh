#!/bin/bash
# User-space instructions per ingested span, for several collector binaries, one command:
#   bash bench/ingest_callgrind.sh BIN_A [BIN_B ...]
#
# Each binary runs under callgrind twice, on a fresh data dir: start, SMALL exports of ingest.sh's
# replayed 512-span frame (h2load -c1 -m4), SIGTERM (which flushes the memtable to Parquet), exit; then
# the same with LARGE exports. (instructions(LARGE) - instructions(SMALL)) / ((LARGE - SMALL) x 512) is
# the cost of one span through receive, decode, WAL, memtable and flush, without start-up and shutdown.
# Flushes by age and size and compaction are held off (callgrind slows the collector ~50x, so they would
# fire at different points in each run): every row is flushed once, sorted and encoded, at SIGTERM.
# Instruction counts do not move with the machine's noise, but they leave out the kernel (page faults,
# fsync) and cache misses, so read them beside ingest_compare.sh's CPU time, not instead of it.
#
# Knobs: SMALL=40 LARGE=240. Bounded: each run has a time limit; processes are killed on exit.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

[ $# -ge 1 ] || die "usage: bash bench/ingest_callgrind.sh BIN_A [BIN_B ...]"
SMALL=${SMALL:-40}; LARGE=${LARGE:-240}
command -v valgrind >/dev/null || die "valgrind is needed (apt install valgrind)"
for bin in "$@"; do [ -x "$bin" ] || die "not an executable: $bin"; done
ensure_setup
WORK=$(mktemp -d /tmp/meshscope-ingest-callgrind.XXXXXX)
FRAME=$WORK/frame.grpc
"$PY" "$BENCH/make_mesh_frame.py" "$FRAME" >&2 || die "frame generation failed"

instructions() { # BIN EXPORTS -> instructions of the whole collector run
  local bin=$1 n=$2 dir=$WORK/run-$RANDOM pid i
  mkdir -p "$dir"
  GRPC_PORT=$(free_port); HTTP_PORT=$(free_port); API_PORT=$(free_port)
  timeout 900 valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$bin" collector \
    --data-dir "$dir/data" --otlp-grpc-listen 127.0.0.1:$GRPC_PORT --otlp-http-listen 127.0.0.1:$HTTP_PORT \
    --api-listen 127.0.0.1:$API_PORT --flush-interval 1h --flush-bytes 900MiB --memory-limit 2GiB \
    --compaction-min-files 1000 >"$dir/log" 2>&1 &
  pid=$!; STARTED_PIDS+=("$pid")
  for i in $(seq 1 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$API_PORT/api/health" && break
    kill -0 "$pid" 2>/dev/null || die "collector under callgrind exited; see $dir/log"
    sleep 0.5
  done
  local ok
  ok=$(timeout 600 h2load -t1 -c1 -m4 -n "$n" -d "$FRAME" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$GRPC_PORT/opentelemetry.proto.collector.trace.v1.TraceService/Export" | awk '/^requests:/ {print $8}')
  [ "$ok" = "$n" ] || die "$n exports sent, $ok succeeded"
  kill -TERM "$pid"; wait "$pid"
  awk '/Collected :/ {print $NF}' "$dir/log"
}

echo "| binary | instructions per span | ratio |"
echo "|---|---|---|"
for bin in "$@"; do
  small=$(instructions "$bin" "$SMALL"); large=$(instructions "$bin" "$LARGE")
  per=$(( (large - small) / ((LARGE - SMALL) * 512) ))
  [ -z "${first:-}" ] && first=$per
  printf '| %s | %d | %.3f× |\n' "$bin" "$per" "$(echo "$per / $first" | bc -l)"
done
