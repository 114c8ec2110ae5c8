//! Meshscope's data plane: the sidecar proxy that carries traffic between services.
//!
//! ```text
//!  app A ──► outbound listener ──► route ──► split ──► balancer ──► endpoint (proxy B / app B)
//!  mesh  ──► inbound listener  ──────────────────────────────────► local app
//! ```
//!
//! Load a [`Config`] with [`config::load`], then call [`run`] (or [`Proxy::bind`] and
//! [`Proxy::serve`] to learn the bound addresses first). The file format is described in
//! `docs/proxy-config.md`, the design in `docs/proxy.md`.

pub mod config;

mod balance;
mod body;
mod forward;
mod headers;
mod retry;
mod route;
mod server;
mod upstream;

pub use config::{Config, ConfigError};
pub use server::{BoundAddresses, Proxy, ProxyError, run};
