//! One upstream instance and the live load figures every balancer reads.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::uri::Authority;

use crate::balance::fleet::FleetVerdict;
use crate::outlier::Health;
use crate::pool::Http1Pool;
use crate::telemetry::FixedAttribute;

/// RTT assumed for an endpoint that has not answered yet (Linkerd's default).
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Time constant of the latency average: older samples fade with `exp(-age / DECAY)` (tower's default).
const DECAY: Duration = Duration::from_secs(10);

/// An upstream endpoint with its requests in flight and its latency estimate.
#[derive(Debug)]
pub(crate) struct Endpoint {
    address: Authority,
    weight: u32,
    in_flight: AtomicUsize,
    rtt: Mutex<RttEstimate>,
    health: Health,
    fleet: FleetVerdict,
    /// Idle HTTP/1.1 connections to the endpoint; they close when the endpoint leaves the set.
    connections: Http1Pool,
    /// The endpoint's span attributes, encoded once.
    span_attributes: FixedAttribute,
}

/// Peak-sensitive exponentially weighted moving average of response latency, in nanoseconds.
#[derive(Debug)]
struct RttEstimate {
    nanos: f64,
    updated: Instant,
}

impl RttEstimate {
    /// The estimate decayed towards zero for the time since the last sample, so an endpoint that
    /// stopped getting traffic because it looked slow is tried again eventually.
    fn decayed(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.updated).as_secs_f64();
        self.nanos * (-age / DECAY.as_secs_f64()).exp()
    }

    /// Takes a new sample: a slower sample replaces the estimate at once (the "peak"), a faster one
    /// is blended in with a weight that grows with the time since the previous sample.
    fn observe(&mut self, sample: Duration, now: Instant) {
        let sample = sample.as_nanos() as f64;
        if sample > self.nanos {
            self.nanos = sample;
        } else {
            let age = now.saturating_duration_since(self.updated).as_secs_f64();
            let keep = (-age / DECAY.as_secs_f64()).exp();
            self.nanos = self.nanos * keep + sample * (1.0 - keep);
        }
        self.updated = now;
    }
}

impl Endpoint {
    /// A fresh endpoint with nothing in flight and the default latency estimate.
    pub(crate) fn new(address: Authority, weight: u32) -> Self {
        Self {
            span_attributes: FixedAttribute::endpoint(&address),
            address,
            weight: weight.max(1),
            in_flight: AtomicUsize::new(0),
            health: Health::default(),
            fleet: FleetVerdict::default(),
            connections: Http1Pool::default(),
            rtt: Mutex::new(RttEstimate {
                nanos: DEFAULT_RTT.as_nanos() as f64,
                updated: Instant::now(),
            }),
        }
    }

    /// `host:port` to connect to.
    pub(crate) fn address(&self) -> &Authority {
        &self.address
    }

    /// `server.address`, `server.port` and `meshscope.upstream.endpoint` for its CLIENT spans.
    pub(crate) fn span_attributes(&self) -> &FixedAttribute {
        &self.span_attributes
    }

    /// Relative share for the weighted balancers (at least 1).
    pub(crate) fn weight(&self) -> u32 {
        self.weight
    }

    /// Failure streaks and ejection state.
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// The endpoint's idle HTTP/1.1 connections (see `pool`).
    pub(crate) fn connections(&self) -> &Http1Pool {
        &self.connections
    }

    /// The collector's latest verdict on this endpoint (neutral without fleet signals).
    pub(crate) fn fleet(&self) -> &FleetVerdict {
        &self.fleet
    }

    /// Requests sent to this endpoint that have not got response headers yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The latency estimate at `now` (decayed since the last sample).
    pub(crate) fn rtt_estimate(&self, now: Instant) -> Duration {
        let nanos = match self.rtt.lock() {
            Ok(rtt) => rtt.decayed(now),
            Err(poisoned) => poisoned.into_inner().decayed(now),
        };
        Duration::from_nanos(nanos as u64)
    }

    /// Peak-EWMA cost: latency estimate × (requests in flight + 1). Lower is better.
    pub(crate) fn ewma_cost(&self, now: Instant) -> f64 {
        let rtt = match self.rtt.lock() {
            Ok(rtt) => rtt.decayed(now),
            Err(poisoned) => poisoned.into_inner().decayed(now),
        };
        rtt * (self.in_flight() + 1) as f64
    }

    /// Counts a request as in flight until the returned guard is finished or dropped.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: Arc::clone(self),
            started: Instant::now(),
        }
    }

    fn observe(&self, sample: Duration, now: Instant) {
        match self.rtt.lock() {
            Ok(mut rtt) => rtt.observe(sample, now),
            Err(poisoned) => poisoned.into_inner().observe(sample, now),
        }
    }
}

/// A request in flight to an endpoint; dropping it (on error or cancel) just stops counting it.
#[derive(Debug)]
pub(crate) struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
}

impl InFlight {
    /// Marks response headers as received and feeds their latency to the endpoint's estimate.
    pub(crate) fn finish(self) {
        let now = Instant::now();
        self.endpoint.observe(now - self.started, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_then_decay() {
        let start = Instant::now();
        let mut rtt = RttEstimate {
            nanos: 1_000_000.0,
            updated: start,
        };
        rtt.observe(Duration::from_millis(50), start);
        assert_eq!(rtt.nanos, 50_000_000.0, "a slower sample is taken at once");
        rtt.observe(Duration::from_millis(1), start + Duration::from_secs(10));
        let expected = 50e6 * (-1f64).exp() + 1e6 * (1.0 - (-1f64).exp());
        assert!(
            (rtt.nanos - expected).abs() < 1.0,
            "{} vs {expected}",
            rtt.nanos
        );
        let later = rtt.decayed(start + Duration::from_secs(20));
        assert!((later - expected * (-1f64).exp()).abs() < 1.0);
    }

    #[test]
    fn in_flight_counts_until_guard_ends() {
        let endpoint = Arc::new(Endpoint::new(Authority::from_static("a:1"), 1));
        let first = endpoint.start();
        let second = endpoint.start();
        assert_eq!(endpoint.in_flight(), 2);
        first.finish();
        drop(second);
        assert_eq!(endpoint.in_flight(), 0);
    }
}
