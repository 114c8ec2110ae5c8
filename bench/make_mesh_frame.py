#!/usr/bin/env python3
"""Realistic service-mesh OTLP trace requests, as gRPC frames (flag byte 0 + u32 BE length + protobuf
ExportTraceServiceRequest), for h2load -d and for bench/otlp_send.py.

What a request holds: SPANS spans (default 512) of complete mesh traces. A trace is a call tree through a
small shop (frontend -> catalog/cart/checkout/users, checkout -> cart/payment/shipping/inventory, ...): each
hop is a CLIENT span reported by the caller's proxy and a SERVER span reported by the callee's proxy (its
child), 4-16 spans per trace. Spans are grouped by resource (service.name, service.version, service.namespace,
k8s.namespace.name, k8s.pod.name, k8s.node.name, host.name), scope meshscope.proxy. Attributes:
http.request.method, http.route, url.path (with a numeric id), http.response.status_code, server.address,
server.port, network.peer.address, user_agent.original, http.request.header.x-request-id (one UUID per
trace), and on CLIENT spans meshscope.upstream.service, meshscope.upstream.endpoint, meshscope.retry.attempt.
About 1% of spans have status ERROR (5xx, with an "exception" event); ~2% of calls are retried; ~10% of
CLIENT spans carry a "connection.established" event.

Distinct frames cheaply: a few templates are built with protobuf once; every further frame is a template with
fresh random trace ids, span ids (parents follow), request ids and url ids patched in place, and every trace
moved to a new random start time in [end - spread, end] and stretched by a random factor in [0.5, 2] (times
are fixed64, ids fixed length, so the encoding keeps its length). Frames are deterministic for a seed when made in order.

Usage:
  make_mesh_frame.py OUT.grpc                       one frame, spans within the last minute of the current hour
  make_mesh_frame.py --frames N --out-dir DIR       N distinct frames DIR/frame-00000.grpc ...
  options: --spans 512 --spread SECONDS --seed 1
Prints the frame size and the average encoded bytes per span (protobuf, per span incl. its share of the
resource/scope headers)."""
import argparse
import os
import random
import struct
import sys
import time

import numpy as np
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2 as cp
from opentelemetry.proto.resource.v1 import resource_pb2 as rp
from opentelemetry.proto.trace.v1 import trace_pb2 as tp

SERVER, CLIENT = tp.Span.SPAN_KIND_SERVER, tp.Span.SPAN_KIND_CLIENT
NAMESPACE = "shop"
# service -> (version, [(method, route, path prefix before the numeric id or None), ...], downstream services)
SERVICES = {
    "frontend": ("2.14.1", [("GET", "/", None), ("GET", "/product/{id}", "/product/"), ("POST", "/cart", None),
                            ("POST", "/checkout", None), ("GET", "/account/{id}", "/account/")],
                 ["catalog", "cart", "checkout", "users", "recommendations"]),
    "catalog": ("1.9.0", [("GET", "/api/v1/products/{id}", "/api/v1/products/"), ("GET", "/api/v1/products", None)],
                ["inventory"]),
    "cart": ("3.2.4", [("GET", "/api/v1/carts/{id}", "/api/v1/carts/"), ("PUT", "/api/v1/carts/{id}/items", None)],
             ["inventory", "catalog"]),
    "checkout": ("1.4.2", [("POST", "/api/v1/orders", None), ("GET", "/api/v1/orders/{id}", "/api/v1/orders/")],
                 ["cart", "payment", "shipping", "inventory", "users"]),
    "payment": ("0.9.7", [("POST", "/api/v1/charges", None), ("GET", "/api/v1/charges/{id}", "/api/v1/charges/")], []),
    "shipping": ("2.0.0", [("POST", "/api/v1/quotes", None), ("GET", "/api/v1/shipments/{id}", "/api/v1/shipments/")], []),
    "inventory": ("5.1.3", [("GET", "/api/v1/stock/{id}", "/api/v1/stock/"), ("POST", "/api/v1/reservations", None)], []),
    "users": ("1.12.0", [("GET", "/api/v1/users/{id}", "/api/v1/users/"), ("GET", "/api/v1/sessions/{id}", "/api/v1/sessions/")], []),
    "recommendations": ("0.3.1", [("GET", "/api/v1/recommendations/{id}", "/api/v1/recommendations/")], ["catalog"]),
}
USER_AGENTS = ["Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Firefox/133.0",
               "okhttp/4.12.0", "Go-http-client/1.1", "python-requests/2.32.3", "grpc-java-netty/1.68.1"]
NODES = [f"ip-10-0-{i}-{17 + 9 * i}.ec2.internal" for i in range(4)]
ID_DIGITS = 7          # url ids are 7 digits (1000000-9999999), so patching keeps their length
UUID_LEN = 36


def kv(key, value):
    a = cp.AnyValue()
    if isinstance(value, bool):
        a.bool_value = value
    elif isinstance(value, int):
        a.int_value = value
    elif isinstance(value, list):
        for v in value:
            a.array_value.values.add().string_value = v
    else:
        a.string_value = value
    return cp.KeyValue(key=key, value=a)


class Template:
    """One request built with protobuf, plus where its ids and times sit in the encoding."""

    def __init__(self, nspans, seed, base_ns):
        rnd = random.Random(seed)
        self.rnd = rnd
        # pods: 3 per service, each with an IP and a node
        self.pods = {}
        for s in SERVICES:
            self.pods[s] = [(f"{s}-{rnd.getrandbits(32):08x}"[:len(s) + 9] + f"-{rnd.getrandbits(20):05x}",
                             f"10.42.{rnd.randint(0, 15)}.{rnd.randint(2, 254)}", rnd.choice(NODES)) for _ in range(3)]
        self.spans = []          # (resource key, Span)
        self.trace_groups = []   # per trace: its template trace id
        self.byte_groups = {}    # placeholder bytes -> kind ('trace','span','uuid','digits')
        self.trace_index = {}    # template trace id -> trace number
        self.trace_t0 = []
        t = 0
        while len(self.spans) < nspans:
            self._trace(base_ns, min(nspans - len(self.spans), rnd.choice([4, 6, 8, 8, 10, 12, 16])), t)
            t += 1
        self.ntraces = t
        req = ts.ExportTraceServiceRequest()
        by_res = {}
        for res, span in self.spans:
            by_res.setdefault(res, []).append(span)
        for (svc, pod, node), spans in by_res.items():
            rs = req.resource_spans.add()
            rs.resource.CopyFrom(rp.Resource(attributes=[
                kv("service.name", svc), kv("service.version", SERVICES[svc][0]), kv("service.namespace", NAMESPACE),
                kv("k8s.namespace.name", NAMESPACE), kv("k8s.pod.name", pod), kv("k8s.node.name", node),
                kv("host.name", node), kv("telemetry.sdk.name", "meshscope")]))
            ss = rs.scope_spans.add()
            ss.scope.name = "meshscope.proxy"
            ss.scope.version = "0.1.0"
            ss.spans.extend(spans)
        self.request = req
        self.body = req.SerializeToString()
        self._locate()

    # --- building -------------------------------------------------------------------------------
    def _placeholder(self, kind, n):
        while True:
            if kind in ("trace", "span"):
                v = self.rnd.randbytes(n)
            elif kind == "uuid":
                h = "%032x" % self.rnd.getrandbits(128)
                v = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:32]}".encode()
            else:
                v = str(self.rnd.randint(10 ** (ID_DIGITS - 1), 10 ** ID_DIGITS - 1)).encode()
            if v not in self.byte_groups:
                self.byte_groups[v] = kind
                return v

    @staticmethod
    def _time(v, trace):
        return v

    def _trace(self, base_ns, budget, tindex):
        rnd = self.rnd
        trace_id = self._placeholder("trace", 16)
        self.trace_index[trace_id] = tindex
        request_id = self._placeholder("uuid", UUID_LEN).decode()
        t0 = base_ns + rnd.randint(0, 10 ** 9) * 7 + tindex * 1000  # distinct per trace
        self.trace_t0.append(t0)
        ua = rnd.choice(USER_AGENTS)
        state = {"left": budget}

        def call(callee, parent_span, caller, start, depth):
            # SERVER span of `callee` (child of parent_span, the caller's CLIENT span or None for the root)
            if state["left"] <= 0:
                return None
            state["left"] -= 1
            method, route, prefix = rnd.choice(SERVICES[callee][1])
            path = prefix + self._placeholder("digits", ID_DIGITS).decode() if prefix else route
            pod = rnd.choice(self.pods[callee])
            dur_self = int(rnd.lognormvariate(13.5, 1.0))          # ~0.7 ms median own time, heavy tail
            children = []
            downstream = list(SERVICES[callee][2])
            rnd.shuffle(downstream)
            fanout = min(len(downstream), rnd.choice([0, 1, 1, 2, 2, 3]) if depth < 3 else 0)
            server = tp.Span(trace_id=trace_id, span_id=self._placeholder("span", 8), name=f"{method} {route}", kind=SERVER)
            if parent_span is not None:
                server.parent_span_id = parent_span.span_id
            cursor = start + rnd.randint(20_000, 200_000)
            for d in downstream[:fanout]:
                attempts = 2 if rnd.random() < 0.02 else 1
                for attempt in range(attempts):
                    if state["left"] < 2:
                        break
                    state["left"] -= 1
                    client = tp.Span(trace_id=trace_id, span_id=self._placeholder("span", 8), parent_span_id=server.span_id,
                                     kind=CLIENT)
                    upstream_pod = rnd.choice(self.pods[d])
                    child = call(d, client, callee, cursor + rnd.randint(100_000, 400_000), depth + 1)
                    cend = (child.end_time_unix_nano if child else cursor + 500_000) + rnd.randint(80_000, 600_000)
                    failed = attempt + 1 < attempts
                    client.name = child.name if child else "GET /"
                    client.start_time_unix_nano = self._time(cursor, tindex)
                    client.end_time_unix_nano = self._time(cend, tindex)
                    cmethod = child.name.split(" ", 1)[0] if child else "GET"
                    cpath = next((a.value.string_value for a in child.attributes if a.key == "url.path"), "/") if child else "/"
                    croute = child.name.split(" ", 1)[1] if child else "/"
                    child_status = next((a.value.int_value for a in child.attributes
                                         if a.key == "http.response.status_code"), 200) if child else 200
                    status = 503 if failed else child_status
                    client.attributes.extend([
                        kv("http.request.method", cmethod), kv("http.route", croute), kv("url.path", cpath),
                        kv("http.response.status_code", status),
                        kv("server.address", f"{d}.{NAMESPACE}.svc.cluster.local"), kv("server.port", 8080),
                        kv("network.peer.address", upstream_pod[1]),
                        kv("meshscope.upstream.service", d), kv("meshscope.upstream.endpoint", f"{upstream_pod[1]}:8080"),
                        kv("meshscope.retry.attempt", attempt), kv("user_agent.original", ua),
                        kv("http.request.header.x-request-id", [request_id])])
                    if rnd.random() < 0.10:
                        ev = client.events.add(name="connection.established",
                                               time_unix_nano=self._time(cursor + rnd.randint(1_000, 90_000), tindex))
                        ev.attributes.extend([kv("network.transport", "tcp"), kv("tls.protocol.version", "1.3")])
                    if status >= 500:
                        client.status.code = tp.Status.STATUS_CODE_ERROR
                        client.status.message = f"upstream {d} answered {status}"
                    self.spans.append(((callee, pod[0], pod[2]), client))
                    cursor = cend + rnd.randint(10_000, 100_000)
            end = cursor + dur_self
            err = rnd.random() < 0.008
            code = rnd.choice([500, 503]) if err else (404 if rnd.random() < 0.02 else (201 if method == "POST" else 200))
            server.start_time_unix_nano = self._time(start, tindex)
            server.end_time_unix_nano = self._time(end, tindex)
            server.attributes.extend([
                kv("http.request.method", method), kv("http.route", route), kv("url.path", path),
                kv("http.response.status_code", code),
                kv("server.address", f"{callee}.{NAMESPACE}.svc.cluster.local"), kv("server.port", 8080),
                kv("network.peer.address", rnd.choice(self.pods[caller])[1] if caller else f"10.0.{rnd.randint(0, 3)}.{rnd.randint(2, 254)}"),
                kv("user_agent.original", ua), kv("http.request.header.x-request-id", [request_id])])
            if err:
                server.status.code = tp.Status.STATUS_CODE_ERROR
                server.status.message = f"{callee}: internal error"
                ev = server.events.add(name="exception", time_unix_nano=self._time(end - 1_000, tindex))
                ev.attributes.extend([kv("exception.type", "UpstreamError"),
                                      kv("exception.message", f"{callee} failed to serve {route}")])
            self.spans.append(((callee, pod[0], pod[2]), server))
            return server

        call("frontend", None, None, t0, 0)

    # --- patching -------------------------------------------------------------------------------
    def _locate(self):
        """Offsets of every id, request id, url id and time in the encoding. A span's bytes inside the request
        are its own serialization, so each span is found once (in order) and searched locally."""
        body, cursor = self.body, 0
        gid = {k: {} for k in ("trace", "span", "uuid", "digits")}
        occ = {k: ([], []) for k in gid}
        toff, tval, ttr = [], [], []

        def unique(hay, needle, what):
            i = hay.find(needle)
            if i < 0 or hay.find(needle, i + 1) >= 0:
                raise SystemExit(f"{what} {needle!r} not found exactly once in a span's encoding")
            return i

        for rs in self.request.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    sb = s.SerializeToString()
                    base = body.find(sb, cursor)
                    if base < 0:
                        raise SystemExit("a span's encoding is not in the request encoding")
                    cursor = base + len(sb)
                    found = [("trace", s.trace_id, 0), ("span", s.span_id, 0)]
                    if s.parent_span_id:
                        found.append(("span", s.parent_span_id, 0))
                    for a in s.attributes:
                        if a.key == "http.request.header.x-request-id":
                            found.append(("uuid", a.value.array_value.values[0].string_value.encode(), 0))
                        elif a.key == "url.path":
                            path = a.value.string_value.encode()
                            if self.byte_groups.get(path[-ID_DIGITS:]) == "digits":
                                found.append(("digits", path, len(path) - ID_DIGITS))
                    for kind, value, skip in found:
                        occ[kind][0].append(base + unique(sb, value, kind) + skip)
                        key = value[skip:]
                        occ[kind][1].append(gid[kind].setdefault(key, len(gid[kind])))
                    tr = self.trace_index[s.trace_id]
                    for v in [s.start_time_unix_nano, s.end_time_unix_nano] + [e.time_unix_nano for e in s.events]:
                        toff.append(base + unique(sb, struct.pack("<Q", v), "time"))
                        tval.append(v)
                        ttr.append(tr)
        self.groups = {}
        for kind, length in (("trace", 16), ("span", 8), ("uuid", UUID_LEN), ("digits", ID_DIGITS)):
            off = np.array(occ[kind][0], np.int64)
            self.groups[kind] = (len(gid[kind]), (off[:, None] + np.arange(length)).ravel(),
                                 np.array(occ[kind][1], np.int64))
        self.toff = (np.array(toff, np.int64)[:, None] + np.arange(8)).ravel()
        self.tval = np.array(tval, np.int64)
        self.ttr = np.array(ttr, np.int64)
        self.t0 = np.array(self.trace_t0, np.int64)


class MeshFrames:
    """Frame factory: frame(i) -> gRPC-framed request bytes, distinct for every i."""

    def __init__(self, spans=512, templates=8, seed=1, spread_s=None, end_ns=None):
        now = time.time_ns()
        self.end_ns = end_ns or now
        if spread_s is None:  # stay within the current hour: the last minute, or less right after the hour
            spread_s = max(1.0, min(60.0, (self.end_ns // 10**9) % 3600 - 5))
        self.spread_ns = int(spread_s * 1e9)
        self.seed = seed
        self.spans = spans
        self.templates = [Template(spans, seed * 1000 + k, 1_600_000_000 * 10**9) for k in range(templates)]
        self.avg_span_bytes = sum(len(t.body) for t in self.templates) / (spans * len(self.templates))
        self.last_trace_ids = []
        self.rng = np.random.default_rng(seed)   # frames are deterministic for a seed when made in order

    def frame(self, i, record_trace_ids=False):
        t = self.templates[i % len(self.templates)]
        rng = self.rng
        buf = np.frombuffer(t.body, np.uint8).copy()
        for kind, length in (("trace", 16), ("span", 8), ("uuid", UUID_LEN), ("digits", ID_DIGITS)):
            n, off, gi = t.groups[kind]
            if n == 0:
                continue
            if kind in ("trace", "span"):
                vals = np.frombuffer(rng.bytes(n * length), np.uint8).reshape(n, length)
            elif kind == "uuid":
                hexd = np.frombuffer(b"0123456789abcdef", np.uint8)
                vals = hexd[np.frombuffer(rng.bytes(n * length), np.uint8).reshape(n, length) & 15]
                vals[:, [8, 13, 18, 23]] = ord("-")
                vals[:, 14] = ord("4")
            else:
                vals = np.frombuffer(rng.bytes(n * length), np.uint8).reshape(n, length) % 10 + ord("0")
                vals[:, 0] = np.frombuffer(rng.bytes(n), np.uint8) % 9 + ord("1")
            buf[off] = vals[gi].ravel()
            if kind == "trace" and record_trace_ids:
                self.last_trace_ids = [bytes(v).hex() for v in vals]
        ntr = t.ntraces
        new_t0 = self.end_ns - rng.integers(0, self.spread_ns, ntr) - 2 * 10**9   # traces end before end_ns
        stretch = rng.uniform(0.5, 2.0, ntr)
        rel = (t.tval - t.t0[t.ttr]).astype(np.float64)
        new = (new_t0[t.ttr] + (rel * stretch[t.ttr]).astype(np.int64)).astype("<u8")
        buf[t.toff] = new.view(np.uint8)
        body = buf.tobytes()
        return b"\x00" + struct.pack(">I", len(body)) + body


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", help="output file for one frame")
    ap.add_argument("--spans", type=int, default=512)
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--out-dir")
    ap.add_argument("--spread", type=float, default=None, help="seconds before now over which traces start")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--templates", type=int, default=8)
    ap.add_argument("--check", action="store_true", help="decode frame 0 and print a summary")
    a = ap.parse_args()
    if not a.out and not a.out_dir:
        ap.error("give OUT or --out-dir")
    mf = MeshFrames(a.spans, min(a.templates, a.frames), a.seed, a.spread)
    if a.out:
        f = mf.frame(0)
        open(a.out, "wb").write(f)
        paths = [a.out]
    else:
        os.makedirs(a.out_dir, exist_ok=True)
        paths = []
        for i in range(a.frames):
            p = os.path.join(a.out_dir, f"frame-{i:05d}.grpc")
            open(p, "wb").write(mf.frame(i))
            paths.append(p)
    size = os.path.getsize(paths[0])
    print(f"{len(paths)} frame(s), {a.spans} spans each, {size} bytes/frame, "
          f"avg {mf.avg_span_bytes:.0f} encoded bytes/span -> {paths[0]}{' ...' if len(paths) > 1 else ''}")
    if a.check:
        req = ts.ExportTraceServiceRequest()
        req.ParseFromString(open(paths[0], "rb").read()[5:])
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        tids = {s.trace_id for s in spans}
        errs = sum(s.status.code == 2 for s in spans)
        kinds = {k: sum(s.kind == k for s in spans) for k in (SERVER, CLIENT)}
        ts0 = min(s.start_time_unix_nano for s in spans); ts1 = max(s.end_time_unix_nano for s in spans)
        print(f"check: {len(spans)} spans, {len(tids)} traces, {len(req.resource_spans)} resources, "
              f"server/client {kinds[SERVER]}/{kinds[CLIENT]}, errors {errs}, events {sum(len(s.events) for s in spans)}, "
              f"time {time.strftime('%H:%M:%S', time.gmtime(ts0 / 1e9))}..{time.strftime('%H:%M:%S', time.gmtime(ts1 / 1e9))} UTC")
        # every parent exists in the same request
        ids = {s.span_id for s in spans}
        orphans = sum(1 for s in spans if s.parent_span_id and s.parent_span_id not in ids)
        print(f"check: orphans {orphans}, durations ms p50 {sorted(s.end_time_unix_nano - s.start_time_unix_nano for s in spans)[len(spans) // 2] / 1e6:.2f}")


if __name__ == "__main__":
    main()
