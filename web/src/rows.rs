//! Runs the pages' own SQL with bound parameters (`$1`, `$2`, …), never pasting user text into SQL,
//! and reads the answer as JSON rows.

use datafusion::common::ScalarValue;
use meshscope_query::QueryEngine;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// One result row, by column name.
pub type Row = Map<String, Value>;

/// A UTC timestamp parameter.
pub fn timestamp(unix_ns: i64) -> ScalarValue {
    ScalarValue::TimestampNanosecond(Some(unix_ns), Some("UTC".into()))
}

/// A text parameter.
pub fn text(value: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(value.to_owned()))
}

/// Runs `sql` with `params` bound to `$1…` under the engine's limits.
pub async fn query(
    engine: &QueryEngine,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<Vec<Row>, ApiError> {
    let frame = engine
        .context()
        .sql(sql)
        .await
        .and_then(|frame| frame.with_param_values(params))
        .map_err(|error| ApiError::internal(format!("page query failed: {error}")))?;
    let result = engine.collect(frame).await?;
    let json = result.to_json()?;
    Ok(match json.get("rows") {
        Some(Value::Array(rows)) => rows
            .iter()
            .filter_map(|row| row.as_object().cloned())
            .collect(),
        _ => Vec::new(),
    })
}

/// A text column, empty when NULL or missing.
pub fn str_of(row: &Row, column: &str) -> String {
    match row.get(column) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A numeric column (JSON numbers or numeric strings), 0 when NULL or missing.
pub fn num_of(row: &Row, column: &str) -> f64 {
    match row.get(column) {
        Some(Value::Number(number)) => number.as_f64().unwrap_or(0.0),
        Some(Value::String(text)) => text.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}
