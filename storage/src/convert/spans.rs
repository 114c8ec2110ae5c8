//! Spans: OTLP trace exports to rows of `spans`, and rows back to spans.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, Int64Array, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampNanosecondArray, TimestampNanosecondBuilder, UInt32Array,
    UInt32Builder,
};
use datafusion::arrow::datatypes::SchemaRef;
use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
use meshscope_proto::common::any_value::Value;
use meshscope_proto::common::{AnyValue, InstrumentationScope, KeyValue};
use meshscope_proto::resource::Resource;
use meshscope_proto::trace::span::{Event, Link};
use meshscope_proto::trace::{Span, Status};

use super::ConvertError;
use super::attribute::{AttrRef, ValueRef};
use super::context::{
    self, ContextBuilders, EncodedResource, EncodedScope, SERVICE_NAME_KEY, append_optional,
    optional_str, required, string_builder, timestamp_builder,
};
use super::json::{self, AttrsJson, EventsJson, LinksJson};
use crate::schema::{PROMOTED_SPAN_ATTRIBUTES, PromotedType, SPANS_SCHEMA};

/// Number of promoted span attributes.
const PROMOTED: usize = PROMOTED_SPAN_ATTRIBUTES.len();

/// Names of the `kind` column values, indexed by `SpanKind` number.
const KIND_NAMES: [&str; 6] = [
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
];

/// Names of the `status_code` column values, indexed by `StatusCode` number.
const STATUS_NAMES: [&str; 3] = ["unset", "ok", "error"];

/// A span as stored, with the resource and scope it came with.
///
/// Rebuilt by [`batch_to_spans`]; see the [module docs](super) for what differs from what was sent
/// (attribute order, `status` always `Some`, no resource entity refs).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    /// The resource of the span's `ResourceSpans`.
    pub resource: Resource,
    /// The schema URL of the span's `ResourceSpans`.
    pub resource_schema_url: String,
    /// The instrumentation scope of the span's `ScopeSpans`.
    pub scope: InstrumentationScope,
    /// The schema URL of the span's `ScopeSpans`.
    pub scope_schema_url: String,
    /// The span.
    pub span: Span,
}

/// OTLP trace export -> one RecordBatch with SPANS_SCHEMA (all spans of all resource/scope groups).
///
/// Rows follow the order of the request. Timestamps are the nanoseconds reinterpreted as `i64`, and
/// `duration_ns` is `end - start` (saturating, negative when the span ends before it starts). A missing
/// status is stored like the default one (`unset`, no message).
pub fn spans_to_batch(request: &ExportTraceServiceRequest) -> Result<RecordBatch, ConvertError> {
    let rows = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let mut builders = SpanBuilders::with_capacity(rows);
    let mut attributes = Vec::new();
    for rs in &request.resource_spans {
        let resource =
            EncodedResource::new(rs.resource.as_ref(), &rs.schema_url, &mut builders.json)?;
        for ss in rs.scope_spans.iter().filter(|ss| !ss.spans.is_empty()) {
            let scope = EncodedScope::new(ss.scope.as_ref(), &ss.schema_url, &mut builders.json)?;
            builders.context.append_n(&resource, &scope, ss.spans.len());
            for span in &ss.spans {
                builders.append(span, &mut attributes)?;
            }
        }
    }
    builders.finish()
}

/// One span's fields, borrowed from a decoded [`Span`] or straight from the protobuf bytes.
#[derive(Default)]
pub(crate) struct SpanRow<'a> {
    pub(crate) trace_id: &'a [u8],
    pub(crate) span_id: &'a [u8],
    pub(crate) parent_span_id: &'a [u8],
    pub(crate) trace_state: &'a str,
    pub(crate) flags: u32,
    pub(crate) name: &'a str,
    pub(crate) kind: i32,
    pub(crate) start_time_unix_nano: u64,
    pub(crate) end_time_unix_nano: u64,
    /// `Status::code`; 0 (`unset`) when the span has no status.
    pub(crate) status_code: i32,
    pub(crate) status_message: &'a str,
    pub(crate) attributes: &'a [AttrRef<'a>],
    pub(crate) dropped_attributes_count: u32,
    pub(crate) events: &'a [Event],
    pub(crate) dropped_events_count: u32,
    pub(crate) links: &'a [Link],
    pub(crate) dropped_links_count: u32,
}

/// The builder of a promoted attribute column.
enum PromotedBuilder {
    String(StringBuilder),
    Int(Int64Builder),
}

/// Column builders of `spans`, plus scratch space reused across rows.
pub(crate) struct SpanBuilders {
    pub(crate) context: ContextBuilders,
    trace_id: BinaryBuilder,
    span_id: BinaryBuilder,
    parent_span_id: BinaryBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    promoted: Vec<PromotedBuilder>,
    attributes: StringBuilder,
    dropped_attributes_count: UInt32Builder,
    events: StringBuilder,
    dropped_events_count: UInt32Builder,
    links: StringBuilder,
    dropped_links_count: UInt32Builder,
    /// JSON output buffer.
    pub(crate) json: Vec<u8>,
    /// Attributes of the current span moved to promoted columns, by index.
    skip: Vec<bool>,
}

impl SpanBuilders {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        Self {
            context: ContextBuilders::with_capacity(rows),
            trace_id: BinaryBuilder::with_capacity(rows, rows * 16),
            span_id: BinaryBuilder::with_capacity(rows, rows * 8),
            parent_span_id: BinaryBuilder::with_capacity(rows, rows * 8),
            trace_state: string_builder(rows),
            flags: UInt32Builder::with_capacity(rows),
            name: string_builder(rows),
            kind: string_builder(rows),
            start_time: timestamp_builder(rows),
            end_time: timestamp_builder(rows),
            duration_ns: Int64Builder::with_capacity(rows),
            status_code: string_builder(rows),
            status_message: string_builder(rows),
            promoted: PROMOTED_SPAN_ATTRIBUTES
                .iter()
                .map(|(_, _, ty)| match ty {
                    PromotedType::String => PromotedBuilder::String(string_builder(rows)),
                    PromotedType::Int => PromotedBuilder::Int(Int64Builder::with_capacity(rows)),
                })
                .collect(),
            attributes: StringBuilder::with_capacity(rows, rows * 256),
            dropped_attributes_count: UInt32Builder::with_capacity(rows),
            events: string_builder(rows),
            dropped_events_count: UInt32Builder::with_capacity(rows),
            links: string_builder(rows),
            dropped_links_count: UInt32Builder::with_capacity(rows),
            json: Vec::with_capacity(1024),
            skip: Vec::new(),
        }
    }

    /// Appends the span columns of one decoded span (the context columns are appended per scope group).
    fn append<'a>(
        &mut self,
        span: &'a Span,
        attributes: &mut Vec<AttrRef<'a>>,
    ) -> Result<(), ConvertError> {
        let (status_code, status_message) = span
            .status
            .as_ref()
            .map_or((0, ""), |s| (s.code, s.message.as_str()));
        attributes.clear();
        attributes.extend(span.attributes.iter().map(AttrRef::of));
        self.append_row(&SpanRow {
            trace_id: &span.trace_id,
            span_id: &span.span_id,
            parent_span_id: &span.parent_span_id,
            trace_state: &span.trace_state,
            flags: span.flags,
            name: &span.name,
            kind: span.kind,
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            status_code,
            status_message,
            attributes,
            dropped_attributes_count: span.dropped_attributes_count,
            events: &span.events,
            dropped_events_count: span.dropped_events_count,
            links: &span.links,
            dropped_links_count: span.dropped_links_count,
        })
    }

    /// Appends the span columns of one row (the context columns are appended per scope group).
    pub(crate) fn append_row(&mut self, span: &SpanRow<'_>) -> Result<(), ConvertError> {
        self.trace_id.append_value(span.trace_id);
        self.span_id.append_value(span.span_id);
        if span.parent_span_id.is_empty() {
            self.parent_span_id.append_null();
        } else {
            self.parent_span_id.append_value(span.parent_span_id);
        }
        append_optional(&mut self.trace_state, span.trace_state);
        self.flags.append_value(span.flags);
        self.name.append_value(span.name);
        append_enum(&mut self.kind, &KIND_NAMES, span.kind);
        let start = span.start_time_unix_nano.cast_signed();
        let end = span.end_time_unix_nano.cast_signed();
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ns.append_value(end.saturating_sub(start));
        append_enum(&mut self.status_code, &STATUS_NAMES, span.status_code);
        append_optional(&mut self.status_message, span.status_message);

        self.append_promoted(span.attributes);
        json::encode_into(
            &mut self.json,
            &AttrsJson {
                attrs: span.attributes,
                skip: &self.skip,
            },
        )?;
        self.attributes.append_value(json::as_text(&self.json)?);
        self.dropped_attributes_count
            .append_value(span.dropped_attributes_count);
        json::encode_into(&mut self.json, &EventsJson(span.events))?;
        self.events.append_value(json::as_text(&self.json)?);
        self.dropped_events_count
            .append_value(span.dropped_events_count);
        json::encode_into(&mut self.json, &LinksJson(span.links))?;
        self.links.append_value(json::as_text(&self.json)?);
        self.dropped_links_count
            .append_value(span.dropped_links_count);
        Ok(())
    }

    /// Appends one value (or null) to every promoted column, and marks the moved attributes in `skip`.
    fn append_promoted(&mut self, attrs: &[AttrRef<'_>]) {
        let mut first = [None::<usize>; PROMOTED];
        let mut repeated = [false; PROMOTED];
        for (i, attr) in attrs.iter().enumerate() {
            if let Some(slot) = promoted_slot(attr.key()) {
                if first[slot].is_some() {
                    repeated[slot] = true;
                } else {
                    first[slot] = Some(i);
                }
            }
        }
        self.skip.clear();
        for (slot, builder) in self.promoted.iter_mut().enumerate() {
            let candidate =
                first[slot]
                    .filter(|_| !repeated[slot])
                    .and_then(|i| match attrs.get(i)? {
                        AttrRef::Plain { value, .. } => Some((i, *value)),
                        AttrRef::Full(_) => None,
                    });
            let moved = match (builder, candidate) {
                (PromotedBuilder::String(b), Some((i, ValueRef::Str(s)))) => {
                    b.append_value(s);
                    Some(i)
                }
                (PromotedBuilder::Int(b), Some((i, ValueRef::Int(v)))) => {
                    b.append_value(v);
                    Some(i)
                }
                (PromotedBuilder::String(b), _) => {
                    b.append_null();
                    None
                }
                (PromotedBuilder::Int(b), _) => {
                    b.append_null();
                    None
                }
            };
            if let Some(i) = moved {
                if self.skip.len() <= i {
                    self.skip.resize(i + 1, false);
                }
                if let Some(flag) = self.skip.get_mut(i) {
                    *flag = true;
                }
            }
        }
    }

    pub(crate) fn finish(mut self) -> Result<RecordBatch, ConvertError> {
        let mut columns: Vec<(&'static str, ArrayRef)> =
            Vec::with_capacity(SPANS_SCHEMA.fields().len());
        columns.extend(self.context.finish());
        columns.extend([
            ("trace_id", Arc::new(self.trace_id.finish()) as ArrayRef),
            ("span_id", Arc::new(self.span_id.finish())),
            ("parent_span_id", Arc::new(self.parent_span_id.finish())),
            ("trace_state", Arc::new(self.trace_state.finish())),
            ("flags", Arc::new(self.flags.finish())),
            ("name", Arc::new(self.name.finish())),
            ("kind", Arc::new(self.kind.finish())),
            ("start_time", Arc::new(self.start_time.finish())),
            ("end_time", Arc::new(self.end_time.finish())),
            ("duration_ns", Arc::new(self.duration_ns.finish())),
            ("status_code", Arc::new(self.status_code.finish())),
            ("status_message", Arc::new(self.status_message.finish())),
        ]);
        for ((_, column, _), builder) in PROMOTED_SPAN_ATTRIBUTES.iter().zip(&mut self.promoted) {
            let array: ArrayRef = match builder {
                PromotedBuilder::String(b) => Arc::new(b.finish()),
                PromotedBuilder::Int(b) => Arc::new(b.finish()),
            };
            columns.push((column, array));
        }
        columns.extend([
            ("attributes", Arc::new(self.attributes.finish()) as ArrayRef),
            (
                "dropped_attributes_count",
                Arc::new(self.dropped_attributes_count.finish()),
            ),
            ("events", Arc::new(self.events.finish())),
            (
                "dropped_events_count",
                Arc::new(self.dropped_events_count.finish()),
            ),
            ("links", Arc::new(self.links.finish())),
            (
                "dropped_links_count",
                Arc::new(self.dropped_links_count.finish()),
            ),
        ]);
        context::assemble(&SPANS_SCHEMA, columns)
    }
}

/// Index in [`PROMOTED_SPAN_ATTRIBUTES`] of the attribute key `key`.
fn promoted_slot(key: &str) -> Option<usize> {
    PROMOTED_SPAN_ATTRIBUTES
        .iter()
        .position(|(k, _, _)| *k == key)
}

/// Appends the name of enum number `value`, or its decimal string when it has no name.
fn append_enum(builder: &mut StringBuilder, names: &[&str], value: i32) {
    match usize::try_from(value).ok().and_then(|i| names.get(i)) {
        Some(name) => builder.append_value(name),
        None => builder.append_value(value.to_string()),
    }
}

/// Parses a value written by [`append_enum`].
fn parse_enum(
    names: &[&str],
    text: &str,
    column: &'static str,
    row: usize,
) -> Result<i32, ConvertError> {
    if let Some(i) = names.iter().position(|name| *name == text) {
        return i32::try_from(i).map_err(|e| invalid(column, row, e));
    }
    text.parse().map_err(|_| ConvertError::InvalidValue {
        column,
        row,
        message: format!("unknown value `{text}`"),
    })
}

fn invalid(column: &'static str, row: usize, error: impl std::fmt::Display) -> ConvertError {
    ConvertError::InvalidValue {
        column,
        row,
        message: error.to_string(),
    }
}

/// RecordBatch (full SPANS_SCHEMA columns, looked up by name) -> spans, exactly reconstructing what was sent.
///
/// Columns are found by name, so their order does not matter, and are cast to the schema's type when they
/// have another one (string views or dictionaries read from Parquet). Differences from the original: the
/// resource's `service.name` comes first and promoted attributes come last (compare attribute lists
/// sorted by key), `status` is always `Some` (a span sent without one gets `Status::default()`), and
/// `Resource::entity_refs` is empty.
pub fn batch_to_spans(batch: &RecordBatch) -> Result<Vec<StoredSpan>, ConvertError> {
    let columns = SpanColumns::new(batch)?;
    let mut spans = Vec::with_capacity(batch.num_rows());
    let mut resource_cache: Option<(usize, Resource)> = None;
    let mut scope_cache: Option<(usize, InstrumentationScope)> = None;
    for row in 0..batch.num_rows() {
        let resource = match resource_cache.take() {
            Some((prev, resource)) if columns.same_resource(prev, row) => resource,
            _ => columns.resource(row)?,
        };
        let scope = match scope_cache.take() {
            Some((prev, scope)) if columns.same_scope(prev, row) => scope,
            _ => columns.scope(row)?,
        };
        spans.push(StoredSpan {
            resource: resource.clone(),
            resource_schema_url: optional_str(&columns.resource_schema_url, row)
                .unwrap_or_default()
                .to_owned(),
            scope: scope.clone(),
            scope_schema_url: optional_str(&columns.scope_schema_url, row)
                .unwrap_or_default()
                .to_owned(),
            span: columns.span(row)?,
        });
        resource_cache = Some((row, resource));
        scope_cache = Some((row, scope));
    }
    Ok(spans)
}

/// The typed promoted column of a batch.
enum PromotedColumn {
    String(StringArray),
    Int(Int64Array),
}

/// The columns of a `spans` batch, with the types of [`SPANS_SCHEMA`].
struct SpanColumns {
    service_name: StringArray,
    resource_attributes: StringArray,
    resource_dropped_attributes_count: UInt32Array,
    resource_schema_url: StringArray,
    scope_name: StringArray,
    scope_version: StringArray,
    scope_attributes: StringArray,
    scope_dropped_attributes_count: UInt32Array,
    scope_schema_url: StringArray,
    trace_id: BinaryArray,
    span_id: BinaryArray,
    parent_span_id: BinaryArray,
    trace_state: StringArray,
    flags: UInt32Array,
    name: StringArray,
    kind: StringArray,
    start_time: TimestampNanosecondArray,
    end_time: TimestampNanosecondArray,
    status_code: StringArray,
    status_message: StringArray,
    promoted: Vec<PromotedColumn>,
    attributes: StringArray,
    dropped_attributes_count: UInt32Array,
    events: StringArray,
    dropped_events_count: UInt32Array,
    links: StringArray,
    dropped_links_count: UInt32Array,
}

impl SpanColumns {
    fn new(batch: &RecordBatch) -> Result<Self, ConvertError> {
        let schema: &SchemaRef = &SPANS_SCHEMA;
        let promoted = PROMOTED_SPAN_ATTRIBUTES
            .iter()
            .map(|(_, column, ty)| {
                Ok(match ty {
                    PromotedType::String => {
                        PromotedColumn::String(context::column(batch, schema, column)?)
                    }
                    PromotedType::Int => {
                        PromotedColumn::Int(context::column(batch, schema, column)?)
                    }
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(Self {
            service_name: context::column(batch, schema, "service_name")?,
            resource_attributes: context::column(batch, schema, "resource_attributes")?,
            resource_dropped_attributes_count: context::column(
                batch,
                schema,
                "resource_dropped_attributes_count",
            )?,
            resource_schema_url: context::column(batch, schema, "resource_schema_url")?,
            scope_name: context::column(batch, schema, "scope_name")?,
            scope_version: context::column(batch, schema, "scope_version")?,
            scope_attributes: context::column(batch, schema, "scope_attributes")?,
            scope_dropped_attributes_count: context::column(
                batch,
                schema,
                "scope_dropped_attributes_count",
            )?,
            scope_schema_url: context::column(batch, schema, "scope_schema_url")?,
            trace_id: context::column(batch, schema, "trace_id")?,
            span_id: context::column(batch, schema, "span_id")?,
            parent_span_id: context::column(batch, schema, "parent_span_id")?,
            trace_state: context::column(batch, schema, "trace_state")?,
            flags: context::column(batch, schema, "flags")?,
            name: context::column(batch, schema, "name")?,
            kind: context::column(batch, schema, "kind")?,
            start_time: context::column(batch, schema, "start_time")?,
            end_time: context::column(batch, schema, "end_time")?,
            status_code: context::column(batch, schema, "status_code")?,
            status_message: context::column(batch, schema, "status_message")?,
            promoted,
            attributes: context::column(batch, schema, "attributes")?,
            dropped_attributes_count: context::column(batch, schema, "dropped_attributes_count")?,
            events: context::column(batch, schema, "events")?,
            dropped_events_count: context::column(batch, schema, "dropped_events_count")?,
            links: context::column(batch, schema, "links")?,
            dropped_links_count: context::column(batch, schema, "dropped_links_count")?,
        })
    }

    /// Whether rows `a` and `b` hold the same resource.
    fn same_resource(&self, a: usize, b: usize) -> bool {
        optional_str(&self.service_name, a) == optional_str(&self.service_name, b)
            && optional_str(&self.resource_attributes, a)
                == optional_str(&self.resource_attributes, b)
            && self.resource_dropped_attributes_count.value(a)
                == self.resource_dropped_attributes_count.value(b)
    }

    /// Whether rows `a` and `b` hold the same scope.
    fn same_scope(&self, a: usize, b: usize) -> bool {
        optional_str(&self.scope_name, a) == optional_str(&self.scope_name, b)
            && optional_str(&self.scope_version, a) == optional_str(&self.scope_version, b)
            && optional_str(&self.scope_attributes, a) == optional_str(&self.scope_attributes, b)
            && self.scope_dropped_attributes_count.value(a)
                == self.scope_dropped_attributes_count.value(b)
    }

    fn resource(&self, row: usize) -> Result<Resource, ConvertError> {
        let mut attributes = Vec::new();
        if let Some(name) = optional_str(&self.service_name, row) {
            attributes.push(string_attribute(SERVICE_NAME_KEY, name));
        }
        attributes.extend(key_values(
            &self.resource_attributes,
            "resource_attributes",
            row,
        )?);
        Ok(Resource {
            attributes,
            dropped_attributes_count: u32_at(
                &self.resource_dropped_attributes_count,
                "resource_dropped_attributes_count",
                row,
            )?,
            entity_refs: Vec::new(),
        })
    }

    fn scope(&self, row: usize) -> Result<InstrumentationScope, ConvertError> {
        Ok(InstrumentationScope {
            name: optional_str(&self.scope_name, row)
                .unwrap_or_default()
                .to_owned(),
            version: optional_str(&self.scope_version, row)
                .unwrap_or_default()
                .to_owned(),
            attributes: key_values(&self.scope_attributes, "scope_attributes", row)?,
            dropped_attributes_count: u32_at(
                &self.scope_dropped_attributes_count,
                "scope_dropped_attributes_count",
                row,
            )?,
        })
    }

    fn span(&self, row: usize) -> Result<Span, ConvertError> {
        let mut attributes = key_values(&self.attributes, "attributes", row)?;
        for ((key, _, _), column) in PROMOTED_SPAN_ATTRIBUTES.iter().zip(&self.promoted) {
            let value = match column {
                PromotedColumn::String(a) => {
                    optional_str(a, row).map(|s| Value::StringValue(s.to_owned()))
                }
                PromotedColumn::Int(a) => a.is_valid(row).then(|| Value::IntValue(a.value(row))),
            };
            if let Some(value) = value {
                attributes.push(KeyValue {
                    key: (*key).to_owned(),
                    value: Some(AnyValue { value: Some(value) }),
                    key_strindex: 0,
                });
            }
        }
        let events = text(&self.events, "events", row)?;
        let links = text(&self.links, "links", row)?;
        Ok(Span {
            trace_id: required(&self.trace_id, "trace_id", row, |a, i| a.value(i).to_vec())?,
            span_id: required(&self.span_id, "span_id", row, |a, i| a.value(i).to_vec())?,
            trace_state: optional_str(&self.trace_state, row)
                .unwrap_or_default()
                .to_owned(),
            parent_span_id: if self.parent_span_id.is_valid(row) {
                self.parent_span_id.value(row).to_vec()
            } else {
                Vec::new()
            },
            flags: u32_at(&self.flags, "flags", row)?,
            name: text(&self.name, "name", row)?.to_owned(),
            kind: parse_enum(&KIND_NAMES, text(&self.kind, "kind", row)?, "kind", row)?,
            start_time_unix_nano: required(&self.start_time, "start_time", row, |a, i| a.value(i))?
                .cast_unsigned(),
            end_time_unix_nano: required(&self.end_time, "end_time", row, |a, i| a.value(i))?
                .cast_unsigned(),
            attributes,
            dropped_attributes_count: u32_at(
                &self.dropped_attributes_count,
                "dropped_attributes_count",
                row,
            )?,
            events: json::decode_events(events).map_err(|e| invalid("events", row, e))?,
            dropped_events_count: u32_at(&self.dropped_events_count, "dropped_events_count", row)?,
            links: json::decode_links(links).map_err(|e| invalid("links", row, e))?,
            dropped_links_count: u32_at(&self.dropped_links_count, "dropped_links_count", row)?,
            status: Some(Status {
                message: optional_str(&self.status_message, row)
                    .unwrap_or_default()
                    .to_owned(),
                code: parse_enum(
                    &STATUS_NAMES,
                    text(&self.status_code, "status_code", row)?,
                    "status_code",
                    row,
                )?,
            }),
        })
    }
}

/// The value of a non-null string column.
fn text<'a>(
    array: &'a StringArray,
    column: &'static str,
    row: usize,
) -> Result<&'a str, ConvertError> {
    required(array, column, row, |a, i| a.value(i))
}

/// The value of a non-null `UInt32` column.
fn u32_at(array: &UInt32Array, column: &'static str, row: usize) -> Result<u32, ConvertError> {
    required(array, column, row, |a, i| a.value(i))
}

/// The decoded value of a non-null attribute JSON column.
fn key_values(
    array: &StringArray,
    column: &'static str,
    row: usize,
) -> Result<Vec<KeyValue>, ConvertError> {
    json::decode_key_values(text(array, column, row)?).map_err(|e| invalid(column, row, e))
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        key_strindex: 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;
    use meshscope_proto::common::{ArrayValue, KeyValueList};
    use meshscope_proto::trace::span::{Event, Link};
    use meshscope_proto::trace::{ResourceSpans, ScopeSpans};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn any(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(any(value)),
            key_strindex: 0,
        }
    }

    fn string(key: &str, value: &str) -> KeyValue {
        kv(key, Value::StringValue(value.to_owned()))
    }

    /// Every AnyValue type, including non-finite doubles and kvlists nested three deep.
    fn every_value() -> Vec<KeyValue> {
        let level3 = Value::KvlistValue(KeyValueList {
            values: vec![kv("l3", Value::DoubleValue(f64::NEG_INFINITY))],
        });
        let level2 = Value::KvlistValue(KeyValueList {
            values: vec![kv("l2", level3), kv("l2b", Value::BoolValue(false))],
        });
        let level1 = Value::KvlistValue(KeyValueList {
            values: vec![kv("l1", level2)],
        });
        vec![
            string("str", "text \"quoted\" ünïcode"),
            kv("bool", Value::BoolValue(true)),
            kv("int", Value::IntValue(-42)),
            kv("double", Value::DoubleValue(0.1 + 0.2)),
            kv("nan", Value::DoubleValue(f64::NAN)),
            kv("inf", Value::DoubleValue(f64::INFINITY)),
            kv("bytes", Value::BytesValue(vec![0, 255, 7])),
            kv(
                "array",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        any(Value::IntValue(1)),
                        any(Value::StringValue("two".to_owned())),
                        any(Value::ArrayValue(ArrayValue {
                            values: vec![any(Value::DoubleValue(3.5))],
                        })),
                    ],
                }),
            ),
            kv("nested", level1),
            KeyValue {
                key: "empty".to_owned(),
                value: Some(AnyValue { value: None }),
                key_strindex: 0,
            },
        ]
    }

    pub(crate) fn full_span() -> Span {
        let mut attributes = every_value();
        attributes.extend([
            string("http.request.method", "GET"),
            kv("http.response.status_code", Value::IntValue(503)),
            // Wrong type for its column: stays in `attributes`.
            string("server.port", "8080"),
            // Key appears twice: both stay in `attributes`.
            string("http.route", "/a"),
            string("http.route", "/b"),
            kv("meshscope.retry.attempt", Value::IntValue(2)),
        ]);
        Span {
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            trace_state: "vendor=value".to_owned(),
            parent_span_id: vec![9; 8],
            flags: 0x301,
            name: "GET /checkout".to_owned(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            attributes,
            dropped_attributes_count: 3,
            events: vec![
                Event {
                    time_unix_nano: 1_700_000_000_100_000_000,
                    name: "exception".to_owned(),
                    attributes: every_value(),
                    dropped_attributes_count: 1,
                },
                Event::default(),
            ],
            dropped_events_count: 4,
            links: vec![Link {
                trace_id: vec![7; 16],
                span_id: vec![8; 8],
                trace_state: "l=1".to_owned(),
                attributes: every_value(),
                dropped_attributes_count: 2,
                flags: 1,
            }],
            dropped_links_count: 5,
            status: Some(Status {
                message: "upstream failed".to_owned(),
                code: 2,
            }),
        }
    }

    fn minimal_span() -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "bare".to_owned(),
            // Unknown kind number: stored as its decimal string.
            kind: 42,
            start_time_unix_nano: 20,
            end_time_unix_nano: 10,
            ..Span::default()
        }
    }

    pub(crate) fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            string("host.name", "node-1"),
                            string("service.name", "checkout"),
                            kv("resource.double", Value::DoubleValue(f64::NAN)),
                        ],
                        dropped_attributes_count: 6,
                        entity_refs: Vec::new(),
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "meshscope-proxy".to_owned(),
                                version: "1.2.3".to_owned(),
                                attributes: vec![kv("scope.attr", Value::IntValue(1))],
                                dropped_attributes_count: 7,
                            }),
                            spans: vec![full_span(), minimal_span()],
                            schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
                        },
                        ScopeSpans::default(),
                        ScopeSpans {
                            scope: None,
                            spans: vec![minimal_span()],
                            schema_url: String::new(),
                        },
                    ],
                    schema_url: "https://opentelemetry.io/schemas/1.25.0".to_owned(),
                },
                ResourceSpans {
                    resource: Some(Resource {
                        // Not a string: stays in the JSON, service_name is null.
                        attributes: vec![kv("service.name", Value::IntValue(5))],
                        dropped_attributes_count: 0,
                        entity_refs: Vec::new(),
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        spans: vec![full_span()],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                },
                ResourceSpans::default(),
            ],
        }
    }

    /// The spans of a request as `batch_to_spans` should give them back.
    fn expected(request: &ExportTraceServiceRequest) -> Vec<StoredSpan> {
        let mut out = Vec::new();
        for rs in &request.resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let mut span = span.clone();
                    span.status.get_or_insert_with(Status::default);
                    out.push(StoredSpan {
                        resource: rs.resource.clone().unwrap_or_default(),
                        resource_schema_url: rs.schema_url.clone(),
                        scope: ss.scope.clone().unwrap_or_default(),
                        scope_schema_url: ss.schema_url.clone(),
                        span,
                    });
                }
            }
        }
        out
    }

    /// Sorts attribute lists by key and replaces NaN by a marker so `==` can compare.
    fn normalize(spans: &mut [StoredSpan]) {
        fn attrs(list: &mut Vec<KeyValue>) {
            list.sort_by(|a, b| a.key.cmp(&b.key));
            for kv in list {
                if let Some(v) = &mut kv.value {
                    value(v);
                }
            }
        }
        fn value(v: &mut AnyValue) {
            match &mut v.value {
                Some(Value::DoubleValue(d)) if d.is_nan() => {
                    v.value = Some(Value::StringValue("<NaN>".to_owned()));
                }
                Some(Value::ArrayValue(a)) => a.values.iter_mut().for_each(value),
                Some(Value::KvlistValue(l)) => attrs(&mut l.values),
                _ => {}
            }
        }
        for s in spans {
            attrs(&mut s.resource.attributes);
            attrs(&mut s.scope.attributes);
            attrs(&mut s.span.attributes);
            for e in &mut s.span.events {
                attrs(&mut e.attributes);
            }
            for l in &mut s.span.links {
                attrs(&mut l.attributes);
            }
        }
    }

    #[test]
    fn spans_round_trip() -> TestResult {
        let request = request();
        let batch = spans_to_batch(&request)?;
        assert_eq!(batch.schema(), *SPANS_SCHEMA);
        assert_eq!(batch.num_rows(), 4);

        let mut back = batch_to_spans(&batch)?;
        let mut want = expected(&request);
        normalize(&mut back);
        normalize(&mut want);
        assert_eq!(back.len(), want.len());
        for (got, want) in back.iter().zip(&want) {
            assert_eq!(got, want);
        }
        Ok(())
    }

    #[test]
    fn column_values() -> TestResult {
        let batch = spans_to_batch(&request())?;
        let strings = |name: &str| -> Result<Vec<Option<String>>, String> {
            let array = batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| format!("no string column {name}"))?;
            Ok((0..array.len())
                .map(|i| array.is_valid(i).then(|| array.value(i).to_owned()))
                .collect())
        };
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            strings("service_name")?,
            vec![s("checkout"), s("checkout"), s("checkout"), None]
        );
        let resource_attributes = strings("resource_attributes")?;
        assert!(
            !resource_attributes[0]
                .as_deref()
                .unwrap_or_default()
                .contains("service.name")
        );
        assert!(
            resource_attributes[3]
                .as_deref()
                .unwrap_or_default()
                .contains("service.name")
        );
        assert_eq!(
            strings("kind")?,
            vec![s("server"), s("42"), s("42"), s("server")]
        );
        assert_eq!(
            strings("status_code")?,
            vec![s("error"), s("unset"), s("unset"), s("error")]
        );
        assert_eq!(strings("status_message")?[1], None);
        assert_eq!(strings("trace_state")?[1], None);
        assert_eq!(strings("scope_name")?[2], None);
        assert_eq!(strings("scope_name")?[3], None);
        assert_eq!(strings("scope_version")?[0], s("1.2.3"));
        assert_eq!(strings("resource_schema_url")?[3], None);
        assert_eq!(strings("http_request_method")?[0], s("GET"));
        assert_eq!(strings("http_route")?[0], None);
        assert_eq!(strings("events")?[1], s("[]"));
        assert_eq!(strings("links")?[1], s("[]"));
        assert_eq!(strings("scope_attributes")?[2], s("[]"));
        let attributes = strings("attributes")?[0].clone().unwrap_or_default();
        assert!(attributes.contains(r#"{"key":"server.port","value":{"stringValue":"8080"}}"#));
        assert!(attributes.contains(r#""doubleValue":"NaN""#));
        assert!(!attributes.contains("http.request.method"));
        assert_eq!(strings("attributes")?[1], s("[]"));

        let ints = |name: &str| -> Result<Vec<Option<i64>>, String> {
            let array = batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| format!("no int column {name}"))?;
            Ok((0..array.len())
                .map(|i| array.is_valid(i).then(|| array.value(i)))
                .collect())
        };
        assert_eq!(ints("http_response_status_code")?[0], Some(503));
        assert_eq!(ints("server_port")?[0], None);
        assert_eq!(ints("mesh_retry_attempt")?[0], Some(2));
        assert_eq!(
            ints("duration_ns")?,
            vec![Some(250_000_000), Some(-10), Some(-10), Some(250_000_000)]
        );

        let parents = batch
            .column_by_name("parent_span_id")
            .ok_or("no parent_span_id")?;
        assert!(parents.is_valid(0));
        assert!(parents.is_null(1));
        Ok(())
    }

    #[test]
    fn timestamps_beyond_i64_round_trip() -> TestResult {
        let mut span = minimal_span();
        span.start_time_unix_nano = u64::MAX;
        span.end_time_unix_nano = 1;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span.clone()],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let back = batch_to_spans(&spans_to_batch(&request)?)?;
        assert_eq!(back[0].span.start_time_unix_nano, u64::MAX);
        assert_eq!(back[0].span.end_time_unix_nano, 1);
        Ok(())
    }

    #[test]
    fn empty_request_gives_empty_batch() -> TestResult {
        let batch = spans_to_batch(&ExportTraceServiceRequest::default())?;
        assert_eq!(batch.num_rows(), 0);
        assert!(batch_to_spans(&batch)?.is_empty());
        Ok(())
    }

    #[test]
    fn reads_reordered_and_view_typed_columns() -> TestResult {
        let request = request();
        let batch = spans_to_batch(&request)?;
        // Reverse the columns and turn strings into views, as a Parquet scan may.
        let schema = batch.schema();
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (field, column) in schema.fields().iter().zip(batch.columns()).rev() {
            let column = if field.data_type() == &DataType::Utf8 {
                cast(column, &DataType::Utf8View)?
            } else {
                Arc::clone(column)
            };
            fields.push(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(column.data_type().clone()),
            );
            columns.push(column);
        }
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        let reordered = RecordBatch::try_new(schema, columns)?;
        let mut got = batch_to_spans(&reordered)?;
        let mut want = batch_to_spans(&batch)?;
        normalize(&mut got);
        normalize(&mut want);
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn reports_bad_columns() -> TestResult {
        let batch = spans_to_batch(&request())?;
        let without = batch.project(&[0, 1, 2])?;
        assert!(matches!(
            batch_to_spans(&without),
            Err(ConvertError::MissingColumn(_))
        ));

        let index = batch.schema().index_of("kind")?;
        let mut columns = batch.columns().to_vec();
        columns[index] = Arc::new(StringArray::from(vec!["server", "nope", "1", "2"]));
        let bad = RecordBatch::try_new(batch.schema(), columns)?;
        assert!(matches!(
            batch_to_spans(&bad),
            Err(ConvertError::InvalidValue {
                column: "kind",
                row: 1,
                ..
            })
        ));

        let index = batch.schema().index_of("events")?;
        let mut columns = batch.columns().to_vec();
        columns[index] = Arc::new(StringArray::from(vec!["[]", "[]", "[{", "[]"]));
        let bad = RecordBatch::try_new(batch.schema(), columns)?;
        assert!(matches!(
            batch_to_spans(&bad),
            Err(ConvertError::InvalidValue {
                column: "events",
                row: 2,
                ..
            })
        ));
        Ok(())
    }
}
