#!/bin/bash
# Peak RSS of the collector while it compacts an existing data dir (issue 2: memory stays bounded).
#
#   DATA=/tmp/meshscope-query.XXXX/data bash bench/compaction_rss.sh [extra collector flags...]
#
# DATA is a data dir left by `KEEP=1 bash bench/query.sh` (10M spans: ~12 files, ~700 MB). The script
# works on a copy, starts the release collector on it with `--compaction-file-bytes 1GiB` (so every file
# counts as small and is merged), and reads VmRSS and the thread count every 0.5 s until the log says
# "compacted small files" (or MAXT seconds, default 400, pass). Prints one line: peak RSS, seconds,
# files in the manifest afterwards. Env: DATA (required), MAXT, NOBUILD=1, KEEP=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -n "${DATA:-}" ] && [ -d "$DATA" ] || die "set DATA to a data dir (e.g. from KEEP=1 bash bench/query.sh)"
[ -n "${NOBUILD:-}" ] || build_release
WORK=$(mktemp -d /tmp/meshscope-compaction.XXXXXX)
trap bench_cleanup EXIT
cp -a "$DATA" "$WORK/data"
log "data: $(du -sh "$WORK/data" | cut -f1), $(manifest_stats "$WORK/data" | cut -d" " -f1) span files; load average $(cut -d' ' -f1-3 /proc/loadavg)"
start_collector "$WORK/data" "$WORK/collector.log" "" --compaction-file-bytes 1GiB "$@"
peak=0; start=$(date +%s); threads=0
while kill -0 "$COLLECTOR_PID" 2>/dev/null; do
  rss=$(awk '/VmRSS/{print $2}' "/proc/$COLLECTOR_PID/status" 2>/dev/null || echo 0)
  t=$(ls "/proc/$COLLECTOR_PID/task" 2>/dev/null | wc -l)
  (( rss > peak )) && peak=$rss
  (( t > threads )) && threads=$t
  grep -q "compacted small files" "$WORK/collector.log" && break
  (( $(date +%s) - start > ${MAXT:-400} )) && { log "no compaction within ${MAXT:-400} s"; break; }
  sleep 0.5
done
echo "peak RSS $((peak / 1024)) MiB, at most $threads threads, $(( $(date +%s) - start )) s; span files now $(manifest_stats "$WORK/data" | cut -d" " -f1)"
