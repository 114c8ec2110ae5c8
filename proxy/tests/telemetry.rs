//! Spans: a SERVER span per inbound request, a CLIENT span per outbound attempt, W3C trace context
//! carried across two proxies, OTLP export to a real gRPC collector, and no effect on traffic when
//! the collector is away.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, client, closed_port, get, named, proxy, reply, send, serve};
use http::StatusCode;
use meshscope_proto::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use meshscope_proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use meshscope_proto::common::any_value::Value;
use meshscope_proto::trace::Span;
use meshscope_proto::trace::span::SpanKind;
use tokio_stream::wrappers::TcpListenerStream;

/// Spans received, with the `service.name` of their resource.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/gRPC trace receiver that keeps everything it is sent.
#[derive(Clone, Default)]
struct Collector {
    received: Received,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = match self.received.lock() {
            Ok(received) => received,
            Err(poisoned) => poisoned.into_inner(),
        };
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    Value::StringValue(name) => name.clone(),
                    _ => String::new(),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn collector() -> (SocketAddr, Received) {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("cannot bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("no address: {e}"),
    };
    let collector = Collector::default();
    let received = Arc::clone(&collector.received);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, received)
}

/// Waits (at most five seconds) until `count` spans have arrived, and returns them.
async fn spans(received: &Received, count: usize) -> Vec<(String, Span)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = match received.lock() {
            Ok(received) => received.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if now.len() >= count {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} spans arrived: {now:?}",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(text) => text.clone(),
        Value::IntValue(number) => number.to_string(),
        other => format!("{other:?}"),
    })
}

fn telemetry(collector: SocketAddr) -> String {
    format!("[telemetry]\notlp_endpoint = \"http://{collector}\"\nflush_interval = \"50ms\"\n")
}

/// The caller's outbound proxy, sending everything to `target` with `retry` settings.
async fn caller(collector: SocketAddr, target: &[SocketAddr], retry: &str) -> common::RunningProxy {
    let endpoints: Vec<String> = target
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    proxy(&format!(
        "[service]\nname = \"caller\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\n\n[[outbound.route]]\nname = \"to-callee\"\nupstream = \"callee\"\n{retry}\n\n\
         [[upstream]]\nname = \"callee\"\nbalancer = \"round_robin\"\nendpoints = [{}]\n\n{}",
        endpoints.join(", "),
        telemetry(collector)
    ))
    .await
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn spans_link_across_two_proxies() {
    bounded(async {
        let (collector_addr, received) = collector().await;
        let app = named("app").await;
        let callee = proxy(&format!(
            "[service]\nname = \"callee\"\n\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\n\n{}",
            app.addr,
            telemetry(collector_addr)
        ))
        .await;
        let caller = caller(collector_addr, &[callee.inbound()], "").await;

        let response = match client()
            .get(format!("http://{}/orders/7", caller.outbound()))
            .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
            .header("tracestate", "vendor=1")
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        assert_eq!(response.status(), StatusCode::OK);
        let seen_by_app = response.headers().get("x-echo-traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);

        let all = spans(&received, 2).await;
        let find = |kind: SpanKind| match all.iter().find(|(_, s)| s.kind == kind as i32) {
            Some(found) => found.clone(),
            None => panic!("no {kind:?} span in {all:?}"),
        };
        let (client_service, client_span) = find(SpanKind::Client);
        let (server_service, server_span) = find(SpanKind::Server);

        assert_eq!((client_service.as_str(), server_service.as_str()), ("caller", "callee"));
        assert_eq!(hex::encode(&client_span.trace_id), TRACE);
        assert_eq!(hex::encode(&client_span.parent_span_id), PARENT, "the CLIENT span is the caller's child");
        assert_eq!(server_span.trace_id, client_span.trace_id);
        assert_eq!(server_span.parent_span_id, client_span.span_id, "the SERVER span is the CLIENT span's child");
        assert_eq!(client_span.trace_state, "vendor=1");
        let expected = format!("00-{TRACE}-{}-01", hex::encode(&server_span.span_id));
        assert_eq!(seen_by_app.as_deref(), Some(expected.as_str()), "the app's parent is the SERVER span");

        assert_eq!(client_span.name, "GET");
        assert_eq!(attribute(&client_span, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(attribute(&client_span, "meshscope.upstream.service").as_deref(), Some("callee"));
        assert_eq!(attribute(&client_span, "meshscope.upstream.endpoint"), Some(callee.inbound().to_string()));
        assert_eq!(attribute(&client_span, "meshscope.balancer").as_deref(), Some("round_robin"));
        assert_eq!(attribute(&server_span, "url.path").as_deref(), Some("/orders/7"));
        assert_eq!(attribute(&server_span, "client.address").as_deref(), Some("127.0.0.1"));
        assert!(server_span.end_time_unix_nano >= server_span.start_time_unix_nano);
        assert!(client_span.status.is_none() && server_span.status.is_none(), "no errors");
    })
    .await;
}

#[tokio::test]
async fn each_attempt_is_a_client_span_under_the_same_parent() {
    bounded(async {
        let (collector_addr, received) = collector().await;
        let flaky = serve(Arc::new(|_, hit| {
            Box::pin(async move {
                if hit == 0 {
                    reply(StatusCode::SERVICE_UNAVAILABLE, "first fails")
                } else {
                    reply(StatusCode::OK, "ok")
                }
            })
        }))
        .await;
        let retry = "[outbound.route.retry]\nattempts = 2\nbackoff_base = \"5ms\"";
        let caller = caller(collector_addr, &[flaky.addr], retry).await;
        let request = client()
            .get(format!("http://{}/", caller.outbound()))
            .header("traceparent", format!("00-{TRACE}-{PARENT}-01"));
        assert_eq!(send(request).await.0, StatusCode::OK);

        let mut attempts = spans(&received, 2).await;
        attempts.sort_by_key(|(_, span)| span.start_time_unix_nano);
        let (first, second) = (&attempts[0].1, &attempts[1].1);
        for span in [first, second] {
            assert_eq!(span.kind, SpanKind::Client as i32);
            assert_eq!(hex::encode(&span.parent_span_id), PARENT);
        }
        assert_ne!(first.span_id, second.span_id);
        assert_eq!(
            attribute(first, "http.response.status_code").as_deref(),
            Some("503")
        );
        assert_eq!(attribute(first, "error.type").as_deref(), Some("503"));
        assert!(first.status.is_some(), "a failed attempt is an error span");
        assert_eq!(
            attribute(second, "http.request.resend_count").as_deref(),
            Some("1")
        );
        assert_eq!(
            attribute(second, "http.response.status_code").as_deref(),
            Some("200")
        );
    })
    .await;
}

#[tokio::test]
async fn unsampled_traces_pass_untouched_and_new_traces_start_at_the_proxy() {
    bounded(async {
        let (collector_addr, received) = collector().await;
        let app = named("app").await;
        let caller = caller(collector_addr, &[app.addr], "").await;
        let url = format!("http://{}/", caller.outbound());

        let unsampled = format!("00-{TRACE}-{PARENT}-00");
        let response = match client()
            .get(&url)
            .header("traceparent", &unsampled)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        let echoed = response
            .headers()
            .get("x-echo-traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            echoed.as_deref(),
            Some(unsampled.as_str()),
            "an unsampled context is passed on as it is"
        );

        assert_eq!(get(&client(), &url).await.0, StatusCode::OK);
        let all = spans(&received, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(all.len(), 1, "the unsampled request made no span");
        let span = &all[0].1;
        assert!(
            span.parent_span_id.is_empty(),
            "no caller context: the CLIENT span is a root"
        );
        assert_ne!(hex::encode(&span.trace_id), TRACE);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_collector_does_not_affect_traffic() {
    bounded(async {
        let app = named("app").await;
        let caller = caller(closed_port().await, &[app.addr], "").await;
        let http = client();
        for _ in 0..50 {
            assert_eq!(
                get(&http, &format!("http://{}/", caller.outbound()))
                    .await
                    .0,
                StatusCode::OK
            );
        }
        caller.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sample_ratio_applies_to_new_traces_only() {
    bounded(async {
        let (collector_addr, received) = collector().await;
        let app = named("app").await;
        let caller = proxy(&format!(
            "[service]\nname = \"caller\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\nroute = [{{ name = \"all\", upstream = \"app\" }}]\n\n\
             [[upstream]]\nname = \"app\"\nendpoints = [{{ address = \"{}\" }}]\n\n{}sample_ratio = 0.0\n",
            app.addr,
            telemetry(collector_addr)
        ))
        .await;
        let url = format!("http://{}/", caller.outbound());
        let response = match client().get(&url).send().await {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        let seen = response.headers().get("x-echo-traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert!(seen.as_deref().is_some_and(|tp| tp.ends_with("-00")), "a new unsampled trace is marked so: {seen:?}");

        let sampled = client().get(&url).header("traceparent", format!("00-{TRACE}-{PARENT}-01"));
        assert_eq!(send(sampled).await.0, StatusCode::OK);
        let all = spans(&received, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(all.len(), 1, "only the caller-sampled request made a span");
        assert_eq!(hex::encode(&all[0].1.trace_id), TRACE);
    })
    .await;
}

#[tokio::test]
async fn b3_headers_are_accepted_as_the_callers_context() {
    bounded(async {
        let (collector_addr, received) = collector().await;
        let app = named("app").await;
        let callee = proxy(&format!(
            "[service]\nname = \"callee\"\n\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\n\n{}",
            app.addr,
            telemetry(collector_addr)
        ))
        .await;
        let url = format!("http://{}/", callee.inbound());
        let single = client().get(&url).header("b3", format!("{TRACE}-{PARENT}-1"));
        assert_eq!(send(single).await.0, StatusCode::OK);
        let multi = client()
            .get(&url)
            .header("x-b3-traceid", "a3ce929d0e0e4736")
            .header("x-b3-spanid", PARENT)
            .header("x-b3-sampled", "1");
        assert_eq!(send(multi).await.0, StatusCode::OK);
        let all = spans(&received, 2).await;
        let ids: Vec<(String, String)> = all
            .iter()
            .map(|(_, s)| (hex::encode(&s.trace_id), hex::encode(&s.parent_span_id)))
            .collect();
        assert!(ids.contains(&(TRACE.to_owned(), PARENT.to_owned())), "single b3 header: {ids:?}");
        assert!(
            ids.contains(&("0000000000000000a3ce929d0e0e4736".to_owned(), PARENT.to_owned())),
            "x-b3-* headers, 64-bit trace id padded: {ids:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn refused_requests_and_ejections_are_named_on_client_spans() {
    bounded(async {
        let (collector_addr, received) = collector().await;
        let bad = common::failing(StatusCode::SERVICE_UNAVAILABLE).await;
        let caller = proxy(&format!(
            "[service]\nname = \"caller\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\nroute = [{{ name = \"r\", upstream = \"callee\" }}]\n\n\
             [[upstream]]\nname = \"callee\"\nendpoints = [{{ address = \"{}\" }}]\npanic_threshold = 0\n\n\
             [upstream.outlier_detection]\nconsecutive_5xx = 1\nmax_ejection_percent = 100\n\n{}",
            bad.addr,
            telemetry(collector_addr)
        ))
        .await;
        let url = format!("http://{}/", caller.outbound());
        let (status, _, _) = get(&client(), &url).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the app's own 503");
        let (status, kind, _) = get(&client(), &url).await;
        assert_eq!((status, kind.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "all-ejected"));
        let all = spans(&received, 2).await;
        let Some((_, refused)) = all.iter().find(|(_, s)| attribute(s, "meshscope.decision").is_some()) else {
            panic!("no span names the decision: {all:?}");
        };
        assert_eq!(attribute(refused, "meshscope.decision").as_deref(), Some("all-ejected"));
        assert_eq!(attribute(refused, "meshscope.ejected_endpoints").as_deref(), Some("1"));
        assert_eq!(attribute(refused, "error.type").as_deref(), Some("all-ejected"));
        assert_eq!(attribute(refused, "meshscope.upstream.endpoint"), None, "no endpoint was picked");
    })
    .await;
}

#[tokio::test]
async fn a_request_refused_by_the_adaptive_concurrency_limit_is_named_on_its_client_span() {
    bounded(async {
        let (collector_addr, received) = collector().await;
        let app = common::slow("app", Duration::from_millis(500)).await;
        let caller = proxy(&format!(
            "[service]\nname = \"caller\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\nroute = [{{ name = \"r\", upstream = \"callee\" }}]\n\n\
             [[upstream]]\nname = \"callee\"\nendpoints = [{{ address = \"{}\" }}]\n\n\
             [upstream.adaptive_concurrency]\nmin_limit = 1\ninitial_limit = 1\n\n{}",
            app.addr,
            telemetry(collector_addr)
        ))
        .await;
        let url = format!("http://{}/", caller.outbound());
        let held = tokio::spawn({
            let url = url.clone();
            async move { get(&client(), &url).await.0 }
        });
        while app.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, kind, _) = get(&client(), &url).await;
        assert_eq!((status, kind.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "concurrency-limit"));
        match held.await {
            Ok(status) => assert_eq!(status, StatusCode::OK),
            Err(e) => panic!("held request failed: {e}"),
        }
        let all = spans(&received, 2).await;
        let Some((_, refused)) = all.iter().find(|(_, s)| attribute(s, "meshscope.decision").is_some()) else {
            panic!("no span names the decision: {all:?}");
        };
        assert_eq!(attribute(refused, "meshscope.decision").as_deref(), Some("concurrency-limit"));
        assert_eq!(attribute(refused, "error.type").as_deref(), Some("concurrency-limit"));
        assert_eq!(attribute(refused, "meshscope.upstream.endpoint"), None, "no endpoint was picked");
    })
    .await;
}
