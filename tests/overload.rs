//! The memory limit pushes back with retryable answers and never loses acknowledged data.
//!
//! A collector with a small memory budget and flushing only on demand is sent exports until it refuses
//! one. The refusal must be retryable (HTTP 429 with Retry-After; gRPC RESOURCE_EXHAUSTED), the collector
//! must flush and accept again shortly after, and every acknowledged span must be stored.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;

/// A 4 MiB budget, a 1 h flush interval and a flush size above the budget: only pressure triggers a flush.
const PRESSURE_ONLY: &[&str] = &[
    "--memory-limit",
    "4MiB",
    "--flush-bytes",
    "64MiB",
    "--flush-interval",
    "1h",
];

#[tokio::test]
async fn overload_is_refused_retryably_and_recovers_without_loss() {
    let collector = Collector::start_with("overload", PRESSURE_ONLY).await;
    let mut acknowledged = 0i64;
    let mut refusal = None;
    for _ in 0..400 {
        let (request, _) = simple_trace_request("pressure", 200);
        let response = collector
            .post_otlp(
                "/v1/traces",
                "application/x-protobuf",
                request.encode_to_vec(),
                false,
            )
            .await;
        match response.status {
            200 => acknowledged += 200,
            _ => {
                refusal = Some(response);
                break;
            }
        }
    }
    let refusal = refusal.expect("a 4 MiB budget must refuse an export within 80,000 spans");
    assert_eq!(
        refusal.status,
        429,
        "overload must be 429: {}",
        refusal.text()
    );
    let retry_after = refusal
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "a 429 must carry Retry-After"
    );

    // The refusal asked for a flush; exports are accepted again soon after.
    let (request, _) = simple_trace_request("pressure", 200);
    let body = request.encode_to_vec();
    let accepted = eventually_within(Duration::from_secs(15), || {
        let body = body.clone();
        let collector = &collector;
        async move {
            let response = collector
                .post_otlp("/v1/traces", "application/x-protobuf", body, false)
                .await;
            (response.status == 200).then_some(())
        }
    })
    .await;
    assert!(
        accepted.is_some(),
        "the collector must accept again after flushing"
    );
    acknowledged += 200;

    collector
        .wait_for_i64(
            "SELECT count(*) FROM spans WHERE service_name = 'pressure'",
            acknowledged,
        )
        .await;
    assert!(collector.is_healthy().await);
}

#[tokio::test]
async fn overload_over_grpc_is_resource_exhausted_with_retry_info() {
    let collector = Collector::start_with("overload-grpc", PRESSURE_ONLY).await;
    let mut client = collector.trace_client().await;
    let mut status = None;
    for _ in 0..400 {
        let (request, _) = simple_trace_request("pressure", 200);
        if let Err(refused) = client.export(request).await {
            status = Some(refused);
            break;
        }
    }
    let status = status.expect("a 4 MiB budget must refuse an export within 80,000 spans");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // google.rpc.Status details travel in grpc-status-details-bin; RetryInfo's type URL names it.
    let details = String::from_utf8_lossy(status.details()).into_owned();
    assert!(
        details.contains("google.rpc.RetryInfo"),
        "RESOURCE_EXHAUSTED must carry RetryInfo: {details:?}"
    );
}
