//! Token-bucket rate limits: one bucket for a route, or one per caller (keyed by a header, a cookie
//! or the client's address). A request that finds its bucket empty is answered `429` with
//! `Retry-After`.
//!
//! Written here: a token bucket is a few lines of arithmetic, and the crate that would offer one
//! (`governor`) brings a GCRA state machine, keyed-store and clock abstractions far beyond that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::config::{HashKey, RateLimitConfig};
use crate::headers::request_key;

/// Most per-caller buckets kept; past it, buckets that have refilled (and so hold no state) are
/// forgotten, and if that is not enough, all of them.
const MAX_BUCKETS: usize = 100_000;

/// A route's rate limit.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    per: Option<HashKey>,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// Tokens at `now`, refilled at `rate` up to `burst`.
    fn refilled(self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

impl RateLimiter {
    /// The limiter for a validated table.
    pub(crate) fn from_config(config: &RateLimitConfig) -> Self {
        let rate = config.requests_per_second;
        let burst = config.burst.map_or(rate.ceil().max(1.0), f64::from);
        Self {
            rate,
            burst,
            per: config.per.clone(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for a request with `headers` from `client`, or says how long until one is
    /// available. A per-caller limit does not apply to requests without the key.
    pub(crate) fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<(), Duration> {
        let key = match &self.per {
            None => 0,
            Some(per) => match request_key(per, headers, client) {
                Some(key) => key,
                None => return Ok(()),
            },
        };
        self.take(key, Instant::now())
    }

    fn take(&self, key: u64, now: Instant) -> Result<(), Duration> {
        let mut buckets = match self.buckets.lock() {
            Ok(buckets) => buckets,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, bucket| bucket.refilled(now, rate, burst) < burst);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let tokens = bucket.refilled(now, self.rate, self.burst);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::try_from_secs_f64((1.0 - tokens) / self.rate).unwrap_or(Duration::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter::from_config(&RateLimitConfig {
            requests_per_second: rate,
            burst: Some(burst),
            per: None,
        })
    }

    #[test]
    fn burst_then_refill() {
        let limit = limiter(2.0, 3);
        let start = Instant::now();
        assert!((0..3).all(|_| limit.take(0, start).is_ok()));
        let wait = limit.take(0, start).err();
        assert_eq!(wait, Some(Duration::from_millis(500)));
        assert!(limit.take(0, start + Duration::from_millis(500)).is_ok());
        assert!(limit.take(0, start + Duration::from_millis(500)).is_err());
        assert!(
            (0..3).all(|_| limit.take(0, start + Duration::from_secs(10)).is_ok()),
            "refills to the burst only"
        );
        assert!(limit.take(0, start + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let limit = limiter(1.0, 1);
        let now = Instant::now();
        assert!(limit.take(1, now).is_ok());
        assert!(limit.take(1, now).is_err());
        assert!(limit.take(2, now).is_ok());
    }
}
