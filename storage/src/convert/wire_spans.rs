//! OTLP trace exports read straight from their protobuf bytes into rows of `spans`.
//!
//! Decoding a request into prost's owned structs allocates and copies every id, key and value, and
//! [`spans_to_batch`](super::spans_to_batch) then copies them again into Arrow: at ingest rates that was
//! the larger part of an export's CPU (bench/README.md, "Ingest"). This reader borrows ids, names, keys
//! and scalar values from the request bytes and appends them to the column builders directly. The rare
//! parts (resources, scopes, events, links, array and kvlist values) are still decoded by prost, one small
//! message at a time, and go through the same code as before.
//!
//! It covers valid requests only. On the first span that the collector's validation would reject, and
//! on anything prost would refuse, it gives up with [`NotFast`], and the caller decodes the request with
//! prost, validates it and converts it with `spans_to_batch`: that path alone reports problems. Its tests
//! check that both paths store the same rows.

use std::borrow::Cow;

use datafusion::arrow::array::RecordBatch;
use meshscope_proto::common::{InstrumentationScope, KeyValue};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::span::{Event, Link};
use prost::Message;

use super::attribute::{AttrRef, ValueRef};
use super::context::{EncodedResource, EncodedScope};
use super::spans::{SpanBuilders, SpanRow};
use super::wire::{Field, Fields};
use super::{MAX_STORED_TIME_NANOS, any_value_deeper_than, attributes_deeper_than};

/// Why the direct read gave up; the request must take the full path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not read directly: {0}")]
pub struct NotFast(pub &'static str);

/// OTLP `ExportTraceServiceRequest` bytes -> the RecordBatch [`spans_to_batch`](super::spans_to_batch)
/// makes of the decoded request, when every span in it is valid.
///
/// Valid, as the collector's validation has it: 16-byte and 8-byte non-zero trace and span ids (in links
/// too), a parent id empty or 8 bytes, times up to `i64::MAX`, and no attribute value (of the resource,
/// scope, span, events or links) with arrays or kvlists nested more than `max_depth` levels.
pub fn spans_from_protobuf(body: &[u8], max_depth: usize) -> Result<RecordBatch, NotFast> {
    let request = Request::read(body)?;
    let mut builders = SpanBuilders::with_capacity(request.spans.len());
    let mut scratch = Scratch::default();
    for group in &request.resources {
        let resource = decode_part(group.resource, max_depth, |r: &Resource| &r.attributes)?;
        let resource =
            EncodedResource::new(resource.as_ref(), group.schema_url, &mut builders.json)
                .map_err(|_| NotFast("resource not encodable"))?;
        for scope_group in request.scopes(group) {
            let spans = request.spans(scope_group);
            if spans.is_empty() {
                continue;
            }
            let scope = decode_part(scope_group.scope, max_depth, |s: &InstrumentationScope| {
                &s.attributes
            })?;
            let scope =
                EncodedScope::new(scope.as_ref(), scope_group.schema_url, &mut builders.json)
                    .map_err(|_| NotFast("scope not encodable"))?;
            builders.context.append_n(&resource, &scope, spans.len());
            for &span in spans {
                let row = read_span(span, &mut scratch, max_depth)?;
                builders
                    .append_row(&SpanRow {
                        attributes: &scratch.attributes,
                        events: &scratch.events,
                        links: &scratch.links,
                        ..row
                    })
                    .map_err(|_| NotFast("span not encodable"))?;
            }
        }
    }
    builders
        .finish()
        .map_err(|_| NotFast("batch not assembled"))
}

/// The request's structure: where each group and span is in the bytes.
#[derive(Default)]
struct Request<'a> {
    resources: Vec<ResourceGroup<'a>>,
    scopes: Vec<ScopeGroup<'a>>,
    spans: Vec<&'a [u8]>,
}

/// A `ResourceSpans`: its resource, schema URL and a range of `Request::scopes`.
struct ResourceGroup<'a> {
    resource: Option<&'a [u8]>,
    schema_url: &'a str,
    scopes: std::ops::Range<usize>,
}

/// A `ScopeSpans`: its scope, schema URL and a range of `Request::spans`.
struct ScopeGroup<'a> {
    scope: Option<&'a [u8]>,
    schema_url: &'a str,
    spans: std::ops::Range<usize>,
}

impl<'a> Request<'a> {
    fn read(body: &'a [u8]) -> Result<Self, NotFast> {
        let mut request = Request::default();
        for field in Fields::new(body) {
            match field.map_err(|_| MALFORMED)? {
                (1, Field::Bytes(resource_spans)) => request.read_resource(resource_spans)?,
                (1, _) => return Err(WIRE_TYPE),
                _ => {}
            }
        }
        Ok(request)
    }

    fn read_resource(&mut self, bytes: &'a [u8]) -> Result<(), NotFast> {
        let mut resource = None;
        let mut schema_url = "";
        let first_scope = self.scopes.len();
        for field in Fields::new(bytes) {
            match field.map_err(|_| MALFORMED)? {
                // prost merges a repeated message field; that is left to prost.
                (1, Field::Bytes(_)) if resource.is_some() => return Err(REPEATED),
                (1, Field::Bytes(b)) => resource = Some(b),
                (2, Field::Bytes(b)) => self.read_scope(b)?,
                (3, Field::Bytes(b)) => schema_url = text(b)?,
                (1..=3, _) => return Err(WIRE_TYPE),
                _ => {}
            }
        }
        self.resources.push(ResourceGroup {
            resource,
            schema_url,
            scopes: first_scope..self.scopes.len(),
        });
        Ok(())
    }

    fn read_scope(&mut self, bytes: &'a [u8]) -> Result<(), NotFast> {
        let mut scope = None;
        let mut schema_url = "";
        let first_span = self.spans.len();
        for field in Fields::new(bytes) {
            match field.map_err(|_| MALFORMED)? {
                (1, Field::Bytes(_)) if scope.is_some() => return Err(REPEATED),
                (1, Field::Bytes(b)) => scope = Some(b),
                (2, Field::Bytes(b)) => self.spans.push(b),
                (3, Field::Bytes(b)) => schema_url = text(b)?,
                (1..=3, _) => return Err(WIRE_TYPE),
                _ => {}
            }
        }
        self.scopes.push(ScopeGroup {
            scope,
            schema_url,
            spans: first_span..self.spans.len(),
        });
        Ok(())
    }

    fn scopes(&self, group: &ResourceGroup<'a>) -> &[ScopeGroup<'a>] {
        self.scopes.get(group.scopes.clone()).unwrap_or_default()
    }

    fn spans(&self, group: &ScopeGroup<'a>) -> &[&'a [u8]] {
        self.spans.get(group.spans.clone()).unwrap_or_default()
    }
}

const MALFORMED: NotFast = NotFast("malformed protobuf");
const WIRE_TYPE: NotFast = NotFast("a known field with the wrong wire type");
const REPEATED: NotFast = NotFast("a message field repeated");

/// Decodes an optional resource or scope with prost, refusing one whose attributes nest too deep.
fn decode_part<M: Message + Default>(
    bytes: Option<&[u8]>,
    max_depth: usize,
    attributes: impl Fn(&M) -> &[KeyValue],
) -> Result<Option<M>, NotFast> {
    let part = bytes
        .map(M::decode)
        .transpose()
        .map_err(|_| NotFast("resource or scope not decodable"))?;
    if part
        .as_ref()
        .is_some_and(|m| attributes_deeper_than(attributes(m), max_depth))
    {
        return Err(NotFast("resource or scope attributes nested too deep"));
    }
    Ok(part)
}

/// Per-span lists, reused from span to span.
#[derive(Default)]
struct Scratch<'a> {
    attributes: Vec<AttrRef<'a>>,
    events: Vec<Event>,
    links: Vec<Link>,
}

/// Reads one `Span` message; its lists go to `scratch` (and are left empty in the row returned). Integer fields are truncated to their declared
/// width, as prost does.
fn read_span<'a>(
    bytes: &'a [u8],
    scratch: &mut Scratch<'a>,
    max_depth: usize,
) -> Result<SpanRow<'a>, NotFast> {
    scratch.attributes.clear();
    scratch.events.clear();
    scratch.links.clear();
    let mut span = SpanRow::default();
    for field in Fields::new(bytes) {
        match field.map_err(|_| MALFORMED)? {
            (1, Field::Bytes(b)) => span.trace_id = b,
            (2, Field::Bytes(b)) => span.span_id = b,
            (3, Field::Bytes(b)) => span.trace_state = text(b)?,
            (4, Field::Bytes(b)) => span.parent_span_id = b,
            (5, Field::Bytes(b)) => span.name = text(b)?,
            (6, Field::Varint(v)) => span.kind = v as i32,
            (7, Field::Fixed64(v)) => span.start_time_unix_nano = v,
            (8, Field::Fixed64(v)) => span.end_time_unix_nano = v,
            (9, Field::Bytes(b)) => scratch.attributes.push(read_attribute(b, max_depth)?),
            (10, Field::Varint(v)) => span.dropped_attributes_count = v as u32,
            (11, Field::Bytes(b)) => {
                let event = Event::decode(b).map_err(|_| NotFast("event not decodable"))?;
                if attributes_deeper_than(&event.attributes, max_depth) {
                    return Err(NotFast("event attributes nested too deep"));
                }
                scratch.events.push(event);
            }
            (12, Field::Varint(v)) => span.dropped_events_count = v as u32,
            (13, Field::Bytes(b)) => {
                let link = Link::decode(b).map_err(|_| NotFast("link not decodable"))?;
                if !valid_id(&link.trace_id, 16)
                    || !valid_id(&link.span_id, 8)
                    || attributes_deeper_than(&link.attributes, max_depth)
                {
                    return Err(NotFast("invalid link"));
                }
                scratch.links.push(link);
            }
            (14, Field::Varint(v)) => span.dropped_links_count = v as u32,
            (15, Field::Bytes(b)) => read_status(b, &mut span)?,
            (16, Field::Fixed32(v)) => span.flags = v,
            (1..=16, _) => return Err(WIRE_TYPE),
            _ => {}
        }
    }
    let valid = valid_id(span.trace_id, 16)
        && valid_id(span.span_id, 8)
        && matches!(span.parent_span_id.len(), 0 | 8)
        && span.start_time_unix_nano <= MAX_STORED_TIME_NANOS
        && span.end_time_unix_nano <= MAX_STORED_TIME_NANOS;
    if valid {
        Ok(span)
    } else {
        Err(NotFast("invalid span"))
    }
}

/// Reads a `Status` into the span; a repeated status merges field by field, as prost merges it.
fn read_status<'a>(bytes: &'a [u8], span: &mut SpanRow<'a>) -> Result<(), NotFast> {
    for field in Fields::new(bytes) {
        match field.map_err(|_| MALFORMED)? {
            (2, Field::Bytes(b)) => span.status_message = text(b)?,
            (3, Field::Varint(v)) => span.status_code = v as i32,
            (2 | 3, _) => return Err(WIRE_TYPE),
            _ => {}
        }
    }
    Ok(())
}

/// Reads a `KeyValue`: borrowed when it is a plain key with a scalar value, else decoded by prost.
fn read_attribute(bytes: &[u8], max_depth: usize) -> Result<AttrRef<'_>, NotFast> {
    let mut key = "";
    let mut value = Some(ValueRef::Absent);
    let mut seen_value = false;
    for field in Fields::new(bytes) {
        match field.map_err(|_| MALFORMED)? {
            (1, Field::Bytes(b)) => key = text(b)?,
            // A second value would be merged into the first by prost: left to prost.
            (2, Field::Bytes(_)) if seen_value => value = None,
            (2, Field::Bytes(b)) => {
                seen_value = true;
                value = value.and(read_value(b)?);
            }
            (3, Field::Varint(index)) if index != 0 => value = None,
            (3, Field::Varint(_)) => {}
            (1..=3, _) => return Err(WIRE_TYPE),
            _ => {}
        }
    }
    if let Some(value) = value {
        return Ok(AttrRef::Plain { key, value });
    }
    let kv = KeyValue::decode(bytes).map_err(|_| NotFast("attribute not decodable"))?;
    if kv
        .value
        .as_ref()
        .is_some_and(|v| any_value_deeper_than(v, max_depth))
    {
        return Err(NotFast("attribute nested too deep"));
    }
    Ok(AttrRef::Full(Cow::Owned(kv)))
}

/// Reads an `AnyValue` holding a scalar (the last of its oneof fields wins, as in prost); `None` for an
/// array, a kvlist or a string-table index.
fn read_value(bytes: &[u8]) -> Result<Option<ValueRef<'_>>, NotFast> {
    let mut value = ValueRef::Empty;
    for field in Fields::new(bytes) {
        value = match field.map_err(|_| MALFORMED)? {
            (1, Field::Bytes(b)) => ValueRef::Str(text(b)?),
            (2, Field::Varint(v)) => ValueRef::Bool(v != 0),
            (3, Field::Varint(v)) => ValueRef::Int(v as i64),
            (4, Field::Fixed64(v)) => ValueRef::Double(f64::from_bits(v)),
            (7, Field::Bytes(b)) => ValueRef::Bytes(b),
            (5 | 6, Field::Bytes(_)) | (8, Field::Varint(_)) => return Ok(None),
            (1..=8, _) => return Err(WIRE_TYPE),
            _ => value,
        };
    }
    Ok(Some(value))
}

fn text(bytes: &[u8]) -> Result<&str, NotFast> {
    std::str::from_utf8(bytes).map_err(|_| NotFast("a string is not UTF-8"))
}

/// An id of `len` bytes, not all zero.
fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

#[cfg(test)]
mod tests {
    use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
    use meshscope_proto::common::any_value::Value;
    use meshscope_proto::common::{AnyValue, ArrayValue, KeyValueList};
    use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::convert::spans::tests::{full_span, request};
    use crate::convert::spans_to_batch;

    const DEPTH: usize = 32;

    /// A protobuf field of wire type 2.
    fn field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for mut value in [u64::from(number << 3 | 2), payload.len() as u64] {
            while value >= 0x80 {
                out.push((value as u8) | 0x80);
                value >>= 7;
            }
            out.push(value as u8);
        }
        out.extend_from_slice(payload);
        out
    }

    /// A request of one resource and one scope whose single span is encoded as `span`.
    fn request_with_span_bytes(span: &[u8]) -> Vec<u8> {
        field(1, &field(2, &field(2, span)))
    }

    /// Both paths give the same batch for `bytes`.
    fn assert_same(bytes: &[u8]) {
        let decoded = ExportTraceServiceRequest::decode(bytes).unwrap();
        let expected = spans_to_batch(&decoded).unwrap();
        assert_eq!(spans_from_protobuf(bytes, DEPTH).unwrap(), expected);
    }

    fn single(span: Span) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn nested(depth: usize) -> AnyValue {
        (0..depth).fold(
            AnyValue {
                value: Some(Value::IntValue(1)),
            },
            |inner, _| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![inner],
                })),
            },
        )
    }

    fn deep_attribute(depth: usize) -> KeyValue {
        KeyValue {
            key: "deep".to_owned(),
            value: Some(nested(depth)),
            key_strindex: 0,
        }
    }

    #[test]
    fn every_kind_of_content_gives_the_rows_prost_gives() {
        assert_same(&request().encode_to_vec());
        assert_same(&ExportTraceServiceRequest::default().encode_to_vec());
        let mut at_the_limit = full_span();
        at_the_limit.attributes.push(deep_attribute(DEPTH));
        assert_same(&single(at_the_limit).encode_to_vec());
    }

    #[test]
    fn wire_details_are_read_as_prost_reads_them() {
        let span = full_span().encode_to_vec();
        // A message sent in two parts is merged: scalars from the second, lists appended.
        let second = Span {
            name: "renamed".to_owned(),
            status: Some(meshscope_proto::trace::Status {
                message: String::new(),
                code: 1,
            }),
            attributes: vec![KeyValue {
                key: "later".to_owned(),
                value: Some(AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList::default())),
                }),
                key_strindex: 0,
            }],
            ..Span::default()
        }
        .encode_to_vec();
        assert_same(&request_with_span_bytes(&[span.clone(), second].concat()));
        // Unknown fields are skipped at every level.
        let unknown = field(99, b"future");
        assert_same(&request_with_span_bytes(
            &[span.clone(), unknown.clone()].concat(),
        ));
        assert_same(&[request().encode_to_vec(), unknown.clone()].concat());
        // An attribute whose value is sent twice, or with a string-table key, or a oneof set twice.
        let twice = [
            field(1, b"k"),
            field(2, &field(1, b"first")),
            field(2, &field(7, b"second")),
        ]
        .concat();
        let strindex = [field(1, b"k"), vec![3 << 3, 5]].concat();
        let oneof_twice = [
            field(1, b"k"),
            field(2, &[field(1, b"a"), vec![2 << 3, 1]].concat()),
        ]
        .concat();
        for attribute in [twice, strindex, oneof_twice] {
            assert_same(&request_with_span_bytes(
                &[span.clone(), field(9, &attribute)].concat(),
            ));
        }
    }

    #[test]
    fn gives_up_on_what_validation_or_prost_refuses() {
        let cases: Vec<(&str, Span)> = vec![
            (
                "short trace id",
                Span {
                    trace_id: vec![1; 15],
                    ..full_span()
                },
            ),
            (
                "zero span id",
                Span {
                    span_id: vec![0; 8],
                    ..full_span()
                },
            ),
            (
                "parent of 3 bytes",
                Span {
                    parent_span_id: vec![1; 3],
                    ..full_span()
                },
            ),
            (
                "start past i64",
                Span {
                    start_time_unix_nano: MAX_STORED_TIME_NANOS + 1,
                    ..full_span()
                },
            ),
            (
                "end past i64",
                Span {
                    end_time_unix_nano: u64::MAX,
                    ..full_span()
                },
            ),
            ("deep attribute", {
                let mut span = full_span();
                span.attributes.push(deep_attribute(DEPTH + 1));
                span
            }),
            ("deep event attribute", {
                let mut span = full_span();
                span.events[0].attributes.push(deep_attribute(DEPTH + 1));
                span
            }),
            ("deep link attribute", {
                let mut span = full_span();
                span.links[0].attributes.push(deep_attribute(DEPTH + 1));
                span
            }),
            ("link with a zero trace id", {
                let mut span = full_span();
                span.links[0].trace_id = vec![0; 16];
                span
            }),
        ];
        for (what, span) in cases {
            let bytes = single(span).encode_to_vec();
            assert!(spans_from_protobuf(&bytes, DEPTH).is_err(), "{what}");
        }
        let mut deep_resource = request();
        if let Some(resource) = deep_resource.resource_spans[0].resource.as_mut() {
            resource.attributes.push(deep_attribute(DEPTH + 1));
        }
        assert!(spans_from_protobuf(&deep_resource.encode_to_vec(), DEPTH).is_err());

        let span = full_span().encode_to_vec();
        let name_not_utf8 = field(5, &[0xff, 0xfe]);
        let name_as_varint = vec![5 << 3, 1];
        let cut_short = span.get(..span.len() - 1).unwrap_or_default().to_vec();
        for bytes in [
            request_with_span_bytes(&[span.clone(), name_not_utf8].concat()),
            request_with_span_bytes(&[span.clone(), name_as_varint].concat()),
            request_with_span_bytes(&cut_short),
        ] {
            assert!(ExportTraceServiceRequest::decode(&bytes[..]).is_err());
            assert!(spans_from_protobuf(&bytes, DEPTH).is_err());
        }
    }
}
