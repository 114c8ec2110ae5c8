#!/usr/bin/env python3
"""Where a search's time goes, against a running, filled, idle collector: for three of query_bench.py's
searches, the wall time of `GET /api/search` (3 runs), then the two steps search runs, separately through
`/api/sql`: step 2 (the summary scan of the 20 traces found: `trace_id IN (…)`, 7 columns) timed and under
EXPLAIN ANALYZE, and step 1 over the whole hour at once (how main searches: matching spans, newest 20 trace
ids) timed and under EXPLAIN ANALYZE. Prints the scan metrics (files, row groups, rows, bytes) of each.

Usage: bench/.venv/bin/python bench/query_profile.py 127.0.0.1:API_PORT"""
import json
import re
import sys
import time
import urllib.parse
import urllib.request

API = sys.argv[1]
if not API.startswith("127."):
    sys.exit("loopback only")


def get(path):
    t = time.perf_counter()
    data = urllib.request.urlopen(f"http://{API}{path}").read()
    return json.loads(data), time.perf_counter() - t


def sql(q):
    t = time.perf_counter()
    req = urllib.request.Request(f"http://{API}/api/sql", json.dumps({"sql": q}).encode(),
                                 {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req)), time.perf_counter() - t


def metrics(answer):
    keys = ["output_rows", "files_opened", "row_groups_pruned_statistics", "page_index_rows_pruned", "bytes_scanned",
            "pushdown_rows_pruned", "time_elapsed_opening", "time_elapsed_processing", "time_elapsed_scanning_total"]
    out = []
    for m in re.finditer(r"DataSourceExec: .*?metrics=\[(.*?)\]", json.dumps(answer, ensure_ascii=False)):
        kv = dict(x.split("=", 1) for x in m.group(1).split(", ") if "=" in x)
        out.append({k: kv.get(k) for k in keys})
    return out


def ms(s):
    return round(s * 1000, 1)


now = time.time_ns()
for svc, md, attr in [("payment", "5ms", "http.request.method=POST"), ("checkout", "10ms", "http.request.method=POST"),
                      ("frontend", "10ms", "user_agent.original=okhttp/4.12.0")]:
    q = urllib.parse.urlencode({"service": svc, "min_duration": md, "attr": attr,
                                "start": now - 3600 * 10**9, "end": now, "limit": 20})
    times = []
    for _ in range(3):
        r, dt = get(f"/api/search?{q}")
        times.append(ms(dt))
    ids = [t["traceId"] for t in r["traces"]]
    print(f"## {svc}: /api/search ms {times}, {len(ids)} traces")
    inlist = ",".join(f"unhex_id('{i}')" for i in ids)
    step2 = ("SELECT trace_id, parent_span_id, service_name, name, start_time, end_time, status_code FROM spans "
             f"WHERE trace_id IN ({inlist})")
    d, dt = sql(step2)
    print(f"  step 2 alone (summary scan of the {len(ids)} traces): {ms(dt)} ms, {len(d['rows'])} spans")
    d, dt = sql("EXPLAIN ANALYZE " + step2)
    print(f"  step 2 EXPLAIN ANALYZE: {metrics(d)}")
    key, val = attr.split("=", 1)
    column = {"http.request.method": "http_request_method"}.get(key)
    match = f"(attr(attributes, '{key}') = '{val}' OR attr(resource_attributes, '{key}') = '{val}')"
    if column:
        match = f"(CAST({column} AS VARCHAR) = '{val}' OR {match})"
    step1 = (f"SELECT trace_id, max(start_time) AS latest FROM spans WHERE service_name IN ('{svc}') "
             f"AND start_time >= to_timestamp_nanos({now - 3600 * 10**9}) AND start_time <= to_timestamp_nanos({now}) "
             f"AND duration_ns >= {int(md[:-2]) * 10**6} AND {match} GROUP BY trace_id ORDER BY latest DESC LIMIT 20")
    d, dt = sql(step1)
    print(f"  step 1 over the whole hour at once: {ms(dt)} ms")
    d, dt = sql("EXPLAIN ANALYZE " + step1)
    print(f"  step 1 whole hour EXPLAIN ANALYZE: {metrics(d)}")
