//! The columns a scan of stored files reads, and the table columns computed from them.
//!
//! Files hold [`Table::file_schema`]: the table's columns less the span `end_time`, which is exactly
//! `start_time + duration_ns` ([`SPAN_END_COLUMN`]). A scan asks the Parquet source for the file columns
//! the query needs (with `start_time` and `duration_ns` when it wants `end_time`), and when it wants a
//! derived column, a projection on top computes it, so the files yield the same columns as the memtable.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column};
use meshscope_storage::Table;
use meshscope_storage::schema::{SPAN_END_COLUMN, SPAN_TIME_COLUMN};

/// The column the span end time is derived from besides [`SPAN_TIME_COLUMN`].
const DURATION_COLUMN: &str = "duration_ns";

/// How a scan of a table's files yields the table columns a query asked for.
pub(crate) struct FileColumns {
    /// Indices into [`Table::file_schema`] for the Parquet source, in the order it yields them.
    pub(crate) read: Vec<usize>,
    /// Expressions over the `read` columns giving the requested columns, named, when one of them is
    /// derived; `None` when `read` yields exactly the requested columns.
    pub(crate) derive: Option<Vec<(Arc<dyn PhysicalExpr>, String)>>,
}

/// The file columns to read for `projection` (indices into [`Table::schema`]; `None` is every column).
pub(crate) fn plan(table: Table, projection: Option<&Vec<usize>>) -> Result<FileColumns> {
    let schema = table.schema();
    let file = table.file_schema();
    let wanted: Vec<&str> = match projection {
        Some(indices) => indices
            .iter()
            .map(|&i| schema.field(i).name().as_str())
            .collect(),
        None => schema.fields().iter().map(|f| f.name().as_str()).collect(),
    };
    let mut read: Vec<usize> = Vec::new();
    let mut position = |name: &str| -> Result<usize> {
        let index = file.index_of(name)?;
        Ok(match read.iter().position(|&i| i == index) {
            Some(at) => at,
            None => {
                read.push(index);
                read.len() - 1
            }
        })
    };
    let mut derived = false;
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(wanted.len());
    for &name in &wanted {
        let expr: Arc<dyn PhysicalExpr> = if table == Table::Spans && name == SPAN_END_COLUMN {
            derived = true;
            let start = Arc::new(Column::new(SPAN_TIME_COLUMN, position(SPAN_TIME_COLUMN)?));
            let duration = Arc::new(Column::new(DURATION_COLUMN, position(DURATION_COLUMN)?));
            end_time(start, duration, schema.field_with_name(name)?.data_type())
        } else {
            Arc::new(Column::new(name, position(name)?))
        };
        exprs.push((expr, name.to_owned()));
    }
    Ok(FileColumns {
        read,
        derive: derived.then_some(exprs),
    })
}

/// `start + duration` as a timestamp of `data_type`: the nanoseconds are added as integers, since both
/// were validated to fit in an i64 with their difference.
fn end_time(
    start: Arc<dyn PhysicalExpr>,
    duration: Arc<dyn PhysicalExpr>,
    data_type: &DataType,
) -> Arc<dyn PhysicalExpr> {
    let nanos = Arc::new(CastExpr::new(start, DataType::Int64, None));
    let sum = Arc::new(BinaryExpr::new(nanos, Operator::Plus, duration));
    Arc::new(CastExpr::new(sum, data_type.clone(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(name: &str) -> usize {
        Table::Spans.schema().index_of(name).expect("column")
    }

    #[test]
    fn stored_columns_are_read_as_asked() {
        let asked = vec![index("name"), index("trace_id")];
        let columns = plan(Table::Spans, Some(&asked)).expect("plan");
        let file = Table::Spans.file_schema();
        assert_eq!(
            columns.read,
            vec![
                file.index_of("name").expect("name"),
                file.index_of("trace_id").expect("trace_id")
            ]
        );
        assert!(columns.derive.is_none());
    }

    #[test]
    fn end_time_reads_its_inputs_once_and_keeps_the_asked_order() {
        let asked = vec![
            index(SPAN_END_COLUMN),
            index("name"),
            index(SPAN_TIME_COLUMN),
        ];
        let columns = plan(Table::Spans, Some(&asked)).expect("plan");
        let file = Table::Spans.file_schema();
        let names: Vec<&str> = columns
            .read
            .iter()
            .map(|&i| file.field(i).name().as_str())
            .collect();
        assert_eq!(names, vec![SPAN_TIME_COLUMN, DURATION_COLUMN, "name"]);
        let derive = columns.derive.expect("end_time is derived");
        let aliases: Vec<&str> = derive.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(aliases, vec![SPAN_END_COLUMN, "name", SPAN_TIME_COLUMN]);
    }

    #[test]
    fn metric_points_files_hold_every_column() {
        let columns = plan(Table::MetricPoints, None).expect("plan");
        assert_eq!(
            columns.read.len(),
            Table::MetricPoints.schema().fields().len()
        );
        assert!(columns.derive.is_none());
    }
}
