#!/bin/bash
# Search latency of several collector binaries side by side on one kept data dir, over a fixed one-hour
# window that ends at the newest stored span (so every binary reads the same slices, however old the
# data is). For each round and binary: start the collector on the dir (compaction held off), one warm-up,
# then RUNS timed searches per (service, attribute) pair; prints the median per pair.
#
# Usage: bash bench/search_compare.sh DATA_DIR BIN_A BIN_B [BIN ...]   (DATA_DIR: e.g. a KEEP=1 query.sh
#        fill's data dir). Knobs: ROUNDS=3 RUNS=10. Loopback only; every collector is stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
[ $# -ge 2 ] || die "usage: bash bench/search_compare.sh DATA_DIR BIN [BIN ...]"
ensure_setup
D=$1; shift
ROUNDS=${ROUNDS:-3}; RUNS=${RUNS:-10}
END=$("$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print(max(f['max_time'] for f in m['files'] if f['table']=='spans'))" "$D/manifest.json")
START=$((END - 3600 * 1000000000))
PAIRS=("frontend user_agent.original=okhttp/4.12.0" "checkout http.request.method=POST")
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    BIN=$bin start_collector "$D" "$D/../search_compare.log" "" --compaction-min-files 1000
    for pair in "${PAIRS[@]}"; do
      read -r service attr <<<"$pair"
      query=$("$PY" -c "import urllib.parse,sys; print(urllib.parse.urlencode({'service': sys.argv[1], 'min_duration': '10ms', 'attr': sys.argv[2], 'start': sys.argv[3], 'end': sys.argv[4], 'limit': 20}))" "$service" "$attr" "$START" "$END")
      median=$("$PY" - "127.0.0.1:$API_PORT" "$query" "$RUNS" <<'PY'
import statistics, sys, time, urllib.request
api, query, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
url = f"http://{api}/api/search?{query}"
urllib.request.urlopen(url).read()
times = []
for _ in range(runs):
    t = time.perf_counter()
    urllib.request.urlopen(url).read()
    times.append(time.perf_counter() - t)
print(f"{statistics.median(times) * 1000:.1f}")
PY
)
      echo "round $round  $bin  $service: median $median ms"
    done
    stop_collector
  done
done
