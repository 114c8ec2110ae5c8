//! The tables' text columns as the engine reads them: `Utf8View`, not the stored `Utf8`.
//!
//! A view is 16 bytes per value that hold a short string inline, or point into a buffer the Parquet
//! reader already has, so a scan no longer copies every value into a fresh `Utf8` array, and grouping
//! or comparing short strings (service, span and status names) works on the inline bytes. DataFusion
//! reads Parquet text this way by default (`schema_force_view_types`) for the same reason; the table
//! provider, which gives the scan its schema, asks for views itself. Grouping 10M spans by
//! `service_name` took about 0.6× the time (bench/README.md, "Text columns as views"). Files and the
//! memtable keep `Utf8`; memtable batches are cast when scanned, which reuses their string buffers.

use std::sync::Arc;

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;

/// `schema` with every `Utf8` field turned into `Utf8View`.
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

/// `batch` with its columns cast to the types of `schema` (the [`schema`] of the batch's own).
pub(crate) fn batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};

    use super::*;

    #[test]
    fn text_columns_become_views_and_keep_their_values() {
        let stored = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
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
            ],
        )
        .expect("batch");
        let read = schema(&stored);
        assert_eq!(read.field(0).data_type(), &DataType::Utf8View);
        assert_eq!(read.field(1).data_type(), &DataType::Int64);
        let cast = batch(&rows, &read).expect("cast");
        let names: Vec<Option<&str>> = cast.column(0).as_string_view().iter().collect();
        assert_eq!(
            names,
            vec![Some("short"), None, Some("a name longer than twelve bytes")]
        );
        assert!(Arc::ptr_eq(cast.column(1), rows.column(1)));
    }
}
