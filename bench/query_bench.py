#!/usr/bin/env python3
"""Query measurements against a running, filled, idle collector (used by bench/query.sh).

- trace by id: GET /api/traces/{id} for LOOKUPS random ids known to exist (from otlp_send.py --trace-ids),
  no time hint; one keep-alive connection; wall time until the whole body is read.
- search: GET /api/search?service=S&min_duration=D&attr=K=V&start=<now-1h>&end=<now>&limit=20, SEARCHES runs
  rotating over 5 (service, attribute) pairs (one attribute is not a promoted column).
- aggregate: POST /api/sql "p99 duration per service over everything", exact (percentile_cont, the headline:
  the same aggregate as DuckDB's quantile_cont) and approximate (approx_percentile_cont), AGG_RUNS timed runs
  after 1 warm-up each; and DuckDB (read_parquet over the same live Parquet files, listed by manifest.json) with quantile_cont
  (exact) and approx_quantile, threads=1 and default threads, same number of runs.
Prints a markdown fragment on stdout and writes all raw figures as JSON to --json."""
import argparse
import http.client
import json
import os
import random
import statistics
import sys
import time
import urllib.parse


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Api:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        if not host.startswith("127."):
            sys.exit("loopback only")
        self.host, self.port = host, int(port)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data, time.perf_counter() - t0
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt:
                    raise

    def sql(self, q):
        st, data, dt = self.request("POST", "/api/sql", json.dumps({"sql": q}), {"content-type": "application/json"})
        return st, (json.loads(data) if st == 200 else data.decode(errors="replace")), dt


def ms(x):
    return round(x * 1000, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--trace-ids", required=True)
    ap.add_argument("--lookups", type=int, default=200)
    ap.add_argument("--searches", type=int, default=50)
    ap.add_argument("--agg-runs", type=int, default=10)
    ap.add_argument("--json", required=True)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    api = Api(a.api)
    out = {}
    rnd = random.Random(a.seed)

    # ---- trace by id ----
    ids = [l.strip() for l in open(a.trace_ids) if l.strip()]
    pick = rnd.sample(ids, min(a.lookups, len(ids)))
    lat, spans, bad = [], [], {}
    for tid in pick:
        st, data, dt = api.request("GET", f"/api/traces/{tid}")
        lat.append(dt)
        if st == 200:
            spans.append(len(json.loads(data).get("spans", [])))
        else:
            bad[st] = bad.get(st, 0) + 1
    out["trace_by_id"] = {"n": len(lat), "p50_ms": ms(pct(lat, .5)), "p99_ms": ms(pct(lat, .99)), "max_ms": ms(max(lat)),
                          "first_ms": ms(lat[0]), "not_ok": bad, "spans_per_trace_mean": round(statistics.mean(spans), 1) if spans else 0}
    print(f"trace by id: {out['trace_by_id']}", file=sys.stderr)

    # ---- search ----
    now = time.time_ns()
    combos = [("checkout", "10ms", "http.request.method=POST"), ("frontend", "10ms", "user_agent.original=okhttp/4.12.0"),
              ("cart", "10ms", "meshscope.upstream.service=inventory"), ("catalog", "10ms", "http.route=/api/v1/products/{id}"),
              ("payment", "5ms", "http.request.method=POST")]
    lat, found, bad, per = [], [], {}, {}
    for i in range(a.searches):
        svc, md, attr = combos[i % len(combos)]
        q = urllib.parse.urlencode({"service": svc, "min_duration": md, "attr": attr,
                                    "start": now - 3600 * 10**9, "end": now, "limit": 20})
        st, data, dt = api.request("GET", f"/api/search?{q}")
        lat.append(dt)
        per.setdefault(svc, []).append(dt)
        if st == 200:
            found.append(len(json.loads(data).get("traces", [])))
        else:
            bad[st] = bad.get(st, 0) + 1
            if len(bad) == 1 and bad[st] == 1:
                print(f"search answered {st}: {data[:300]!r}", file=sys.stderr)
    out["search"] = {"n": len(lat), "p50_ms": ms(pct(lat, .5)), "p95_ms": ms(pct(lat, .95)), "max_ms": ms(max(lat)),
                     "not_ok": bad, "traces_found_min": min(found) if found else None,
                     "traces_found_mean": round(statistics.mean(found), 1) if found else None,
                     "p50_ms_by_service": {k: ms(pct(v, .5)) for k, v in per.items()}}
    print(f"search: {out['search']}", file=sys.stderr)

    # ---- aggregate through the API: exact (what DuckDB's quantile_cont computes) and approximate ----
    aggregates = {
        "exact": "SELECT service_name, percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99 FROM spans GROUP BY 1",
        "approx": "SELECT service_name, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99 FROM spans GROUP BY 1",
    }
    api_ms, mesh_p99 = {}, {}
    for kind, q in aggregates.items():
        st, res, _ = api.sql(q)
        if st != 200:
            err = f"{st}: {str(res)[:300]}"
            print(f"aggregate SQL failed: {err}", file=sys.stderr)
            out[f"aggregate_api_{kind}"] = {"sql": q, "error": err}
            continue
        lat = []
        for _ in range(a.agg_runs):
            st, r, dt = api.sql(q)
            if st != 200:
                raise SystemExit(f"aggregate failed mid-run: {r}")
            lat.append(dt)
        api_ms[kind] = statistics.median(lat)
        mesh_p99[kind] = {row["service_name"]: float(row["p99"]) for row in res["rows"] if row.get("p99") is not None}
        out[f"aggregate_api_{kind}"] = {"sql": q, "runs": len(lat), "median_ms": ms(api_ms[kind]),
                                        "min_ms": ms(min(lat)), "max_ms": ms(max(lat)), "groups": len(res["rows"])}
        print(f"aggregate via API ({kind}): {out[f'aggregate_api_{kind}']}", file=sys.stderr)
    st, r, _ = api.sql("SELECT count(*) AS n FROM spans")
    api_count = list(r["rows"][0].values())[0] if st == 200 else None

    # ---- DuckDB on the same files ----
    import duckdb
    m = json.load(open(os.path.join(a.data_dir, "manifest.json")))
    files = [os.path.join(a.data_dir, f["path"]) for f in m["files"] if f["table"] == "spans"]
    glob = os.path.join(a.data_dir, "tables/spans/**/*.parquet")
    con = duckdb.connect()
    glob_files = con.execute(f"SELECT count(*) FROM glob('{glob}')").fetchone()[0]
    src = "read_parquet([" + ",".join(f"'{f}'" for f in files) + "])"
    duck = {"version": duckdb.__version__, "manifest_files": len(files), "glob_files": glob_files}
    duck["count"] = con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
    default_threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    duck_p99 = {}
    for fn in ("quantile_cont", "approx_quantile"):
        q = f"SELECT service_name, {fn}(duration_ns, 0.99) AS p99 FROM {src} GROUP BY 1"
        for threads in (1, default_threads):
            con.execute(f"SET threads={threads}")
            r = con.execute(q).fetchall()
            lat = []
            for _ in range(a.agg_runs):
                t0 = time.perf_counter()
                r = con.execute(q).fetchall()
                lat.append(time.perf_counter() - t0)
            duck[f"{fn}_t{threads}"] = {"median_ms": ms(statistics.median(lat)), "min_ms": ms(min(lat))}
            if fn == "quantile_cont":
                duck_p99 = {k: float(v) for k, v in r}
    out["duckdb"] = duck
    print(f"duckdb: {duck}", file=sys.stderr)
    def ratio(kind, fn, threads):
        return round(api_ms[kind] / (duck[f"{fn}_t{threads}"]["median_ms"] / 1000), 2) if kind in api_ms else None
    out["ratio_vs_duckdb_default_threads"] = ratio("exact", "quantile_cont", default_threads)
    out["ratio_approx_vs_duckdb_approx_default_threads"] = ratio("approx", "approx_quantile", default_threads)
    diffs = {}
    for kind, values in mesh_p99.items():
        rel = [abs(values[k] - duck_p99[k]) / duck_p99[k] for k in duck_p99 if k in values and duck_p99[k]]
        diffs[kind] = round(max(rel) * 100, 2) if rel else None
    out["p99_max_rel_diff_pct"] = diffs
    out["p99_by_service_ms"] = {k: round(v / 1e6, 2) for k, v in sorted(duck_p99.items())}
    out["api_count"] = api_count
    json.dump(out, open(a.json, "w"), indent=1)

    t, s = out["trace_by_id"], out["search"]
    print(f"| trace by id, {t['n']} random existing ids, no time hint (`GET /api/traces/{{id}}`) | p50 **{t['p50_ms']} ms**, "
          f"p99 **{t['p99_ms']} ms** (max {t['max_ms']}, first {t['first_ms']}; {t['spans_per_trace_mean']} spans/trace; "
          f"non-200: {t['not_ok'] or 'none'}) | p99 ≤ 50 ms |")
    print(f"| search, last hour, service + min_duration + one attribute, {s['n']} runs | p50 **{s['p50_ms']} ms**, "
          f"p95 **{s['p95_ms']} ms** (max {s['max_ms']}; traces found per run: min {s['traces_found_min']}, mean "
          f"{s['traces_found_mean']}; non-200: {s['not_ok'] or 'none'}) | p95 ≤ 200 ms |")
    for kind, fn in (("exact", "percentile_cont"), ("approx", "approx_percentile_cont")):
        ag = out[f"aggregate_api_{kind}"]
        if kind in api_ms:
            print(f"| p99 duration per service over all spans via `/api/sql` (`{fn}`), median of {ag['runs']} | "
                  f"**{ag['median_ms']} ms** (min {ag['min_ms']}, max {ag['max_ms']}) | ≤ 1.5× DuckDB |")
        else:
            print(f"| p99 duration per service via `/api/sql` (`{fn}`) | FAILED: {ag['error']} | ≤ 1.5× DuckDB |")
    print(f"| same in DuckDB {duck['version']} on the same {len(files)} Parquet files, `quantile_cont` (exact) | "
          f"1 thread {duck['quantile_cont_t1']['median_ms']} ms, {default_threads} threads "
          f"{duck[f'quantile_cont_t{default_threads}']['median_ms']} ms | |")
    print(f"| same in DuckDB, `approx_quantile` | 1 thread {duck['approx_quantile_t1']['median_ms']} ms, {default_threads} threads "
          f"{duck[f'approx_quantile_t{default_threads}']['median_ms']} ms | |")
    print(f"| ratio Meshscope / DuckDB, exact / `quantile_cont`, {default_threads} threads | "
          f"**{ratio('exact', 'quantile_cont', default_threads)}×** (vs 1 thread {ratio('exact', 'quantile_cont', 1)}×) | ≤ 1.5× |")
    print(f"| ratio Meshscope / DuckDB, approximate / `approx_quantile`, {default_threads} threads | "
          f"{ratio('approx', 'approx_quantile', default_threads)}× | |")
    print()
    print(f"Counts: API count(*) {api_count}, DuckDB count {duck['count']} ({len(files)} files in the manifest, {glob_files} "
          f"under tables/spans/). Largest p99 difference from DuckDB's exact value: Meshscope exact {diffs.get('exact')} %, "
          f"approximate {diffs.get('approx')} %.")


if __name__ == "__main__":
    main()
