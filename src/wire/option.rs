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
#[inline]
pub fn definition(number: u16) -> Option<&'static Definition> {
    // A jump instead of a search of `KNOWN`: the request facts ask this of every critical
    // option, and nearly every option of a discovery is critical.
    let index = match number {
        URI_PATH => 0,
        CONTENT_FORMAT => 1,
        URI_QUERY => 2,
        ACCEPT => 3,
        NO_RESPONSE => 4,
        OCF_ACCEPT_CONTENT_FORMAT_VERSION => 5,
        OCF_CONTENT_FORMAT_VERSION => 6,
        _ => return None,
    };
    Some(&KNOWN[index])
}

/// Whether an option is a critical option the gate must treat as unrecognised (RFC 7252
/// sections 5.4.1, 5.4.3 and 5.4.5): an odd number outside [`KNOWN`], a known critical option
/// whose value length is out of range, or a supernumerary occurrence of a non-repeatable one.
/// `previous` is the number of the option before it on the wire (options come in ascending
/// order, so an occurrence is supernumerary exactly when the one before has its number).
#[inline]
pub fn is_unrecognised_critical(number: u16, value_len: usize, previous: Option<u16>) -> bool {
    if !is_critical(number) {
        return false;
    }
    match definition(number) {
        Some(def) => value_len > def.max_len || (!def.repeatable && previous == Some(number)),
        None => true,
    }
}

/// The value of a known non-repeatable uint option from `first`, the value of its first
/// occurrence: `None` when that is longer than the option allows (RFC 7252 5.4.3: treated as
/// unrecognised, so absent here) or than a `u32`. Later occurrences are supernumerary (5.4.5)
/// and never count.
#[inline]
pub fn single_uint(number: u16, first: &[u8]) -> Option<u32> {
    let max_len = definition(number).map_or(0, |d| d.max_len);
    if first.len() > max_len || first.len() > 4 {
        return None;
    }
    Some(first.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)))
}

/// The common option header: one byte whose delta and length nibbles are both below 13
/// (nearly every option a discovery carries). Returns `(delta, len)`, or `None` when either
/// nibble announces an extension or is the reserved 15: [`decode_extended_header`] handles
/// those. Together the two are the crate's one option-header decoder: this is its fast path.
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

/// Decodes an option header whose first byte `byte` [`one_byte_header`] declined; `after` is
/// what follows that byte. Returns `(delta, len, rest)`, `rest` being the bytes after the
/// header's extensions (where the value starts), or the format error.
///
/// The caller has already handled the 0xFF payload marker; any other byte with a 15 nibble is a
/// format error. The errors come in RFC 7252 section 3.1 order: the header byte's nibbles (delta
/// first), then the delta's extension, then the length's, which follows it on the wire.
#[inline(always)]
pub(crate) fn decode_extended_header(after: &[u8], byte: u8) -> Result<(u32, usize, &[u8]), Error> {
    let (delta_nibble, len_nibble) = (byte >> 4, byte & 0x0f);
    if delta_nibble == 15 {
        return Err(Error::ReservedDeltaNibble15);
    }
    if len_nibble == 15 {
        return Err(Error::ReservedLengthNibble15);
    }
    let (delta, rest) = extension(after, delta_nibble).ok_or(Error::ExtendedFieldTruncated)?;
    let (len, rest) = extension(rest, len_nibble).ok_or(Error::ExtendedFieldTruncated)?;
    Ok((delta, len as usize, rest))
}

/// One nibble (0..=14) and its extension at the start of `bytes`: `(value, bytes after it)`;
/// `None` when the extension is cut short. 13 means one more byte + 13, 14 two more bytes + 269.
#[inline(always)]
fn extension(bytes: &[u8], nibble: u8) -> Option<(u32, &[u8])> {
    match nibble {
        0..=12 => Some((u32::from(nibble), bytes)),
        13 => bytes.split_first().map(|(&b, rest)| (u32::from(b) + 13, rest)),
        _ => bytes
            .split_first_chunk()
            .map(|(ext, rest)| (u32::from(u16::from_be_bytes(*ext)) + 269, rest)),
    }
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

    /// Decodes any header shape through the crate's decoder: the fast path, then the rest.
    fn decode(bytes: &[u8]) -> Result<(u32, usize, usize), Error> {
        match one_byte_header(bytes[0]) {
            Some((delta, len)) => Ok((delta, len, 1)),
            None => decode_extended_header(&bytes[1..], bytes[0])
                .map(|(delta, len, rest)| (delta, len, bytes.len() - rest.len())),
        }
    }

    /// The RFC 7252 section 3.1 reading of one header, written out plainly as the oracle.
    fn reference(bytes: &[u8]) -> Result<(u32, usize, usize), Error> {
        let (d, l) = (bytes[0] >> 4, bytes[0] & 0x0f);
        if d == 15 {
            return Err(Error::ReservedDeltaNibble15);
        }
        if l == 15 {
            return Err(Error::ReservedLengthNibble15);
        }
        let mut at = 1;
        let mut value = |nibble: u8| -> Result<u32, Error> {
            let need = match nibble {
                13 => 1,
                14 => 2,
                _ => return Ok(u32::from(nibble)),
            };
            let ext = bytes.get(at..at + need).ok_or(Error::ExtendedFieldTruncated)?;
            at += need;
            Ok(if need == 1 {
                u32::from(ext[0]) + 13
            } else {
                u32::from(ext[0]) * 256 + u32::from(ext[1]) + 269
            })
        };
        let delta = value(d)?;
        let len = value(l)?;
        Ok((delta, len as usize, at))
    }

    #[test]
    fn test_header_roundtrip() {
        for value in [0u32, 12, 13, 268, 269, 65_535, MAX_VALUE_LEN as u32] {
            let (n, ext, ext_len) = encode_nibble(value);
            let mut bytes = vec![n << 4 | n];
            bytes.extend_from_slice(&ext[..ext_len]);
            bytes.extend_from_slice(&ext[..ext_len]);
            assert_eq!(decode(&bytes), Ok((value, value as usize, bytes.len())));
        }
    }

    #[test]
    fn test_every_header_shape_decodes_as_the_rfc_reads_it() {
        for byte in 0..=255u8 {
            // Up to four extension bytes: a 14 nibble for both the delta and the length.
            for ext in [[0u8, 0, 9, 1], [7, 200, 9, 250], [255, 255, 255, 255], [0xfe, 0xf2, 0, 1]]
            {
                for len in 1..=5 {
                    let bytes = [&[byte][..], &ext[..len - 1]].concat();
                    assert_eq!(decode(&bytes), reference(&bytes), "{bytes:02x?}");
                }
            }
        }
    }

    #[test]
    fn test_errors_in_rfc_order() {
        // Both nibbles reserved: the delta is reported first.
        assert_eq!(decode(&[0xff]), Err(Error::ReservedDeltaNibble15));
        // A reserved length nibble is reported before a missing delta extension.
        assert_eq!(decode(&[0xdf]), Err(Error::ReservedLengthNibble15));
        assert_eq!(decode(&[0xd0]), Err(Error::ExtendedFieldTruncated));
        assert_eq!(decode(&[0x0e, 0x01]), Err(Error::ExtendedFieldTruncated));
        assert_eq!(decode(&[0xdd, 0x00]), Err(Error::ExtendedFieldTruncated));
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

    #[test]
    fn test_definition_is_the_table() {
        for def in &KNOWN {
            assert_eq!(definition(def.number), Some(def));
        }
        for number in 0..=u16::MAX {
            assert_eq!(definition(number), KNOWN.iter().find(|d| d.number == number));
        }
    }
}
