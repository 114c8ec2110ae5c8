//! The JSON stored in attribute, event, link and exemplar columns.
//!
//! Encoding writes exactly what the `opentelemetry-proto` serde implementation (OTLP/JSON) writes for
//! `Vec<KeyValue>`, `Vec<span::Event>`, `Vec<span::Link>` and `Vec<Exemplar>`, with one exception: a
//! non-finite double, which the proto serde turns into `null` (and so loses), is written as the string
//! `"NaN"`, `"Infinity"` or `"-Infinity"`, the proto3 JSON mapping of those values. Encoding never
//! allocates per value: integers, ids and bytes are formatted straight into the output.
//!
//! Decoding uses a small parser of its own rather than serde_json, for two reasons: serde_json without its
//! `float_roundtrip` feature does not parse every double back to the same bits, and its fixed recursion
//! limit (128) is lower than the JSON nesting of a 32-deep kvlist attribute. The parser accepts everything
//! the proto serde accepts for these types (ints as strings or numbers, unknown keys ignored, `null` as
//! absent) plus the non-finite double strings, and bounds its own nesting.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as BASE64;
use meshscope_proto::common::any_value::Value;
use meshscope_proto::common::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use meshscope_proto::metrics::{Exemplar, exemplar};
use meshscope_proto::trace::span::{Event, Link};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use super::ConvertError;
use super::attribute::{AttrRef, ValueRef};

/// Deepest JSON nesting (objects and arrays) the decoder follows; a 32-deep kvlist attribute inside an
/// event needs about 135 levels.
const MAX_NESTING: usize = 512;

/// Serializes `value` as JSON into `buf`, replacing its previous content.
pub(crate) fn encode_into<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> Result<(), ConvertError> {
    buf.clear();
    serde_json::to_writer(&mut *buf, value).map_err(ConvertError::Encode)
}

/// Views JSON written by [`encode_into`] as text.
pub(crate) fn as_text(buf: &[u8]) -> Result<&str, ConvertError> {
    std::str::from_utf8(buf).map_err(|e| ConvertError::Json {
        offset: e.valid_up_to(),
        message: "encoded JSON is not UTF-8".to_owned(),
    })
}

/// A `KeyValue` list, leaving out the entries whose index is `true` in `skip` (missing indexes are kept).
pub(crate) struct KeyValuesJson<'a> {
    /// The attributes.
    pub(crate) attrs: &'a [KeyValue],
    /// Entries to leave out, by index; may be shorter than `attrs`.
    pub(crate) skip: &'a [bool],
}

impl<'a> KeyValuesJson<'a> {
    /// Every entry of `attrs`.
    pub(crate) fn all(attrs: &'a [KeyValue]) -> Self {
        Self { attrs, skip: &[] }
    }
}

impl Serialize for KeyValuesJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for (i, kv) in self.attrs.iter().enumerate() {
            if !self.skip.get(i).copied().unwrap_or(false) {
                seq.serialize_element(&KeyValueJson(kv))?;
            }
        }
        seq.end()
    }
}

/// Attribute views, leaving out the entries whose index is `true` in `skip`: the same JSON as
/// [`KeyValuesJson`] writes for the KeyValues they view.
pub(crate) struct AttrsJson<'a> {
    /// The attributes.
    pub(crate) attrs: &'a [AttrRef<'a>],
    /// Entries to leave out, by index; may be shorter than `attrs`.
    pub(crate) skip: &'a [bool],
}

impl Serialize for AttrsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for (i, attr) in self.attrs.iter().enumerate() {
            if self.skip.get(i).copied().unwrap_or(false) {
                continue;
            }
            match attr {
                AttrRef::Plain { key, value } => {
                    seq.serialize_element(&PlainJson { key, value: *value })?;
                }
                AttrRef::Full(kv) => seq.serialize_element(&KeyValueJson(kv))?,
            }
        }
        seq.end()
    }
}

/// A [`AttrRef::Plain`] attribute, written as [`KeyValueJson`] writes a KeyValue.
struct PlainJson<'a> {
    key: &'a str,
    value: ValueRef<'a>,
}

impl Serialize for PlainJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("KeyValue", 2)?;
        s.serialize_field("key", self.key)?;
        match self.value {
            ValueRef::Absent => s.serialize_field("value", &None::<()>)?,
            value => s.serialize_field("value", &ValueJson(value))?,
        }
        s.end()
    }
}

/// A scalar value, written as [`AnyValueJson`] writes it.
struct ValueJson<'a>(ValueRef<'a>);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 == ValueRef::Empty {
            return serializer.serialize_map(Some(0))?.end();
        }
        let mut map = serializer.serialize_map(Some(1))?;
        match self.0 {
            ValueRef::Absent | ValueRef::Empty => {}
            ValueRef::Str(s) => map.serialize_entry("stringValue", s)?,
            ValueRef::Bool(b) => map.serialize_entry("boolValue", &b)?,
            ValueRef::Int(i) => map.serialize_entry("intValue", &AsString(i))?,
            ValueRef::Double(d) => map.serialize_entry("doubleValue", &Double(d))?,
            ValueRef::Bytes(b) => map.serialize_entry("bytesValue", &Base64Json(b))?,
        }
        map.end()
    }
}

struct KeyValueJson<'a>(&'a KeyValue);

impl Serialize for KeyValueJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let kv = self.0;
        let mut s = serializer.serialize_struct("KeyValue", 3)?;
        s.serialize_field("key", &kv.key)?;
        s.serialize_field("value", &kv.value.as_ref().map(AnyValueJson))?;
        if kv.key_strindex != 0 {
            s.serialize_field("keyStrindex", &kv.key_strindex)?;
        }
        s.end()
    }
}

struct AnyValueJson<'a>(&'a AnyValue);

impl Serialize for AnyValueJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(value) = &self.0.value else {
            return serializer.serialize_map(Some(0))?.end();
        };
        let mut map = serializer.serialize_map(Some(1))?;
        match value {
            Value::StringValue(s) => map.serialize_entry("stringValue", s)?,
            Value::BoolValue(b) => map.serialize_entry("boolValue", b)?,
            Value::IntValue(i) => map.serialize_entry("intValue", &AsString(i))?,
            Value::DoubleValue(d) => map.serialize_entry("doubleValue", &Double(*d))?,
            Value::ArrayValue(a) => map.serialize_entry("arrayValue", &ArrayJson(&a.values))?,
            Value::KvlistValue(l) => map.serialize_entry("kvlistValue", &KvlistJson(&l.values))?,
            Value::BytesValue(b) => map.serialize_entry("bytesValue", &Base64Json(b))?,
            Value::StringValueStrindex(i) => map.serialize_entry("stringValueStrindex", i)?,
        }
        map.end()
    }
}

struct ArrayJson<'a>(&'a [AnyValue]);

impl Serialize for ArrayJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Values<'a>(&'a [AnyValue]);
        impl Serialize for Values<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(AnyValueJson))
            }
        }
        let mut s = serializer.serialize_struct("ArrayValue", 1)?;
        s.serialize_field("values", &Values(self.0))?;
        s.end()
    }
}

struct KvlistJson<'a>(&'a [KeyValue]);

impl Serialize for KvlistJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("KeyValueList", 1)?;
        s.serialize_field("values", &KeyValuesJson::all(self.0))?;
        s.end()
    }
}

/// A span's events.
pub(crate) struct EventsJson<'a>(pub(crate) &'a [Event]);

impl Serialize for EventsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(EventJson))
    }
}

struct EventJson<'a>(&'a Event);

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut s = serializer.serialize_struct("Event", 4)?;
        s.serialize_field("timeUnixNano", &AsString(e.time_unix_nano))?;
        s.serialize_field("name", &e.name)?;
        s.serialize_field("attributes", &KeyValuesJson::all(&e.attributes))?;
        s.serialize_field("droppedAttributesCount", &e.dropped_attributes_count)?;
        s.end()
    }
}

/// A span's links.
pub(crate) struct LinksJson<'a>(pub(crate) &'a [Link]);

impl Serialize for LinksJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(LinkJson))
    }
}

struct LinkJson<'a>(&'a Link);

impl Serialize for LinkJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let l = self.0;
        let mut s = serializer.serialize_struct("Link", 6)?;
        s.serialize_field("traceId", &Hex(&l.trace_id))?;
        s.serialize_field("spanId", &Hex(&l.span_id))?;
        s.serialize_field("traceState", &l.trace_state)?;
        s.serialize_field("attributes", &KeyValuesJson::all(&l.attributes))?;
        s.serialize_field("droppedAttributesCount", &l.dropped_attributes_count)?;
        s.serialize_field("flags", &l.flags)?;
        s.end()
    }
}

/// A data point's exemplars.
pub(crate) struct ExemplarsJson<'a>(pub(crate) &'a [Exemplar]);

impl Serialize for ExemplarsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ExemplarJson))
    }
}

struct ExemplarJson<'a>(&'a Exemplar);

impl Serialize for ExemplarJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(
            "filteredAttributes",
            &KeyValuesJson::all(&e.filtered_attributes),
        )?;
        map.serialize_entry("timeUnixNano", &AsString(e.time_unix_nano))?;
        map.serialize_entry("spanId", &Hex(&e.span_id))?;
        map.serialize_entry("traceId", &Hex(&e.trace_id))?;
        match e.value {
            Some(exemplar::Value::AsDouble(d)) => map.serialize_entry("asDouble", &Double(d))?,
            Some(exemplar::Value::AsInt(i)) => map.serialize_entry("asInt", &AsString(i))?,
            None => {}
        }
        map.end()
    }
}

/// A value written as a JSON string through its `Display` (the OTLP/JSON form of 64-bit integers).
struct AsString<T>(T);

impl<T: fmt::Display> Serialize for AsString<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// A double; non-finite values become the strings `NaN`, `Infinity` and `-Infinity`.
struct Double(f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        if d.is_finite() {
            serializer.serialize_f64(d)
        } else if d.is_nan() {
            serializer.serialize_str("NaN")
        } else if d > 0.0 {
            serializer.serialize_str("Infinity")
        } else {
            serializer.serialize_str("-Infinity")
        }
    }
}

/// Bytes as a standard, padded base64 string.
struct Base64Json<'a>(&'a [u8]);

impl Serialize for Base64Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, &BASE64))
    }
}

/// Bytes as a lowercase hex string (trace and span ids).
struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        for chunk in self.0.chunks(32) {
            let out = &mut buf[..chunk.len() * 2];
            hex::encode_to_slice(chunk, out).map_err(|_| fmt::Error)?;
            f.write_str(std::str::from_utf8(out).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

/// Decodes a JSON `KeyValue` list.
pub(crate) fn decode_key_values(text: &str) -> Result<Vec<KeyValue>, ConvertError> {
    Reader::parse(text, key_values)
}

/// Decodes a JSON list of span events.
pub(crate) fn decode_events(text: &str) -> Result<Vec<Event>, ConvertError> {
    Reader::parse(text, |r| r.list(event))
}

/// Decodes a JSON list of span links.
pub(crate) fn decode_links(text: &str) -> Result<Vec<Link>, ConvertError> {
    Reader::parse(text, |r| r.list(link))
}

type Parsed<T> = Result<T, ConvertError>;

fn key_values(r: &mut Reader<'_>) -> Parsed<Vec<KeyValue>> {
    r.list(key_value)
}

fn key_value(r: &mut Reader<'_>) -> Parsed<KeyValue> {
    let mut kv = KeyValue::default();
    r.object(|r, key| {
        match key {
            "key" => kv.key = r.string()?.into_owned(),
            "value" => kv.value = Some(any_value(r)?),
            "keyStrindex" => kv.key_strindex = r.integer()?,
            _ => r.skip_value()?,
        }
        Ok(())
    })?;
    Ok(kv)
}

fn any_value(r: &mut Reader<'_>) -> Parsed<AnyValue> {
    let mut value = None;
    r.object(|r, key| {
        value = Some(match key {
            "stringValue" => Value::StringValue(r.string()?.into_owned()),
            "boolValue" => Value::BoolValue(r.bool()?),
            "intValue" => Value::IntValue(r.integer()?),
            "doubleValue" => Value::DoubleValue(r.double()?),
            "arrayValue" => Value::ArrayValue(ArrayValue {
                values: values_field(r, any_value)?,
            }),
            "kvlistValue" => Value::KvlistValue(KeyValueList {
                values: values_field(r, key_value)?,
            }),
            "bytesValue" => {
                let text = r.string()?;
                let bytes = BASE64
                    .decode(text.as_bytes())
                    .map_err(|e| r.error(format!("invalid base64: {e}")))?;
                Value::BytesValue(bytes)
            }
            "stringValueStrindex" => Value::StringValueStrindex(r.integer()?),
            _ => return r.skip_value(),
        });
        Ok(())
    })?;
    Ok(AnyValue { value })
}

/// The `values` list of an `ArrayValue` or `KeyValueList` object.
fn values_field<T>(r: &mut Reader<'_>, item: fn(&mut Reader<'_>) -> Parsed<T>) -> Parsed<Vec<T>> {
    let mut values = Vec::new();
    r.object(|r, key| {
        if key == "values" {
            values = r.list(item)?;
            Ok(())
        } else {
            r.skip_value()
        }
    })?;
    Ok(values)
}

fn event(r: &mut Reader<'_>) -> Parsed<Event> {
    let mut event = Event::default();
    r.object(|r, key| {
        match key {
            "timeUnixNano" => event.time_unix_nano = r.integer()?,
            "name" => event.name = r.string()?.into_owned(),
            "attributes" => event.attributes = key_values(r)?,
            "droppedAttributesCount" => event.dropped_attributes_count = r.integer()?,
            _ => r.skip_value()?,
        }
        Ok(())
    })?;
    Ok(event)
}

fn link(r: &mut Reader<'_>) -> Parsed<Link> {
    let mut link = Link::default();
    r.object(|r, key| {
        match key {
            "traceId" => link.trace_id = r.hex()?,
            "spanId" => link.span_id = r.hex()?,
            "traceState" => link.trace_state = r.string()?.into_owned(),
            "attributes" => link.attributes = key_values(r)?,
            "droppedAttributesCount" => link.dropped_attributes_count = r.integer()?,
            "flags" => link.flags = r.integer()?,
            _ => r.skip_value()?,
        }
        Ok(())
    })?;
    Ok(link)
}

/// A recursive-descent JSON reader over a string.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// Parses the whole of `text` with `f`; anything but whitespace after the value is an error.
    fn parse<T>(text: &'a str, f: impl FnOnce(&mut Self) -> Parsed<T>) -> Parsed<T> {
        let mut reader = Reader {
            text,
            pos: 0,
            depth: 0,
        };
        let value = f(&mut reader)?;
        if reader.peek().is_some() {
            return Err(reader.error("trailing characters after the JSON value"));
        }
        Ok(value)
    }

    fn error(&self, message: impl Into<String>) -> ConvertError {
        ConvertError::Json {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// The next non-whitespace byte, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.byte() {
            self.pos += 1;
        }
        self.byte()
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, b: u8) -> Parsed<()> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.error(format!("expected `{}`", char::from(b))))
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        self.peek();
        let found = self.text.as_bytes()[self.pos..].starts_with(word.as_bytes());
        if found {
            self.pos += word.len();
        }
        found
    }

    fn enter(&mut self) -> Parsed<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(format!("JSON nested deeper than {MAX_NESTING} levels")));
        }
        Ok(())
    }

    /// Reads an object, calling `field` for each member whose value is not `null` (null means absent).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Parsed<()>) -> Parsed<()> {
        self.expect(b'{')?;
        self.enter()?;
        if !self.eat(b'}') {
            loop {
                let key = self.string()?;
                self.expect(b':')?;
                if !self.literal("null") {
                    field(self, &key)?;
                }
                if !self.eat(b',') {
                    self.expect(b'}')?;
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Reads an array, calling `item` for each element.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Parsed<()>) -> Parsed<()> {
        self.expect(b'[')?;
        self.enter()?;
        if !self.eat(b']') {
            loop {
                item(self)?;
                if !self.eat(b',') {
                    self.expect(b']')?;
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn list<T>(&mut self, item: fn(&mut Self) -> Parsed<T>) -> Parsed<Vec<T>> {
        let mut out = Vec::new();
        self.array(|r| {
            out.push(item(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn skip_value(&mut self) -> Parsed<()> {
        match self.peek() {
            Some(b'{') => self.object(|r, _| r.skip_value()),
            Some(b'[') => self.array(Self::skip_value),
            Some(b'"') => self.string().map(drop),
            Some(b't' | b'f') => self.bool().map(drop),
            Some(b'n') if self.literal("null") => Ok(()),
            _ => self.number().map(drop),
        }
    }

    fn bool(&mut self) -> Parsed<bool> {
        if self.literal("true") {
            Ok(true)
        } else if self.literal("false") {
            Ok(false)
        } else {
            Err(self.error("expected a boolean"))
        }
    }

    /// The text of a JSON number (validated by whoever parses it).
    fn number(&mut self) -> Parsed<&'a str> {
        self.peek();
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.byte() {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error("expected a value"));
        }
        Ok(&self.text[start..self.pos])
    }

    /// An integer written as a JSON number or as a string holding one.
    fn integer<T: std::str::FromStr>(&mut self) -> Parsed<T>
    where
        T::Err: fmt::Display,
    {
        let start = self.pos;
        let parsed = if self.peek() == Some(b'"') {
            self.string()?.parse::<T>()
        } else {
            self.number()?.parse::<T>()
        };
        parsed.map_err(|e| ConvertError::Json {
            offset: start,
            message: format!("invalid integer: {e}"),
        })
    }

    /// A double: a JSON number, or a string holding `NaN`, `Infinity`, `-Infinity` or a number.
    fn double(&mut self) -> Parsed<f64> {
        let start = self.pos;
        let parsed = if self.peek() == Some(b'"') {
            match &*self.string()? {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => other.parse::<f64>(),
            }
        } else {
            self.number()?.parse::<f64>()
        };
        parsed.map_err(|e| ConvertError::Json {
            offset: start,
            message: format!("invalid double: {e}"),
        })
    }

    /// Bytes written as a hex string (trace and span ids).
    fn hex(&mut self) -> Parsed<Vec<u8>> {
        let text = self.string()?;
        hex::decode(text.as_bytes()).map_err(|e| self.error(format!("invalid hex id: {e}")))
    }

    /// A JSON string, borrowed from the input unless it contains escapes.
    fn string(&mut self) -> Parsed<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.pos;
        self.skip_plain();
        match self.byte() {
            Some(b'"') => {
                let s = &self.text[start..self.pos];
                self.pos += 1;
                return Ok(Cow::Borrowed(s));
            }
            Some(b'\\') => {}
            Some(_) => return Err(self.error("control character in string")),
            None => return Err(self.error("unterminated string")),
        }
        let mut out = String::from(&self.text[start..self.pos]);
        loop {
            match self.byte() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => {
                    let run = self.pos;
                    self.skip_plain();
                    if run == self.pos {
                        return Err(self.error("control character in string"));
                    }
                    out.push_str(&self.text[run..self.pos]);
                }
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// Advances over string content that needs no unescaping.
    fn skip_plain(&mut self) {
        while let Some(b) = self.byte() {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            self.pos += 1;
        }
    }

    /// Decodes the escape sequence after a backslash.
    fn escape(&mut self, out: &mut String) -> Parsed<()> {
        let Some(b) = self.byte() else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&first) {
                    if !(self.text.as_bytes()[self.pos..].starts_with(b"\\u")) {
                        return Err(self.error("unpaired surrogate in string"));
                    }
                    self.pos += 2;
                    let second = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&second) {
                        return Err(self.error("unpaired surrogate in string"));
                    }
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                } else {
                    first
                };
                char::from_u32(code).ok_or_else(|| self.error("unpaired surrogate in string"))?
            }
            _ => return Err(self.error("invalid escape in string")),
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let code = u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(v.to_owned())),
        }
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }

    /// The JSON of `value`, or the error message (which no assertion expects).
    fn encode<T: Serialize>(value: &T) -> String {
        let mut buf = Vec::new();
        match encode_into(&mut buf, value) {
            Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
            Err(e) => e.to_string(),
        }
    }

    fn finite_attributes() -> Vec<KeyValue> {
        vec![
            kv(
                "s",
                Value::StringValue("quote \" backslash \\ tab \t é 😀 \u{1}".to_owned()),
            ),
            kv("b", Value::BoolValue(true)),
            kv("i", Value::IntValue(i64::MIN)),
            kv("d", Value::DoubleValue(0.1)),
            kv("big", Value::DoubleValue(1.0e300)),
            kv("neg0", Value::DoubleValue(-0.0)),
            kv("bytes", Value::BytesValue(vec![0, 1, 2, 250, 255])),
            kv(
                "arr",
                Value::ArrayValue(ArrayValue {
                    values: vec![s("x"), AnyValue { value: None }],
                }),
            ),
            kv(
                "kv",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", Value::IntValue(7))],
                }),
            ),
            KeyValue {
                key: "none".to_owned(),
                value: None,
                key_strindex: 0,
            },
            KeyValue {
                key: String::new(),
                value: Some(s("indexed key")),
                key_strindex: 3,
            },
            kv("strindex", Value::StringValueStrindex(4)),
        ]
    }

    #[test]
    fn encoding_matches_the_proto_serde_for_finite_values() -> TestResult {
        let attrs = finite_attributes();
        assert_eq!(
            encode(&KeyValuesJson::all(&attrs)),
            serde_json::to_string(&attrs)?
        );

        let events = vec![Event {
            time_unix_nano: u64::MAX,
            name: "ev".to_owned(),
            attributes: attrs.clone(),
            dropped_attributes_count: 2,
        }];
        assert_eq!(
            encode(&EventsJson(&events)),
            serde_json::to_string(&events)?
        );

        let links = vec![Link {
            trace_id: (0..16).collect(),
            span_id: (0..8).collect(),
            trace_state: "a=b".to_owned(),
            attributes: attrs.clone(),
            dropped_attributes_count: 1,
            flags: 0x301,
        }];
        assert_eq!(encode(&LinksJson(&links)), serde_json::to_string(&links)?);

        let exemplars = vec![
            Exemplar {
                filtered_attributes: attrs,
                time_unix_nano: 5,
                span_id: vec![1; 8],
                trace_id: vec![2; 16],
                value: Some(exemplar::Value::AsDouble(2.5)),
            },
            Exemplar {
                value: Some(exemplar::Value::AsInt(-3)),
                ..Default::default()
            },
            Exemplar::default(),
        ];
        assert_eq!(
            encode(&ExemplarsJson(&exemplars)),
            serde_json::to_string(&exemplars)?
        );
        Ok(())
    }

    #[test]
    fn skip_leaves_out_entries() -> TestResult {
        let attrs = vec![kv("a", Value::IntValue(1)), kv("b", Value::IntValue(2))];
        let json = encode(&KeyValuesJson {
            attrs: &attrs,
            skip: &[true],
        });
        assert_eq!(json, r#"[{"key":"b","value":{"intValue":"2"}}]"#);
        assert_eq!(encode(&KeyValuesJson::all(&[])), "[]");
        Ok(())
    }

    #[test]
    fn decoding_reverses_encoding() -> TestResult {
        let attrs = finite_attributes();
        let json = encode(&KeyValuesJson::all(&attrs));
        assert_eq!(decode_key_values(&json)?, attrs);

        let events = vec![Event {
            time_unix_nano: u64::MAX,
            name: "ev \u{2028}".to_owned(),
            attributes: attrs.clone(),
            dropped_attributes_count: 2,
        }];
        assert_eq!(decode_events(&encode(&EventsJson(&events)))?, events);

        let links = vec![Link {
            trace_id: (0..16).collect(),
            span_id: (0..8).collect(),
            trace_state: "a=b".to_owned(),
            attributes: attrs,
            dropped_attributes_count: 1,
            flags: 0x301,
        }];
        assert_eq!(decode_links(&encode(&LinksJson(&links)))?, links);
        Ok(())
    }

    #[test]
    fn non_finite_doubles_round_trip() -> TestResult {
        let attrs = vec![
            kv("nan", Value::DoubleValue(f64::NAN)),
            kv("inf", Value::DoubleValue(f64::INFINITY)),
            kv("ninf", Value::DoubleValue(f64::NEG_INFINITY)),
        ];
        // The proto serde loses them:
        let lossy: Vec<KeyValue> = serde_json::from_str(&serde_json::to_string(&attrs)?)?;
        assert_eq!(lossy[0].value, Some(AnyValue { value: None }));

        let json = encode(&KeyValuesJson::all(&attrs));
        assert_eq!(
            json,
            r#"[{"key":"nan","value":{"doubleValue":"NaN"}},{"key":"inf","value":{"doubleValue":"Infinity"}},{"key":"ninf","value":{"doubleValue":"-Infinity"}}]"#
        );
        let back = decode_key_values(&json)?;
        let Some(Value::DoubleValue(nan)) = back[0].value.as_ref().and_then(|v| v.value.clone())
        else {
            panic!("not a double: {back:?}");
        };
        assert!(nan.is_nan());
        assert_eq!(back[1..], attrs[1..]);

        let exemplars = vec![Exemplar {
            value: Some(exemplar::Value::AsDouble(f64::NEG_INFINITY)),
            ..Default::default()
        }];
        assert!(encode(&ExemplarsJson(&exemplars)).contains(r#""asDouble":"-Infinity""#));
        Ok(())
    }

    #[test]
    fn doubles_round_trip_bit_exactly() -> TestResult {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut attrs = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            attrs.push(kv("d", Value::DoubleValue(f64::from_bits(x))));
        }
        attrs.push(kv("min", Value::DoubleValue(f64::MIN_POSITIVE / 4.0)));
        let back = decode_key_values(&encode(&KeyValuesJson::all(&attrs)))?;
        assert_eq!(back.len(), attrs.len());
        for (a, b) in attrs.iter().zip(&back) {
            let bits = |kv: &KeyValue| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::DoubleValue(d)) => d.to_bits(),
                other => panic!("not a double: {other:?}"),
            };
            let (a, b) = (bits(a), bits(b));
            // All NaNs encode as "NaN"; compare the rest bit for bit.
            if !f64::from_bits(a).is_nan() {
                assert_eq!(a, b);
            }
        }
        Ok(())
    }

    #[test]
    fn deep_nesting_round_trips() -> TestResult {
        let mut value = s("leaf");
        for depth in 0..40 {
            value = if depth % 2 == 0 {
                AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![KeyValue {
                            key: format!("k{depth}"),
                            value: Some(value),
                            key_strindex: 0,
                        }],
                    })),
                }
            } else {
                AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue {
                        values: vec![value],
                    })),
                }
            };
        }
        let attrs = vec![KeyValue {
            key: "deep".to_owned(),
            value: Some(value),
            key_strindex: 0,
        }];
        let json = encode(&KeyValuesJson::all(&attrs));
        assert_eq!(decode_key_values(&json)?, attrs);

        // 32 nested kvlists in an event: about 135 JSON levels, beyond serde_json's limit of 128.
        let mut value = s("leaf");
        for _ in 0..32 {
            value = AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".to_owned(),
                        value: Some(value),
                        key_strindex: 0,
                    }],
                })),
            };
        }
        let events = vec![Event {
            attributes: vec![KeyValue {
                key: "deep".to_owned(),
                value: Some(value),
                key_strindex: 0,
            }],
            ..Event::default()
        }];
        let json = encode(&EventsJson(&events));
        assert!(serde_json::from_str::<serde_json::Value>(&json).is_err());
        assert_eq!(decode_events(&json)?, events);

        let too_deep = "[".repeat(MAX_NESTING + 1);
        assert!(matches!(
            decode_key_values(&too_deep),
            Err(ConvertError::Json { .. })
        ));
        Ok(())
    }

    #[test]
    fn decoder_accepts_proto_serde_variants() -> TestResult {
        let json = r#" [ {"key":"i","value":{"intValue":12}}, {"key":"s","value":{"stringValue":null}},
            {"key":"u","value":{"unknown":[1,{"a":true}],"boolValue":false}},
            {"key":"e","value":{"stringValue":"\u00e9\ud83d\ude00\n\/"},"extra":"x"},
            {"key":"n","value":null}, {"key":"d","value":{"doubleValue":3}} ] "#;
        let attrs = decode_key_values(json)?;
        assert_eq!(
            attrs,
            vec![
                kv("i", Value::IntValue(12)),
                KeyValue {
                    key: "s".to_owned(),
                    value: Some(AnyValue { value: None }),
                    key_strindex: 0,
                },
                kv("u", Value::BoolValue(false)),
                kv("e", Value::StringValue("é😀\n/".to_owned())),
                KeyValue {
                    key: "n".to_owned(),
                    value: None,
                    key_strindex: 0,
                },
                kv("d", Value::DoubleValue(3.0)),
            ]
        );
        Ok(())
    }

    #[test]
    fn decoder_rejects_malformed_json() -> TestResult {
        for bad in [
            "",
            "[",
            "[{]",
            "[{\"key\":\"a\"}] x",
            "[{\"key\":\"a\",\"value\":{\"intValue\":\"1.5\"}}]",
            "[{\"key\":\"a\",\"value\":{\"bytesValue\":\"***\"}}]",
            "[{\"key\":\"\\ud800\"}]",
            "[{\"key\":\"\\q\"}]",
            "[{\"key\":\"a\u{1}\"}]",
            "{}",
        ] {
            assert!(
                matches!(decode_key_values(bad), Err(ConvertError::Json { .. })),
                "accepted {bad:?}"
            );
        }
        assert!(decode_links(r#"[{"traceId":"zz"}]"#).is_err());
        Ok(())
    }
}
