//! Query results in the shapes clients ask for: JSON rows, CSV, Arrow IPC, or a text table.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::error::{QueryError, Result};

/// The rows a query produced, with its schema (kept even when there are no rows).
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// True when rows past the row limit were left out.
    pub truncated: bool,
}

fn internal(error: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(error.to_string())
}

impl QueryResult {
    /// `{"columns":[{"name","type"}],"rows":[{column: value}],"truncated":bool}`; binary values as hex,
    /// NULL as `null` (every row has every column).
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let columns: Vec<_> = self
            .schema
            .fields()
            .iter()
            .map(|field| serde_json::json!({ "name": field.name(), "type": field.data_type().to_string() }))
            .collect();
        use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(Vec::new());
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        writer.write_batches(&batches).map_err(internal)?;
        writer.finish().map_err(internal)?;
        let bytes = writer.into_inner();
        let rows: serde_json::Value = if bytes.is_empty() {
            serde_json::json!([])
        } else {
            serde_json::from_slice(&bytes).map_err(internal)?
        };
        Ok(serde_json::json!({ "columns": columns, "rows": rows, "truncated": self.truncated }))
    }

    /// CSV with a header line.
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(Vec::new());
        for batch in &self.batches {
            writer.write(batch).map_err(internal)?;
        }
        if self.batches.is_empty() {
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Ok(format!("{}\n", names.join(",")).into_bytes());
        }
        Ok(writer.into_inner())
    }

    /// An Arrow IPC stream.
    pub fn to_arrow_ipc(&self) -> Result<Vec<u8>> {
        let mut writer = StreamWriter::try_new(Vec::new(), &self.schema).map_err(internal)?;
        for batch in &self.batches {
            writer.write(batch).map_err(internal)?;
        }
        writer.finish().map_err(internal)?;
        writer.into_inner().map_err(internal)
    }

    /// A boxed text table for terminals.
    pub fn to_table(&self) -> Result<String> {
        Ok(pretty_format_batches(&self.batches)
            .map_err(internal)?
            .to_string())
    }
}
