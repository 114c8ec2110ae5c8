//! The Rust OpenTelemetry SDK as a client: `opentelemetry-otlp`'s tonic exporters send traces (batch span
//! processor) and metrics (periodic reader) to the collector; they read back through the trace API and SQL.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use meshscope_proto::common::{InstrumentationScope as ProtoScope, KeyValue as ProtoKeyValue};
use meshscope_proto::trace::span::SpanKind as ProtoSpanKind;
use meshscope_proto::trace::status::StatusCode as ProtoStatusCode;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value as Json;

fn resource(service: &str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service.to_string())
        .with_attributes([
            KeyValue::new("service.version", "9.9.9"),
            KeyValue::new("host.cpu.count", 4_i64),
            KeyValue::new("host.ready", true),
        ])
        .build()
}

fn scope(name: &'static str) -> InstrumentationScope {
    InstrumentationScope::builder(name)
        .with_version("0.1.0")
        .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
        .with_attributes([KeyValue::new("scope.owner", "e2e")])
        .build()
}

/// Runs a blocking SDK call (flush, shutdown) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking SDK call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_traces_read_back() {
    let collector = Collector::start("rust-sdk-traces").await;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(collector.grpc_endpoint())
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("span exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource("rust-sdk-svc"))
        .build();
    let tracer = provider.tracer_with_scope(scope("io.meshscope.e2e.rust"));

    let mut root = tracer
        .span_builder("GET /orders")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.response.status_code", 200_i64),
            KeyValue::new("order.count", 3_i64),
            KeyValue::new("order.express", true),
            KeyValue::new("order.total", 12.5),
            KeyValue::new(
                "order.tags",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from("b"),
                ])),
            ),
        ])
        .start(&tracer);
    root.add_event("cache.miss", vec![KeyValue::new("cache.key", "orders:42")]);
    let root_context = root.span_context().clone();
    let root_cx = Context::current_with_span(root);

    let mut child = tracer
        .span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("db.system", "postgresql")])
        .with_links(vec![opentelemetry::trace::Link::new(
            root_context.clone(),
            vec![KeyValue::new("link.reason", "self")],
            0,
        )])
        .start_with_context(&tracer, &root_cx);
    child.set_status(Status::error("deadlock detected"));
    let child_id = child.span_context().span_id();
    child.end_with_timestamp(SystemTime::now() + Duration::from_millis(2));
    root_cx.span().end();

    let flushed = blocking(move || {
        let result = provider.force_flush();
        let _ = provider.shutdown();
        result
    })
    .await;
    flushed.unwrap_or_else(|e| panic!("span export failed: {e:?}"));

    let trace_hex = format!("{:032x}", root_context.trace_id());
    let view = collector.wait_for_trace(&trace_hex, 2).await;
    assert_tree_order(&view);
    let root = view.span_named("GET /orders");
    let child = view.span_named("SELECT orders");
    assert_eq!(root.depth, 0);
    assert_eq!(child.depth, 1);
    assert_eq!(root.span.span_id, root_context.span_id().to_bytes());
    assert_eq!(child.span.span_id, child_id.to_bytes());
    assert_eq!(child.span.parent_span_id, root.span.span_id);
    assert_eq!(root.span.kind, ProtoSpanKind::Server as i32);
    assert_eq!(child.span.kind, ProtoSpanKind::Client as i32);
    assert!(root.span.end_time_unix_nano >= root.span.start_time_unix_nano);

    let mut attributes = root.span.attributes.clone();
    sort_attributes(&mut attributes);
    let mut expected: Vec<ProtoKeyValue> = vec![
        kv_str("http.request.method", "GET"),
        kv_int("http.response.status_code", 200),
        kv_int("order.count", 3),
        kv("order.express", bool_value(true)),
        kv("order.total", double_value(12.5)),
        kv(
            "order.tags",
            array_value(vec![string_value("a"), string_value("b")]),
        ),
    ];
    sort_attributes(&mut expected);
    assert_eq!(attributes, expected);
    assert_eq!(root.span.events.len(), 1);
    assert_eq!(root.span.events[0].name, "cache.miss");
    assert_eq!(
        root.span.events[0].attributes,
        [kv_str("cache.key", "orders:42")]
    );

    let status = child.span.status.clone().unwrap_or_default();
    assert_eq!(status.code, ProtoStatusCode::Error as i32);
    assert_eq!(status.message, "deadlock detected");
    assert_eq!(child.span.links.len(), 1);
    assert_eq!(child.span.links[0].span_id, root.span.span_id);
    assert_eq!(child.span.links[0].trace_id, root.span.trace_id);
    assert_eq!(
        child.span.links[0].attributes,
        [kv_str("link.reason", "self")]
    );

    let mut resource = root.resource.clone().expect("resource");
    normalize_resource(&mut resource);
    for attribute in [
        kv_str("service.name", "rust-sdk-svc"),
        kv_str("service.version", "9.9.9"),
        kv_int("host.cpu.count", 4),
        kv("host.ready", bool_value(true)),
    ] {
        assert!(
            resource.attributes.contains(&attribute),
            "resource lacks {attribute:?}: {resource:?}"
        );
    }
    let scope = root.scope.clone().expect("scope");
    assert_eq!(
        scope,
        ProtoScope {
            name: "io.meshscope.e2e.rust".to_string(),
            version: "0.1.0".to_string(),
            attributes: vec![kv_str("scope.owner", "e2e")],
            dropped_attributes_count: 0,
        }
    );
    assert_eq!(
        root.scope_schema_url.as_deref(),
        Some("https://opentelemetry.io/schemas/1.26.0")
    );

    let count = collector
        .sql_i64(&format!(
            "SELECT count(*) FROM spans WHERE trace_id = unhex_id('{trace_hex}') AND service_name = 'rust-sdk-svc'"
        ))
        .await;
    assert_eq!(count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_metrics_are_stored() {
    let collector = Collector::start("rust-sdk-metrics").await;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(collector.grpc_endpoint())
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("metric exporter");
    let provider = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(resource("rust-sdk-metrics"))
        .build();
    let meter = provider.meter_with_scope(scope("io.meshscope.e2e.rust.metrics"));

    let requests = meter.u64_counter("rust.requests").with_unit("1").build();
    requests.add(5, &[KeyValue::new("point", "a")]);
    requests.add(6, &[KeyValue::new("point", "a")]);
    let inflight = meter.i64_up_down_counter("rust.inflight").build();
    inflight.add(4, &[KeyValue::new("point", "u")]);
    inflight.add(-1, &[KeyValue::new("point", "u")]);
    let latency = meter.f64_histogram("rust.latency").with_unit("ms").build();
    for value in [2.0, 4.0, 30.0] {
        latency.record(value, &[KeyValue::new("point", "h")]);
    }
    let utilization = meter.f64_gauge("rust.utilization").build();
    utilization.record(0.25, &[KeyValue::new("point", "g")]);

    let flushed = blocking(move || {
        let result = provider.force_flush();
        let _ = provider.shutdown();
        result
    })
    .await;
    flushed.unwrap_or_else(|e| panic!("metric export failed: {e:?}"));

    let expected: [(&str, &str, &str, &str, f64); 4] = [
        ("rust.requests", "a", "sum", "value_int", 11.0),
        ("rust.inflight", "u", "sum", "value_int", 3.0),
        ("rust.latency", "h", "histogram", "sum", 36.0),
        ("rust.utilization", "g", "gauge", "value_double", 0.25),
    ];
    for (name, point, ty, column, value) in expected {
        let query = format!(
            "SELECT metric_type, {column} AS v, service_name, scope_name FROM metric_points \
             WHERE metric_name = '{name}' AND attr(attributes, 'point') = '{point}' \
             ORDER BY time DESC LIMIT 1"
        );
        let rows = eventually(&format!("metric {name}"), || {
            let query = query.clone();
            let collector = &collector;
            async move {
                let rows = collector.sql(&query).await;
                (!rows.rows.is_empty()).then_some(rows)
            }
        })
        .await;
        let row = &rows.rows[0];
        assert_eq!(
            row.get("metric_type").and_then(Json::as_str),
            Some(ty),
            "{name}: {row:?}"
        );
        assert_eq!(
            row.get("v").and_then(as_f64),
            Some(value),
            "{name}: {row:?}"
        );
        assert_eq!(
            row.get("service_name").and_then(Json::as_str),
            Some("rust-sdk-metrics")
        );
        assert_eq!(
            row.get("scope_name").and_then(Json::as_str),
            Some("io.meshscope.e2e.rust.metrics")
        );
    }
    let histogram = collector
        .sql(
            "SELECT count, min, max FROM metric_points WHERE metric_name = 'rust.latency' \
             ORDER BY time DESC LIMIT 1",
        )
        .await;
    let row = &histogram.rows[0];
    assert_eq!(row.get("count").and_then(as_i64), Some(3));
    assert_eq!(row.get("min").and_then(as_f64), Some(2.0));
    assert_eq!(row.get("max").and_then(as_f64), Some(30.0));
}
