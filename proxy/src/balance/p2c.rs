//! Power of two choices: draw two different endpoints at random, send to the cheaper.
//!
//! Almost as good as scanning every endpoint for the least loaded, at constant cost, and without
//! every proxy piling onto the same "best" endpoint at once.

use std::sync::Arc;
use std::time::Instant;

use super::Endpoint;

/// Index of the cheaper of two distinct random endpoints; `endpoints` must not be empty.
pub(crate) fn pick(endpoints: &[Arc<Endpoint>], cost: fn(&Endpoint, Instant) -> f64) -> usize {
    let n = endpoints.len();
    if n == 1 {
        return 0;
    }
    let a = fastrand::usize(..n);
    let mut b = fastrand::usize(..n - 1);
    if b >= a {
        b += 1;
    }
    let now = Instant::now();
    if cost(&endpoints[b], now) < cost(&endpoints[a], now) {
        b
    } else {
        a
    }
}

/// Requests in flight per unit of weight, counting the one about to be sent.
pub(crate) fn least_request_cost(endpoint: &Endpoint, _now: Instant) -> f64 {
    (endpoint.in_flight() + 1) as f64 / f64::from(endpoint.weight())
}

/// Linkerd's peak-EWMA cost.
pub(crate) fn peak_ewma_cost(endpoint: &Endpoint, now: Instant) -> f64 {
    endpoint.ewma_cost(now)
}

/// Peak-EWMA cost divided by the fleet's weight: an endpoint the fleet rates at a quarter costs four
/// times as much, so local latency still decides among endpoints the fleet rates alike.
pub(crate) fn adaptive_cost(endpoint: &Endpoint, now: Instant) -> f64 {
    let weight = endpoint
        .fleet()
        .weight(crate::stats::unix_nanos(std::time::SystemTime::now()));
    endpoint.ewma_cost(now) / weight.max(MIN_FLEET_WEIGHT)
}

/// Floor of the fleet weight in the adaptive cost, so a down-weighted endpoint still gets a trickle.
const MIN_FLEET_WEIGHT: f64 = 0.01;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;

    #[test]
    fn two_endpoints_always_pick_the_idle_one() {
        let eps = endpoints(&[1, 1]);
        let _busy = [eps[0].start(), eps[0].start()];
        for _ in 0..50 {
            assert_eq!(pick(&eps, least_request_cost), 1);
        }
    }

    #[test]
    fn the_busiest_of_many_is_never_picked() {
        let eps = endpoints(&[1, 1, 1, 1]);
        let _busy = eps[2].start();
        for _ in 0..200 {
            assert_ne!(pick(&eps, least_request_cost), 2);
        }
    }

    #[test]
    fn weight_discounts_load() {
        let eps = endpoints(&[1, 4]);
        let _load = [eps[1].start(), eps[1].start()];
        // cost 1/1 for the first, 3/4 for the second
        assert_eq!(pick(&eps, least_request_cost), 1);
    }

    #[test]
    fn fleet_weight_scales_the_adaptive_cost() {
        let eps = endpoints(&[1, 1]);
        let far_future = u64::MAX;
        eps[0].fleet().apply(0.1, 0, far_future);
        for _ in 0..50 {
            assert_eq!(pick(&eps, adaptive_cost), 1);
        }
        eps[0].fleet().apply(1.0, 0, far_future);
        eps[1].fleet().apply(0.1, 0, far_future);
        for _ in 0..50 {
            assert_eq!(pick(&eps, adaptive_cost), 0);
        }
    }

    #[test]
    fn slow_endpoint_loses_under_peak_ewma() {
        let eps = endpoints(&[1, 1]);
        let slow = eps[0].start();
        std::thread::sleep(std::time::Duration::from_millis(60));
        slow.finish();
        for _ in 0..50 {
            assert_eq!(pick(&eps, peak_ewma_cost), 1);
        }
    }
}
