//! An upstream's circuit breaker: limits on requests in flight, connections in use and requests
//! waiting for a connection, as Envoy's per-cluster thresholds (`max_requests`, `max_connections`,
//! `max_pending_requests`).
//!
//! ```text
//! request ─► active < max_requests? ──no──► 503 overflow (requests)
//!              │ yes
//!              ▼ needs a connection (HTTP/1.1 attempt, upgrade, TCP)?
//!            slot free? ──yes──► admitted (slot held until the response has been sent)
//!              │ no
//!            pending < max_pending_requests? ──no──► 503 overflow (pending)
//!              │ yes: wait in line (FIFO) for a slot
//! ```
//!
//! Connections are counted as slots rather than by watching the client's pool: an HTTP/1.1 request
//! occupies one connection from its first byte until its response ends, so "connections in use" is
//! the number of such requests in flight; the pool keeps at most `max_connections` idle ones per
//! endpoint besides. HTTP/2 requests share one connection per endpoint and take no slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::CircuitBreakerConfig;
use crate::stats::Counter;

/// The limit that turned a request away, for the error message and the overflow counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `max_requests`: too many requests in flight.
    Requests,
    /// `max_connections`: every connection slot is in use and the request may not wait.
    Connections,
    /// `max_pending_requests`: too many requests already wait for a connection.
    Pending,
}

impl Limit {
    /// Every limit, in the order of [`CircuitBreaker::overflows`].
    pub(crate) const ALL: [Limit; 3] = [Limit::Requests, Limit::Connections, Limit::Pending];

    /// The limit's label in metrics (`limit="..."`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::Connections => "connections",
            Limit::Pending => "pending",
        }
    }

    /// The configuration key that sets the limit, for error messages.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Limit::Requests => "max_requests",
            Limit::Connections => "max_connections",
            Limit::Pending => "max_pending_requests",
        }
    }
}

/// The breaker's state: counters read by the admin endpoint and the metrics exporter.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    max_requests: Option<usize>,
    active: AtomicUsize,
    /// Connection slots, `max_connections` of them, when limited.
    slots: Option<(usize, Arc<Semaphore>)>,
    max_pending: Option<usize>,
    pending: AtomicUsize,
    overflows: [Counter; 3],
}

/// A request admitted by the breaker: it counts as active (and holds its connection slot) until
/// dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    breaker: Arc<CircuitBreaker>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.breaker.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request as pending while it waits for a slot, however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CircuitBreaker {
    /// The breaker for a validated `[upstream.circuit_breaker]` table.
    pub(crate) fn new(config: &CircuitBreakerConfig) -> Self {
        Self {
            max_requests: config.max_requests.map(|max| max as usize),
            active: AtomicUsize::new(0),
            slots: config
                .max_connections
                .map(|max| (max as usize, Arc::new(Semaphore::new(max as usize)))),
            max_pending: config.max_pending_requests.map(|max| max as usize),
            pending: AtomicUsize::new(0),
            overflows: Default::default(),
        }
    }

    /// Admits a request; one that `needs_connection` takes a connection slot, waiting in line for
    /// one when all are in use and the line is shorter than `max_pending_requests` (a caller that
    /// must not wait passes `may_wait = false`).
    pub(crate) async fn admit(
        self: &Arc<Self>,
        needs_connection: bool,
        may_wait: bool,
    ) -> Result<Admission, Limit> {
        let active = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        let mut admission = Admission {
            breaker: Arc::clone(self),
            _slot: None,
        };
        if self.max_requests.is_some_and(|max| active > max) {
            return Err(self.overflow(Limit::Requests));
        }
        let Some((_, slots)) = self.slots.as_ref().filter(|_| needs_connection) else {
            return Ok(admission);
        };
        if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
            admission._slot = Some(slot);
            return Ok(admission);
        }
        if !may_wait {
            return Err(self.overflow(Limit::Connections));
        }
        let waiting = self.pending.fetch_add(1, Ordering::AcqRel) + 1;
        let _waiting = Waiting(&self.pending);
        if self.max_pending.is_some_and(|max| waiting > max) {
            return Err(self.overflow(Limit::Pending));
        }
        // The semaphore is never closed, so acquiring only fails if it were.
        let slot = Arc::clone(slots)
            .acquire_owned()
            .await
            .map_err(|_| Limit::Connections)?;
        admission._slot = Some(slot);
        Ok(admission)
    }

    fn overflow(&self, limit: Limit) -> Limit {
        self.overflows[limit as usize].increment();
        limit
    }

    /// Requests turned away by `limit` so far.
    pub(crate) fn overflows(&self, limit: Limit) -> u64 {
        self.overflows[limit as usize].get()
    }

    /// Requests in flight.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Connection slots in use (0 without `max_connections`).
    pub(crate) fn connections(&self) -> usize {
        self.slots
            .as_ref()
            .map_or(0, |(max, slots)| max - slots.available_permits())
    }

    /// Requests waiting for a connection slot.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Whether `limit` is configured and reached right now: the next request it applies to would
    /// be turned away (or, for connections, wait).
    pub(crate) fn is_open(&self, limit: Limit) -> bool {
        match limit {
            Limit::Requests => self.max_requests.is_some_and(|max| self.active() >= max),
            Limit::Connections => self
                .slots
                .as_ref()
                .is_some_and(|(_, slots)| slots.available_permits() == 0),
            Limit::Pending => self.max_pending.is_some_and(|max| self.pending() >= max),
        }
    }

    /// The most idle pooled connections worth keeping per endpoint: more could never be in use.
    pub(crate) fn max_idle_per_endpoint(&self) -> usize {
        self.slots.as_ref().map_or(usize::MAX, |(max, _)| *max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(
        requests: Option<u32>,
        connections: Option<u32>,
        pending: Option<u32>,
    ) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(&CircuitBreakerConfig {
            max_requests: requests,
            max_connections: connections,
            max_pending_requests: pending,
        }))
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_overflow_and_capacity_returns() {
        let breaker = breaker(Some(1), None, None);
        let first = breaker.admit(false, true).await;
        assert!(first.is_ok());
        assert_eq!(
            breaker.admit(false, true).await.err(),
            Some(Limit::Requests)
        );
        assert!(breaker.is_open(Limit::Requests));
        drop(first);
        assert!(breaker.admit(false, true).await.is_ok());
        assert_eq!(breaker.overflows(Limit::Requests), 1);
        assert_eq!(breaker.active(), 0);
    }

    #[tokio::test]
    async fn a_full_line_overflows_and_a_waiting_request_gets_the_freed_slot() {
        let breaker = breaker(None, Some(1), Some(1));
        let holder = breaker.admit(true, true).await;
        assert!(holder.is_ok());
        assert_eq!(
            breaker.admit(true, false).await.err(),
            Some(Limit::Connections)
        );
        let waiter = tokio::spawn({
            let breaker = Arc::clone(&breaker);
            async move { breaker.admit(true, true).await.is_ok() }
        });
        while breaker.pending() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(breaker.admit(true, true).await.err(), Some(Limit::Pending));
        assert!(
            breaker.admit(false, true).await.is_ok(),
            "HTTP/2 takes no slot"
        );
        drop(holder);
        assert!(matches!(waiter.await, Ok(true)));
        assert_eq!(breaker.pending(), 0);
        assert_eq!(breaker.connections(), 0);
        assert_eq!(breaker.overflows(Limit::Connections), 1);
        assert_eq!(breaker.overflows(Limit::Pending), 1);
    }
}
