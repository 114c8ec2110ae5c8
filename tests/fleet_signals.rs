//! Fleet signals end to end: CLIENT spans from many callers go in over OTLP/gRPC, a subscriber on the
//! `FleetSignals` gRPC service sees the failing endpoint ejected and its healthy peers at full weight.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use meshscope_proto::signals::fleet_signals_client::FleetSignalsClient;
use meshscope_proto::signals::{SignalsUpdate, SubscribeRequest};
use meshscope_proto::trace::span::SpanKind;
use meshscope_proto::trace::{Span, Status, status::StatusCode};

/// One proxy's CLIENT span of a call to `endpoint` of `upstream`.
fn client_call(upstream: &str, endpoint: &str, http_status: i64, end_unix_nano: u64) -> Span {
    let mut span = span(
        &random_trace_id(),
        &random_span_id(),
        &[],
        "GET",
        end_unix_nano - 3_000_000,
        Duration::from_millis(3),
    );
    span.kind = SpanKind::Client as i32;
    span.attributes = vec![
        kv_str("meshscope.upstream.service", upstream),
        kv_str("meshscope.upstream.endpoint", endpoint),
        kv_int("http.response.status_code", http_status),
    ];
    if http_status >= 500 {
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
    }
    span
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_fleet_wide() {
    let collector = Collector::start("fleet-signals").await;
    let endpoints: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:8080")).collect();
    let bad = &endpoints[7];

    // Twenty callers, each with one call per endpoint: no caller alone has more than one sample of the
    // bad endpoint, together they have twenty.
    let now = now_unix_nanos();
    for caller in 0..20 {
        let spans = endpoints
            .iter()
            .map(|endpoint| {
                let status = if endpoint == bad { 503 } else { 200 };
                client_call("catalog", endpoint, status, now)
            })
            .collect();
        collector
            .export_grpc(traces_request(&format!("caller-{caller}"), spans))
            .await;
    }
    // Another service's spans must not appear in a subscription that did not ask for it.
    collector
        .export_grpc(traces_request(
            "caller-0",
            vec![client_call("orders", "10.0.1.1:8080", 200, now)],
        ))
        .await;

    let mut updates = subscribe(&collector, "catalog").await;
    let update = tokio::time::timeout(Duration::from_secs(10), updates.message())
        .await
        .expect("an update within 10 s")
        .expect("a healthy stream")
        .expect("the stream stays open");

    assert_eq!(update.services.len(), 1, "{update:?}");
    let catalog = &update.services[0];
    assert_eq!(catalog.service, "catalog");
    assert_eq!(catalog.requests, 200);
    assert!((catalog.success_rate - 0.9).abs() < 1e-9, "{catalog:?}");
    assert_eq!(catalog.endpoints.len(), 10);
    let now_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    for endpoint in &catalog.endpoints {
        assert_eq!(endpoint.requests, 20, "{endpoint:?}");
        assert!(endpoint.expires_unix_nano > now_nanos, "{endpoint:?}");
        if &endpoint.address == bad {
            assert_eq!(endpoint.weight, 0.0, "{endpoint:?}");
            assert_eq!(endpoint.success_rate, 0.0);
            assert!(endpoint.ejected_until_unix_nano > now_nanos, "{endpoint:?}");
            assert!(
                endpoint.reason.contains("failure rate 100.0%"),
                "{endpoint:?}"
            );
        } else {
            assert_eq!(endpoint.weight, 1.0, "{endpoint:?}");
            assert_eq!(endpoint.ejected_until_unix_nano, 0, "{endpoint:?}");
            assert!(
                (2.9..3.1).contains(&endpoint.latency_p50_ms),
                "{endpoint:?}"
            );
        }
    }

    // Updates keep coming, at least once a second.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(2), updates.message())
            .await
            .expect("a further update")
            .expect("a healthy stream")
            .expect("the stream stays open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let metrics = reqwest::get(format!("{}/metrics", collector.otlp_http_endpoint()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("meshscope_fleet_spans_observed_total 201"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_empty_service_name_is_refused() {
    let collector = Collector::start("fleet-signals-bad").await;
    let mut client = FleetSignalsClient::connect(collector.grpc_endpoint())
        .await
        .expect("connect to the signals service");
    let status = client
        .subscribe(SubscribeRequest {
            proxy_id: "test".into(),
            services: vec![String::new()],
        })
        .await
        .expect_err("an empty service name must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_new_ejection_is_pushed_before_the_next_tick() {
    // An attempt whose export takes long to be acknowledged (the WAL's fsync stalls while the rest of
    // the suite writes) cannot tell a push from the next tick; such attempts are repeated, and three
    // in a row fail the test rather than pass it unjudged.
    for attempt in 1..=3 {
        match push_after_tick(&format!("fleet-signals-push-{attempt}")).await {
            Some(waited) => {
                assert!(
                    waited < Duration::from_millis(400),
                    "the ejection came {waited:?} after the tick, not before the next one"
                );
                return;
            }
            None => eprintln!("attempt {attempt}: the export's acknowledgement was slow; again"),
        }
    }
    panic!("three attempts in a row were too slow to judge the push");
}

/// Subscribes, waits for a tick, then reports one endpoint failing: the time from the tick to the update
/// that ejects it, or `None` when the export alone took over 150 ms.
async fn push_after_tick(name: &str) -> Option<Duration> {
    let collector = Collector::start(name).await;
    let endpoints: Vec<String> = (0..4).map(|i| format!("10.0.2.{i}:8080")).collect();
    let now = now_unix_nanos();
    let healthy = endpoints
        .iter()
        .flat_map(|endpoint| (0..5).map(move |_| client_call("payments", endpoint, 200, now)))
        .collect();
    collector
        .export_grpc(traces_request("caller", healthy))
        .await;

    let mut updates = subscribe(&collector, "payments").await;
    // The first update comes at once, the second on the first 500 ms tick: right after it, the next
    // tick is half a second away.
    next_update(&mut updates).await;
    next_update(&mut updates).await;
    let ticked = std::time::Instant::now();
    let failing = (0..5)
        .map(|_| client_call("payments", &endpoints[2], 503, now_unix_nanos()))
        .collect();
    collector
        .export_grpc(traces_request("caller", failing))
        .await;
    let acknowledged = ticked.elapsed();
    let update = next_update(&mut updates).await;
    let waited = ticked.elapsed();
    let bad = update.services[0]
        .endpoints
        .iter()
        .find(|endpoint| endpoint.address == endpoints[2])
        .expect("the failing endpoint is reported");
    assert!(bad.ejected_until_unix_nano > 0, "{update:?}");
    (acknowledged < Duration::from_millis(150)).then_some(waited)
}

async fn next_update(updates: &mut tonic::Streaming<SignalsUpdate>) -> SignalsUpdate {
    tokio::time::timeout(Duration::from_secs(5), updates.message())
        .await
        .expect("an update within 5 s")
        .expect("a healthy stream")
        .expect("the stream stays open")
}

/// A subscription to the fleet signals of `service`, as a proxy makes it.
async fn subscribe(collector: &Collector, service: &str) -> tonic::Streaming<SignalsUpdate> {
    FleetSignalsClient::connect(collector.grpc_endpoint())
        .await
        .expect("connect to the signals service")
        .subscribe(SubscribeRequest {
            proxy_id: "test".into(),
            services: vec![service.into()],
        })
        .await
        .expect("subscribe")
        .into_inner()
}
