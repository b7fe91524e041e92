//! CoAP option numbers, the option header codec, and which options the gate recognises.
//!
//! RFC 7252 section 5.4.1: an option whose number is odd is *critical*; a request carrying a
//! critical option that the endpoint does not recognise must be rejected (4.02 on CON, ignored on
//! NON). Section 5.4.3: an option whose value length is outside its defined range is treated like
//! an unrecognised option. Section 5.4.5: each supernumerary occurrence of a non-repeatable option
//! is also treated like an unrecognised option.
//!
//! The gate recognises exactly the options of SPEC section 3 ([`KNOWN`]). In particular Uri-Host
//! (3) and Uri-Port (7) are *not* recognised: they are critical, so a request carrying them fails
//! pre-filter 3. (libcoap's `coap-client` adds Uri-Host unless given `-U`.)

use nom::number::complete::{be_u16, be_u8};
use nom::IResult;

use super::coap::Error;

/// Uri-Host (RFC 7252). Critical, and not recognised by the gate.
pub const URI_HOST: u16 = 3;
/// Uri-Path (RFC 7252): one path segment per occurrence.
pub const URI_PATH: u16 = 11;
/// Content-Format (RFC 7252): the media type of the payload.
pub const CONTENT_FORMAT: u16 = 12;
/// Uri-Query (RFC 7252): one or more `key[=value]` arguments per occurrence (SPEC section 2).
pub const URI_QUERY: u16 = 15;
/// Accept (RFC 7252): the content format the client wants.
pub const ACCEPT: u16 = 17;
/// No-Response (RFC 7967): classes of responses the client is not interested in.
pub const NO_RESPONSE: u16 = 258;
/// OCF-Accept-Content-Format-Version (OCF Core): the OCF version of the wanted representation.
pub const OCF_ACCEPT_CONTENT_FORMAT_VERSION: u16 = 2049;
/// OCF-Content-Format-Version (OCF Core): the OCF version of the carried representation.
pub const OCF_CONTENT_FORMAT_VERSION: u16 = 2053;

/// The largest option number that fits the 16-bit running sum (RFC 7252 section 3.1).
pub const MAX_NUMBER: u32 = 65_535;
/// The largest option value length the header can express: 14-nibble extension `0xffff + 269`.
pub const MAX_VALUE_LEN: usize = 65_535 + 269;

/// `true` for critical options (odd numbers, RFC 7252 section 5.4.1).
pub const fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

/// What the gate knows about one option number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Definition {
    /// The option number.
    pub number: u16,
    /// The largest value length allowed (all our options allow length 0).
    pub max_len: usize,
    /// Whether the option may occur more than once.
    pub repeatable: bool,
}

/// The options of SPEC section 3, with their lengths from RFC 7252 table 4, RFC 7967 and OCF
/// Core (the two OCF version options are 2-byte uints).
pub const KNOWN: [Definition; 7] = [
    Definition { number: URI_PATH, max_len: 255, repeatable: true },
    Definition { number: CONTENT_FORMAT, max_len: 2, repeatable: false },
    Definition { number: URI_QUERY, max_len: 255, repeatable: true },
    Definition { number: ACCEPT, max_len: 2, repeatable: false },
    Definition { number: NO_RESPONSE, max_len: 1, repeatable: false },
    Definition { number: OCF_ACCEPT_CONTENT_FORMAT_VERSION, max_len: 2, repeatable: false },
    Definition { number: OCF_CONTENT_FORMAT_VERSION, max_len: 2, repeatable: false },
];

/// The definition of `number`, if the gate recognises it.
pub fn definition(number: u16) -> Option<&'static Definition> {
    KNOWN.iter().find(|d| d.number == number)
}

/// An option header after its extensions: the delta to the previous number and the value length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub delta: u32,
    pub len: usize,
}

type Parsed<'a, O> = IResult<&'a [u8], O, ()>;

/// Parses one option header (the byte with the delta and length nibbles and their extensions).
///
/// The caller has already handled the 0xFF payload marker; any other byte with a 15 nibble is a
/// format error. The extension of the delta comes before the extension of the length.
#[inline(always)]
pub(crate) fn parse_header(input: &[u8]) -> Result<(&[u8], Header), Error> {
    let (input, byte) = be_u8(input).map_err(|_: nom::Err<()>| Error::OptionValueTruncated)?;
    let (delta_nibble, len_nibble) = (byte >> 4, byte & 0x0f);
    if delta_nibble == 15 {
        return Err(Error::ReservedDeltaNibble15);
    }
    if len_nibble == 15 {
        return Err(Error::ReservedLengthNibble15);
    }
    let (input, delta) = extended(input, delta_nibble)?;
    let (input, len) = extended(input, len_nibble)?;
    Ok((input, Header { delta, len: len as usize }))
}

/// The common option header: one byte whose delta and length nibbles are both below 13
/// (nearly every option a discovery carries). Returns `(delta, len)`, or `None` when either
/// nibble announces an extension or is the reserved 15: [`parse_header`] handles those.
#[inline(always)]
pub(crate) const fn one_byte_header(byte: u8) -> Option<(u32, usize)> {
    if ONE_BYTE[byte as usize] {
        Some(((byte >> 4) as u32, (byte & 0x0f) as usize))
    } else {
        None
    }
}

/// `ONE_BYTE[b]`: both nibbles of `b` are below 13 (one test instead of two in the hot loops).
const ONE_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = byte >> 4 < 13 && byte & 0x0f < 13;
        byte += 1;
    }
    table
};

/// Decodes a well-formed option header whose byte `byte` (= `bytes[0]`) [`one_byte_header`]
/// declined, without nom: `(delta, len, header length)`. `None` for the reserved nibble 15 and
/// for truncated extensions, whose reason [`parse_header`] gives. The hot loops use this; a
/// test checks it against [`parse_header`] on every header shape.
#[inline(always)]
pub(crate) fn decode_extended_header(bytes: &[u8], byte: u8) -> Option<(u32, usize, usize)> {
    let (delta, at) = decode_nibble(bytes, byte >> 4, 1)?;
    let (len, at) = decode_nibble(bytes, byte & 0x0f, at)?;
    Some((delta, len as usize, at))
}

/// One nibble and its extension starting at `bytes[at]`: `(value, position after it)`.
#[inline(always)]
fn decode_nibble(bytes: &[u8], nibble: u8, at: usize) -> Option<(u32, usize)> {
    match nibble {
        0..=12 => Some((u32::from(nibble), at)),
        13 => Some((u32::from(*bytes.get(at)?) + 13, at + 1)),
        14 => {
            let extension = bytes.get(at..at + 2)?;
            Some((u32::from(u16::from_be_bytes([extension[0], extension[1]])) + 269, at + 2))
        }
        _ => None,
    }
}

/// Reads the extension of one nibble: 13 means one more byte + 13, 14 two more bytes + 269.
#[inline(always)]
fn extended(input: &[u8], nibble: u8) -> Result<(&[u8], u32), Error> {
    let parsed: Parsed<'_, u32> = match nibble {
        13 => be_u8(input).map(|(rest, b)| (rest, u32::from(b) + 13)),
        14 => be_u16(input).map(|(rest, w)| (rest, u32::from(w) + 269)),
        n => Ok((input, u32::from(n))),
    };
    parsed.map_err(|_| Error::ExtendedFieldTruncated)
}

/// The nibble and extension bytes that encode `value` (a delta or a length) in a header.
///
/// Returns `(nibble, extension, extension_len)`; `value` must be at most [`MAX_VALUE_LEN`].
pub(crate) fn encode_nibble(value: u32) -> (u8, [u8; 2], usize) {
    match value {
        0..=12 => (value as u8, [0, 0], 0),
        13..=268 => (13, [(value - 13) as u8, 0], 1),
        _ => (14, ((value - 269) as u16).to_be_bytes(), 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_encode_nibble_boundaries() {
        assert_eq!(encode_nibble(12), (12, [0, 0], 0));
        assert_eq!(encode_nibble(13), (13, [0, 0], 1));
        assert_eq!(encode_nibble(268), (13, [255, 0], 1));
        assert_eq!(encode_nibble(269), (14, [0, 0], 2));
        assert_eq!(encode_nibble(65_535), (14, [0xfe, 0xf2], 2));
    }

    #[test]
    fn test_header_roundtrip() {
        for value in [0u32, 12, 13, 268, 269, 65_535, MAX_VALUE_LEN as u32] {
            let (n, ext, ext_len) = encode_nibble(value);
            let mut bytes = vec![n << 4 | n];
            bytes.extend_from_slice(&ext[..ext_len]);
            bytes.extend_from_slice(&ext[..ext_len]);
            let (rest, header) = parse_header(&bytes).unwrap();
            assert!(rest.is_empty());
            assert_eq!(header, Header { delta: value, len: value as usize });
        }
    }

    #[test]
    fn test_one_byte_header_agrees_with_parse_header() {
        for byte in 0..=255u8 {
            let Some((delta, len)) = one_byte_header(byte) else {
                assert!(byte >> 4 >= 13 || byte & 0x0f >= 13, "{byte:02x}");
                continue;
            };
            let bytes = [byte];
            let (rest, header) = parse_header(&bytes).expect("the general parser agrees");
            assert!(rest.is_empty());
            assert_eq!((header.delta, header.len), (delta, len), "{byte:02x}");
        }
    }

    #[test]
    fn test_inline_decoders_agree_with_parse_header() {
        for byte in 0..=255u8 {
            // Up to four extension bytes: a 14 nibble for both the delta and the length.
            for ext in [[0u8, 0, 9, 1], [7, 200, 9, 250], [255, 255, 255, 255], [0xfe, 0xf2, 0, 1]]
            {
                for len in 1..=5 {
                    let bytes = [&[byte][..], &ext[..len - 1]].concat();
                    let parsed = parse_header(&bytes)
                        .ok()
                        .map(|(rest, h)| (h.delta, h.len, bytes.len() - rest.len()));
                    let decoded = match one_byte_header(byte) {
                        Some((delta, len)) => Some((delta, len, 1)),
                        None => decode_extended_header(&bytes, byte),
                    };
                    assert_eq!(decoded, parsed, "{bytes:02x?}");
                }
            }
        }
    }

    #[test]
    fn test_known_critical_set() {
        let critical: Vec<u16> =
            KNOWN.iter().map(|d| d.number).filter(|&n| is_critical(n)).collect();
        assert_eq!(
            critical,
            [
                URI_PATH,
                URI_QUERY,
                ACCEPT,
                OCF_ACCEPT_CONTENT_FORMAT_VERSION,
                OCF_CONTENT_FORMAT_VERSION
            ]
        );
        assert!(definition(URI_HOST).is_none());
    }
}
