//! Durable storage of spans and metric points.
//!
//! An accepted OTLP export is appended to the write-ahead log and fsynced (group commit) before it is
//! acknowledged; the same bytes, converted to Arrow, go into the memtable, where queries see them at
//! once. The memtable is flushed by size and age into time-partitioned Parquet files listed in a
//! manifest; small files are compacted and old partitions dropped by retention. All file I/O but the
//! WAL goes through `object_store`, so the store can live on a local disk or an S3-compatible bucket.
//!
//! ```text
//! OTLP request ─► convert (OTLP → Arrow) ─► wal (fsync) ─► memtable ─flush─► parquet + manifest
//!                                                            │                    │
//!                                                            └──── snapshot ◄─────┘  (read by query)
//! ```

mod compaction;
pub mod convert;
pub mod manifest;
pub mod memtable;
pub mod parquet_io;
pub mod schema;
pub mod store;
pub mod trace_index;
pub mod wal;

/// Arrow, re-exported so crates that read stored batches use the same version as storage.
pub use datafusion::arrow;
pub use datafusion::arrow::record_batch::RecordBatch;
pub use memtable::TimeRange;
pub use schema::Table;
pub use store::{Snapshot, Store, StoreOptions};
pub use trace_index::TraceIndex;

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The write-ahead log failed (disk full, I/O error, closed).
    #[error("write-ahead log: {0}")]
    Wal(#[from] wal::WalError),
    /// Converting between OTLP and Arrow failed.
    #[error("conversion: {0}")]
    Convert(#[from] convert::ConvertError),
    /// A stored OTLP record no longer decodes.
    #[error("stored record does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Arrow rejected a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The object store failed.
    #[error("object store: {0}")]
    Object(#[from] object_store::Error),
    /// Sorting rows into the on-disk order failed.
    #[error("sorting rows: {0}")]
    Sort(String),
    /// Merging files during compaction failed.
    #[error("compaction merge: {0}")]
    Merge(String),
    /// Local file-system I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A background task panicked or was cancelled.
    #[error("background task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A store file has content we cannot read.
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// Which file.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing to a store opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
    /// The directory holds no store.
    #[error("{0} holds no Meshscope data (no manifest.json or wal/)")]
    NotAStore(String),
}
