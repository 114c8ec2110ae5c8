//! Each balancer's distribution over real endpoints, through a running proxy.

mod common;

use std::time::Duration;

use common::{RunningProxy, TestServer, bounded, client, get, named, proxy, slow};
use http::StatusCode;

/// A proxy with one route and one upstream of `balancer` over `endpoints` with `weights`.
async fn balanced(balancer: &str, endpoints: &[&TestServer], weights: &[u32]) -> RunningProxy {
    let endpoints: Vec<String> = endpoints
        .iter()
        .zip(weights)
        .map(|(server, weight)| format!("{{ address = \"{}\", weight = {weight} }}", server.addr))
        .collect();
    let config = format!(
        r#"
[service]
name = "web"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "all"
upstream = "svc"

[[upstream]]
name = "svc"
balancer = "{balancer}"
endpoints = [{}]
"#,
        endpoints.join(", ")
    );
    proxy(&config).await
}

/// Sends `n` sequential GETs and returns how many each endpoint got.
async fn sequential(proxy: &RunningProxy, servers: &[&TestServer], n: usize) -> Vec<usize> {
    let http = client();
    let url = format!("http://{}/", proxy.outbound());
    for _ in 0..n {
        assert_eq!(get(&http, &url).await.0, StatusCode::OK);
    }
    servers.iter().map(|s| s.hits()).collect()
}

#[tokio::test]
async fn round_robin_is_exactly_even() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let servers = [&a, &b, &c];
        let proxy = balanced("round_robin", &servers, &[1, 5, 1]).await;
        assert_eq!(sequential(&proxy, &servers, 300).await, vec![100, 100, 100]);
    })
    .await;
}

#[tokio::test]
async fn weighted_round_robin_is_exactly_proportional() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let servers = [&a, &b, &c];
        let proxy = balanced("weighted_round_robin", &servers, &[1, 2, 3]).await;
        assert_eq!(sequential(&proxy, &servers, 600).await, vec![100, 200, 300]);
    })
    .await;
}

#[tokio::test]
async fn random_is_roughly_even() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let servers = [&a, &b, &c];
        let proxy = balanced("random", &servers, &[1, 5, 1]).await;
        // Binomial(600, 1/3): sd ≈ 11.5; ±60 is five standard deviations.
        for count in sequential(&proxy, &servers, 600).await {
            assert!((140..=260).contains(&count), "{count}");
        }
    })
    .await;
}

#[tokio::test]
async fn weighted_random_follows_weights() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let servers = [&a, &b, &c];
        let proxy = balanced("weighted_random", &servers, &[1, 2, 3]).await;
        let counts = sequential(&proxy, &servers, 600).await;
        // Expected 100/200/300, sd ≈ 9.1/11.5/12.2; allow five standard deviations.
        assert!((55..=145).contains(&counts[0]), "{counts:?}");
        assert!((140..=260).contains(&counts[1]), "{counts:?}");
        assert!((240..=360).contains(&counts[2]), "{counts:?}");
    })
    .await;
}

#[tokio::test]
async fn least_request_avoids_the_busy_endpoint() {
    bounded(async {
        let (busy, idle) = (
            slow("busy", Duration::from_millis(300)).await,
            named("idle").await,
        );
        let proxy = balanced("least_request", &[&busy, &idle], &[1, 1]).await;
        let url = format!("http://{}/", proxy.outbound());
        let http = client();
        // Ten concurrent senders: the slow endpoint keeps requests in flight, so P2C steers away.
        let senders: Vec<_> = (0..10)
            .map(|_| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    for _ in 0..8 {
                        assert_eq!(get(&http, &url).await.0, StatusCode::OK);
                    }
                })
            })
            .collect();
        for sender in senders {
            if let Err(e) = sender.await {
                panic!("sender failed: {e}");
            }
        }
        assert_eq!(busy.hits() + idle.hits(), 80);
        assert!(
            idle.hits() >= 60,
            "busy {} idle {}",
            busy.hits(),
            idle.hits()
        );
    })
    .await;
}

#[tokio::test]
async fn peak_ewma_prefers_the_fast_endpoint() {
    bounded(async {
        let (slow_one, fast) = (
            slow("slow", Duration::from_millis(80)).await,
            named("fast").await,
        );
        let servers = [&slow_one, &fast];
        let proxy = balanced("peak_ewma", &servers, &[1, 1]).await;
        let counts = sequential(&proxy, &servers, 60).await;
        // After one slow answer its latency estimate dwarfs the fast one's for the rest of the test.
        assert!(counts[1] >= 50, "{counts:?}");
    })
    .await;
}
