//! The memtable: Arrow batches that are durable in the WAL but not yet in Parquet.
//!
//! Batches arrive in WAL sequence order (the WAL's writer thread inserts them after each fsync), so the
//! memtable is always a prefix-closed run of sequence numbers: a flush takes every chunk up to some
//! sequence number, writes it to Parquet, and only then removes exactly those chunks.

use std::sync::RwLock;
use std::time::Instant;

use datafusion::arrow::array::{Array, TimestampNanosecondArray};
use datafusion::arrow::record_batch::RecordBatch;

use crate::schema::Table;

/// An inclusive range of Unix nanoseconds used to skip batches and files that cannot match a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest instant, inclusive.
    pub start: i64,
    /// Latest instant, inclusive.
    pub end: i64,
}

impl TimeRange {
    /// The range that contains every instant.
    pub const ALL: TimeRange = TimeRange {
        start: i64::MIN,
        end: i64::MAX,
    };

    /// True when the two ranges share at least one instant.
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The min and max of a batch's time column, or `None` for an empty batch.
    pub fn of_batch(table: Table, batch: &RecordBatch) -> Option<TimeRange> {
        let column = batch.column_by_name(table.time_column())?;
        let times = column.as_any().downcast_ref::<TimestampNanosecondArray>()?;
        let start = datafusion::arrow::compute::min(times)?;
        let end = datafusion::arrow::compute::max(times)?;
        Some(TimeRange { start, end })
    }
}

/// One appended batch with its WAL sequence number.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// WAL sequence number of the record the batch came from.
    pub seq: u64,
    /// The table the rows belong to.
    pub table: Table,
    /// The rows.
    pub batch: RecordBatch,
    /// Time span of the rows, for pruning.
    pub time_range: TimeRange,
    /// Arrow memory the rows hold.
    pub bytes: usize,
}

#[derive(Default)]
struct Inner {
    chunks: Vec<Chunk>,
    bytes: usize,
    oldest: Option<Instant>,
}

/// Batches waiting for the next flush, readable by queries.
#[derive(Default)]
pub struct Memtable {
    inner: RwLock<Inner>,
}

impl Memtable {
    /// Adds a batch; called in WAL sequence order.
    pub fn insert(&self, seq: u64, table: Table, batch: RecordBatch) {
        let Some(time_range) = TimeRange::of_batch(table, &batch) else {
            return;
        };
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bytes = batch.get_array_memory_size();
        inner.bytes += bytes;
        inner.oldest.get_or_insert_with(Instant::now);
        inner.chunks.push(Chunk {
            seq,
            table,
            batch,
            time_range,
            bytes,
        });
    }

    /// The batches of `table` newer than `after_seq` whose rows may fall in `range`.
    pub fn snapshot(&self, table: Table, range: TimeRange, after_seq: u64) -> Vec<RecordBatch> {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner
            .chunks
            .iter()
            .filter(|chunk| {
                chunk.seq > after_seq && chunk.table == table && chunk.time_range.overlaps(&range)
            })
            .map(|chunk| chunk.batch.clone())
            .collect()
    }

    /// Every chunk present now, for a flush.
    pub fn chunks(&self) -> Vec<Chunk> {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.chunks.clone()
    }

    /// Removes the chunks with a sequence number up to `seq`, once they are safely in Parquet.
    pub fn remove_through(&self, seq: u64) {
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.chunks.retain(|chunk| chunk.seq > seq);
        inner.bytes = inner.chunks.iter().map(|chunk| chunk.bytes).sum();
        inner.oldest = if inner.chunks.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
    }

    /// Arrow memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .bytes
    }

    /// When the oldest unflushed chunk arrived, if any.
    pub fn oldest(&self) -> Option<Instant> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .oldest
    }
}
