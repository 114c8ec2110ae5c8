//! Protobuf wire encoding of spans, written field by field into a byte buffer.
//!
//! Hand-written because the request path records a span per request: building prost's owned `Span`
//! (an owned `String` per attribute key and value) and letting prost encode it (which computes each
//! nested message's length again at every level) cost more than proxying the request itself. A
//! span's fields are instead written the moment they are known, straight from borrowed strings:
//! protobuf lets fields appear in any order and a repeated field's entries one at a time, so a span
//! is one growing `Vec<u8>` that is already its encoded `Span` message. The field numbers are those
//! of OTLP's `trace.proto` and `common.proto` (v1); a unit test decodes the result with prost.

/// Wire type of varints.
const VARINT: u8 = 0;
/// Wire type of 8-byte little-endian values.
const FIXED64: u8 = 1;
/// Wire type of length-prefixed bytes, strings and messages.
const LEN: u8 = 2;
/// Wire type of 4-byte little-endian values.
const FIXED32: u8 = 5;

/// `Span` field numbers.
pub(super) mod span {
    pub(in crate::telemetry) const TRACE_ID: u32 = 1;
    pub(in crate::telemetry) const SPAN_ID: u32 = 2;
    pub(in crate::telemetry) const TRACE_STATE: u32 = 3;
    pub(in crate::telemetry) const PARENT_SPAN_ID: u32 = 4;
    pub(in crate::telemetry) const NAME: u32 = 5;
    pub(in crate::telemetry) const KIND: u32 = 6;
    pub(in crate::telemetry) const START_TIME: u32 = 7;
    pub(in crate::telemetry) const END_TIME: u32 = 8;
    pub(in crate::telemetry) const ATTRIBUTES: u32 = 9;
    pub(in crate::telemetry) const STATUS: u32 = 15;
    pub(in crate::telemetry) const FLAGS: u32 = 16;
}

/// `Status.code`.
const STATUS_CODE: u32 = 3;
/// `KeyValue.key`, `KeyValue.value`.
const KEY: u32 = 1;
const VALUE: u32 = 2;
/// `AnyValue.string_value`, `AnyValue.int_value`.
const STRING_VALUE: u32 = 1;
const INT_VALUE: u32 = 3;
/// `ExportTraceServiceRequest.resource_spans`, `ResourceSpans.resource`, `ResourceSpans.scope_spans`,
/// `ScopeSpans.scope`, `ScopeSpans.spans`.
const RESOURCE_SPANS: u32 = 1;
const RESOURCE: u32 = 1;
const SCOPE_SPANS: u32 = 2;
const SCOPE: u32 = 1;
const SPANS: u32 = 2;

fn varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn varint_len(value: u64) -> usize {
    // One byte per started group of 7 bits; 0 still takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(buf, u64::from(field << 3 | u32::from(wire_type)));
}

fn key_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

/// Length of a length-delimited field whose content is `len` bytes, key included.
fn len_field_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

/// A bytes or string field.
pub(super) fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    key(buf, field, LEN);
    varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

/// A varint (enum, unsigned) field.
pub(super) fn uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    key(buf, field, VARINT);
    varint(buf, value);
}

/// A `fixed64` field.
pub(super) fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    key(buf, field, FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A `fixed32` field.
pub(super) fn fixed32(buf: &mut Vec<u8>, field: u32, value: u32) {
    key(buf, field, FIXED32);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// The span's `status` with only its code set.
pub(super) fn status(buf: &mut Vec<u8>, code: u64) {
    key(buf, span::STATUS, LEN);
    varint(buf, (key_len(STATUS_CODE) + varint_len(code)) as u64);
    uint(buf, STATUS_CODE, code);
}

/// A string attribute (`KeyValue` in field `span::ATTRIBUTES`) whose value is the concatenation of
/// `parts`, so that a value like `url.full` needs no formatted `String`.
pub(super) fn string_attribute(buf: &mut Vec<u8>, name: &str, parts: &[&str]) {
    let value_len: usize = parts.iter().map(|p| p.len()).sum();
    attribute_head(buf, name, len_field_len(STRING_VALUE, value_len));
    key(buf, STRING_VALUE, LEN);
    varint(buf, value_len as u64);
    for part in parts {
        buf.extend_from_slice(part.as_bytes());
    }
}

/// An integer attribute.
pub(super) fn int_attribute(buf: &mut Vec<u8>, name: &str, value: i64) {
    // int64 is written as the two's complement u64, as prost does.
    let value = value as u64;
    attribute_head(buf, name, key_len(INT_VALUE) + varint_len(value));
    uint(buf, INT_VALUE, value);
}

/// Everything of an attribute's `KeyValue` up to the `AnyValue`'s contents, which are
/// `any_value_len` bytes long and written by the caller.
fn attribute_head(buf: &mut Vec<u8>, name: &str, any_value_len: usize) {
    let key_value_len = len_field_len(KEY, name.len()) + len_field_len(VALUE, any_value_len);
    key(buf, span::ATTRIBUTES, LEN);
    varint(buf, key_value_len as u64);
    bytes(buf, KEY, name.as_bytes());
    key(buf, VALUE, LEN);
    varint(buf, any_value_len as u64);
}

/// Appends one encoded `Span` message as an entry of `ScopeSpans.spans`.
pub(super) fn scope_span(buf: &mut Vec<u8>, span: &[u8]) {
    bytes(buf, SPANS, span);
}

/// The bytes of an `ExportTraceServiceRequest` that come before `spans_len` bytes of `ScopeSpans.spans`
/// entries: one `ResourceSpans` with the encoded `resource`, one `ScopeSpans` with the encoded
/// `scope`. The spans follow as they are, so a batch is sent without being copied into a message.
pub(super) fn export_header(resource: &[u8], scope: &[u8], spans_len: usize) -> Vec<u8> {
    let scope_spans_len = len_field_len(SCOPE, scope.len()) + spans_len;
    let resource_spans_len =
        len_field_len(RESOURCE, resource.len()) + len_field_len(SCOPE_SPANS, scope_spans_len);
    let mut header = Vec::with_capacity(32 + resource.len() + scope.len());
    key(&mut header, RESOURCE_SPANS, LEN);
    varint(&mut header, resource_spans_len as u64);
    bytes(&mut header, RESOURCE, resource);
    key(&mut header, SCOPE_SPANS, LEN);
    varint(&mut header, scope_spans_len as u64);
    bytes(&mut header, SCOPE, scope);
    header
}

#[cfg(test)]
pub(super) mod tests {
    use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
    use meshscope_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
    use meshscope_proto::prost::Message;
    use meshscope_proto::resource::Resource;
    use meshscope_proto::trace::{Span, Status, span::SpanKind, status::StatusCode};

    use super::*;

    /// An attribute as prost decodes it, to compare encodings against (also used by `fixed`'s tests).
    pub(in crate::telemetry) fn attribute(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// What the wire functions write decodes with prost into the spans prost would have encoded.
    #[test]
    fn an_encoded_batch_decodes_as_an_export_request() {
        let mut span = Vec::new();
        status(&mut span, StatusCode::Error as u64);
        bytes(&mut span, self::span::TRACE_ID, &[7; 16]);
        bytes(&mut span, self::span::SPAN_ID, &[8; 8]);
        bytes(&mut span, self::span::PARENT_SPAN_ID, &[9; 8]);
        bytes(&mut span, self::span::TRACE_STATE, b"k=v");
        fixed32(&mut span, self::span::FLAGS, 1);
        bytes(&mut span, self::span::NAME, b"GET");
        uint(&mut span, self::span::KIND, SpanKind::Client as u64);
        string_attribute(&mut span, "url.full", &["http://", "a:1", "/x?y"]);
        int_attribute(&mut span, "server.port", 8080);
        int_attribute(&mut span, "negative", -3);
        string_attribute(&mut span, "long", &[&"z".repeat(300)]);
        fixed64(&mut span, self::span::START_TIME, 1_000);
        fixed64(&mut span, self::span::END_TIME, u64::MAX);
        let resource = Resource {
            attributes: vec![attribute("service.name", Value::StringValue("s".into()))],
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "scope".into(),
            ..Default::default()
        };
        let mut spans = Vec::new();
        scope_span(&mut spans, &span);
        scope_span(&mut spans, &span);
        let mut request = export_header(
            &resource.encode_to_vec(),
            &scope.encode_to_vec(),
            spans.len(),
        );
        request.extend_from_slice(&spans);

        let decoded = ExportTraceServiceRequest::decode(request.as_slice()).unwrap();
        let expected = Span {
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            parent_span_id: vec![9; 8],
            trace_state: "k=v".into(),
            flags: 1,
            name: "GET".into(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: u64::MAX,
            attributes: vec![
                attribute("url.full", Value::StringValue("http://a:1/x?y".into())),
                attribute("server.port", Value::IntValue(8080)),
                attribute("negative", Value::IntValue(-3)),
                attribute("long", Value::StringValue("z".repeat(300))),
            ],
            status: Some(Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(decoded.resource_spans.len(), 1);
        let resource_spans = &decoded.resource_spans[0];
        assert_eq!(resource_spans.resource.as_ref(), Some(&resource));
        assert_eq!(resource_spans.scope_spans.len(), 1);
        assert_eq!(resource_spans.scope_spans[0].scope.as_ref(), Some(&scope));
        assert_eq!(
            resource_spans.scope_spans[0].spans,
            vec![expected.clone(), expected]
        );
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
        }
        let mut buf = Vec::new();
        varint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
    }
}
