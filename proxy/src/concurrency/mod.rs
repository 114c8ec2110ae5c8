//! `[upstream.adaptive_concurrency]`: a limit on an upstream's requests in flight that follows its
//! latency. Requests beyond the limit are refused at once (503, `x-meshscope-error:
//! concurrency-limit`) instead of queueing in front of an upstream that is already slowing down.
//!
//! ```text
//! request ─► in flight < limit? ──no──► 503 concurrency-limit (counted)
//!              │ yes: a Permit, counted in flight until response headers
//!              ▼
//!            breaker, attempts … ─► response headers ─► Permit::finish(verdict)
//!                                                        └─► gradient.rs: new limit per window
//! ```
//!
//! Written here rather than taken from a crate: the published adaptive limiters
//! (`tower-resilience-adaptive`: AIMD and Vegas; `tower-acc`: also a Gradient2, in a young 0.1
//! release) are tower middleware, a `Service` wrapping the inner service and holding the limit
//! inside it, which the proxy's request path is not (see docs/proxy.md): here the limit must sit
//! between the route's traffic control and the breaker, see the proxy's own answers to classify
//! them, and be read by `/metrics` and `/endpoints`. The controller is a page of arithmetic. The
//! admission check is two atomics; the arithmetic runs under a mutex only when a request ends.

mod gradient;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::AdaptiveConcurrencyConfig;
use crate::stats::Counter;
use gradient::Gradient;
pub(crate) use gradient::Snapshot;

/// How a request's ending feeds the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The upstream answered: the time to response headers is a latency sample.
    Answered,
    /// The request timed out (a drop): its time so far is a latency sample too, a lower bound of
    /// what the upstream would have taken, so timeouts pull the limit down.
    TimedOut,
    /// Says nothing about the upstream's queueing (a 5xx, a fast failure of the proxy's own, a
    /// cancelled request): no sample, as a fast failure would otherwise look like a fast upstream.
    Ignored,
}

/// One upstream's adaptive limit: the controller, the requests it admitted, and its refusals.
#[derive(Debug)]
pub(crate) struct ConcurrencyLimiter {
    controller: Mutex<Gradient>,
    /// The controller's whole limit, copied here so admission needs no lock.
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    rejected: Counter,
}

/// A request admitted under the limit: counted in flight until dropped; [`Permit::finish`] also
/// hands its latency to the controller.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<ConcurrencyLimiter>,
    admitted: Instant,
    /// Requests in flight when this one was admitted, itself included.
    in_flight: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Permit {
    /// Ends the request with `verdict`, measured from admission to now.
    pub(crate) fn finish(self, verdict: Verdict) {
        if verdict != Verdict::Ignored {
            self.limiter
                .record(Instant::now(), self.admitted.elapsed(), self.in_flight);
        }
    }
}

impl ConcurrencyLimiter {
    /// The limiter for a validated `[upstream.adaptive_concurrency]` table.
    pub(crate) fn new(config: &AdaptiveConcurrencyConfig) -> Self {
        let controller = Gradient::new(config, Instant::now());
        Self {
            limit: AtomicUsize::new(controller.limit()),
            controller: Mutex::new(controller),
            in_flight: AtomicUsize::new(0),
            rejected: Counter::default(),
        }
    }

    /// Admits a request if fewer than the limit are in flight; `Err` carries the limit, and the
    /// refusal is counted.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Result<Permit, usize> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let limit = self.limit.load(Ordering::Acquire);
        if in_flight > limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.rejected.increment();
            return Err(limit);
        }
        Ok(Permit {
            limiter: Arc::clone(self),
            admitted: Instant::now(),
            in_flight,
        })
    }

    fn record(&self, now: Instant, latency: Duration, in_flight: usize) {
        let mut controller = match self.controller.lock() {
            Ok(controller) => controller,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(limit) = controller.record(now, latency, in_flight) {
            self.limit.store(limit, Ordering::Release);
        }
    }

    /// The latencies behind the limit, for the admin endpoint.
    pub(crate) fn snapshot(&self) -> Snapshot {
        match self.controller.lock() {
            Ok(controller) => controller.snapshot(),
            Err(poisoned) => poisoned.into_inner().snapshot(),
        }
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Requests admitted and still waiting for response headers.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests refused so far.
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limiter starting at `initial` whose every sample closes a window.
    fn limiter(initial: u32) -> Arc<ConcurrencyLimiter> {
        Arc::new(ConcurrencyLimiter::new(&AdaptiveConcurrencyConfig {
            min_limit: 1,
            initial_limit: initial,
            sample_window: crate::config::HumanDuration(Duration::ZERO),
            min_samples: 1,
            ..AdaptiveConcurrencyConfig::default()
        }))
    }

    #[test]
    fn requests_beyond_the_limit_are_refused_and_counted_until_one_ends() {
        let limiter = limiter(2);
        let first = limiter.try_acquire();
        let second = limiter.try_acquire();
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(limiter.try_acquire().err(), Some(2));
        assert_eq!((limiter.in_flight(), limiter.rejected()), (2, 1));
        drop(first);
        let third = limiter.try_acquire();
        assert!(third.is_ok(), "a slot came back");
        if let Ok(permit) = third {
            permit.finish(Verdict::Ignored);
        }
        assert_eq!(limiter.in_flight(), 1);
    }

    #[test]
    fn only_answers_and_timeouts_are_samples() {
        let limiter = limiter(20);
        for _ in 0..100 {
            if let Ok(permit) = limiter.try_acquire() {
                permit.finish(Verdict::Ignored);
            }
        }
        assert_eq!(limiter.snapshot().sample, None);
        if let Ok(permit) = limiter.try_acquire() {
            permit.finish(Verdict::TimedOut);
        }
        assert!(limiter.snapshot().sample.is_some(), "a timeout is a sample");
        assert_eq!(limiter.in_flight(), 0);
    }
}
