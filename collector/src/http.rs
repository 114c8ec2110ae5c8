//! OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/metrics`, protobuf or JSON, optionally gzip;
//! and Zipkin v2 JSON on `POST /api/v2/spans` (converted by [`crate::zipkin`]).
//!
//! As the OTLP spec says: the response uses the request's encoding, a partial success carries the
//! rejected count, errors carry a `google.rpc.Status` body, and retryable refusals carry `Retry-After`.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meshscope_proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use meshscope_proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use crate::error::{IngestError, RETRY_AFTER};
use crate::ingest::{Encoding, Ingest, Signal};
use crate::validate::Rejections;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/HTTP routes.
pub fn router(ingest: Arc<Ingest>) -> Router {
    // The raw limit lets compressed bodies through; the decompressed size is checked below.
    let limit = ingest.max_request_bytes;
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/api/v2/spans", post(zipkin_spans))
        .route("/metrics", get(self_metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingest)
}

async fn traces(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Bytes) -> Response {
    export(&ingest, Signal::Traces, &headers, body).await
}

async fn metrics(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Bytes) -> Response {
    export(&ingest, Signal::Metrics, &headers, body).await
}

/// Zipkin v2 JSON: converted to an OTLP export and stored like one. Answers 202 as Zipkin does; when
/// validation dropped spans, the 202 carries `{"rejectedSpans", "errorMessage"}`.
async fn zipkin_spans(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or(JSON)
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media_type != JSON {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {media_type:?}: Zipkin spans are accepted as application/json"),
        )
            .into_response();
    }
    let result = match decompress(&headers, body, ingest.max_request_bytes) {
        // Parsed off the async workers, like OTLP bodies are.
        Ok(body) => match tokio::task::spawn_blocking(move || {
            crate::zipkin::to_otlp(&body).map(|request| request.encode_to_vec())
        })
        .await
        {
            Ok(Ok(encoded)) => {
                ingest
                    .export(Signal::Traces, Encoding::Protobuf, encoded.into())
                    .await
            }
            Ok(Err(error)) => {
                return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
            }
            Err(error) => Err(IngestError::Unavailable(format!(
                "Zipkin decoder task failed: {error}"
            ))),
        },
        Err(error) => Err(error),
    };
    match result {
        Ok(rejections) if rejections.count > 0 => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({
                "rejectedSpans": rejections.count,
                "errorMessage": rejections.message,
            })),
        )
            .into_response(),
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(error) => {
            let code = StatusCode::from_u16(error.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (code, error.to_string()).into_response();
            if error.retryable() {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER.as_secs()),
                );
            }
            response
        }
    }
}

async fn self_metrics(State(ingest): State<Arc<Ingest>>) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        ingest.render_metrics(),
    )
        .into_response()
}

async fn export(ingest: &Ingest, signal: Signal, headers: &HeaderMap, body: Bytes) -> Response {
    let encoding = match request_encoding(headers) {
        Ok(encoding) => encoding,
        Err(error) => return error_response(Encoding::Protobuf, &error),
    };
    let result = match decompress(headers, body, ingest.max_request_bytes) {
        Ok(body) => ingest.export(signal, encoding, body).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(rejections) => success_response(signal, encoding, &rejections),
        Err(error) => error_response(encoding, &error),
    }
}

fn request_encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(IngestError::UnsupportedMediaType(content_type.to_owned())),
    }
}

/// Inflates a gzip body, refusing to inflate past `limit` bytes (a small bomb must not exhaust memory).
fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, IngestError> {
    let coding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("identity");
    match coding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut inflated = Vec::with_capacity(body.len() * 4);
            let decoder = flate2::read::GzDecoder::new(body.as_ref());
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|error| IngestError::Undecodable {
                    encoding: "gzip",
                    reason: error.to_string(),
                })?;
            if inflated.len() > limit {
                return Err(IngestError::TooLarge { limit });
            }
            Ok(inflated.into())
        }
        other => Err(IngestError::UnsupportedMediaType(format!(
            "Content-Encoding: {other}"
        ))),
    }
}

fn success_response(signal: Signal, encoding: Encoding, rejections: &Rejections) -> Response {
    let partial = rejections.count > 0;
    let body = match signal {
        Signal::Traces => {
            let response = ExportTraceServiceResponse {
                partial_success: partial.then(|| ExportTracePartialSuccess {
                    rejected_spans: rejections.count,
                    error_message: rejections.message.clone(),
                }),
            };
            encode(encoding, &response)
        }
        Signal::Metrics => {
            let response = ExportMetricsServiceResponse {
                partial_success: partial.then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: rejections.count,
                    error_message: rejections.message.clone(),
                }),
            };
            encode(encoding, &response)
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type(encoding))],
        body,
    )
        .into_response()
}

fn encode<T: Message + serde::Serialize>(encoding: Encoding, message: &T) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

fn content_type(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Protobuf => PROTOBUF,
        Encoding::Json => JSON,
    }
}

/// An error answer: `google.rpc.Status` in the request's encoding, `Retry-After` when retryable.
fn error_response(encoding: Encoding, error: &IngestError) -> Response {
    let status = tonic_types::Status {
        code: error.grpc_code() as i32,
        message: error.to_string(),
        details: vec![],
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": status.code, "message": status.message })
            .to_string()
            .into_bytes(),
    };
    let code =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response =
        (code, [(header::CONTENT_TYPE, content_type(encoding))], body).into_response();
    if error.retryable() {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        );
    }
    response
}
