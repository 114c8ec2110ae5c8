//! Bad input gets the OTLP spec's answer and harms nothing.
//!
//! With good data stored first, the collector is sent garbage, truncated protobuf, invalid JSON, a wrong
//! content type, broken gzip, oversized bodies, invalid ids and over-deep `AnyValue`s, over OTLP/HTTP and
//! OTLP/gRPC. Undecodable requests are refused whole (HTTP 400 / gRPC INVALID_ARGUMENT); invalid spans in a
//! decodable request are rejected through `partial_success` while the valid spans of the same request are
//! stored; an export larger than the whole memory budget is refused cleanly. After every case the collector
//! still answers `/api/health` and the earlier data is intact.

mod common;

use std::time::Duration;

use common::*;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::trace::Span;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// A malformed OTLP/HTTP request: what it is, path, content type, body, gzip, expected status.
type HttpCase = (&'static str, &'static str, &'static str, Vec<u8>, bool, u16);

const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Depth of `AnyValue` nesting over the product's limit of 32, but decodable.
const TOO_DEEP: usize = 40;
/// Depth of `AnyValue` nesting beyond the protobuf decoder's recursion limit of 100.
const UNDECODABLE_DEPTH: usize = 150;

/// Exports a known trace and waits until it is stored; returns the span count of the store.
async fn store_baseline(collector: &Collector) -> i64 {
    let (request, trace_id) = simple_trace_request("baseline", 5);
    collector.export_grpc(request).await;
    collector.wait_for_trace(&hex::encode(trace_id), 5).await;
    collector.sql_i64("SELECT count(*) FROM spans").await
}

/// The collector is alive and still holds exactly `expected` spans.
async fn assert_intact(collector: &mut Collector, expected: i64, context: &str) {
    collector.assert_healthy(context).await;
    let count = collector.sql_i64("SELECT count(*) FROM spans").await;
    assert_eq!(count, expected, "span count changed after {context}");
    let baseline = collector
        .sql_i64("SELECT count(*) FROM spans WHERE service_name = 'baseline'")
        .await;
    assert_eq!(baseline, 5, "baseline data damaged after {context}");
}

/// A request with one valid trace of `n` spans, encoded as protobuf.
fn valid_protobuf(n: usize) -> Vec<u8> {
    simple_trace_request("bad-input", n).0.encode_to_vec()
}

/// A request whose single span carries an attribute nested `depth` levels deep.
fn nested_request(depth: usize) -> ExportTraceServiceRequest {
    let (mut request, _) = simple_trace_request("nested", 1);
    request.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(kv("deep", nested_array_value(depth)));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_http_bodies_get_400_or_415_and_harm_nothing() {
    let mut collector = Collector::start("bad-http").await;
    let baseline = store_baseline(&collector).await;

    let valid = valid_protobuf(20);
    let truncated = valid[..valid.len() / 2].to_vec();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let deep_protobuf = nested_request(UNDECODABLE_DEPTH).encode_to_vec();
    let deep_json = serde_json::to_vec(&nested_request(UNDECODABLE_DEPTH)).expect("json");
    let protobuf = "application/x-protobuf";
    let json = "application/json";

    // (what, path, content type, body, gzip, expected status)
    let cases: Vec<HttpCase> = vec![
        (
            "garbage protobuf traces",
            "/v1/traces",
            protobuf,
            garbage.clone(),
            false,
            400,
        ),
        (
            "garbage protobuf metrics",
            "/v1/metrics",
            protobuf,
            garbage.clone(),
            false,
            400,
        ),
        (
            "gzip of garbage protobuf",
            "/v1/traces",
            protobuf,
            garbage.clone(),
            true,
            400,
        ),
        (
            "truncated protobuf traces",
            "/v1/traces",
            protobuf,
            truncated.clone(),
            false,
            400,
        ),
        (
            "truncated protobuf metrics",
            "/v1/metrics",
            protobuf,
            truncated.clone(),
            false,
            400,
        ),
        (
            "invalid JSON",
            "/v1/traces",
            json,
            b"{\"resourceSpans\": [".to_vec(),
            false,
            400,
        ),
        (
            "JSON of the wrong shape",
            "/v1/traces",
            json,
            b"{\"resourceSpans\": \"nope\"}".to_vec(),
            false,
            400,
        ),
        (
            "invalid JSON metrics",
            "/v1/metrics",
            json,
            b"not json at all".to_vec(),
            false,
            400,
        ),
        (
            "AnyValue nested 150 deep (protobuf)",
            "/v1/traces",
            protobuf,
            deep_protobuf,
            false,
            400,
        ),
        (
            "AnyValue nested 150 deep (JSON)",
            "/v1/traces",
            json,
            deep_json,
            false,
            400,
        ),
        (
            "text/plain traces",
            "/v1/traces",
            "text/plain",
            valid.clone(),
            false,
            415,
        ),
        (
            "text/plain metrics",
            "/v1/metrics",
            "text/plain",
            valid.clone(),
            false,
            415,
        ),
        (
            "application/xml traces",
            "/v1/traces",
            "application/xml",
            b"<spans/>".to_vec(),
            false,
            415,
        ),
    ];
    for (what, path, content_type, body, gzip, expected) in cases {
        let response = collector.post_otlp(path, content_type, body, gzip).await;
        assert_eq!(
            response.status,
            expected,
            "{what}: expected HTTP {expected}, got {}: {}",
            response.status,
            response.text()
        );
        assert_intact(&mut collector, baseline, what).await;
    }

    // Content-Encoding: gzip on a body that is not gzip.
    let url = format!("{}/v1/traces", collector.otlp_http_endpoint());
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", protobuf)
        .header("content-encoding", "gzip")
        .body(valid.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(
        response.status().as_u16(),
        400,
        "non-gzip body sent as gzip"
    );
    assert_intact(&mut collector, baseline, "a non-gzip body sent as gzip").await;
}

/// A request of 3 valid spans of one trace plus invalid spans; returns it, the valid trace id, and the
/// number of invalid spans. Invalid spans are named `invalid ...`.
fn mixed_request(include_too_deep: bool) -> (ExportTraceServiceRequest, Vec<u8>, i64) {
    let (mut request, trace_id) = simple_trace_request("mixed", 3);
    let start = now_unix_nanos() - 1_000_000_000;
    let invalid = |name: &str, trace_id: Vec<u8>, span_id: Vec<u8>| -> Span {
        span(
            &trace_id,
            &span_id,
            &[],
            &format!("invalid {name}"),
            start,
            Duration::from_millis(1),
        )
    };
    let mut bad = vec![
        invalid("short trace id", random_bytes(15), random_span_id()),
        invalid("long trace id", random_bytes(17), random_span_id()),
        invalid("zero trace id", vec![0; 16], random_span_id()),
        invalid("short span id", random_trace_id(), random_bytes(7)),
        invalid("empty span id", random_trace_id(), vec![]),
        invalid("zero span id", random_trace_id(), vec![0; 8]),
    ];
    let mut bad_parent = invalid("bad parent id", random_trace_id(), random_span_id());
    bad_parent.parent_span_id = random_bytes(5);
    bad.push(bad_parent);
    let mut bad_link = invalid("bad link id", random_trace_id(), random_span_id());
    bad_link.links.push(meshscope_proto::trace::span::Link {
        trace_id: random_bytes(3),
        span_id: random_span_id(),
        ..Default::default()
    });
    bad.push(bad_link);
    let mut bad_time = invalid("time past 2^63-1 ns", random_trace_id(), random_span_id());
    bad_time.end_time_unix_nano = u64::MAX;
    bad.push(bad_time);
    if include_too_deep {
        let mut deep = invalid("too deep", trace_id.clone(), random_span_id());
        deep.attributes
            .push(kv("deep", nested_array_value(TOO_DEEP)));
        bad.push(deep);
    }
    let rejected = bad.len() as i64;
    // Interleave the invalid spans with the valid ones.
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    for (i, span) in bad.into_iter().enumerate() {
        let at = (i * 2).min(spans.len());
        spans.insert(at, span);
    }
    (request, trace_id, rejected)
}

async fn assert_partially_stored(
    collector: &mut Collector,
    outcome: ExportOutcome,
    expected_rejected: i64,
    trace_id: &[u8],
    total_before: i64,
    what: &str,
) -> i64 {
    assert_eq!(
        outcome.rejected, expected_rejected,
        "{what}: rejected count: {outcome:?}"
    );
    assert!(
        !outcome.error_message.is_empty(),
        "{what}: partial success needs an error message"
    );
    collector.wait_for_trace(&hex::encode(trace_id), 3).await;
    let invalid_stored = collector
        .sql_i64("SELECT count(*) FROM spans WHERE name LIKE 'invalid%'")
        .await;
    assert_eq!(invalid_stored, 0, "{what}: an invalid span was stored");
    let total = total_before + 3;
    assert_intact(collector, total, what).await;
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spans_are_rejected_while_valid_ones_are_stored() {
    let mut collector = Collector::start("bad-partial").await;
    let mut total = store_baseline(&collector).await;

    let (request, trace_id, rejected) = mixed_request(true);
    let response = collector
        .post_otlp(
            "/v1/traces",
            "application/x-protobuf",
            request.encode_to_vec(),
            false,
        )
        .await;
    let outcome = export_outcome(&response, Signal::Traces, false);
    total = assert_partially_stored(
        &mut collector,
        outcome,
        rejected,
        &trace_id,
        total,
        "HTTP protobuf",
    )
    .await;

    let (request, trace_id, rejected) = mixed_request(true);
    let body = serde_json::to_vec(&request).expect("json");
    let response = collector
        .post_otlp("/v1/traces", "application/json", body, false)
        .await;
    let outcome = export_outcome(&response, Signal::Traces, true);
    total = assert_partially_stored(
        &mut collector,
        outcome,
        rejected,
        &trace_id,
        total,
        "HTTP JSON",
    )
    .await;

    let (request, trace_id, rejected) = mixed_request(true);
    let response = collector
        .trace_client()
        .await
        .export(request)
        .await
        .unwrap_or_else(|status| {
            panic!("gRPC export of a partly invalid request failed: {status:?}")
        })
        .into_inner();
    let partial = response.partial_success.unwrap_or_default();
    let outcome = ExportOutcome {
        rejected: partial.rejected_spans,
        error_message: partial.error_message,
    };
    assert_partially_stored(&mut collector, outcome, rejected, &trace_id, total, "gRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_size_limit_get_413() {
    const LIMIT: usize = 256 * 1024;
    let mut collector = Collector::start_with("bad-size", &["--max-request-bytes", "256KiB"]).await;
    let mut total = store_baseline(&collector).await;

    let sized = |bytes: usize| {
        let (mut request, trace_id) = simple_trace_request("sized", 1);
        request.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .push(kv_str("blob", &"x".repeat(bytes)));
        (request, trace_id)
    };

    // Under the limit: accepted.
    let (small, small_trace) = sized(LIMIT / 2);
    let response = collector
        .post_otlp(
            "/v1/traces",
            "application/x-protobuf",
            small.encode_to_vec(),
            false,
        )
        .await;
    assert_eq!(export_outcome(&response, Signal::Traces, false).rejected, 0);
    collector.wait_for_trace(&hex::encode(small_trace), 1).await;
    total += 1;
    assert_intact(&mut collector, total, "a body under the limit").await;

    let (big, _) = sized(LIMIT * 2);
    let response = collector
        .post_otlp(
            "/v1/traces",
            "application/x-protobuf",
            big.encode_to_vec(),
            false,
        )
        .await;
    assert_eq!(
        response.status,
        413,
        "protobuf body over the limit: {}",
        response.text()
    );
    assert_intact(&mut collector, total, "a protobuf body over the limit").await;

    let response = collector
        .post_otlp(
            "/v1/traces",
            "application/json",
            serde_json::to_vec(&big).expect("json"),
            false,
        )
        .await;
    assert_eq!(
        response.status,
        413,
        "JSON body over the limit: {}",
        response.text()
    );
    assert_intact(&mut collector, total, "a JSON body over the limit").await;

    // Small on the wire, over the limit once decompressed: the limit applies after decompression.
    let response = collector
        .post_otlp(
            "/v1/traces",
            "application/x-protobuf",
            big.encode_to_vec(),
            true,
        )
        .await;
    assert_eq!(
        response.status,
        413,
        "gzip body inflating past the limit: {}",
        response.text()
    );
    assert_intact(
        &mut collector,
        total,
        "a gzip body inflating past the limit",
    )
    .await;

    match collector.trace_client().await.export(big.clone()).await {
        Ok(_) => panic!("gRPC message over the limit was accepted"),
        // tonic's own answer for a message over the decoding limit; not retryable under OTLP.
        Err(status) => assert_eq!(
            status.code(),
            tonic::Code::OutOfRange,
            "gRPC message over the limit: {status:?}"
        ),
    }
    assert_intact(&mut collector, total, "a gRPC message over the limit").await;
}

/// Sends raw bytes as the body of a gRPC unary call.
async fn grpc_raw(
    collector: &Collector,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(collector.grpc_channel().await);
    grpc.ready()
        .await
        .unwrap_or_else(|e| panic!("gRPC channel not ready: {e}"));
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(method),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_grpc_messages_get_invalid_argument() {
    let mut collector = Collector::start("bad-grpc").await;
    let baseline = store_baseline(&collector).await;

    let valid = valid_protobuf(20);
    let cases: Vec<(&str, &'static str, Vec<u8>)> = vec![
        (
            "garbage to TraceService",
            TRACE_EXPORT,
            b"\xff\xff\xff\xff garbage \x00\x01".repeat(50),
        ),
        (
            "garbage to MetricsService",
            METRICS_EXPORT,
            b"\xff\xff\xff\xff garbage \x00\x01".repeat(50),
        ),
        (
            "truncated protobuf",
            TRACE_EXPORT,
            valid[..valid.len() / 2].to_vec(),
        ),
        (
            "AnyValue nested 150 deep",
            TRACE_EXPORT,
            nested_request(UNDECODABLE_DEPTH).encode_to_vec(),
        ),
    ];
    for (what, method, body) in cases {
        match grpc_raw(&collector, method, body).await {
            Ok(_) => panic!("{what}: accepted"),
            Err(status) => assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{what}: {status:?}"
            ),
        }
        assert_intact(&mut collector, baseline, what).await;
    }

    // The raw path itself works: valid bytes are accepted.
    grpc_raw(&collector, TRACE_EXPORT, valid)
        .await
        .unwrap_or_else(|status| panic!("valid raw export refused: {status:?}"));
    collector
        .wait_for_i64("SELECT count(*) FROM spans", baseline + 20)
        .await;
}

/// A gRPC codec that sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// A gauge of 3 valid data points plus 2 invalid ones (too deep an attribute, a time past 2^63-1 ns).
fn mixed_metrics_request(
    metric_name: &str,
) -> meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest {
    use meshscope_proto::metrics::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    let now = now_unix_nanos();
    let point = |label: &str| NumberDataPoint {
        attributes: vec![kv_str("point", label)],
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(1.5)),
        ..Default::default()
    };
    let mut too_deep = point("too deep");
    too_deep
        .attributes
        .push(kv("deep", nested_array_value(TOO_DEEP)));
    let mut bad_time = point("bad time");
    bad_time.time_unix_nano = u64::MAX;
    meshscope_proto::collector::metrics::v1::ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(meshscope_proto::resource::Resource {
                attributes: vec![kv_str("service.name", "bad-metrics")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: metric_name.to_string(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![point("a"), too_deep, point("b"), bad_time, point("c")],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_data_points_are_rejected_while_valid_ones_are_stored() {
    let mut collector = Collector::start("bad-metrics").await;
    let baseline = store_baseline(&collector).await;

    let request = mixed_metrics_request("partial.http");
    let response = collector
        .post_otlp(
            "/v1/metrics",
            "application/x-protobuf",
            request.encode_to_vec(),
            false,
        )
        .await;
    let outcome = export_outcome(&response, Signal::Metrics, false);
    assert_eq!(outcome.rejected, 2, "{outcome:?}");
    assert!(!outcome.error_message.is_empty());

    let response = collector
        .metrics_client()
        .await
        .export(mixed_metrics_request("partial.grpc"))
        .await
        .unwrap_or_else(|status| panic!("gRPC metrics export failed: {status:?}"))
        .into_inner();
    let partial = response.partial_success.unwrap_or_default();
    assert_eq!(partial.rejected_data_points, 2, "{partial:?}");
    assert!(!partial.error_message.is_empty());

    for metric in ["partial.http", "partial.grpc"] {
        collector
            .wait_for_i64(
                &format!("SELECT count(*) FROM metric_points WHERE metric_name = '{metric}'"),
                3,
            )
            .await;
        let labels = collector
            .sql(&format!(
                "SELECT attr(attributes, 'point') AS p FROM metric_points \
                 WHERE metric_name = '{metric}' ORDER BY p"
            ))
            .await;
        assert_eq!(
            labels.strings("p"),
            [Some("a".into()), Some("b".into()), Some("c".into())]
        );
    }
    assert_intact(&mut collector, baseline, "partly invalid metrics").await;
}

/// One export that alone needs more than the whole memory budget (though under `--max-request-bytes`).
/// Whether that is "overloaded, retry later" (429/503 + Retry-After) or "too large" (413) is the product's
/// choice; either way it is refused cleanly, nothing is stored, and the collector goes on accepting.
/// (tests/overload.rs covers filling the budget with ordinary exports.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_larger_than_the_memory_budget_is_refused_cleanly() {
    let mut collector = Collector::start_with(
        "bad-memory",
        &["--memory-limit", "1MiB", "--max-request-bytes", "8MiB"],
    )
    .await;
    let baseline = store_baseline(&collector).await;

    let (mut request, _) = simple_trace_request("too-big-for-memory", 1);
    request.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(kv_str("blob", &"m".repeat(3 * 1024 * 1024)));

    let response = collector
        .post_otlp(
            "/v1/traces",
            "application/x-protobuf",
            request.encode_to_vec(),
            false,
        )
        .await;
    assert!(
        [413, 429, 503].contains(&response.status),
        "an export larger than the memory budget: HTTP {}: {}",
        response.status,
        response.text()
    );
    if response.status != 413 {
        let retry_after = response
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("HTTP {} without Retry-After", response.status));
        assert!(
            retry_after.trim().parse::<u64>().is_ok(),
            "Retry-After {retry_after:?} is not a number of seconds"
        );
    }
    assert_intact(
        &mut collector,
        baseline,
        "an HTTP export larger than the memory budget",
    )
    .await;

    match collector.trace_client().await.export(request).await {
        Ok(_) => panic!("gRPC export larger than the memory budget was accepted"),
        Err(status) => assert!(
            matches!(
                status.code(),
                tonic::Code::ResourceExhausted | tonic::Code::Unavailable | tonic::Code::OutOfRange
            ),
            "gRPC export larger than the memory budget: {status:?}"
        ),
    }
    assert_intact(
        &mut collector,
        baseline,
        "a gRPC export larger than the memory budget",
    )
    .await;

    // The budget is free again: ordinary exports go through.
    let (request, trace_id) = simple_trace_request("after-overload", 4);
    collector.export_grpc(request).await;
    collector.wait_for_trace(&hex::encode(trace_id), 4).await;
}
