//! Endpoint discovery through a running proxy: an endpoints file rewritten while serving, and DNS
//! names re-resolved into addresses.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{bounded, client, get, named, proxy};
use http::StatusCode;
use meshscope_proxy::{Proxy, ProxyError};

fn temp_path(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("meshscope-proxy-discovery-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir.join(name)
}

/// Replaces `path` atomically.
fn write(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, path)) {
        panic!("cannot write {}: {e}", path.display());
    }
}

fn config(upstream: &str) -> String {
    format!(
        "[service]\nname = \"web\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\n\n\
         [[outbound.route]]\nname = \"all\"\nupstream = \"svc\"\n\n[[upstream]]\nname = \"svc\"\nbalancer = \"round_robin\"\n{upstream}\n"
    )
}

/// Polls until `who` answers `url`, for at most five seconds.
async fn wait_for(url: &str, who: &str) {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&http, url).await.1 != who {
        assert!(Instant::now() < deadline, "{url} never reached {who}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn endpoints_follow_the_endpoints_file() {
    bounded(async {
        let (a, b) = (named("a").await, named("b").await);
        let file = temp_path("svc-endpoints.toml");
        write(
            &file,
            &format!("endpoints = [{{ address = \"{}\" }}]\n", a.addr),
        );
        let proxy = proxy(&config(&format!("endpoints_file = \"{}\"", file.display()))).await;
        let url = format!("http://{}/", proxy.outbound());
        assert_eq!(get(&client(), &url).await.1, "a");

        write(
            &file,
            &format!("endpoints = [{{ address = \"{}\" }}]\n", b.addr),
        );
        wait_for(&url, "b").await;
        for _ in 0..10 {
            assert_eq!(get(&client(), &url).await.1, "b", "a left the set");
        }

        // An invalid file is refused and the endpoints stay as they were.
        write(
            &file,
            &format!("endpoints = [{{ address = \"{}\", weight = 0 }}]\n", a.addr),
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(get(&client(), &url).await.1, "b");

        write(
            &file,
            &format!(
                "endpoints = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n",
                a.addr, b.addr
            ),
        );
        wait_for(&url, "a").await;
        let (before_a, before_b) = (a.hits(), b.hits());
        for _ in 0..10 {
            assert_eq!(get(&client(), &url).await.0, StatusCode::OK);
        }
        assert_eq!(
            (a.hits() - before_a, b.hits() - before_b),
            (5, 5),
            "both are balanced over"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_endpoints_file_stops_the_start() {
    bounded(async {
        let missing = temp_path("does-not-exist.toml");
        let text = config(&format!("endpoints_file = \"{}\"", missing.display()));
        let parsed = match meshscope_proxy::config::parse(&text, "test.toml") {
            Ok(parsed) => parsed,
            Err(e) => panic!("{e}"),
        };
        match Proxy::bind(&parsed).await {
            Err(ProxyError::Endpoints { upstream, .. }) => assert_eq!(upstream, "svc"),
            other => panic!("expected an endpoints error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn dns_names_are_resolved_into_addresses() {
    bounded(async {
        let app = named("app").await;
        let port = app.addr.port();
        let proxy = proxy(&config(&format!(
            "dns_refresh = \"1s\"\nendpoints = [{{ address = \"localhost:{port}\" }}]"
        )))
        .await;
        let Some(admin) = proxy.addresses.admin else {
            panic!("no admin listener")
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, _, body) = get(&client(), &format!("http://{admin}/endpoints")).await;
            let endpoints: serde_json::Value = match serde_json::from_str(&body) {
                Ok(value) => value,
                Err(e) => panic!("not JSON ({e}): {body}"),
            };
            let addresses: Vec<String> = endpoints["upstreams"][0]["endpoints"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|e| e["address"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if addresses.contains(&format!("127.0.0.1:{port}")) {
                assert!(
                    addresses.iter().all(|a| !a.starts_with("localhost")),
                    "{addresses:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "localhost was never resolved: {addresses:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
