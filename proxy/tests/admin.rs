//! The admin endpoint: readiness (and draining), Prometheus metrics, the running configuration and
//! endpoint state.

mod common;

use std::time::Duration;

use common::{bounded, client, failing, get, named, proxy, slow};
use http::StatusCode;

async fn admin_get(admin: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    let (status, _, body) = get(&client(), &format!("http://{admin}{path}")).await;
    (status, body)
}

#[tokio::test]
async fn metrics_config_and_endpoints_describe_the_running_proxy() {
    bounded(async {
        let (app, bad) = (named("app").await, failing(StatusCode::BAD_GATEWAY).await);
        let config = format!(
            r#"
[service]
name = "web"

[admin]
listen = "127.0.0.1:0"

[[outbound]]
listen = "127.0.0.1:0"

[[outbound.route]]
name = "all"
upstream = "svc"
match = {{ path_regex = "/(a|b)/.*" }}

[outbound.route.retry]
attempts = 1
backoff_base = "1ms"

[[upstream]]
name = "svc"
balancer = "round_robin"
endpoints = [{{ address = "{}" }}, {{ address = "{}", weight = 2 }}]

[upstream.outlier_detection]
consecutive_gateway_errors = 1
max_ejection_percent = 50
"#,
            app.addr, bad.addr
        );
        let proxy = proxy(&config).await;
        let Some(admin) = proxy.addresses.admin else { panic!("no admin listener") };
        for _ in 0..4 {
            assert_eq!(get(&client(), &format!("http://{}/a/x", proxy.outbound())).await.0, StatusCode::OK);
        }

        assert_eq!(admin_get(admin, "/ready").await, (StatusCode::OK, "ready\n".to_owned()));

        let (status, metrics) = admin_get(admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for line in [
            "meshscope_proxy_requests_total{listener=\"outbound[0]\",route=\"all\",class=\"2xx\"} 4",
            "meshscope_proxy_request_duration_seconds_count{listener=\"outbound[0]\",route=\"all\"} 4",
            "meshscope_proxy_upstream_retries_total{upstream=\"svc\"} 1",
            "meshscope_proxy_upstream_attempts_total{upstream=\"svc\"} 5",
            "meshscope_proxy_upstream_ejections_total{upstream=\"svc\"} 1",
            &format!("meshscope_proxy_endpoint_ejected{{upstream=\"svc\",endpoint=\"{}\"}} 1", bad.addr),
        ] {
            assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
        }

        let (status, endpoints) = admin_get(admin, "/endpoints").await;
        assert_eq!(status, StatusCode::OK);
        let endpoints: serde_json::Value = match serde_json::from_str(&endpoints) {
            Ok(value) => value,
            Err(e) => panic!("not JSON ({e}):\n{endpoints}"),
        };
        let svc = &endpoints["upstreams"][0];
        assert_eq!(svc["name"], "svc");
        assert_eq!(svc["balancer"], "round_robin");
        assert_eq!(svc["endpoints"][1]["address"], bad.addr.to_string());
        assert_eq!(svc["endpoints"][1]["weight"], 2);
        assert_eq!(svc["endpoints"][1]["ejections"], 1);
        assert!(svc["endpoints"][1]["ejected_for_seconds"].as_f64().is_some_and(|s| s > 0.0));
        assert!(svc["endpoints"][0]["ejected_for_seconds"].is_null());

        let (status, running) = admin_get(admin, "/config").await;
        assert_eq!(status, StatusCode::OK);
        let reparsed = match meshscope_proxy::config::parse(&running, "/config") {
            Ok(reparsed) => reparsed,
            Err(e) => panic!("/config does not read back: {e}\n{running}"),
        };
        assert_eq!(reparsed.upstreams[0].endpoints.len(), 2);
        assert!(running.contains("path_regex = \"/(a|b)/.*\""), "{running}");
        assert!(running.contains("panic_threshold = 50"), "defaults are shown: {running}");
    })
    .await;
}

#[tokio::test]
async fn ready_turns_to_503_while_draining() {
    bounded(async {
        let app = slow("app", Duration::from_millis(800)).await;
        let proxy = proxy(&format!(
            "[service]\nname = \"web\"\ndrain_timeout = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\n",
            app.addr
        ))
        .await;
        let Some(admin) = proxy.addresses.admin else { panic!("no admin listener") };
        let inbound = proxy.inbound();
        let in_flight = tokio::spawn(async move { get(&client(), &format!("http://{inbound}/")).await.0 });
        while app.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopping = tokio::spawn(proxy.stop());
        let mut saw_draining = false;
        for _ in 0..50 {
            if admin_get(admin, "/ready").await.0 == StatusCode::SERVICE_UNAVAILABLE {
                saw_draining = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(saw_draining, "/ready never said draining");
        match in_flight.await {
            Ok(status) => assert_eq!(status, StatusCode::OK),
            Err(e) => panic!("in-flight request failed: {e}"),
        }
        if let Err(e) = stopping.await {
            panic!("stop failed: {e}");
        }
        assert!(tokio::net::TcpStream::connect(admin).await.is_err(), "the admin endpoint closes after the drain");
    })
    .await;
}
