//! CoAP over UDP (RFC 7252 section 3): a borrowed, validated view of one datagram.
//!
//! ```text
//!   0                   1                   2                   3
//!   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |Ver| T |  TKL  |      Code     |          Message ID           |
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |   Token (if any, TKL bytes) ...
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |   Options (if any) ...
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |1 1 1 1 1 1 1 1|    Payload (if any) ...
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Message::parse`] validates the whole datagram in one pass and returns a [`Message`] whose
//! token, options and payload borrow from the input. After it returns `Ok`:
//!
//! - no accessor panics;
//! - [`Message::options`] walks the options lazily, without allocating, and yields every option
//!   exactly as on the wire (iteration cannot fail: it was checked at parse time).
//!
//! A caller that wants every option anyway uses [`Message::parse_with`]: the same validation,
//! handing each option to a closure as the pass decodes it, so the options are walked once
//! instead of twice (parse, then `options`); it costs about what a hand-written validating walk
//! costs (`benches/wire.rs`).
//!
//! Format errors (RFC 7252 section 3 and 3.1) are reported as one [`Error`] variant per reason,
//! in the order the parser meets them: header, version, TKL, the Empty-message rule, token, then
//! each option (header byte, delta extension, length extension, number overflow, value) and the
//! payload marker.
//!
//! Option *semantics* (recognised or not, value length in range, repeated) are not format errors:
//! they are answered by [`Message::first_unrecognised_critical`] and the typed accessors, which
//! follow RFC 7252 sections 5.4.1, 5.4.3 and 5.4.5 (see [`super::option`]).

use core::fmt;

use super::option;

/// The maximum token length (RFC 7252 section 3: TKL 9..15 are reserved).
pub const MAX_TOKEN_LEN: usize = 8;

/// The fixed header's layout (RFC 7252 section 3, the picture above), in one place for
/// [`Message::parse`] and [`super::writer::Writer`] (smoltcp's `mod field`).
pub(crate) mod field {
    /// The fixed header's length; the token follows it.
    pub const HEADER_LEN: usize = 4;
    /// Byte 0: Ver (2 bits) | T (2 bits) | TKL (4 bits).
    pub const FIRST: usize = 0;
    /// Byte 1: the code, `c.dd`.
    pub const CODE: usize = 1;
    /// Bytes 2..4: the Message ID, big endian.
    pub const MESSAGE_ID: core::ops::Range<usize> = 2..4;
    /// The only version RFC 7252 defines.
    pub const VERSION: u8 = 1;

    /// Byte 0 from its three fields (`ty` is the 2-bit type, `tkl` at most 15).
    pub const fn first(ty: u8, tkl: u8) -> u8 {
        VERSION << 6 | (ty & 0b11) << 4 | (tkl & 0x0f)
    }

    /// The version bits of byte 0.
    pub const fn version(first: u8) -> u8 {
        first >> 6
    }

    /// The type bits of byte 0.
    pub const fn ty(first: u8) -> u8 {
        (first >> 4) & 0b11
    }

    /// The token length bits of byte 0 (9..15 are reserved).
    pub const fn tkl(first: u8) -> u8 {
        first & 0x0f
    }
}

/// Why a datagram is not a well-formed CoAP message. One variant per reason; each maps to the
/// stable label returned by [`Error::as_str`] (used in metrics and by `doxm-gate decode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// Fewer than the 4 bytes of the fixed header.
    #[error("datagram shorter than the 4-byte CoAP header")]
    HeaderTruncated,
    /// Version field other than 1 (RFC 7252 section 3: such messages are silently ignored).
    #[error("CoAP version is not 1")]
    UnknownVersion,
    /// Token length 9..15, reserved by RFC 7252 section 3.
    #[error("token length 9..15 is reserved")]
    ReservedTkl,
    /// Code 0.00 (Empty) with a token, options or payload (RFC 7252 section 4.1).
    #[error("Empty message (code 0.00) carries a token, options or payload")]
    EmptyMessageNotEmpty,
    /// The datagram ends inside the token.
    #[error("datagram ends inside the token")]
    TokenTruncated,
    /// A 0xFF payload marker with no payload after it (RFC 7252 section 3).
    #[error("payload marker 0xFF followed by no payload")]
    PayloadMarkerWithoutPayload,
    /// Option delta nibble 15 in a byte other than the payload marker (RFC 7252 section 3.1).
    #[error("option delta nibble 15 is reserved")]
    ReservedDeltaNibble15,
    /// Option length nibble 15 (RFC 7252 section 3.1).
    #[error("option length nibble 15 is reserved")]
    ReservedLengthNibble15,
    /// The datagram ends inside an extended option delta or length.
    #[error("datagram ends inside an extended option delta or length")]
    ExtendedFieldTruncated,
    /// The running option number passes 65535.
    #[error("option number passes 65535")]
    OptionNumberOverflow,
    /// The datagram ends inside an option value.
    #[error("datagram ends inside an option value")]
    OptionValueTruncated,
}

impl Error {
    /// Every variant, in declaration order (for metrics tables).
    pub const ALL: [Error; 11] = [
        Error::HeaderTruncated,
        Error::UnknownVersion,
        Error::ReservedTkl,
        Error::EmptyMessageNotEmpty,
        Error::TokenTruncated,
        Error::PayloadMarkerWithoutPayload,
        Error::ReservedDeltaNibble15,
        Error::ReservedLengthNibble15,
        Error::ExtendedFieldTruncated,
        Error::OptionNumberOverflow,
        Error::OptionValueTruncated,
    ];

    /// The stable, kebab-case label of this reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::HeaderTruncated => "header-truncated",
            Error::UnknownVersion => "unknown-version",
            Error::ReservedTkl => "reserved-tkl",
            Error::EmptyMessageNotEmpty => "empty-message-not-empty",
            Error::TokenTruncated => "token-truncated",
            Error::PayloadMarkerWithoutPayload => "payload-marker-without-payload",
            Error::ReservedDeltaNibble15 => "reserved-delta-nibble-15",
            Error::ReservedLengthNibble15 => "reserved-length-nibble-15",
            Error::ExtendedFieldTruncated => "extended-field-truncated",
            Error::OptionNumberOverflow => "option-number-overflow",
            Error::OptionValueTruncated => "option-value-truncated",
        }
    }
}

/// The message type (RFC 7252 section 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// CON: requires an acknowledgement.
    Confirmable = 0,
    /// NON: no acknowledgement; what multicast requests must be (RFC 7252 section 8.1).
    NonConfirmable = 1,
    /// ACK: acknowledges a CON, possibly carrying a piggybacked response.
    Acknowledgement = 2,
    /// RST: rejects a message.
    Reset = 3,
}

impl MessageType {
    /// The type encoded in the two `T` bits.
    pub const fn from_bits(bits: u8) -> MessageType {
        match bits & 0b11 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }

    /// The short name used by RFC 7252: `CON`, `NON`, `ACK` or `RST`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageType::Confirmable => "CON",
            MessageType::NonConfirmable => "NON",
            MessageType::Acknowledgement => "ACK",
            MessageType::Reset => "RST",
        }
    }
}

/// A CoAP code, `c.dd`: 3 bits of class and 5 bits of detail (RFC 7252 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(u8);

impl Code {
    /// 0.00 Empty.
    pub const EMPTY: Code = Code::new(0, 0);
    /// 0.01 GET.
    pub const GET: Code = Code::new(0, 1);
    /// 0.02 POST.
    pub const POST: Code = Code::new(0, 2);
    /// 0.03 PUT.
    pub const PUT: Code = Code::new(0, 3);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code::new(0, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.02 Bad Option.
    pub const BAD_OPTION: Code = Code::new(4, 2);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);

    /// The code `class.detail`; `class` is taken modulo 8 and `detail` modulo 32.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class & 0x07) << 5 | (detail & 0x1f))
    }

    /// The code from its wire byte.
    pub const fn from_byte(byte: u8) -> Code {
        Code(byte)
    }

    /// The wire byte.
    pub const fn byte(self) -> u8 {
        self.0
    }

    /// The class, 0..=7 (0 request, 2 success, 4 client error, 5 server error).
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail, 0..=31.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// `true` for request codes (class 0, detail not 0).
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

/// One option as it appears on the wire: its number (the running sum of deltas) and raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoapOption<'a> {
    /// The option number.
    pub number: u16,
    /// The raw value bytes.
    pub value: &'a [u8],
}

impl CoapOption<'_> {
    /// The value as an unsigned integer (RFC 7252 section 3.2: big endian, shortest form; an
    /// empty value is 0). `None` when longer than 4 bytes.
    pub fn uint(&self) -> Option<u32> {
        if self.value.len() > 4 {
            return None;
        }
        Some(self.value.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)))
    }
}

/// A validated CoAP message borrowing from the datagram it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    ty: MessageType,
    code: Code,
    message_id: u16,
    token: &'a [u8],
    /// The option bytes, without the payload marker; validated by `parse`.
    options: &'a [u8],
    payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses and fully validates one datagram.
    ///
    /// # Errors
    /// The first format error met, see [`Error`].
    #[inline]
    pub fn parse(datagram: &'a [u8]) -> Result<Message<'a>, Error> {
        Message::parse_with(datagram, |_| {})
    }

    /// Parses and fully validates one datagram like [`Message::parse`], and hands every option
    /// to `visit` as the validation pass meets it, in wire order.
    ///
    /// This is one pass over the options where `parse` then [`Message::options`] is two: the
    /// validation has decoded each option anyway, so a caller that wants all of them (the
    /// policy's request facts, a checksum) gets them at no extra walk. The message returned is
    /// the same as `parse`'s, and its accessors still work afterwards.
    ///
    /// `visit` only ever sees well-formed options (number within 16 bits, value within the
    /// datagram), but on `Err` it may have seen the options before the malformed one: discard
    /// what it gathered.
    ///
    /// ```
    /// use doxm_gate::wire::fixtures::OBT_REQUEST;
    /// use doxm_gate::wire::Message;
    ///
    /// let mut numbers = Vec::new();
    /// let msg = Message::parse_with(&OBT_REQUEST, |opt| numbers.push(opt.number)).unwrap();
    /// assert_eq!(numbers, [11, 11, 11, 15, 17, 2049]);
    /// assert!(msg.options().map(|opt| opt.number).eq(numbers));
    /// ```
    ///
    /// # Errors
    /// The first format error met, see [`Error`]: the same as `parse`.
    // Always inlined, so that the visitor runs in the loop and the message's fields stay in
    // registers: out of line, `parse` then `options` measured up to 1.2x slower.
    #[inline(always)]
    pub fn parse_with(
        datagram: &'a [u8],
        visit: impl FnMut(CoapOption<'a>),
    ) -> Result<Message<'a>, Error> {
        let Some((header, rest)) = datagram.split_first_chunk::<{ field::HEADER_LEN }>() else {
            return Err(Error::HeaderTruncated);
        };
        let (first, code) = (header[field::FIRST], header[field::CODE]);
        let [mid_hi, mid_lo] = [header[field::MESSAGE_ID.start], header[field::MESSAGE_ID.end - 1]];
        let message_id = u16::from_be_bytes([mid_hi, mid_lo]);
        if field::version(first) != field::VERSION {
            return Err(Error::UnknownVersion);
        }
        let token_len = usize::from(field::tkl(first));
        if token_len > MAX_TOKEN_LEN {
            return Err(Error::ReservedTkl);
        }
        let code = Code::from_byte(code);
        if code == Code::EMPTY && (token_len != 0 || !rest.is_empty()) {
            return Err(Error::EmptyMessageNotEmpty);
        }
        let Some((token, rest)) = rest.split_at_checked(token_len) else {
            return Err(Error::TokenTruncated);
        };
        let (options, payload) = walk_options(rest, visit)?;
        Ok(Message {
            ty: MessageType::from_bits(field::ty(first)),
            code,
            message_id,
            token,
            options,
            payload,
        })
    }

    /// The message type.
    pub fn ty(&self) -> MessageType {
        self.ty
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The Message ID (used for deduplication and to match ACKs).
    pub fn message_id(&self) -> u16 {
        self.message_id
    }

    /// The token, 0..=8 bytes.
    pub fn token(&self) -> &'a [u8] {
        self.token
    }

    /// The payload; empty when the message has none.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// All options in wire order (ascending numbers, repeats included), lazily.
    ///
    /// This decodes the options a second time (the first was `parse`'s validation); to read
    /// every option of a datagram, [`Message::parse_with`] does both in one pass.
    pub fn options(&self) -> Options<'a> {
        Options { rest: self.options, number: 0 }
    }

    /// The values of every occurrence of option `number`, in wire order.
    pub fn values(&self, number: u16) -> Values<'a> {
        Values { options: self.options(), number }
    }

    /// The Uri-Path segments (option 11), in order.
    pub fn uri_path(&self) -> Values<'a> {
        self.values(option::URI_PATH)
    }

    /// The Uri-Query values (option 15), in order; see [`super::query`] to split them.
    pub fn uri_query(&self) -> Values<'a> {
        self.values(option::URI_QUERY)
    }

    /// `true` when the Uri-Path is exactly `segments` (case-sensitive, RFC 7252 section 6.4;
    /// an empty trailing segment makes it a different path).
    pub fn path_is(&self, segments: &[&[u8]]) -> bool {
        let mut path = self.uri_path();
        segments.iter().all(|want| path.next() == Some(*want)) && path.next().is_none()
    }

    /// Content-Format (12), if present with a valid length.
    pub fn content_format(&self) -> Option<u16> {
        self.single_uint(option::CONTENT_FORMAT).map(|v| v as u16)
    }

    /// Accept (17), if present with a valid length.
    pub fn accept(&self) -> Option<u16> {
        self.single_uint(option::ACCEPT).map(|v| v as u16)
    }

    /// No-Response (258, RFC 7967), if present with a valid length.
    pub fn no_response(&self) -> Option<u8> {
        self.single_uint(option::NO_RESPONSE).map(|v| v as u8)
    }

    /// OCF-Accept-Content-Format-Version (2049), if present with a valid length.
    pub fn ocf_accept_content_format_version(&self) -> Option<u16> {
        self.single_uint(option::OCF_ACCEPT_CONTENT_FORMAT_VERSION).map(|v| v as u16)
    }

    /// OCF-Content-Format-Version (2053), if present with a valid length.
    pub fn ocf_content_format_version(&self) -> Option<u16> {
        self.single_uint(option::OCF_CONTENT_FORMAT_VERSION).map(|v| v as u16)
    }

    /// The number of the first critical option the gate must treat as unrecognised, if any.
    ///
    /// That is an odd option number outside [`option::KNOWN`], a known critical option whose
    /// length is out of range (RFC 7252 section 5.4.3), or a supernumerary occurrence of a
    /// non-repeatable critical option (section 5.4.5). A request with one fails pre-filter 3:
    /// 4.02 on a unicast CON, silence otherwise.
    pub fn first_unrecognised_critical(&self) -> Option<u16> {
        let mut previous = None;
        for opt in self.options() {
            if option::is_unrecognised_critical(opt.number, opt.value.len(), previous) {
                return Some(opt.number);
            }
            previous = Some(opt.number);
        }
        None
    }

    /// The value of a known non-repeatable uint option: its first occurrence, when that has a
    /// valid length (see [`option::single_uint`]).
    fn single_uint(&self, number: u16) -> Option<u32> {
        option::single_uint(number, self.values(number).next()?)
    }
}

/// Splits the bytes after the token into validated options and the payload, handing each
/// option to `visit` once it is known to be well-formed.
///
/// This is the one validation pass, and the hot loop of the parser. Nearly every option a
/// discovery carries has a one-byte header (both nibbles below 13), which takes the shortest
/// path: a table test, an add, a compare and a split. Headers with extensions and the payload
/// marker go through the longer path ([`option::decode_extended_header`]), which also names a
/// malformed header's reason. Errors come in RFC 7252 section 3.1 order for each option: header
/// byte, delta extension, length extension, number, value.
#[inline(always)]
fn walk_options<'a>(
    input: &'a [u8],
    mut visit: impl FnMut(CoapOption<'a>),
) -> Result<(&'a [u8], &'a [u8]), Error> {
    let mut rest = input;
    let mut number: u32 = 0;
    while let Some((&byte, after)) = rest.split_first() {
        let (delta, len, after) = match option::one_byte_header(byte) {
            Some((delta, len)) => (delta, len, after),
            None if byte == PAYLOAD_MARKER => {
                if after.is_empty() {
                    return Err(Error::PayloadMarkerWithoutPayload);
                }
                let options = input.get(..input.len() - rest.len()).unwrap_or_default();
                return Ok((options, after));
            }
            None => option::decode_extended_header(after, byte)?,
        };
        number += delta;
        if number > option::MAX_NUMBER {
            return Err(Error::OptionNumberOverflow);
        }
        let Some((value, next)) = after.split_at_checked(len) else {
            return Err(Error::OptionValueTruncated);
        };
        visit(CoapOption { number: number as u16, value });
        rest = next;
    }
    Ok((input, &[]))
}

/// The byte that ends the options and starts the payload (RFC 7252 section 3).
const PAYLOAD_MARKER: u8 = 0xff;

/// Iterator over a message's options; see [`Message::options`].
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
    number: u16,
}

impl<'a> Iterator for Options<'a> {
    type Item = CoapOption<'a>;

    /// The same decoder as the validation pass, trusting it: `parse` proved every header and
    /// value well-formed, so the decode has no error to name and the `None` arms (which keep
    /// the iterator total without `unwrap`) are never taken.
    #[inline]
    fn next(&mut self) -> Option<CoapOption<'a>> {
        let (&byte, after) = self.rest.split_first()?;
        let (delta, len, after) = match option::one_byte_header(byte) {
            Some(header) => (header.0, header.1, after),
            None => option::decode_extended_header(after, byte).unwrap_or((0, usize::MAX, after)),
        };
        let Some((value, rest)) = after.split_at_checked(len) else {
            self.rest = &[];
            return None;
        };
        // Validation bounded the running number by 65535: this never wraps.
        self.number = self.number.wrapping_add(delta as u16);
        self.rest = rest;
        Some(CoapOption { number: self.number, value })
    }
}

impl core::iter::FusedIterator for Options<'_> {}

/// Iterator over the values of one option number; see [`Message::values`].
///
/// Options are in ascending order, so the walk stops at the first larger number.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    options: Options<'a>,
    number: u16,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        for opt in self.options.by_ref() {
            if opt.number == self.number {
                return Some(opt.value);
            }
            if opt.number > self.number {
                self.options.rest = &[];
                return None;
            }
        }
        None
    }
}

impl core::iter::FusedIterator for Values<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fixtures::OBT_REQUEST;

    #[test]
    fn test_parse_obt_request() {
        let msg = Message::parse(&OBT_REQUEST).unwrap();
        assert_eq!(msg.ty(), MessageType::NonConfirmable);
        assert_eq!(msg.code(), Code::GET);
        assert_eq!(msg.message_id(), 0xf1cd);
        assert_eq!(msg.token(), &[0x61, 0x38, 0x7b, 0x70, 0x99, 0x60, 0x2b, 0x0b]);
        assert!(msg.path_is(&[b"oic", b"sec", b"doxm"]));
        assert!(!msg.path_is(&[b"oic", b"sec"]));
        assert_eq!(msg.uri_query().collect::<Vec<_>>(), [b"owned=FALSE"]);
        assert_eq!(msg.accept(), Some(10_000));
        assert_eq!(msg.ocf_accept_content_format_version(), Some(2048));
        assert_eq!(msg.content_format(), None);
        assert_eq!(msg.first_unrecognised_critical(), None);
        assert!(msg.payload().is_empty());
        let numbers: Vec<u16> = msg.options().map(|o| o.number).collect();
        assert_eq!(numbers, [11, 11, 11, 15, 17, 2049]);
    }

    #[test]
    fn test_code_display() {
        assert_eq!(Code::GET.to_string(), "0.01");
        assert_eq!(Code::CONTENT.to_string(), "2.05");
        assert_eq!(Code::NOT_ACCEPTABLE.to_string(), "4.06");
        assert_eq!(Code::from_byte(0xff).to_string(), "7.31");
    }

    #[test]
    fn test_error_labels_unique() {
        let mut labels: Vec<&str> = Error::ALL.iter().map(|e| e.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Error::ALL.len());
    }
}
