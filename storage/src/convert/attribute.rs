//! A borrowed view of one attribute, so that spans decoded by prost and spans read straight from the
//! protobuf bytes ([`super::wire_spans`]) share the promotion and JSON code.

use std::borrow::Cow;

use meshscope_proto::common::any_value::Value;
use meshscope_proto::common::{AnyValue, KeyValue};

/// One attribute of a span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttrRef<'a> {
    /// A plain key with a scalar value (or none): the shape of nearly every attribute, borrowed.
    Plain {
        /// The key.
        key: &'a str,
        /// The value.
        value: ValueRef<'a>,
    },
    /// Any other attribute (an array or kvlist value, a string-table index), as prost decodes it.
    Full(Cow<'a, KeyValue>),
}

/// The value of a [`AttrRef::Plain`] attribute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ValueRef<'a> {
    /// The KeyValue has no value at all (OTLP/JSON `null`).
    Absent,
    /// An AnyValue with no value set (OTLP/JSON `{}`).
    Empty,
    /// `string_value`.
    Str(&'a str),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bytes_value`.
    Bytes(&'a [u8]),
}

impl<'a> AttrRef<'a> {
    /// The view of a decoded KeyValue.
    pub(crate) fn of(kv: &'a KeyValue) -> Self {
        let value = match &kv.value {
            None => Some(ValueRef::Absent),
            Some(AnyValue { value: None }) => Some(ValueRef::Empty),
            Some(AnyValue { value: Some(v) }) => match v {
                Value::StringValue(s) => Some(ValueRef::Str(s)),
                Value::BoolValue(b) => Some(ValueRef::Bool(*b)),
                Value::IntValue(i) => Some(ValueRef::Int(*i)),
                Value::DoubleValue(d) => Some(ValueRef::Double(*d)),
                Value::BytesValue(b) => Some(ValueRef::Bytes(b)),
                Value::ArrayValue(_) | Value::KvlistValue(_) | Value::StringValueStrindex(_) => {
                    None
                }
            },
        };
        match value {
            Some(value) if kv.key_strindex == 0 => AttrRef::Plain {
                key: &kv.key,
                value,
            },
            _ => AttrRef::Full(Cow::Borrowed(kv)),
        }
    }

    /// The attribute's key.
    pub(crate) fn key(&self) -> &str {
        match self {
            AttrRef::Plain { key, .. } => key,
            AttrRef::Full(kv) => &kv.key,
        }
    }
}
