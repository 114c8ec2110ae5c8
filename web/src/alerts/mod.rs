//! Alerting over HTTP: the JSON API under `/api/alerts`, the pages under `/alerts`, and the adapter
//! that lets the collector's evaluator run SQL on the query engine.

pub mod api;
pub mod editor;
pub mod overview;
pub mod query;

use axum::Router;
use axum::routing::{get, post};
use meshscope_collector::alerts::Alerts;

/// Every alerting route, with its own state (the alert handle), to merge into the app.
pub fn routes<S: Clone + Send + Sync + 'static>(alerts: Alerts) -> Router<S> {
    Router::new()
        .route("/api/alerts", get(api::instances))
        .route("/api/alerts/rules", get(api::rules).post(api::create))
        .route(
            "/api/alerts/rules/{name}",
            get(api::rule).put(api::replace).delete(api::delete),
        )
        .route("/api/alerts/deliveries", get(api::deliveries))
        .route("/alerts", get(overview::overview))
        .route("/alerts/new", get(editor::new_rule))
        .route("/alerts/rules", post(editor::save_rule))
        .route("/alerts/rules/{name}", get(editor::edit_rule))
        .route("/alerts/rules/{name}/delete", post(editor::delete_rule))
        .with_state(alerts)
}
