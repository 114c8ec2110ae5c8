//! The collector's latest verdict on one endpoint (fleet signals), as the balancer reads it.
//!
//! Stored in atomics because the signals task writes while every request reads; a verdict past its
//! expiry reads as neutral (weight 1, not ejected), so a collector that went away stops mattering.

use std::sync::atomic::{AtomicU64, Ordering};

/// Weight, ejection deadline and expiry of one endpoint, in Unix nanoseconds (`stats::unix_nanos`).
#[derive(Debug, Default)]
pub(crate) struct FleetVerdict {
    weight_bits: AtomicU64,
    ejected_until: AtomicU64,
    expires: AtomicU64,
}

impl FleetVerdict {
    /// Takes a new verdict from the collector.
    pub(crate) fn apply(&self, weight: f64, ejected_until: u64, expires: u64) {
        let weight = if weight.is_finite() {
            weight.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.weight_bits.store(weight.to_bits(), Ordering::Relaxed);
        self.ejected_until.store(ejected_until, Ordering::Relaxed);
        self.expires.store(expires, Ordering::Relaxed);
    }

    /// The fleet's weight at `now` (1 once the verdict expired or before any came).
    pub(crate) fn weight(&self, now: u64) -> f64 {
        if now >= self.expires.load(Ordering::Relaxed) {
            return 1.0;
        }
        f64::from_bits(self.weight_bits.load(Ordering::Relaxed))
    }

    /// Whether the fleet ejects the endpoint at `now`.
    pub(crate) fn ejected(&self, now: u64) -> bool {
        now < self.expires.load(Ordering::Relaxed)
            && now < self.ejected_until.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_expire_to_neutral() {
        let verdict = FleetVerdict::default();
        assert_eq!((verdict.weight(10), verdict.ejected(10)), (1.0, false));
        verdict.apply(0.25, 50, 100);
        assert_eq!((verdict.weight(10), verdict.ejected(10)), (0.25, true));
        assert_eq!((verdict.weight(60), verdict.ejected(60)), (0.25, false));
        assert_eq!((verdict.weight(100), verdict.ejected(10_000)), (1.0, false));
        verdict.apply(f64::NAN, 0, 100);
        assert_eq!(verdict.weight(10), 1.0);
    }
}
