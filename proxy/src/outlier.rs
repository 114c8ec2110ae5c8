//! Endpoint health. Passive: endpoints that keep failing real requests are ejected for a while
//! (Envoy's outlier detection). Active: the results of health checks (`health_check.rs`) are kept
//! here too, so the balancer asks one question, `is_usable`.
//!
//! Every attempt's outcome is reported here. Consecutive 5xx (or gateway errors: 502, 503, 504 and
//! failures to connect or get an answer) past the configured count eject the endpoint for
//! `base_ejection_time × times ejected so far`, capped at `max_ejection_time`, unless that would eject
//! more than `max_ejection_percent` of the upstream (one endpoint may always be ejected). Ejections
//! end by themselves: an endpoint is usable again as soon as its time is up.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::balance::Endpoint;
use crate::config::OutlierConfig;
use crate::retry::Outcome;

/// An endpoint's health: failure streaks and ejection (passive), and health check results (active).
#[derive(Debug, Default)]
pub(crate) struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejections: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    check_failures: AtomicU32,
    check_passes: AtomicU32,
    failing_checks: AtomicBool,
    /// Requests and successes in the current success-rate window.
    window_requests: AtomicU64,
    window_successes: AtomicU64,
}

impl Health {
    /// Whether the endpoint may get traffic at `now`: not ejected and not failing its health checks.
    pub(crate) fn is_usable(&self, now: Instant) -> bool {
        !self.is_ejected(now) && !self.fails_checks()
    }

    /// Whether active health checks currently mark the endpoint unhealthy.
    pub(crate) fn fails_checks(&self) -> bool {
        self.failing_checks.load(Ordering::Relaxed)
    }

    /// Records one health check; `unhealthy` consecutive failures mark the endpoint unhealthy,
    /// `healthy` consecutive passes mark it healthy again. Returns the new state if it changed
    /// (`true` = now failing).
    pub(crate) fn record_check(&self, passed: bool, unhealthy: u32, healthy: u32) -> Option<bool> {
        let (streak, other) = if passed {
            (&self.check_passes, &self.check_failures)
        } else {
            (&self.check_failures, &self.check_passes)
        };
        other.store(0, Ordering::Relaxed);
        let count = streak.fetch_add(1, Ordering::Relaxed) + 1;
        let failing = self.fails_checks();
        if !passed && !failing && count >= unhealthy {
            self.failing_checks.store(true, Ordering::Relaxed);
            return Some(true);
        }
        if passed && failing && count >= healthy {
            self.failing_checks.store(false, Ordering::Relaxed);
            return Some(false);
        }
        None
    }

    /// Whether the endpoint is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        let until = match self.ejected_until.lock() {
            Ok(until) => *until,
            Err(poisoned) => *poisoned.into_inner(),
        };
        until.is_some_and(|until| now < until)
    }

    /// How much longer the endpoint stays ejected, if it is.
    pub(crate) fn ejected_for(&self, now: Instant) -> Option<Duration> {
        let until = match self.ejected_until.lock() {
            Ok(until) => *until,
            Err(poisoned) => *poisoned.into_inner(),
        };
        until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Times the endpoint has been ejected.
    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Current (5xx, gateway error) failure streaks.
    pub(crate) fn streaks(&self) -> (u32, u32) {
        (
            self.consecutive_5xx.load(Ordering::Relaxed),
            self.consecutive_gateway.load(Ordering::Relaxed),
        )
    }

    /// Updates the streaks with `outcome`; returns the new (5xx, gateway error) streak lengths.
    fn record(&self, outcome: Outcome) -> (u32, u32) {
        let (server_error, gateway_error) = match outcome {
            Outcome::Status(status) => (
                status.is_server_error(),
                matches!(status.as_u16(), 502..=504),
            ),
            // gRPC statuses as Envoy maps them to HTTP: UNAVAILABLE and DEADLINE_EXCEEDED are gateway
            // errors, UNKNOWN, INTERNAL and DATA_LOSS are server errors.
            Outcome::Grpc(code) => (matches!(code, 2 | 4 | 13 | 14 | 15), matches!(code, 4 | 14)),
            Outcome::ConnectFailure | Outcome::PerTryTimeout | Outcome::Broken => (true, true),
        };
        self.window_requests.fetch_add(1, Ordering::Relaxed);
        if !server_error {
            self.window_successes.fetch_add(1, Ordering::Relaxed);
        }
        let bump = |streak: &AtomicU32, failed: bool| {
            if failed {
                streak.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                streak.store(0, Ordering::Relaxed);
                0
            }
        };
        (
            bump(&self.consecutive_5xx, server_error),
            bump(&self.consecutive_gateway, gateway_error),
        )
    }

    /// Ejects until `now` plus `base × ejections` (capped at `max`), and restarts the streaks.
    fn eject(&self, now: Instant, base: Duration, max: Duration) -> Duration {
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = base.saturating_mul(times).min(max);
        // An absurdly long configured time saturates rather than overflowing the clock.
        let end = now
            .checked_add(duration)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        match self.ejected_until.lock() {
            Ok(mut until) => *until = Some(end),
            Err(poisoned) => *poisoned.into_inner() = Some(end),
        }
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        duration
    }
}

/// A compiled `[upstream.outlier_detection]` table.
#[derive(Debug)]
pub(crate) struct OutlierPolicy {
    consecutive_5xx: u32,
    consecutive_gateway_errors: u32,
    base_ejection_time: Duration,
    max_ejection_time: Duration,
    max_ejection_percent: u32,
    success_rate: Option<SuccessRate>,
}

/// Success-rate ejection settings, and when the current window closes.
#[derive(Debug)]
struct SuccessRate {
    stdev_factor: f64,
    interval: Duration,
    min_requests: u64,
    min_hosts: usize,
    window_ends: Mutex<Instant>,
}

impl OutlierPolicy {
    /// The policy for a validated table.
    pub(crate) fn from_config(config: &OutlierConfig) -> Self {
        Self {
            consecutive_5xx: config.consecutive_5xx,
            consecutive_gateway_errors: config.consecutive_gateway_errors,
            base_ejection_time: config.base_ejection_time.0,
            max_ejection_time: config.max_ejection_time.0,
            max_ejection_percent: config.max_ejection_percent,
            success_rate: config
                .success_rate_stdev_factor
                .map(|stdev_factor| SuccessRate {
                    stdev_factor,
                    interval: config.success_rate_interval.0,
                    min_requests: config.success_rate_min_requests,
                    min_hosts: config.success_rate_min_hosts,
                    window_ends: Mutex::new(Instant::now() + config.success_rate_interval.0),
                }),
        }
    }

    /// When a success-rate window has closed: compares the endpoints' success rates in it, ejects
    /// those below `mean − stdev_factor × stdev` (within the ejection cap), and starts a new window.
    /// Returns the endpoints ejected.
    pub(crate) fn evaluate_success_rates(&self, endpoints: &[Arc<Endpoint>]) -> Vec<Arc<Endpoint>> {
        let Some(rate) = &self.success_rate else {
            return Vec::new();
        };
        let now = Instant::now();
        {
            let mut window_ends = match rate.window_ends.lock() {
                Ok(window_ends) => window_ends,
                Err(poisoned) => poisoned.into_inner(),
            };
            if now < *window_ends {
                return Vec::new();
            }
            *window_ends = now.checked_add(rate.interval).unwrap_or(now);
        }
        let rates: Vec<(&Arc<Endpoint>, f64)> = endpoints
            .iter()
            .filter_map(|endpoint| {
                let health = endpoint.health();
                let requests = health.window_requests.swap(0, Ordering::Relaxed);
                let successes = health.window_successes.swap(0, Ordering::Relaxed);
                (requests >= rate.min_requests && requests > 0)
                    .then(|| (endpoint, successes as f64 / requests as f64))
            })
            .collect();
        if rates.len() < rate.min_hosts {
            return Vec::new();
        }
        let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / rates.len() as f64;
        let variance =
            rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        let threshold = mean - rate.stdev_factor * variance.sqrt();
        let mut ejected = Vec::new();
        for (endpoint, success) in rates {
            if success < threshold && self.eject_within_cap(endpoints, endpoint, now).is_some() {
                ejected.push(Arc::clone(endpoint));
            }
        }
        ejected
    }

    /// Ejects `endpoint` unless it is already ejected or the cap is reached.
    fn eject_within_cap(
        &self,
        endpoints: &[Arc<Endpoint>],
        endpoint: &Endpoint,
        now: Instant,
    ) -> Option<Duration> {
        let health = endpoint.health();
        if health.is_ejected(now) {
            return None;
        }
        let ejected = endpoints
            .iter()
            .filter(|e| e.health().is_ejected(now))
            .count();
        let cap = (endpoints.len() * self.max_ejection_percent as usize / 100).max(1);
        if ejected >= cap {
            return None;
        }
        Some(health.eject(now, self.base_ejection_time, self.max_ejection_time))
    }

    /// Records `outcome` for `endpoint` (one of `endpoints`, the upstream's current set), ejecting
    /// it if a streak reached its threshold and the ejection cap allows. Returns the ejection time
    /// if it was ejected.
    pub(crate) fn observe(
        &self,
        endpoints: &[Arc<Endpoint>],
        endpoint: &Endpoint,
        outcome: Outcome,
    ) -> Option<Duration> {
        let health = endpoint.health();
        let (server_errors, gateway_errors) = health.record(outcome);
        let tripped = (self.consecutive_5xx > 0 && server_errors >= self.consecutive_5xx)
            || (self.consecutive_gateway_errors > 0
                && gateway_errors >= self.consecutive_gateway_errors);
        if !tripped {
            return None;
        }
        self.eject_within_cap(endpoints, endpoint, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;
    use crate::config::HumanDuration;
    use http::StatusCode;

    fn policy(consecutive_5xx: u32, gateway: u32, max_percent: u32) -> OutlierPolicy {
        OutlierPolicy::from_config(&OutlierConfig {
            consecutive_5xx,
            consecutive_gateway_errors: gateway,
            base_ejection_time: HumanDuration(Duration::from_secs(30)),
            max_ejection_time: HumanDuration(Duration::from_secs(75)),
            max_ejection_percent: max_percent,
            success_rate_stdev_factor: None,
            success_rate_interval: HumanDuration(Duration::from_secs(10)),
            success_rate_min_requests: 100,
            success_rate_min_hosts: 5,
        })
    }

    const FAIL: Outcome = Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR);
    const OK: Outcome = Outcome::Status(StatusCode::OK);

    #[test]
    fn ejects_after_a_streak_and_a_success_resets_it() {
        let all = endpoints(&[1, 1, 1]);
        let p = policy(3, 0, 100);
        assert_eq!(p.observe(&all, &all[0], FAIL), None);
        assert_eq!(p.observe(&all, &all[0], FAIL), None);
        assert_eq!(p.observe(&all, &all[0], OK), None);
        assert_eq!(p.observe(&all, &all[0], FAIL), None);
        assert_eq!(p.observe(&all, &all[0], FAIL), None);
        assert_eq!(
            p.observe(&all, &all[0], FAIL),
            Some(Duration::from_secs(30))
        );
        assert!(all[0].health().is_ejected(Instant::now()));
        assert!(
            !all[0]
                .health()
                .is_ejected(Instant::now() + Duration::from_secs(31))
        );
    }

    #[test]
    fn health_checks_flip_state_at_their_thresholds() {
        let health = Health::default();
        assert_eq!(health.record_check(false, 2, 2), None);
        assert_eq!(health.record_check(false, 2, 2), Some(true));
        assert!(!health.is_usable(Instant::now()));
        assert_eq!(health.record_check(true, 2, 2), None);
        assert_eq!(
            health.record_check(false, 2, 2),
            None,
            "a failure resets the passes"
        );
        assert_eq!(health.record_check(true, 2, 2), None);
        assert_eq!(health.record_check(true, 2, 2), Some(false));
        assert!(health.is_usable(Instant::now()));
    }

    #[test]
    fn ejection_time_grows_and_is_capped() {
        let health = Health::default();
        let now = Instant::now();
        let (base, max) = (Duration::from_secs(30), Duration::from_secs(75));
        assert_eq!(health.eject(now, base, max), Duration::from_secs(30));
        assert_eq!(health.eject(now, base, max), Duration::from_secs(60));
        assert_eq!(health.eject(now, base, max), Duration::from_secs(75));
    }

    #[test]
    fn gateway_errors_count_connect_failures_but_not_500() {
        let all = endpoints(&[1, 1]);
        let p = policy(0, 2, 100);
        assert_eq!(p.observe(&all, &all[1], FAIL), None);
        assert_eq!(p.observe(&all, &all[1], Outcome::ConnectFailure), None);
        assert!(
            p.observe(&all, &all[1], Outcome::Status(StatusCode::BAD_GATEWAY))
                .is_some()
        );
    }

    #[test]
    fn success_rate_below_the_peers_ejects() {
        let mut config = OutlierConfig {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            base_ejection_time: HumanDuration(Duration::from_secs(30)),
            max_ejection_time: HumanDuration(Duration::from_secs(300)),
            max_ejection_percent: 100,
            success_rate_stdev_factor: Some(1.9),
            success_rate_interval: HumanDuration(Duration::from_millis(1)),
            success_rate_min_requests: 10,
            success_rate_min_hosts: 5,
        };
        let all = endpoints(&[1, 1, 1, 1, 1, 1]);
        let p = OutlierPolicy::from_config(&config);
        for (i, endpoint) in all.iter().enumerate() {
            let successes = match i {
                0 => 5,  // 50%: far below the others
                5 => 0,  // too few requests to be judged
                _ => 10, // 100%
            };
            let requests = if i == 5 { 3 } else { 10 };
            endpoint
                .health()
                .window_requests
                .store(requests, Ordering::Relaxed);
            endpoint
                .health()
                .window_successes
                .store(successes, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(2));
        let ejected = p.evaluate_success_rates(&all);
        assert_eq!(ejected.len(), 1);
        assert!(Arc::ptr_eq(&ejected[0], &all[0]));
        assert_eq!(
            all[1].health().window_requests.load(Ordering::Relaxed),
            0,
            "a new window starts"
        );

        config.success_rate_min_hosts = 6;
        let strict = OutlierPolicy::from_config(&config);
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            strict.evaluate_success_rates(&all).is_empty(),
            "too few endpoints with enough requests"
        );
    }

    #[test]
    fn the_cap_keeps_most_endpoints_in() {
        let all = endpoints(&[1, 1, 1, 1]);
        let p = policy(1, 0, 30);
        assert!(
            p.observe(&all, &all[0], FAIL).is_some(),
            "one ejection is always allowed"
        );
        assert_eq!(
            p.observe(&all, &all[1], FAIL),
            None,
            "30% of 4 endpoints is one"
        );
    }
}
