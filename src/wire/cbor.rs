//! A minimal CBOR encoder (RFC 8949) that writes into a caller-provided buffer.
//!
//! The gate emits a handful of small, fixed-shape representations (SPEC section 4), and the real
//! devices it stands in for encode them with the preferred (shortest) serialisation of heads and
//! an *indefinite-length* outer map (IoTivity-Lite uses tinycbor that way). This encoder does
//! exactly that and nothing else: no allocation, no floats, no tags. Tests check its output with
//! an independent decoder (ciborium).
//!
//! ```
//! use doxm_gate::wire::cbor::Encoder;
//!
//! let mut buf = [0u8; 16];
//! let mut e = Encoder::new(&mut buf);
//! e.begin_map()?.text("owned")?.bool(false)?.end()?;
//! assert_eq!(e.as_bytes(), b"\xbf\x65owned\xf4\xff");
//! # Ok::<(), doxm_gate::wire::BufferTooSmall>(())
//! ```

use super::BufferTooSmall;

/// CBOR major types (RFC 8949 section 3.1).
mod major {
    pub const UNSIGNED: u8 = 0;
    pub const NEGATIVE: u8 = 1;
    pub const BYTES: u8 = 2;
    pub const TEXT: u8 = 3;
    pub const ARRAY: u8 = 4;
    pub const MAP: u8 = 5;
    pub const SIMPLE: u8 = 7;
}

/// The additional-information value that marks an indefinite length, and the "break" byte.
const INDEFINITE: u8 = 31;
const BREAK: u8 = 0xff;

/// Writes CBOR items one after another into a borrowed buffer.
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut [u8],
    len: usize,
}

/// The result of every encoding step: the encoder again, to chain calls.
pub type Step<'e, 'b> = Result<&'e mut Encoder<'b>, BufferTooSmall>;

impl<'b> Encoder<'b> {
    /// An encoder writing from the start of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Encoder<'b> {
        Encoder { buf, len: 0 }
    }

    /// The number of bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// An unsigned integer.
    pub fn u64(&mut self, value: u64) -> Step<'_, 'b> {
        self.head(major::UNSIGNED, value)
    }

    /// A signed integer (major type 0 or 1).
    pub fn i64(&mut self, value: i64) -> Step<'_, 'b> {
        match u64::try_from(value) {
            Ok(v) => self.head(major::UNSIGNED, v),
            // -1 - n encodes as n: for negative `value`, `!value` is `-1 - value` and fits.
            Err(_) => self.head(major::NEGATIVE, !value as u64),
        }
    }

    /// `true` or `false`.
    pub fn bool(&mut self, value: bool) -> Step<'_, 'b> {
        self.put(&[major::SIMPLE << 5 | if value { 21 } else { 20 }])
    }

    /// A text string.
    pub fn text(&mut self, value: &str) -> Step<'_, 'b> {
        self.head(major::TEXT, value.len() as u64)?.put(value.as_bytes())
    }

    /// A text string given as parts that are concatenated (e.g. `"ocf://"` and a UUID).
    pub fn text_parts(&mut self, parts: &[&str]) -> Step<'_, 'b> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.head(major::TEXT, len as u64)?;
        for part in parts {
            self.put(part.as_bytes())?;
        }
        Ok(self)
    }

    /// A byte string.
    pub fn bytes(&mut self, value: &[u8]) -> Step<'_, 'b> {
        self.head(major::BYTES, value.len() as u64)?.put(value)
    }

    /// The head of a definite-length array of `len` items.
    pub fn array(&mut self, len: u64) -> Step<'_, 'b> {
        self.head(major::ARRAY, len)
    }

    /// The head of a definite-length map of `len` pairs.
    pub fn map(&mut self, len: u64) -> Step<'_, 'b> {
        self.head(major::MAP, len)
    }

    /// Opens an indefinite-length map; close it with [`Encoder::end`].
    pub fn begin_map(&mut self) -> Step<'_, 'b> {
        self.put(&[major::MAP << 5 | INDEFINITE])
    }

    /// Opens an indefinite-length array; close it with [`Encoder::end`].
    pub fn begin_array(&mut self) -> Step<'_, 'b> {
        self.put(&[major::ARRAY << 5 | INDEFINITE])
    }

    /// Closes the innermost indefinite-length item.
    pub fn end(&mut self) -> Step<'_, 'b> {
        self.put(&[BREAK])
    }

    /// A definite-length array of text strings.
    pub fn text_array(&mut self, items: &[&str]) -> Step<'_, 'b> {
        self.array(items.len() as u64)?;
        for item in items {
            self.text(item)?;
        }
        Ok(self)
    }

    /// A head in its shortest form (RFC 8949 section 4.2.1).
    fn head(&mut self, major: u8, value: u64) -> Step<'_, 'b> {
        let m = major << 5;
        match value {
            0..=23 => self.put(&[m | value as u8]),
            24..=0xff => self.put(&[m | 24, value as u8]),
            0x100..=0xffff => self.put(&[m | 25])?.put(&(value as u16).to_be_bytes()),
            0x1_0000..=0xffff_ffff => self.put(&[m | 26])?.put(&(value as u32).to_be_bytes()),
            _ => self.put(&[m | 27])?.put(&value.to_be_bytes()),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Step<'_, 'b> {
        let end = self.len + bytes.len();
        self.buf.get_mut(self.len..end).ok_or(BufferTooSmall)?.copy_from_slice(bytes);
        self.len = end;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: impl FnOnce(&mut Encoder<'_>) -> Result<(), BufferTooSmall>) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let mut e = Encoder::new(&mut buf);
        f(&mut e).unwrap();
        e.as_bytes().to_vec()
    }

    #[test]
    fn test_emit_integers_rfc8949_appendix_a() {
        let cases: [(i64, &str); 12] = [
            (0, "00"),
            (1, "01"),
            (23, "17"),
            (24, "1818"),
            (255, "18ff"),
            (256, "190100"),
            (329, "190149"),
            (65_536, "1a00010000"),
            (4_294_967_296, "1b0000000100000000"),
            (-1, "20"),
            (-100, "3863"),
            (i64::MIN, "3b7fffffffffffffff"),
        ];
        for (value, want) in cases {
            assert_eq!(hex::encode(encode(|e| e.i64(value).map(drop))), want, "{value}");
        }
        assert_eq!(hex::encode(encode(|e| e.u64(u64::MAX).map(drop))), "1bffffffffffffffff");
    }

    #[test]
    fn test_emit_strings_and_containers() {
        let bytes = encode(|e| {
            e.begin_map()?.text("a")?.text_array(&["x", "yz"])?.text("b")?.bytes(&[1, 2])?;
            e.text("c")?.map(1)?.text("bm")?.u64(1)?.end().map(drop)
        });
        assert_eq!(hex::encode(bytes), "bf616182617862797a61624201026163a162626d01ff");
    }

    #[test]
    fn test_buffer_too_small() {
        let mut buf = [0u8; 3];
        let mut e = Encoder::new(&mut buf);
        assert_eq!(e.text("abc").unwrap_err(), BufferTooSmall);
        assert_eq!(e.len(), 1, "the head fit, the body did not");
    }
}
