#!/bin/bash
# Instructions per proxied request, from callgrind: a load-independent figure to decide hot-path
# changes by on a shared machine (bench/proxy.sh's CPU times move with the neighbours' load).
#
#   bash bench/proxy_callgrind.sh [BINARY...]    (default: target/release/meshscope-proxy)
#
# For each binary: the proxy runs under `valgrind --tool=callgrind` with one worker, in front of an
# nginx upstream answering "ok\n"; a run serving one request gives the fixed cost (start, shutdown),
# then one run per load serves exactly N requests (h2load: HTTP/1.1 with --h1 -c4, HTTP/2 h2c with
# -c4 -m10), with span export off and on (to the `otlp_sink` example, every request one exported
# CLIENT span). Instructions per request = (run total - fixed cost) / N. Several binaries are
# measured in one go so that they can be compared side by side.
# Env: N (requests per run, 20000), KEEP=1 (keep the work dir with the callgrind files, for
# callgrind_annotate). Needs valgrind, nginx, h2load (Debian valgrind, nginx, nghttp2-client).
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-20000}
P_UP=18280; P_MS=18286; P_MS_ADMIN=18287; P_SINK=18288
WORK=$(mktemp -d /tmp/meshscope-callgrind.XXXXXX)
PIDS=()

source "$BENCH/proxy_lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in valgrind nginx h2load curl; do command -v $tool >/dev/null || die "$tool missing"; done
BINARIES=("$@")
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=("$TARGET/release/meshscope-proxy")
SINK=$TARGET/release/examples/otlp_sink
[ -x "$SINK" ] || die "build the sink first: cargo build --release -p meshscope-proxy --example otlp_sink"

write_upstream_conf "$WORK/upstream.conf"
write_meshscope_confs "$WORK/off.toml" "$WORK/on.toml"


nginx -c "$WORK/upstream.conf" || die "upstream nginx did not start"
wait_port $P_UP
"$SINK" "127.0.0.1:$P_SINK" > "$WORK/sink.out" 2>&1 &
SINK_PID=$!; PIDS+=($SINK_PID); wait_port $P_SINK

# measure BINARY CONFIG LOAD OUT: total instructions of one run under callgrind.
measure() {
  local out=$4
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$1" --config "$2" 2>"$out.log" &
  local pid=$!
  wait_port $P_MS
  curl -fsS "http://127.0.0.1:$P_MS/" >/dev/null || die "proxy does not answer ($out.log)"
  case $3 in
    h1) h2load --h1 -n "$N" -c4 "http://127.0.0.1:$P_MS/" > "$out.load" 2>&1 ;;
    h2) h2load -n "$N" -c4 -m10 "http://127.0.0.1:$P_MS/" > "$out.load" 2>&1 ;;
  esac
  grep -q "requests: $N total, $N started, $N done, $N succeeded" "$out.load" 2>/dev/null || [ "$3" = idle ] \
    || log "warning: not all requests succeeded: $(grep '^requests:' "$out.load")"
  kill -TERM $pid; wait $pid
  awk '/^(summary|totals):/{print $2; exit}' "$out"
}

printf '| binary | load | spans | instructions/request |\n|---|---|---|---|\n'
for bin in "${BINARIES[@]}"; do
  name=$(basename "$bin")
  for spans in off on; do
    idle=$(measure "$bin" "$WORK/$spans.toml" idle "$WORK/$name-$spans-idle.cg")
    for load in h1 h2; do
      total=$(measure "$bin" "$WORK/$spans.toml" $load "$WORK/$name-$spans-$load.cg")
      per=$(( (total - idle) / N ))
      log "$name spans $spans $load: $per instructions/request"
      printf '| %s | %s | %s | %s |\n' "$name" "$load" "$spans" "$per"
    done
  done
done
kill -TERM $SINK_PID; wait $SINK_PID 2>/dev/null
log "sink: $(cat "$WORK/sink.out") (expected $((${#BINARIES[@]} * (2 * N + 3))) spans)"
