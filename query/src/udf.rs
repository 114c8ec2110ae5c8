//! SQL helper functions that make common span questions short.
//!
//! - `hex_id(binary) -> text`: an id as lowercase hex, as every tracing UI prints it.
//! - `unhex_id(text) -> binary`: the reverse, for `WHERE trace_id = unhex_id('4bf9…')`. Immutable, so a
//!   literal argument is folded before planning and the comparison reaches Parquet's bloom filters.
//! - `attr(attributes_json, key) -> text`: one attribute's value from a JSON attribute column (strings
//!   as-is, numbers and booleans as their text, arrays and maps as OTLP/JSON), or NULL.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;

/// Registers every helper on `ctx`.
pub fn register(ctx: &SessionContext) {
    for udf in [hex_id(), unhex_id(), attr_udf()] {
        ctx.register_udf(udf);
    }
}

/// Applies `f` to the arrays of the arguments, keeping a scalar result when every argument was scalar.
fn on_arrays(
    args: &[ColumnarValue],
    f: impl Fn(&[ArrayRef]) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    let all_scalar = args
        .iter()
        .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let result = f(&arrays)?;
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &result, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(result))
    }
}

fn hex_id() -> ScalarUDF {
    create_udf(
        "hex_id",
        vec![DataType::Binary],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            on_arrays(args, |arrays| {
                let ids = arrays[0].as_binary::<i32>();
                let mut out = StringBuilder::with_capacity(ids.len(), ids.len() * 32);
                for id in ids.iter() {
                    out.append_option(id.map(hex::encode));
                }
                Ok(Arc::new(out.finish()))
            })
        }),
    )
}

fn unhex_id() -> ScalarUDF {
    create_udf(
        "unhex_id",
        vec![DataType::Utf8],
        DataType::Binary,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            on_arrays(args, |arrays| {
                let texts = arrays[0].as_string::<i32>();
                let mut out = BinaryBuilder::with_capacity(texts.len(), texts.len() * 16);
                for text in texts.iter() {
                    match text {
                        Some(text) => {
                            out.append_value(hex::decode(text.trim()).map_err(|error| {
                                DataFusionError::Execution(format!(
                                    "unhex_id({text:?}): not a hex id: {error}"
                                ))
                            })?)
                        }
                        None => out.append_null(),
                    }
                }
                Ok(Arc::new(out.finish()))
            })
        }),
    )
}

/// The `attr(attributes_json, key)` function, also used by search filters.
pub fn attr_udf() -> ScalarUDF {
    create_udf(
        "attr",
        // Views, the type of the tables' text columns (`crate::string_views`), so they are not copied.
        vec![DataType::Utf8View, DataType::Utf8View],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            on_arrays(args, |arrays| {
                let documents = arrays[0].as_string_view();
                let keys = arrays[1].as_string_view();
                let mut out = StringBuilder::with_capacity(documents.len(), documents.len() * 8);
                for (document, key) in documents.iter().zip(keys.iter()) {
                    out.append_option(
                        document
                            .zip(key)
                            .and_then(|(document, key)| attribute_text(document, key)),
                    );
                }
                Ok(Arc::new(out.finish()))
            })
        }),
    )
}

/// The value of `key` in an OTLP/JSON `KeyValue` list, as text.
pub fn attribute_text(document: &str, key: &str) -> Option<String> {
    // A cheap substring test skips the JSON parse for rows that cannot hold the key.
    if !document.contains(key) {
        return None;
    }
    let list: Vec<serde_json::Value> = serde_json::from_str(document).ok()?;
    let entry = list
        .iter()
        .find(|entry| entry.get("key").and_then(|k| k.as_str()) == Some(key))?;
    let value = entry.get("value")?.as_object()?;
    let (kind, inner) = value.iter().next()?;
    Some(match (kind.as_str(), inner) {
        (_, serde_json::Value::String(text)) => text.clone(),
        ("arrayValue" | "kvlistValue", other) => serde_json::json!({ kind: other }).to_string(),
        (_, other) => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::attribute_text;

    #[test]
    fn attribute_text_renders_each_type() {
        let doc = r#"[{"key":"s","value":{"stringValue":"x"}},{"key":"i","value":{"intValue":"42"}},
            {"key":"b","value":{"boolValue":true}},{"key":"d","value":{"doubleValue":1.5}},
            {"key":"a","value":{"arrayValue":{"values":[{"intValue":"1"}]}}}]"#;
        assert_eq!(attribute_text(doc, "s").as_deref(), Some("x"));
        assert_eq!(attribute_text(doc, "i").as_deref(), Some("42"));
        assert_eq!(attribute_text(doc, "b").as_deref(), Some("true"));
        assert_eq!(attribute_text(doc, "d").as_deref(), Some("1.5"));
        assert_eq!(
            attribute_text(doc, "a").as_deref(),
            Some(r#"{"arrayValue":{"values":[{"intValue":"1"}]}}"#)
        );
        assert_eq!(attribute_text(doc, "missing"), None);
        assert_eq!(attribute_text("not json", "not"), None);
    }
}
