//! The Jaeger-compatible query API under `/jaeger/api/…`, so Grafana's Jaeger data source (URL
//! `http://host:8686/jaeger`) and Jaeger's UI can read Meshscope. A prefix keeps it apart from the
//! native `/api/…` routes, which share two paths with Jaeger but answer in OTLP's shapes.
//! `docs/api.md` lists the routes and where the answers differ from Jaeger's.

pub mod model;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meshscope_query::{QueryEngine, SearchRequest};
use serde::Serialize;

use crate::error::ApiError;
use crate::params::{add_attribute_filter, parse_duration};
use crate::ui::edges;
use crate::window::Window;
use model::{Dependency, Envelope, ErrorItem};

/// The Jaeger routes, relative to the `/jaeger` prefix.
pub fn routes() -> Router<Arc<QueryEngine>> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/dependencies", get(dependencies))
}

/// An error in Jaeger's envelope: `{"data": null, "errors": [{"code", "msg"}], …}`.
pub struct JaegerError(ApiError);

impl<E: Into<ApiError>> From<E> for JaegerError {
    fn from(error: E) -> JaegerError {
        JaegerError(error.into())
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = Envelope::<Option<()>> {
            data: None,
            total: 0,
            limit: 0,
            offset: 0,
            errors: Some(vec![ErrorItem {
                code: status.as_u16(),
                msg: self.0.message().to_owned(),
            }]),
        };
        (status, Json(body)).into_response()
    }
}

type JaegerResult<T> = Result<Json<Envelope<T>>, JaegerError>;

fn envelope<T: Serialize>(data: T, total: usize) -> Json<Envelope<T>> {
    Json(Envelope {
        data,
        total,
        limit: 0,
        offset: 0,
        errors: None,
    })
}

async fn services(State(engine): State<Arc<QueryEngine>>) -> JaegerResult<Vec<String>> {
    let services = engine.services().await?;
    let total = services.len();
    Ok(envelope(services, total))
}

/// Span names only, as Jaeger's `/api/services/{service}/operations` (kinds merged).
async fn service_operations(
    State(engine): State<Arc<QueryEngine>>,
    Path(service): Path<String>,
) -> JaegerResult<Vec<String>> {
    let mut names: Vec<String> = engine
        .operations(&service)
        .await?
        .into_iter()
        .map(|op| op.name)
        .collect();
    names.dedup();
    let total = names.len();
    Ok(envelope(names, total))
}

/// One entry of `/api/operations`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OperationEntry {
    name: String,
    span_kind: String,
}

async fn operations(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> JaegerResult<Vec<OperationEntry>> {
    let pairs = pairs(query.as_deref())?;
    let service = value(&pairs, "service")
        .ok_or_else(|| ApiError::bad_request("parameter service is required"))?;
    let kind = value(&pairs, "spanKind").unwrap_or_default();
    let entries: Vec<OperationEntry> = engine
        .operations(&service)
        .await?
        .into_iter()
        .filter(|op| kind.is_empty() || op.kind == kind)
        .map(|op| OperationEntry {
            name: op.name,
            span_kind: op.kind,
        })
        .collect();
    let total = entries.len();
    Ok(envelope(entries, total))
}

fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|error| ApiError::bad_request(format!("query string: {error}")))
}

fn value(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.clone())
}

fn micros(text: &str, what: &str) -> Result<i64, ApiError> {
    text.trim()
        .parse::<i64>()
        .map(|us| us.saturating_mul(1_000))
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{what} {text:?} must be microseconds since the epoch"
            ))
        })
}

/// Jaeger's search parameters as a search request: `service` (repeatable: any of them), `operation`,
/// `tags` (a JSON object) or `tag=key:value` (repeatable), `minDuration`, `maxDuration`, `start`,
/// `end` (µs), `lookback` (`1h`, or `custom` to use `start`), `limit`.
fn search_request(pairs: &[(String, String)], now_ns: i64) -> Result<SearchRequest, ApiError> {
    let mut request = SearchRequest {
        limit: 20,
        ..SearchRequest::default()
    };
    let mut tag_pairs: Vec<(String, String)> = Vec::new();
    let mut lookback = None;
    for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        match key.as_str() {
            "service" => request.services.push(value.clone()),
            "operation" => request.span_name = Some(value.clone()),
            "tags" => {
                let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(value)
                    .map_err(|error| {
                    ApiError::bad_request(format!("tags must be a JSON object: {error}"))
                })?;
                for (k, v) in map {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    tag_pairs.push((k, text));
                }
            }
            "tag" => {
                let (k, v) = value.split_once(':').ok_or_else(|| {
                    ApiError::bad_request(format!("tag {value:?} must be key:value"))
                })?;
                tag_pairs.push((k.to_owned(), v.to_owned()));
            }
            "minDuration" => request.min_duration_ns = Some(parse_duration(value)?),
            "maxDuration" => request.max_duration_ns = Some(parse_duration(value)?),
            "start" => request.start_ns = Some(micros(value, "start")?),
            "end" => request.end_ns = Some(micros(value, "end")?),
            "lookback" => lookback = Some(value.clone()),
            "limit" => {
                request.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|limit| (1..=1_000).contains(limit))
                    .ok_or_else(|| ApiError::bad_request("limit must be 1 to 1000"))?
            }
            _ => {}
        }
    }
    for (key, value) in tag_pairs {
        // Jaeger's `error=true` is the OTLP status; every other tag is an attribute.
        if key == "error" && (value == "true" || value == "false") {
            if value == "true" {
                request.status = Some("error".to_owned());
            }
            continue;
        }
        add_attribute_filter(&mut request, &format!("{key}={value}"))?;
    }
    if request.start_ns.is_none()
        && let Some(lookback) = lookback.filter(|l| l != "custom")
    {
        let end = request.end_ns.unwrap_or(now_ns);
        request.start_ns = Some(end - parse_duration(&lookback)?);
    }
    Ok(request)
}

async fn find_traces(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> JaegerResult<Vec<model::Trace>> {
    let pairs = pairs(query.as_deref())?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let request = search_request(&pairs, now)?;
    let mut traces = Vec::new();
    for summary in engine.search(&request).await? {
        let Ok(id) = hex::decode(&summary.trace_id) else {
            continue;
        };
        let spans = engine.trace(&id).await?;
        if !spans.is_empty() {
            traces.push(model::trace(&id, &spans));
        }
    }
    let total = traces.len();
    Ok(envelope(traces, total))
}

/// A trace id of 1 to 32 hex digits, left-padded to 16 bytes as Jaeger does for 64-bit ids.
fn parse_trace_id(text: &str) -> Result<Vec<u8>, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{text:?} is not a trace id (up to 32 hex digits)"
        )));
    }
    let padded = format!("{text:0>32}");
    hex::decode(padded).map_err(|error| ApiError::bad_request(error.to_string()))
}

async fn trace(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
) -> JaegerResult<Vec<model::Trace>> {
    let id = parse_trace_id(&trace_id)?;
    let spans = engine.trace(&id).await?;
    if spans.is_empty() {
        return Err(JaegerError(ApiError::not_found("trace not found")));
    }
    Ok(envelope(vec![model::trace(&id, &spans)], 0))
}

async fn dependencies(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> JaegerResult<Vec<Dependency>> {
    let pairs = pairs(query.as_deref())?;
    let millis = |key: &str, default: i64| -> Result<i64, ApiError> {
        value(&pairs, key).map_or(Ok(default), |text| {
            text.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{key} {text:?} must be milliseconds")))
        })
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let end_ms = millis("endTs", now_ms)?;
    let lookback_ms = millis("lookback", 86_400_000)?;
    if lookback_ms <= 0 {
        return Err(JaegerError(ApiError::bad_request(
            "lookback must be positive",
        )));
    }
    let window = Window {
        name: "",
        seconds: (lookback_ms / 1_000).max(1),
        end_ns: end_ms.saturating_mul(1_000_000),
    };
    let links: Vec<Dependency> = edges::edges(&engine, &window)
        .await?
        .into_iter()
        .filter(|edge| !edge.virtual_caller && !edge.virtual_callee)
        .map(|edge| Dependency {
            parent: edge.caller,
            child: edge.callee,
            call_count: edge.calls as u64,
        })
        .collect();
    let total = links.len();
    Ok(envelope(links, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(text: &str) -> Vec<(String, String)> {
        pairs(Some(text)).unwrap()
    }

    #[test]
    fn grafana_search_parameters_are_understood() {
        let request = search_request(
            &query("service=api&operation=GET%20%2F&tags=%7B%22error%22%3A%22true%22%2C%22http.route%22%3A%22%2Fx%22%7D&minDuration=1.5ms&limit=5&start=1000&end=2000"),
            0,
        )
        .unwrap();
        assert_eq!(request.services, vec!["api"]);
        assert_eq!(request.span_name.as_deref(), Some("GET /"));
        assert_eq!(request.status.as_deref(), Some("error"));
        assert_eq!(
            request.attributes,
            vec![("http.route".to_owned(), "/x".to_owned())]
        );
        assert_eq!(request.min_duration_ns, Some(1_500_000));
        assert_eq!(
            (request.start_ns, request.end_ns),
            (Some(1_000_000), Some(2_000_000))
        );
        assert_eq!(request.limit, 5);
    }

    #[test]
    fn lookback_sets_the_start() {
        let request = search_request(&query("service=a&lookback=1h"), 4_000_000_000_000).unwrap();
        assert_eq!(request.start_ns, Some(400_000_000_000));
    }

    #[test]
    fn trace_ids_may_be_short() {
        assert_eq!(parse_trace_id("1").unwrap()[15], 1);
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id(&"f".repeat(33)).is_err());
    }
}
