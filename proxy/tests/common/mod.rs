//! Test peers for the proxy's end-to-end tests: real hyper upstream servers on loopback, the real
//! proxy built from a TOML string, and real HTTP clients. Everything is bounded in time.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of this module

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use meshscope_proxy::{BoundAddresses, Proxy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Longest any single test may run.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Body type of the test servers.
pub type TestBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What a test server does with a request; `hit` counts from 0 per server.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, usize) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// Runs `test`, failing it if it takes longer than [`TEST_LIMIT`].
pub async fn bounded<F: Future>(test: F) -> F::Output {
    match tokio::time::timeout(TEST_LIMIT, test).await {
        Ok(output) => output,
        Err(_) => panic!("test did not finish within {TEST_LIMIT:?}"),
    }
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with `status` and `text`.
pub fn reply(status: StatusCode, text: impl Into<Bytes>) -> Response<TestBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
}

/// An upstream HTTP/1.1 + HTTP/2 server on an ephemeral loopback port.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it has received.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections it has accepted.
    pub connections: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl TestServer {
    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Starts a server running `handler`.
pub async fn serve(handler: Handler) -> TestServer {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("cannot bind a test server: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("no local address: {e}"),
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = oneshot::channel::<()>();
    let (task_hits, task_connections) = (Arc::clone(&hits), Arc::clone(&connections));
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            task_connections.fetch_add(1, Ordering::SeqCst);
            let (handler, hits) = (Arc::clone(&handler), Arc::clone(&task_hits));
            let service = service_fn(move |request| {
                let hit = hits.fetch_add(1, Ordering::SeqCst);
                let response = handler(request, hit);
                async move { Ok::<_, Infallible>(response.await) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestServer {
        addr,
        hits,
        connections,
        _stop: stop,
    }
}

/// A server answering 200 with its `name` as the body, and echoing request facts in headers:
/// `x-upstream` (its name), `x-version`, and every request header as `x-echo-<name>`.
pub async fn named(name: &'static str) -> TestServer {
    serve(Arc::new(move |request: Request<Incoming>, _| {
        Box::pin(async move {
            let mut response = reply(StatusCode::OK, name);
            let headers = response.headers_mut();
            headers.insert("x-upstream", http::HeaderValue::from_static(name));
            let version = format!("{:?}", request.version());
            if let Ok(value) = http::HeaderValue::try_from(version) {
                headers.insert("x-version", value);
            }
            for (header, value) in request.headers() {
                if let Ok(echo) = http::HeaderName::try_from(format!("x-echo-{header}")) {
                    headers.append(echo, value.clone());
                }
            }
            response
        })
    }))
    .await
}

/// A server that waits `delay` and then answers 200 with `name`.
pub async fn slow(name: &'static str, delay: Duration) -> TestServer {
    serve(Arc::new(move |_, _| {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            reply(StatusCode::OK, name)
        })
    }))
    .await
}

/// A server answering `status` to every request.
pub async fn failing(status: StatusCode) -> TestServer {
    serve(Arc::new(move |_, _| {
        Box::pin(async move { reply(status, "failing on purpose") })
    }))
    .await
}

/// A loopback address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("cannot bind: {e}"),
    };
    match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("no local address: {e}"),
    }
}

/// A proxy running in this process; dropping it stops it.
pub struct RunningProxy {
    /// Its bound listener addresses.
    pub addresses: BoundAddresses,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    /// The first outbound listener.
    pub fn outbound(&self) -> SocketAddr {
        match self.addresses.outbound.first() {
            Some(addr) => *addr,
            None => panic!("the test proxy has no outbound listener"),
        }
    }

    /// The inbound listener.
    pub fn inbound(&self) -> SocketAddr {
        match self.addresses.inbound {
            Some(addr) => addr,
            None => panic!("the test proxy has no inbound listener"),
        }
    }

    /// Asks it to shut down and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Parses `config` (which must be valid) and runs the proxy it describes.
pub async fn proxy(config: &str) -> RunningProxy {
    let config = match meshscope_proxy::config::parse(config, "test.toml") {
        Ok(config) => config,
        Err(e) => panic!("test config rejected:\n{e}"),
    };
    let proxy = match Proxy::bind(&config).await {
        Ok(proxy) => proxy,
        Err(e) => panic!("proxy did not start: {e}"),
    };
    let addresses = proxy.addresses().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));
    RunningProxy {
        addresses,
        stop: Some(stop),
        task,
    }
}

/// An HTTP/1.1 client that never uses a system proxy.
pub fn client() -> reqwest::Client {
    match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
    {
        Ok(client) => client,
        Err(e) => panic!("cannot build a client: {e}"),
    }
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2_client() -> reqwest::Client {
    match reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
    {
        Ok(client) => client,
        Err(e) => panic!("cannot build a client: {e}"),
    }
}

/// GETs `url` and returns status, the `x-upstream` header (or the proxy's error kind) and the body.
pub async fn get(client: &reqwest::Client, url: &str) -> (StatusCode, String, String) {
    send(client.get(url)).await
}

/// Sends `request` and returns status, the `x-upstream` header (or `x-meshscope-error`) and the body.
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, String, String) {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let who = header("x-upstream")
        .or_else(|| header("x-meshscope-error"))
        .unwrap_or_default();
    let body = match response.text().await {
        Ok(body) => body,
        Err(e) => panic!("reading the body failed: {e}"),
    };
    (status, who, body)
}
