//! OTLP/gRPC export of the proxy's own metrics: a tonic MetricsService receiver gets cumulative
//! request counts, latency histograms, retries and breaker overflows on the configured interval, and
//! a collector that never answers costs dropped and failed snapshots, never traffic.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, client, failing, get, named, proxy};
use http::StatusCode;
use meshscope_proto::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use meshscope_proto::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use meshscope_proto::common::KeyValue;
use meshscope_proto::common::any_value::Value as AnyValue;
use meshscope_proto::metrics::Metric;
use meshscope_proto::metrics::metric::Data;
use meshscope_proto::metrics::number_data_point::Value;
use tokio_stream::wrappers::TcpListenerStream;

/// An OTLP metrics receiver that keeps every request, or (`stall`) never answers.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    stall: bool,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        if self.stall {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let mut received = match self.received.lock() {
            Ok(received) => received,
            Err(poisoned) => poisoned.into_inner(),
        };
        received.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn start(receiver: Receiver) -> SocketAddr {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("cannot bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("no address: {e}"),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(receiver))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

fn has(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes.iter().any(|kv| {
        kv.key == key
            && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(AnyValue::StringValue(v)) if v == value)
    })
}

/// The integer value of `metric`'s sum or gauge point whose attributes include `labels`.
fn value(metric: &Metric, labels: &[(&str, &str)]) -> Option<i64> {
    let points = match metric.data.as_ref()? {
        Data::Sum(sum) => &sum.data_points,
        Data::Gauge(gauge) => &gauge.data_points,
        _ => return None,
    };
    points
        .iter()
        .find(|p| labels.iter().all(|(k, v)| has(&p.attributes, k, v)))
        .and_then(|p| match p.value {
            Some(Value::AsInt(v)) => Some(v),
            _ => None,
        })
}

#[tokio::test]
async fn metrics_are_exported_on_the_interval() {
    bounded(async {
        let receiver = Receiver::default();
        let collector = start(receiver.clone()).await;
        let good = named("good").await;
        let bad = failing(StatusCode::SERVICE_UNAVAILABLE).await;
        let proxy = proxy(&format!(
            r#"
[service]
name = "metered"

[[outbound]]
listen = "127.0.0.1:0"
route = [
  {{ name = "good", match = {{ path_prefix = "/good" }}, upstream = "good" }},
  {{ name = "bad", match = {{ path_prefix = "/bad" }}, upstream = "bad", retry = {{ attempts = 1, on = ["5xx"], backoff_base = "1ms", backoff_max = "1ms" }} }},
]

[[upstream]]
name = "good"
endpoints = [{{ address = "{}" }}]
adaptive_concurrency = {{ initial_limit = 7 }}

[[upstream]]
name = "bad"
endpoints = [{{ address = "{}" }}]

[telemetry]
otlp_endpoint = "http://{collector}"
metrics_interval = "200ms"
sample_ratio = 0.0
"#,
            good.addr, bad.addr
        ))
        .await;
        let http = client();
        for _ in 0..5 {
            assert_eq!(get(&http, &format!("http://{}/good", proxy.outbound())).await.0, StatusCode::OK);
        }
        assert_eq!(
            get(&http, &format!("http://{}/bad", proxy.outbound())).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        // Cumulative points: wait for a snapshot taken after the traffic above.
        let deadline = Instant::now() + Duration::from_secs(10);
        let metrics = loop {
            let latest = receiver
                .received
                .lock()
                .map(|r| r.last().cloned())
                .unwrap_or_default();
            let metrics: Vec<Metric> = latest
                .iter()
                .flat_map(|r| &r.resource_metrics)
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| s.metrics.clone())
                .collect();
            let requests = metrics.iter().find(|m| m.name == "meshscope.proxy.requests");
            if requests.and_then(|m| value(m, &[("route", "bad"), ("class", "5xx")])) == Some(1) {
                break metrics;
            }
            assert!(Instant::now() < deadline, "no snapshot with the traffic arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let find = |name: &str| match metrics.iter().find(|m| m.name == name) {
            Some(metric) => metric,
            None => panic!("{name} not exported"),
        };
        let requests = find("meshscope.proxy.requests");
        assert_eq!(value(requests, &[("route", "good"), ("class", "2xx")]), Some(5));
        assert_eq!(value(find("meshscope.proxy.upstream.retries"), &[("upstream", "bad")]), Some(1));
        assert_eq!(value(find("meshscope.proxy.upstream.attempts"), &[("upstream", "bad")]), Some(2));
        assert_eq!(value(find("meshscope.proxy.upstream.overflows"), &[("upstream", "good"), ("limit", "requests")]), Some(0));
        assert_eq!(value(find("meshscope.proxy.upstream.breaker_open"), &[("upstream", "good"), ("limit", "requests")]), Some(0));
        let concurrency_limit = find("meshscope.proxy.upstream.concurrency_limit");
        assert_eq!(value(concurrency_limit, &[("upstream", "good")]), Some(7), "five requests, one at a time: still the initial limit");
        assert_eq!(value(concurrency_limit, &[("upstream", "bad")]), None, "only upstreams with the table");
        assert_eq!(value(find("meshscope.proxy.upstream.concurrency_rejected"), &[("upstream", "good")]), Some(0));
        let Some(Data::Histogram(latency)) = &find("meshscope.proxy.request.duration").data else {
            panic!("request.duration is not a histogram");
        };
        let Some(good_latency) = latency.data_points.iter().find(|p| has(&p.attributes, "route", "good")) else {
            panic!("no latency point for route good");
        };
        assert_eq!(good_latency.count, 5);
        assert_eq!(good_latency.bucket_counts.iter().sum::<u64>(), 5, "buckets count each observation once");
        assert_eq!(good_latency.bucket_counts.len(), good_latency.explicit_bounds.len() + 1);
        assert!(value(find("meshscope.proxy.spans.dropped"), &[]).is_some());
        let service = receiver.received.lock().ok().and_then(|r| {
            r.last()?.resource_metrics.first()?.resource.as_ref().map(|res| has(&res.attributes, "service.name", "metered"))
        });
        assert_eq!(service, Some(true));
    })
    .await;
}

#[tokio::test]
async fn a_stalled_metrics_collector_drops_snapshots_and_never_slows_traffic() {
    bounded(async {
        let collector = start(Receiver {
            stall: true,
            ..Receiver::default()
        })
        .await;
        let app = named("app").await;
        let proxy = proxy(&format!(
            r#"
[service]
name = "metered"

[admin]
listen = "127.0.0.1:0"

[[outbound]]
listen = "127.0.0.1:0"
route = [{{ name = "all", upstream = "app" }}]

[[upstream]]
name = "app"
endpoints = [{{ address = "{}" }}]

[telemetry]
otlp_endpoint = "http://{collector}"
metrics_interval = "20ms"
export_timeout = "1s"
"#,
            app.addr
        ))
        .await;
        let Some(admin) = proxy.addresses.admin else {
            panic!("no admin listener")
        };
        let http = client();
        let metric = |text: &str, name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let started = Instant::now();
            assert_eq!(
                get(&http, &format!("http://{}/", proxy.outbound())).await.0,
                StatusCode::OK
            );
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "traffic waited for export"
            );
            let (_, _, text) = get(&http, &format!("http://{admin}/metrics")).await;
            let (dropped, failed) = (
                metric(&text, "meshscope_proxy_metric_exports_dropped_total"),
                metric(&text, "meshscope_proxy_metric_exports_failed_total"),
            );
            if dropped > 0 && failed > 0 {
                assert_eq!(metric(&text, "meshscope_proxy_metric_exports_total"), 0);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no dropped and failed snapshots counted:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
