#!/bin/bash
# What span export costs on a real CPU: one proxy binary with export off and on, in alternation.
#
#   bash bench/proxy_span_cost.sh [BINARY]    (default: target/release/meshscope-proxy)
#
# ROUNDS pairs of runs (off, then on); each run starts the proxy alone on CPU 1 with one worker and
# sends it exactly N requests (h2load --h1 -cC for PROTO=h1, h2c -cC -m10 for PROTO=h2) from CPU 0,
# where the upstream nginx and the `otlp_sink` example also run. Per run: the proxy's CPU time per
# request (utime + stime from /proc, over the load only) and h2load's requests/s. Printed: every run,
# then the median of each figure per side and the ratio on/off. Alternating and taking medians keeps
# a neighbour's load from favouring one side, which single runs minutes apart cannot do on a shared
# machine (bench/README.md, "Proxy"). With export on, every request is one exported CLIENT span, and
# the run fails if the proxy dropped any.
# Env: N (100000), C (16), ROUNDS (5), PROTO (h1). Needs nginx, h2load, taskset, curl.
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-100000}; C=${C:-16}; ROUNDS=${ROUNDS:-5}; PROTO=${PROTO:-h1}
P_UP=18380; P_MS=18386; P_MS_ADMIN=18387; P_SINK=18388
WORK=$(mktemp -d /tmp/meshscope-span-cost.XXXXXX)
PIDS=()

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  [ -s "$WORK/upstream.pid" ] && kill -TERM "$(cat "$WORK/upstream.pid")" 2>/dev/null
  sleep 1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in nginx h2load taskset curl; do command -v $tool >/dev/null || die "$tool missing"; done
BIN=${1:-$TARGET/release/meshscope-proxy}
[ -x "$BIN" ] || die "no proxy binary at $BIN"
SINK=$TARGET/release/examples/otlp_sink
[ -x "$SINK" ] || die "build the sink first: cargo build --release -p meshscope-proxy --example otlp_sink"
case $PROTO in
  h1) LOAD=(h2load --h1 -n "$N" -c "$C") ;;
  h2) LOAD=(h2load -n "$N" -c "$C" -m10) ;;
  *) die "PROTO is h1 or h2" ;;
esac

source "$BENCH/proxy_lib.sh"
write_upstream_conf "$WORK/upstream.conf"
write_meshscope_confs "$WORK/off.toml" "$WORK/on.toml"
taskset -c 0 nginx -c "$WORK/upstream.conf" || die "upstream nginx did not start"
wait_port $P_UP
taskset -c 0 "$SINK" "127.0.0.1:$P_SINK" > "$WORK/sink.out" 2>&1 &
SINK_PID=$!; PIDS+=($SINK_PID); wait_port $P_SINK

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# run SIDE: one run; prints "cpu_us_per_request requests_per_second".
run() {
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c 1 "$BIN" --config "$WORK/$1.toml" 2>"$WORK/proxy.log" &
  local pid=$!
  wait_port $P_MS
  curl -fsS "http://127.0.0.1:$P_MS/" >/dev/null || die "proxy does not answer ($(cat "$WORK/proxy.log"))"
  local before; before=$(ticks $pid)
  taskset -c 0 "${LOAD[@]}" "http://127.0.0.1:$P_MS/" > "$WORK/load.out" 2>&1
  local after; after=$(ticks $pid)
  grep -q "requests: $N total, $N started, $N done, $N succeeded" "$WORK/load.out" \
    || die "not every request succeeded: $(grep '^requests:' "$WORK/load.out")"
  if [ "$1" = on ]; then
    sleep 1.5  # the batch timer flushes the last spans
    local dropped
    dropped=$(curl -fsS "http://127.0.0.1:$P_MS_ADMIN/metrics" | awk '/^meshscope_proxy_spans_dropped_total/{print $2}')
    [ -n "$dropped" ] || die "no meshscope_proxy_spans_dropped_total on the admin /metrics"
    [ "$dropped" = 0 ] || die "the proxy dropped $dropped spans: the run would not measure full export"
  fi
  kill -TERM $pid; wait $pid 2>/dev/null
  local rps; rps=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$WORK/load.out")
  echo "$(( (after - before) * 1000000 / HZ / N )).$(( (after - before) * 10000000 / HZ / N % 10 )) $rps"
}

median() { sort -g | awk '{v[NR]=$1} END{print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

log "binary $BIN, PROTO=$PROTO N=$N C=$C ROUNDS=$ROUNDS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| round | side | proxy CPU µs/request | requests/s |\n|---|---|---|---|\n'
: > "$WORK/off.txt"; : > "$WORK/on.txt"
for round in $(seq 1 "$ROUNDS"); do
  for side in off on; do
    read -r cpu rps < <(run $side)
    [ -n "${cpu:-}" ] || die "run failed"
    echo "$cpu $rps" >> "$WORK/$side.txt"
    printf '| %s | %s | %s | %s |\n' "$round" "$side" "$cpu" "$rps"
  done
done
cpu_off=$(awk '{print $1}' "$WORK/off.txt" | median); cpu_on=$(awk '{print $1}' "$WORK/on.txt" | median)
rps_off=$(awk '{print $2}' "$WORK/off.txt" | median); rps_on=$(awk '{print $2}' "$WORK/on.txt" | median)
printf '\nmedians: CPU off %s µs, on %s µs (on/off %s); requests/s off %s, on %s (on/off %s)\n' \
  "$cpu_off" "$cpu_on" "$(awk -v a="$cpu_on" -v b="$cpu_off" 'BEGIN{printf "%.3f", a/b}')" \
  "$rps_off" "$rps_on" "$(awk -v a="$rps_on" -v b="$rps_off" 'BEGIN{printf "%.3f", a/b}')"
kill -TERM $SINK_PID; wait $SINK_PID 2>/dev/null
log "sink: $(cat "$WORK/sink.out") (expected $((ROUNDS * N + ROUNDS)) spans); load average $(cut -d' ' -f1-3 /proc/loadavg)"
