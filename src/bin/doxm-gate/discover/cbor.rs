//! A small, strict CBOR reader (RFC 8949) for the payloads the probe reads back: a doxm answer,
//! `/oic/res` links and `/oic/d`.
//!
//! The library only *encodes* CBOR (it never needs to read it), and ciborium is a dev-dependency,
//! so the probe carries this reader. It decodes one whole data item into an owned [`Value`]:
//! unsigned and negative integers, byte and text strings (definite or chunked), arrays and maps
//! (definite or indefinite), `false`, `true`, `null`, `undefined` and floats; tags are read and
//! dropped (the tagged item is kept). Strict means well-formed in the sense of RFC 8949
//! appendix C, plus two validity rules: text is UTF-8 and a map has no duplicate key. Anything
//! else is an [`Error`]: truncation, bytes after the item, a reserved additional-information
//! value, a misplaced break, a chunk of the wrong type, a two-byte simple value below 32, or
//! nesting deeper than [`MAX_DEPTH`]. No input panics it, and a length prefix never allocates
//! more than the input could hold.

use core::fmt;

/// How deep arrays, maps and tags may nest (the payloads read here nest three levels).
pub const MAX_DEPTH: usize = 16;

/// One decoded data item.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Major type 0.
    Uint(u64),
    /// Major type 1: the value is `-1 - n`.
    Nint(u64),
    /// Major type 2.
    Bytes(Vec<u8>),
    /// Major type 3.
    Text(String),
    /// Major type 4.
    Array(Vec<Value>),
    /// Major type 5, entries in wire order.
    Map(Vec<(Value, Value)>),
    /// Simple values 20 and 21.
    Bool(bool),
    /// Simple value 22.
    Null,
    /// Simple value 23.
    Undefined,
    /// Half, single or double precision float.
    Float(f64),
}

impl Value {
    /// The value of text key `key`, when `self` is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text, for a text string.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The boolean, for `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, for an unsigned integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(n) => Some(*n),
            _ => None,
        }
    }

    /// The integer, for an integer of either sign that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Uint(n) => i64::try_from(*n).ok(),
            // -1 - n fits when n <= i64::MAX, and then it is !(n as i64).
            Value::Nint(n) => i64::try_from(*n).ok().map(|n| !n),
            _ => None,
        }
    }

    /// The items, for an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// Why bytes are not one well-formed, valid CBOR data item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The input ends inside an item.
    Truncated,
    /// Bytes follow the item.
    TrailingBytes,
    /// Additional information 28..30 (reserved), or 31 where no indefinite length exists.
    ReservedInfo,
    /// A break (0xff) outside an indefinite-length item, or between a map key and its value.
    UnexpectedBreak,
    /// A chunk of an indefinite-length string that is not a definite string of the same type.
    BadChunk,
    /// A text string that is not UTF-8.
    InvalidUtf8,
    /// A two-byte simple value below 32, or one with no meaning (0..19, 24..31 as one byte).
    BadSimple,
    /// A map with the same key twice.
    DuplicateKey,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "CBOR ends inside an item",
            Error::TrailingBytes => "bytes after the CBOR item",
            Error::ReservedInfo => "reserved CBOR additional information",
            Error::UnexpectedBreak => "misplaced CBOR break",
            Error::BadChunk => "bad chunk in an indefinite-length CBOR string",
            Error::InvalidUtf8 => "CBOR text is not UTF-8",
            Error::BadSimple => "unsupported CBOR simple value",
            Error::DuplicateKey => "duplicate key in a CBOR map",
            Error::TooDeep => "CBOR nested too deeply",
        })
    }
}

impl std::error::Error for Error {}

/// Decodes `bytes` as exactly one data item.
///
/// # Errors
/// See [`Error`].
pub fn decode(bytes: &[u8]) -> Result<Value, Error> {
    let mut reader = Reader { bytes, pos: 0 };
    let value = reader.item(0)?.ok_or(Error::UnexpectedBreak)?;
    if reader.pos != bytes.len() {
        return Err(Error::TrailingBytes);
    }
    Ok(value)
}

const BREAK: u8 = 0xff;

/// A length or argument: definite, or the indefinite marker (additional information 31).
#[derive(Clone, Copy)]
enum Arg {
    Definite(u64),
    Indefinite,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// Reads one item; `Ok(None)` is a break, which only an indefinite container may accept.
    fn item(&mut self, depth: usize) -> Result<Option<Value>, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        let initial = self.byte()?;
        if initial == BREAK {
            return Ok(None);
        }
        let (major, info) = (initial >> 5, initial & 0x1f);
        let arg = self.arg(info)?;
        let value = match (major, arg) {
            (0, Arg::Definite(n)) => Value::Uint(n),
            (1, Arg::Definite(n)) => Value::Nint(n),
            (2, arg) => Value::Bytes(self.string(2, arg)?),
            (3, arg) => Value::Text(
                String::from_utf8(self.string(3, arg)?).map_err(|_| Error::InvalidUtf8)?,
            ),
            (4, arg) => Value::Array(self.array(arg, depth)?),
            (5, arg) => Value::Map(self.map(arg, depth)?),
            // A tag: keep the tagged item, drop the tag number.
            (6, Arg::Definite(_)) => self.item(depth + 1)?.ok_or(Error::UnexpectedBreak)?,
            (7, _) => self.simple(info, arg)?,
            _ => return Err(Error::ReservedInfo),
        };
        Ok(Some(value))
    }

    fn byte(&mut self) -> Result<u8, Error> {
        let b = *self.bytes.get(self.pos).ok_or(Error::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: u64) -> Result<&[u8], Error> {
        let remaining = self.bytes.len() - self.pos;
        let len = usize::try_from(len).ok().filter(|&l| l <= remaining).ok_or(Error::Truncated)?;
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// The argument that additional information `info` announces (RFC 8949 section 3).
    fn arg(&mut self, info: u8) -> Result<Arg, Error> {
        let width = match info {
            0..=23 => return Ok(Arg::Definite(u64::from(info))),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Ok(Arg::Indefinite),
            _ => return Err(Error::ReservedInfo),
        };
        let bytes = self.take(width)?;
        Ok(Arg::Definite(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b))))
    }

    /// The bytes of a byte or text string; chunks of an indefinite one are concatenated.
    fn string(&mut self, major: u8, arg: Arg) -> Result<Vec<u8>, Error> {
        match arg {
            Arg::Definite(len) => Ok(self.take(len)?.to_vec()),
            Arg::Indefinite => {
                let mut out = Vec::new();
                loop {
                    let initial = self.byte()?;
                    if initial == BREAK {
                        return Ok(out);
                    }
                    if initial >> 5 != major {
                        return Err(Error::BadChunk);
                    }
                    let chunk = match self.arg(initial & 0x1f)? {
                        Arg::Definite(len) => self.take(len)?,
                        Arg::Indefinite => return Err(Error::BadChunk),
                    };
                    // RFC 8949 section 3.2.3: a character cannot span text chunks.
                    if major == 3 && core::str::from_utf8(chunk).is_err() {
                        return Err(Error::InvalidUtf8);
                    }
                    out.extend_from_slice(chunk);
                }
            }
        }
    }

    fn array(&mut self, arg: Arg, depth: usize) -> Result<Vec<Value>, Error> {
        let mut items = Vec::with_capacity(self.capacity(arg));
        match arg {
            Arg::Definite(len) => {
                for _ in 0..len {
                    items.push(self.item(depth + 1)?.ok_or(Error::UnexpectedBreak)?);
                }
            }
            Arg::Indefinite => {
                while let Some(item) = self.item(depth + 1)? {
                    items.push(item);
                }
            }
        }
        Ok(items)
    }

    fn map(&mut self, arg: Arg, depth: usize) -> Result<Vec<(Value, Value)>, Error> {
        let mut entries: Vec<(Value, Value)> = Vec::with_capacity(self.capacity(arg) / 2);
        let mut remaining = match arg {
            Arg::Definite(len) => Some(len),
            Arg::Indefinite => None,
        };
        loop {
            if remaining == Some(0) {
                return Ok(entries);
            }
            let key = match self.item(depth + 1)? {
                Some(key) => key,
                None if remaining.is_none() => return Ok(entries),
                None => return Err(Error::UnexpectedBreak),
            };
            let value = self.item(depth + 1)?.ok_or(Error::UnexpectedBreak)?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(Error::DuplicateKey);
            }
            entries.push((key, value));
            remaining = remaining.map(|n| n - 1);
        }
    }

    /// A capacity hint that the rest of the input can justify (each item takes a byte).
    fn capacity(&self, arg: Arg) -> usize {
        match arg {
            Arg::Definite(len) => {
                usize::try_from(len).unwrap_or(usize::MAX).min(self.bytes.len() - self.pos)
            }
            Arg::Indefinite => 0,
        }
    }

    /// Major type 7: simple values and floats.
    fn simple(&mut self, info: u8, arg: Arg) -> Result<Value, Error> {
        match (info, arg) {
            (20, _) => Ok(Value::Bool(false)),
            (21, _) => Ok(Value::Bool(true)),
            (22, _) => Ok(Value::Null),
            (23, _) => Ok(Value::Undefined),
            // Two-byte simple values below 32 are not well-formed; the others have no meaning
            // in OCF payloads.
            (24, _) => Err(Error::BadSimple),
            (25, Arg::Definite(bits)) => Ok(Value::Float(half_to_f64(bits as u16))),
            (26, Arg::Definite(bits)) => Ok(Value::Float(f64::from(f32::from_bits(bits as u32)))),
            (27, Arg::Definite(bits)) => Ok(Value::Float(f64::from_bits(bits))),
            // 31 alone is a break, handled by the caller; here it would be a stray marker.
            (31, _) => Err(Error::UnexpectedBreak),
            _ => Err(Error::BadSimple),
        }
    }
}

/// IEEE 754 half precision to double (RFC 8949 appendix D).
fn half_to_f64(half: u16) -> f64 {
    let exp = (half >> 10) & 0x1f;
    let mant = f64::from(half & 0x3ff);
    let magnitude = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mant + 1024.0) * 2f64.powi(i32::from(exp) - 25),
    };
    if half & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    /// SPEC section 4: the payload of a real doxm answer (indefinite outer map).
    const REAL_DOXM_PAYLOAD: &str = concat!(
        "bf646f786d738100666f786d73656c0463736374190149656f776e6564f46c6465766f776e6572757569647824",
        "30303030303030302d303030302d303030302d303030302d3030303030303030303030306a6465766963657575",
        "6964782435306531613361652d366130632d346163302d376234662d6431643831386165333430336a726f776e",
        "657275756964782430303030303030302d303030302d303030302d303030302d303030303030303030303030ff",
    );

    #[test]
    fn test_decode_real_doxm() {
        let doxm = decode(&hex(REAL_DOXM_PAYLOAD)).unwrap();
        assert_eq!(doxm.get("oxms"), Some(&Value::Array(vec![Value::Uint(0)])));
        assert_eq!(doxm.get("oxmsel").and_then(Value::as_i64), Some(4));
        assert_eq!(doxm.get("sct").and_then(Value::as_u64), Some(0x149));
        assert_eq!(doxm.get("owned").and_then(Value::as_bool), Some(false));
        assert_eq!(
            doxm.get("deviceuuid").and_then(Value::as_text),
            Some("50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403")
        );
        assert_eq!(doxm.get("missing"), None);
    }

    #[test]
    fn test_decode_rfc8949_appendix_a() {
        let cases: &[(&str, Value)] = &[
            ("00", Value::Uint(0)),
            ("17", Value::Uint(23)),
            ("1818", Value::Uint(24)),
            ("1903e8", Value::Uint(1000)),
            ("1bffffffffffffffff", Value::Uint(u64::MAX)),
            ("20", Value::Nint(0)),
            ("3863", Value::Nint(99)),
            ("f4", Value::Bool(false)),
            ("f5", Value::Bool(true)),
            ("f6", Value::Null),
            ("f7", Value::Undefined),
            ("f93c00", Value::Float(1.0)),
            ("f90001", Value::Float(5.960464477539063e-8)),
            ("f9c400", Value::Float(-4.0)),
            ("fa47c35000", Value::Float(100000.0)),
            ("fb3ff199999999999a", Value::Float(1.1)),
            ("40", Value::Bytes(vec![])),
            ("4401020304", Value::Bytes(vec![1, 2, 3, 4])),
            ("60", text("")),
            ("62c3bc", text("\u{fc}")),
            ("80", Value::Array(vec![])),
            ("83010203", Value::Array(vec![Value::Uint(1), Value::Uint(2), Value::Uint(3)])),
            ("9fff", Value::Array(vec![])),
            ("9f018202039f0405ffff", {
                let inner = Value::Array(vec![Value::Uint(4), Value::Uint(5)]);
                Value::Array(vec![
                    Value::Uint(1),
                    Value::Array(vec![Value::Uint(2), Value::Uint(3)]),
                    inner,
                ])
            }),
            ("a0", Value::Map(vec![])),
            (
                "a201020304",
                Value::Map(vec![
                    (Value::Uint(1), Value::Uint(2)),
                    (Value::Uint(3), Value::Uint(4)),
                ]),
            ),
            (
                "bf6346756ef563416d7421ff",
                Value::Map(vec![(text("Fun"), Value::Bool(true)), (text("Amt"), Value::Nint(1))]),
            ),
            ("7f657374726561646d696e67ff", text("streaming")),
            ("5f42010243030405ff", Value::Bytes(vec![1, 2, 3, 4, 5])),
            ("c074323031332d30332d32315432303a30343a30305a", text("2013-03-21T20:04:00Z")),
        ];
        for (input, want) in cases {
            assert_eq!(decode(&hex(input)).as_ref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn test_as_i64() {
        assert_eq!(Value::Nint(0).as_i64(), Some(-1));
        assert_eq!(Value::Nint(i64::MAX as u64).as_i64(), Some(i64::MIN));
        assert_eq!(Value::Nint(u64::MAX).as_i64(), None);
        assert_eq!(Value::Uint(u64::MAX).as_i64(), None);
        assert_eq!(Value::Bool(true).as_i64(), None);
    }

    #[test]
    fn test_malformed() {
        let cases: &[(&str, Error)] = &[
            ("", Error::Truncated),
            ("18", Error::Truncated),
            ("1b0000", Error::Truncated),
            ("62c3", Error::Truncated),
            ("830102", Error::Truncated),
            ("a1", Error::Truncated),
            ("bf", Error::Truncated),
            ("0000", Error::TrailingBytes),
            ("1c", Error::ReservedInfo),
            ("3f", Error::ReservedInfo),
            ("df", Error::ReservedInfo),
            ("ff", Error::UnexpectedBreak),
            ("81ff", Error::UnexpectedBreak),
            ("a1ff", Error::UnexpectedBreak),
            ("bf00ff", Error::UnexpectedBreak),
            ("c0ff", Error::UnexpectedBreak),
            ("5f01ff", Error::BadChunk),
            ("7f4161ff", Error::BadChunk),
            ("7f7f6161ffff", Error::BadChunk),
            ("61ff", Error::InvalidUtf8),
            ("7f61c361bcff", Error::InvalidUtf8),
            ("f800", Error::BadSimple),
            ("f820", Error::BadSimple),
            ("e0", Error::BadSimple),
            ("a2616101616102", Error::DuplicateKey),
            // A length far beyond the input is truncation, not an allocation.
            ("9bffffffffffffffff", Error::Truncated),
            ("bbffffffffffffffff", Error::Truncated),
            ("5bffffffffffffffff", Error::Truncated),
        ];
        for (input, want) in cases {
            assert_eq!(decode(&hex(input)), Err(*want), "{input}");
        }
    }

    #[test]
    fn test_depth_limit() {
        let nested = |n: usize| {
            let mut bytes = vec![0x81; n];
            bytes.push(0x00);
            bytes
        };
        assert!(decode(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(decode(&nested(MAX_DEPTH + 1)), Err(Error::TooDeep));
        assert_eq!(decode(&[0xc0; 100]), Err(Error::TooDeep));
    }

    #[test]
    fn test_no_panic_on_prefixes_and_flips() {
        let payload = hex(REAL_DOXM_PAYLOAD);
        for end in 0..payload.len() {
            assert!(decode(&payload[..end]).is_err(), "prefix {end}");
        }
        for at in 0..payload.len() {
            for bit in 0..8 {
                let mut flipped = payload.clone();
                flipped[at] ^= 1 << bit;
                let _ = decode(&flipped);
            }
        }
    }
}
