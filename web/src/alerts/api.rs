//! The alerting JSON API: rules (list, create, replace, delete), instances with their state, and the
//! delivery log. `docs/api.md` documents every route.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meshscope_collector::alerts::{AlertError, Alerts, Rule};
use serde_json::{Value, json};

use crate::error::ApiError;

impl From<AlertError> for ApiError {
    fn from(error: AlertError) -> ApiError {
        match error {
            AlertError::Invalid(message) => ApiError::bad_request(message),
            AlertError::NotFound(_) => ApiError::not_found(error.to_string()),
            AlertError::Io(..) => ApiError::internal(error.to_string()),
        }
    }
}

/// A rule in a request body; a JSON error names the field.
fn parse_rule(body: &[u8]) -> Result<Rule, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("rule: {error}")))
}

/// `GET /api/alerts/rules`: every rule with its state, last evaluation and error.
pub async fn rules(State(alerts): State<Alerts>) -> Json<Value> {
    Json(json!({ "rules": alerts.rules() }))
}

/// `GET /api/alerts/rules/{name}`: one rule with its state.
pub async fn rule(
    State(alerts): State<Alerts>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let status = alerts
        .rule(&name)
        .ok_or_else(|| ApiError::from(AlertError::NotFound(name)))?;
    Ok(Json(json!(status)))
}

/// `POST /api/alerts/rules`: creates a rule (409 when the name is taken).
pub async fn create(
    State(alerts): State<Alerts>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let rule = parse_rule(&body)?;
    if alerts.rule(&rule.name).is_some() {
        return Err(ApiError::conflict(format!(
            "a rule named {:?} already exists; PUT /api/alerts/rules/{{name}} replaces it",
            rule.name
        )));
    }
    let name = rule.name.clone();
    alerts.save_rule(None, rule).await?;
    Ok((StatusCode::CREATED, Json(json!(alerts.rule(&name)))).into_response())
}

/// `PUT /api/alerts/rules/{name}`: replaces (and possibly renames) a rule.
pub async fn replace(
    State(alerts): State<Alerts>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let rule = parse_rule(&body)?;
    let new_name = rule.name.clone();
    alerts.save_rule(Some(&name), rule).await?;
    Ok(Json(json!(alerts.rule(&new_name))))
}

/// `DELETE /api/alerts/rules/{name}`.
pub async fn delete(
    State(alerts): State<Alerts>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    alerts.delete_rule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/alerts`: every instance of every rule, with its rule's name.
pub async fn instances(State(alerts): State<Alerts>) -> Json<Value> {
    let instances: Vec<Value> = alerts
        .rules()
        .into_iter()
        .flat_map(|status| {
            let rule = status.rule.name;
            status.instances.into_iter().map(move |instance| {
                let mut value = json!(instance);
                value["rule"] = json!(rule);
                value
            })
        })
        .collect();
    Json(json!({ "alerts": instances }))
}

/// `GET /api/alerts/deliveries`: the delivery log (newest first) and each receiver's counters.
pub async fn deliveries(State(alerts): State<Alerts>) -> Json<Value> {
    Json(json!({ "receivers": alerts.receivers(), "deliveries": alerts.deliveries() }))
}
