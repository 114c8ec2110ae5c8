//! Consistent hashing: the same key goes to the same endpoint, and when endpoints change only the
//! keys of the changed endpoints move. Two classic tables, as in Envoy:
//!
//! - **ring hash** (Karger et al.): each endpoint owns points on a 64-bit ring, in proportion to its
//!   weight; a key goes to the first point at or after its hash.
//! - **maglev** (Google's Maglev paper): a fixed-size lookup table filled from per-endpoint permutations;
//!   lookups are one array index and the spread is more even than a ring's, at the cost of a rebuild
//!   touching the whole table.
//!
//! Hashes are xxHash64 (seed 0, from `twox-hash`), stable across processes and releases, so every
//! proxy of a fleet sends a key to the same endpoint. The tables are written here: each is a few
//! dozen lines, and the small crates that offer one fix their own hash or node naming, which would
//! tie fleet-wide placement to a dependency's choices.

use std::sync::Arc;

use twox_hash::XxHash64;

use super::Endpoint;

/// Ring points per unit of weight (Ketama's 160). Fixed, so adding or removing an endpoint moves
/// only that endpoint's keys.
const POINTS_PER_WEIGHT: u64 = 160;
/// Ceiling on the ring's size; beyond it every endpoint's share is scaled down together.
const MAX_RING_POINTS: u64 = 1 << 20;
/// Maglev table size: a prime well above the endpoint count (Envoy's default).
const MAGLEV_TABLE_SIZE: usize = 65537;

/// The stable 64-bit hash used for keys and table construction.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    XxHash64::oneshot(0, bytes)
}

/// A ring of (point, endpoint index), sorted by point.
#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// Places `POINTS_PER_WEIGHT × weight` points per endpoint (scaled down if the ring would exceed
    /// `MAX_RING_POINTS`), at the hashes of `"<address>_<n>"`.
    pub(crate) fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let wanted: u64 = endpoints
            .iter()
            .map(|e| POINTS_PER_WEIGHT * u64::from(e.weight()))
            .sum();
        let scale = (MAX_RING_POINTS as f64 / wanted.max(1) as f64).min(1.0);
        let mut points = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let share =
                (scale * (POINTS_PER_WEIGHT * u64::from(endpoint.weight())) as f64).ceil() as u64;
            for n in 0..share.max(1) {
                points.push((
                    hash(format!("{}_{n}", endpoint.address()).as_bytes()),
                    index,
                ));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The endpoint owning `key`; `None` if the ring is empty.
    pub(crate) fn pick(&self, key: u64) -> Option<usize> {
        let at = self.points.partition_point(|(point, _)| *point < key);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map(|(_, index)| *index)
    }
}

/// A Maglev lookup table: entry `key % size` names the endpoint.
#[derive(Debug)]
pub(crate) struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Fills the table: in each round every endpoint claims, `weight` times, the next free slot of its
    /// own permutation `(offset + j × skip) mod size`, until every slot is taken.
    pub(crate) fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        if endpoints.is_empty() {
            return Self { table: Vec::new() };
        }
        let size = MAGLEV_TABLE_SIZE as u64;
        let permutations: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|endpoint| {
                let name = endpoint.address().as_str().as_bytes();
                let offset = XxHash64::oneshot(0, name) % size;
                let skip = XxHash64::oneshot(1, name) % (size - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut table = vec![u32::MAX; MAGLEV_TABLE_SIZE];
        let mut next = vec![0u64; endpoints.len()];
        let mut filled = 0;
        'fill: loop {
            for (index, endpoint) in endpoints.iter().enumerate() {
                for _ in 0..endpoint.weight() {
                    let (offset, skip) = permutations[index];
                    let slot = loop {
                        let slot = ((offset + next[index] * skip) % size) as usize;
                        next[index] += 1;
                        if table[slot] == u32::MAX {
                            break slot;
                        }
                    };
                    table[slot] = index as u32;
                    filled += 1;
                    if filled == MAGLEV_TABLE_SIZE {
                        break 'fill;
                    }
                }
            }
        }
        Self { table }
    }

    /// The endpoint for `key`; `None` if there are no endpoints.
    pub(crate) fn pick(&self, key: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        self.table
            .get((key % self.table.len() as u64) as usize)
            .map(|index| *index as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;

    fn shares(pick: impl Fn(u64) -> Option<usize>, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for key in 0..30_000u64 {
            if let Some(i) = pick(hash(&key.to_le_bytes())) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn ring_spreads_by_weight_and_is_stable() {
        let eps = endpoints(&[1, 1, 2]);
        let ring = Ring::new(&eps);
        let counts = shares(|k| ring.pick(k), 3);
        assert!((6_000..9_000).contains(&counts[0]), "{counts:?}");
        assert!((12_000..18_000).contains(&counts[2]), "{counts:?}");
        assert_eq!(ring.pick(42), Ring::new(&eps).pick(42));
    }

    #[test]
    fn ring_moves_only_the_removed_endpoints_keys() {
        let eps = endpoints(&[1, 1, 1, 1]);
        let (before, after) = (Ring::new(&eps), Ring::new(&eps[..3]));
        for key in 0..5_000u64 {
            let key = hash(&key.to_le_bytes());
            if let (Some(old), Some(new)) = (before.pick(key), after.pick(key))
                && old != 3
            {
                assert_eq!(old, new, "a key of a remaining endpoint moved");
            }
        }
    }

    #[test]
    fn maglev_fills_evenly_by_weight() {
        let eps = endpoints(&[1, 1, 2]);
        let maglev = Maglev::new(&eps);
        let mut slots = [0usize; 3];
        for index in &maglev.table {
            slots[*index as usize] += 1;
        }
        assert_eq!(slots.iter().sum::<usize>(), MAGLEV_TABLE_SIZE);
        let quarter = MAGLEV_TABLE_SIZE / 4;
        assert!(
            slots[0].abs_diff(quarter) < 100 && slots[2].abs_diff(2 * quarter) < 100,
            "{slots:?}"
        );
        assert_eq!(Maglev::new(&[]).pick(1), None);
    }

    #[test]
    fn maglev_mostly_keeps_keys_when_an_endpoint_leaves() {
        let eps = endpoints(&[1, 1, 1, 1, 1]);
        let (before, after) = (Maglev::new(&eps), Maglev::new(&eps[..4]));
        let kept = before
            .table
            .iter()
            .zip(&after.table)
            .filter(|(old, new)| **old != 4 && old == new)
            .count();
        let owned_by_rest = before.table.iter().filter(|old| **old != 4).count();
        // Maglev trades perfect stability for evenness: a small fraction of other keys may move.
        assert!(
            kept * 100 >= owned_by_rest * 90,
            "{kept} of {owned_by_rest} kept"
        );
    }
}
