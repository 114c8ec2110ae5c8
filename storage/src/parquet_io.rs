//! Encoding table rows as Parquet files: their order, encodings and statistics.
//!
//! Span rows are sorted by start time cut to the minute, then trace id, then start time before writing
//! (the trace-first order Tempo also uses): the spans of one trace sit together, so their shared trace
//! id and attribute values (request ids) compress, a trace lookup finds the whole trace in one row group
//! and, through the `trace_id` page index, in one small page range of it; and each row group covers a
//! few minutes, so a search over a recent time window skips the row groups outside it by their
//! `start_time` statistics. Metric points are sorted by service, metric name and time. Files use zstd,
//! dictionaries, page-level statistics (not on the span JSON columns) and, on `spans`, a bloom filter on
//! `trace_id`, which the store's trace-id index keeps in memory for lookups without a time hint.
//! docs/schema.md gives the measured effect of each encoding choice.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::Array;
use datafusion::arrow::compute::{
    SortColumn, SortOptions, concat, interleave_record_batch, lexsort_to_indices,
};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::StorageError;
use crate::schema::Table;

/// Rows per row group. Small enough that a compaction input holds little (a reader keeps about one
/// decoded row group per file) and that each row group of a service covers a short time span its
/// statistics can prune; large enough for dictionaries and zstd to pay.
pub(crate) const ROW_GROUP_ROWS: usize = 32 * 1024;

/// Bytes of a `trace_id` data page (about 2,000 rows of the benchmark data: the limit is checked between
/// batches of values): the unit a trace lookup decodes in a row group.
const TRACE_ID_PAGE_BYTES: usize = 8 * 1024;

/// Width of the time buckets that order the spans in a file.
pub const SPAN_TIME_BUCKET_NANOS: i64 = 60_000_000_000;

/// One key of the on-disk order: a column, or (spans) the start time cut to [`SPAN_TIME_BUCKET_NANOS`].
enum SortKey {
    Column(&'static str),
    TimeBucket(&'static str),
}

fn sort_keys(table: Table) -> &'static [SortKey] {
    match table {
        Table::Spans => &[
            SortKey::TimeBucket("start_time"),
            SortKey::Column("trace_id"),
            SortKey::Column("start_time"),
        ],
        Table::MetricPoints => &[
            SortKey::Column("service_name"),
            SortKey::Column("metric_name"),
            SortKey::Column("time"),
        ],
    }
}

/// The on-disk row order of a table (all keys ascending, nulls first), as expressions over `schema`;
/// flushes sort by it and compaction merges by it, so both agree by construction.
pub fn sort_order(table: Table, schema: &Schema) -> Result<Vec<PhysicalSortExpr>, DataFusionError> {
    sort_keys(table)
        .iter()
        .map(|key| {
            let expr: Arc<dyn PhysicalExpr> = match key {
                SortKey::Column(name) => Arc::new(Column::new_with_schema(name, schema)?),
                SortKey::TimeBucket(name) => Arc::new(BinaryExpr::new(
                    Arc::new(CastExpr::new(
                        Arc::new(Column::new_with_schema(name, schema)?),
                        DataType::Int64,
                        None,
                    )),
                    Operator::Divide,
                    Arc::new(Literal::new(ScalarValue::Int64(Some(
                        SPAN_TIME_BUCKET_NANOS,
                    )))),
                )),
            };
            Ok(PhysicalSortExpr::new(
                expr,
                SortOptions {
                    descending: false,
                    nulls_first: true,
                },
            ))
        })
        .collect()
}

/// Sorts rows of one table, spread over several batches, into one batch in the on-disk order
/// ([`sort_order`]).
///
/// Only the key columns are concatenated to sort; the rows are then gathered from the original batches
/// in one pass (`interleave`), so the wide columns are copied once rather than concatenated and then
/// taken.
pub fn sort_rows(table: Table, batches: &[RecordBatch]) -> Result<RecordBatch, StorageError> {
    let schema = table.schema();
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    let sort_error = |error: DataFusionError| StorageError::Sort(error.to_string());
    let order = sort_order(table, &schema).map_err(sort_error)?;
    let mut columns = Vec::with_capacity(order.len());
    for key in &order {
        let parts = batches
            .iter()
            .map(|batch| key.expr.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>, DataFusionError>>()
            .map_err(sort_error)?;
        let parts: Vec<&dyn Array> = parts.iter().map(|part| part.as_ref()).collect();
        columns.push(SortColumn {
            values: concat(&parts)?,
            options: Some(key.options),
        });
    }
    let mut location = Vec::new();
    for (index, batch) in batches.iter().enumerate() {
        location.extend((0..batch.num_rows()).map(|row| (index, row)));
    }
    let indices = lexsort_to_indices(&columns, None)?;
    let rows: Vec<(usize, usize)> = indices
        .values()
        .iter()
        .filter_map(|i| location.get(*i as usize).copied())
        .collect();
    let batches: Vec<&RecordBatch> = batches.iter().collect();
    Ok(interleave_record_batch(&batches, &rows)?)
}

/// Encoding settings of a file of `rows` rows of `table`.
pub(crate) fn writer_properties(table: Table, rows: usize) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    if table == Table::Spans {
        // The JSON of a span's own attributes, events and links is nearly unique per row (request ids,
        // times): a dictionary only fills up and falls back, and min/max statistics of JSON text prune
        // nothing, so both are skipped for these columns (each cost a hash or compare per value).
        for column in ["attributes", "events", "links"] {
            builder = builder
                .set_column_dictionary_enabled(ColumnPath::from(column), false)
                .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
        }
        // Nanosecond times and durations are nearly unique too; split into byte streams, their high
        // bytes (equal within a minute, or zero) compress to almost nothing.
        for column in ["start_time", "duration_ns"] {
            builder = builder
                .set_column_dictionary_enabled(ColumnPath::from(column), false)
                .set_column_encoding(ColumnPath::from(column), Encoding::BYTE_STREAM_SPLIT);
        }
        // Span ids are random and all 8 bytes long: delta-coded lengths drop the length prefix plain
        // encoding repeats. Siblings share a parent and sit together, so parent ids are prefix-coded.
        let parent = ColumnPath::from("parent_span_id");
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
            .set_column_encoding(
                ColumnPath::from("span_id"),
                Encoding::DELTA_LENGTH_BYTE_ARRAY,
            )
            .set_column_dictionary_enabled(parent.clone(), false)
            .set_column_encoding(parent, Encoding::DELTA_BYTE_ARRAY);
        // Trace ids stay plain (a trace's repeated id is left to zstd, which beats a dictionary or
        // prefix coding here), in small pages: the page index then narrows a lookup to one page of its
        // row group.
        let trace_id = ColumnPath::from("trace_id");
        builder = builder
            .set_column_dictionary_enabled(trace_id.clone(), false)
            .set_column_data_page_size_limit(trace_id.clone(), TRACE_ID_PAGE_BYTES)
            .set_column_bloom_filter_enabled(trace_id.clone(), true)
            .set_column_bloom_filter_fpp(trace_id.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(trace_id, rows.min(ROW_GROUP_ROWS) as u64);
    }
    builder.build()
}

/// Encodes sorted rows as one Parquet file, of the columns files store ([`Table::file_schema`]).
pub fn encode(table: Table, batch: &RecordBatch) -> Result<Bytes, StorageError> {
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let properties = writer_properties(table, batch.num_rows());
    let schema = table.file_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            batch
                .column_by_name(field.name())
                .cloned()
                .ok_or_else(|| StorageError::Corrupt {
                    what: format!("{} rows", table.name()),
                    reason: format!("no column {}", field.name()),
                })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut writer = ArrowWriter::try_new(&mut buffer, schema, Some(properties))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// Reads a stored file whose size the manifest already knows, so the footer is fetched in one request.
/// (parquet's own object-store reader is deprecated in favour of implementing the trait like this.)
pub(crate) struct StoredFileReader {
    objects: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl StoredFileReader {
    /// A reader of the object at `path`, `size` bytes long.
    pub(crate) fn new(objects: Arc<dyn ObjectStore>, path: Path, size: u64) -> StoredFileReader {
        StoredFileReader {
            objects,
            path,
            size,
        }
    }
}

impl AsyncFileReader for StoredFileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.objects
                .get_range(&self.path, range)
                .await
                .map_err(|error| ParquetError::External(Box::new(error)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, StringArray};
    use meshscope_proto::collector::trace::v1::ExportTraceServiceRequest;
    use meshscope_proto::common::{AnyValue, KeyValue, any_value};
    use meshscope_proto::resource::Resource;
    use meshscope_proto::trace::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::convert::spans_to_batch;

    const MINUTE: u64 = SPAN_TIME_BUCKET_NANOS as u64;

    fn spans(service: &str, spans: &[(u8, u64)]) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .iter()
                    .map(|&(trace, start)| Span {
                        trace_id: vec![trace; 16],
                        span_id: vec![trace; 8],
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 1,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn spans_sort_by_minute_then_trace_id_then_start() {
        let base = 1_000 * MINUTE;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                spans("b", &[(1, base)]),
                spans(
                    "a",
                    &[
                        (0x01, base + MINUTE + 5),
                        (0xff, base + 10),
                        (0x80, base + 20),
                        (0x80, base + 15),
                    ],
                ),
            ],
        };
        let batch = spans_to_batch(&request).expect("convert");
        // Rows spread over two batches, as a flush gets them from the memtable.
        let parts = [batch.slice(0, 2), batch.slice(2, batch.num_rows() - 2)];
        let sorted = sort_rows(Table::Spans, &parts).expect("sort");
        let order: Vec<(String, u8, i64)> = (0..sorted.num_rows())
            .map(|row| {
                let services = sorted
                    .column_by_name("service_name")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                    .expect("service");
                let ids = sorted.column_by_name("trace_id").expect("trace_id");
                let starts = sorted.column_by_name("start_time").expect("start");
                (
                    services.value(row).to_owned(),
                    ids.as_binary::<i32>().value(row)[0],
                    starts
                        .as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>()
                        .value(row)
                        - base as i64,
                )
            })
            .collect();
        let minute = MINUTE as i64;
        assert_eq!(
            order,
            vec![
                ("b".into(), 0x01, 0),
                ("a".into(), 0x80, 15),
                ("a".into(), 0x80, 20),
                ("a".into(), 0xff, 10),
                ("a".into(), 0x01, minute + 5),
            ]
        );
    }

    #[test]
    fn span_files_hold_every_column_but_the_derived_end_time() {
        use datafusion::arrow::record_batch::RecordBatchReader;

        let request = ExportTraceServiceRequest {
            resource_spans: vec![spans("a", &[(1, 5 * MINUTE), (2, 6 * MINUTE)])],
        };
        let batch = spans_to_batch(&request).expect("convert");
        let bytes = encode(Table::Spans, &batch).expect("encode");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024)
            .expect("parquet");
        let schema = reader.schema();
        assert!(
            schema
                .field_with_name(crate::schema::SPAN_END_COLUMN)
                .is_err()
        );
        assert_eq!(schema.fields(), Table::Spans.file_schema().fields());
        assert_eq!(
            schema.fields().len() + 1,
            Table::Spans.schema().fields().len()
        );
    }
}
