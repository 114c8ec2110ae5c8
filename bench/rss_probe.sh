#!/bin/bash
# Memory probe, one command:  NOBUILD=1 bash bench/rss_probe.sh
# Collector pinned to CPU1 on a fresh temp dir, h2load pinned to CPU0 replaying one 512-span mesh frame
# (-c4 -m8) for 25 s; every second prints VmRSS, the memtable and in-flight bytes from /metrics, and the
# thread count. Bounded: h2load has a timeout, everything started is killed on exit.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
ensure_setup
[ -n "${NOBUILD:-}" ] || build_release
W=$(mktemp -d /tmp/meshscope-rss.XXXXXX)
"$PY" "$BENCH/make_mesh_frame.py" "$W/frame.grpc" >/dev/null || die "frame generation failed"
start_collector "$W/data" "$W/log" 1
PID=$COLLECTOR_PID
timeout 40 taskset -c 0 h2load -t1 -c4 -m8 -D 25 -d "$W/frame.grpc" -H 'content-type: application/grpc' \
  -H 'te: trailers' "http://127.0.0.1:$GRPC_PORT/opentelemetry.proto.collector.trace.v1.TraceService/Export" \
  >/dev/null 2>&1 &
STARTED_PIDS+=("$!")
for i in $(seq 1 28); do
  sleep 1
  m=$(curl -sf "http://127.0.0.1:$HTTP_PORT/metrics")
  echo "t=${i}s rss=$(( $(vm_kib "$PID" VmRSS) / 1024 ))MiB $(echo "$m" | grep -E '^meshscope_(memtable|in_flight)_bytes' \
    | awk '{printf "%s=%dMiB ", $1, $2/1048576}')threads=$(ls /proc/"$PID"/task | wc -l)"
done
