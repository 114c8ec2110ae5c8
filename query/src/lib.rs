//! Queries over stored spans and metric points, with DataFusion.
//!
//! Generic engine wiring (session, limits, the table provider over memtable ∪ Parquet) lives apart from
//! the span-domain queries (trace assembly, search, services), which are built on it.
//!
//! ```text
//! Store::snapshot ─► StoreTable (time pruning) ─► DataFusion ─► QueryEngine::{sql, trace, search, services}
//! ```

pub mod engine;
pub mod error;
mod file_columns;
pub mod format;
pub mod search;
mod string_views;
pub mod table;
pub mod trace;
mod trace_filter;
pub mod udf;
mod views;

pub use engine::{QueryEngine, QueryLimits};
pub use error::{QueryError, Result};
pub use format::QueryResult;
pub use search::{CompareOp, Comparison, Operation, SearchRequest, TraceSummary};
pub use trace::TraceSpan;
