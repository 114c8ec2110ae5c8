//! The JSON API: SQL, traces, search, services. `docs/api.md` documents every route.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use meshscope_query::{QueryEngine, SearchRequest, TraceSpan};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::params::{add_attribute_filter, parse_duration, parse_time};

/// Shared state of the API routes.
pub type Engine = Arc<QueryEngine>;

/// `GET /api/health`: answers once the server is up.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
}

/// `POST /api/sql`: runs one read-only statement; JSON rows, CSV or Arrow IPC by `Accept`.
pub async fn sql(
    State(engine): State<Engine>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = if is_json {
        serde_json::from_slice::<SqlBody>(&body)
            .map_err(|error| {
                ApiError::bad_request(format!("body must be {{\"sql\": \"...\"}}: {error}"))
            })?
            .sql
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("SQL text must be UTF-8"))?
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("no SQL given"));
    }
    let result = engine.sql(&text).await?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut response = if accept.contains("text/csv") {
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            result.to_csv()?,
        )
            .into_response()
    } else if accept.contains("application/vnd.apache.arrow.stream") {
        (
            [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
            result.to_arrow_ipc()?,
        )
            .into_response()
    } else {
        Json(result.to_json()?).into_response()
    };
    // CSV and Arrow IPC have no place for the JSON answer's "truncated", so every format says it here.
    response.headers_mut().insert(
        TRUNCATED_HEADER,
        HeaderValue::from_static(if result.truncated { "true" } else { "false" }),
    );
    Ok(response)
}

/// Response header of `/api/sql`: `true` when rows past the row cap were left out of the answer.
const TRUNCATED_HEADER: &str = "meshscope-truncated";

/// `GET /api/traces/{trace_id}`: the whole trace in tree order, each span in OTLP/JSON.
pub async fn trace(
    State(engine): State<Engine>,
    Path(trace_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = hex::decode(trace_id.trim())
        .ok()
        .filter(|id| id.len() == 16)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{trace_id:?} is not a trace id (32 hex digits)"))
        })?;
    let spans = engine.trace(&id).await?;
    if spans.is_empty() {
        return Err(ApiError::not_found(format!(
            "no spans of trace {}",
            hex::encode(&id)
        )));
    }
    let spans: Vec<Value> = spans.iter().map(span_json).collect();
    Ok(Json(json!({ "traceId": hex::encode(&id), "spans": spans })))
}

fn span_json(span: &TraceSpan) -> Value {
    let stored = &span.stored;
    json!({
        "depth": span.depth,
        "resource": stored.resource,
        "resourceSchemaUrl": stored.resource_schema_url,
        "scope": stored.scope,
        "scopeSchemaUrl": stored.scope_schema_url,
        "span": stored.span,
    })
}

/// `GET /api/search`: newest traces matching the filters, summarised.
pub async fn search(
    State(engine): State<Engine>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let request = search_request(query.as_deref().unwrap_or(""))?;
    let traces = engine.search(&request).await?;
    Ok(Json(json!({ "traces": traces })))
}

/// Parses the search query string; repeated `service` and `attr` parameters accumulate.
fn search_request(query: &str) -> Result<SearchRequest, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|error| ApiError::bad_request(format!("query string: {error}")))?;
    let mut request = SearchRequest {
        limit: 20,
        ..SearchRequest::default()
    };
    for (key, value) in pairs {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "service" => request.services.push(value),
            "name" | "operation" => request.span_name = Some(value),
            "attr" | "tag" => add_attribute_filter(&mut request, &value)?,
            "status" => match value.to_ascii_lowercase().as_str() {
                "unset" | "ok" | "error" => request.status = Some(value.to_ascii_lowercase()),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "status {value:?} must be unset, ok or error"
                    )));
                }
            },
            "min_duration" => request.min_duration_ns = Some(parse_duration(&value)?),
            "max_duration" => request.max_duration_ns = Some(parse_duration(&value)?),
            "start" => request.start_ns = Some(parse_time(&value)?),
            "end" => request.end_ns = Some(parse_time(&value)?),
            "limit" => {
                request.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|limit| (1..=10_000).contains(limit))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit {value:?} must be 1..=10000"))
                    })?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown search parameter {other:?}"
                )));
            }
        }
    }
    Ok(request)
}

/// `GET /api/services`: every service that reported spans.
pub async fn services(State(engine): State<Engine>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "services": engine.services().await? })))
}

/// `GET /api/services/{service}/operations`: span names and kinds of one service.
pub async fn operations(
    State(engine): State<Engine>,
    Path(service): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "operations": engine.operations(&service).await? }),
    ))
}

#[cfg(test)]
mod tests {
    use super::search_request;

    #[test]
    fn repeated_parameters_accumulate() {
        let request =
            search_request("service=a&service=b&attr=http.route%3D%2Fx&min_duration=2ms&limit=5")
                .unwrap();
        assert_eq!(request.services, vec!["a", "b"]);
        assert_eq!(
            request.attributes,
            vec![("http.route".to_owned(), "/x".to_owned())]
        );
        assert_eq!(request.min_duration_ns, Some(2_000_000));
        assert_eq!(request.limit, 5);
    }

    #[test]
    fn bad_parameters_are_named() {
        for query in [
            "limit=0",
            "status=bad",
            "attr=novalue",
            "min_duration=fast",
            "colour=red",
        ] {
            assert!(search_request(query).is_err(), "{query} should be refused");
        }
    }
}
