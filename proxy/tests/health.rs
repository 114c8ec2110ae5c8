//! Outlier ejection, the panic threshold and the circuit breaker, through a running proxy.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{bounded, client, failing, get, named, proxy, slow};
use http::StatusCode;

/// A proxy with one route to round-robin upstream `svc` over `endpoints`, with `extra` TOML lines in
/// the upstream table.
async fn upstream_with(endpoints: &[SocketAddr], extra: &str) -> common::RunningProxy {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    proxy(&format!(
        "[service]\nname = \"web\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\n\n[[outbound.route]]\nname = \"all\"\nupstream = \"svc\"\n\n\
         [[upstream]]\nname = \"svc\"\nbalancer = \"round_robin\"\nendpoints = [{}]\n{extra}\n",
        endpoints.join(", ")
    ))
    .await
}

/// Sends `n` sequential GETs and returns how many were not 200.
async fn failures(proxy: &common::RunningProxy, n: usize) -> Vec<(StatusCode, String)> {
    let http = client();
    let mut failed = Vec::new();
    for _ in 0..n {
        let (status, kind, _) = get(&http, &format!("http://{}/", proxy.outbound())).await;
        if status != StatusCode::OK {
            failed.push((status, kind));
        }
    }
    failed
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected() {
    bounded(async {
        let (a, b, bad) = (
            named("a").await,
            named("b").await,
            failing(StatusCode::INTERNAL_SERVER_ERROR).await,
        );
        let outlier =
            "[upstream.outlier_detection]\nconsecutive_5xx = 2\nmax_ejection_percent = 50";
        let proxy = upstream_with(&[a.addr, b.addr, bad.addr], outlier).await;
        let failed = failures(&proxy, 30).await;
        assert_eq!(bad.hits(), 2, "ejected after two consecutive 5xx");
        assert_eq!(failed.len(), 2);
        assert_eq!(a.hits() + b.hits(), 28);
    })
    .await;
}

#[tokio::test]
async fn max_ejection_percent_keeps_endpoints_in_rotation() {
    bounded(async {
        let good = named("good").await;
        let (bad1, bad2) = (failing(StatusCode::BAD_GATEWAY).await, failing(StatusCode::BAD_GATEWAY).await);
        let outlier = "[upstream.outlier_detection]\nconsecutive_gateway_errors = 1\nconsecutive_5xx = 0\nmax_ejection_percent = 34";
        let proxy = upstream_with(&[good.addr, bad1.addr, bad2.addr], outlier).await;
        failures(&proxy, 30).await;
        let (fewer, more) = (bad1.hits().min(bad2.hits()), bad1.hits().max(bad2.hits()));
        assert_eq!(fewer, 1, "one bad endpoint is ejected at its first failure");
        assert!(more >= 5, "34% of 3 endpoints allows one ejection only; the other stays in ({more} hits)");
    })
    .await;
}

#[tokio::test]
async fn below_the_panic_threshold_ejections_are_ignored() {
    bounded(async {
        let (x, y) = (failing(StatusCode::INTERNAL_SERVER_ERROR).await, failing(StatusCode::INTERNAL_SERVER_ERROR).await);
        let outlier = "panic_threshold = 50\n[upstream.outlier_detection]\nconsecutive_5xx = 1\nmax_ejection_percent = 100";
        let proxy = upstream_with(&[x.addr, y.addr], outlier).await;
        let failed = failures(&proxy, 10).await;
        assert!(failed.iter().all(|(status, _)| *status == StatusCode::INTERNAL_SERVER_ERROR), "{failed:?}");
        assert_eq!(x.hits() + y.hits(), 10, "with both ejected, both still get traffic");

        let (x, y) = (failing(StatusCode::INTERNAL_SERVER_ERROR).await, failing(StatusCode::INTERNAL_SERVER_ERROR).await);
        let no_panic = "panic_threshold = 0\n[upstream.outlier_detection]\nconsecutive_5xx = 1\nmax_ejection_percent = 100";
        let proxy = upstream_with(&[x.addr, y.addr], no_panic).await;
        let failed = failures(&proxy, 4).await;
        assert_eq!(x.hits() + y.hits(), 2);
        let ejected = (StatusCode::SERVICE_UNAVAILABLE, "all-ejected".to_owned());
        assert_eq!(failed[2..], [ejected.clone(), ejected]);
    })
    .await;
}

#[tokio::test]
async fn the_circuit_breaker_fails_fast_past_max_requests() {
    bounded(async {
        let app = slow("app", Duration::from_secs(1)).await;
        let proxy =
            upstream_with(&[app.addr], "[upstream.circuit_breaker]\nmax_requests = 2").await;
        let url = format!("http://{}/", proxy.outbound());
        let http = client();
        let first: Vec<_> = (0..2)
            .map(|_| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move { get(&http, &url).await.0 })
            })
            .collect();
        while app.hits() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..3 {
            let (status, kind, _) = get(&http, &url).await;
            assert_eq!(
                (status, kind.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, "overflow")
            );
        }
        for request in first {
            match request.await {
                Ok(status) => assert_eq!(status, StatusCode::OK),
                Err(e) => panic!("request task failed: {e}"),
            }
        }
        assert_eq!(
            get(&http, &url).await.0,
            StatusCode::OK,
            "capacity is back once they finish"
        );
    })
    .await;
}

#[tokio::test]
async fn active_health_checks_take_an_endpoint_out_and_back() {
    bounded(async {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let good = named("good").await;
        let sick_now = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&sick_now);
        let sick = common::serve(Arc::new(move |request: http::Request<hyper::body::Incoming>, _| {
            let failing = flag.load(Ordering::SeqCst) && request.uri().path() == "/healthz";
            Box::pin(async move {
                if failing {
                    common::reply(StatusCode::SERVICE_UNAVAILABLE, "not ready")
                } else {
                    let mut response = common::reply(StatusCode::OK, "sick");
                    response.headers_mut().insert("x-upstream", http::HeaderValue::from_static("sick"));
                    response
                }
            })
        }))
        .await;
        let check = "[upstream.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1";
        let proxy = upstream_with(&[good.addr, sick.addr], check).await;
        let url = format!("http://{}/", proxy.outbound());
        let http = client();
        // Wait for the first check round to mark it, then it must get nothing.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sick.hits() < 1 {
            assert!(std::time::Instant::now() < deadline, "no health check arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..10 {
            assert_eq!(get(&http, &url).await.1, "good", "the endpoint failing its checks gets no traffic");
        }

        sick_now.store(false, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while get(&http, &url).await.1 != "sick" {
            assert!(std::time::Instant::now() < deadline, "the endpoint never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut answered = Vec::new();
        for _ in 0..10 {
            answered.push(get(&http, &url).await.1);
        }
        assert_eq!(answered.iter().filter(|who| *who == "sick").count(), 5, "back in rotation: {answered:?}");
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_failing_more_than_its_peers_is_ejected_by_success_rate() {
    bounded(async {
        use std::sync::Arc;

        let mut servers = Vec::new();
        for _ in 0..4 {
            servers.push(named("good").await);
        }
        // Fails every other request: never 5 in a row, but half the rate of its peers.
        let flaky = common::serve(Arc::new(|_, hit| {
            Box::pin(async move {
                if hit % 2 == 0 {
                    common::reply(StatusCode::INTERNAL_SERVER_ERROR, "odd")
                } else {
                    common::reply(StatusCode::OK, "flaky")
                }
            })
        }))
        .await;
        let mut addresses: Vec<_> = servers.iter().map(|s| s.addr).collect();
        addresses.push(flaky.addr);
        let outlier = "[upstream.outlier_detection]\nconsecutive_5xx = 0\nsuccess_rate_stdev_factor = 1.9\n\
                       success_rate_interval = \"300ms\"\nsuccess_rate_min_requests = 4\nsuccess_rate_min_hosts = 5";
        let proxy = upstream_with(&addresses, outlier).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let before = flaky.hits();
            failures(&proxy, 25).await;
            if flaky.hits() == before {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the flaky endpoint was never ejected");
        }
    })
    .await;
}

#[tokio::test]
async fn max_connections_queues_requests_and_max_pending_turns_the_rest_away() {
    bounded(async {
        let app = slow("app", Duration::from_millis(1500)).await;
        let proxy = upstream_with(
            &[app.addr],
            "[upstream.circuit_breaker]\nmax_connections = 2\nmax_pending_requests = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"",
        )
        .await;
        let Some(admin) = proxy.addresses.admin else { panic!("no admin listener") };
        let url = format!("http://{}/", proxy.outbound());
        let http = client();
        let spawn_get = || {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { get(&http, &url).await.0 })
        };
        let holding: Vec<_> = (0..2).map(|_| spawn_get()).collect();
        while app.hits() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let queued = spawn_get();
        let metric = |text: &str, line: &str| text.lines().any(|l| l == line);
        loop {
            let (_, _, metrics) = get(&http, &format!("http://{admin}/metrics")).await;
            if metric(&metrics, "meshscope_proxy_upstream_requests_pending{upstream=\"svc\"} 1") {
                assert!(metric(&metrics, "meshscope_proxy_upstream_connections_active{upstream=\"svc\"} 2"));
                assert!(metric(&metrics, "meshscope_proxy_upstream_breaker_open{upstream=\"svc\",limit=\"connections\"} 1"));
                assert!(metric(&metrics, "meshscope_proxy_upstream_breaker_open{upstream=\"svc\",limit=\"pending\"} 1"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(app.hits(), 2, "the third request waits instead of opening a third connection");
        let (status, kind, body) = get(&http, &url).await;
        assert_eq!((status, kind.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "overflow"));
        assert!(body.contains("max_pending_requests"), "{body}");
        for request in holding.into_iter().chain([queued]) {
            match request.await {
                Ok(status) => assert_eq!(status, StatusCode::OK),
                Err(e) => panic!("request task failed: {e}"),
            }
        }
        assert_eq!(app.hits(), 3, "the queued request ran once a connection was free");
        let (_, _, metrics) = get(&http, &format!("http://{admin}/metrics")).await;
        assert!(metric(&metrics, "meshscope_proxy_upstream_overflows_total{upstream=\"svc\",limit=\"pending\"} 1"), "{metrics}");
        assert!(metric(&metrics, "meshscope_proxy_upstream_overflows_total{upstream=\"svc\",limit=\"requests\"} 0"));
        assert!(metric(&metrics, "meshscope_proxy_upstream_requests_pending{upstream=\"svc\"} 0"));
    })
    .await;
}

#[tokio::test]
async fn max_connections_without_a_queue_fails_fast() {
    bounded(async {
        let app = slow("app", Duration::from_millis(800)).await;
        let proxy = upstream_with(
            &[app.addr],
            "[upstream.circuit_breaker]\nmax_connections = 1\nmax_pending_requests = 0",
        )
        .await;
        let url = format!("http://{}/", proxy.outbound());
        let http = client();
        let first = {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { get(&http, &url).await.0 })
        };
        while app.hits() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = std::time::Instant::now();
        let (status, kind, _) = get(&http, &url).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "overflow")
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "answered without waiting"
        );
        assert!(matches!(first.await, Ok(StatusCode::OK)));
    })
    .await;
}
