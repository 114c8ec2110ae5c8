//! Meshscope's data plane: the sidecar proxy that carries traffic between services.
//!
//! ```text
//!  app A ──► outbound listener ──► route ──► split ──► balancer ──► endpoint (proxy B / app B)
//!  mesh  ──► inbound listener  ──────────────────────────────────► local app
//!  client ─► [[tcp]] listener ─────────────────────► balancer ──► endpoint (bytes only)
//! ```
//!
//! HTTP/1.1, h2c and gRPC pass through with streaming bodies and trailers; routes carry timeouts,
//! retries (under a budget, with teed bodies), rate limits, faults, header rewrites and mirrors;
//! upstreams carry a balancer, outlier ejection, a circuit breaker, an optional adaptive concurrency
//! limit and endpoint discovery; every
//! request is traced (W3C trace context, OTLP export) and counted (admin `/metrics`).
//!
//! [`run_file`] is the whole sidecar: it loads a configuration file, serves it, and applies each
//! valid new version of the file. For more control, load a [`Config`] with [`config::load`] and call
//! [`run`], or [`Proxy::bind`] (to learn the bound addresses), [`Proxy::reload_handle`] and
//! [`Proxy::serve`]. The file format is described in
//! `docs/proxy-config.md`, the design in `docs/proxy.md`.

pub mod config;

mod admin;
mod balance;
mod body;
mod breaker;
mod build;
mod concurrency;
mod discovery;
mod forward;
mod h2c;
mod headers;
mod health_check;
mod outlier;
mod pool;
mod reload;
mod retry;
mod route;
mod server;
mod signals;
mod stats;
mod tcp;
mod telemetry;
mod traffic;
mod upgrade;
mod upstream;

pub use config::{Config, ConfigError};
pub use reload::ReloadHandle;
pub use server::{BoundAddresses, Proxy, ProxyError, run, run_file};
