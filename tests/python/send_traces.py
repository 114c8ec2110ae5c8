#!/usr/bin/env python3
"""Sends traces or metrics to a Meshscope collector with the official OpenTelemetry Python SDK.

Used by tests/otlp_python_sdk.rs. Every signal goes out twice: once through the OTLP/gRPC exporter and
once through the OTLP/HTTP protobuf exporter (gzip), each with its own service name.

    send_traces.py traces  --grpc-endpoint http://127.0.0.1:4317 --http-endpoint http://127.0.0.1:4318
    send_traces.py metrics --grpc-endpoint http://127.0.0.1:4317 --http-endpoint http://127.0.0.1:4318

Prints on stdout a JSON description of exactly what the exporters sent:

* traces: {"spans": [{"transport", "resource", "resourceSchemaUrl", "scope", "scopeSchemaUrl", "span"}]}
  where resource, scope and span are OTLP/JSON (hex ids, int64 as strings, enums as integers), built here
  from the SDK's span objects, independently of the exporter's own encoder.
* metrics: {"metrics": [{"transport", "service", "name", "type", "monotonic", "points": [...]}]}

Exits non-zero when an exporter reports a failed export. Diagnostics go to stderr.
"""

import argparse
import base64
import json
import random
import sys

import grpc
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

RESOURCE_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
SCOPE_SCHEMA_URL = "https://opentelemetry.io/schemas/1.25.0"
TIMEOUT_S = 10

# OTLP SpanKind values (the Python API numbers its enum from 0 = INTERNAL).
OTLP_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
# SpanFlags: the "has is_remote" bit, and the "is_remote" bit.
FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200

FAILURES = []


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ----- exporters that remember whether each export succeeded ----------------------------------------------


def recording(exporter_class, failure_value, label):
    class Recording(exporter_class):
        def export(self, *args, **kwargs):
            result = super().export(*args, **kwargs)
            if result == failure_value:
                FAILURES.append(label)
                log(f"{label}: export FAILED")
            else:
                log(f"{label}: export ok")
            return result

    return Recording


# ----- OTLP/JSON description, written from the SDK objects ------------------------------------------------


def any_value(value):
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    raise TypeError(f"unexpected attribute value {value!r}")


def key_values(attributes):
    return [{"key": k, "value": any_value(v)} for k, v in (attributes or {}).items()]


def span_flags(parent_context):
    flags = FLAG_HAS_IS_REMOTE
    if parent_context is not None and parent_context.is_remote:
        flags |= FLAG_IS_REMOTE
    return flags


def describe_span(span, transport):
    ctx = span.get_span_context()
    scope = span.instrumentation_scope
    status = span.status
    return {
        "transport": transport,
        "resource": {"attributes": key_values(span.resource.attributes), "droppedAttributesCount": 0},
        "resourceSchemaUrl": span.resource.schema_url or "",
        "scope": {
            "name": scope.name,
            "version": scope.version or "",
            "attributes": key_values(scope.attributes),
            "droppedAttributesCount": 0,
        },
        "scopeSchemaUrl": scope.schema_url or "",
        "span": {
            "traceId": format(ctx.trace_id, "032x"),
            "spanId": format(ctx.span_id, "016x"),
            "traceState": ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()),
            "parentSpanId": format(span.parent.span_id, "016x") if span.parent else "",
            "flags": span_flags(span.parent),
            "name": span.name,
            "kind": OTLP_KIND[span.kind],
            "startTimeUnixNano": str(span.start_time),
            "endTimeUnixNano": str(span.end_time),
            "attributes": key_values(span.attributes),
            "droppedAttributesCount": span.dropped_attributes,
            "events": [
                {
                    "timeUnixNano": str(event.timestamp),
                    "name": event.name,
                    "attributes": key_values(event.attributes),
                    "droppedAttributesCount": event.dropped_attributes,
                }
                for event in span.events
            ],
            "droppedEventsCount": span.dropped_events,
            "links": [
                {
                    "traceId": format(link.context.trace_id, "032x"),
                    "spanId": format(link.context.span_id, "016x"),
                    # The Python OTLP encoder does not send a link's trace state.
                    "traceState": "",
                    "attributes": key_values(link.attributes),
                    "droppedAttributesCount": link.dropped_attributes,
                    "flags": span_flags(link.context),
                }
                for link in span.links
            ],
            "droppedLinksCount": span.dropped_links,
            "status": {"code": status.status_code.value, "message": status.description or ""},
        },
    }


# ----- traces ---------------------------------------------------------------------------------------------


def resource_for(service):
    return Resource.create(
        {
            "service.name": service,
            "service.version": "1.2.3",
            "deployment.environment.name": "e2e",
            "host.cpu.count": 8,
            "host.ready": True,
            "host.load": 0.75,
            "process.command_args": ["python3", "send_traces.py"],
        },
        schema_url=RESOURCE_SCHEMA_URL,
    )


def emit_spans(tracer, transport):
    """Two traces: a local tree of every span kind, and one continuing a remote parent over the limits."""
    with tracer.start_as_current_span(
        f"{transport} GET /checkout",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.route": "/checkout",
            "http.response.status_code": 200,
            "user.premium": True,
            "cart.total": 99.95,
            "cart.skus": ["sku-1", "sku-2"],
            "cart.quantities": [1, 3],
            "cart.flags": [True, False],
            "cart.prices": [9.5, 90.45],
        },
    ) as root:
        root.add_event("request.received", attributes={"bytes": 512, "client": "web"})
        with tracer.start_as_current_span("load cart", kind=SpanKind.INTERNAL) as load:
            load.set_attribute("cart.items", 3)
            with tracer.start_as_current_span(
                "SELECT carts", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
            ):
                pass
        with tracer.start_as_current_span(
            "charge card",
            kind=SpanKind.CLIENT,
            links=[Link(load.get_span_context(), {"link.reason": "uses-cart", "link.weight": 2})],
        ) as charge:
            charge.set_attribute("peer.service", "payments")
            charge.record_exception(ValueError("card declined"))
            charge.set_status(Status(StatusCode.ERROR, "card declined"))
        with tracer.start_as_current_span("publish order", kind=SpanKind.PRODUCER) as publish:
            publish.set_status(Status(StatusCode.OK))

    remote_parent = SpanContext(
        trace_id=random.getrandbits(128) | 1,
        span_id=random.getrandbits(64) | 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("meshscope", "t61rcWkgMzE"), ("vendor", "opaque")]),
    )
    link_targets = [
        SpanContext(trace_id=random.getrandbits(128) | 1, span_id=random.getrandbits(64) | 1, is_remote=True)
        for _ in range(3)
    ]
    with tracer.start_as_current_span(
        f"{transport} consume order",
        context=trace_api.set_span_in_context(NonRecordingSpan(remote_parent)),
        kind=SpanKind.CONSUMER,
        links=[
            Link(ctx, {f"link.attr.{j}": j for j in range(5)}) for ctx in link_targets
        ],
    ) as consume:
        for i in range(15):
            consume.set_attribute(f"extra.{i:02}", i)
        for i in range(5):
            consume.add_event(f"step {i}", attributes={f"event.attr.{j}": f"v{j}" for j in range(6)})
        with tracer.start_as_current_span("store order", kind=SpanKind.CLIENT):
            pass


def send_traces(args):
    described = []
    for transport, exporter in [
        (
            "grpc",
            recording(GrpcSpanExporter, SpanExportResult.FAILURE, "traces/grpc")(
                endpoint=args.grpc_endpoint, insecure=True, timeout=TIMEOUT_S
            ),
        ),
        (
            "http",
            recording(HttpSpanExporter, SpanExportResult.FAILURE, "traces/http")(
                endpoint=f"{args.http_endpoint}/v1/traces",
                timeout=TIMEOUT_S,
                compression=HttpCompression.Gzip,
            ),
        ),
    ]:
        finished = []

        class Capture(BatchSpanProcessor):
            def on_end(self, span):
                finished.append(span)
                super().on_end(span)

        provider = TracerProvider(
            resource=resource_for(f"py-{transport}-shop"),
            span_limits=SpanLimits(
                max_span_attributes=12,
                max_events=3,
                max_links=2,
                max_event_attributes=4,
                max_link_attributes=3,
            ),
        )
        provider.add_span_processor(Capture(exporter, schedule_delay_millis=200))
        tracer = provider.get_tracer(
            "io.meshscope.e2e.python",
            "4.5.6",
            schema_url=SCOPE_SCHEMA_URL,
            attributes={"scope.owner": "e2e", "scope.level": 2},
        )
        emit_spans(tracer, transport)
        if not provider.force_flush(timeout_millis=TIMEOUT_S * 1000):
            FAILURES.append(f"traces/{transport}: force_flush timed out")
        provider.shutdown()
        described.extend(describe_span(span, transport) for span in finished)
    return {"spans": described}


# ----- metrics --------------------------------------------------------------------------------------------


def send_metrics(args):
    described = []
    for transport, exporter in [
        (
            "grpc",
            recording(GrpcMetricExporter, MetricExportResult.FAILURE, "metrics/grpc")(
                endpoint=args.grpc_endpoint,
                insecure=True,
                timeout=TIMEOUT_S,
                compression=grpc.Compression.Gzip,
            ),
        ),
        (
            "http",
            recording(HttpMetricExporter, MetricExportResult.FAILURE, "metrics/http")(
                endpoint=f"{args.http_endpoint}/v1/metrics", timeout=TIMEOUT_S
            ),
        ),
    ]:
        service = f"py-{transport}-metrics"
        prefix = f"py.{transport}"
        # One collection, at shutdown: the interval is far longer than the run.
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(
            resource=resource_for(service),
            metric_readers=[reader],
            views=[
                View(
                    instrument_name=f"{prefix}.latency.exp",
                    aggregation=ExponentialBucketHistogramAggregation(max_size=20),
                )
            ],
        )
        meter = provider.get_meter("io.meshscope.e2e.python.metrics", "4.5.6", schema_url=SCOPE_SCHEMA_URL)

        counter = meter.create_counter(f"{prefix}.requests", unit="1", description="requests served")
        counter.add(5, {"point": "a"})
        counter.add(7, {"point": "a"})
        counter.add(1, {"point": "b"})

        updown = meter.create_up_down_counter(f"{prefix}.queue.depth", unit="{item}")
        updown.add(10, {"point": "q"})
        updown.add(-3, {"point": "q"})

        histogram = meter.create_histogram(f"{prefix}.latency", unit="ms")
        for value in (1, 5, 50):
            histogram.record(value, {"point": "h"})

        exponential = meter.create_histogram(f"{prefix}.latency.exp", unit="ms")
        for value in (2.0, 4.0, 8.0, 16.0):
            exponential.record(value, {"point": "e"})

        def temperature(_options: CallbackOptions):
            return [Observation(21.5, {"point": "g"})]

        meter.create_observable_gauge(f"{prefix}.temperature", callbacks=[temperature], unit="Cel")

        gauge = meter.create_gauge(f"{prefix}.cpu.utilization", unit="1")
        gauge.set(0.75, {"point": "s"})

        def page_faults(_options: CallbackOptions):
            return [Observation(100, {"point": "o"})]

        meter.create_observable_counter(f"{prefix}.page.faults", callbacks=[page_faults])

        provider.shutdown(timeout_millis=TIMEOUT_S * 1000)

        described += [
            metric(transport, service, f"{prefix}.requests", "sum", True,
                   [{"point": "a", "valueInt": 12}, {"point": "b", "valueInt": 1}]),
            metric(transport, service, f"{prefix}.queue.depth", "sum", False,
                   [{"point": "q", "valueInt": 7}]),
            metric(transport, service, f"{prefix}.latency", "histogram", None,
                   [{"point": "h", "count": 3, "sum": 56.0, "min": 1.0, "max": 50.0}]),
            metric(transport, service, f"{prefix}.latency.exp", "exponential_histogram", None,
                   [{"point": "e", "count": 4, "sum": 30.0, "min": 2.0, "max": 16.0}]),
            metric(transport, service, f"{prefix}.temperature", "gauge", None,
                   [{"point": "g", "valueDouble": 21.5}]),
            metric(transport, service, f"{prefix}.cpu.utilization", "gauge", None,
                   [{"point": "s", "valueDouble": 0.75}]),
            metric(transport, service, f"{prefix}.page.faults", "sum", True,
                   [{"point": "o", "valueInt": 100}]),
        ]
    return {"metrics": described}


def metric(transport, service, name, kind, monotonic, points):
    return {
        "transport": transport,
        "service": service,
        "name": name,
        "type": kind,
        "monotonic": monotonic,
        "points": points,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("signal", choices=["traces", "metrics"])
    parser.add_argument("--grpc-endpoint", required=True, help="e.g. http://127.0.0.1:4317")
    parser.add_argument("--http-endpoint", required=True, help="e.g. http://127.0.0.1:4318")
    args = parser.parse_args()

    description = send_traces(args) if args.signal == "traces" else send_metrics(args)
    json.dump(description, sys.stdout, indent=1)
    sys.stdout.write("\n")
    if FAILURES:
        log("failed exports:", FAILURES)
        sys.exit(2)


if __name__ == "__main__":
    main()
