#!/bin/bash
# Where the bytes of stored spans go: compressed bytes per span of every column of the span files under
# one or more data dirs (e.g. the ones `KEEP=1 bash bench/query.sh` or `KEEP=1 bash bench/ingest.sh`
# leave), read from the Parquet footers by DuckDB's parquet_metadata. Columns under 0.3 B/span are
# summed as "other". Only the files the manifest lists are counted (replaced files may linger on disk).
#
# Usage: bash bench/column_bytes.sh DATA_DIR [DATA_DIR...]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: bash bench/column_bytes.sh DATA_DIR [DATA_DIR...]"
ensure_setup
for dir in "$@"; do
  [ -f "$dir/manifest.json" ] || die "$dir has no manifest.json (pass the collector's --data-dir)"
  "$PY" - "$dir" <<'PY'
import json, os, sys
import duckdb
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
files = [f for f in m["files"] if f["table"] == "spans"]
paths = [os.path.join(d, f["path"]) for f in files]
rows = sum(f["rows"] for f in files)
size = sum(os.path.getsize(p) for p in paths)
cols = duckdb.sql(
    "SELECT path_in_schema, sum(total_compressed_size) AS b FROM parquet_metadata($p) GROUP BY 1 ORDER BY 2 DESC",
    params={"p": paths}).fetchall()
print(f"{d}: {len(paths)} span files, {rows:,} spans, {size / rows:.1f} B/span in files")
other = 0.0
for name, b in cols:
    per = b / rows
    if per >= 0.3:
        print(f"  {name:32} {per:6.2f}")
    else:
        other += per
print(f"  {'other':32} {other:6.2f}")
PY
done
