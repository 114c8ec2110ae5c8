//! Active health checks: every endpoint of an upstream with `[upstream.health_check]` gets a `GET`
//! on the configured path at each interval; 2xx within the timeout is a pass. Results go to the
//! endpoint's `Health`, which the balancer consults (with the panic threshold, as for ejections).
//!
//! One task checks every upstream that is due, all endpoints of an upstream at once. The same task
//! closes the success-rate windows of outlier detection (`outlier.rs`), which also need a clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{Method, Request, Uri};
use tokio::sync::watch;

use crate::balance::Endpoint;
use crate::body;
use crate::config::HealthCheckConfig;
use crate::reload::Live;
use crate::upstream::{HttpClient, Upstream};

/// How often the task looks for upstreams that are due.
const TICK: Duration = Duration::from_millis(100);

/// A compiled `[upstream.health_check]` table and when it is next due.
#[derive(Debug)]
pub(crate) struct HealthCheck {
    path: PathAndQuery,
    interval: Duration,
    timeout: Duration,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
    next: Mutex<Instant>,
}

impl HealthCheck {
    /// The check for a validated table, due at once; `None` if the path does not parse (which
    /// validation has ruled out).
    pub(crate) fn from_config(config: &HealthCheckConfig) -> Option<Self> {
        Some(Self {
            path: PathAndQuery::try_from(config.path.as_str()).ok()?,
            interval: config.interval.0,
            timeout: config.timeout.0,
            unhealthy_threshold: config.unhealthy_threshold,
            healthy_threshold: config.healthy_threshold,
            next: Mutex::new(Instant::now()),
        })
    }

    /// Whether a round is due at `now`; if so, the next one is scheduled.
    fn take_due(&self, now: Instant) -> bool {
        let mut next = match self.next.lock() {
            Ok(next) => next,
            Err(poisoned) => poisoned.into_inner(),
        };
        if now < *next {
            return false;
        }
        *next = now.checked_add(self.interval).unwrap_or(now);
        true
    }

    /// Checks every endpoint of `upstream` once, concurrently, and records the results.
    async fn round(&self, upstream: &Upstream) {
        let client = upstream.client(false).0;
        let endpoints = upstream.endpoints();
        let checks = endpoints
            .iter()
            .map(|endpoint| self.check(client, endpoint, upstream.name()));
        futures::future::join_all(checks).await;
    }

    async fn check(&self, client: &HttpClient, endpoint: &Arc<Endpoint>, upstream: &str) {
        let passed = match self.probe(client, endpoint).await {
            Ok(()) => true,
            Err(reason) => {
                tracing::debug!(upstream, endpoint = %endpoint.address(), reason, "health check failed");
                false
            }
        };
        match endpoint.health().record_check(
            passed,
            self.unhealthy_threshold,
            self.healthy_threshold,
        ) {
            Some(true) => {
                tracing::warn!(upstream, endpoint = %endpoint.address(), "endpoint failed its health checks")
            }
            Some(false) => {
                tracing::info!(upstream, endpoint = %endpoint.address(), "endpoint passes its health checks again")
            }
            None => {}
        }
    }

    async fn probe(&self, client: &HttpClient, endpoint: &Endpoint) -> Result<(), String> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(endpoint.address().clone())
            .path_and_query(self.path.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(http::header::USER_AGENT, "meshscope-proxy health check")
            .body(body::text(String::new()))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(self.timeout, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("status {}", response.status())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    }
}

/// Runs health check rounds for every due upstream, and closes success-rate windows of outlier
/// detection, until `stop` is raised.
pub(crate) async fn run(live: Arc<Mutex<Live>>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let upstreams: Vec<Arc<Upstream>> = {
            let live = match live.lock() {
                Ok(live) => live,
                Err(poisoned) => poisoned.into_inner(),
            };
            live.tables()
                .upstreams()
                .into_iter()
                .map(Arc::clone)
                .collect()
        };
        for upstream in &upstreams {
            upstream.evaluate_success_rates();
        }
        let due: Vec<&Arc<Upstream>> = upstreams
            .iter()
            .filter(|upstream| {
                upstream
                    .health_check()
                    .is_some_and(|check| check.take_due(now))
            })
            .collect();
        let rounds = due
            .iter()
            .filter_map(|upstream| Some(upstream.health_check()?.round(upstream)));
        futures::future::join_all(rounds).await;
    }
}
