//! The callers: one open-loop client per proxy, each sending a low, seeded Poisson stream of requests
//! to its own sidecar, half on `/a` and half on `/b`, and timing each from the moment it was scheduled
//! (a stall counts against every request it delays).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// One request's outcome as its client saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    /// When it was scheduled, since the start of the run.
    pub(crate) at: Duration,
    /// From scheduling to the end of the response body.
    pub(crate) latency: Duration,
    /// A 2xx answer arrived within the client's timeout.
    pub(crate) ok: bool,
}

/// Longest a client waits for an answer; the proxy's route timeout (2 s) normally ends it first.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `rate` requests per second on average to `outbound` (as `Host: svc`, marked with the client's
/// number) from `run_start` for `length`, and returns every outcome.
pub(crate) async fn run_client(
    client: u16,
    outbound: u16,
    rate: f64,
    run_start: Instant,
    length: Duration,
    seed: u64,
) -> Vec<Outcome> {
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut rng = fastrand::Rng::with_seed(seed);
    let (done, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let mut next = exponential(&mut rng, rate);
    while next < length {
        tokio::time::sleep_until((run_start + next).into()).await;
        let path = if rng.bool() { "/a" } else { "/b" };
        let request = hyper::Request::get(format!("http://127.0.0.1:{outbound}{path}"))
            .header("host", "svc")
            .header("x-eval-client", client.to_string())
            .body(Empty::new())
            .expect("a valid request");
        let (http, done, at) = (http.clone(), done.clone(), next);
        tokio::spawn(async move {
            let exchange = async {
                let response = http.request(request).await.ok()?;
                let ok = response.status().is_success();
                response.into_body().collect().await.ok()?;
                Some(ok)
            };
            let ok = matches!(
                tokio::time::timeout(CLIENT_TIMEOUT, exchange).await,
                Ok(Some(true))
            );
            let latency = run_start.elapsed().saturating_sub(at);
            let _ = done.send(Outcome { at, latency, ok });
        });
        next += exponential(&mut rng, rate);
    }
    drop(done);
    let mut all = Vec::new();
    while let Some(outcome) = outcomes.recv().await {
        all.push(outcome);
    }
    all
}

/// A gap between arrivals of a Poisson process of `rate` per second.
fn exponential(rng: &mut fastrand::Rng, rate: f64) -> Duration {
    Duration::from_secs_f64(-(1.0 - rng.f64()).ln() / rate)
}
