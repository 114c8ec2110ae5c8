//! Plain TCP forwarding through a running proxy: balancing, connect-failure fallback, shutdown.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{bounded, closed_port, proxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A TCP server that greets each connection with `name` and a newline, then echoes bytes.
async fn greeter(name: &'static str) -> SocketAddr {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("cannot bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("no address: {e}"),
    };
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if stream
                    .write_all(format!("{name}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn config(endpoints: &[SocketAddr], drain: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[service]\nname = \"db-client\"\ndrain_timeout = \"{drain}\"\n\n[[tcp]]\nlisten = \"127.0.0.1:0\"\nupstream = \"db\"\n\n\
         [[upstream]]\nname = \"db\"\nbalancer = \"round_robin\"\nconnect_timeout = \"500ms\"\nendpoints = [{}]\n",
        endpoints.join(", ")
    )
}

/// Connects through the proxy and returns the greeting line and the connection.
async fn connect(address: SocketAddr) -> (String, BufReader<TcpStream>) {
    let stream = match TcpStream::connect(address).await {
        Ok(stream) => stream,
        Err(e) => panic!("connect failed: {e}"),
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if let Err(e) = reader.read_line(&mut line).await {
        panic!("no greeting: {e}");
    }
    (line.trim().to_owned(), reader)
}

#[tokio::test]
async fn tcp_connections_are_balanced_and_echoed_past_a_dead_endpoint() {
    bounded(async {
        let (dead, one, two) = (
            closed_port().await,
            greeter("one").await,
            greeter("two").await,
        );
        let proxy = proxy(&config(&[dead, one, two], "1s")).await;
        let Some(address) = proxy.addresses.tcp.first().copied() else {
            panic!("no tcp listener")
        };
        let mut seen = Vec::new();
        for i in 0..6 {
            let (greeting, mut connection) = connect(address).await;
            let message = format!("message {i}\n");
            if let Err(e) = connection.get_mut().write_all(message.as_bytes()).await {
                panic!("write failed: {e}");
            }
            let mut echoed = String::new();
            if let Err(e) = connection.read_line(&mut echoed).await {
                panic!("no echo: {e}");
            }
            assert_eq!(echoed, message);
            seen.push(greeting);
        }
        assert!(
            seen.iter().any(|g| g == "one") && seen.iter().any(|g| g == "two"),
            "{seen:?}"
        );
        assert!(seen.iter().all(|g| g == "one" || g == "two"), "{seen:?}");
    })
    .await;
}

#[tokio::test]
async fn tcp_connection_is_closed_when_no_endpoint_answers() {
    bounded(async {
        let proxy = proxy(&config(&[closed_port().await], "1s")).await;
        let Some(address) = proxy.addresses.tcp.first().copied() else {
            panic!("no tcp listener")
        };
        let mut stream = match TcpStream::connect(address).await {
            Ok(stream) => stream,
            Err(e) => panic!("connect failed: {e}"),
        };
        let mut buffer = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            other => panic!("expected the proxy to close the connection, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_after_the_drain_timeout() {
    bounded(async {
        let one = greeter("one").await;
        let proxy = proxy(&config(&[one], "200ms")).await;
        let Some(address) = proxy.addresses.tcp.first().copied() else {
            panic!("no tcp listener")
        };
        let (greeting, mut connection) = connect(address).await;
        assert_eq!(greeting, "one");
        let started = std::time::Instant::now();
        proxy.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "stop waited {:?}",
            started.elapsed()
        );
        let mut rest = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), connection.read_to_end(&mut rest)).await
        {
            Ok(_) => {}
            Err(_) => panic!("the tunnel stayed open after shutdown"),
        }
    })
    .await;
}
