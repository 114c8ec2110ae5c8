//! Telemetry: trace context propagation and one span per proxied request or attempt, exported over
//! OTLP/gRPC.
//!
//! ```text
//! caller ──traceparent──► inbound: SERVER span ──traceparent(SERVER)──► app
//! app ──traceparent──► outbound: CLIENT span per attempt ──traceparent(CLIENT)──► next proxy
//! ```
//!
//! Without `[telemetry] otlp_endpoint` none of this runs and trace headers pass through untouched.

mod context;
mod export;
mod span;

pub(crate) use context::TraceContext;
pub(crate) use export::{Exporter, SpanCounters, Tracer};
pub(crate) use span::{AttemptFacts, RequestFacts, Sampling, SpanRecord};
