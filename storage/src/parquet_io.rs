//! Encoding table rows as Parquet files: their order, encodings and statistics.
//!
//! Span rows are sorted by service, then trace id, then start time before writing: resource and scope
//! columns collapse into long runs and dictionaries, the spans of one trace in one service sit together
//! (so their shared trace id and attribute values compress), and page statistics on `trace_id` become
//! narrow enough to skip most pages on a trace-id lookup. Metric points are sorted by service, metric
//! name and time. Files use zstd, dictionaries, page-level statistics and,
//! on `spans`, a bloom filter on `trace_id`, which DataFusion consults to skip row groups on trace-id
//! lookups that carry no time hint.

use bytes::Bytes;
use datafusion::arrow::compute::{
    SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::StorageError;
use crate::schema::Table;

/// Rows per row group. Small enough that a compaction input holds little (a reader keeps about one
/// decoded row group per file) and that, in files sorted by (service, trace id), each row group covers a
/// narrow trace-id range its statistics can prune; large enough for dictionaries and zstd to pay.
pub(crate) const ROW_GROUP_ROWS: usize = 32 * 1024;

/// The on-disk row order of a table, as column names (all ascending, nulls first).
pub fn sort_keys(table: Table) -> &'static [&'static str] {
    match table {
        Table::Spans => &["service_name", "trace_id", "start_time"],
        Table::MetricPoints => &["service_name", "metric_name", "time"],
    }
}

/// Concatenates and sorts rows of one table into the on-disk order ([`sort_keys`]).
pub fn sort_rows(table: Table, batches: &[RecordBatch]) -> Result<RecordBatch, StorageError> {
    let batch = concat_batches(&table.schema(), batches)?;
    let columns = sort_keys(table)
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|values| SortColumn {
            values: values.clone(),
            options: Some(SortOptions {
                descending: false,
                nulls_first: true,
            }),
        })
        .collect::<Vec<_>>();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(&batch, &indices)?)
}

/// Encoding settings of a file of `rows` rows of `table`.
pub(crate) fn writer_properties(table: Table, rows: usize) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    if table == Table::Spans {
        let trace_id = ColumnPath::from("trace_id");
        builder = builder
            .set_column_dictionary_enabled(trace_id.clone(), false)
            .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
            .set_column_bloom_filter_enabled(trace_id.clone(), true)
            .set_column_bloom_filter_fpp(trace_id.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(trace_id, rows.min(ROW_GROUP_ROWS) as u64);
    }
    builder.build()
}

/// Encodes sorted rows as one Parquet file.
pub fn encode(table: Table, batch: &RecordBatch) -> Result<Bytes, StorageError> {
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let properties = writer_properties(table, batch.num_rows());
    let mut writer = ArrowWriter::try_new(&mut buffer, table.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}
