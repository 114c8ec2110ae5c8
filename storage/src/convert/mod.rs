//! Conversion between OTLP export requests and Arrow record batches of the stored tables.
//!
//! [`spans_to_batch`] and [`metrics_to_batch`] flatten an export request into one row per span (or per
//! metric data point) with the columns of [`SPANS_SCHEMA`](crate::schema::SPANS_SCHEMA) and
//! [`METRIC_POINTS_SCHEMA`](crate::schema::METRIC_POINTS_SCHEMA); [`batch_to_spans`] rebuilds the spans.
//!
//! ```text
//! ExportTraceServiceRequest ──spans_to_batch──► RecordBatch (spans) ──batch_to_spans──► Vec<StoredSpan>
//! its protobuf bytes ──spans_from_protobuf──► the same RecordBatch (valid requests only, else NotFast)
//! ExportMetricsServiceRequest ──metrics_to_batch──► RecordBatch (metric_points)
//! ```
//!
//! Column conventions:
//! - Attribute lists, events, links and exemplars are stored as OTLP/JSON text (what the proto serde writes:
//!   hex ids, 64-bit integers as strings, base64 bytes, camelCase names); an empty list is `[]`. The one
//!   difference is that non-finite doubles, which the proto serde writes as `null`, are written as the
//!   strings `"NaN"`, `"Infinity"` and `"-Infinity"` (the proto3 JSON mapping), so they survive.
//! - `service_name` holds the resource attribute `service.name` when it is a string; it is then left out
//!   of `resource_attributes`, and comes back as the first resource attribute.
//! - Promoted span attributes ([`PROMOTED_SPAN_ATTRIBUTES`](crate::schema::PROMOTED_SPAN_ATTRIBUTES)) are
//!   moved to their column when their value has the column's type and their key occurs once; they come
//!   back after the other attributes.
//! - Empty optional strings (trace state, status message, schema URLs, scope name and version, metric
//!   description and unit) are stored as null and come back empty.
//! - Enums are stored as lowercase names (`server`, `error`, `cumulative`, …); numbers without a name are
//!   stored as their decimal string and come back unchanged.
//! - Timestamps are the OTLP nanoseconds reinterpreted as `i64` (bit for bit, so they round-trip).
//!
//! What does not round-trip: `Resource::entity_refs` is not stored; a span without a status comes back
//! with `Some(Status::default())`; a missing resource or scope comes back as the default one.

mod attribute;
mod context;
mod json;
mod metrics;
mod spans;
mod wire;
mod wire_spans;

use datafusion::arrow::error::ArrowError;
use meshscope_proto::common::any_value::Value;
use meshscope_proto::common::{AnyValue, KeyValue};

pub use metrics::metrics_to_batch;
pub use spans::{StoredSpan, batch_to_spans, spans_to_batch};
pub use wire_spans::{NotFast, spans_from_protobuf};

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Arrow refused to build, cast or assemble a column.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// Writing a JSON column failed.
    #[error("encoding JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// A JSON column value is not valid OTLP/JSON.
    #[error("invalid JSON at byte {offset}: {message}")]
    Json {
        /// Byte offset of the error in the JSON text.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// The record batch has no column of this name.
    #[error("column `{0}` is missing")]
    MissingColumn(&'static str),
    /// A column has a type that cannot be used for its schema field, or does not match the schema.
    #[error("column `{column}`: {message}")]
    ColumnType {
        /// The column name.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// A column value cannot be converted back.
    #[error("column `{column}`, row {row}: {message}")]
    InvalidValue {
        /// The column name.
        column: &'static str,
        /// The row index in the batch.
        row: usize,
        /// What is wrong.
        message: String,
    },
}

/// Largest OTLP timestamp that can be stored: times are stored as signed nanoseconds.
pub const MAX_STORED_TIME_NANOS: u64 = i64::MAX.unsigned_abs();

/// Whether any value of `attributes` has more than `allowed` levels of arrays/kvlists
/// ([`any_value_deeper_than`]).
pub fn attributes_deeper_than(attributes: &[KeyValue], allowed: usize) -> bool {
    attributes.iter().any(|kv| {
        kv.value
            .as_ref()
            .is_some_and(|v| any_value_deeper_than(v, allowed))
    })
}

/// Whether `value` has more than `allowed` levels of arrays/kvlists (recursion stops at `allowed`).
///
/// A scalar value has depth 0 and an array or kvlist one more than its deepest element. The collector
/// refuses spans with values nested deeper than its limit; [`spans_from_protobuf`] checks the same rule.
pub fn any_value_deeper_than(value: &AnyValue, allowed: usize) -> bool {
    match &value.value {
        Some(Value::ArrayValue(array)) => {
            allowed == 0
                || array
                    .values
                    .iter()
                    .any(|v| any_value_deeper_than(v, allowed - 1))
        }
        Some(Value::KvlistValue(list)) => {
            allowed == 0
                || list.values.iter().any(|kv| {
                    kv.value
                        .as_ref()
                        .is_some_and(|v| any_value_deeper_than(v, allowed - 1))
                })
        }
        _ => false,
    }
}

/// Encodes a KeyValue list as the JSON stored in attribute columns (OTLP/JSON via the proto serde).
///
/// The output equals `serde_json::to_string(attrs)` of the proto types, except that non-finite doubles are
/// written as `"NaN"`, `"Infinity"` or `"-Infinity"` instead of `null`. An empty list gives `[]`.
pub fn attributes_to_json(attrs: &[KeyValue]) -> String {
    let mut buf = Vec::new();
    // Serializing a KeyValue list into memory cannot fail (no I/O, no fallible formatting, string map
    // keys only), and the result is UTF-8; the fallback is only there to avoid a panic path.
    match json::encode_into(&mut buf, &json::KeyValuesJson::all(attrs)) {
        Ok(()) => String::from_utf8(buf).unwrap_or_else(|_| String::from("[]")),
        Err(_) => String::from("[]"),
    }
}

/// Decodes an attribute column value back to a KeyValue list.
///
/// Accepts what [`attributes_to_json`] writes and anything the proto serde reads (for example integers as
/// JSON numbers); doubles are parsed back to the exact same bits.
pub fn attributes_from_json(json: &str) -> Result<Vec<KeyValue>, ConvertError> {
    json::decode_key_values(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn attributes_json_round_trip() -> TestResult {
        let attrs = vec![
            KeyValue {
                key: "n".to_owned(),
                value: Some(AnyValue {
                    value: Some(Value::DoubleValue(f64::INFINITY)),
                }),
                key_strindex: 0,
            },
            KeyValue {
                key: "s".to_owned(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("v".to_owned())),
                }),
                key_strindex: 0,
            },
        ];
        let json = attributes_to_json(&attrs);
        assert_eq!(
            json,
            r#"[{"key":"n","value":{"doubleValue":"Infinity"}},{"key":"s","value":{"stringValue":"v"}}]"#
        );
        assert_eq!(attributes_from_json(&json)?, attrs);
        assert_eq!(attributes_to_json(&[]), "[]");
        assert!(attributes_from_json("[]")?.is_empty());
        assert!(matches!(
            attributes_from_json("{"),
            Err(ConvertError::Json { .. })
        ));
        Ok(())
    }
}
