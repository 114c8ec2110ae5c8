#!/bin/bash
# The Meshscope proxy against direct, HAProxy and nginx, side by side in one run on loopback.
#
#   bash bench/proxy.sh            (~4 min after the build; root, or the tools already installed)
#
# Layout on a 2-core machine (taskset): the proxy under test alone on CPU ${PROXY_CPU:-1}, one worker
# (TOKIO_WORKER_THREADS=1, HAProxy nbthread 1, nginx worker_processes 1); the load generator and the
# upstream (nginx, one worker, answering "ok\n") on CPU ${LG_CPU:-0}. "direct" is the load generator
# straight to that upstream, in the same place. Measures, for each: HTTP/1.1 with wrk and HTTP/2
# (h2c prior knowledge) with h2load, requests/s, p50/p99, and the proxy's own CPU per request (utime +
# stime from /proc); latency at a fixed 1k requests/s with the open-loop `fixed_rate` example; the
# Meshscope proxy with span export off and on (to the `otlp_sink` example on CPU 0); RSS idle and
# peak. Prints a markdown block for bench/README.md on stdout, progress on stderr.
# Env: D (seconds per load run, 10), C (connections, 64), RATE (1000), RATE_S (seconds, 10),
# RATE_ROUNDS (5: fixed-rate rounds, the four targets in a rotating order within each round; the
# report gives medians over rounds and each round's added latency against that round's direct run),
# LATENCY_ONLY=1 (only the fixed-rate rounds and the idle RSS: no wrk, h2load or span-export runs),
# NOBUILD=1 (use the binaries already built), BIN=path (measure that proxy binary instead of the
# one built, e.g. a copy of an older build; implies NOBUILD), KEEP=1 (keep the work dir).
# The build goes to $CARGO_TARGET_DIR when it is set, else target/.
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[ -n "${BIN:-}" ] && NOBUILD=1
D=${D:-10}; C=${C:-64}; RATE=${RATE:-1000}; RATE_S=${RATE_S:-10}; RATE_ROUNDS=${RATE_ROUNDS:-5}
PROXY_CPU=${PROXY_CPU:-1}; LG_CPU=${LG_CPU:-0}
P_UP=18180; P_UP_H2=18181; P_HA=18182; P_HA_H2=18183; P_NG=18184; P_NG_H2=18185
P_MS=18186; P_MS_ADMIN=18187; P_SINK=18188
WORK=$(mktemp -d /tmp/meshscope-proxy-bench.XXXXXX)
PIDS=()

source "$BENCH/proxy_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -----------------------------------------------------------------------------------------
missing=()
for tool in haproxy nginx wrk h2load bc taskset; do command -v $tool >/dev/null || missing+=($tool); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages for: ${missing[*]}"
  apt-get install -y haproxy nginx wrk nghttp2-client bc >&2 || { apt-get update >&2 && apt-get install -y haproxy nginx wrk nghttp2-client bc >&2; } \
    || die "cannot install haproxy nginx wrk nghttp2-client bc (run as root)"
fi
ulimit -n 20000 2>/dev/null || true

# --- build: the release proxy binary alone, then the two bench helpers -------------------------------
if [ -z "${NOBUILD:-}" ]; then
  log "cargo build --release -p meshscope-proxy"
  (cd "$ROOT" && cargo build --release -p meshscope-proxy) >&2 || die "build failed"
fi
cp "${BIN:-$TARGET/release/meshscope-proxy}" "$WORK/meshscope-proxy" || die "no release binary"
if [ -z "${NOBUILD:-}" ]; then
  log "cargo build --release -p meshscope-proxy --example otlp_sink --example fixed_rate"
  (cd "$ROOT" && cargo build --release -p meshscope-proxy --example otlp_sink --example fixed_rate) >&2 || die "example build failed"
fi
SINK=$TARGET/release/examples/otlp_sink
FIXED=$TARGET/release/examples/fixed_rate
[ -x "$SINK" ] && [ -x "$FIXED" ] || die "examples missing"

# --- configurations -----------------------------------------------------------------------------------
cat > "$WORK/upstream.conf" <<EOF
worker_processes 1;
events { worker_connections 8192; }
pid $WORK/upstream.pid;
error_log $WORK/upstream.err warn;
http {
    access_log off;
    client_body_temp_path $WORK/tmp-body; proxy_temp_path $WORK/tmp-proxy; fastcgi_temp_path $WORK/tmp-fcgi;
    uwsgi_temp_path $WORK/tmp-uwsgi; scgi_temp_path $WORK/tmp-scgi;
    keepalive_requests 10000000; keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$P_UP backlog=4096;
        listen 127.0.0.1:$P_UP_H2 http2;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
write_nginx_proxy_conf "$WORK/nginx-proxy.conf" $P_NG $P_NG_H2
write_haproxy_conf "$WORK/haproxy.cfg" $P_HA "" $P_HA_H2
write_meshscope_confs "$WORK/meshscope-off.toml" "$WORK/meshscope-on.toml"

# --- helpers ------------------------------------------------------------------------------------------
rss_kib() { awk -v k="$2" '$1==k":"{print $2}' /proc/$1/status; }
busy() { # per-CPU busy % over 2 s
  local a b c d; read -ra a < <(grep '^cpu0 ' /proc/stat); read -ra b < <(grep '^cpu1 ' /proc/stat); sleep 2
  read -ra c < <(grep '^cpu0 ' /proc/stat); read -ra d < <(grep '^cpu1 ' /proc/stat)
  local pct; pct() { local -n x=$1 y=$2; local t0=0 t1=0 i; for i in 1 2 3 4 5 6 7 8; do t0=$((t0+x[i])); t1=$((t1+y[i])); done
    echo $((100 - 100*((y[4]+y[5])-(x[4]+x[5]))/((t1-t0)>0?(t1-t0):1))); }
  echo "cpu0 $(pct a c)% busy, cpu1 $(pct b d)% busy"
}
SUT_PID=
start_meshscope() { # $1 config
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c $PROXY_CPU "$WORK/meshscope-proxy" --config "$1" 2>"$WORK/meshscope.log" &
  SUT_PID=$!; PIDS+=($SUT_PID); wait_port $P_MS; sleep 0.5
}
stop_pid() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

ROWS=()
# wrk_run NAME URL [pid of the process under test]
wrk_run() {
  local out=$WORK/wrk-$1.txt t0 t1 cpu="—" per_core="—"
  [ -n "${3:-}" ] && t0=$(cpu_ticks "$3")
  taskset -c $LG_CPU wrk -t1 -c$C -d${D}s --latency "$2" > "$out" 2>&1
  local rps p50 p99 reqs
  rps=$(awk '/Requests\/sec/{print $2}' "$out"); reqs=$(awk '/requests in/{print $1}' "$out")
  p50=$(awk '/Latency Distribution/{f=1} f&&$1=="50%"{print $2}' "$out")
  p99=$(awk '/Latency Distribution/{f=1} f&&$1=="99%"{print $2}' "$out")
  if [ -n "${3:-}" ] && [ -n "$reqs" ]; then
    t1=$(cpu_ticks "$3")
    cpu=$(echo "scale=1; ($t1-$t0)*1000000/$(getconf CLK_TCK)/$reqs" | bc)
    per_core=$(echo "scale=0; 1000000/$cpu" | bc 2>/dev/null || echo "—")
  fi
  log "wrk $1: $rps req/s p50 $p50 p99 $p99 cpu/req ${cpu} µs"
  ROWS+=("| $1 | HTTP/1.1 wrk -t1 -c$C | ${rps:-—} | ${p50:-—} | ${p99:-—} | $cpu | $per_core |")
}
# h2_run NAME URL [pid]
h2_run() {
  local out=$WORK/h2load-$1.txt logf=$WORK/h2load-$1.log t0 t1 cpu="—" per_core="—"
  [ -n "${3:-}" ] && t0=$(cpu_ticks "$3")
  taskset -c $LG_CPU h2load -t1 -c$C -m10 -D $D --warm-up-time=1 --log-file="$logf" "$2" > "$out" 2>&1
  local rps reqs p50 p99
  rps=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$out")
  reqs=$(awk '/^requests:/{print $8}' "$out")
  # --log-file: start time, status, duration in µs per request.
  read -r p50 p99 < <(awk '{print $3}' "$logf" | sort -n | awk '{v[NR]=$1} END {if (NR) printf "%.0fus %.0fus\n", v[int(NR*0.5)+1], v[int(NR*0.99)+1]}')
  if [ -n "${3:-}" ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ]; then
    t1=$(cpu_ticks "$3")
    cpu=$(echo "scale=1; ($t1-$t0)*1000000/$(getconf CLK_TCK)/$reqs" | bc)
    per_core=$(echo "scale=0; 1000000/$cpu" | bc 2>/dev/null || echo "—")
  fi
  log "h2load $1: $rps req/s p50 $p50 p99 $p99 ($(awk '/^requests:/{print $8" ok, "$10" errored"}' "$out")) cpu/req ${cpu} µs"
  ROWS+=("| $1 | HTTP/2 h2load -t1 -c$C -m10 | ${rps:-—} | ${p50:-—} | ${p99:-—} | $cpu | $per_core |")
}
RATE_LOG=$WORK/rate.txt
# rate_run NAME URL ROUND: one fixed-rate run, appended to $RATE_LOG as
# "round name p50 p90 p99 p999 max requests errors pacer_late_p99" (µs).
rate_run() {
  local line
  line=$(taskset -c $LG_CPU "$FIXED" "$2" "$RATE" "$RATE_S")
  log "fixed rate $1, round $3: $line"
  local -A kv
  for field in $line; do kv[${field%%=*}]=${field#*=}; done
  echo "$3 $1 ${kv[p50_us]} ${kv[p90_us]} ${kv[p99_us]} ${kv[p999_us]} ${kv[max_us]} ${kv[requests]} ${kv[errors]} ${kv[late_p99_us]}" >> "$RATE_LOG"
}
# rate_report: per target, the median over rounds of each percentile, and the latency added over the
# same round's direct run (median, and the range over rounds).
rate_report() {
  python3 - "$RATE_LOG" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r, name, *v = line.split()
    runs.setdefault(name, {})[int(r)] = [int(x) for x in v]
direct = runs["direct"]
med = lambda xs: int(statistics.median(xs))
for name, by_round in runs.items():
    rows = list(by_round.values())
    col = lambda i: [row[i] for row in rows]
    added = lambda i: [by_round[r][i] - direct[r][i] for r in by_round]
    a50, a99 = added(0), added(2)
    print(f"| {name} | {med(col(0))} | {med(col(1))} | {med(col(2))} | {med(col(3))} | {max(col(4))} "
          f"| {sum(col(5))} | {sum(col(6))} | {max(col(7))} "
          f"| {med(a50)} ({min(a50)}..{max(a50)}) | {med(a99)} ({min(a99)}..{max(a99)}) |")
PY
}

# --- run ----------------------------------------------------------------------------------------------
LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
log "machine before the run: load $LOAD_BEFORE; $(busy)"
BUSY_BEFORE=$(busy)

taskset -c $LG_CPU nginx -c "$WORK/upstream.conf" || die "upstream nginx did not start"
taskset -c $PROXY_CPU nginx -c "$WORK/nginx-proxy.conf" || die "nginx proxy did not start"
taskset -c $PROXY_CPU haproxy -D -f "$WORK/haproxy.cfg" || die "haproxy did not start"
wait_port $P_UP; wait_port $P_NG; wait_port $P_HA
for f in upstream nginx-proxy; do for p in $(cat "$WORK/$f.pid") $(pgrep -P "$(cat "$WORK/$f.pid")"); do taskset -a -pc $([ $f = upstream ] && echo $LG_CPU || echo $PROXY_CPU) "$p" >/dev/null; done; done
HA_PID=$(cat "$WORK/haproxy.pid"); NG_PID=$(cat "$WORK/nginx-proxy.pid")
curl -fsS "http://127.0.0.1:$P_UP/" >/dev/null || die "upstream does not answer"

taskset -c $LG_CPU "$SINK" "127.0.0.1:$P_SINK" > "$WORK/sink.out" 2>&1 &
SINK_PID=$!; PIDS+=($SINK_PID); wait_port $P_SINK

# Meshscope, span export off.
start_meshscope "$WORK/meshscope-off.toml"
MS_OFF=$SUT_PID
curl -fsS "http://127.0.0.1:$P_MS/" >/dev/null || die "meshscope does not answer"
RSS_IDLE=$(rss_kib $MS_OFF VmRSS)
log "meshscope idle RSS ${RSS_IDLE} KiB"

if [ -z "${LATENCY_ONLY:-}" ]; then
  wrk_run direct "http://127.0.0.1:$P_UP/"
  wrk_run meshscope "http://127.0.0.1:$P_MS/" $MS_OFF
  wrk_run haproxy "http://127.0.0.1:$P_HA/" $HA_PID
  wrk_run nginx "http://127.0.0.1:$P_NG/" $NG_PID
  h2_run direct "http://127.0.0.1:$P_UP_H2/"
  h2_run meshscope "http://127.0.0.1:$P_MS/" $MS_OFF
  h2_run haproxy "http://127.0.0.1:$P_HA_H2/" $HA_PID
  h2_run nginx "http://127.0.0.1:$P_NG_H2/" $NG_PID
fi
RATE_TARGETS=(direct meshscope haproxy nginx)
declare -A RATE_URL=([direct]=$P_UP [meshscope]=$P_MS [haproxy]=$P_HA [nginx]=$P_NG)
for round in $(seq 1 $RATE_ROUNDS); do
  for i in 0 1 2 3; do
    t=${RATE_TARGETS[$(( (i + round - 1) % 4 ))]}
    rate_run $t "http://127.0.0.1:${RATE_URL[$t]}/" $round
  done
done
RSS_PEAK_OFF=$(rss_kib $MS_OFF VmHWM); RSS_AFTER_OFF=$(rss_kib $MS_OFF VmRSS)
stop_pid $MS_OFF

SPAN_STATS=; RSS_PEAK_ON=; SINK_OUT=
if [ -z "${LATENCY_ONLY:-}" ]; then
  # Meshscope, span export on: every request is one recorded CLIENT span, exported to the sink.
  start_meshscope "$WORK/meshscope-on.toml"
  MS_ON=$SUT_PID
  wrk_run "meshscope, spans on" "http://127.0.0.1:$P_MS/" $MS_ON
  h2_run "meshscope, spans on" "http://127.0.0.1:$P_MS/" $MS_ON
  sleep 2   # one more flush interval
  SPAN_STATS=$(curl -fsS "http://127.0.0.1:$P_MS_ADMIN/metrics" | awk '/^meshscope_proxy_spans_(exported|dropped|failed)_total/{printf "%s=%s ", $1, $2}' | sed 's/meshscope_proxy_//g')
  RSS_PEAK_ON=$(rss_kib $MS_ON VmHWM)
  stop_pid $MS_ON
fi
kill -TERM $SINK_PID 2>/dev/null; wait $SINK_PID 2>/dev/null
SINK_OUT=$(cat "$WORK/sink.out")
HA_RSS=$(rss_kib $HA_PID VmRSS); NG_RSS=$(( $(rss_kib $NG_PID VmRSS) + $(for p in $(pgrep -P $NG_PID); do rss_kib $p VmRSS; done | awk '{s+=$1} END {print s+0}') ))
LOAD_AFTER=$(uptime | sed 's/.*load average: //')

# --- report -------------------------------------------------------------------------------------------
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain -- proxy | head -1)
cat <<EOF
#### Proxy run $(date -u +%Y-%m-%d\ %H:%M) UTC, commit $COMMIT${DIRTY:+ (with uncommitted proxy changes)}${BIN:+; proxy binary $BIN}

Machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2}'), $(free -g | awk '/Mem:/{print $2}') GiB.
Load average before: $LOAD_BEFORE ($BUSY_BEFORE over 2 s); after: $LOAD_AFTER.
Command: \`${LATENCY_ONLY:+LATENCY_ONLY=1 }bash bench/proxy.sh\` (D=$D s per run, C=$C connections; proxy on CPU $PROXY_CPU, load generator + upstream nginx on CPU $LG_CPU).

$([ ${#ROWS[@]} -gt 0 ] && echo '| target | load | req/s | p50 | p99 | proxy CPU µs/req | req/s per proxy core |' && echo '|---|---|---|---|---|---|---|' && printf '%s\n' "${ROWS[@]}")

Fixed rate, $RATE req/s for $RATE_S s, HTTP/1.1 keep-alive, open loop (\`fixed_rate\` example, latency from the scheduled send time, paced by a thread with 1 ns timer slack), $RATE_ROUNDS rounds with the targets in rotating order. Percentiles are medians over the rounds; max, requests and errors are over all rounds; "pacer late" is the worst round's p99 lateness of the pacer; "added" is the target's figure minus the same round's direct figure, median (min..max) over the rounds:

| target | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | requests | errors | pacer late p99 µs | added p50 µs | added p99 µs |
|---|---|---|---|---|---|---|---|---|---|---|
$(rate_report)

${SPAN_STATS:+Span export (spans on, both runs): $SPAN_STATS; sink: $SINK_OUT.
}RSS of the Meshscope proxy: idle $((RSS_IDLE/1024)).$((RSS_IDLE%1024*10/1024)) MiB; peak under load $((RSS_PEAK_OFF/1024)) MiB (spans off)${RSS_PEAK_ON:+, $((RSS_PEAK_ON/1024)) MiB (spans on)}; $((RSS_AFTER_OFF/1024)) MiB after the load. HAProxy $((HA_RSS/1024)) MiB, nginx (master + worker) $((NG_RSS/1024)) MiB after the load.
EOF
