//! Telemetry: trace context propagation and one span per proxied request or attempt, exported over
//! OTLP/gRPC, and the proxy's own metrics exported on an interval the same way.
//!
//! ```text
//! caller ──traceparent──► inbound: SERVER span ──traceparent(SERVER)──► app
//! app ──traceparent──► outbound: CLIENT span per attempt ──traceparent(CLIENT)──► next proxy
//! every metrics_interval: routes' and upstreams' counters ──► OTLP metrics ──► collector
//! ```
//!
//! Without `[telemetry] otlp_endpoint` none of this runs and trace headers pass through untouched.

mod context;
mod export;
mod fixed;
mod metric_export;
mod metric_points;
mod span;
mod wire;

pub(crate) use context::TraceContext;
pub(crate) use export::{ExportCounters, Exporter, Tracer};
pub(crate) use fixed::FixedAttribute;
pub(crate) use metric_export::MetricExporter;
pub(crate) use span::{AttemptFacts, RequestFacts, Sampling, SpanRecord};
