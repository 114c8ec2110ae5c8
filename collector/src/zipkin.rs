//! Zipkin v2 JSON spans (`POST /api/v2/spans`) converted to an OTLP export, so Zipkin-instrumented
//! apps are stored by the same ingest path, with the same validation and durability, as OTLP clients.
//!
//! The mapping follows the OpenTelemetry Collector's Zipkin receiver: `localEndpoint.serviceName`
//! becomes the resource's `service.name`; tags become string attributes, except `error` (and
//! `otel.status_code` / `otel.status_description`), which set the span status; annotations become
//! events; `remoteEndpoint` becomes `peer.service`, `network.peer.address` and `network.peer.port`;
//! 64-bit trace ids are left-padded with zeros to 128 bits.

use std::collections::BTreeMap;

use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::span::{Event, SpanKind};
use meshscope_proto::trace::status::StatusCode;
use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;

/// The service name given to spans without a `localEndpoint.serviceName`, as OpenTelemetry does.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Why a Zipkin payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    /// Not a JSON list of Zipkin v2 spans.
    #[error("body is not a JSON list of Zipkin v2 spans: {0}")]
    Json(#[from] serde_json::Error),
    /// An id is not hex of the right length.
    #[error("span {index}: {field} {value:?} must be {digits} hex digits")]
    BadId {
        /// Position of the span in the list.
        index: usize,
        /// `traceId`, `id` or `parentId`.
        field: &'static str,
        /// What was sent.
        value: String,
        /// What is allowed.
        digits: &'static str,
    },
}

/// An endpoint of a Zipkin span.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i64>,
}

/// An annotation: a timestamped note.
#[derive(Debug, Deserialize)]
struct Annotation {
    timestamp: u64,
    value: String,
}

/// One Zipkin v2 span, as its JSON API defines it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan {
    trace_id: String,
    id: String,
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    local_endpoint: Option<Endpoint>,
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn id(
    index: usize,
    field: &'static str,
    text: &str,
    lengths: &[usize],
    digits: &'static str,
) -> Result<Vec<u8>, ZipkinError> {
    let bad = || ZipkinError::BadId {
        index,
        field,
        value: text.chars().take(64).collect(),
        digits,
    };
    if !lengths.contains(&text.len()) {
        return Err(bad());
    }
    let bytes = hex::decode(text).map_err(|_| bad())?;
    if field == "traceId" && bytes.len() == 8 {
        let mut padded = vec![0u8; 8];
        padded.extend(bytes);
        return Ok(padded);
    }
    Ok(bytes)
}

fn kind(text: Option<&str>) -> SpanKind {
    match text.map(str::to_ascii_uppercase).as_deref() {
        Some("CLIENT") => SpanKind::Client,
        Some("SERVER") => SpanKind::Server,
        Some("PRODUCER") => SpanKind::Producer,
        Some("CONSUMER") => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

fn convert(index: usize, zipkin: ZipkinSpan) -> Result<(String, Span), ZipkinError> {
    let trace_id = id(index, "traceId", &zipkin.trace_id, &[16, 32], "16 or 32")?;
    let span_id = id(index, "id", &zipkin.id, &[16], "16")?;
    let parent_span_id = match zipkin.parent_id.as_deref() {
        Some(parent) if !parent.is_empty() => id(index, "parentId", parent, &[16], "16")?,
        _ => Vec::new(),
    };
    let start = zipkin.timestamp.unwrap_or(0).saturating_mul(1_000);
    let end = start.saturating_add(zipkin.duration.unwrap_or(0).saturating_mul(1_000));
    let mut status = Status::default();
    let mut attributes = Vec::new();
    for (key, value) in zipkin.tags {
        match key.as_str() {
            "error" => {
                status.code = StatusCode::Error as i32;
                status.message = value;
            }
            "otel.status_code" => match value.to_ascii_uppercase().as_str() {
                "ERROR" => status.code = StatusCode::Error as i32,
                "OK" => status.code = StatusCode::Ok as i32,
                _ => attributes.push(string(&key, &value)),
            },
            "otel.status_description" => status.message = value,
            _ => attributes.push(string(&key, &value)),
        }
    }
    let local = zipkin.local_endpoint.unwrap_or_default();
    if let Some(address) = local.ipv4.as_deref().or(local.ipv6.as_deref()) {
        attributes.push(string("network.local.address", address));
    }
    if let Some(port) = local.port.filter(|port| *port > 0) {
        attributes.push(int("network.local.port", port));
    }
    if let Some(remote) = zipkin.remote_endpoint {
        if let Some(service) = remote.service_name.filter(|s| !s.is_empty()) {
            attributes.push(string("peer.service", &service));
        }
        if let Some(address) = remote.ipv4.as_deref().or(remote.ipv6.as_deref()) {
            attributes.push(string("network.peer.address", address));
        }
        if let Some(port) = remote.port.filter(|port| *port > 0) {
            attributes.push(int("network.peer.port", port));
        }
    }
    let events = zipkin
        .annotations
        .into_iter()
        .map(|annotation| Event {
            time_unix_nano: annotation.timestamp.saturating_mul(1_000),
            name: annotation.value,
            ..Default::default()
        })
        .collect();
    let service = local
        .service_name
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_owned());
    Ok((
        service,
        Span {
            trace_id,
            span_id,
            parent_span_id,
            name: zipkin.name.unwrap_or_default(),
            kind: kind(zipkin.kind.as_deref()) as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            events,
            status: Some(status),
            // W3C "sampled": Zipkin reports only sampled spans.
            flags: 1,
            ..Default::default()
        },
    ))
}

/// Parses a Zipkin v2 JSON list of spans into one OTLP export, one resource per service.
pub fn to_otlp(body: &[u8]) -> Result<ExportTraceServiceRequest, ZipkinError> {
    let spans: Vec<ZipkinSpan> = serde_json::from_slice(body)?;
    let mut by_service: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for (index, zipkin) in spans.into_iter().enumerate() {
        let (service, span) = convert(index, zipkin)?;
        by_service.entry(service).or_default().push(span);
    }
    Ok(ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", &service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = r#"[{
        "traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "parentId": "4af7183fb1d4cf5f",
        "name": "get /api", "kind": "SERVER", "timestamp": 1700000000000000, "duration": 2500,
        "localEndpoint": {"serviceName": "backend", "ipv4": "10.0.0.2", "port": 8080},
        "remoteEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1"},
        "annotations": [{"timestamp": 1700000000001000, "value": "wr"}],
        "tags": {"http.method": "GET", "error": "boom"}
    }, {"traceId": "5af7183fb1d4cf5f", "id": "4af7183fb1d4cf5f", "name": "root"}]"#;

    #[test]
    fn zipkin_fields_map_to_otlp() {
        let request = to_otlp(PAYLOAD.as_bytes()).unwrap();
        assert_eq!(request.resource_spans.len(), 2);
        let backend = &request.resource_spans[0];
        let span = &backend.scope_spans[0].spans[0];
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(&span.trace_id[..8], &[0; 8]);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            2_500_000
        );
        assert_eq!(span.kind, SpanKind::Server as i32);
        let status = span.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom"));
        assert_eq!(span.events[0].name, "wr");
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "http.method",
                "network.local.address",
                "network.local.port",
                "peer.service",
                "network.peer.address"
            ]
        );
        assert_eq!(
            request.resource_spans[1]
                .resource
                .as_ref()
                .unwrap()
                .attributes[0],
            string("service.name", UNKNOWN_SERVICE)
        );
    }

    #[test]
    fn bad_ids_and_bodies_are_named() {
        let bad = r#"[{"traceId": "xyz", "id": "6b221d5bc9e6496c"}]"#;
        assert!(matches!(
            to_otlp(bad.as_bytes()),
            Err(ZipkinError::BadId {
                field: "traceId",
                ..
            })
        ));
        assert!(matches!(to_otlp(b"{}"), Err(ZipkinError::Json(_))));
    }
}
