#!/bin/bash
# The feedback-loop evaluation (issue 5): many client proxies at a low rate each, ten endpoints of one
# service, one endpoint going bad, four policies compared on the same seeded traffic in one run.
#
#   bash bench/loop.sh                 (~13 min after the build: 5 scenarios × 4 policies × 30 s runs)
#
# Real processes on 127.0.0.1 only: one `meshscope collector` (fresh data dir per run) and one
# `meshscope-proxy` per client; the endpoints and the open-loop clients run inside the `loop_eval`
# example (proxy/examples/loop_eval). Prints one markdown table per scenario on stdout, ready for
# bench/README.md; JSON lines go to $OUT (default bench/loop-results.jsonl, not committed).
# Env: CLIENTS (20), RATE (requests/s per client, 10), RUN_SECONDS (30), ONSET (5), SEED (1),
# SCENARIOS / POLICIES (comma-separated, default all), NOBUILD=1 (use the binaries already built),
# KEEP=1 (keep the work dir with every config and log).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=$(mktemp -d /tmp/meshscope-loop.XXXXXX)
OUT=${OUT:-$BENCH/loop-results.jsonl}

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
cleanup() {
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

if [ -z "${NOBUILD:-}" ]; then
  log "cargo build --release (the collector), then the proxy and the harness"
  (cd "$ROOT" && cargo build --release) >&2
  (cd "$ROOT" && cargo build --release -p meshscope-proxy --bin meshscope-proxy --example loop_eval) >&2
fi
ulimit -n 20000 2>/dev/null || true

args=(--proxy "$ROOT/target/release/meshscope-proxy" --meshscope "$ROOT/target/release/meshscope"
      --work-dir "$WORK" --json "$OUT"
      --clients "${CLIENTS:-20}" --rate "${RATE:-10}" --seconds "${RUN_SECONDS:-30}"
      --onset "${ONSET:-5}" --seed "${SEED:-1}")
[ -n "${SCENARIOS:-}" ] && args+=(--scenarios "$SCENARIOS")
[ -n "${POLICIES:-}" ] && args+=(--policies "$POLICIES")

log "machine: $(nproc) cores, $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$ROOT/target/release/examples/loop_eval" "${args[@]}"
log "JSON lines in $OUT"
