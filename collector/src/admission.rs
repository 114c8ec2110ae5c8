//! Admission control: a memory budget shared by requests being processed, rows waiting in the
//! memtable, and the working memory of flushes and compactions. A request that would overrun it is
//! refused with a retryable error before any work is done, so the collector never grows without bound
//! and never drops what it has acknowledged.
//!
//! The budget counts Arrow and request bytes, but the process holds more than it counts (sorted copies
//! and encoder buffers of a flush, memory the allocator keeps after a free): under sustained overload
//! its resident memory measured 1.3–2× the budget. So the process's resident memory is checked too, as
//! the OpenTelemetry Collector's memory limiter checks its heap. While it is over the limit, requests
//! are refused as long as enough rows wait unflushed that a flush frees memory; with less than that
//! unflushed, refusing could not bring it down, and requests are admitted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshscope_storage::Store;

use crate::error::IngestError;

/// Decoded OTLP plus its Arrow rows take several times the wire size; this factor reserves for that.
const EXPANSION: usize = 6;

/// While the process is over the limit, requests are refused only when at least this share of the
/// limit (1/8) waits unflushed in the memtable.
const UNFLUSHED_SHARE_UNDER_PRESSURE: usize = 8;

/// The resident memory is read at most this often.
const RESIDENT_REFRESH: Duration = Duration::from_millis(10);

/// The memory budget.
pub struct Admission {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
    store: Arc<Store>,
    /// The last reading of the process's resident memory, and when it was taken.
    resident: Mutex<Option<(Instant, usize)>>,
}

/// Memory reserved for one request; released on drop.
pub struct Permit {
    bytes: usize,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Admission {
    /// A budget of `limit` bytes covering in-flight requests and the store's memory.
    pub fn new(limit: usize, store: Arc<Store>) -> Admission {
        Admission {
            limit,
            in_flight: Arc::new(AtomicUsize::new(0)),
            store,
            resident: Mutex::new(None),
        }
    }

    /// Reserves memory for a request whose body is `body_bytes` long, or refuses it (and asks the store
    /// to flush, which frees the memtable's share).
    pub fn admit(&self, body_bytes: usize) -> Result<Permit, IngestError> {
        let wanted = body_bytes.saturating_mul(EXPANSION);
        let before = self.in_flight.fetch_add(wanted, Ordering::AcqRel);
        let permit = Permit {
            bytes: wanted,
            in_flight: self.in_flight.clone(),
        };
        let counted = before + self.store.memory_bytes();
        let resident = self.resident_bytes();
        if over_limit(
            Usage {
                counted,
                wanted,
                resident,
                unflushed: self.store.memtable_bytes(),
            },
            self.limit,
        ) {
            self.store.request_flush();
            return Err(IngestError::Overloaded {
                used: counted.max(resident),
                limit: self.limit,
            });
        }
        Ok(permit)
    }

    /// The process's resident memory, read again when the last reading is older than
    /// [`RESIDENT_REFRESH`]; 0 where it cannot be read.
    fn resident_bytes(&self) -> usize {
        let mut last = self
            .resident
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match *last {
            Some((at, bytes)) if at.elapsed() < RESIDENT_REFRESH => bytes,
            _ => {
                let bytes = read_resident_bytes().unwrap_or(0);
                *last = Some((Instant::now(), bytes));
                bytes
            }
        }
    }

    /// Bytes reserved by requests in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// What one admission decision looks at, in bytes.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Counted by the budget: requests in flight, the memtable, flush and compaction working sets.
    counted: usize,
    /// Reserved for the request being admitted.
    wanted: usize,
    /// Resident memory of the process (0: unknown).
    resident: usize,
    /// Rows waiting in the memtable.
    unflushed: usize,
}

/// Whether a request must be refused: the budget's count would exceed `limit`, or the process is
/// over `limit` while enough rows wait unflushed that a flush would bring it down.
fn over_limit(usage: Usage, limit: usize) -> bool {
    usage.counted + usage.wanted > limit
        || (usage.resident > limit && usage.unflushed >= limit / UNFLUSHED_SHARE_UNDER_PRESSURE)
}

/// Resident memory of this process from `/proc/self/status` (Linux); `None` where it cannot be read.
fn read_resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 30;

    fn usage(counted: usize, resident: usize, unflushed: usize) -> Usage {
        Usage {
            counted,
            wanted: 1 << 20,
            resident,
            unflushed,
        }
    }

    #[test]
    fn the_counted_budget_refuses_whatever_the_resident_memory() {
        assert!(over_limit(usage(LIMIT, 0, 0), LIMIT));
        assert!(!over_limit(usage(LIMIT / 2, LIMIT / 2, LIMIT / 2), LIMIT));
    }

    #[test]
    fn over_the_limit_in_resident_memory_refuses_while_a_flush_would_help() {
        let resident = LIMIT + LIMIT / 2;
        assert!(over_limit(usage(LIMIT / 2, resident, LIMIT / 8), LIMIT));
        assert!(!over_limit(
            usage(LIMIT / 2, resident, LIMIT / 8 - 1),
            LIMIT
        ));
        assert!(!over_limit(usage(LIMIT / 2, LIMIT, LIMIT / 2), LIMIT));
    }

    #[test]
    fn the_resident_memory_of_this_process_is_read() {
        let bytes = read_resident_bytes().expect("/proc/self/status has VmRSS on Linux");
        let buffer = vec![1u8; 64 << 20];
        let after = read_resident_bytes().expect("VmRSS");
        assert!(
            after >= bytes + (32 << 20),
            "{bytes} → {after} with 64 MiB touched"
        );
        drop(buffer);
    }
}
