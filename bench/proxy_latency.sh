#!/bin/bash
# Latency each proxy adds at a fixed 1,000 requests/s, with and without busy polling, each proxy
# alone on its CPU.
#
#   bash bench/proxy_latency.sh [PROXY_BINARY]    (default: target/release/meshscope-proxy; ~6 min)
#
# Contenders, in a rotating order each round: direct (no proxy), HAProxy, HAProxy with
# `busy-polling`, nginx, the Meshscope proxy, and the Meshscope proxy with `[service] busy_poll`.
# Each proxy runs alone on CPU ${PROXY_CPU:-1} with one worker (a busy poller takes its whole CPU, so
# two on one CPU would slow each other); the open-loop `fixed_rate` example and the upstream nginx run
# on CPU ${LG_CPU:-0}. Per run: p50, p99 and p99.9 from `fixed_rate` (timed from each request's
# scheduled start), and the proxy's CPU use over the run. The report gives every run and, per
# contender, the median over rounds of its percentiles and of what it adds to the same round's
# direct run.
# Env: ROUNDS (5), S (seconds per run, 8), RATE (1000), NOBUILD=1 (use the binaries already built).
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${ROUNDS:-5}; S=${S:-8}; RATE=${RATE:-1000}; PROXY_CPU=${PROXY_CPU:-1}; LG_CPU=${LG_CPU:-0}
P_UP=18580; P_MS=18586; P_MS_ADMIN=18587; P_SINK=18588
WORK=$(mktemp -d /tmp/meshscope-proxy-latency.XXXXXX)
PIDS=()

source "$BENCH/proxy_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in haproxy nginx taskset; do command -v $tool >/dev/null || die "$tool missing (bench/proxy.sh installs it)"; done
build_proxy_and fixed_rate
PROXY=${1:-$TARGET/release/meshscope-proxy}
FIXED=$TARGET/release/examples/fixed_rate
[ -x "$PROXY" ] && [ -x "$FIXED" ] || die "binaries missing"

write_upstream_conf "$WORK/upstream.conf"
taskset -c $LG_CPU nginx -c "$WORK/upstream.conf" || die "upstream nginx did not start"
wait_port $P_UP
write_meshscope_confs "$WORK/meshscope.toml" "$WORK/unused.toml"
write_busy_conf "$WORK/meshscope.toml" "$WORK/meshscope-busy.toml"
write_nginx_proxy_conf "$WORK/nginx-proxy.conf" $P_MS

# start NAME: starts contender NAME alone (proxy_lib.sh); direct needs nothing (SUT_PID empty).
start() {
  SUT_PID=
  case $1 in
    direct) ;;
    haproxy|haproxy-busy)
      write_haproxy_conf "$WORK/haproxy.cfg" $P_MS "$([ "$1" = haproxy-busy ] && echo busy-polling)"
      start_daemon "$WORK/haproxy.pid" haproxy -D -f "$WORK/haproxy.cfg" ;;
    nginx) start_daemon "$WORK/nginx-proxy.pid" nginx -c "$WORK/nginx-proxy.conf" ;;
    meshscope|meshscope-busy) start_meshscope "$1" ;;
  esac
}

CONTENDERS=(direct haproxy haproxy-busy nginx meshscope meshscope-busy)
N=${#CONTENDERS[@]}
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((N - 1))); do
    name=${CONTENDERS[$(( (i + round) % N ))]}
    start "$name"
    port=$P_MS; [ "$name" = direct ] && port=$P_UP
    taskset -c $LG_CPU "$FIXED" "http://127.0.0.1:$port/" "$RATE" 2 >/dev/null || die "$name: warm-up failed"
    t0=0; [ -n "$SUT_PID" ] && t0=$(cpu_ticks "$SUT_PID")
    out=$(taskset -c $LG_CPU "$FIXED" "http://127.0.0.1:$port/" "$RATE" "$S") || die "$name: fixed_rate failed"
    cpu="—"; [ -n "$SUT_PID" ] && cpu=$(( ($(cpu_ticks "$SUT_PID") - t0) * 100 / $(getconf CLK_TCK) / S ))
    errors=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$out")
    [ "$errors" = 0 ] || die "$name: $out"
    p50=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' <<<"$out"); p99=$(sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' <<<"$out")
    p999=$(sed -n 's/.*p999_us=\([0-9]*\).*/\1/p' <<<"$out")
    echo "$round $name $p50 $p99 $p999 $cpu" >> "$WORK/runs"
    log "round $round $name: p50 $p50 µs, p99 $p99 µs, p99.9 $p999 µs, CPU ${cpu}%"
    [ "$name" = direct ] || stop_contender
  done
done

echo "Runs (\`bash bench/proxy_latency.sh\`, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) CPUs, $RATE req/s for $S s each, fixed_rate):"
echo
echo '| round | contender | p50 µs | p99 µs | p99.9 µs | proxy CPU % |'
echo '|---|---|---|---|---|---|'
while read -r round name p50 p99 p999 cpu; do echo "| $round | $name | $p50 | $p99 | $p999 | $cpu |"; done < "$WORK/runs"
echo
echo 'Medians over rounds; "added" is the median of each round'"'"'s difference to that round'"'"'s direct run:'
echo
python3 - "$WORK/runs" <<'EOF'
import statistics, sys
runs = [line.split() for line in open(sys.argv[1])]
direct = {r[0]: r for r in runs if r[1] == "direct"}
print("| contender | p50 µs | p99 µs | p99.9 µs | added p50 µs | added p99 µs | proxy CPU % |")
print("|---|---|---|---|---|---|---|")
for name in ["direct", "haproxy", "haproxy-busy", "nginx", "meshscope", "meshscope-busy"]:
    mine = [r for r in runs if r[1] == name]
    med = lambda i: statistics.median(int(r[i]) for r in mine)
    added = lambda i: statistics.median(int(r[i]) - int(direct[r[0]][i]) for r in mine)
    cpu = "—" if name == "direct" else f"{statistics.median(int(r[5]) for r in mine)}"
    print(f"| {name} | {med(2)} | {med(3)} | {med(4)} | {added(2):+} | {added(3):+} | {cpu} |")
EOF
