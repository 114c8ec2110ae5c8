//! Nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c.
//!
//! Each pick adds every endpoint's weight to its running score, takes the highest score, and takes
//! the total weight off the winner. Over one cycle of `total` picks each endpoint is chosen exactly
//! `weight` times, spread out as evenly as the weights allow.

use std::sync::{Arc, Mutex};

use super::Endpoint;

/// Running scores, one per endpoint.
#[derive(Debug)]
pub(crate) struct SmoothWeighted {
    scores: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    /// Fresh scores for `endpoints`.
    pub(crate) fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        Self {
            scores: Mutex::new(vec![0; endpoints.len()]),
        }
    }

    /// Index of the next endpoint; `endpoints` must not be empty.
    pub(crate) fn pick(&self, endpoints: &[Arc<Endpoint>]) -> usize {
        let mut scores = match self.scores.lock() {
            Ok(scores) => scores,
            Err(poisoned) => poisoned.into_inner(),
        };
        if scores.len() != endpoints.len() {
            *scores = vec![0; endpoints.len()];
        }
        let mut total = 0i64;
        let mut best = 0;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let weight = i64::from(endpoint.weight());
            scores[i] += weight;
            total += weight;
            if scores[i] > scores[best] {
                best = i;
            }
        }
        scores[best] -= total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;

    #[test]
    fn nginx_sequence() {
        let eps = endpoints(&[5, 1, 1]);
        let wrr = SmoothWeighted::new(&eps);
        let picks: Vec<usize> = (0..14).map(|_| wrr.pick(&eps)).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn exact_shares_per_cycle() {
        let eps = endpoints(&[3, 2, 1]);
        let wrr = SmoothWeighted::new(&eps);
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[wrr.pick(&eps)] += 1;
        }
        assert_eq!(counts, [300, 200, 100]);
    }
}
