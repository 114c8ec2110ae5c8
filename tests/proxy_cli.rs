//! `meshscope proxy`: the subcommand runs the same sidecar as the `meshscope-proxy` binary. A real HTTP
//! client goes through it to a real upstream socket; a broken file is refused with its file and line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An HTTP/1.1 upstream on an ephemeral loopback port that answers every request with `hello`.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let address = listener.local_addr().expect("upstream address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                );
            });
        }
    });
    address
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshscope-proxy-cli-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default()
    )
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn proxy_subcommand_forwards_to_the_local_app() {
    let app = upstream();
    let port = free_port();
    let config = write_config(
        "proxy.toml",
        &format!(
            "[service]\nname = \"shop\"\n\n[inbound]\nlisten = \"127.0.0.1:{port}\"\napp = \"{app}\"\n"
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_meshscope"))
        .args(["proxy", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meshscope proxy");
    let _proxy = Running(child);

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        match client
            .get(format!("http://127.0.0.1:{port}/anything"))
            .send()
            .await
        {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                break response.text().await.expect("body");
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "proxy never answered: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(body, "hello");
}

#[test]
fn proxy_subcommand_refuses_a_broken_file_with_its_line() {
    let config = write_config(
        "broken.toml",
        "[service]\nname = \"shop\"\n\n[inbound]\nlisten = \"127.0.0.1:1\"\napp = 42\n",
    );
    let output = Command::new(env!("CARGO_BIN_EXE_meshscope"))
        .args(["proxy", "--config"])
        .arg(&config)
        .output()
        .expect("run meshscope proxy");
    assert!(!output.status.success(), "a broken file must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.toml") && stderr.contains(":6"),
        "the error names the file and line 6: {stderr}"
    );
}
