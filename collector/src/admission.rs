//! Admission control: a memory budget shared by requests being processed, rows waiting in the
//! memtable, and the working memory of flushes and compactions. A request that would overrun it is
//! refused with a retryable error before any work is done, so the collector never grows without bound
//! and never drops what it has acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use meshscope_storage::Store;

use crate::error::IngestError;

/// Decoded OTLP plus its Arrow rows take several times the wire size; this factor reserves for that.
const EXPANSION: usize = 6;

/// The memory budget.
pub struct Admission {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
    store: Arc<Store>,
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
        let used = before + self.store.memory_bytes();
        if used + wanted > self.limit {
            self.store.request_flush();
            return Err(IngestError::Overloaded {
                used,
                limit: self.limit,
            });
        }
        Ok(permit)
    }

    /// Bytes reserved by requests in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}
