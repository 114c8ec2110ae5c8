//! Trace-id lookups through the store's trace-id index.
//!
//! A filter `trace_id = X` or `trace_id IN (X, Y, …)` (the trace API, search's second step, SQL with
//! `unhex_id`) is answered from the in-memory `trace_id` bloom filters: files none of whose row groups
//! may hold an id are not opened at all, and the others get a [`ParquetAccessPlan`] that skips the row
//! groups that cannot hold one and, within the others, the `trace_id` pages that cannot. DataFusion
//! then reads only those rows (pruning pages by the page index and rows by the filter as usual), so no
//! bloom filter is read from disk at query time. Memtable batches are cut to the rows of those ids before
//! the scan turns their text into views ([`memtable_rows`]), so a lookup does not convert the whole
//! memtable.

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use meshscope_storage::TraceIndex;
use meshscope_storage::manifest::FileMeta;

/// The column the index covers.
const TRACE_ID: &str = "trace_id";

/// The trace ids a conjunction of `filters` restricts `trace_id` to, or `None` when it does not.
pub(crate) fn trace_ids(filters: &[Expr]) -> Option<Vec<Vec<u8>>> {
    filters.iter().find_map(restriction)
}

fn restriction(expr: &Expr) -> Option<Vec<Vec<u8>>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => restriction(left).or_else(|| restriction(right)),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(value, _))
            | (Expr::Literal(value, _), Expr::Column(c))
                if c.name == TRACE_ID =>
            {
                Some(vec![id_bytes(value)?])
            }
            _ => None,
        },
        Expr::InList(list) if !list.negated => match list.expr.as_ref() {
            Expr::Column(c) if c.name == TRACE_ID => list
                .list
                .iter()
                .map(|item| match item {
                    Expr::Literal(value, _) => id_bytes(value),
                    _ => None,
                })
                .collect(),
            _ => None,
        },
        _ => None,
    }
}

fn id_bytes(value: &ScalarValue) -> Option<Vec<u8>> {
    match value {
        ScalarValue::Binary(Some(id))
        | ScalarValue::LargeBinary(Some(id))
        | ScalarValue::BinaryView(Some(id))
        | ScalarValue::FixedSizeBinary(_, Some(id)) => Some(id.clone()),
        _ => None,
    }
}

/// The files of `files` that may hold a span of `ids`, each with an access plan that reads only the row
/// groups that may, and in them only the `trace_id` pages that may.
pub(crate) async fn candidate_files(
    index: &TraceIndex,
    files: &[FileMeta],
    ids: &[Vec<u8>],
) -> Result<Vec<PartitionedFile>> {
    let ids: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let filters = futures::future::try_join_all(files.iter().map(|file| index.filters(file)))
        .await
        .map_err(|error| DataFusionError::External(Box::new(error)))?;
    let mut candidates = Vec::new();
    for (file, filters) in files.iter().zip(filters) {
        let row_groups = filters.candidate_rows(&ids);
        if row_groups.iter().all(Option::is_none) {
            continue;
        }
        let mut plan = ParquetAccessPlan::new_all(row_groups.len());
        for (row_group, rows) in row_groups.into_iter().enumerate() {
            match rows {
                Some(rows) => plan.scan_selection(row_group, rows),
                None => plan.skip(row_group),
            }
        }
        candidates.push(PartitionedFile::new(file.path.clone(), file.bytes).with_extension(plan));
    }
    Ok(candidates)
}

/// The rows of the memtable's `batches` whose trace id is one of `ids`; batches left empty are dropped.
pub(crate) fn memtable_rows(batches: &[RecordBatch], ids: &[Vec<u8>]) -> Result<Vec<RecordBatch>> {
    // Sorted for a binary search per row: a search may ask for up to 10,000 traces at once.
    let mut sorted: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    sorted.sort_unstable();
    let mut kept = Vec::new();
    for batch in batches {
        let column = batch
            .column_by_name(TRACE_ID)
            .ok_or_else(|| DataFusionError::Internal(format!("memtable batch lacks {TRACE_ID}")))?;
        let wanted: BooleanArray = column
            .as_binary::<i32>()
            .iter()
            .map(|id| Some(id.is_some_and(|id| sorted.binary_search(&id).is_ok())))
            .collect();
        let rows = filter_record_batch(batch, &wanted)?;
        if rows.num_rows() > 0 {
            kept.push(rows);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn id(byte: u8) -> Expr {
        lit(ScalarValue::Binary(Some(vec![byte; 16])))
    }

    #[test]
    fn equality_and_in_lists_on_trace_id_are_recognised() {
        assert_eq!(
            trace_ids(&[col("name").eq(lit("x")), col("trace_id").eq(id(1))]),
            Some(vec![vec![1; 16]])
        );
        assert_eq!(
            trace_ids(&[id(2).eq(col("trace_id")).and(col("name").eq(lit("x")))]),
            Some(vec![vec![2; 16]])
        );
        assert_eq!(
            trace_ids(&[col("trace_id").in_list(vec![id(3), id(4)], false)]),
            Some(vec![vec![3; 16], vec![4; 16]])
        );
    }

    #[test]
    fn anything_weaker_is_not_a_restriction() {
        assert_eq!(trace_ids(&[col("trace_id").not_eq(id(1))]), None);
        assert_eq!(
            trace_ids(&[col("trace_id").in_list(vec![id(3)], true)]),
            None
        );
        assert_eq!(
            trace_ids(&[col("trace_id").eq(id(1)).or(col("name").eq(lit("x")))]),
            None
        );
        assert_eq!(trace_ids(&[col("span_id").eq(id(1))]), None);
    }

    #[test]
    fn memtable_rows_keep_only_the_asked_traces() {
        use std::sync::Arc;

        use datafusion::arrow::array::{BinaryArray, Int64Array};
        use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

        let schema = Arc::new(Schema::new(vec![
            Field::new(TRACE_ID, DataType::Binary, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = |ids: Vec<&[u8]>, n: Vec<i64>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(BinaryArray::from(ids)),
                    Arc::new(Int64Array::from(n)),
                ],
            )
            .expect("batch")
        };
        let (a, b, c) = ([1u8; 16], [2u8; 16], [3u8; 16]);
        let batches = [
            batch(vec![&a, &b, &a], vec![1, 2, 3]),
            batch(vec![&c], vec![4]),
            batch(vec![&b, &c], vec![5, 6]),
        ];
        let kept = memtable_rows(&batches, &[b.to_vec(), a.to_vec()]).expect("filter");
        let n: Vec<i64> = kept
            .iter()
            .flat_map(|batch| {
                batch
                    .column(1)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(n, [1, 2, 3, 5]);
        assert_eq!(kept.len(), 2, "the batch without a match is dropped");
    }
}
