//! AMF0, the subset RTMP commands and metadata use: number, boolean, string, long string,
//! object, null, undefined, ECMA array, strict array, date (and the object-end marker that
//! closes objects and ECMA arrays).
//!
//! Decoding is bounded: nesting depth, the number of values in one message, and every length
//! or count is checked against the bytes that are really there before anything is allocated.
//! Strings that are not UTF-8 are decoded lossily (commands only need their ASCII); metadata is
//! never re-encoded by the client, so its bytes pass through untouched.

use bytes::BufMut;

/// Deepest nesting of objects and arrays accepted from a peer.
pub const MAX_DEPTH: usize = 32;
/// Most values (nested ones included) accepted in one decode call.
pub const MAX_VALUES: usize = 65_536;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Value)>),
    StrictArray(Vec<Value>),
    /// Milliseconds since the epoch, and the (unused, per the spec) time zone field.
    Date {
        millis: f64,
        time_zone: i16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    #[error("AMF0: truncated {what} at byte {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("AMF0: unsupported type marker 0x{marker:02x} at byte {at}")]
    UnknownMarker { marker: u8, at: usize },
    #[error("AMF0: nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("AMF0: more than {MAX_VALUES} values in one message")]
    TooManyValues,
    #[error("AMF0: strict array of {count} elements at byte {at} but only {left} bytes follow")]
    ArrayTooLong { count: u32, at: usize, left: usize },
    #[error("AMF0: object-end marker outside an object at byte {at}")]
    StrayObjectEnd { at: usize },
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) | Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Appends the AMF0 encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Number(n) => {
                out.put_u8(NUMBER);
                out.put_f64(*n);
            }
            Value::Boolean(b) => {
                out.put_u8(BOOLEAN);
                out.put_u8(u8::from(*b));
            }
            Value::String(s) => encode_string(s, out),
            Value::Object(props) => {
                out.put_u8(OBJECT);
                encode_props(props, out);
            }
            Value::Null => out.put_u8(NULL),
            Value::Undefined => out.put_u8(UNDEFINED),
            Value::EcmaArray(props) => {
                out.put_u8(ECMA_ARRAY);
                out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
                encode_props(props, out);
            }
            Value::StrictArray(items) => {
                out.put_u8(STRICT_ARRAY);
                out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
                for item in items {
                    item.encode(out);
                }
            }
            Value::Date { millis, time_zone } => {
                out.put_u8(DATE);
                out.put_f64(*millis);
                out.put_i16(*time_zone);
            }
        }
    }
}

/// A string value: marker 0x02 with a 16-bit length, or a long string (0x0C, 32-bit length)
/// when it does not fit.
pub fn encode_string(s: &str, out: &mut Vec<u8>) {
    match u16::try_from(s.len()) {
        Ok(len) => {
            out.put_u8(STRING);
            out.put_u16(len);
        }
        Err(_) => {
            out.put_u8(LONG_STRING);
            out.put_u32(s.len() as u32);
        }
    }
    out.extend_from_slice(s.as_bytes());
}

/// An object key (no marker). Keys longer than 65535 bytes are cut: we never write such keys.
fn encode_key(key: &str, out: &mut Vec<u8>) {
    let bytes = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    out.put_u16(bytes.len() as u16);
    out.extend_from_slice(bytes);
}

fn encode_props(props: &[(String, Value)], out: &mut Vec<u8>) {
    for (key, value) in props {
        encode_key(key, out);
        value.encode(out);
    }
    out.extend_from_slice(&[0, 0, OBJECT_END]);
}

/// Encodes a sequence of values (a command or a data message body).
pub fn encode_all(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.encode(&mut out);
    }
    out
}

/// Decodes every value in `bytes` (a command or data message body).
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Value>, Amf0Error> {
    let mut d = Decoder {
        bytes,
        pos: 0,
        values: 0,
    };
    let mut out = Vec::new();
    while d.pos < bytes.len() {
        out.push(d.value(0)?);
    }
    Ok(out)
}

/// Decodes the first value of `bytes` and returns it with the number of bytes it took.
pub fn decode_one(bytes: &[u8]) -> Result<(Value, usize), Amf0Error> {
    let mut d = Decoder {
        bytes,
        pos: 0,
        values: 0,
    };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    values: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], Amf0Error> {
        let at = self.pos;
        let end = at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(Amf0Error::Truncated { what, at })?;
        self.pos = end;
        Ok(&self.bytes[at..end])
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Amf0Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Amf0Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Amf0Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, Amf0Error> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    /// `len` bytes of text; `take` has checked they are there before any allocation.
    fn text(&mut self, len: usize, what: &'static str) -> Result<String, Amf0Error> {
        Ok(String::from_utf8_lossy(self.take(len, what)?).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, Amf0Error> {
        if depth > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(Amf0Error::TooManyValues);
        }
        let at = self.pos;
        Ok(match self.u8("type marker")? {
            NUMBER => Value::Number(self.f64("number")?),
            BOOLEAN => Value::Boolean(self.u8("boolean")? != 0),
            STRING => {
                let len = self.u16("string length")?;
                Value::String(self.text(len.into(), "string")?)
            }
            LONG_STRING => {
                let len = self.u32("long string length")?;
                Value::String(self.text(len as usize, "long string")?)
            }
            OBJECT => Value::Object(self.props(depth)?),
            NULL => Value::Null,
            UNDEFINED => Value::Undefined,
            ECMA_ARRAY => {
                // The count is only a hint (writers get it wrong): read to the end marker.
                self.u32("ECMA array count")?;
                Value::EcmaArray(self.props(depth)?)
            }
            STRICT_ARRAY => {
                let count = self.u32("strict array count")?;
                let left = self.bytes.len() - self.pos;
                // Every element takes at least one byte: a count beyond that is a lie.
                if count as usize > left {
                    return Err(Amf0Error::ArrayTooLong {
                        count,
                        at: self.pos,
                        left,
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::StrictArray(items)
            }
            DATE => Value::Date {
                millis: self.f64("date")?,
                time_zone: self.u16("date time zone")? as i16,
            },
            OBJECT_END => return Err(Amf0Error::StrayObjectEnd { at }),
            marker => return Err(Amf0Error::UnknownMarker { marker, at }),
        })
    }

    /// Key/value pairs up to the empty key and object-end marker.
    fn props(&mut self, depth: usize) -> Result<Vec<(String, Value)>, Amf0Error> {
        let mut props = Vec::new();
        loop {
            let len = self.u16("object key length")?;
            if len == 0 && self.bytes.get(self.pos) == Some(&OBJECT_END) {
                self.pos += 1;
                return Ok(props);
            }
            let key = self.text(len.into(), "object key")?;
            let value = self.value(depth + 1)?;
            props.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(v: &Value) {
        let mut out = Vec::new();
        v.encode(&mut out);
        let (back, used) = decode_one(&out).unwrap();
        assert_eq!(&back, v);
        assert_eq!(used, out.len());
    }

    #[test]
    fn every_type_round_trips() {
        let values = [
            Value::Number(0.0),
            Value::Number(-1.5e300),
            Value::Boolean(true),
            Value::Boolean(false),
            Value::str(""),
            Value::str("connect"),
            Value::String("x".repeat(70_000)),
            Value::Null,
            Value::Undefined,
            Value::Object(vec![]),
            Value::Object(vec![
                ("app".into(), Value::str("live")),
                ("n".into(), Value::Number(3.0)),
                (
                    "inner".into(),
                    Value::Object(vec![("b".into(), Value::Boolean(true))]),
                ),
            ]),
            Value::EcmaArray(vec![("duration".into(), Value::Number(0.0))]),
            Value::StrictArray(vec![Value::str("avc1"), Value::str("hvc1"), Value::Null]),
            Value::StrictArray(vec![]),
            Value::Date {
                millis: 1.7e12,
                time_zone: 0,
            },
        ];
        for v in &values {
            round_trip(v);
        }
        let all = encode_all(&values);
        assert_eq!(decode_all(&all).unwrap(), values);
    }

    #[test]
    fn long_strings_use_the_long_marker() {
        let mut out = Vec::new();
        Value::String("y".repeat(65_536)).encode(&mut out);
        assert_eq!(out[0], LONG_STRING);
        assert_eq!(&out[1..5], &65_536u32.to_be_bytes());
    }

    #[test]
    fn literal_bytes_decode() {
        // What nginx-rtmp sends as connect's _result (abridged): "_result", 1, {fmsVer}, {level}.
        let bytes = b"\x02\x00\x07_result\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\
            \x03\x00\x06fmsVer\x02\x00\x0dFMS/3,0,1,123\x00\x00\x09\
            \x03\x00\x05level\x02\x00\x06status\x00\x00\x09";
        let v = decode_all(bytes).unwrap();
        assert_eq!(v[0], Value::str("_result"));
        assert_eq!(v[1], Value::Number(1.0));
        assert_eq!(v[2].get("fmsVer"), Some(&Value::str("FMS/3,0,1,123")));
        assert_eq!(v[3].get("level").and_then(Value::as_str), Some("status"));
    }

    #[test]
    fn truncated_input_is_an_error_at_every_cut() {
        let v = Value::Object(vec![
            ("a".into(), Value::str("hello")),
            ("b".into(), Value::StrictArray(vec![Value::Number(1.0)])),
            (
                "c".into(),
                Value::EcmaArray(vec![("d".into(), Value::Null)]),
            ),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        for cut in 0..out.len() {
            assert!(decode_one(&out[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn absurd_lengths_are_refused_before_allocating() {
        // A long string claiming 4 GB.
        assert!(matches!(
            decode_one(b"\x0c\xff\xff\xff\xff abc"),
            Err(Amf0Error::Truncated { .. })
        ));
        // A strict array claiming 4 billion elements in 3 bytes.
        assert_eq!(
            decode_one(b"\x0a\xff\xff\xff\xff\x05\x05\x05"),
            Err(Amf0Error::ArrayTooLong {
                count: u32::MAX,
                at: 5,
                left: 3
            })
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = Vec::new();
        for _ in 0..10_000 {
            bytes.extend_from_slice(b"\x03\x00\x01k");
        }
        assert_eq!(decode_one(&bytes), Err(Amf0Error::TooDeep));
        let mut arrays = Vec::new();
        for _ in 0..10_000 {
            arrays.extend_from_slice(b"\x0a\x00\x00\x00\x01");
        }
        arrays.push(NULL);
        assert_eq!(decode_one(&arrays), Err(Amf0Error::TooDeep));
    }

    #[test]
    fn too_many_values_are_refused() {
        let bytes = vec![NULL; MAX_VALUES + 1];
        assert_eq!(decode_all(&bytes), Err(Amf0Error::TooManyValues));
        assert_eq!(decode_all(&bytes[..MAX_VALUES]).unwrap().len(), MAX_VALUES);
    }

    #[test]
    fn unknown_markers_and_stray_ends_are_errors() {
        assert_eq!(
            decode_one(b"\x11"),
            Err(Amf0Error::UnknownMarker {
                marker: 0x11,
                at: 0
            })
        );
        assert_eq!(
            decode_one(b"\x09"),
            Err(Amf0Error::StrayObjectEnd { at: 0 })
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |n| !n.is_nan())
                .prop_map(Value::Number),
            any::<bool>().prop_map(Value::Boolean),
            "[a-zA-Z0-9 @._-]{0,40}".prop_map(Value::String),
            Just(Value::Null),
            Just(Value::Undefined),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..6).prop_map(Value::Object),
                prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..6)
                    .prop_map(Value::EcmaArray),
                prop::collection::vec(inner, 0..6).prop_map(Value::StrictArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_round_trips(v in arb_value()) {
            round_trip(&v);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&bytes);
        }
    }
}
