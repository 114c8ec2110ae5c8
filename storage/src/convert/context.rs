//! Pieces shared by both tables: the resource and scope columns, column assembly and column lookup.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, StringBuilder, TimestampNanosecondBuilder,
    UInt32Builder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use meshscope_proto::common::any_value::Value;
use meshscope_proto::common::{InstrumentationScope, KeyValue};
use meshscope_proto::resource::Resource;

use super::ConvertError;
use super::json::{self, KeyValuesJson};

/// The resource attribute stored in the `service_name` column.
pub(crate) const SERVICE_NAME_KEY: &str = "service.name";

/// Average bytes per value used to size string builders; they grow as needed (many columns are mostly
/// null or short, so a small start wastes least).
const STRING_CAPACITY_PER_ROW: usize = 8;

/// A new string builder for `rows` values.
pub(crate) fn string_builder(rows: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * STRING_CAPACITY_PER_ROW)
}

/// A new builder of `Timestamp(Nanosecond, "UTC")` values.
pub(crate) fn timestamp_builder(rows: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC")
}

/// Appends `value`, or null when it is empty.
pub(crate) fn append_optional(builder: &mut StringBuilder, value: &str) {
    if value.is_empty() {
        builder.append_null();
    } else {
        builder.append_value(value);
    }
}

/// Appends `value` `n` times, or `n` nulls when it is empty.
pub(crate) fn append_optional_n(builder: &mut StringBuilder, value: &str, n: usize) {
    if value.is_empty() {
        builder.append_nulls(n);
    } else {
        builder.append_value_n(value, n);
    }
}

/// A resource, encoded once for all the rows of its group.
pub(crate) struct EncodedResource<'a> {
    service_name: Option<&'a str>,
    attributes: String,
    dropped_attributes_count: u32,
    schema_url: &'a str,
}

impl<'a> EncodedResource<'a> {
    /// Encodes `resource`; `buf` is scratch space.
    ///
    /// The first `service.name` attribute goes to `service_name` (and out of the JSON) when it is a string
    /// with a plain key; any other `service.name` stays in the JSON.
    pub(crate) fn new(
        resource: Option<&'a Resource>,
        schema_url: &'a str,
        buf: &mut Vec<u8>,
    ) -> Result<Self, ConvertError> {
        let attrs = resource.map_or(&[][..], |r| &r.attributes[..]);
        let service = attrs
            .iter()
            .enumerate()
            .find(|(_, kv)| kv.key == SERVICE_NAME_KEY)
            .and_then(|(i, kv)| string_value(kv).map(|name| (i, name)));
        let mut skip = Vec::new();
        if let Some((i, _)) = service {
            skip.resize(i + 1, false);
            if let Some(last) = skip.last_mut() {
                *last = true;
            }
        }
        json::encode_into(buf, &KeyValuesJson { attrs, skip: &skip })?;
        Ok(Self {
            service_name: service.map(|(_, name)| name),
            attributes: json::as_text(buf)?.to_owned(),
            dropped_attributes_count: resource.map_or(0, |r| r.dropped_attributes_count),
            schema_url,
        })
    }
}

/// The string of a plain-keyed `stringValue` attribute.
fn string_value(kv: &KeyValue) -> Option<&str> {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) if kv.key_strindex == 0 => Some(s),
        _ => None,
    }
}

/// An instrumentation scope, encoded once for all the rows of its group.
pub(crate) struct EncodedScope<'a> {
    name: &'a str,
    version: &'a str,
    attributes: String,
    dropped_attributes_count: u32,
    schema_url: &'a str,
}

impl<'a> EncodedScope<'a> {
    /// Encodes `scope`; `buf` is scratch space.
    pub(crate) fn new(
        scope: Option<&'a InstrumentationScope>,
        schema_url: &'a str,
        buf: &mut Vec<u8>,
    ) -> Result<Self, ConvertError> {
        let attrs = scope.map_or(&[][..], |s| &s.attributes[..]);
        json::encode_into(buf, &KeyValuesJson::all(attrs))?;
        Ok(Self {
            name: scope.map_or("", |s| &s.name),
            version: scope.map_or("", |s| &s.version),
            attributes: json::as_text(buf)?.to_owned(),
            dropped_attributes_count: scope.map_or(0, |s| s.dropped_attributes_count),
            schema_url,
        })
    }
}

/// Builders of the nine resource and scope columns that start both schemas.
pub(crate) struct ContextBuilders {
    service_name: StringBuilder,
    resource_attributes: StringBuilder,
    resource_dropped_attributes_count: UInt32Builder,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: StringBuilder,
    scope_dropped_attributes_count: UInt32Builder,
    scope_schema_url: StringBuilder,
}

impl ContextBuilders {
    /// Builders sized for `rows` rows.
    pub(crate) fn with_capacity(rows: usize) -> Self {
        Self {
            service_name: string_builder(rows),
            resource_attributes: string_builder(rows),
            resource_dropped_attributes_count: UInt32Builder::with_capacity(rows),
            resource_schema_url: string_builder(rows),
            scope_name: string_builder(rows),
            scope_version: string_builder(rows),
            scope_attributes: string_builder(rows),
            scope_dropped_attributes_count: UInt32Builder::with_capacity(rows),
            scope_schema_url: string_builder(rows),
        }
    }

    /// Appends `n` rows of `resource` and `scope`.
    pub(crate) fn append_n(
        &mut self,
        resource: &EncodedResource<'_>,
        scope: &EncodedScope<'_>,
        n: usize,
    ) {
        match resource.service_name {
            Some(name) => self.service_name.append_value_n(name, n),
            None => self.service_name.append_nulls(n),
        }
        self.resource_attributes
            .append_value_n(&resource.attributes, n);
        self.resource_dropped_attributes_count
            .append_value_n(resource.dropped_attributes_count, n);
        append_optional_n(&mut self.resource_schema_url, resource.schema_url, n);
        append_optional_n(&mut self.scope_name, scope.name, n);
        append_optional_n(&mut self.scope_version, scope.version, n);
        self.scope_attributes.append_value_n(&scope.attributes, n);
        self.scope_dropped_attributes_count
            .append_value_n(scope.dropped_attributes_count, n);
        append_optional_n(&mut self.scope_schema_url, scope.schema_url, n);
    }

    /// The finished columns with their names.
    pub(crate) fn finish(mut self) -> [(&'static str, ArrayRef); 9] {
        [
            ("service_name", Arc::new(self.service_name.finish())),
            (
                "resource_attributes",
                Arc::new(self.resource_attributes.finish()),
            ),
            (
                "resource_dropped_attributes_count",
                Arc::new(self.resource_dropped_attributes_count.finish()),
            ),
            (
                "resource_schema_url",
                Arc::new(self.resource_schema_url.finish()),
            ),
            ("scope_name", Arc::new(self.scope_name.finish())),
            ("scope_version", Arc::new(self.scope_version.finish())),
            ("scope_attributes", Arc::new(self.scope_attributes.finish())),
            (
                "scope_dropped_attributes_count",
                Arc::new(self.scope_dropped_attributes_count.finish()),
            ),
            ("scope_schema_url", Arc::new(self.scope_schema_url.finish())),
        ]
    }
}

/// Puts named columns in the order of `schema` and builds the batch; every field needs exactly one column.
pub(crate) fn assemble(
    schema: &SchemaRef,
    columns: impl IntoIterator<Item = (&'static str, ArrayRef)>,
) -> Result<RecordBatch, ConvertError> {
    let mut by_name: HashMap<&str, ArrayRef> = columns.into_iter().collect();
    let ordered = schema
        .fields()
        .iter()
        .map(|field| {
            let mut column =
                by_name
                    .remove(field.name().as_str())
                    .ok_or_else(|| ConvertError::ColumnType {
                        column: field.name().clone(),
                        message: "no column was built for this field".to_owned(),
                    })?;
            // Builders grow by doubling; the batch then waits in the memtable, so give back the
            // unused capacity (it was more than half of a span batch's memory).
            if let Some(array) = Arc::get_mut(&mut column) {
                array.shrink_to_fit();
            }
            Ok(column)
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    if let Some(extra) = by_name.into_keys().next() {
        return Err(ConvertError::ColumnType {
            column: extra.to_owned(),
            message: "the column is not in the schema".to_owned(),
        });
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), ordered)?)
}

/// The column `name` of `batch`, cast to the type `schema` gives it when it has another (for example a
/// string view or dictionary read back from Parquet), as the concrete array type `T`.
pub(crate) fn column<T: Array + Clone + 'static>(
    batch: &RecordBatch,
    schema: &SchemaRef,
    name: &'static str,
) -> Result<T, ConvertError> {
    let type_error = |message: String| ConvertError::ColumnType {
        column: name.to_owned(),
        message,
    };
    let expected = schema
        .field_with_name(name)
        .map_err(|e| type_error(e.to_string()))?
        .data_type();
    let array = batch
        .column_by_name(name)
        .ok_or(ConvertError::MissingColumn(name))?;
    let array = if array.data_type() == expected {
        Arc::clone(array)
    } else {
        cast(array, expected).map_err(|e| type_error(e.to_string()))?
    };
    array
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| type_error(format!("expected {expected}")))
}

/// The value of a nullable string column, `None` when null.
pub(crate) fn optional_str(array: &StringArray, row: usize) -> Option<&str> {
    array.is_valid(row).then(|| array.value(row))
}

/// The value of a non-null column, or an error naming the column and row when it is null.
pub(crate) fn required<'a, A: Array, T>(
    array: &'a A,
    column: &'static str,
    row: usize,
    value: impl FnOnce(&'a A, usize) -> T,
) -> Result<T, ConvertError> {
    if array.is_null(row) {
        return Err(ConvertError::InvalidValue {
            column,
            row,
            message: "unexpected null".to_owned(),
        });
    }
    Ok(value(array, row))
}
