//! Choosing an endpoint of an upstream for each attempt.
//!
//! Written here rather than taken from `tower::balance`: tower's p2c balancer is a `Service` that needs
//! `&mut self` and readiness polling, so sharing it across connections means a `Buffer` task hop per
//! request; it offers only P2C, not the round-robin and weighted policies; and its load figures live
//! inside wrapper services where retries (avoid the endpoint that just failed) and, later, fleet
//! signals from the collector cannot reach them. Here every policy reads one shared endpoint table,
//! picking is a few atomic operations, and the arithmetic is unit-tested below.

mod endpoint;
pub(crate) mod fleet;
mod hash;
mod p2c;
mod smooth;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use endpoint::Endpoint;
pub(crate) use hash::hash;

use crate::config::BalancerKind;

/// A load balancing policy with whatever state it keeps between picks.
#[derive(Debug)]
pub(crate) enum Balancer {
    /// Next endpoint in turn.
    RoundRobin(AtomicUsize),
    /// Nginx's smooth weighted round robin.
    WeightedRoundRobin(smooth::SmoothWeighted),
    /// Uniform random.
    Random,
    /// Random in proportion to weight.
    WeightedRandom,
    /// Power of two choices by requests in flight per unit of weight.
    LeastRequest,
    /// Full scan for the fewest requests in flight per unit of weight; the counter rotates ties.
    LeastConnections(AtomicUsize),
    /// Power of two choices by peak-EWMA cost.
    PeakEwma,
    /// Power of two choices by peak-EWMA cost divided by the fleet's weight for the endpoint.
    Adaptive,
    /// Consistent hashing on a ring.
    RingHash(hash::Ring),
    /// Consistent hashing with a Maglev table.
    Maglev(hash::Maglev),
    /// Hash of the client address modulo the number of endpoints (nginx's `ip_hash`).
    SourceIpHash,
}

impl Balancer {
    /// A balancer of the given kind for `endpoints`.
    pub(crate) fn new(kind: BalancerKind, endpoints: &[Arc<Endpoint>]) -> Self {
        match kind {
            BalancerKind::RoundRobin => Balancer::RoundRobin(AtomicUsize::new(0)),
            BalancerKind::WeightedRoundRobin => {
                Balancer::WeightedRoundRobin(smooth::SmoothWeighted::new(endpoints))
            }
            BalancerKind::Random => Balancer::Random,
            BalancerKind::WeightedRandom => Balancer::WeightedRandom,
            BalancerKind::LeastRequest => Balancer::LeastRequest,
            BalancerKind::LeastConnections => Balancer::LeastConnections(AtomicUsize::new(0)),
            BalancerKind::PeakEwma => Balancer::PeakEwma,
            BalancerKind::Adaptive => Balancer::Adaptive,
            BalancerKind::RingHash => Balancer::RingHash(hash::Ring::new(endpoints)),
            BalancerKind::Maglev => Balancer::Maglev(hash::Maglev::new(endpoints)),
            BalancerKind::SourceIpHash => Balancer::SourceIpHash,
        }
    }

    /// The policy's configuration name, for spans and logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Balancer::RoundRobin(_) => "round_robin",
            Balancer::WeightedRoundRobin(_) => "weighted_round_robin",
            Balancer::Random => "random",
            Balancer::WeightedRandom => "weighted_random",
            Balancer::LeastRequest => "least_request",
            Balancer::LeastConnections(_) => "least_connections",
            Balancer::PeakEwma => "peak_ewma",
            Balancer::Adaptive => "adaptive",
            Balancer::RingHash(_) => "ring_hash",
            Balancer::Maglev(_) => "maglev",
            Balancer::SourceIpHash => "source_ip_hash",
        }
    }

    /// Whether picks depend on a per-request hash key.
    pub(crate) fn uses_key(&self) -> bool {
        matches!(
            self,
            Balancer::RingHash(_) | Balancer::Maglev(_) | Balancer::SourceIpHash
        )
    }

    /// Index of an endpoint for which `usable` holds (not ejected, not the one that just failed),
    /// as the policy would choose it; `None` if no endpoint is usable. `key` is the request's hash
    /// key for the hashing balancers; without one they pick at random.
    ///
    /// The policy picks as usual; an unusable pick is picked again (round robin moves on, random
    /// draws again, hashing balancers rehash the key, so a key moves to the same next endpoint on
    /// every proxy). After a bounded number of tries, the first usable endpoint from a random start.
    pub(crate) fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        key: Option<u64>,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let mut key = key;
        for _ in 0..(2 * n).min(MAX_REPICKS) {
            let index = self.pick_once(endpoints, key)?;
            if usable(index) {
                return Some(index);
            }
            key = key.map(|key| hash(&key.to_le_bytes()));
        }
        let start = fastrand::usize(..n);
        (0..n)
            .map(|step| (start + step) % n)
            .find(|&index| usable(index))
    }

    fn pick_once(&self, endpoints: &[Arc<Endpoint>], key: Option<u64>) -> Option<usize> {
        if endpoints.is_empty() {
            return None;
        }
        let random = || fastrand::usize(..endpoints.len());
        Some(match self {
            Balancer::RoundRobin(next) => next.fetch_add(1, Ordering::Relaxed) % endpoints.len(),
            Balancer::WeightedRoundRobin(state) => state.pick(endpoints),
            Balancer::Random => random(),
            Balancer::WeightedRandom => {
                weighted_random(endpoints, fastrand::u64(..total_weight(endpoints)))
            }
            Balancer::LeastRequest => p2c::pick(endpoints, p2c::least_request_cost),
            Balancer::LeastConnections(next) => {
                least_loaded(endpoints, next.fetch_add(1, Ordering::Relaxed))
            }
            Balancer::PeakEwma => p2c::pick(endpoints, p2c::peak_ewma_cost),
            Balancer::Adaptive => p2c::pick(endpoints, p2c::adaptive_cost),
            Balancer::RingHash(ring) => key.and_then(|key| ring.pick(key)).unwrap_or_else(random),
            Balancer::Maglev(table) => key.and_then(|key| table.pick(key)).unwrap_or_else(random),
            Balancer::SourceIpHash => {
                key.map_or_else(random, |key| (key % endpoints.len() as u64) as usize)
            }
        })
    }
}

fn total_weight(endpoints: &[Arc<Endpoint>]) -> u64 {
    endpoints.iter().map(|e| u64::from(e.weight())).sum()
}

/// Picks tried before falling back to a scan for a usable endpoint.
const MAX_REPICKS: usize = 16;

/// The endpoint with the lowest in-flight count per unit of weight; among equals, the first found
/// scanning from `start` (mod the count), so ties rotate instead of always favouring endpoint 0.
fn least_loaded(endpoints: &[Arc<Endpoint>], start: usize) -> usize {
    let n = endpoints.len();
    let mut best = start % n;
    let mut best_cost = p2c::least_request_cost(&endpoints[best], std::time::Instant::now());
    for step in 1..n {
        let index = (start + step) % n;
        let cost = p2c::least_request_cost(&endpoints[index], std::time::Instant::now());
        if cost < best_cost {
            (best, best_cost) = (index, cost);
        }
    }
    best
}

/// The endpoint whose cumulative weight range holds `point` (in `0..total_weight`).
fn weighted_random(endpoints: &[Arc<Endpoint>], mut point: u64) -> usize {
    for (i, endpoint) in endpoints.iter().enumerate() {
        let weight = u64::from(endpoint.weight());
        if point < weight {
            return i;
        }
        point -= weight;
    }
    endpoints.len() - 1
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::uri::Authority;

    /// Endpoints with the given weights, named `e0:1`, `e1:1`, ...
    pub(crate) fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let address = Authority::try_from(format!("e{i}:1").as_str())
                    .unwrap_or_else(|_| Authority::from_static("e:1"));
                Arc::new(Endpoint::new(address, *w))
            })
            .collect()
    }

    fn counts(balancer: &Balancer, endpoints: &[Arc<Endpoint>], n: usize) -> Vec<usize> {
        let mut counts = vec![0; endpoints.len()];
        for _ in 0..n {
            if let Some(i) = balancer.pick(endpoints, None, |_| true) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn round_robin_cycles() {
        let eps = endpoints(&[1, 1, 1]);
        let b = Balancer::new(BalancerKind::RoundRobin, &eps);
        let picks: Vec<_> = (0..6)
            .filter_map(|_| b.pick(&eps, None, |_| true))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_random_follows_cumulative_ranges() {
        let eps = endpoints(&[1, 3]);
        assert_eq!(weighted_random(&eps, 0), 0);
        assert_eq!(weighted_random(&eps, 1), 1);
        assert_eq!(weighted_random(&eps, 3), 1);
        let b = Balancer::new(BalancerKind::WeightedRandom, &eps);
        let c = counts(&b, &eps, 4000);
        assert!((800..1200).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_connections_takes_the_exact_minimum_and_rotates_ties() {
        let eps = endpoints(&[1, 1, 1, 2]);
        let _load = [
            eps[0].start(),
            eps[1].start(),
            eps[3].start(),
            eps[3].start(),
        ];
        // costs: 2, 2, 1, 1.5 (two in flight + the new one, over weight 2)
        let b = Balancer::new(BalancerKind::LeastConnections, &eps);
        assert!((0..8).all(|_| b.pick(&eps, None, |_| true) == Some(2)));
        let idle = endpoints(&[1, 1, 1]);
        let picks: Vec<_> = (0..3)
            .filter_map(|_| b.pick(&idle, None, |_| true))
            .collect();
        let mut sorted = picks.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2], "ties rotate: {picks:?}");
    }

    #[test]
    fn avoid_moves_off_the_failed_endpoint() {
        let eps = endpoints(&[1, 1]);
        let b = Balancer::new(BalancerKind::RoundRobin, &eps);
        assert_eq!(b.pick(&eps, None, |i| i != 0), Some(1));
        assert_eq!(
            Balancer::new(BalancerKind::Random, &[]).pick(&[], None, |_| true),
            None
        );
    }
}
