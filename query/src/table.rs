//! `StoreTable`: a DataFusion table over one stored table, memtable ∪ Parquet.
//!
//! Pruning: filters on the table's time column (`start_time` for spans, `time` for metric points) are
//! turned into a time range that drops whole memtable batches and whole files (through the manifest)
//! before anything is opened. The remaining files go straight from the manifest (paths and sizes known,
//! so nothing is listed) into DataFusion's Parquet scan, with the session's Parquet options (filter
//! pushdown on), which prunes row groups by statistics, pages by the page index, and decodes other
//! columns only for rows that pass; columns files do not store are computed on top
//! ([`crate::file_columns`]). A trace-id filter first goes through the store's in-memory trace-id
//! index ([`crate::trace_filter`]), which drops the files, row groups and `trace_id` pages that cannot
//! hold the trace. Every filter is reported `Inexact`, so the engine re-checks rows; nothing here has to
//! be exact to be correct.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use meshscope_storage::{Store, Table, TimeRange};

use crate::{file_columns, string_views, trace_filter};

/// URL under which the store's object store is registered with DataFusion.
pub const STORE_URL: &str = "meshscope://store/";

/// A stored table as a DataFusion `TableProvider`.
pub struct StoreTable {
    store: Arc<Store>,
    table: Table,
    /// The table's columns as queries see them ([`string_views::schema`] of [`Table::schema`]).
    schema: SchemaRef,
    /// The columns a scan reads from files, with the same text types.
    file_schema: SchemaRef,
}

impl fmt::Debug for StoreTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreTable")
            .field("table", &self.table)
            .finish()
    }
}

impl StoreTable {
    /// The provider for `table` of `store`.
    pub fn new(store: Arc<Store>, table: Table) -> StoreTable {
        StoreTable {
            store,
            table,
            schema: string_views::schema(&table.schema()),
            file_schema: string_views::schema(&table.file_schema()),
        }
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let range = time_range(self.table.time_column(), filters);
        let snapshot = self.store.snapshot(self.table, range);
        let mut options = state.table_options().parquet.clone();
        let ids = trace_filter::trace_ids(filters).filter(|_| self.table == Table::Spans);
        let files = match &ids {
            Some(ids) => {
                // The index has already tested every row group's bloom filter.
                options.global.bloom_filter_on_read = false;
                trace_filter::candidate_files(self.store.trace_index(), &snapshot.files, ids)
                    .await?
            }
            None => snapshot
                .files
                .iter()
                .map(|file| PartitionedFile::new(file.path.clone(), file.bytes))
                .collect(),
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            let format = ParquetFormat::default().with_options(options);
            let groups = file_groups(files, state.config().target_partitions());
            let columns = file_columns::plan(self.table, projection)?;
            let config = FileScanConfigBuilder::new(
                ObjectStoreUrl::parse(STORE_URL)?,
                format.file_source(Arc::clone(&self.file_schema).into()),
            )
            .with_file_groups(groups)
            .with_projection_indices(Some(columns.read))?
            .with_limit(limit)
            .build();
            let mut scan = format.create_physical_plan(state, config).await?;
            if let Some(derive) = columns.derive {
                scan = Arc::new(ProjectionExec::try_new(derive, scan)?);
            }
            inputs.push(scan);
        }
        let memtable = match &ids {
            Some(ids) => trace_filter::memtable_rows(&snapshot.batches, ids)?,
            None => snapshot.batches,
        };
        if !memtable.is_empty() || inputs.is_empty() {
            let (schema, batches) = string_views::project(&memtable, &self.schema, projection)?;
            inputs.push(MemorySourceConfig::try_new_exec(&[batches], schema, None)?);
        }
        UnionExec::try_new(inputs)
    }
}

/// Spreads `files` over at most `partitions` groups of similar byte size (largest first, each to the
/// lightest group), so the scan's partitions finish at about the same time.
fn file_groups(mut files: Vec<PartitionedFile>, partitions: usize) -> Vec<FileGroup> {
    files.sort_by_key(|file| std::cmp::Reverse(file.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> =
        vec![(0, Vec::new()); partitions.clamp(1, files.len().max(1))];
    for file in files {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            lightest.0 += file.object_meta.size;
            lightest.1.push(file);
        }
    }
    groups
        .into_iter()
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

/// The time range implied by the conjunction of `filters` on `column` (everything when none applies).
fn time_range(column: &str, filters: &[Expr]) -> TimeRange {
    let mut range = TimeRange::ALL;
    for filter in filters {
        narrow(column, filter, &mut range);
    }
    range
}

fn narrow(column: &str, expr: &Expr, range: &mut TimeRange) {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            narrow(column, left, range);
            narrow(column, right, range);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(value, _)) if c.name == column => (*op, value),
                (Expr::Literal(value, _), Expr::Column(c)) if c.name == column => match op.swap() {
                    Some(op) => (op, value),
                    None => return,
                },
                _ => return,
            };
            let Some(nanos) = timestamp_nanos(value) else {
                return;
            };
            match op {
                Operator::Gt | Operator::GtEq => range.start = range.start.max(nanos),
                Operator::Lt | Operator::LtEq => range.end = range.end.min(nanos),
                Operator::Eq => {
                    range.start = range.start.max(nanos);
                    range.end = range.end.min(nanos);
                }
                _ => {}
            }
        }
        Expr::Between(between) if !between.negated => {
            if let (Expr::Column(c), Expr::Literal(low, _), Expr::Literal(high, _)) = (
                between.expr.as_ref(),
                between.low.as_ref(),
                between.high.as_ref(),
            ) && c.name == column
            {
                if let Some(low) = timestamp_nanos(low) {
                    range.start = range.start.max(low);
                }
                if let Some(high) = timestamp_nanos(high) {
                    range.end = range.end.min(high);
                }
            }
        }
        _ => {}
    }
}

fn timestamp_nanos(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn ts(nanos: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(nanos),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_filters_narrow_the_range() {
        let filters = [
            col("start_time").gt_eq(ts(100)),
            ts(200).gt(col("start_time")),
            col("name").eq(lit("x")),
        ];
        assert_eq!(
            time_range("start_time", &filters),
            TimeRange {
                start: 100,
                end: 200
            }
        );
    }

    #[test]
    fn other_columns_and_operators_leave_the_range_open() {
        let filters = [col("end_time").gt(ts(5)), col("start_time").not_eq(ts(7))];
        assert_eq!(time_range("start_time", &filters), TimeRange::ALL);
    }

    #[test]
    fn between_and_conjunctions_are_understood() {
        let filters = [col("time")
            .between(ts(10), ts(20))
            .and(col("time").lt(ts(15)))];
        assert_eq!(
            time_range("time", &filters),
            TimeRange { start: 10, end: 15 }
        );
    }
}
