//! The HTTP face of Meshscope: the web UI, the native JSON API and the Jaeger-compatible query API,
//! all over the query engine.
//!
//! ```text
//! browser ─► ui pages (askama, SVG) ─┐
//! client  ─► /api (native JSON)     ─┼─► QueryEngine ─► Store
//! Grafana ─► /jaeger/api (Jaeger)   ─┘
//! browser, client ─► /alerts, /api/alerts ─► the collector's Alerts handle
//! ```

pub mod alerts;
pub mod api;
pub mod assets;
pub mod error;
pub mod format;
pub mod jaeger;
pub mod params;
pub mod rows;
pub mod svg;
pub mod ui;
pub mod window;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use meshscope_collector::alerts::Alerts;
use meshscope_query::QueryEngine;

/// Defence in depth for the pages: scripts only from our own `/static`, no plugins, no framing. Inline
/// styles are allowed (bar positions and service colours); inline scripts are not.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The router of every route, apart from `main` so handlers can be tested without a socket.
pub fn app(engine: Arc<QueryEngine>, alerts: Alerts) -> Router {
    Router::new()
        .route("/api/health", get(api::health))
        .route("/api/sql", post(api::sql))
        .route("/api/traces/{trace_id}", get(api::trace))
        .route("/api/search", get(api::search))
        .route("/api/services", get(api::services))
        .route("/api/services/{service}/operations", get(api::operations))
        .merge(ui::routes())
        .merge(alerts::routes(alerts))
        .nest("/jaeger", jaeger::routes())
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(engine)
}

async fn secure_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
