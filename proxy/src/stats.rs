//! Counters and latency histograms kept by routes, upstreams and listeners, read by the admin
//! endpoint's `/metrics`.
//!
//! Each route and upstream owns its own atomics, resolved when the configuration is built, so
//! counting a request is a few relaxed atomic adds with no lookup or lock. (A metrics crate would
//! add a registry and label maps on the request path; the Prometheus text format they would produce
//! is a few lines to write, in `admin.rs`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, OTLP's timestamp.
pub(crate) fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// Upper bounds (seconds) of the latency histogram buckets, from 0.5 ms to 10 s.
pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative-on-read latency histogram.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Count per bucket, the last one for values above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Adds one observation.
    pub(crate) fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(value.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bucket bound (the last is `+Inf`, the total count) and the sum in seconds.
    pub(crate) fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        (
            cumulative,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// A route's traffic: answers by status class and latency to response headers.
#[derive(Debug)]
pub(crate) struct RouteStats {
    /// When counting started (Unix nanoseconds): a reload that rebuilds the route starts again from
    /// zero, and OTLP's cumulative points carry this as their start time.
    pub(crate) since: u64,
    /// Responses by class: index 0 for 1xx … 4 for 5xx.
    responses: [AtomicU64; 5],
    /// Requests refused by the route's rate limit.
    pub(crate) rate_limited: Counter,
    /// Time from request to response headers.
    pub(crate) latency: Histogram,
}

impl Default for RouteStats {
    fn default() -> Self {
        Self {
            since: unix_nanos(SystemTime::now()),
            responses: Default::default(),
            rate_limited: Counter::default(),
            latency: Histogram::default(),
        }
    }
}

impl RouteStats {
    /// Counts one answer with `status`, `elapsed` after the request arrived.
    pub(crate) fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
    }

    /// Answers per status class, `("1xx", n)` … `("5xx", n)`.
    pub(crate) fn responses(&self) -> [(&'static str, u64); 5] {
        let load = |i: usize| self.responses[i].load(Ordering::Relaxed);
        [
            ("1xx", load(0)),
            ("2xx", load(1)),
            ("3xx", load(2)),
            ("4xx", load(3)),
            ("5xx", load(4)),
        ]
    }
}

/// What happened to requests sent to an upstream, beyond each endpoint's own figures.
#[derive(Debug)]
pub(crate) struct UpstreamStats {
    /// When counting started (Unix nanoseconds), as for [`RouteStats::since`].
    pub(crate) since: u64,
    /// Attempts sent (first tries and retries).
    pub(crate) attempts: Counter,
    /// Retries sent.
    pub(crate) retries: Counter,
    /// Retries not sent because the retry budget was spent.
    pub(crate) budget_exhausted: Counter,
    /// Endpoints ejected by outlier detection.
    pub(crate) ejections: Counter,
}

impl Default for UpstreamStats {
    fn default() -> Self {
        Self {
            since: unix_nanos(SystemTime::now()),
            attempts: Counter::default(),
            retries: Counter::default(),
            budget_exhausted: Counter::default(),
            ejections: Counter::default(),
        }
    }
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub(crate) fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(20));
        let (cumulative, sum) = histogram.snapshot();
        assert_eq!(cumulative[0], 1);
        assert_eq!(cumulative[3], 2, "3 ms falls in the 5 ms bucket");
        assert_eq!(cumulative[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(
            cumulative[LATENCY_BUCKETS.len()],
            3,
            "+Inf holds everything"
        );
        assert!((sum - 20.0033).abs() < 1e-9);
    }

    #[test]
    fn statuses_are_counted_by_class() {
        let stats = RouteStats::default();
        stats.record(http::StatusCode::OK, Duration::ZERO);
        stats.record(http::StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO);
        stats.record(http::StatusCode::NO_CONTENT, Duration::ZERO);
        assert_eq!(stats.responses()[1], ("2xx", 2));
        assert_eq!(stats.responses()[4], ("5xx", 1));
    }
}
