#!/bin/bash
# What span export costs on a real CPU: one proxy binary with export off and on, in alternation.
#
#   bash bench/proxy_span_cost.sh [BINARY]    (default: target/release/meshscope-proxy)
#
# ROUNDS pairs of runs (off, then on); each run starts the proxy alone on CPU 1 with one worker and
# loads it from CPU 0, where the upstream nginx and the `otlp_sink` example also run:
# - closed loop (default): exactly N requests, as fast as they go (h2load --h1 -cC for PROTO=h1, h2c
#   -cC -m10 for PROTO=h2);
# - fixed rate (RATE set): RATE HTTP/1.1 requests per second for DURATION seconds, open loop (`fixed_rate`
#   example). Both sides then see the same load, so the proxy's CPU per request is compared at equal
#   batching. In closed loop the sink's own work on CPU 0 slows the load generator when export is on,
#   and fewer requests per wakeup cost the proxy more CPU each, so part of that ratio is the bench's.
# Per run: the proxy's and the sink's CPU time per request (utime + stime from /proc, over the load
# only), and requests/s (closed loop) or p50/p99 latency (fixed rate). Printed: every run, then the
# median of each figure per side and the ratio on/off. Alternating and taking medians keeps a
# neighbour's load from favouring one side, which single runs minutes apart cannot do on a shared
# machine (bench/README.md, "Proxy"). With export on, every request is one exported CLIENT span, and
# the run fails if the proxy dropped any.
# Env: N (100000), C (16), ROUNDS (5), PROTO (h1); RATE, DURATION (seconds, 10). Needs nginx, h2load, taskset,
# curl; fixed rate also `cargo build --release -p meshscope-proxy --example fixed_rate`.
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-100000}; C=${C:-16}; ROUNDS=${ROUNDS:-5}; PROTO=${PROTO:-h1}; RATE=${RATE:-}; DURATION=${DURATION:-10}
P_UP=18380; P_MS=18386; P_MS_ADMIN=18387; P_SINK=18388
WORK=$(mktemp -d /tmp/meshscope-span-cost.XXXXXX)
PIDS=()

source "$BENCH/proxy_lib.sh"
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
if [ -n "$RATE" ]; then
  FIXED=$TARGET/release/examples/fixed_rate
  [ -x "$FIXED" ] || die "build it first: cargo build --release -p meshscope-proxy --example fixed_rate"
  N=$((RATE * DURATION))
fi
# Requests per run beyond the N measured: the readiness check, and fixed_rate's four warm-up requests.
EXTRA=$([ -n "$RATE" ] && echo 5 || echo 1)

write_upstream_conf "$WORK/upstream.conf"
write_meshscope_confs "$WORK/off.toml" "$WORK/on.toml"
taskset -c 0 nginx -c "$WORK/upstream.conf" || die "upstream nginx did not start"
wait_port $P_UP
taskset -c 0 "$SINK" "127.0.0.1:$P_SINK" > "$WORK/sink.out" 2>&1 &
SINK_PID=$!; PIDS+=($SINK_PID); wait_port $P_SINK

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# run SIDE: one run; prints "proxy_cpu_us sink_cpu_us" per request, then "requests_per_second" (closed
# loop) or "p50_us p99_us" (fixed rate).
run() {
  # stdout to a file, not the caller's $(...) pipe, which would otherwise wait for a proxy left running
  # by a failed run; cleanup stops that proxy by its pid file.
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c 1 "$BIN" --config "$WORK/$1.toml" >"$WORK/proxy.out" 2>"$WORK/proxy.log" &
  local pid=$!
  echo $pid > "$WORK/proxy.pid"
  wait_port $P_MS
  curl -fsS "http://127.0.0.1:$P_MS/" >/dev/null || die "proxy does not answer ($(cat "$WORK/proxy.log"))"
  local before sink_before after sink_after figures
  before=$(ticks $pid); sink_before=$(ticks $SINK_PID)
  if [ -n "$RATE" ]; then
    taskset -c 0 "$FIXED" "http://127.0.0.1:$P_MS/" "$RATE" "$DURATION" > "$WORK/load.out" 2>&1
    grep -q "requests=$N errors=0 " "$WORK/load.out" || die "not every request succeeded: $(cat "$WORK/load.out")"
    figures=$(sed -E 's/.*p50_us=([0-9]+) .*p99_us=([0-9]+) .*/\1 \2/' "$WORK/load.out")
  else
    taskset -c 0 "${LOAD[@]}" "http://127.0.0.1:$P_MS/" > "$WORK/load.out" 2>&1
    grep -q "requests: $N total, $N started, $N done, $N succeeded" "$WORK/load.out" \
      || die "not every request succeeded: $(grep '^requests:' "$WORK/load.out")"
    figures=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$WORK/load.out")
  fi
  after=$(ticks $pid)
  if [ "$1" = on ]; then
    sleep 1.5  # the batch timer flushes the last spans
    local dropped
    dropped=$(curl -fsS "http://127.0.0.1:$P_MS_ADMIN/metrics" | awk '/^meshscope_proxy_spans_dropped_total/{print $2}')
    [ -n "$dropped" ] || die "no meshscope_proxy_spans_dropped_total on the admin /metrics"
    [ "$dropped" = 0 ] || die "the proxy dropped $dropped spans: the run would not measure full export"
  fi
  sink_after=$(ticks $SINK_PID)
  kill -TERM $pid; wait $pid 2>/dev/null
  echo "$(per_request $((after - before))) $(per_request $((sink_after - sink_before))) $figures"
}

# per_request TICKS: CPU µs per request, one decimal.
per_request() { awk -v t="$1" -v hz="$HZ" -v n="$N" 'BEGIN{printf "%.1f", t * 1e6 / hz / n}'; }

median() { sort -g | awk '{v[NR]=$1} END{print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

log "binary $BIN, PROTO=$PROTO N=$N C=$C RATE=${RATE:-closed loop} ROUNDS=$ROUNDS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$RATE" ]; then
  printf '| round | side | proxy CPU µs/request | sink CPU µs/request | p50 µs | p99 µs |\n|---|---|---|---|---|---|\n'
else
  printf '| round | side | proxy CPU µs/request | sink CPU µs/request | requests/s |\n|---|---|---|---|---|\n'
fi
: > "$WORK/off.txt"; : > "$WORK/on.txt"
for round in $(seq 1 "$ROUNDS"); do
  for side in off on; do
    line=$(run $side)
    [ -n "$line" ] || die "run failed"
    echo "$line" >> "$WORK/$side.txt"
    printf '| %s | %s | %s |\n' "$round" "$side" "$(echo "$line" | sed 's/ / | /g')"
  done
done
# med SIDE COLUMN: the median of one column of a side's runs.
med() { awk -v c="$2" '{print $c}' "$WORK/$1.txt" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a / b}'; }
printf '\nmedians (off → on, ratio): proxy CPU %s → %s µs (%s); sink CPU %s → %s µs' \
  "$(med off 1)" "$(med on 1)" "$(ratio "$(med on 1)" "$(med off 1)")" "$(med off 2)" "$(med on 2)"
if [ -n "$RATE" ]; then
  printf '; p50 %s → %s µs; p99 %s → %s µs\n' "$(med off 3)" "$(med on 3)" "$(med off 4)" "$(med on 4)"
else
  printf '; requests/s %s → %s (%s)\n' "$(med off 3)" "$(med on 3)" "$(ratio "$(med on 3)" "$(med off 3)")"
fi
kill -TERM $SINK_PID; wait $SINK_PID 2>/dev/null
log "sink: $(cat "$WORK/sink.out") (expected $((ROUNDS * (N + EXTRA))) spans); load average $(cut -d' ' -f1-3 /proc/loadavg)"
