//! The tables' text columns as the engine reads them: `Utf8View`, not the stored `Utf8`.
//!
//! A view is 16 bytes per value that hold a short string inline, or point into a buffer the Parquet
//! reader already has, so a scan no longer copies every value into a fresh `Utf8` array, and grouping
//! or comparing short strings (service, span and status names) works on the inline bytes. DataFusion
//! reads Parquet text this way by default (`schema_force_view_types`) for the same reason; the table
//! provider, which gives the scan its schema, asks for views itself. Grouping 10M spans by
//! `service_name` took about 0.6× the time (bench/README.md, "Text columns as views"). Files and the
//! memtable keep `Utf8`. A scan casts only the memtable columns it reads, after any trace-id cut
//! (`crate::trace_filter::memtable_rows`); the views reuse the batches' string buffers.

use std::sync::Arc;

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::Result;

/// `schema` with every `Utf8` field turned into `Utf8View`. Not DataFusion's
/// `transform_schema_to_view`, which also turns `Binary` into `BinaryView`: the id columns stay
/// `Binary`, the type the trace-id index, `hex_id` and the span readers take.
pub(crate) fn schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 => field.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The memtable's `batches` (stored types) as a scan of `schema` with `projection` yields them: only
/// the projected columns, text ones cast to views. Returns the projected schema with the batches, so a
/// query that reads a few columns casts only those.
pub(crate) fn project(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let projected = match projection {
        Some(indices) => Arc::new(schema.project(indices)?),
        None => Arc::clone(schema),
    };
    let batches = batches
        .iter()
        .map(|batch| {
            let batch = match projection {
                Some(indices) => batch.project(indices)?,
                None => batch.clone(),
            };
            let columns = batch
                .columns()
                .iter()
                .zip(projected.fields())
                .map(|(column, field)| {
                    if column.data_type() == field.data_type() {
                        Ok(Arc::clone(column))
                    } else {
                        cast(column, field.data_type())
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            // With the row count given, a projection of no columns (`count(*)`) keeps its rows.
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(
                Arc::clone(&projected),
                columns,
                &options,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((projected, batches))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};

    use super::*;

    #[test]
    fn projected_text_columns_become_views_and_keep_their_values() {
        let stored = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("other", DataType::Utf8, false),
        ]));
        let rows = RecordBatch::try_new(
            Arc::clone(&stored),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("short"),
                    None,
                    Some("a name longer than twelve bytes"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["x", "y", "z"])),
            ],
        )
        .expect("batch");
        let read = schema(&stored);
        assert_eq!(read.field(0).data_type(), &DataType::Utf8View);
        assert_eq!(read.field(1).data_type(), &DataType::Int64);

        let (projected, batches) =
            project(std::slice::from_ref(&rows), &read, Some(&vec![1, 0])).expect("cast");
        let names: Vec<&str> = projected
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["n", "name"]);
        assert_eq!(batches[0].schema(), projected);
        assert!(Arc::ptr_eq(batches[0].column(0), rows.column(1)));
        let values: Vec<Option<&str>> = batches[0].column(1).as_string_view().iter().collect();
        assert_eq!(
            values,
            vec![Some("short"), None, Some("a name longer than twelve bytes")]
        );

        let (_, counted) =
            project(std::slice::from_ref(&rows), &read, Some(&vec![])).expect("no columns");
        assert_eq!(counted[0].num_columns(), 0);
        assert_eq!(counted[0].num_rows(), 3);

        let (whole, batches) = project(&[rows], &read, None).expect("cast");
        assert_eq!(whole, read);
        assert_eq!(batches[0].column(2).data_type(), &DataType::Utf8View);
    }
}
