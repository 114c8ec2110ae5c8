//! HTTP/1.1 keep-alive and chunked bodies, HTTP/2 prior knowledge, full-duplex streaming and
//! trailers, through a running proxy.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{TestBody, bounded, client, get, h2_client, named, proxy, serve};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A proxy whose inbound listener forwards to `app` with `protocol`.
async fn inbound_to(app: SocketAddr, protocol: &str) -> common::RunningProxy {
    proxy(&format!(
        "[service]\nname = \"svc\"\n\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nprotocol = \"{protocol}\"\n"
    ))
    .await
}

/// An upstream that streams each request body straight back, frame by frame, as it arrives.
async fn echo() -> common::TestServer {
    serve(Arc::new(|request: Request<hyper::body::Incoming>, _| {
        Box::pin(async move {
            let body: TestBody = request.into_body().map_err(Into::into).boxed_unsync();
            Response::new(body)
        })
    }))
    .await
}

/// One frame of a test request body.
type FrameResult = Result<Frame<Bytes>, Infallible>;

/// A streaming request body fed through the returned sender.
fn channel_body() -> (
    mpsc::Sender<FrameResult>,
    StreamBody<ReceiverStream<FrameResult>>,
) {
    let (tx, rx) = mpsc::channel(4);
    (tx, StreamBody::new(ReceiverStream::new(rx)))
}

async fn next_data<B>(body: &mut B) -> Bytes
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    loop {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return data,
                _ => continue,
            },
            other => panic!("expected a data frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn http2_prior_knowledge_end_to_end_and_to_http1() {
    bounded(async {
        let app = named("app").await;
        let auto = inbound_to(app.addr, "auto").await;
        let response = match h2_client()
            .get(format!("http://{}/", auto.inbound()))
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => panic!("h2 request failed: {e}"),
        };
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(
            response.headers()["x-version"],
            "HTTP/2.0",
            "auto keeps the downstream version"
        );

        let downgrade = inbound_to(app.addr, "http1").await;
        let response = match h2_client()
            .get(format!("http://{}/", downgrade.inbound()))
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => panic!("h2 request failed: {e}"),
        };
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.headers()["x-version"], "HTTP/1.1");
        let host = downgrade.inbound().to_string();
        assert_eq!(
            response.headers()["x-echo-host"],
            host.as_str(),
            "the :authority becomes Host"
        );

        let upgrade = inbound_to(app.addr, "http2").await;
        let (status, _, _) = get(&client(), &format!("http://{}/", upgrade.inbound())).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn http1_keep_alive_reuses_pooled_upstream_connections() {
    bounded(async {
        let app = named("app").await;
        let proxy = inbound_to(app.addr, "auto").await;
        let http = client();
        for _ in 0..20 {
            assert_eq!(
                get(&http, &format!("http://{}/", proxy.inbound())).await.0,
                StatusCode::OK
            );
        }
        assert_eq!(app.hits(), 20);
        assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn http1_chunked_bodies_stream_both_ways() {
    bounded(async {
        let app = echo().await;
        let proxy = inbound_to(app.addr, "auto").await;
        let stream = match TcpStream::connect(proxy.inbound()).await {
            Ok(stream) => stream,
            Err(e) => panic!("connect failed: {e}"),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(e) => panic!("handshake failed: {e}"),
            };
        tokio::spawn(connection);
        let (tx, body) = channel_body();
        let request = match Request::post("/echo").header("host", "svc").body(body) {
            Ok(request) => request,
            Err(e) => panic!("bad request: {e}"),
        };
        let feeder = tokio::spawn(async move {
            for chunk in ["alpha ", "beta ", "gamma"] {
                let _ = tx.send(Ok(Frame::data(Bytes::from(chunk)))).await;
            }
        });
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        assert_eq!(
            response.headers().get("transfer-encoding"),
            Some(&HeaderValue::from_static("chunked"))
        );
        let body = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => panic!("body failed: {e}"),
        };
        assert_eq!(body, "alpha beta gamma");
        let _ = feeder.await;
    })
    .await;
}

#[tokio::test]
async fn http2_streams_full_duplex_and_passes_trailers() {
    bounded(async {
        let app = echo().await;
        let proxy = inbound_to(app.addr, "auto").await;
        let stream = match TcpStream::connect(proxy.inbound()).await {
            Ok(stream) => stream,
            Err(e) => panic!("connect failed: {e}"),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
            {
                Ok(pair) => pair,
                Err(e) => panic!("handshake failed: {e}"),
            };
        tokio::spawn(connection);
        let (tx, body) = channel_body();
        let request = match Request::post(format!("http://{}/echo", proxy.inbound())).body(body) {
            Ok(request) => request,
            Err(e) => panic!("bad request: {e}"),
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        let mut body = response.into_body();
        // Each message comes back before the next is sent: nothing on the path buffers the stream.
        for message in ["ping 1", "ping 2", "ping 3"] {
            if tx
                .send(Ok(Frame::data(Bytes::from(message))))
                .await
                .is_err()
            {
                panic!("request stream closed early");
            }
            assert_eq!(next_data(&mut body).await, message);
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        if tx
            .send(Ok(Frame::trailers(trailers.clone())))
            .await
            .is_err()
        {
            panic!("request stream closed early");
        }
        drop(tx);
        let rest = match body.collect().await {
            Ok(rest) => rest,
            Err(e) => panic!("body failed: {e}"),
        };
        assert_eq!(
            rest.trailers(),
            Some(&trailers),
            "request trailers reach the app and its trailers come back"
        );
    })
    .await;
}

/// An upstream that accepts `Upgrade: echo` with 101 and then echoes raw bytes on the connection.
async fn upgrade_echo() -> common::TestServer {
    serve(Arc::new(
        |mut request: Request<hyper::body::Incoming>, _| {
            Box::pin(async move {
                if request.headers().get("upgrade").is_none_or(|p| p != "echo") {
                    return common::reply(StatusCode::BAD_REQUEST, "upgrade to echo only");
                }
                let upgraded = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let Ok(upgraded) = upgraded.await else { return };
                    let mut io = TokioIo::new(upgraded);
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buffer).await {
                        if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut response = common::reply(StatusCode::SWITCHING_PROTOCOLS, "");
                response
                    .headers_mut()
                    .insert("connection", HeaderValue::from_static("upgrade"));
                response
                    .headers_mut()
                    .insert("upgrade", HeaderValue::from_static("echo"));
                response
            })
        },
    ))
    .await
}

#[tokio::test]
async fn http1_upgrade_is_tunnelled_both_ways() {
    bounded(async {
        let app = upgrade_echo().await;
        let proxy = inbound_to(app.addr, "auto").await;
        let mut stream = match TcpStream::connect(proxy.inbound()).await {
            Ok(stream) => stream,
            Err(e) => panic!("connect failed: {e}"),
        };
        let handshake =
            "GET /chat HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
        if let Err(e) = stream.write_all(handshake.as_bytes()).await {
            panic!("write failed: {e}");
        }
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                other => panic!("connection ended during the handshake: {other:?}"),
            }
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo"), "{head}");

        for message in ["hello", "through the tunnel"] {
            if let Err(e) = stream.write_all(message.as_bytes()).await {
                panic!("write failed: {e}");
            }
            let mut echoed = vec![0u8; message.len()];
            if let Err(e) = stream.read_exact(&mut echoed).await {
                panic!("read failed: {e}");
            }
            assert_eq!(echoed, message.as_bytes());
        }
    })
    .await;
}

/// Runs curl with `args` and returns what it printed (headers with `-i`, then bodies).
async fn curl(args: Vec<String>) -> String {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10", "--noproxy", "*"])
            .args(&args)
            .output()
    })
    .await;
    match output {
        Ok(Ok(output)) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Ok(Ok(output)) => panic!("curl failed: {}", String::from_utf8_lossy(&output.stderr)),
        Ok(Err(e)) => panic!("cannot run curl: {e}"),
        Err(e) => panic!("curl task failed: {e}"),
    }
}

#[tokio::test]
async fn curl_upgrades_to_h2c_on_both_listeners_and_reuses_the_connection() {
    bounded(async {
        let app = named("app").await;
        let outbound = proxy(&format!(
            "[service]\nname = \"svc\"\n\n[[outbound]]\nlisten = \"127.0.0.1:0\"\nroute = [{{ name = \"all\", upstream = \"app\" }}]\n\n[[upstream]]\nname = \"app\"\nendpoints = [{{ address = \"{}\" }}]\n",
            app.addr
        ))
        .await;
        let inbound = inbound_to(app.addr, "auto").await;
        for listener in [outbound.outbound(), inbound.inbound()] {
            // Two URLs: the first asks for the upgrade, the second rides the HTTP/2 connection.
            let printed = curl(vec![
                "--http2".to_owned(),
                "-H".to_owned(),
                "x-probe: upgraded".to_owned(),
                format!("http://{listener}/one?x=1"),
                format!("http://{listener}/two"),
            ])
            .await;
            assert!(printed.contains("HTTP/1.1 101"), "no switch:\n{printed}");
            assert_eq!(printed.matches("HTTP/2 200").count(), 2, "{printed}");
            assert_eq!(printed.matches("x-version: HTTP/2.0").count(), 2, "the app got HTTP/2:\n{printed}");
            assert_eq!(printed.matches("x-echo-x-probe: upgraded").count(), 2, "{printed}");
            assert!(!printed.contains("x-echo-http2-settings"), "HTTP/1.1-only headers are not forwarded:\n{printed}");
        }
        assert_eq!(app.hits(), 4);
    })
    .await;
}

#[tokio::test]
async fn an_h2c_upgrade_with_a_body_is_served_as_http1() {
    bounded(async {
        let app = named("app").await;
        let inbound = inbound_to(app.addr, "auto").await;
        let printed = curl(vec![
            "--http2".to_owned(),
            "--data".to_owned(),
            "payload".to_owned(),
            format!("http://{}/", inbound.inbound()),
        ])
        .await;
        assert!(!printed.contains("101"), "{printed}");
        assert!(printed.starts_with("HTTP/1.1 200"), "{printed}");
        assert!(printed.contains("x-version: HTTP/1.1"), "{printed}");
        assert!(!printed.contains("x-echo-upgrade"), "{printed}");
    })
    .await;
}
