//! Fidelity: an OTLP span read back through `GET /api/traces` is the span that was sent.
//!
//! One hand-built request holds every `AnyValue` type (string, bool, int, double, bytes, arrays, nested
//! kvlists, empty ones), events and links with attributes, statuses, trace states, flags, dropped counts,
//! resources and scopes with attributes and schema urls, every span kind, and promoted semantic-convention
//! attributes both with their usual type and with another type (which must not be coerced). It is sent over
//! OTLP/gRPC (gzip), OTLP/HTTP JSON and OTLP/HTTP protobuf (gzip), and every span must come back equal,
//! field by field, after sorting attribute lists by key. A hand-built metrics request with every metric type
//! (summary included, which no SDK sends) is checked through SQL.

mod common;

use std::time::Duration;

use common::*;
use meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::common::{InstrumentationScope, KeyValue};
use meshscope_proto::metrics::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, exemplar, exponential_histogram_data_point, metric,
    number_data_point, summary_data_point,
};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::span::{Event, Link, SpanKind};
use meshscope_proto::trace::status::StatusCode;
use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::Value;
use tonic::codec::CompressionEncoding;

/// Attributes of every `AnyValue` type, including empty and extreme values.
fn every_value_type() -> Vec<KeyValue> {
    vec![
        kv_str("string", "héllo \"wörld\"\n\ttab \\ 🌍"),
        kv_str("string.empty", ""),
        kv("bool.true", bool_value(true)),
        kv("bool.false", bool_value(false)),
        kv_int("int.zero", 0),
        kv_int("int.negative", -42),
        kv_int("int.max", i64::MAX),
        kv_int("int.min", i64::MIN),
        kv("double.pi", double_value(std::f64::consts::PI)),
        kv("double.tiny", double_value(-1.5e-300)),
        kv("double.huge", double_value(f64::MAX)),
        kv("double.integral", double_value(2.0)),
        kv("double.zero", double_value(0.0)),
        kv("bytes", bytes_value(&[0, 1, 2, 127, 128, 254, 255])),
        kv("bytes.empty", bytes_value(&[])),
        kv(
            "array.strings",
            array_value(vec![string_value("a"), string_value(""), string_value("c")]),
        ),
        kv(
            "array.mixed",
            array_value(vec![
                string_value("s"),
                int_value(-7),
                double_value(0.25),
                bool_value(true),
                bytes_value(&[9, 8, 7]),
            ]),
        ),
        kv("array.empty", array_value(vec![])),
        kv(
            "array.nested",
            array_value(vec![
                array_value(vec![int_value(1), int_value(2)]),
                array_value(vec![]),
                kvlist_value(vec![kv_str("in.array", "yes")]),
            ]),
        ),
        kv(
            "kvlist",
            kvlist_value(vec![
                kv_str("inner.string", "x"),
                kv_int("inner.int", 7),
                kv(
                    "inner.array",
                    array_value(vec![bool_value(false), double_value(1.5)]),
                ),
                kv(
                    "inner.kvlist",
                    kvlist_value(vec![kv("deepest", bytes_value(b"\x00\xff"))]),
                ),
            ]),
        ),
        kv("kvlist.empty", kvlist_value(vec![])),
        kv_str("ключ.ünïcode", "値 ✓"),
    ]
}

/// Promoted attributes with the type the schema promotes.
fn promoted_attributes() -> Vec<KeyValue> {
    vec![
        kv_str("http.request.method", "POST"),
        kv_int("http.response.status_code", 503),
        kv_str("http.route", "/api/orders/{id}"),
        kv_str("url.path", "/api/orders/42"),
        kv_str("url.full", "https://shop.example/api/orders/42?x=1"),
        kv_str("server.address", "orders.internal"),
        kv_int("server.port", 8443),
        kv_str("client.address", "10.1.2.3"),
        kv_str("network.peer.address", "10.1.2.4"),
        kv_str("peer.service", "orders"),
        kv_str("rpc.system", "grpc"),
        kv_str("rpc.service", "shop.Orders"),
        kv_str("rpc.method", "Create"),
        kv_int("rpc.grpc.status_code", 14),
        kv_str("db.system", "postgresql"),
        kv_str("error.type", "timeout"),
        kv_str("meshscope.upstream.service", "orders"),
        kv_str("meshscope.upstream.endpoint", "10.1.2.4:8443"),
        kv_int("meshscope.retry.attempt", 2),
    ]
}

/// Promoted attribute keys carrying a type other than the promoted one: they must come back unchanged.
fn promoted_keys_with_other_types() -> Vec<KeyValue> {
    vec![
        kv_str("http.response.status_code", "200"),
        kv("server.port", double_value(8080.5)),
        kv_int("http.route", 5),
        kv(
            "http.request.method",
            array_value(vec![string_value("GET"), string_value("HEAD")]),
        ),
        kv("meshscope.retry.attempt", bool_value(true)),
        kv("rpc.grpc.status_code", string_value("UNAVAILABLE")),
    ]
}

fn status(code: StatusCode, message: &str) -> Option<Status> {
    Some(Status {
        code: code as i32,
        message: message.to_string(),
    })
}

fn with_kind(mut span: Span, kind: SpanKind) -> Span {
    span.kind = kind as i32;
    span
}

/// A request exercising every field, over two resources (a distributed trace) and three scopes, plus a
/// second trace whose single span continues a remote parent. Returns the request and both trace ids.
fn kitchen_sink_request() -> (ExportTraceServiceRequest, Vec<u8>, Vec<u8>) {
    let trace = random_trace_id();
    let other_trace = random_trace_id();
    // Odd nanoseconds everywhere, so any precision loss shows.
    let t0 = now_unix_nanos() - 60_000_000_000 + 123_456_789;
    let ms = |n: u64| n * 1_000_000;
    let [
        root,
        payments_call,
        db,
        charge,
        internal,
        publish,
        consume,
        unspecified,
        remote_child,
    ] = std::array::from_fn(|_| random_span_id());

    let mut root_span = span(
        &trace,
        &root,
        &[],
        "GET /checkout",
        t0,
        Duration::from_millis(250),
    );
    root_span.trace_state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".to_string();
    root_span.flags = 0x301;
    root_span.attributes = [every_value_type(), promoted_attributes()].concat();
    root_span.dropped_attributes_count = 3;
    root_span.events = vec![
        Event {
            time_unix_nano: t0 + 1_001,
            name: "request.received".to_string(),
            attributes: every_value_type(),
            dropped_attributes_count: 1,
        },
        Event {
            time_unix_nano: t0 + ms(200) + 7,
            name: "".to_string(),
            attributes: vec![],
            dropped_attributes_count: 0,
        },
    ];
    root_span.dropped_events_count = 4;
    root_span.links = vec![
        Link {
            trace_id: other_trace.clone(),
            span_id: remote_child.clone(),
            trace_state: "vendor=opaque".to_string(),
            attributes: vec![kv_str("link.reason", "follows-from"), kv_int("link.n", 1)],
            dropped_attributes_count: 2,
            flags: 0x301,
        },
        Link {
            trace_id: trace.clone(),
            span_id: db.clone(),
            trace_state: String::new(),
            attributes: vec![],
            dropped_attributes_count: 0,
            flags: 0,
        },
    ];
    root_span.dropped_links_count = 1;
    root_span.status = status(StatusCode::Ok, "");

    let mut payments_call_span = with_kind(
        span(
            &trace,
            &payments_call,
            &root,
            "call payments",
            t0 + ms(10),
            Duration::from_millis(150),
        ),
        SpanKind::Client,
    );
    payments_call_span.attributes = promoted_keys_with_other_types();
    payments_call_span.status = status(StatusCode::Error, "upstream timed out: payments (503)");
    payments_call_span.flags = 0x100;

    let mut db_span = with_kind(
        span(
            &trace,
            &db,
            &root,
            "SELECT orders",
            t0 + ms(170),
            Duration::from_micros(1_234),
        ),
        SpanKind::Client,
    );
    db_span.attributes = vec![
        kv_str("db.system", "postgresql"),
        kv_str("db.statement", "SELECT 1"),
    ];
    // No status at all: equivalent to an unset status.
    db_span.status = None;

    let mut charge_span = span(
        &trace,
        &charge,
        &payments_call,
        "POST /charge",
        t0 + ms(12),
        Duration::from_millis(140),
    );
    charge_span.attributes = vec![
        kv_str("http.request.method", "POST"),
        kv_int("http.response.status_code", 402),
    ];
    charge_span.events = vec![Event {
        time_unix_nano: t0 + ms(100),
        name: "exception".to_string(),
        attributes: vec![
            kv_str("exception.type", "CardDeclined"),
            kv_str("exception.message", "card declined"),
            kv_str("exception.stacktrace", "at charge()\nat main()"),
        ],
        dropped_attributes_count: 0,
    }];
    charge_span.status = status(StatusCode::Error, "card declined");
    charge_span.flags = 1;

    // Zero duration.
    let internal_span = with_kind(
        span(
            &trace,
            &internal,
            &charge,
            "validate card",
            t0 + ms(13),
            Duration::ZERO,
        ),
        SpanKind::Internal,
    );
    let publish_span = with_kind(
        span(
            &trace,
            &publish,
            &charge,
            "publish receipt",
            t0 + ms(20),
            Duration::from_millis(3),
        ),
        SpanKind::Producer,
    );
    let consume_span = with_kind(
        span(
            &trace,
            &consume,
            &publish,
            "consume receipt",
            t0 + ms(30),
            Duration::from_millis(4),
        ),
        SpanKind::Consumer,
    );
    let unspecified_span = with_kind(
        span(
            &trace,
            &unspecified,
            &root,
            "unspecified kind",
            t0 + ms(240),
            Duration::from_millis(1),
        ),
        SpanKind::Unspecified,
    );

    // The second trace: a span whose parent lives in a process that never reported.
    let mut remote_child_span = with_kind(
        span(
            &other_trace,
            &remote_child,
            &random_span_id(),
            "continue remote",
            t0 + ms(5),
            Duration::from_millis(9),
        ),
        SpanKind::Consumer,
    );
    remote_child_span.trace_state = "vendor=opaque".to_string();
    remote_child_span.flags = 0x301;

    let frontend = Resource {
        attributes: [
            vec![
                kv_str("service.name", "frontend"),
                kv_str("service.version", "1.2.3"),
            ],
            every_value_type(),
        ]
        .concat(),
        dropped_attributes_count: 2,
        ..Default::default()
    };
    let payments = Resource {
        attributes: vec![
            kv_str("service.name", "payments"),
            kv_int("host.cpu.count", 8),
        ],
        ..Default::default()
    };
    let http_scope = InstrumentationScope {
        name: "io.meshscope.e2e.http".to_string(),
        version: "2.1.0".to_string(),
        attributes: vec![
            kv_str("scope.kind", "http"),
            kv("scope.list", array_value(vec![int_value(1), int_value(2)])),
        ],
        dropped_attributes_count: 1,
    };
    let db_scope = InstrumentationScope {
        name: "io.meshscope.e2e.db".to_string(),
        ..Default::default()
    };
    let payments_scope = InstrumentationScope {
        name: "io.meshscope.e2e.payments".to_string(),
        version: "0.0.1-alpha".to_string(),
        ..Default::default()
    };

    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(frontend),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(http_scope),
                        spans: vec![root_span, payments_call_span, unspecified_span],
                        schema_url: "https://opentelemetry.io/schemas/1.25.0".to_string(),
                    },
                    ScopeSpans {
                        scope: Some(db_scope),
                        spans: vec![db_span],
                        schema_url: String::new(),
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
            },
            ResourceSpans {
                resource: Some(payments),
                scope_spans: vec![ScopeSpans {
                    scope: Some(payments_scope),
                    spans: vec![
                        charge_span,
                        consume_span,
                        internal_span,
                        publish_span,
                        remote_child_span,
                    ],
                    schema_url: "https://example.com/payments-schema".to_string(),
                }],
                schema_url: String::new(),
            },
        ],
    };
    (request, trace, other_trace)
}

/// Reads both traces of a [`kitchen_sink_request`] back and compares every span with what was sent.
async fn assert_round_trip(
    collector: &Collector,
    request: &ExportTraceServiceRequest,
    trace: &[u8],
    other_trace: &[u8],
) {
    let sent = flatten_request(request);
    for trace_id in [trace, other_trace] {
        let expected: Vec<SpanRecord> = sent
            .iter()
            .filter(|r| r.span.trace_id == trace_id)
            .cloned()
            .collect();
        let view = collector
            .wait_for_trace(&hex::encode(trace_id), expected.len())
            .await;
        assert_eq!(view.trace_id, hex::encode(trace_id));
        assert_trace_matches(&view, &expected);
    }
    // Spot-check the tree shape beyond the generic order check.
    let view = collector.trace(&hex::encode(trace)).await.expect("trace");
    assert_eq!(view.spans[0].span.name, "GET /checkout");
    assert_eq!(view.span_named("GET /checkout").depth, 0);
    assert_eq!(view.span_named("call payments").depth, 1);
    assert_eq!(view.span_named("POST /charge").depth, 2);
    assert_eq!(view.span_named("publish receipt").depth, 3);
    assert_eq!(view.span_named("consume receipt").depth, 4);
    let names: Vec<&str> = view.spans.iter().map(|s| s.span.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "GET /checkout",
            "call payments",
            "POST /charge",
            "validate card",
            "publish receipt",
            "consume receipt",
            "SELECT orders",
            "unspecified kind",
        ],
        "tree order: parents before children, siblings by start time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_round_trips_over_grpc_gzip() {
    let collector = Collector::start("fidelity-grpc").await;
    let (request, trace, other_trace) = kitchen_sink_request();
    let response = collector
        .trace_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip)
        .export(request.clone())
        .await
        .unwrap_or_else(|status| panic!("gzip gRPC export failed: {status:?}"))
        .into_inner();
    assert_eq!(
        response.partial_success.map_or(0, |p| p.rejected_spans),
        0,
        "nothing of a valid request may be rejected"
    );
    assert_round_trip(&collector, &request, &trace, &other_trace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_round_trips_over_http_json() {
    let collector = Collector::start("fidelity-json").await;
    let (request, trace, other_trace) = kitchen_sink_request();
    let body = serde_json::to_vec(&request).expect("serialize request");
    let response = collector
        .post_otlp("/v1/traces", "application/json", body, false)
        .await;
    let outcome = export_outcome(&response, Signal::Traces, true);
    assert_eq!(outcome.rejected, 0, "{outcome:?}");
    assert_round_trip(&collector, &request, &trace, &other_trace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_round_trips_over_http_protobuf_gzip() {
    let collector = Collector::start("fidelity-protobuf").await;
    let (request, trace, other_trace) = kitchen_sink_request();
    let response = collector
        .post_otlp(
            "/v1/traces",
            "application/x-protobuf",
            request.encode_to_vec(),
            true,
        )
        .await;
    let outcome = export_outcome(&response, Signal::Traces, false);
    assert_eq!(outcome.rejected, 0, "{outcome:?}");
    assert_round_trip(&collector, &request, &trace, &other_trace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_rows_hold_promoted_columns_and_typed_attributes() {
    let collector = Collector::start("fidelity-sql").await;
    let (request, trace, _) = kitchen_sink_request();
    collector.export_grpc(request).await;
    let trace_hex = hex::encode(&trace);
    collector
        .wait_for_i64(
            &format!("SELECT count(*) FROM spans WHERE trace_id = unhex_id('{trace_hex}')"),
            8,
        )
        .await;

    let root = collector
        .sql(&format!(
            "SELECT service_name, resource_schema_url, scope_name, scope_version, scope_schema_url, \
                    hex_id(trace_id) AS tid, trace_state, flags, kind, status_code, duration_ns, \
                    http_request_method, http_response_status_code, http_route, server_port, \
                    mesh_upstream_service, mesh_retry_attempt, dropped_attributes_count, \
                    dropped_events_count, dropped_links_count, \
                    attr(attributes, 'string') AS a_string, attr(attributes, 'int.min') AS a_int, \
                    attr(attributes, 'bool.true') AS a_bool, attr(attributes, 'no.such.key') AS a_missing \
             FROM spans WHERE trace_id = unhex_id('{trace_hex}') AND name = 'GET /checkout'"
        ))
        .await;
    assert_eq!(root.rows.len(), 1, "{root:?}");
    let row = &root.rows[0];
    let text = |column: &str| row.get(column).and_then(Value::as_str).map(str::to_string);
    let int = |column: &str| row.get(column).and_then(as_i64);
    assert_eq!(text("service_name").as_deref(), Some("frontend"));
    assert_eq!(
        text("resource_schema_url").as_deref(),
        Some("https://opentelemetry.io/schemas/1.26.0")
    );
    assert_eq!(text("scope_name").as_deref(), Some("io.meshscope.e2e.http"));
    assert_eq!(text("scope_version").as_deref(), Some("2.1.0"));
    assert_eq!(
        text("scope_schema_url").as_deref(),
        Some("https://opentelemetry.io/schemas/1.25.0")
    );
    assert_eq!(text("tid"), Some(trace_hex.clone()));
    assert_eq!(
        text("trace_state").as_deref(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    assert_eq!(int("flags"), Some(0x301));
    assert!(
        text("kind")
            .unwrap_or_default()
            .to_lowercase()
            .contains("server"),
        "kind: {row:?}"
    );
    assert!(
        text("status_code")
            .unwrap_or_default()
            .to_lowercase()
            .contains("ok"),
        "status_code: {row:?}"
    );
    assert_eq!(int("duration_ns"), Some(250_000_000));
    assert_eq!(text("http_request_method").as_deref(), Some("POST"));
    assert_eq!(int("http_response_status_code"), Some(503));
    assert_eq!(text("http_route").as_deref(), Some("/api/orders/{id}"));
    assert_eq!(int("server_port"), Some(8443));
    assert_eq!(text("mesh_upstream_service").as_deref(), Some("orders"));
    assert_eq!(int("mesh_retry_attempt"), Some(2));
    assert_eq!(int("dropped_attributes_count"), Some(3));
    assert_eq!(int("dropped_events_count"), Some(4));
    assert_eq!(int("dropped_links_count"), Some(1));
    assert_eq!(
        text("a_string").as_deref(),
        Some("héllo \"wörld\"\n\ttab \\ 🌍")
    );
    assert_eq!(text("a_int"), Some(i64::MIN.to_string()));
    assert_eq!(text("a_bool").as_deref(), Some("true"));
    assert!(
        is_null(row, "a_missing"),
        "attr() of an absent key: {row:?}"
    );

    // Promoted keys with another type are not coerced into the typed columns.
    let other = collector
        .sql(&format!(
            "SELECT http_response_status_code, server_port, http_route, \
                    attr(attributes, 'http.response.status_code') AS code_text \
             FROM spans WHERE trace_id = unhex_id('{trace_hex}') AND name = 'call payments'"
        ))
        .await;
    assert_eq!(other.rows.len(), 1, "{other:?}");
    let row = &other.rows[0];
    assert!(is_null(row, "http_response_status_code"), "{row:?}");
    assert!(is_null(row, "server_port"), "{row:?}");
    assert!(is_null(row, "http_route"), "{row:?}");
    assert_eq!(row.get("code_text").and_then(Value::as_str), Some("200"));
}

/// One data point attribute that names the point, for lookups by `attr(attributes, 'point')`.
fn point(name: &str) -> Vec<KeyValue> {
    vec![kv_str("point", name)]
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.to_string(),
        description: format!("{name} description"),
        unit: unit.to_string(),
        metadata: vec![kv_str("meta.key", "meta-value")],
        data: Some(data),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_every_type_round_trip_over_http_json() {
    let collector = Collector::start("fidelity-metrics").await;
    let now = now_unix_nanos();
    let start = now - 10_000_000_000;
    let cumulative = AggregationTemporality::Cumulative as i32;
    let delta = AggregationTemporality::Delta as i32;
    let number = |name: &str, value: number_data_point::Value| NumberDataPoint {
        attributes: point(name),
        start_time_unix_nano: start,
        time_unix_nano: now,
        exemplars: vec![],
        flags: 0,
        value: Some(value),
    };
    let mut counter_point = number("counter", number_data_point::Value::AsInt(42));
    counter_point.exemplars = vec![Exemplar {
        filtered_attributes: vec![kv_str("user", "u1")],
        time_unix_nano: now - 5,
        span_id: random_span_id(),
        trace_id: random_trace_id(),
        value: Some(exemplar::Value::AsInt(3)),
    }];
    let metrics = vec![
        metric(
            "e2e.requests",
            "1",
            metric::Data::Sum(Sum {
                data_points: vec![counter_point],
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        metric(
            "e2e.queue.depth",
            "{item}",
            metric::Data::Sum(Sum {
                data_points: vec![number("updown", number_data_point::Value::AsDouble(-2.5))],
                aggregation_temporality: delta,
                is_monotonic: false,
            }),
        ),
        metric(
            "e2e.temperature",
            "Cel",
            metric::Data::Gauge(Gauge {
                data_points: vec![number("gauge", number_data_point::Value::AsDouble(21.5))],
            }),
        ),
        metric(
            "e2e.latency",
            "ms",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: point("histogram"),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: 6,
                    sum: Some(321.5),
                    bucket_counts: vec![1, 2, 3, 0],
                    explicit_bounds: vec![10.0, 100.0, 1000.0],
                    exemplars: vec![],
                    flags: 0,
                    min: Some(0.5),
                    max: Some(150.0),
                }],
                aggregation_temporality: cumulative,
            }),
        ),
        metric(
            "e2e.latency.exp",
            "ms",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: point("exponential"),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: 10,
                    sum: Some(99.0),
                    scale: 3,
                    zero_count: 1,
                    positive: Some(exponential_histogram_data_point::Buckets {
                        offset: -2,
                        bucket_counts: vec![1, 0, 4, 2],
                    }),
                    negative: Some(exponential_histogram_data_point::Buckets {
                        offset: 1,
                        bucket_counts: vec![2],
                    }),
                    flags: 0,
                    exemplars: vec![],
                    min: Some(-3.0),
                    max: Some(40.0),
                    zero_threshold: 0.001,
                }],
                aggregation_temporality: delta,
            }),
        ),
        metric(
            "e2e.rpc.duration",
            "s",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: point("summary"),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: 100,
                    sum: 12.5,
                    quantile_values: vec![
                        summary_data_point::ValueAtQuantile {
                            quantile: 0.5,
                            value: 0.1,
                        },
                        summary_data_point::ValueAtQuantile {
                            quantile: 0.99,
                            value: 0.9,
                        },
                    ],
                    flags: 0,
                }],
            }),
        ),
    ];
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "metrics-json")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "io.meshscope.e2e.metrics".to_string(),
                    version: "3.0.0".to_string(),
                    ..Default::default()
                }),
                metrics,
                schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
            }],
            schema_url: String::new(),
        }],
    };
    let body = serde_json::to_vec(&request).expect("serialize metrics");
    let response = collector
        .post_otlp("/v1/metrics", "application/json", body, false)
        .await;
    let outcome = export_outcome(&response, Signal::Metrics, true);
    assert_eq!(outcome.rejected, 0, "{outcome:?}");

    collector
        .wait_for_i64(
            "SELECT count(*) FROM metric_points WHERE service_name = 'metrics-json'",
            6,
        )
        .await;
    let result = collector
        .sql(
            "SELECT attr(attributes, 'point') AS point, metric_name, metric_type, metric_unit, \
                    metric_description, scope_name, scope_version, scope_schema_url, \
                    aggregation_temporality, is_monotonic, value_int, value_double, count, sum, min, max, \
                    bucket_counts, explicit_bounds, exp_scale, exp_zero_count, exp_zero_threshold, \
                    exp_positive_offset, exp_positive_bucket_counts, exp_negative_offset, \
                    exp_negative_bucket_counts, quantiles, quantile_values, exemplars \
             FROM metric_points WHERE service_name = 'metrics-json'",
        )
        .await;
    let row = |name: &str| {
        result
            .rows
            .iter()
            .find(|r| r.get("point").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no metric point {name:?} in {result:?}"))
    };
    let text = |name: &str, column: &str| {
        row(name)
            .get(column)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let float = |name: &str, column: &str| row(name).get(column).and_then(as_f64);
    let int = |name: &str, column: &str| row(name).get(column).and_then(as_i64);
    let floats = |name: &str, column: &str| -> Vec<f64> {
        let Some(Value::Array(items)) = row(name).get(column) else {
            panic!("{column} of {name} is not a list: {:?}", row(name))
        };
        items.iter().map(|v| as_f64(v).expect("number")).collect()
    };

    for (point, ty) in [
        ("counter", "sum"),
        ("updown", "sum"),
        ("gauge", "gauge"),
        ("histogram", "histogram"),
        ("exponential", "exponential_histogram"),
        ("summary", "summary"),
    ] {
        assert_eq!(text(point, "metric_type"), ty, "{:?}", row(point));
        assert_eq!(text(point, "scope_name"), "io.meshscope.e2e.metrics");
        assert_eq!(text(point, "scope_version"), "3.0.0");
        assert_eq!(
            text(point, "scope_schema_url"),
            "https://opentelemetry.io/schemas/1.26.0"
        );
    }
    assert_eq!(text("counter", "metric_name"), "e2e.requests");
    assert_eq!(text("counter", "metric_unit"), "1");
    assert_eq!(
        text("counter", "metric_description"),
        "e2e.requests description"
    );
    assert!(
        text("counter", "aggregation_temporality")
            .to_lowercase()
            .contains("cumulative")
    );
    assert_eq!(row("counter").get("is_monotonic"), Some(&Value::Bool(true)));
    assert_eq!(int("counter", "value_int"), Some(42));
    assert!(
        text("counter", "exemplars").contains("u1"),
        "exemplar kept: {:?}",
        row("counter")
    );
    assert!(
        text("updown", "aggregation_temporality")
            .to_lowercase()
            .contains("delta")
    );
    assert_eq!(row("updown").get("is_monotonic"), Some(&Value::Bool(false)));
    assert_eq!(float("updown", "value_double"), Some(-2.5));
    assert_eq!(float("gauge", "value_double"), Some(21.5));
    assert_eq!(int("histogram", "count"), Some(6));
    assert_eq!(float("histogram", "sum"), Some(321.5));
    assert_eq!(float("histogram", "min"), Some(0.5));
    assert_eq!(float("histogram", "max"), Some(150.0));
    assert_eq!(floats("histogram", "bucket_counts"), [1.0, 2.0, 3.0, 0.0]);
    assert_eq!(
        floats("histogram", "explicit_bounds"),
        [10.0, 100.0, 1000.0]
    );
    assert_eq!(int("exponential", "count"), Some(10));
    assert_eq!(float("exponential", "sum"), Some(99.0));
    assert_eq!(int("exponential", "exp_scale"), Some(3));
    assert_eq!(int("exponential", "exp_zero_count"), Some(1));
    assert_eq!(float("exponential", "exp_zero_threshold"), Some(0.001));
    assert_eq!(int("exponential", "exp_positive_offset"), Some(-2));
    assert_eq!(
        floats("exponential", "exp_positive_bucket_counts"),
        [1.0, 0.0, 4.0, 2.0]
    );
    assert_eq!(int("exponential", "exp_negative_offset"), Some(1));
    assert_eq!(floats("exponential", "exp_negative_bucket_counts"), [2.0]);
    assert_eq!(float("exponential", "min"), Some(-3.0));
    assert_eq!(float("exponential", "max"), Some(40.0));
    assert_eq!(int("summary", "count"), Some(100));
    assert_eq!(float("summary", "sum"), Some(12.5));
    assert_eq!(floats("summary", "quantiles"), [0.5, 0.99]);
    assert_eq!(floats("summary", "quantile_values"), [0.1, 0.9]);
}
