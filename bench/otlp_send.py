#!/usr/bin/env python3
"""Sends N distinct mesh-trace frames (bench/make_mesh_frame.py) to an OTLP/gRPC TraceService over
--conc concurrent unary RPCs (grpc.aio), like an exporter: UNAVAILABLE / RESOURCE_EXHAUSTED answers are
retried with backoff (counted), any other error is counted as lost. Only spans answered OK count.
Optionally writes one trace id per frame (hex, one per line) to --trace-ids, for lookups later.

Usage: otlp_send.py --target 127.0.0.1:4317 --frames 1954 [--spans 512] [--conc 8] [--spread 7200]
                    [--max-seconds 900] [--trace-ids FILE] [--seed 7]
Prints one JSON line. Loopback targets only."""
import argparse
import asyncio
import json
import os
import random
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mesh_frame import MeshFrames  # noqa: E402

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--spans", type=int, default=512)
    ap.add_argument("--conc", type=int, default=8)
    ap.add_argument("--spread", type=float, default=None, help="seconds before now over which traces start")
    ap.add_argument("--templates", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long (bounded run)")
    ap.add_argument("--give-up", type=float, default=60, help="stop when no export succeeded for this long")
    ap.add_argument("--trace-ids", help="write one trace id (hex) per frame sent OK")
    ap.add_argument("--progress", type=float, default=30, help="seconds between progress lines on stderr")
    a = ap.parse_args()
    host = a.target.rsplit(":", 1)[0]
    if not (host in ("localhost", "[::1]") or host.startswith("127.")):
        sys.exit("refusing non-loopback target")

    mf = MeshFrames(a.spans, min(a.templates, a.frames), a.seed, a.spread)
    chan = grpc.aio.insecure_channel(a.target, options=[("grpc.max_send_message_length", 64 << 20),
                                                        ("grpc.max_receive_message_length", 64 << 20)])
    call = chan.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
    ok = lost = retries = 0
    errors = {}
    ids = []
    lat = []
    nxt = 0
    t0 = time.perf_counter()
    deadline = t0 + a.max_seconds
    last_report = t0
    last_ok = t0
    rnd = random.Random(a.seed)

    async def worker():
        nonlocal ok, lost, retries, nxt, last_report, last_ok
        while nxt < a.frames and time.perf_counter() < deadline and time.perf_counter() - last_ok < a.give_up:
            i = nxt
            nxt += 1
            frame = mf.frame(i, record_trace_ids=bool(a.trace_ids))
            tid = rnd.choice(mf.last_trace_ids) if a.trace_ids else None
            body = frame[5:]
            backoff = 0.05
            while True:
                s = time.perf_counter()
                try:
                    await call(body, timeout=30)
                    lat.append(time.perf_counter() - s)
                    ok += 1
                    last_ok = time.perf_counter()
                    if tid:
                        ids.append(tid)
                    break
                except grpc.aio.AioRpcError as e:
                    errors[str(e.code())] = errors.get(str(e.code()), 0) + 1
                    now = time.perf_counter()
                    if e.code() in RETRYABLE and now < deadline and now - last_ok < a.give_up:
                        retries += 1
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 2.0)
                        continue
                    lost += 1
                    break
            now = time.perf_counter()
            if now - last_report >= a.progress:
                last_report = now
                print(f"  sent {ok * a.spans / 1e6:.2f}M spans in {now - t0:.0f}s "
                      f"({ok * a.spans / (now - t0):,.0f} spans/s), retries {retries}, lost {lost}",
                      file=sys.stderr, flush=True)

    await asyncio.gather(*(worker() for _ in range(a.conc)))
    el = time.perf_counter() - t0
    await chan.close()
    if a.trace_ids:
        with open(a.trace_ids, "w") as f:
            f.write("\n".join(ids) + "\n")
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None
    print(json.dumps({"frames_requested": a.frames, "frames_ok": ok, "frames_lost": lost, "retries": retries,
                      "errors": errors, "spans_ok": ok * a.spans, "seconds": round(el, 2),
                      "spans_per_s": round(ok * a.spans / el), "avg_encoded_bytes_per_span": round(mf.avg_span_bytes, 1),
                      "rpc_ms_p50": pct(0.5), "rpc_ms_p99": pct(0.99), "complete": ok == a.frames}))


if __name__ == "__main__":
    asyncio.run(main())
