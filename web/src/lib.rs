//! The HTTP face of Meshscope: the JSON API over the query engine (the UI joins it later).
//!
//! ```text
//! client ─► axum Router (app) ─► api handlers ─► QueryEngine ─► Store
//! ```

pub mod api;
pub mod error;
pub mod params;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use meshscope_query::QueryEngine;

/// The router of every route, apart from `main` so handlers can be tested without a socket.
pub fn app(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/health", get(api::health))
        .route("/api/sql", post(api::sql))
        .route("/api/traces/{trace_id}", get(api::trace))
        .route("/api/search", get(api::search))
        .route("/api/services", get(api::services))
        .route("/api/services/{service}/operations", get(api::operations))
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .with_state(engine)
}
