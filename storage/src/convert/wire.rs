//! The protobuf wire format, read without copying: a message as a sequence of (field number, value).
//!
//! Written by hand because prost decodes only into owned structs, and its field-level functions are a
//! hidden, unstable part of its API. It accepts exactly what prost accepts for the fields it reads (the
//! same varint, key and length rules); groups, which OTLP never uses, are refused.

/// The bytes are not a well-formed protobuf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The value of one field, by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    /// Wire type 0: `int32`, `int64`, `uint32`, `bool`, enums.
    Varint(u64),
    /// Wire type 1: `fixed64`, `double`.
    Fixed64(u64),
    /// Wire type 2: strings, bytes, embedded messages.
    Bytes(&'a [u8]),
    /// Wire type 5: `fixed32`, `float`.
    Fixed32(u32),
}

/// The fields of one message, in wire order; stops after the first malformed one.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of the message encoded in `message`.
    pub(crate) fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    fn read(&mut self) -> Result<(u32, Field<'a>), Malformed> {
        let key = u32::try_from(self.varint()?).map_err(|_| Malformed)?;
        let number = key >> 3;
        if number == 0 {
            return Err(Malformed);
        }
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.array()?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                Field::Bytes(self.take(len)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.array()?)),
            _ => return Err(Malformed),
        };
        Ok((number, field))
    }

    /// A base-128 varint of at most 10 bytes whose value fits in 64 bits.
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == 9 && *byte > 1 {
                    return Err(Malformed);
                }
                self.take(i + 1)?;
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        if len > self.rest.len() {
            return Err(Malformed);
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        self.take(N)?.try_into().map_err(|_| Malformed)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.read();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use meshscope_proto::common::any_value::Value;
    use meshscope_proto::common::{AnyValue, KeyValue};
    use meshscope_proto::trace::Span;
    use prost::Message;

    use super::*;

    #[test]
    fn reads_what_prost_writes() {
        let span = Span {
            trace_id: vec![7; 16],
            name: "GET /".to_owned(),
            kind: 2,
            start_time_unix_nano: u64::MAX,
            flags: 0x301,
            attributes: vec![KeyValue {
                key: "k".to_owned(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(-1)),
                }),
                key_strindex: 0,
            }],
            ..Span::default()
        };
        let bytes = span.encode_to_vec();
        let fields: Result<Vec<_>, _> = Fields::new(&bytes).collect();
        let fields = fields.unwrap();
        let attribute = span.attributes[0].encode_to_vec();
        assert_eq!(
            fields,
            [
                (1, Field::Bytes(&[7; 16])),
                (5, Field::Bytes(b"GET /")),
                (6, Field::Varint(2)),
                (7, Field::Fixed64(u64::MAX)),
                (9, Field::Bytes(&attribute)),
                (16, Field::Fixed32(0x301)),
            ]
        );
        let value: Vec<_> = Fields::new(&attribute).skip(1).collect();
        let Some(Ok((2, Field::Bytes(any)))) = value.first().copied() else {
            panic!("no value field in {value:?}");
        };
        assert_eq!(
            Fields::new(any).next(),
            Some(Ok((3, Field::Varint(u64::MAX))))
        );
    }

    #[test]
    fn refuses_what_prost_refuses() {
        let cases: [&[u8]; 6] = [
            &[0x0a, 0x05, b'a'], // length past the end
            &[0x08],             // varint missing
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ], // over 64 bits
            &[0x00, 0x01],       // field number 0
            &[0x0b],             // start group
            &[0x09, 1, 2, 3],    // fixed64 cut short
        ];
        for bytes in cases {
            let fields: Vec<_> = Fields::new(bytes).collect();
            assert_eq!(fields.last(), Some(&Err(Malformed)), "{bytes:?}");
            assert!(Span::decode(bytes).is_err(), "prost accepts {bytes:?}");
        }
    }
}
