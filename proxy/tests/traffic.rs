//! Traffic control through a running proxy: rate limits, fault injection, header rewrites, mirroring.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, client, get, named, proxy, reply, send, serve};
use http::StatusCode;
use http_body_util::BodyExt;

/// A proxy with one route (with `route_extra` TOML lines) to upstream `main`, plus an upstream
/// `shadow` when given.
async fn route_with(
    main: SocketAddr,
    shadow: Option<SocketAddr>,
    route_extra: &str,
) -> common::RunningProxy {
    let shadow = shadow
        .map(|addr| {
            format!("\n[[upstream]]\nname = \"shadow\"\nendpoints = [{{ address = \"{addr}\" }}]\n")
        })
        .unwrap_or_default();
    proxy(&format!(
        "[service]\nname = \"web\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\n\n[[outbound.route]]\nname = \"all\"\nupstream = \"main\"\n{route_extra}\n\n\
         [[upstream]]\nname = \"main\"\nendpoints = [{{ address = \"{main}\" }}]\n{shadow}"
    ))
    .await
}

#[tokio::test]
async fn a_route_rate_limit_answers_429_with_retry_after() {
    bounded(async {
        let app = named("app").await;
        let proxy = route_with(
            app.addr,
            None,
            "[outbound.route.rate_limit]\nrequests_per_second = 1\nburst = 3",
        )
        .await;
        let http = client();
        let url = format!("http://{}/", proxy.outbound());
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let response = match http.get(&url).send().await {
                Ok(response) => response,
                Err(e) => panic!("request failed: {e}"),
            };
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(response.headers()["retry-after"], "1");
                assert_eq!(response.headers()["x-meshscope-error"], "rate-limited");
            }
            statuses.push(response.status().as_u16());
        }
        assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
        assert_eq!(app.hits(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_per_caller_rate_limit_keeps_callers_apart() {
    bounded(async {
        let app = named("app").await;
        let limit = "[outbound.route.rate_limit]\nrequests_per_second = 0.5\nburst = 1\nper = { header = \"x-api-key\" }";
        let proxy = route_with(app.addr, None, limit).await;
        let http = client();
        let url = format!("http://{}/", proxy.outbound());
        let as_caller = |key: &'static str| http.get(&url).header("x-api-key", key);
        assert_eq!(send(as_caller("alice")).await.0, StatusCode::OK);
        assert_eq!(send(as_caller("alice")).await.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(send(as_caller("bob")).await.0, StatusCode::OK);
        assert_eq!(get(&http, &url).await.0, StatusCode::OK, "no key, no per-caller limit");
    })
    .await;
}

#[tokio::test]
async fn faults_abort_and_delay_by_percentage_and_by_header() {
    bounded(async {
        let app = named("app").await;
        let abort_all =
            route_with(app.addr, None, "[outbound.route.fault]\nabort_status = 503").await;
        let (status, kind, _) = get(&client(), &format!("http://{}/", abort_all.outbound())).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "fault-abort")
        );
        assert_eq!(app.hits(), 0);

        let half = route_with(
            app.addr,
            None,
            "[outbound.route.fault]\nabort_status = 500\nabort_percent = 50",
        )
        .await;
        let http = client();
        let mut aborted = 0;
        for _ in 0..400 {
            if get(&http, &format!("http://{}/", half.outbound())).await.0
                == StatusCode::INTERNAL_SERVER_ERROR
            {
                aborted += 1;
            }
        }
        // Binomial(400, 0.5): sd = 10; allow five standard deviations.
        assert!((150..=250).contains(&aborted), "{aborted} of 400 aborted");

        let by_header = route_with(
            app.addr,
            None,
            "[outbound.route.fault]\nheader_control = true",
        )
        .await;
        let url = format!("http://{}/", by_header.outbound());
        let started = Instant::now();
        let response = match http
            .get(&url)
            .header("x-meshscope-fault-delay", "300ms")
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response
                .headers()
                .get("x-echo-x-meshscope-fault-delay")
                .is_none(),
            "fault headers are not forwarded"
        );
        let (status, _, _) = send(http.get(&url).header("x-meshscope-fault-abort", "418")).await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
    })
    .await;
}

#[tokio::test]
async fn headers_are_rewritten_both_ways() {
    bounded(async {
        let app = named("app").await;
        let rewrite = "[outbound.route.headers.request]\nset = { x-env = \"prod\" }\nadd = { x-tag = \"mesh\" }\nremove = [\"x-secret\"]\n\
                       [outbound.route.headers.response]\nset = { x-served-by = \"meshscope\" }\nremove = [\"x-version\"]";
        let proxy = route_with(app.addr, None, rewrite).await;
        let response = match client()
            .get(format!("http://{}/", proxy.outbound()))
            .header("x-env", "dev")
            .header("x-tag", "app")
            .header("x-secret", "s3cr3t")
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        let headers = response.headers();
        assert_eq!(headers["x-echo-x-env"], "prod");
        let tags: Vec<_> = headers.get_all("x-echo-x-tag").iter().collect();
        assert_eq!(tags, vec!["app", "mesh"]);
        assert!(headers.get("x-echo-x-secret").is_none());
        assert_eq!(headers["x-served-by"], "meshscope");
        assert!(headers.get("x-version").is_none());
    })
    .await;
}

#[tokio::test]
async fn mirrored_requests_reach_the_shadow_and_its_answers_are_dropped() {
    bounded(async {
        let main = named("main").await;
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let record = Arc::clone(&seen);
        let shadow = serve(Arc::new(
            move |request: http::Request<hyper::body::Incoming>, _| {
                let record = Arc::clone(&record);
                Box::pin(async move {
                    let host = request
                        .headers()
                        .get("host")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = match request.into_body().collect().await {
                        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                        Err(_) => String::new(),
                    };
                    if let Ok(mut seen) = record.lock() {
                        seen.push((host, body));
                    }
                    reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the shadow's answer is never seen",
                    )
                })
            },
        ))
        .await;
        let proxy = route_with(
            main.addr,
            Some(shadow.addr),
            "[outbound.route.mirror]\nupstream = \"shadow\"",
        )
        .await;
        let http = client();
        for i in 0..5 {
            let request = http
                .post(format!("http://{}/orders", proxy.outbound()))
                .header("host", "orders")
                .body(format!("order {i}"));
            let (status, who, _) = send(request).await;
            assert_eq!((status, who.as_str()), (StatusCode::OK, "main"));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while shadow.hits() < 5 {
            assert!(
                Instant::now() < deadline,
                "the shadow got {} of 5 copies",
                shadow.hits()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = match seen.lock() {
            Ok(seen) => seen.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        assert!(
            seen.iter().all(|(host, _)| host == "orders-shadow"),
            "{seen:?}"
        );
        let mut bodies: Vec<&str> = seen.iter().map(|(_, body)| body.as_str()).collect();
        bodies.sort_unstable();
        assert_eq!(
            bodies,
            vec!["order 0", "order 1", "order 2", "order 3", "order 4"]
        );
    })
    .await;
}

#[tokio::test]
async fn the_inbound_listener_has_rate_limits_and_rewrites_too() {
    bounded(async {
        let app = named("app").await;
        let proxy = proxy(&format!(
            "[service]\nname = \"ratings\"\n\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\n\n\
             [inbound.rate_limit]\nrequests_per_second = 0.5\nburst = 1\nper = {{ header = \"x-caller\" }}\n\n\
             [inbound.headers.response]\nset = {{ x-served-by = \"ratings\" }}\n",
            app.addr
        ))
        .await;
        let http = client();
        let url = format!("http://{}/", proxy.inbound());
        let from = |caller: &'static str| http.get(&url).header("x-caller", caller);
        let response = match from("reviews").send().await {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-served-by"], "ratings");
        assert_eq!(send(from("reviews")).await.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(send(from("productpage")).await.0, StatusCode::OK);
    })
    .await;
}
