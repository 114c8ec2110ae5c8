//! Each balancer's distribution over real endpoints, through a running proxy.

mod common;

use std::time::Duration;

use common::{RunningProxy, TestServer, bounded, client, get, named, proxy, slow};
use http::StatusCode;

/// A proxy with one route and one upstream of `balancer` over `endpoints` with `weights`.
async fn balanced(balancer: &str, endpoints: &[&TestServer], weights: &[u32]) -> RunningProxy {
    hashed(balancer, "", endpoints, weights).await
}

/// Like [`balanced`], with `extra` TOML lines in the upstream table (e.g. its `hash_key`).
async fn hashed(
    balancer: &str,
    extra: &str,
    endpoints: &[&TestServer],
    weights: &[u32],
) -> RunningProxy {
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
{extra}
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

/// Ten concurrent senders over a slow and a fast endpoint: the slow one keeps requests in flight,
/// so a load-aware balancer sends most requests to the fast one (round robin would split 40/40).
async fn steers_away_from_the_busy_endpoint(balancer: &str) {
    let (busy, idle) = (
        slow("busy", Duration::from_millis(300)).await,
        named("idle").await,
    );
    let proxy = balanced(balancer, &[&busy, &idle], &[1, 1]).await;
    let url = format!("http://{}/", proxy.outbound());
    let http = client();
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
        "{balancer}: busy {} idle {}",
        busy.hits(),
        idle.hits()
    );
}

#[tokio::test]
async fn least_request_avoids_the_busy_endpoint() {
    bounded(steers_away_from_the_busy_endpoint("least_request")).await;
}

#[tokio::test]
async fn least_connections_avoids_the_busy_endpoint() {
    bounded(steers_away_from_the_busy_endpoint("least_connections")).await;
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

/// Sends one GET per user (`user-0` … `user-{n-1}`), `rounds` times over, with the user in
/// `header`, and returns which endpoint answered each user in each round.
async fn by_user(
    proxy: &RunningProxy,
    header: &str,
    value: impl Fn(usize) -> String,
    n: usize,
    rounds: usize,
) -> Vec<Vec<String>> {
    let http = client();
    let url = format!("http://{}/", proxy.outbound());
    let mut answers = vec![Vec::new(); n];
    for _ in 0..rounds {
        for (user, seen) in answers.iter_mut().enumerate() {
            let (status, who, _) = common::send(http.get(&url).header(header, value(user))).await;
            assert_eq!(status, StatusCode::OK);
            seen.push(who);
        }
    }
    answers
}

/// Every user always reached the same endpoint, and the users are spread over all `endpoints`.
fn assert_sticky_and_spread(answers: &[Vec<String>], endpoints: usize) {
    for (user, seen) in answers.iter().enumerate() {
        assert!(
            seen.iter().all(|who| who == &seen[0]),
            "user-{user} moved: {seen:?}"
        );
    }
    let mut distinct: Vec<&String> = answers.iter().map(|seen| &seen[0]).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), endpoints, "users landed on {distinct:?}");
}

#[tokio::test]
async fn ring_hash_keeps_each_header_value_on_one_endpoint() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let proxy = hashed(
            "ring_hash",
            "hash_key = { header = \"x-user\" }",
            &[&a, &b, &c],
            &[1, 1, 1],
        )
        .await;
        let answers = by_user(&proxy, "x-user", |u| format!("user-{u}"), 40, 3).await;
        assert_sticky_and_spread(&answers, 3);
    })
    .await;
}

#[tokio::test]
async fn maglev_keeps_each_cookie_on_one_endpoint() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let proxy = hashed(
            "maglev",
            "hash_key = { cookie = \"session\" }",
            &[&a, &b, &c],
            &[1, 1, 1],
        )
        .await;
        let answers = by_user(
            &proxy,
            "cookie",
            |u| format!("theme=dark; session=s{u}"),
            40,
            3,
        )
        .await;
        assert_sticky_and_spread(&answers, 3);
    })
    .await;
}

#[tokio::test]
async fn source_ip_hash_sends_one_client_to_one_endpoint() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let servers = [&a, &b, &c];
        let proxy = balanced("source_ip_hash", &servers, &[1, 1, 1]).await;
        let mut counts = sequential(&proxy, &servers, 30).await;
        counts.sort_unstable();
        assert_eq!(counts, vec![0, 0, 30]);
    })
    .await;
}
