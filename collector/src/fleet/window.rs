//! Sliding windows of evidence per endpoint: one bucket per second, merged on demand.

use sketches_ddsketch::{Config, DDSketch};

/// What one endpoint answered over the window: request and failure counts and a latency sketch.
#[derive(Clone)]
pub(crate) struct Evidence {
    /// Requests seen.
    pub(crate) requests: u64,
    /// Requests that failed.
    pub(crate) failures: u64,
    /// Client-side latency in milliseconds (DDSketch: mergeable, 1 % relative error).
    pub(crate) latency_ms: DDSketch,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            requests: 0,
            failures: 0,
            latency_ms: DDSketch::new(Config::defaults()),
        }
    }
}

impl Evidence {
    /// Counts one request.
    pub(crate) fn add(&mut self, failed: bool, latency_ms: f64) {
        self.requests += 1;
        self.failures += u64::from(failed);
        self.latency_ms.add(latency_ms.max(0.0));
    }

    /// Adds another window's evidence to this one.
    pub(crate) fn merge(&mut self, other: &Evidence) {
        self.requests += other.requests;
        self.failures += other.failures;
        // Both sketches use the default configuration, the only case `merge` refuses is a mismatch.
        let _ = self.latency_ms.merge(&other.latency_ms);
    }

    /// Fraction of requests that succeeded (1 with no evidence).
    pub(crate) fn success_rate(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            1.0 - self.failures as f64 / self.requests as f64
        }
    }

    /// The latency quantile `q` in milliseconds, 0 with no evidence.
    pub(crate) fn latency_quantile(&self, q: f64) -> f64 {
        self.latency_ms.quantile(q).ok().flatten().unwrap_or(0.0)
    }
}

/// A ring of one-second buckets covering the last `seconds` seconds.
pub(crate) struct Window {
    buckets: Vec<(i64, Evidence)>,
}

impl Window {
    /// An empty window of `seconds` one-second buckets.
    pub(crate) fn new(seconds: usize) -> Window {
        Window {
            buckets: vec![(i64::MIN, Evidence::default()); seconds.max(1)],
        }
    }

    /// Records a request that ended in second `second` (Unix time). Requests older than the window are
    /// ignored; a bucket is reset when its slot is reused for a later second.
    pub(crate) fn record(&mut self, second: i64, failed: bool, latency_ms: f64) {
        let slot = second.rem_euclid(self.buckets.len() as i64) as usize;
        let (bucket_second, evidence) = &mut self.buckets[slot];
        if *bucket_second > second {
            return;
        }
        if *bucket_second < second {
            *bucket_second = second;
            *evidence = Evidence::default();
        }
        evidence.add(failed, latency_ms);
    }

    /// The evidence of the seconds in `(now - len, now]`.
    pub(crate) fn total(&self, now: i64) -> Evidence {
        self.recent(now, self.buckets.len() as i64)
    }

    /// The evidence of the last `seconds` seconds, `(now - seconds, now]`, at most the whole window.
    pub(crate) fn recent(&self, now: i64, seconds: i64) -> Evidence {
        let oldest = now - seconds.min(self.buckets.len() as i64);
        let mut total = Evidence::default();
        for (second, evidence) in &self.buckets {
            if *second > oldest && *second <= now {
                total.merge(evidence);
            }
        }
        total
    }

    /// The newest second with evidence, to expire idle endpoints.
    pub(crate) fn last_second(&self) -> i64 {
        self.buckets
            .iter()
            .map(|(second, _)| *second)
            .max()
            .unwrap_or(i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_seconds_fall_out_of_the_window() {
        let mut window = Window::new(3);
        window.record(100, true, 5.0);
        window.record(101, false, 5.0);
        window.record(102, false, 5.0);
        assert_eq!(window.total(102).requests, 3);
        assert_eq!(window.total(103).requests, 2);
        window.record(103, false, 7.0);
        let total = window.total(103);
        assert_eq!((total.requests, total.failures), (3, 0));
        window.record(99, true, 1.0);
        assert_eq!(window.total(103).failures, 0, "too old to count");
    }

    #[test]
    fn quantiles_come_from_the_merged_sketch() {
        let mut window = Window::new(10);
        for i in 0..100 {
            window.record(i % 10, false, f64::from(i as u32 + 1));
        }
        let total = window.total(9);
        let p50 = total.latency_quantile(0.5);
        assert!((49.0..=52.0).contains(&p50), "{p50}");
        assert!(total.latency_quantile(0.99) >= 98.0);
        assert_eq!(total.success_rate(), 1.0);
    }
}
