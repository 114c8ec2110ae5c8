//! The `adaptive` balancer follows the collector's fleet signals: a stand-in collector serves
//! `FleetSignals/Subscribe` over real gRPC, and real requests through the proxy show which endpoints
//! the proxy uses while verdicts hold, when too many are ejected, and after the verdicts expire.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{RunningProxy, TestServer, bounded, client, get, named, proxy};
use futures::Stream;
use http::StatusCode;
use meshscope_proto::signals::fleet_signals_server::{FleetSignals, FleetSignalsServer};
use meshscope_proto::signals::{EndpointHealth, ServiceHealth, SignalsUpdate, SubscribeRequest};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// A collector stand-in that tells every subscriber that `ejected` endpoints of `svc` are ejected,
/// with verdicts valid for `ttl` from each update, every 100 ms.
#[derive(Clone)]
struct StandIn {
    endpoints: Vec<String>,
    ejected: Vec<String>,
    ttl: Duration,
    subscriptions: Arc<Mutex<Vec<SubscribeRequest>>>,
    /// Once set, streams end and new ones are empty: the collector has "gone away".
    silent: Arc<std::sync::atomic::AtomicBool>,
}

#[tonic::async_trait]
impl FleetSignals for StandIn {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<SignalsUpdate, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.push(request.into_inner());
        }
        let me = self.clone();
        let interval = tokio::time::interval(Duration::from_millis(100));
        let silent = self.silent.clone();
        let updates = tokio_stream::wrappers::IntervalStream::new(interval)
            .take_while(move |_| !silent.load(std::sync::atomic::Ordering::SeqCst))
            .map(move |_| {
                let now = unix_nanos();
                let expires = now + me.ttl.as_nanos() as u64;
                let endpoints = me
                    .endpoints
                    .iter()
                    .map(|address| {
                        let ejected = me.ejected.contains(address);
                        EndpointHealth {
                            address: address.clone(),
                            weight: 1.0,
                            ejected_until_unix_nano: if ejected { expires } else { 0 },
                            expires_unix_nano: expires,
                            ..Default::default()
                        }
                    })
                    .collect();
                Ok(SignalsUpdate {
                    generated_unix_nano: now,
                    window_millis: 10_000,
                    services: vec![ServiceHealth {
                        service: "svc".into(),
                        endpoints,
                        ..Default::default()
                    }],
                })
            });
        Ok(Response::new(Box::pin(updates)))
    }
}

use tokio_stream::StreamExt;

/// Serves `stand_in` on a loopback port until the returned sender is dropped or fired.
async fn serve(stand_in: StandIn) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FleetSignalsServer::new(stand_in))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    (addr, stop)
}

async fn adaptive(servers: &[&TestServer], collector: std::net::SocketAddr) -> RunningProxy {
    let endpoints: Vec<String> = servers
        .iter()
        .map(|server| format!("{{ address = \"{}\" }}", server.addr))
        .collect();
    proxy(&format!(
        r#"
[service]
name = "web"

[admin]
listen = "127.0.0.1:0"

[telemetry]
signals_endpoint = "http://{collector}"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "all"
upstream = "svc"

[[upstream]]
name = "svc"
balancer = "adaptive"
endpoints = [{}]
"#,
        endpoints.join(", ")
    ))
    .await
}

/// Sends `n` GETs and returns how many each server got since `before`.
async fn spread(
    proxy: &RunningProxy,
    servers: &[&TestServer],
    before: &[usize],
    n: usize,
) -> Vec<usize> {
    let http = client();
    let url = format!("http://{}/", proxy.outbound());
    for _ in 0..n {
        assert_eq!(get(&http, &url).await.0, StatusCode::OK);
    }
    servers
        .iter()
        .zip(before)
        .map(|(server, before)| server.hits() - before)
        .collect()
}

async fn wait_for_subscription(stand_in: &StandIn) -> SubscribeRequest {
    for _ in 0..100 {
        if let Some(first) = stand_in
            .subscriptions
            .lock()
            .ok()
            .and_then(|s| s.first().cloned())
        {
            // Let the first updates arrive.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return first;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the proxy never subscribed");
}

#[tokio::test]
async fn fleet_ejections_are_followed_until_they_expire() {
    bounded(async {
        let servers = [
            named("a").await,
            named("b").await,
            named("c").await,
            named("d").await,
        ];
        let refs: Vec<&TestServer> = servers.iter().collect();
        let stand_in = StandIn {
            endpoints: servers.iter().map(|s| s.addr.to_string()).collect(),
            ejected: vec![servers[1].addr.to_string()],
            ttl: Duration::from_millis(1500),
            subscriptions: Arc::default(),
            silent: Arc::default(),
        };
        let (collector, _stop_collector) = serve(stand_in.clone()).await;
        let proxy = adaptive(&refs, collector).await;
        let subscription = wait_for_subscription(&stand_in).await;
        assert_eq!(subscription.services, vec!["svc".to_owned()]);
        assert!(
            subscription.proxy_id.starts_with("web/"),
            "{subscription:?}"
        );

        let counts = spread(&proxy, &refs, &[0; 4], 200).await;
        assert_eq!(counts[1], 0, "the ejected endpoint got traffic: {counts:?}");
        assert!(
            counts.iter().enumerate().all(|(i, &c)| i == 1 || c > 0),
            "{counts:?}"
        );

        let fleet_view = || async {
            let admin = proxy
                .addresses
                .admin
                .unwrap_or_else(|| panic!("no admin listener"));
            let url = format!("http://{admin}/endpoints");
            let view: serde_json::Value = client()
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"))
                .json()
                .await
                .unwrap_or_else(|e| panic!("/endpoints is not JSON: {e}"));
            view["upstreams"][0]["endpoints"]
                .as_array()
                .map(|endpoints| {
                    endpoints
                        .iter()
                        .map(|e| (e["fleet_ejected"].as_bool(), e["fleet_weight"].as_f64()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let view = fleet_view().await;
        assert_eq!(
            view.iter()
                .filter(|(ejected, _)| *ejected == Some(true))
                .count(),
            1,
            "{view:?}"
        );

        // The collector goes away: its verdicts expire, and the endpoint is back in balancing (where
        // peak-EWMA's initial latency guess for an endpoint never used keeps it cold for a while).
        stand_in
            .silent
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let view = fleet_view().await;
        assert!(
            view.iter().all(|state| *state == (Some(false), Some(1.0))),
            "expired verdicts must read as neutral: {view:?}"
        );
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn fleet_ejections_beyond_half_the_endpoints_are_ignored() {
    bounded(async {
        let servers = [
            named("a").await,
            named("b").await,
            named("c").await,
            named("d").await,
        ];
        let refs: Vec<&TestServer> = servers.iter().collect();
        let stand_in = StandIn {
            endpoints: servers.iter().map(|s| s.addr.to_string()).collect(),
            ejected: servers[1..].iter().map(|s| s.addr.to_string()).collect(),
            ttl: Duration::from_secs(60),
            subscriptions: Arc::default(),
            silent: Arc::default(),
        };
        let (collector, _stop_collector) = serve(stand_in.clone()).await;
        let proxy = adaptive(&refs, collector).await;
        wait_for_subscription(&stand_in).await;
        let counts = spread(&proxy, &refs, &[0; 4], 200).await;
        assert!(
            counts.iter().all(|&c| c > 0),
            "three of four ejected is over the 50% cap, so none may be left out: {counts:?}"
        );
        proxy.stop().await;
    })
    .await;
}
