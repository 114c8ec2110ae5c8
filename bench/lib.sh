#!/bin/bash
# Shared helpers of bench/ingest.sh and bench/query.sh (sourced, not run). Everything stays on 127.0.0.1;
# every process started here is recorded in STARTED_PIDS and killed by bench_cleanup (trap on EXIT).

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
BIN=${MESHSCOPE_BIN:-$ROOT/target/release/meshscope}   # MESHSCOPE_BIN: only to smoke-test the harness
PY=$BENCH/.venv/bin/python
STARTED_PIDS=()
COLLECTOR_PID=

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }

bench_cleanup() {
  local p
  for p in "${STARTED_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
  done
  sleep 1
  for p in "${STARTED_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  if [ -n "${WORK:-}" ] && [ -d "$WORK" ] && [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; fi
  [ -n "${KEEP:-}" ] && [ -n "${WORK:-}" ] && log "kept $WORK (KEEP=1)"
  return 0
}

ensure_setup() {
  if [ ! -x "$PY" ] || ! command -v h2load >/dev/null; then bash "$BENCH/setup.sh" >&2; fi
}

build_release() {
  log "cargo build --release (waits for the cargo lock if another build holds it)"
  local out rc=0
  out=$(mktemp)
  (cd "$ROOT" && cargo build --release) >"$out" 2>&1 || rc=$?
  tail -3 "$out" >&2; rm -f "$out"
  [ "$rc" = 0 ] || die "cargo build --release failed (exit $rc); fix the build or rerun (NOBUILD=1 uses the existing binary)"
  [ -x "$BIN" ] || die "no $BIN after the build"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_collector DATA_DIR LOGFILE [taskset cpu list or ""] [extra flags...]
start_collector() {
  local dir=$1 logf=$2 cpus=$3; shift 3
  GRPC_PORT=$(free_port); HTTP_PORT=$(free_port); API_PORT=$(free_port)
  while [ "$HTTP_PORT" = "$GRPC_PORT" ]; do HTTP_PORT=$(free_port); done
  while [ "$API_PORT" = "$GRPC_PORT" ] || [ "$API_PORT" = "$HTTP_PORT" ]; do API_PORT=$(free_port); done
  local pin=()
  [ -n "$cpus" ] && pin=(taskset -c "$cpus")
  "${pin[@]}" "$BIN" collector --data-dir "$dir" --otlp-grpc-listen 127.0.0.1:$GRPC_PORT \
    --otlp-http-listen 127.0.0.1:$HTTP_PORT --api-listen 127.0.0.1:$API_PORT "$@" >>"$logf" 2>&1 &
  COLLECTOR_PID=$!
  STARTED_PIDS+=("$COLLECTOR_PID")
  rss_watchdog "$COLLECTOR_PID" "${RSS_CAP_MIB:-16384}" "$logf" &
  STARTED_PIDS+=("$!")
  local i
  for i in $(seq 1 600); do
    if curl -sf -o /dev/null "http://127.0.0.1:$API_PORT/api/health"; then
      log "collector pid $COLLECTOR_PID ready after $((i / 10)).$((i % 10)) s (grpc :$GRPC_PORT, http :$HTTP_PORT, api :$API_PORT)"
      return 0
    fi
    kill -0 "$COLLECTOR_PID" 2>/dev/null || { tail -20 "$logf" >&2; die "collector exited during start"; }
    sleep 0.1
  done
  tail -20 "$logf" >&2
  die "collector not healthy after 60 s"
}

# rss_watchdog PID CAP_MIB LOGFILE: this is a shared 2-core / 24 GiB machine, so a collector whose RSS passes
# CAP_MIB (RSS_CAP_MIB, default 16 GiB) is killed before the kernel's OOM killer picks a victim; the kill is
# written to LOGFILE and to $WORK/rss-cap-hit, and the benchmark reports it.
rss_watchdog() {
  local pid=$1 cap=$2 logf=$3 rss
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '$1=="VmRSS:" {print int($2/1024)}' "/proc/$pid/status" 2>/dev/null)
    if [ -n "$rss" ] && [ "$rss" -gt "$cap" ]; then
      echo "bench watchdog: collector pid $pid RSS ${rss} MiB > cap ${cap} MiB: SIGKILL" | tee -a "$logf" >&2
      echo "collector pid $pid killed by the bench RSS watchdog at ${rss} MiB (cap ${cap} MiB)" >>"${WORK:-/tmp}/rss-cap-hit"
      kill -KILL "$pid"
      return
    fi
    sleep 0.5
  done
}

# stop_collector: SIGTERM, wait (bounded, 180 s); sets STOP_RC (exit code, or "killed") and STOP_SECS.
# Call it directly (not in $(...)): `wait` needs the collector to be a child of this shell.
stop_collector() {
  local pid=$COLLECTOR_PID t0
  t0=$(date +%s.%N)
  kill -TERM "$pid"
  for _ in $(seq 1 1800); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "collector did not exit within 180 s of SIGTERM: killing it"
    kill -KILL "$pid"; wait "$pid" 2>/dev/null; STOP_RC=killed
  else
    STOP_RC=0; wait "$pid" || STOP_RC=$?
  fi
  STOP_SECS=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
}

# metric NAME: value of a counter/gauge on the collector's /metrics (sum over label sets), 0 if absent
metric() {
  curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v m="$1" '$1==m || index($1, m"{")==1 {s+=$NF; f=1} END {printf "%.0f\n", f ? s : 0}'
}

# threads_cpu PID -> "tid comm ticks" per thread (for a per-thread CPU breakdown)
threads_cpu() {
  local t
  for t in /proc/"$1"/task/*; do
    [ -r "$t/stat" ] || continue
    awk -v tid="${t##*/}" '{c=$0; sub(/^[^(]*\(/, "", c); sub(/\).*/, "", c); gsub(/ /, "_", c);
      n=split($0, f, ") "); split(f[n], g, " "); print tid, c, g[12] + g[13]}' "$t/stat"
  done
}

# threads_delta BEFORE_FILE AFTER_FILE TCK -> "comm: N threads, S s" per thread name, busiest first
threads_delta() {
  awk -v tck="$3" 'NR==FNR {b[$1]=$3; next} {d=$3-b[$1]; s[$2]+=d; if (d>0) n[$2]++}
    END {for (c in s) if (s[c] > 0) printf "%.2f\t%s: %d threads busy, %.1f s\n", s[c]/tck, c, n[c], s[c]/tck}' "$1" "$2" \
    | sort -rn | cut -f2
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk_tck() { getconf CLK_TCK; }
vm_kib() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }

# sql 'SELECT ...' -> the JSON answer (raw)
sql() {
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$1")
  curl -sS --max-time 300 -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$API_PORT/api/sql"
}

# sql_scalar 'SELECT count(*) AS n FROM spans' -> first value of the first row
sql_scalar() {
  sql "$1" | python3 -c 'import json,sys
d=json.load(sys.stdin)
r=d.get("rows") or []
print(list(r[0].values())[0] if r else "null")' 2>/dev/null || echo "error"
}

# manifest_stats DIR -> "files rows bytes" of the spans table
manifest_stats() {
  python3 - "$1/manifest.json" <<'EOF'
import json, sys
try:
    m = json.load(open(sys.argv[1]))
except FileNotFoundError:
    print(0, 0, 0); sys.exit()
f = [x for x in m.get("files", []) if x.get("table") == "spans"]
print(len(f), sum(x["rows"] for x in f), sum(x["bytes"] for x in f))
EOF
}

# manifest_partitions DIR -> "partition:files ..." of the spans table
# manifest_partitions DIR [MAX_BYTES] -> "partition:files ..." for spans files (only those < MAX_BYTES if given)
manifest_partitions() {
  python3 - "$1/manifest.json" "${2:-0}" <<'EOF'
import json, sys, collections
m = json.load(open(sys.argv[1])); limit = int(sys.argv[2])
c = collections.Counter(x["partition"] for x in m.get("files", [])
                        if x.get("table") == "spans" and (limit == 0 or x["bytes"] < limit))
print(" ".join(f"{p}:{n}" for p, n in sorted(c.items())))
EOF
}

# wait_compaction DIR MAX_SECONDS: until no hour partition has >= 4 spans files and the manifest's file
# list has not changed for 40 s (compaction runs about every 30 s), or MAX_SECONDS. Prints seconds waited.
wait_compaction() {
  local dir=$1 max=$2 t0 last="" same_since now cur maxfiles
  t0=$(date +%s); same_since=$t0
  while :; do
    now=$(date +%s)
    # compaction leaves files of 64 MiB (its default compaction_file_bytes) and more alone
    cur=$(manifest_partitions "$dir" 67108864)
    maxfiles=$(echo "$cur" | tr ' ' '\n' | awk -F: 'NF==2 && $2>m {m=$2} END {print m+0}')
    if [ "$cur" != "$last" ]; then last=$cur; same_since=$now; fi
    if [ "$maxfiles" -lt 4 ] && [ $((now - same_since)) -ge 40 ]; then break; fi
    if [ $((now - t0)) -ge "$max" ]; then log "compaction not settled after ${max}s (files per partition: $cur)"; break; fi
    sleep 5
  done
  echo $(( $(date +%s) - t0 ))
}

machine_line() {
  local model mem
  model=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
  mem=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')
  echo "$(nproc) cores, $model, $mem RAM; $(uname -r)"
}
