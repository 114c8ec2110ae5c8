//! Hot reload: a rewritten configuration file takes effect under load, without dropping a request;
//! an invalid file is refused and the running configuration keeps serving.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{bounded, client, get, named, slow};
use http::StatusCode;
use meshscope_proxy::{Proxy, ProxyError};

/// A configuration sending `/slow` to upstream `s` and everything else to `target`.
fn config(target: &str, addresses: &[(&str, std::net::SocketAddr)], listen: &str) -> String {
    let upstreams: String = addresses
        .iter()
        .map(|(name, addr)| {
            format!("\n[[upstream]]\nname = \"{name}\"\nendpoints = [{{ address = \"{addr}\" }}]\n")
        })
        .collect();
    format!(
        r#"
[service]
name = "web"

[[outbound]]
listen = "{listen}"

[[outbound.route]]
name = "slow"
match = {{ path_prefix = "/slow" }}
upstream = "s"

[[outbound.route]]
name = "main"
upstream = "{target}"
{upstreams}"#
    )
}

/// Replaces `path` atomically, as editors and config management tools do.
fn write(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, path)) {
        panic!("cannot write {}: {e}", path.display());
    }
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshscope-proxy-reload-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir.join(name)
}

/// Polls until `url` is answered by `who`, for at most five seconds.
async fn wait_for(url: &str, who: &str) {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if get(&http, url).await.1 == who {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never reached {who}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn file_changes_apply_under_load_and_bad_files_are_refused() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let s = slow("s", Duration::from_millis(600)).await;
        let all = [("a", a.addr), ("b", b.addr), ("c", c.addr), ("s", s.addr)];
        let path = temp_path("proxy.toml");
        let first = config("a", &all, "127.0.0.1:0");
        write(&path, &first);

        let parsed = match meshscope_proxy::config::parse(&first, "proxy.toml") {
            Ok(parsed) => parsed,
            Err(e) => panic!("{e}"),
        };
        let proxy = match Proxy::bind(&parsed).await {
            Ok(proxy) => proxy,
            Err(e) => panic!("{e}"),
        };
        let Some(outbound) = proxy.addresses().outbound.first().copied() else {
            panic!("no outbound listener");
        };
        let base = format!("http://{outbound}");
        let handle = proxy.reload_handle();
        tokio::spawn(
            handle
                .clone()
                .watch_file(path.clone(), first, Duration::from_millis(50)),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(proxy.serve(async move {
            let _ = stopped.await;
        }));

        // Steady load for the whole test; every answer must be a 200 from some upstream.
        let (running, sent, failed) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let load = {
            let (running, sent, failed, url) = (
                running.clone(),
                sent.clone(),
                failed.clone(),
                format!("{base}/"),
            );
            tokio::spawn(async move {
                let http = client();
                while running.load(Ordering::SeqCst) {
                    if get(&http, &url).await.0 != StatusCode::OK {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let slow_url = format!("{base}/slow");
        let in_flight = tokio::spawn(async move { get(&client(), &slow_url).await });
        while s.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        write(&path, &config("b", &all, "127.0.0.1:0"));
        wait_for(&format!("{base}/"), "b").await;
        match in_flight.await {
            Ok((status, _, body)) => assert_eq!((status, body.as_str()), (StatusCode::OK, "s")),
            Err(e) => panic!("the request in flight during the reload failed: {e}"),
        }

        // An invalid file is refused; the running configuration keeps serving.
        write(&path, &config("nowhere", &all, "127.0.0.1:0"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(&client(), &format!("{base}/")).await.1, "b");

        // So is one that moves a listener; then a good file applies again.
        write(&path, &config("c", &all, "127.0.0.1:1"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(&client(), &format!("{base}/")).await.1, "b");
        write(&path, &config("c", &all, "127.0.0.1:0"));
        wait_for(&format!("{base}/"), "c").await;

        running.store(false, Ordering::SeqCst);
        if let Err(e) = load.await {
            panic!("load task failed: {e}");
        }
        assert!(
            sent.load(Ordering::SeqCst) > 20,
            "too little load to mean anything"
        );
        assert_eq!(
            failed.load(Ordering::SeqCst),
            0,
            "requests failed during reloads"
        );

        let moved =
            match meshscope_proxy::config::parse(&config("c", &all, "127.0.0.1:1"), "x.toml") {
                Ok(moved) => moved,
                Err(e) => panic!("{e}"),
            };
        assert!(matches!(
            handle.reload(&moved),
            Err(ProxyError::ListenersChanged { .. })
        ));
        let _ = stop.send(());
        let _ = serving.await;
    })
    .await;
}
