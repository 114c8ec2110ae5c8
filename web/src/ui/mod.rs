//! The web UI: server-rendered pages (askama templates under `web/templates/`), SVG plots drawn on
//! the server, and a little JavaScript where a page needs interaction. `docs/ui.md` describes each page.

pub mod edges;
pub mod graph;
pub mod page;
pub mod red;
pub mod search;
pub mod services;
pub mod sql;
pub mod trace;
pub mod waterfall;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use meshscope_query::QueryEngine;

/// Every page route.
pub fn routes() -> Router<Arc<QueryEngine>> {
    Router::new()
        .route("/", get(services::overview))
        .route("/services/{service}", get(services::service))
        .route("/search", get(search::search))
        .route("/trace/{trace_id}", get(trace::trace))
        .route("/graph", get(graph::graph))
        .route("/sql", get(sql::console))
        .route("/sql/csv", get(sql::csv))
        .route("/static/{file}", get(crate::assets::file))
}
