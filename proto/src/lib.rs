//! OTLP wire types for every Meshscope crate.
//!
//! Re-exports the generated OTLP messages and tonic services from `opentelemetry-proto` (prost types with
//! the OTLP/JSON serde mapping: hex ids, int64 as strings, camelCase names), so storage, collector and the
//! proxy share one definition and one version.
//!
//! ```text
//! opentelemetry-proto (prost + tonic + serde) ──► meshscope-proto ──► storage, collector, proxy
//! ```
//!
//! It also holds the mesh control API that only Meshscope speaks: [`signals`], compiled from
//! `proto/meshscope/signals/v1/signals.proto` at build time.

pub use opentelemetry_proto::tonic::collector;
pub use opentelemetry_proto::tonic::common::v1 as common;
pub use opentelemetry_proto::tonic::metrics::v1 as metrics;
pub use opentelemetry_proto::tonic::resource::v1 as resource;
pub use opentelemetry_proto::tonic::trace::v1 as trace;
pub use prost;

/// Fleet signals: the collector's per-endpoint health verdicts, streamed to proxies
/// (`meshscope.signals.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod signals {
    tonic::include_proto!("meshscope.signals.v1");
}
