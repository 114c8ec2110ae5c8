//! Compaction: merging several sorted Parquet files of one partition into one, in bounded memory.
//!
//! Every file is already sorted in the on-disk order ([`parquet_io::sort_order`]), so a k-way merge of
//! their row streams yields the sorted union without ever holding a whole file: each input holds about
//! one decoded row group at a time, and the writer holds one row group.
//! The merge itself is DataFusion's `StreamingMergeBuilder`, the same operator its
//! `SortPreservingMergeExec` runs, so no merge logic is written here.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, UnboundedMemoryPool};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};

use crate::StorageError;
use crate::manifest::FileMeta;
use crate::parquet_io::{self, StoredFileReader};
use crate::schema::Table;

/// Rows per decoded batch of each input; small, since one batch per input is alive at a time.
const MERGE_BATCH_ROWS: usize = 4096;

/// Estimate of the memory one input of a merge holds: about one decoded row group (measured: ~100 MiB
/// per input with 128k-row groups of mesh spans, so ~1 KiB per row), plus a batch.
pub(crate) fn input_working_bytes(file: &FileMeta) -> usize {
    let rows = file.rows.min(parquet_io::ROW_GROUP_ROWS as u64) as usize;
    (rows + MERGE_BATCH_ROWS) * 1024
}

/// Streams the sorted rows of `inputs` (all of `table`) into a new Parquet file at `output`; returns
/// the number of rows written. The output appears only when complete (multipart upload), so a crash
/// leaves at most an orphan that the next start removes.
pub(crate) async fn merge_files(
    objects: Arc<dyn ObjectStore>,
    table: Table,
    inputs: &[FileMeta],
    output: &Path,
) -> Result<u64, StorageError> {
    let schema = table.file_schema();
    let mut streams: Vec<SendableRecordBatchStream> = Vec::with_capacity(inputs.len());
    for file in inputs {
        let reader =
            StoredFileReader::new(objects.clone(), Path::from(file.path.as_str()), file.bytes);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        // By name, so a file written when files still held a column now derived (span `end_time`)
        // merges with the others.
        let columns = ProjectionMask::columns(
            builder.parquet_schema(),
            schema.fields().iter().map(|field| field.name().as_str()),
        );
        let rows = builder
            .with_projection(columns)
            .with_batch_size(MERGE_BATCH_ROWS)
            .build()?;
        let canonical = schema.clone();
        let rows = rows.map(move |batch| {
            let batch = batch.map_err(|error| DataFusionError::External(Box::new(error)))?;
            Ok(RecordBatch::try_new(
                canonical.clone(),
                batch.columns().to_vec(),
            )?)
        });
        streams.push(Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            rows,
        )));
    }

    let ordering = LexOrdering::new(parquet_io::sort_order(table, &schema).map_err(merge_error)?)
        .ok_or_else(|| StorageError::Corrupt {
        what: format!("{} sort order", table.name()),
        reason: "no sort keys".into(),
    })?;
    // Memory is accounted by the store's own working-set estimate, so the merge's pool is unbounded.
    let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
    let mut merged = StreamingMergeBuilder::new()
        .with_streams(streams)
        .with_schema(schema.clone())
        .with_expressions(&ordering)
        .with_metrics(BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), 0))
        .with_batch_size(MERGE_BATCH_ROWS)
        .with_reservation(MemoryConsumer::new("compaction").register(&pool))
        .build()
        .map_err(merge_error)?;

    let rows: u64 = inputs.iter().map(|file| file.rows).sum();
    let writer = BufWriter::new(objects, output.clone());
    let mut writer = AsyncArrowWriter::try_new(
        writer,
        schema,
        Some(parquet_io::writer_properties(table, rows as usize)),
    )?;
    let mut written = 0u64;
    while let Some(batch) = merged.try_next().await.map_err(merge_error)? {
        written += batch.num_rows() as u64;
        writer.write(&batch).await?;
    }
    writer.close().await?;
    Ok(written)
}

fn merge_error(error: DataFusionError) -> StorageError {
    StorageError::Merge(error.to_string())
}
