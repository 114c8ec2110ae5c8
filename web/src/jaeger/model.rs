//! Jaeger's JSON shapes (its query service's `/api` responses), built from stored OTLP spans the way
//! Jaeger's own OTLP translator maps them: span kind, status and scope become tags, events become logs,
//! the parent becomes a `CHILD_OF` reference and links become `FOLLOWS_FROM` references.

use std::collections::BTreeMap;

use base64::Engine as _;
use meshscope_proto::common::any_value::Value as Any;
use meshscope_proto::common::{AnyValue, KeyValue};
use meshscope_query::TraceSpan;
use serde::Serialize;
use serde_json::{Value, json};

/// The envelope of every Jaeger API answer.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    /// The payload.
    pub data: T,
    /// Number of items in `data` (0 for a single trace, as Jaeger does).
    pub total: usize,
    /// Always 0 (no paging).
    pub limit: usize,
    /// Always 0 (no paging).
    pub offset: usize,
    /// `null` on success.
    pub errors: Option<Vec<ErrorItem>>,
}

/// One entry of `errors`.
#[derive(Debug, Serialize)]
pub struct ErrorItem {
    /// HTTP status.
    pub code: u16,
    /// What went wrong.
    pub msg: String,
}

/// A typed tag: `{"key", "type", "value"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    /// Attribute key.
    pub key: String,
    /// `string`, `bool`, `int64`, `float64` or `binary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The value in that type (binary as base64).
    pub value: Value,
}

/// A reference to another span.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// `CHILD_OF` or `FOLLOWS_FROM`.
    pub ref_type: &'static str,
    /// Referenced trace.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// Referenced span.
    #[serde(rename = "spanID")]
    pub span_id: String,
}

/// A timestamped log (an OTLP event).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Log {
    /// Microseconds since the epoch.
    pub timestamp: u64,
    /// `event` (the event name) and the event's attributes.
    pub fields: Vec<Tag>,
}

/// A Jaeger span.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// Trace id, hex.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// Span id, hex.
    #[serde(rename = "spanID")]
    pub span_id: String,
    /// W3C trace flags (low 8 bits of the OTLP flags).
    pub flags: u32,
    /// Span name.
    pub operation_name: String,
    /// Parent first, then links.
    pub references: Vec<Reference>,
    /// Microseconds since the epoch.
    pub start_time: u64,
    /// Microseconds.
    pub duration: u64,
    /// Attributes and the mapped OTLP fields.
    pub tags: Vec<Tag>,
    /// Events.
    pub logs: Vec<Log>,
    /// Key into the trace's `processes`.
    #[serde(rename = "processID")]
    pub process_id: String,
    /// Always `null`.
    pub warnings: Option<Vec<String>>,
}

/// A Jaeger process: a service and its resource attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// `service.name`.
    pub service_name: String,
    /// The other resource attributes.
    pub tags: Vec<Tag>,
}

/// A Jaeger trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// Trace id, hex.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// Spans in tree order.
    pub spans: Vec<Span>,
    /// `p1`, `p2`, … → process.
    pub processes: BTreeMap<String, Process>,
    /// Always `null`.
    pub warnings: Option<Vec<String>>,
}

/// An edge of `/api/dependencies`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Calling service.
    pub parent: String,
    /// Called service.
    pub child: String,
    /// Calls in the window.
    pub call_count: u64,
}

/// A trace id as Jaeger prints it: 16 hex digits when the high half is zero (a 64-bit id), else 32.
pub fn trace_id_text(id: &[u8]) -> String {
    if id.len() == 16 && id[..8].iter().all(|b| *b == 0) {
        hex::encode(&id[8..])
    } else {
        hex::encode(id)
    }
}

fn tag(key: &str, value: Option<&AnyValue>) -> Tag {
    let (kind, value) = match value.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => ("string", json!(s)),
        Some(Any::BoolValue(b)) => ("bool", json!(b)),
        Some(Any::IntValue(i)) => ("int64", json!(i)),
        Some(Any::DoubleValue(d)) => ("float64", json!(d)),
        Some(Any::BytesValue(bytes)) => (
            "binary",
            json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
        // Arrays and maps (and profiling's string-table indexes) have no Jaeger type: Jaeger's
        // translator stores their JSON as a string.
        Some(other @ (Any::ArrayValue(_) | Any::KvlistValue(_) | Any::StringValueStrindex(_))) => (
            "string",
            json!(
                serde_json::to_string(&AnyValue {
                    value: Some(other.clone())
                })
                .unwrap_or_default()
            ),
        ),
        None => ("string", json!("")),
    };
    Tag {
        key: key.to_owned(),
        kind,
        value,
    }
}

fn tags(attributes: &[KeyValue]) -> Vec<Tag> {
    attributes
        .iter()
        .map(|kv| tag(&kv.key, kv.value.as_ref()))
        .collect()
}

fn string_tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.to_owned(),
        kind: "string",
        value: json!(value),
    }
}

const KINDS: [&str; 6] = ["", "internal", "server", "client", "producer", "consumer"];

/// Converts a whole trace (spans in tree order) into Jaeger's shape.
pub fn trace(trace_id: &[u8], spans: &[TraceSpan]) -> Trace {
    let mut processes: BTreeMap<String, Process> = BTreeMap::new();
    let mut process_keys: Vec<(Process, String)> = Vec::new();
    let mut out = Vec::with_capacity(spans.len());
    let trace_text = trace_id_text(trace_id);
    for entry in spans {
        let stored = &entry.stored;
        let service = crate::ui::waterfall::service_of(&stored.resource);
        let process = Process {
            service_name: service,
            tags: tags(
                &stored
                    .resource
                    .attributes
                    .iter()
                    .filter(|kv| kv.key != "service.name")
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
        };
        let process_id = match process_keys.iter().find(|(p, _)| *p == process) {
            Some((_, key)) => key.clone(),
            None => {
                let key = format!("p{}", process_keys.len() + 1);
                processes.insert(key.clone(), process.clone());
                process_keys.push((process, key.clone()));
                key
            }
        };
        let span = &stored.span;
        let mut references = Vec::new();
        if !span.parent_span_id.is_empty() {
            references.push(Reference {
                ref_type: "CHILD_OF",
                trace_id: trace_text.clone(),
                span_id: hex::encode(&span.parent_span_id),
            });
        }
        for link in &span.links {
            references.push(Reference {
                ref_type: "FOLLOWS_FROM",
                trace_id: trace_id_text(&link.trace_id),
                span_id: hex::encode(&link.span_id),
            });
        }
        let mut span_tags = tags(&span.attributes);
        if let Some(kind) = KINDS.get(span.kind as usize).filter(|k| !k.is_empty()) {
            span_tags.push(string_tag("span.kind", kind));
        }
        if let Some(status) = &span.status {
            match status.code {
                1 => span_tags.push(string_tag("otel.status_code", "OK")),
                2 => {
                    span_tags.push(string_tag("otel.status_code", "ERROR"));
                    span_tags.push(Tag {
                        key: "error".to_owned(),
                        kind: "bool",
                        value: json!(true),
                    });
                }
                _ => {}
            }
            if !status.message.is_empty() {
                span_tags.push(string_tag("otel.status_description", &status.message));
            }
        }
        if !stored.scope.name.is_empty() {
            span_tags.push(string_tag("otel.scope.name", &stored.scope.name));
        }
        if !stored.scope.version.is_empty() {
            span_tags.push(string_tag("otel.scope.version", &stored.scope.version));
        }
        if !span.trace_state.is_empty() {
            span_tags.push(string_tag("w3c.tracestate", &span.trace_state));
        }
        let logs = span
            .events
            .iter()
            .map(|event| {
                let mut fields = vec![string_tag("event", &event.name)];
                fields.extend(tags(&event.attributes));
                Log {
                    timestamp: event.time_unix_nano / 1_000,
                    fields,
                }
            })
            .collect();
        out.push(Span {
            trace_id: trace_text.clone(),
            span_id: hex::encode(&span.span_id),
            flags: span.flags & 0xff,
            operation_name: span.name.clone(),
            references,
            start_time: span.start_time_unix_nano / 1_000,
            duration: span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano)
                / 1_000,
            tags: span_tags,
            logs,
            process_id,
            warnings: None,
        });
    }
    Trace {
        trace_id: trace_text,
        spans: out,
        processes,
        warnings: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_trace_ids_print_as_jaeger_does() {
        let mut id = [0u8; 16];
        id[15] = 1;
        assert_eq!(trace_id_text(&id), "0000000000000001");
        id[0] = 1;
        assert_eq!(trace_id_text(&id).len(), 32);
    }

    #[test]
    fn tags_carry_jaeger_types() {
        let value = |v| AnyValue { value: Some(v) };
        assert_eq!(tag("i", Some(&value(Any::IntValue(7)))).kind, "int64");
        assert_eq!(
            tag("d", Some(&value(Any::DoubleValue(1.5)))).kind,
            "float64"
        );
        let bytes = tag("b", Some(&value(Any::BytesValue(vec![0xff, 0xfe]))));
        assert_eq!((bytes.kind, bytes.value.clone()), ("binary", json!("//4=")));
    }
}
