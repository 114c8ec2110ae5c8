#!/usr/bin/env python3
"""Fills a Meshscope collector for the web UI tests (tests/web_ui.rs), with the official OpenTelemetry
Python SDK exporting over OTLP/HTTP (protobuf).

    send_web_traces.py shop    --http-endpoint http://127.0.0.1:4318
    send_web_traces.py hostile --http-endpoint http://127.0.0.1:4318

shop: one trace through three services, each with its own TracerProvider (its own resource), the context
handed from one to the next as a real client and server would:
    frontend  GET /checkout (server) -> frontend POST api (client)
    -> checkout-api  POST /orders (server, attribute order.id=A-1001) -> checkout-api INSERT (client, db.system=postgresql)
plus a root server span of checkout-api alone (a caller nobody instrumented).

hostile: spans whose service name, span name, attributes, events and status carry markup, quotes, entities,
a 100 KB string, right-to-left and combining Unicode, and bytes that are not UTF-8.

Prints {"traceIds": [...]} (hex) on stdout; exits non-zero when an export failed.
"""

import argparse
import json
import sys

from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import Status, StatusCode

FAILURES = []

# Kept in step with tests/web_ui.rs, which looks for these texts on every page.
HOSTILE_SERVICE = "svc\"'><img src=x id=injected-service onerror=alert(1)>"
HOSTILE_NAME = "<script id=injected-name>alert(2)</script> &amp; &lt;b&gt; \"q\" 'q'"
RTL = "\u202eevil.exe\u202c \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627"
COMBINING = "Z\u0351\u0364\u0306a\u0300\u0301\u0302lgo\u0308\u0308"
BIG = "<b id=injected-big>" + "x" * 100_000 + "</b>"
BAD_BYTES = b"\xff\xfe<script id=injected-bytes>alert(3)</script>\xc3\x28"


class Exporter(OTLPSpanExporter):
    def export(self, spans):
        result = super().export(spans)
        if result != SpanExportResult.SUCCESS:
            FAILURES.append(f"export of {len(spans)} spans: {result}")
        return result


def provider(endpoint, service):
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(SimpleSpanProcessor(Exporter(endpoint=f"{endpoint}/v1/traces", timeout=10)))
    return p


def shop(endpoint):
    frontend = provider(endpoint, "frontend")
    api = provider(endpoint, "checkout-api")
    fe = frontend.get_tracer("web-test")
    be = api.get_tracer("web-test")
    with fe.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.route", "/checkout")
        with fe.start_as_current_span("POST api", kind=SpanKind.CLIENT) as client:
            client.set_attribute("server.address", "checkout-api")
            with be.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as server:
                server.set_attribute("order.id", "A-1001")
                server.set_attribute("http.response.status_code", 503)
                server.add_event("order.validated", {"items": 3})
                server.set_status(Status(StatusCode.ERROR, "payment backend unavailable"))
                with be.start_as_current_span("INSERT orders", kind=SpanKind.CLIENT) as db:
                    db.set_attribute("db.system", "postgresql")
                    db.set_attribute("db.statement", "INSERT INTO orders VALUES ($1)")
        trace_id = root.get_span_context().trace_id
    # A request into checkout-api from a caller nobody instrumented.
    with be.start_as_current_span("GET /health", kind=SpanKind.SERVER):
        pass
    for p in (frontend, api):
        p.force_flush(10_000)
        p.shutdown()
    return [format(trace_id, "032x")]


def hostile(endpoint):
    p = provider(endpoint, HOSTILE_SERVICE)
    tracer = p.get_tracer("web-test")
    with tracer.start_as_current_span(HOSTILE_NAME, kind=SpanKind.SERVER) as root:
        root.set_attribute("quote", "\"'`")
        root.set_attribute("entities", "&amp; &lt;script&gt; &#x3C;")
        root.set_attribute("rtl", RTL)
        root.set_attribute("combining", COMBINING)
        root.set_attribute("big", BIG)
        root.set_attribute("raw.bytes", BAD_BYTES)
        root.set_attribute("<img src=x id=injected-key onerror=alert(4)>", "key is markup")
        root.add_event("<script id=injected-event>alert(5)</script>", {"e": "</textarea><svg id=injected-svg onload=alert(6)>"})
        root.set_status(Status(StatusCode.ERROR, "<iframe id=injected-status src=javascript:alert(7)>"))
        with tracer.start_as_current_span("child " + RTL, kind=SpanKind.CLIENT) as child:
            child.set_attribute("peer.service", "<b id=injected-peer>db</b>")
        trace_id = root.get_span_context().trace_id
    p.force_flush(10_000)
    p.shutdown()
    return [format(trace_id, "032x")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["shop", "hostile"])
    parser.add_argument("--http-endpoint", required=True)
    args = parser.parse_args()
    ids = shop(args.http_endpoint) if args.what == "shop" else hostile(args.http_endpoint)
    if FAILURES:
        print("\n".join(FAILURES), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"traceIds": ids}))


if __name__ == "__main__":
    main()
