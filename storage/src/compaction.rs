//! Compaction: merging several sorted Parquet files of one partition into one, in bounded memory.
//!
//! Every file is already sorted in the on-disk order ([`parquet_io::sort_keys`]), so a k-way merge of
//! their row streams yields the sorted union without ever holding a whole file: each input holds about
//! one decoded row group at a time, and the writer holds one row group.
//! The merge itself is DataFusion's `StreamingMergeBuilder`, the same operator its
//! `SortPreservingMergeExec` runs, so no merge logic is written here.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, UnboundedMemoryPool};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::StorageError;
use crate::manifest::FileMeta;
use crate::parquet_io;
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
    let schema = table.schema();
    let mut streams: Vec<SendableRecordBatchStream> = Vec::with_capacity(inputs.len());
    for file in inputs {
        let reader = StoredFileReader {
            objects: objects.clone(),
            path: Path::from(file.path.as_str()),
            size: file.bytes,
        };
        let rows = ParquetRecordBatchStreamBuilder::new(reader)
            .await?
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

    let ordering = LexOrdering::new(
        parquet_io::sort_keys(table)
            .iter()
            .map(|name| {
                Ok(PhysicalSortExpr::new(
                    Arc::new(Column::new_with_schema(name, &schema)?),
                    SortOptions {
                        descending: false,
                        nulls_first: true,
                    },
                ))
            })
            .collect::<Result<Vec<_>, DataFusionError>>()
            .map_err(merge_error)?,
    )
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

/// Reads a stored file whose size the manifest already knows, so the footer is fetched in one request.
/// (parquet's own object-store reader is deprecated in favour of implementing the trait like this.)
struct StoredFileReader {
    objects: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
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

fn merge_error(error: DataFusionError) -> StorageError {
    StorageError::Merge(error.to_string())
}
