//! The ten endpoints of the service under test: small HTTP/1.1 servers in this process, each with a
//! switchable misbehaviour and a log of every request it received (when, from which client, on which
//! path), from which the harness counts retry amplification and sees when callers stopped coming.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How an endpoint misbehaves once the fault is switched on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    /// Answers normally.
    None,
    /// Answers every request `503`.
    Unavailable,
    /// Answers this share of requests `500` (an application error, not retried by a gateway-error
    /// retry policy).
    Errors(f64),
    /// Adds this much latency to every request.
    Slow(Duration),
    /// Answers `503` on this path only.
    FailsPath(&'static str),
}

/// One request as the endpoint saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Since the start of the run.
    pub(crate) at: Duration,
    /// The `x-eval-client` header: which client proxy sent it.
    pub(crate) client: u16,
}

/// State shared between an endpoint's connections and the harness.
struct Shared {
    fault: Fault,
    run_start: Instant,
    received: Vec<Received>,
    rng: fastrand::Rng,
}

/// Handle on one running endpoint.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// Where it listens.
    pub(crate) address: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Endpoint {
    /// Binds `address` and serves until the process ends; `seed` drives its random errors.
    pub(crate) async fn start(address: SocketAddr, seed: u64) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(address).await?;
        let shared = Arc::new(Mutex::new(Shared {
            fault: Fault::None,
            run_start: Instant::now(),
            received: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
        }));
        let endpoint = Endpoint {
            address: listener.local_addr()?,
            shared: shared.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(shared.clone(), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(endpoint)
    }

    /// Forgets what it received and behaves normally, for a new run starting at `run_start`.
    pub(crate) fn reset(&self, run_start: Instant) {
        let mut shared = self.lock();
        shared.fault = Fault::None;
        shared.run_start = run_start;
        shared.received.clear();
    }

    /// Switches its behaviour.
    pub(crate) fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// Every request received since the last reset.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Typical work of a healthy endpoint: 1–3 ms.
fn work(rng: &mut fastrand::Rng) -> Duration {
    Duration::from_micros(rng.u64(1_000..3_000))
}

async fn answer(
    shared: Arc<Mutex<Shared>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let client = request
        .headers()
        .get("x-eval-client")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u16::MAX);
    let (status, wait) = {
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        let at = shared.run_start.elapsed();
        shared.received.push(Received { at, client });
        let wait = work(&mut shared.rng);
        let fault = shared.fault;
        match fault {
            Fault::None => (StatusCode::OK, wait),
            Fault::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, wait),
            Fault::Errors(share) if shared.rng.f64() < share => {
                (StatusCode::INTERNAL_SERVER_ERROR, wait)
            }
            Fault::Errors(_) => (StatusCode::OK, wait),
            Fault::Slow(extra) => (StatusCode::OK, wait + extra),
            Fault::FailsPath(path) if request.uri().path() == path => {
                (StatusCode::SERVICE_UNAVAILABLE, wait)
            }
            Fault::FailsPath(_) => (StatusCode::OK, wait),
        }
    };
    tokio::time::sleep(wait).await;
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    *response.status_mut() = status;
    Ok(response)
}
