//! Arrow schemas of the two stored tables, `spans` and `metric_points`.
//!
//! One row per span (or per metric data point), flat and SQL-friendly. Resource and scope fields are
//! columns of every row; Parquet's dictionary and run-length encoding keep their repetition cheap. A few
//! semantic-convention attributes are promoted to typed columns (see [`PROMOTED_SPAN_ATTRIBUTES`]); every
//! other attribute is kept, with its OTLP type, in a JSON column using the OTLP/JSON encoding of
//! `KeyValue` lists. Files hold every column but the derived span `end_time` ([`Table::file_schema`]).
//! `docs/schema.md` documents every column.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Name of the span start-time column; the time partitioning and pruning key of `spans`.
pub const SPAN_TIME_COLUMN: &str = "start_time";
/// Name of the span end-time column. Files do not store it: `start_time + duration_ns` gives it exactly
/// (both times are validated to fit in an i64, so the duration never saturates), and reads of files
/// compute it.
pub const SPAN_END_COLUMN: &str = "end_time";
/// Name of the data-point time column; the time partitioning and pruning key of `metric_points`.
pub const METRIC_TIME_COLUMN: &str = "time";

/// The type a promoted attribute column holds; an attribute whose value has another type stays in the
/// generic `attributes` column so nothing is coerced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotedType {
    /// OTLP `stringValue`, stored as Utf8.
    String,
    /// OTLP `intValue`, stored as Int64.
    Int,
}

/// Span attributes promoted to columns of their own: (attribute key, column name, type).
pub const PROMOTED_SPAN_ATTRIBUTES: &[(&str, &str, PromotedType)] = &[
    (
        "http.request.method",
        "http_request_method",
        PromotedType::String,
    ),
    (
        "http.response.status_code",
        "http_response_status_code",
        PromotedType::Int,
    ),
    ("http.route", "http_route", PromotedType::String),
    ("url.path", "url_path", PromotedType::String),
    ("url.full", "url_full", PromotedType::String),
    ("server.address", "server_address", PromotedType::String),
    ("server.port", "server_port", PromotedType::Int),
    ("client.address", "client_address", PromotedType::String),
    (
        "network.peer.address",
        "network_peer_address",
        PromotedType::String,
    ),
    ("peer.service", "peer_service", PromotedType::String),
    ("rpc.system", "rpc_system", PromotedType::String),
    ("rpc.service", "rpc_service", PromotedType::String),
    ("rpc.method", "rpc_method", PromotedType::String),
    (
        "rpc.grpc.status_code",
        "rpc_grpc_status_code",
        PromotedType::Int,
    ),
    ("db.system", "db_system", PromotedType::String),
    ("error.type", "error_type", PromotedType::String),
    (
        "meshscope.upstream.service",
        "mesh_upstream_service",
        PromotedType::String,
    ),
    (
        "meshscope.upstream.endpoint",
        "mesh_upstream_endpoint",
        PromotedType::String,
    ),
    (
        "meshscope.retry.attempt",
        "mesh_retry_attempt",
        PromotedType::Int,
    ),
];

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn u32f(name: &str) -> Field {
    Field::new(name, DataType::UInt32, false)
}

/// Resource and scope columns shared by both tables, in order.
fn resource_and_scope_fields() -> Vec<Field> {
    vec![
        utf8("service_name", true),
        utf8("resource_attributes", false),
        u32f("resource_dropped_attributes_count"),
        utf8("resource_schema_url", true),
        utf8("scope_name", true),
        utf8("scope_version", true),
        utf8("scope_attributes", false),
        u32f("scope_dropped_attributes_count"),
        utf8("scope_schema_url", true),
    ]
}

/// Schema of the `spans` table.
pub static SPANS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = resource_and_scope_fields();
    fields.extend([
        Field::new("trace_id", DataType::Binary, false),
        Field::new("span_id", DataType::Binary, false),
        Field::new("parent_span_id", DataType::Binary, true),
        utf8("trace_state", true),
        u32f("flags"),
        utf8("name", false),
        utf8("kind", false),
        Field::new(SPAN_TIME_COLUMN, timestamp(), false),
        Field::new(SPAN_END_COLUMN, timestamp(), false),
        Field::new("duration_ns", DataType::Int64, false),
        utf8("status_code", false),
        utf8("status_message", true),
    ]);
    for (_, column, ty) in PROMOTED_SPAN_ATTRIBUTES {
        let data_type = match ty {
            PromotedType::String => DataType::Utf8,
            PromotedType::Int => DataType::Int64,
        };
        fields.push(Field::new(*column, data_type, true));
    }
    fields.extend([
        utf8("attributes", false),
        u32f("dropped_attributes_count"),
        utf8("events", false),
        u32f("dropped_events_count"),
        utf8("links", false),
        u32f("dropped_links_count"),
    ]);
    Arc::new(Schema::new(fields))
});

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// Schema of the `metric_points` table: one row per data point of any OTLP metric kind.
pub static METRIC_POINTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = resource_and_scope_fields();
    fields.extend([
        utf8("metric_name", false),
        utf8("metric_description", true),
        utf8("metric_unit", true),
        utf8("metric_metadata", false),
        utf8("metric_type", false),
        utf8("aggregation_temporality", true),
        Field::new("is_monotonic", DataType::Boolean, true),
        utf8("attributes", false),
        Field::new("start_time", timestamp(), true),
        Field::new(METRIC_TIME_COLUMN, timestamp(), false),
        u32f("flags"),
        Field::new("value_double", DataType::Float64, true),
        Field::new("value_int", DataType::Int64, true),
        Field::new("count", DataType::UInt64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        Field::new("bucket_counts", list_of(DataType::UInt64), true),
        Field::new("explicit_bounds", list_of(DataType::Float64), true),
        Field::new("exp_scale", DataType::Int32, true),
        Field::new("exp_zero_count", DataType::UInt64, true),
        Field::new("exp_zero_threshold", DataType::Float64, true),
        Field::new("exp_positive_offset", DataType::Int32, true),
        Field::new(
            "exp_positive_bucket_counts",
            list_of(DataType::UInt64),
            true,
        ),
        Field::new("exp_negative_offset", DataType::Int32, true),
        Field::new(
            "exp_negative_bucket_counts",
            list_of(DataType::UInt64),
            true,
        ),
        Field::new("quantiles", list_of(DataType::Float64), true),
        Field::new("quantile_values", list_of(DataType::Float64), true),
        utf8("exemplars", false),
    ]);
    Arc::new(Schema::new(fields))
});

/// Schema of span files: [`SPANS_SCHEMA`] without the derived [`SPAN_END_COLUMN`] (~4 bytes a span).
static SPANS_FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields = SPANS_SCHEMA
        .fields()
        .iter()
        .filter(|field| field.name() != SPAN_END_COLUMN)
        .cloned()
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
});

/// The two tables Meshscope stores.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// One row per span.
    Spans,
    /// One row per metric data point.
    MetricPoints,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 2] = [Table::Spans, Table::MetricPoints];

    /// The SQL name of the table, also its directory in the store.
    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::MetricPoints => "metric_points",
        }
    }

    /// The Arrow schema of the table.
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => SPANS_SCHEMA.clone(),
            Table::MetricPoints => METRIC_POINTS_SCHEMA.clone(),
        }
    }

    /// The columns a Parquet file of the table holds: [`Table::schema`] less the columns computed when
    /// read (the span [`SPAN_END_COLUMN`]).
    pub fn file_schema(self) -> SchemaRef {
        match self {
            Table::Spans => SPANS_FILE_SCHEMA.clone(),
            Table::MetricPoints => METRIC_POINTS_SCHEMA.clone(),
        }
    }

    /// The timestamp column that partitions and prunes the table.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Spans => SPAN_TIME_COLUMN,
            Table::MetricPoints => METRIC_TIME_COLUMN,
        }
    }
}
