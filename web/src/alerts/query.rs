//! Alert rules' SQL run by the query engine.
//!
//! The adapter lives here because the web crate is the one place that sees both sides: the collector
//! (which evaluates alerts) must not link DataFusion, and the query crate sits below the collector's
//! alerting in nobody's dependency list, so neither can implement the other's trait.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use meshscope_collector::alerts::{AlertQuery, AlertRow};
use meshscope_query::QueryEngine;
use serde_json::Value;

/// [`AlertQuery`] over the query engine: the same read-only SQL, limits and views as `/api/sql`.
pub struct EngineAlertQuery(pub Arc<QueryEngine>);

impl AlertQuery for EngineAlertQuery {
    fn rows<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<Vec<AlertRow>, String>> {
        Box::pin(async move {
            let result = self.0.sql(sql).await.map_err(|error| error.to_string())?;
            let value_type = result
                .schema
                .field_with_name("value")
                .map_err(|_| "the query has no `value` column".to_owned())?
                .data_type()
                .clone();
            if !value_type.is_numeric() {
                return Err(format!("column `value` must be numeric, not {value_type}"));
            }
            let json = result.to_json().map_err(|error| error.to_string())?;
            let rows = json["rows"].as_array().cloned().unwrap_or_default();
            rows.into_iter().map(alert_row).collect()
        })
    }
}

/// One JSON row as labels (every column but `value`, NULLs left out) and value.
fn alert_row(row: Value) -> Result<AlertRow, String> {
    let Value::Object(columns) = row else {
        return Err("query rows must be objects".into());
    };
    let mut labels = BTreeMap::new();
    let mut value = None;
    for (name, cell) in columns {
        if name == "value" {
            value = match &cell {
                Value::Null => None,
                Value::Number(number) => number.as_f64(),
                // Decimals and 64-bit integers may come as text to keep their precision.
                Value::String(text) => text.parse::<f64>().ok(),
                other => return Err(format!("`value` {other} is not a number")),
            };
            continue;
        }
        match cell {
            Value::Null => {}
            Value::String(text) => {
                labels.insert(name, text);
            }
            other => {
                labels.insert(name, other.to_string());
            }
        }
    }
    Ok(AlertRow { labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_become_labels_and_value() {
        let row =
            alert_row(json!({"service": "a", "code": 500, "gone": null, "value": 2.5})).unwrap();
        assert_eq!(row.value, Some(2.5));
        assert_eq!(
            row.labels,
            BTreeMap::from([
                ("code".to_owned(), "500".to_owned()),
                ("service".to_owned(), "a".to_owned())
            ])
        );
        assert_eq!(alert_row(json!({"value": null})).unwrap().value, None);
        assert!(alert_row(json!({"value": true})).is_err());
    }
}
