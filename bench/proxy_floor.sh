#!/bin/bash
# How far the Meshscope proxy is from the floor of its own stack and from HAProxy: CPU per HTTP/1.1
# request at full load for the proxy, for the least proxy hyper 1 can make (`hyper_floor` example) and
# for HAProxy, the two proxies with and without busy polling, in alternation.
#
#   bash bench/proxy_floor.sh [PROXY_BINARY]    (default: target/release/meshscope-proxy; ~5 min)
#
# Every contender runs alone on CPU ${PROXY_CPU:-1} with one worker (a busy poller takes its whole
# CPU); wrk (-t1 -c64) and the upstream nginx (one worker, "ok\n") share CPU ${LG_CPU:-0}, as in
# bench/proxy.sh. Per run: the contender's user and system CPU time per request (from /proc, over the
# load only), requests/s, and the wakeup interrupts (RES + CAL in /proc/interrupts) the load CPU
# received per request: a write that wakes a sleeping or preempted wrk or nginx costs the writer an
# interrupt to the other CPU, which on this VM is a large part of a request's system time. ROUNDS
# rounds, the order rotating each round; the report gives every run and the median per contender,
# with its CPU per request against HAProxy's (without busy polling) in the same round. Alternating
# matters: this machine's speed drifts by a third between runs minutes apart (bench/README.md, "Proxy").
# PROTO=h2 measures HTTP/2 instead: h2c with prior knowledge on both sides of every proxy (the upstream
# nginx gets an `http2` listener) and `h2load -t1 -c64 -m10` as the load.
# Env: ROUNDS (5), D (seconds of load per run, 6), PROTO (h1), NOBUILD=1 (use the binaries already built).
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${ROUNDS:-5}; D=${D:-6}; PROTO=${PROTO:-h1}; PROXY_CPU=${PROXY_CPU:-1}; LG_CPU=${LG_CPU:-0}
P_UP=18480; P_UP_H2=18481; P_MS=18486; P_MS_ADMIN=18487; P_SINK=18488
WORK=$(mktemp -d /tmp/meshscope-proxy-floor.XXXXXX)
PIDS=()

source "$BENCH/proxy_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

case $PROTO in h1|h2) ;; *) echo "PROTO is h1 or h2" >&2; exit 1 ;; esac
for tool in haproxy nginx wrk h2load taskset bc; do command -v $tool >/dev/null || die "$tool missing (bench/proxy.sh installs it)"; done
build_proxy_and hyper_floor
PROXY=${1:-$TARGET/release/meshscope-proxy}
FLOOR=$TARGET/release/examples/hyper_floor
[ -x "$PROXY" ] && [ -x "$FLOOR" ] || die "binaries missing"

write_upstream_conf "$WORK/upstream.conf" $P_UP_H2
taskset -c $LG_CPU nginx -c "$WORK/upstream.conf" || die "upstream nginx did not start"
wait_port $P_UP
write_meshscope_confs "$WORK/meshscope.toml" "$WORK/unused.toml"
if [ "$PROTO" = h2 ]; then
  sed -i "s/protocol = \"http1\"/protocol = \"http2\"/; s/:$P_UP\"/:$P_UP_H2\"/" "$WORK/meshscope.toml"
  grep -q "protocol = \"http2\"" "$WORK/meshscope.toml" || die "cannot switch the proxy's upstream to HTTP/2"
fi
write_busy_conf "$WORK/meshscope.toml" "$WORK/meshscope-busy.toml"


# start NAME: starts contender NAME alone (proxy_lib.sh).
start() {
  case $1 in
    meshscope|meshscope-busy) start_meshscope "$1" ;;
    hyper)
      if [ "$PROTO" = h2 ]; then floor=(127.0.0.1:$P_UP_H2 h2); else floor=(127.0.0.1:$P_UP); fi
      TOKIO_WORKER_THREADS=1 taskset -c $PROXY_CPU "$FLOOR" 127.0.0.1:$P_MS "${floor[@]}" 2>>"$WORK/hyper.log" &
      SUT_PID=$!; PIDS+=($SUT_PID); DAEMON_PIDFILE=
      wait_port $P_MS ;;
    haproxy|haproxy-busy)
      write_haproxy_conf "$WORK/haproxy.cfg" $P_MS "$([ "$1" = haproxy-busy ] && echo busy-polling)"
      [ "$PROTO" = h2 ] && sed -i "s/bind 127.0.0.1:$P_MS$/bind 127.0.0.1:$P_MS proto h2/; s/server up1 127.0.0.1:$P_UP /server up1 127.0.0.1:$P_UP_H2 proto h2 /" "$WORK/haproxy.cfg"
      start_daemon "$WORK/haproxy.pid" haproxy -D -f "$WORK/haproxy.cfg" ;;
  esac
}
# ipis: rescheduling and function-call interrupts the load CPU has received so far.
ipis() { awk -v c=$((LG_CPU + 2)) '$1 == "RES:" || $1 == "CAL:" {n += $c} END {print n}' /proc/interrupts; }
# load SECONDS OUT: the load for $PROTO against the contender; prints the requests that succeeded.
load() {
  if [ "$PROTO" = h1 ]; then
    taskset -c $LG_CPU wrk -t1 -c64 -d${1}s "http://127.0.0.1:$P_MS/" > "$2" 2>&1
    grep -q "Non-2xx" "$2" && die "non-2xx answers: $(cat "$2")"
    awk '/requests in/{print $1}' "$2"
  else
    taskset -c $LG_CPU h2load -t1 -c64 -m10 -D "$1" "http://127.0.0.1:$P_MS/" > "$2" 2>&1
    awk '/^requests:/ && $10 == 0 && $12 == 0 {print $8}' "$2"
  fi
}
# measure NAME ROUND: one warm-up and one measured load run against $SUT_PID; appends to $WORK/runs.
measure() {
  load 2 /dev/null > /dev/null
  local u0 s0 u1 s1 n i0 i1
  i0=$(ipis); read -r u0 s0 < <(awk '{print $14, $15}' /proc/$SUT_PID/stat)
  n=$(load "$D" "$WORK/load.txt")
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$SUT_PID/stat); i1=$(ipis)
  [ -n "$n" ] && [ "$n" -gt 0 ] || die "$1: no requests, or some failed ($(cat "$WORK/load.txt"))"
  local tick=$((1000000 / $(getconf CLK_TCK))) user sys wakes
  user=$(echo "scale=2; ($u1-$u0)*$tick/$n" | bc); sys=$(echo "scale=2; ($s1-$s0)*$tick/$n" | bc)
  wakes=$(echo "scale=3; ($i1-$i0)/$n" | bc)
  echo "$2 $1 $n $user $sys $(echo "$n/$D" | bc) $wakes" >> "$WORK/runs"
  log "round $2 $1: $((n / D)) req/s, user $user µs + sys $sys µs per request, $wakes IPIs to the load CPU per request"
}

CONTENDERS=(meshscope meshscope-busy hyper haproxy haproxy-busy)
N=${#CONTENDERS[@]}
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((N - 1))); do
    name=${CONTENDERS[$(( (i + round) % N ))]}
    start "$name"
    measure "$name" "$round"
    stop_contender
  done
done

loadgen="wrk -t1 -c64"; [ "$PROTO" = h2 ] && loadgen="h2c both sides, h2load -t1 -c64 -m10"
echo "Runs (\`PROTO=$PROTO bash bench/proxy_floor.sh\`, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) CPUs, ${D} s each, $loadgen):"
echo
echo '| round | contender | requests | user µs/req | sys µs/req | req/s | IPIs to load CPU /req |'
echo '|---|---|---|---|---|---|---|'
while read -r round name n user sys rps wakes; do echo "| $round | $name | $n | $user | $sys | $rps | $wakes |"; done < "$WORK/runs"
echo
echo 'Medians; "× HAProxy" is the median over rounds of HAProxy'"'"'s CPU per request over the contender'"'"'s (requests per core against HAProxy'"'"'s, without busy polling):'
echo
python3 - "$WORK/runs" <<'EOF'
import statistics, sys
runs = [line.split() for line in open(sys.argv[1])]
cpu = {(r[0], r[1]): float(r[3]) + float(r[4]) for r in runs}
print("| contender | user µs/req | sys µs/req | CPU µs/req | req/s | IPIs /req | × HAProxy per core |")
print("|---|---|---|---|---|---|---|")
for name in ["meshscope", "meshscope-busy", "hyper", "haproxy", "haproxy-busy"]:
    mine = [r for r in runs if r[1] == name]
    ratios = [cpu[(r[0], "haproxy")] / cpu[(r[0], name)] for r in mine if (r[0], "haproxy") in cpu]
    med = lambda i: statistics.median(float(r[i]) for r in mine)
    print(f"| {name} | {med(3):.2f} | {med(4):.2f} | {statistics.median(cpu[(r[0], name)] for r in mine):.2f} "
          f"| {med(5):.0f} | {med(6):.2f} | {statistics.median(ratios):.2f} |")
EOF
