//! Retries, the retry budget, timeouts and failing upstreams, through a running proxy.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bounded, client, closed_port, failing, get, named, proxy, reply, send, serve, slow};
use http::StatusCode;
use http_body_util::BodyExt;

/// A proxy with one route to upstream `svc` over `endpoints`; `route_extra` and `upstream_extra`
/// are TOML lines added to the route and upstream tables.
async fn single_route(
    endpoints: &[String],
    route_extra: &str,
    upstream_extra: &str,
) -> common::RunningProxy {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
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
{route_extra}

[[upstream]]
name = "svc"
balancer = "round_robin"
endpoints = [{}]
{upstream_extra}
"#,
        endpoints.join(", ")
    );
    proxy(&config).await
}

/// A server that answers 503 to its first `failures` requests, then 200 with the request body.
async fn flaky(failures: usize) -> common::TestServer {
    serve(Arc::new(
        move |request: http::Request<hyper::body::Incoming>, hit| {
            Box::pin(async move {
                let body = match request.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => return reply(StatusCode::BAD_REQUEST, "unreadable body"),
                };
                if hit < failures {
                    reply(StatusCode::SERVICE_UNAVAILABLE, "not yet")
                } else {
                    reply(StatusCode::OK, body)
                }
            })
        },
    ))
    .await
}

const RETRY: &str = "[outbound.route.retry]\nattempts = 3\non = [\"gateway-error\"]\nbackoff_base = \"5ms\"\nbackoff_max = \"20ms\"";

#[tokio::test]
async fn retries_503_until_success() {
    bounded(async {
        let server = flaky(2).await;
        let proxy = single_route(&[server.addr.to_string()], RETRY, "").await;
        let (status, _, _) = get(&client(), &format!("http://{}/", proxy.outbound())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.hits(), 3);
    })
    .await;
}

#[tokio::test]
async fn post_is_not_retried_by_default() {
    bounded(async {
        let server = flaky(1).await;
        let proxy = single_route(&[server.addr.to_string()], RETRY, "").await;
        let (status, _, body) = send(
            client()
                .post(format!("http://{}/", proxy.outbound()))
                .body("payload"),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not yet")
        );
        assert_eq!(server.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn post_is_retried_with_its_body_when_allowed() {
    bounded(async {
        let server = flaky(2).await;
        let route = format!("{RETRY}\nretry_non_idempotent = true");
        let proxy = single_route(&[server.addr.to_string()], &route, "").await;
        let (status, _, body) = send(
            client()
                .post(format!("http://{}/", proxy.outbound()))
                .body("payload"),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "payload"),
            "the body is replayed on the retry"
        );
        assert_eq!(server.hits(), 3);
    })
    .await;
}

#[tokio::test]
async fn bodies_over_the_replay_cap_are_not_retried() {
    bounded(async {
        let server = flaky(1).await;
        let route = format!("{RETRY}\nretry_non_idempotent = true\nmax_replay_bytes = 4");
        let proxy = single_route(&[server.addr.to_string()], &route, "").await;
        let (status, _, _) = send(
            client()
                .put(format!("http://{}/", proxy.outbound()))
                .body("too long"),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(server.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn retry_budget_caps_retries() {
    bounded(async {
        let server = failing(StatusCode::SERVICE_UNAVAILABLE).await;
        let budget = "[upstream.retry_budget]\nratio = 0.0\nmin_per_second = 1\nttl = \"5s\"";
        let proxy = single_route(&[server.addr.to_string()], RETRY, budget).await;
        let http = client();
        let url = format!("http://{}/", proxy.outbound());
        for _ in 0..10 {
            assert_eq!(get(&http, &url).await.0, StatusCode::SERVICE_UNAVAILABLE);
        }
        // Without a budget: 10 × (1 + 3) = 40 attempts. The budget holds 1/s × 5s = 5 retries.
        assert!(
            (10..=15).contains(&server.hits()),
            "{} attempts",
            server.hits()
        );
    })
    .await;
}

#[tokio::test]
async fn route_timeout_answers_504() {
    bounded(async {
        let server = slow("slow", Duration::from_secs(5)).await;
        let proxy = single_route(&[server.addr.to_string()], "timeout = \"200ms\"", "").await;
        let started = Instant::now();
        let (status, kind, body) = get(&client(), &format!("http://{}/", proxy.outbound())).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::GATEWAY_TIMEOUT, "timeout")
        );
        assert!(body.contains("did not answer within 200ms"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test]
async fn per_try_timeout_moves_to_another_endpoint() {
    bounded(async {
        let (stuck, fine) = (slow("stuck", Duration::from_secs(5)).await, named("fine").await);
        let route = "[outbound.route.retry]\nattempts = 1\nper_try_timeout = \"150ms\"\non = [\"gateway-error\"]";
        let proxy = single_route(&[stuck.addr.to_string(), fine.addr.to_string()], route, "").await;
        let http = client();
        for _ in 0..4 {
            let (status, who, _) = get(&http, &format!("http://{}/", proxy.outbound())).await;
            assert_eq!((status, who.as_str()), (StatusCode::OK, "fine"));
        }
        assert!(stuck.hits() >= 1, "round robin tried the stuck endpoint first at least once");
    })
    .await;
}

#[tokio::test]
async fn connect_failure_gives_502_or_retries_elsewhere() {
    bounded(async {
        let down = closed_port().await;
        let proxy = single_route(&[down.to_string()], "", "").await;
        let (status, kind, body) = get(&client(), &format!("http://{}/", proxy.outbound())).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::BAD_GATEWAY, "connect-failure")
        );
        assert!(
            body.contains(&format!("cannot connect to upstream \"svc\" at {down}")),
            "{body}"
        );

        let up = named("up").await;
        let retry = "[outbound.route.retry]\nattempts = 1\non = [\"connect-failure\"]";
        let proxy = single_route(&[down.to_string(), up.addr.to_string()], retry, "").await;
        let http = client();
        for _ in 0..4 {
            assert_eq!(
                get(&http, &format!("http://{}/", proxy.outbound())).await.0,
                StatusCode::OK
            );
        }
    })
    .await;
}

#[tokio::test]
async fn no_endpoints_gives_503() {
    bounded(async {
        let proxy = single_route(&[], "", "").await;
        let (status, kind, _) = get(&client(), &format!("http://{}/", proxy.outbound())).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "no-endpoints")
        );
    })
    .await;
}

#[tokio::test]
async fn a_streamed_body_is_teed_and_replayed_on_retry() {
    bounded(async {
        use bytes::Bytes;
        use http_body::Frame;
        use http_body_util::StreamBody;
        use hyper_util::rt::TokioIo;

        let server = flaky(1).await;
        let route = format!("{RETRY}\nretry_non_idempotent = true");
        let proxy = single_route(&[server.addr.to_string()], &route, "").await;
        let stream = match tokio::net::TcpStream::connect(proxy.outbound()).await {
            Ok(stream) => stream,
            Err(e) => panic!("connect failed: {e}"),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(e) => panic!("handshake failed: {e}"),
            };
        tokio::spawn(connection);
        // No content-length: the body is chunked, so the proxy cannot read it first; it tees it.
        let chunks = ["part one, ", "part two, ", "part three"]
            .map(|chunk| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk))));
        let body = StreamBody::new(futures::stream::iter(chunks));
        let request = match http::Request::post("/upload")
            .header("host", "svc")
            .body(body)
        {
            Ok(request) => request,
            Err(e) => panic!("bad request: {e}"),
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        assert_eq!(response.status(), StatusCode::OK);
        let echoed = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => panic!("body failed: {e}"),
        };
        assert_eq!(
            echoed, "part one, part two, part three",
            "the retry carried the whole body"
        );
        assert_eq!(server.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_post_is_retried_after_a_connect_failure_even_by_default() {
    bounded(async {
        let (down, up) = (closed_port().await, flaky(0).await);
        let retry = "[outbound.route.retry]\nattempts = 1\non = [\"connect-failure\"]";
        let proxy = single_route(&[down.to_string(), up.addr.to_string()], retry, "").await;
        for i in 0..4 {
            let payload = format!("order {i}");
            let (status, _, body) = send(
                client()
                    .post(format!("http://{}/", proxy.outbound()))
                    .body(payload.clone()),
            )
            .await;
            assert_eq!(
                (status, body),
                (StatusCode::OK, payload),
                "nothing reached the dead endpoint, so a retry is safe"
            );
        }
    })
    .await;
}
