//! Starting and stopping: the standalone binary, config errors, and draining on shutdown.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, bounded, client, closed_port, get, named, proxy, slow};
use http::StatusCode;

/// A child process killed if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh file under the system temp dir holding `text`.
fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meshscope-proxy-test-{}-{name}",
        std::process::id()
    ));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
    path
}

/// The standalone binary, with one worker thread, in front of a test app: `service` is the body of
/// its `[service]` table (`name` included), written to the file `file`. Returns once a request
/// through it has reached the app, with the app (to keep it serving), the proxy's address and the
/// process.
async fn serving_binary(file: &str, service: &str) -> (TestServer, SocketAddr, KillOnDrop) {
    let app = named("app").await;
    let listen = closed_port().await;
    let config = temp_config(
        file,
        &format!(
            "[service]\n{service}\n\n[inbound]\nlisten = \"{listen}\"\napp = \"{}\"\n",
            app.addr
        ),
    );
    let child = match Command::new(env!("CARGO_BIN_EXE_meshscope-proxy"))
        .arg("--config")
        .arg(&config)
        .env("TOKIO_WORKER_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot start the binary: {e}"),
    };
    let child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the binary never listened on {listen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answers_from_the_app(listen).await;
    (app, listen, child)
}

/// Asserts that a request through the proxy on `listen` is answered by the app.
async fn answers_from_the_app(listen: SocketAddr) {
    let (status, who, _) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "app"));
}

/// CPU time (user + system) the process has used over `wall` of doing nothing asked of it.
async fn idle_cpu(child: &KillOnDrop, wall: Duration) -> Duration {
    let used = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.0.id()))
            .unwrap_or_else(|e| panic!("cannot read the proxy's /proc stat: {e}"));
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let after = &stat[stat
            .rfind(')')
            .expect("a /proc stat line has a command name")
            + 2..];
        let fields: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|field| field.parse().expect("utime and stime are numbers"))
            .collect();
        fields.iter().sum::<u64>()
    };
    let before = used();
    tokio::time::sleep(wall).await;
    // In clock ticks of USER_HZ, which is 100 on x86-64 and aarch64.
    Duration::from_millis((used() - before) * 10)
}

/// Sends SIGTERM and waits for a successful exit.
async fn stop_with_sigterm(mut child: KillOnDrop) {
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        match child.0.try_wait() {
            Ok(Some(exit)) => break exit,
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("the binary did not exit after SIGTERM: {other:?}"),
        }
    };
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn binary_serves_and_exits_cleanly_on_sigterm() {
    bounded(async {
        let (_app, _, child) = serving_binary("proxy.toml", "name = \"svc\"").await;
        // Idle, the worker sleeps in the poller.
        let cpu = idle_cpu(&child, Duration::from_secs(1)).await;
        assert!(
            cpu <= Duration::from_millis(150),
            "idle, the proxy used {cpu:?} of CPU in 1 s"
        );
        stop_with_sigterm(child).await;
    })
    .await;
}

#[tokio::test]
async fn busy_polling_keeps_the_worker_awake_and_still_exits_on_sigterm() {
    bounded(async {
        let (_app, listen, child) =
            serving_binary("busy.toml", "name = \"svc\"\nbusy_poll = true").await;
        // With nothing to do, the worker keeps polling. A whole core when the machine is free; the
        // bound leaves room for the other tests running beside this one.
        let cpu = idle_cpu(&child, Duration::from_secs(1)).await;
        assert!(
            cpu >= Duration::from_millis(300),
            "busy polling, the proxy used only {cpu:?} of CPU in 1 s"
        );
        answers_from_the_app(listen).await;
        stop_with_sigterm(child).await;
    })
    .await;
}

#[tokio::test]
async fn binary_rejects_a_bad_config_with_file_and_line() {
    bounded(async {
        let text = "[service]\nname = \"svc\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\n\n[[outbound.route]]\nname = \"r\"\nupstream = \"nowhere\"\n";
        let config = temp_config("bad.toml", text);
        let output = match Command::new(env!("CARGO_BIN_EXE_meshscope-proxy")).arg("--config").arg(&config).output() {
            Ok(output) => output,
            Err(e) => panic!("cannot run the binary: {e}"),
        };
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!("{}:9: outbound[0].route[0].upstream: no [[upstream]] is named \"nowhere\"", config.display());
        assert!(stderr.contains(&expected), "stderr was:\n{stderr}");
    })
    .await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    bounded(async {
        let app = slow("app", Duration::from_millis(400)).await;
        let proxy = proxy(&format!(
            "[service]\nname = \"svc\"\ndrain_timeout = \"5s\"\n\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\n",
            app.addr
        ))
        .await;
        let address = proxy.inbound();
        let in_flight = tokio::spawn(async move { get(&client(), &format!("http://{address}/")).await });
        while app.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        proxy.stop().await;
        match in_flight.await {
            Ok((status, _, body)) => assert_eq!((status, body.as_str()), (StatusCode::OK, "app")),
            Err(e) => panic!("the in-flight request failed: {e}"),
        }
        assert!(tokio::net::TcpStream::connect(address).await.is_err(), "the listener is closed after shutdown");
    })
    .await;
}
