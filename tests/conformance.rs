//! CoAP conformance of `wire::Message::parse` and its accessors, written from RFC 7252.
//!
//! One case per `case!` invocation: a name, the RFC 7252 clause it checks, the datagram (hex
//! digits, spaces allowed, or a builder expression for long inputs) and the expected outcome:
//! either `Err(Variant)` or `Ok { .. }` listing the fields to check (`ty`, `code`, `mid`, `token`,
//! `options`, `payload`) and optional further assertions in `then: |m| { .. }`. The writer tests
//! at the end check the same clauses in the encoding direction.
//!
//! Every expected value below was worked out by hand from the RFC text, never taken from the
//! parser's output. Byte layout reminders (RFC 7252 s3 and s3.1):
//!
//! - first byte `01 TT KKKK`: 0x40 CON, 0x50 NON, 0x60 ACK, 0x70 RST with TKL 0;
//! - option byte `DDDD LLLL`; nibble 13 = one extension byte + 13, 14 = two bytes + 269;
//! - Uri-Path 11 = `b?` from 0, Uri-Query 15 = `d? 02`, Accept 17 = `d? 04`,
//!   No-Response 258 = `d? f5`, OCF 2049 = `e? 06f4`, 2051 = `e? 06f6`, 2053 = `e? 06f8`.

use doxm_gate::wire::{option, query, Code, Error, Message, MessageType, WriteError, Writer};

const CON: MessageType = MessageType::Confirmable;
const NON: MessageType = MessageType::NonConfirmable;
const ACK: MessageType = MessageType::Acknowledgement;
const RST: MessageType = MessageType::Reset;

/// Hex digits to bytes; whitespace is ignored so cases can group fields.
fn h(digits: &str) -> Vec<u8> {
    let compact: String = digits.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    hex::decode(compact).expect("test vector is valid hex")
}

/// Concatenates byte strings (for datagrams with long option values).
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// What a case gives as its input: hex text or ready bytes.
trait Input {
    fn into_bytes(self) -> Vec<u8>;
}

impl Input for &str {
    fn into_bytes(self) -> Vec<u8> {
        h(self)
    }
}

impl Input for Vec<u8> {
    fn into_bytes(self) -> Vec<u8> {
        self
    }
}

/// `/oic/sec/doxm` as Uri-Path segments.
const DOXM_PATH: [&[u8]; 3] = [b"oic", b"sec", b"doxm"];

macro_rules! case {
    ($name:ident, $clause:literal, $input:expr, Err($err:ident)) => {
        #[test]
        fn $name() {
            let bytes = Input::into_bytes($input);
            assert_eq!(
                Message::parse(&bytes).map(|_| ()),
                Err(Error::$err),
                "RFC 7252 {}: {}",
                $clause,
                hex::encode(&bytes)
            );
        }
    };
    ($name:ident, $clause:literal, $input:expr, Ok { $($checks:tt)* }) => {
        #[test]
        fn $name() {
            let bytes = Input::into_bytes($input);
            let msg = match Message::parse(&bytes) {
                Ok(msg) => msg,
                Err(err) => panic!("RFC 7252 {}: expected Ok, got {err:?}", $clause),
            };
            case! { @check msg, $clause; $($checks)* }
        }
    };
    (@check $m:ident, $clause:literal;) => {};
    (@check $m:ident, $clause:literal; ty: $v:expr $(, $($rest:tt)*)?) => {
        assert_eq!($m.ty(), $v, "RFC 7252 {}: type", $clause);
        case! { @check $m, $clause; $($($rest)*)? }
    };
    (@check $m:ident, $clause:literal; code: $v:expr $(, $($rest:tt)*)?) => {
        assert_eq!($m.code(), $v, "RFC 7252 {}: code", $clause);
        case! { @check $m, $clause; $($($rest)*)? }
    };
    (@check $m:ident, $clause:literal; mid: $v:expr $(, $($rest:tt)*)?) => {
        assert_eq!($m.message_id(), $v, "RFC 7252 {}: message id", $clause);
        case! { @check $m, $clause; $($($rest)*)? }
    };
    (@check $m:ident, $clause:literal; token: $v:expr $(, $($rest:tt)*)?) => {
        assert_eq!($m.token(), &$v[..], "RFC 7252 {}: token", $clause);
        case! { @check $m, $clause; $($($rest)*)? }
    };
    (@check $m:ident, $clause:literal; payload: $v:expr $(, $($rest:tt)*)?) => {
        assert_eq!($m.payload(), &$v[..], "RFC 7252 {}: payload", $clause);
        case! { @check $m, $clause; $($($rest)*)? }
    };
    (@check $m:ident, $clause:literal;
        options: [$(($n:expr, $v:expr)),* $(,)?] $(, $($rest:tt)*)?) => {
        let got: Vec<(u16, Vec<u8>)> = $m.options().map(|o| (o.number, o.value.to_vec())).collect();
        let want: Vec<(u16, Vec<u8>)> = vec![$(($n, $v.to_vec())),*];
        assert_eq!(got, want, "RFC 7252 {}: options", $clause);
        case! { @check $m, $clause; $($($rest)*)? }
    };
    (@check $m:ident, $clause:literal; then: |$bind:ident| $body:block $(, $($rest:tt)*)?) => {
        {
            let $bind = &$m;
            $body
        }
        case! { @check $m, $clause; $($($rest)*)? }
    };
}

// --- s3: the fixed header ------------------------------------------------------------------------

case! { header_truncated_0_bytes, "s3 header is 4 bytes", "", Err(HeaderTruncated) }
case! { header_truncated_1_byte, "s3 header is 4 bytes", "40", Err(HeaderTruncated) }
case! { header_truncated_2_bytes, "s3 header is 4 bytes", "40 01", Err(HeaderTruncated) }
case! { header_truncated_3_bytes, "s3 header is 4 bytes", "40 01 12", Err(HeaderTruncated) }
case! {
    header_only_con_get, "s3 header", "40 01 1234",
    Ok { ty: CON, code: Code::GET, mid: 0x1234, token: b"", options: [], payload: b"" }
}
case! {
    message_id_big_endian, "s3 Message ID network byte order", "50 01 f1cd",
    Ok { ty: NON, mid: 61_901 }
}
case! { message_id_max, "s3 Message ID 16 bits", "50 01 ffff", Ok { mid: 65_535 } }
case! {
    type_ack_piggybacked_2_05, "s3 T=2 ACK, s5.2.1 piggybacked", "61 45 0007 aa ff 6869",
    Ok { ty: ACK, code: Code::CONTENT, mid: 7, token: [0xaa], options: [], payload: b"hi" }
}
case! {
    type_rst_empty, "s3 T=3 RST, s4.2", "70 00 0007",
    Ok { ty: RST, code: Code::EMPTY, mid: 7, token: b"", options: [], payload: b"" }
}
case! {
    code_class_detail, "s3 Code c.dd 3+5 bits", "40 a4 0001",
    Ok { then: |m| { assert_eq!((m.code().class(), m.code().detail()), (5, 4)); } }
}
case! {
    code_reserved_class_7_is_not_a_format_error, "s3 Code (reserved classes), s4.3 reject",
    "50 ff 0001",
    Ok { then: |m| { assert_eq!((m.code().class(), m.code().detail()), (7, 31)); } }
}

// --- s3: version ---------------------------------------------------------------------------------

case! { version_0, "s3 Ver MUST be 1", "00 01 0001", Err(UnknownVersion) }
case! { version_2, "s3 Ver MUST be 1", "80 01 0001", Err(UnknownVersion) }
case! { version_3, "s3 Ver MUST be 1", "c0 01 0001", Err(UnknownVersion) }
case! {
    version_2_with_options_and_payload, "s3 Ver MUST be 1", "90 01 0001 b1 61 ff 00",
    Err(UnknownVersion)
}

// --- s3: token length ----------------------------------------------------------------------------

case! {
    tkl_8_max_token, "s3 TKL 0-8", "48 01 0001 0102030405060708",
    Ok { token: [1, 2, 3, 4, 5, 6, 7, 8], options: [], payload: b"" }
}
case! {
    tkl_9_reserved, "s3 TKL 9-15 format error", "49 01 0001 010203040506070809",
    Err(ReservedTkl)
}
case! {
    tkl_10_reserved, "s3 TKL 9-15 format error", "4a 01 0001 0102030405060708090a",
    Err(ReservedTkl)
}
case! {
    tkl_11_reserved, "s3 TKL 9-15 format error", "5b 01 0001 0102030405060708090a0b",
    Err(ReservedTkl)
}
case! {
    tkl_12_reserved, "s3 TKL 9-15 format error", "6c 45 0001 0102030405060708090a0b0c",
    Err(ReservedTkl)
}
case! {
    tkl_13_reserved, "s3 TKL 9-15 format error", "4d 01 0001 0102030405060708090a0b0c0d",
    Err(ReservedTkl)
}
case! {
    tkl_14_reserved, "s3 TKL 9-15 format error", "4e 01 0001 0102030405060708090a0b0c0d0e",
    Err(ReservedTkl)
}
case! {
    tkl_15_reserved, "s3 TKL 9-15 format error", "4f 01 0001 0102030405060708090a0b0c0d0e0f",
    Err(ReservedTkl)
}
case! { token_truncated_tkl_1, "s3 Token (TKL bytes)", "41 01 0001", Err(TokenTruncated) }
case! {
    token_truncated_tkl_8_by_one, "s3 Token (TKL bytes)", "48 01 0001 01020304050607",
    Err(TokenTruncated)
}
case! {
    token_fills_datagram, "s3 Token", "42 01 0001 abcd",
    Ok { token: [0xab, 0xcd], options: [], payload: b"" }
}

// --- s4.1 / s4.2 / s4.3: the Empty message -------------------------------------------------------

case! {
    empty_ack, "s4.1 Empty 0.00, s4.2 empty ACK", "60 00 4242",
    Ok { ty: ACK, code: Code::EMPTY, mid: 0x4242, token: b"", options: [], payload: b"" }
}
case! {
    empty_rst, "s4.1 Empty 0.00, s4.2 RST", "70 00 4242",
    Ok { ty: RST, code: Code::EMPTY, mid: 0x4242, options: [], payload: b"" }
}
case! {
    empty_con_ping, "s4.1 Empty 0.00, s4.3 CoAP ping", "40 00 0001",
    Ok { ty: CON, code: Code::EMPTY, options: [] }
}
case! { empty_with_token, "s4.1 Empty: TKL MUST be 0", "61 00 0001 aa", Err(EmptyMessageNotEmpty) }
case! {
    empty_with_option, "s4.1 Empty: no bytes after Message ID", "60 00 0001 b1 61",
    Err(EmptyMessageNotEmpty)
}
case! {
    empty_with_payload, "s4.1 Empty: no bytes after Message ID", "70 00 0001 ff 00",
    Err(EmptyMessageNotEmpty)
}
case! {
    empty_with_bare_marker, "s4.1 Empty: no bytes after Message ID", "60 00 0001 ff",
    Err(EmptyMessageNotEmpty)
}
case! {
    empty_with_malformed_option_byte, "s4.1 Empty: no bytes after Message ID", "60 00 0001 f0",
    Err(EmptyMessageNotEmpty)
}

// --- s3: payload marker --------------------------------------------------------------------------

case! {
    payload_marker_without_payload, "s3 marker followed by zero-length payload", "40 01 0001 ff",
    Err(PayloadMarkerWithoutPayload)
}
case! {
    payload_marker_without_payload_after_option, "s3 marker + zero-length payload",
    "40 01 0001 b1 61 ff",
    Err(PayloadMarkerWithoutPayload)
}
case! {
    payload_after_token, "s3 Payload", "41 02 0001 aa ff 6869",
    Ok { code: Code::POST, token: [0xaa], options: [], payload: b"hi" }
}
case! {
    payload_after_options, "s3 Payload", "40 01 0001 b3 6f6963 ff 0102",
    Ok { options: [(11, b"oic")], payload: [1, 2] }
}
case! {
    payload_single_ff_byte, "s3 Payload is opaque", "40 01 0001 ff ff",
    Ok { options: [], payload: [0xff] }
}
case! {
    payload_is_not_parsed_as_options, "s3 Payload extends to the end", "40 01 0001 ff f0 0f e0",
    Ok { options: [], payload: [0xf0, 0x0f, 0xe0] }
}

// --- s3.1: option delta and length, the 13/14 extensions -----------------------------------------

case! {
    option_delta_0_repeats_number, "s3.1 delta 0 = same number", "40 01 0001 b1 61 01 62",
    Ok { options: [(11, b"a"), (11, b"b")], payload: b"" }
}
case! {
    option_delta_12_length_12, "s3.1 nibbles 0-12 literal",
    "40 01 0001 cc 000102030405060708090a0b",
    Ok { options: [(12, h("000102030405060708090a0b"))], payload: b"" }
}
case! {
    option_delta_13_ext_0, "s3.1 delta 13: 8-bit ext + 13", "40 01 0001 d0 00",
    Ok { options: [(13, b"")] }
}
case! {
    option_delta_13_ext_255_is_268, "s3.1 delta 13: 8-bit ext + 13", "40 01 0001 d0 ff",
    Ok { options: [(268, b"")] }
}
case! {
    option_delta_14_ext_0_is_269, "s3.1 delta 14: 16-bit ext + 269", "40 01 0001 e0 0000",
    Ok { options: [(269, b"")] }
}
case! {
    option_number_65535_by_delta_14, "s3.1 delta 14: 0xfef2 + 269 = 65535", "40 01 0001 e0 fef2",
    Ok { options: [(65_535, b"")], payload: b"" }
}
case! {
    option_number_65535_by_running_sum, "s3.1 number = sum of deltas", "40 01 0001 d0 00 e0 fee5",
    Ok { options: [(13, b""), (65_535, b"")] }
}
case! {
    option_delta_overflow_by_one, "s3.1 delta 0xfef3 + 269 = 65536 > 65535", "40 01 0001 e0 fef3",
    Err(OptionNumberOverflow)
}
case! {
    option_delta_ext_ffff, "s3.1 delta 0xffff + 269 = 65804", "40 01 0001 e0 ffff",
    Err(OptionNumberOverflow)
}
case! {
    option_running_sum_overflow_by_one, "s3.1 65535 then delta 1", "40 01 0001 e0 fef2 10",
    Err(OptionNumberOverflow)
}
case! {
    option_running_sum_two_deltas, "s3.1 33037 + 33037 > 65535", "40 01 0001 e0 8000 e0 8000",
    Err(OptionNumberOverflow)
}
case! {
    option_length_13_ext_0, "s3.1 length 13: 8-bit ext + 13",
    "40 01 0001 bd 00 4142434445464748494a4b4c4d",
    Ok { options: [(11, b"ABCDEFGHIJKLM")] }
}
case! {
    option_delta_and_length_extensions_in_order, "s3.1 delta ext precedes length ext",
    "40 01 0001 dd 01 02 000102030405060708090a0b0c0d0e",
    Ok { options: [(14, h("000102030405060708090a0b0c0d0e"))], payload: b"" }
}
case! {
    option_length_268, "s3.1 length 13: 0xff + 13", cat(&[&h("40 01 0001 bd ff"), &[0x2f; 268]]),
    Ok { options: [(11, [0x2f; 268])], payload: b"" }
}
case! {
    option_length_269, "s3.1 length 14: 0x0000 + 269",
    cat(&[&h("40 01 0001 be 0000"), &[0x61; 269], &h("ff 01")]),
    Ok { options: [(11, [0x61; 269])], payload: [1] }
}
case! {
    option_both_14_extensions, "s3.1 delta 14 and length 14",
    cat(&[&h("40 01 0001 ee 0000 0001"), &[0x07; 270]]),
    Ok { options: [(269, [0x07; 270])] }
}
case! {
    option_length_65535, "s3.1 length 14: 0xfef2 + 269",
    cat(&[&h("40 01 0001 be fef2"), &vec![0x5a; 65_535]]),
    Ok { payload: b"", then: |m| {
            let opts: Vec<_> = m.options().collect();
            assert_eq!(opts.len(), 1);
            assert_eq!(opts[0].number, 11);
            assert_eq!(opts[0].value.len(), 65_535);
        } }
}
case! {
    option_length_max_65804, "s3.1 length 14: 0xffff + 269",
    cat(&[&h("40 01 0001 0e ffff"), &vec![0; 65_804], &h("ff 2a")]),
    Ok { payload: [0x2a], then: |m| {
            assert_eq!(m.options().map(|o| (o.number, o.value.len())).collect::<Vec<_>>(),
                [(0, 65_804)]);
        } }
}

// --- s3.1: nibble 15 -----------------------------------------------------------------------------

case! {
    delta_nibble_15, "s3.1 delta 15 reserved unless 0xff", "40 01 0001 f0",
    Err(ReservedDeltaNibble15)
}
case! {
    delta_nibble_15_with_length, "s3.1 delta 15 reserved unless 0xff", "40 01 0001 f1 61",
    Err(ReservedDeltaNibble15)
}
case! {
    delta_nibble_15_after_option, "s3.1 delta 15 reserved unless 0xff", "40 01 0001 b1 61 fe",
    Err(ReservedDeltaNibble15)
}
case! { length_nibble_15, "s3.1 length 15 reserved", "40 01 0001 bf", Err(ReservedLengthNibble15) }
case! {
    length_nibble_15_with_delta_0, "s3.1 length 15 reserved", "40 01 0001 0f 00",
    Err(ReservedLengthNibble15)
}
case! {
    length_nibble_15_with_delta_13, "s3.1 length 15 reserved", "40 01 0001 df 00",
    Err(ReservedLengthNibble15)
}
case! {
    ff_is_the_marker_not_nibble_15, "s3 0xff payload marker", "40 01 0001 b1 61 ff 0f",
    Ok { options: [(11, b"a")], payload: [0x0f] }
}

// --- s3.1: truncations ---------------------------------------------------------------------------

case! {
    delta_ext_1_byte_missing, "s3.1 delta 13 needs 1 byte", "40 01 0001 d0",
    Err(ExtendedFieldTruncated)
}
case! {
    delta_ext_2_bytes_missing, "s3.1 delta 14 needs 2 bytes", "40 01 0001 e0",
    Err(ExtendedFieldTruncated)
}
case! {
    delta_ext_2_bytes_one_present, "s3.1 delta 14 needs 2 bytes", "40 01 0001 e0 01",
    Err(ExtendedFieldTruncated)
}
case! {
    length_ext_1_byte_missing, "s3.1 length 13 needs 1 byte", "40 01 0001 bd",
    Err(ExtendedFieldTruncated)
}
case! {
    length_ext_2_bytes_missing, "s3.1 length 14 needs 2 bytes", "40 01 0001 be",
    Err(ExtendedFieldTruncated)
}
case! {
    length_ext_2_bytes_one_present, "s3.1 length 14 needs 2 bytes", "40 01 0001 be 00",
    Err(ExtendedFieldTruncated)
}
case! {
    length_ext_missing_after_delta_ext, "s3.1 delta ext then length ext", "40 01 0001 dd 00",
    Err(ExtendedFieldTruncated)
}
case! {
    value_truncated, "s3.1 Option Value of Option Length bytes", "40 01 0001 b3 6f69",
    Err(OptionValueTruncated)
}
case! {
    value_missing_entirely, "s3.1 Option Value of Option Length bytes", "40 01 0001 b1",
    Err(OptionValueTruncated)
}
case! {
    value_truncated_after_valid_option, "s3.1 Option Value", "40 01 0001 b1 61 04 6f",
    Err(OptionValueTruncated)
}
case! {
    value_truncated_length_13_ext, "s3.1 length 13 + 0 = 13 bytes",
    "40 01 0001 bd 00 000102030405060708090a0b",
    Err(OptionValueTruncated)
}
case! {
    value_truncated_length_269, "s3.1 length 14: 269 bytes",
    cat(&[&h("40 01 0001 be 0000"), &[0x61; 268]]),
    Err(OptionValueTruncated)
}
case! {
    value_truncated_ff_is_data, "s3.1 0xff inside a value is data", "40 01 0001 b5 61 ff",
    Err(OptionValueTruncated)
}

// --- s3.1: 0xff inside an option value -----------------------------------------------------------

case! {
    ff_inside_option_value, "s3.1 value bytes are opaque", "40 01 0001 b3 ffffff",
    Ok { options: [(11, [0xff, 0xff, 0xff])], payload: b"" }
}
case! {
    ff_inside_value_then_marker, "s3.1 value bytes, then s3 marker", "40 01 0001 b1 ff ff 01",
    Ok { options: [(11, [0xff])], payload: [1] }
}
case! {
    ff_inside_value_then_option, "s3.1 value bytes are opaque", "40 01 0001 b2 ff ff 41 2a",
    Ok { options: [(11, [0xff, 0xff]), (15, [0x2a])], payload: b"" }
}

// --- The documented error order: header, version, TKL, Empty rule, token, options, marker --------

case! {
    order_header_before_version, "s3 (short datagram with Ver 0)", "00 01 00",
    Err(HeaderTruncated)
}
case! { order_version_before_tkl, "s3 (Ver 2 and TKL 15)", "8f 01 0001", Err(UnknownVersion) }
case! { order_tkl_before_empty_rule, "s3 / s4.1 (TKL 15 on 0.00)", "4f 00 0001", Err(ReservedTkl) }
case! {
    order_empty_rule_before_token, "s4.1 / s3 (0.00, TKL 1, no token)", "41 00 0001",
    Err(EmptyMessageNotEmpty)
}
case! {
    order_length_nibble_before_delta_ext, "s3.1 (delta 14 with no ext, length 15)", "40 01 0001 ef",
    Err(ReservedLengthNibble15)
}
case! {
    order_extensions_before_overflow, "s3.1 (delta 65536, length ext missing)",
    "40 01 0001 ed fef3",
    Err(ExtendedFieldTruncated)
}
case! {
    order_overflow_before_value, "s3.1 (delta 65536, value missing)", "40 01 0001 e5 fef3",
    Err(OptionNumberOverflow)
}
case! {
    order_one_byte_overflow_before_later_nibble_15, "s3.1 (65535 + delta 1, then delta 15)",
    "40 01 0001 e0 fef2 10 f0",
    Err(OptionNumberOverflow)
}
case! {
    order_one_byte_overflow_before_later_truncation, "s3.1 (65535 + delta 1, then value missing)",
    "40 01 0001 e0 fef2 10 01",
    Err(OptionNumberOverflow)
}
case! {
    order_one_byte_overflow_before_empty_payload, "s3.1 before s3 (65536, then lone marker)",
    "40 01 0001 e0 fef2 10 ff",
    Err(OptionNumberOverflow)
}
case! {
    option_number_65535_by_one_byte_deltas, "s3.1 5461 x delta 12 + delta 3 = 65535",
    cat(&[&h("40 01 0001"), &[0xc0; 5461], &[0x30]]),
    Ok { then: |m| {
        assert_eq!(m.options().count(), 5462);
        assert_eq!(m.options().last().map(|o| o.number), Some(65_535));
    } }
}
case! {
    option_number_overflow_by_one_byte_deltas, "s3.1 5461 x delta 12 + delta 4 = 65536",
    cat(&[&h("40 01 0001"), &[0xc0; 5461], &[0x40]]),
    Err(OptionNumberOverflow)
}
case! {
    order_option_error_before_later_marker, "s3.1 before s3 marker", "40 01 0001 f0 ff",
    Err(ReservedDeltaNibble15)
}

// --- s5.10.1 / s6.4: Uri-Path --------------------------------------------------------------------

case! {
    uri_path_doxm, "s5.10.1 Uri-Path, s6.4", "50 01 0001 b3 6f6963 03 736563 04 646f786d",
    Ok { options: [(11, b"oic"), (11, b"sec"), (11, b"doxm")],
        then: |m| { assert!(m.path_is(&DOXM_PATH)); } }
}
case! {
    uri_path_empty_segment, "s5.10.1 Uri-Path length 0-255", "50 01 0001 b0",
    Ok { options: [(11, b"")], then: |m| {
            assert!(m.path_is(&[b""]));
            assert!(!m.path_is(&[]));
            assert_eq!(m.first_unrecognised_critical(), None);
        } }
}
case! {
    uri_path_trailing_empty_segment, "s6.4 an empty segment is a different path",
    "50 01 0001 b3 6f6963 03 736563 04 646f786d 00",
    Ok { options: [(11, b"oic"), (11, b"sec"), (11, b"doxm"), (11, b"")], then: |m| {
            assert!(!m.path_is(&DOXM_PATH));
            assert!(m.path_is(&[b"oic", b"sec", b"doxm", b""]));
        } }
}
case! {
    uri_path_case_sensitive, "s6.4 path segments compare exactly",
    "50 01 0001 b3 4f4943 03 736563 04 646f786d",
    Ok { then: |m| { assert!(!m.path_is(&DOXM_PATH)); } }
}
case! {
    uri_path_prefix_is_not_the_path, "s6.4", "50 01 0001 b3 6f6963 03 736563",
    Ok { then: |m| { assert!(!m.path_is(&DOXM_PATH)); assert!(m.path_is(&[b"oic", b"sec"])); } }
}
case! {
    uri_path_20_segments, "s5.10.1 Uri-Path repeatable", twenty_segments(),
    Ok {
        payload: b"",
        then: |m| {
            let segments: Vec<&[u8]> = m.uri_path().collect();
            assert_eq!(segments.len(), 20);
            for (i, segment) in segments.iter().enumerate() {
                assert_eq!(*segment, [b'a' + i as u8], "segment {i}");
            }
            assert_eq!(m.first_unrecognised_critical(), None);
        }
    }
}
case! {
    uri_path_255_bytes_in_range, "s5.10 table 4: Uri-Path 0-255",
    cat(&[&h("50 01 0001 bd f2"), &[b'p'; 255]]),
    Ok { then: |m| { assert_eq!(m.first_unrecognised_critical(), None); } }
}
case! {
    uri_path_256_bytes_out_of_range, "s5.4.3 length outside table 4 range = unrecognised",
    cat(&[&h("50 01 0001 bd f3"), &[b'p'; 256]]),
    Ok { then: |m| { assert_eq!(m.first_unrecognised_critical(), Some(option::URI_PATH)); } }
}

// --- s5.10.1: Uri-Query --------------------------------------------------------------------------

case! {
    uri_query_repeated, "s5.10.1 Uri-Query repeatable", "50 01 0001 d3 02 613d31 07 6f776e65643d30",
    Ok { options: [(15, b"a=1"), (15, b"owned=0")], then: |m| {
            assert_eq!(m.uri_query().collect::<Vec<_>>(), [&b"a=1"[..], &b"owned=0"[..]]);
            assert_eq!(m.first_unrecognised_critical(), None);
            assert_eq!(query::Filters::parse(m.uri_query()).owned, query::Owned::Invalid);
        } }
}
case! {
    uri_query_first_owned_wins, "s5.10.1 Uri-Query repeatable (SPEC s2: first key wins)",
    "50 01 0001 db 02 6f776e65643d66616c7365 0a 6f776e65643d74727565",
    Ok { then: |m| {
            assert_eq!(m.uri_query().count(), 2);
            assert_eq!(query::Filters::parse(m.uri_query()).owned, query::Owned::False);
        } }
}

// --- s5.4.1: critical and elective options -------------------------------------------------------

case! {
    unknown_critical_uri_host, "s5.4.1 odd = critical; Uri-Host 3 not recognised",
    "50 01 0001 31 61 83 6f6963",
    Ok { options: [(3, b"a"), (11, b"oic")], then: |m| {
            assert_eq!(m.first_unrecognised_critical(), Some(3));
        } }
}
case! {
    unknown_critical_2051, "s5.4.1 odd = critical", "50 01 0001 e0 06f6",
    Ok { options: [(2051, b"")], then: |m| {
            assert_eq!(m.first_unrecognised_critical(), Some(2051));
        } }
}
case! {
    unknown_critical_65535_after_known, "s5.4.1 odd = critical", "50 01 0001 b1 61 e0 fee7",
    Ok { options: [(11, b"a"), (65_535, b"")], then: |m| {
            assert_eq!(m.first_unrecognised_critical(), Some(65_535));
        } }
}
case! {
    unknown_critical_first_of_two, "s5.4.1 odd = critical", "50 01 0001 30 20",
    Ok { options: [(3, b""), (5, b"")], then: |m| {
            assert_eq!(m.first_unrecognised_critical(), Some(3));
        } }
}
case! {
    unknown_elective_ignored, "s5.4.1 even = elective, silently ignored",
    "50 01 0001 b1 61 d1 24 00 e0 06b9",
    Ok { options: [(11, b"a"), (60, [0]), (2050, b"")],
        then: |m| { assert_eq!(m.first_unrecognised_critical(), None); } }
}

// --- s5.4.3 / s5.4.5: lengths out of range, repeated non-repeatable options ----------------------

case! {
    accept_3_bytes_is_unrecognised_critical, "s5.4.3, s5.10.4 Accept 0-2 bytes",
    "50 01 0001 d3 04 002710",
    Ok { options: [(17, [0x00, 0x27, 0x10])], then: |m| {
            assert_eq!(m.accept(), None);
            assert_eq!(m.first_unrecognised_critical(), Some(option::ACCEPT));
        } }
}
case! {
    content_format_3_bytes_is_ignored, "s5.4.3, s5.10.3 Content-Format 0-2 bytes",
    "50 01 0001 c3 002710",
    Ok { options: [(12, [0x00, 0x27, 0x10])], then: |m| {
            assert_eq!(m.content_format(), None);
            assert_eq!(m.first_unrecognised_critical(), None);
        } }
}
case! {
    no_response_2_bytes_is_ignored, "s5.4.3, RFC 7967 s2 No-Response 0-1 bytes",
    "50 01 0001 d2 f5 0002",
    Ok { options: [(258, [0x00, 0x02])], then: |m| {
            assert_eq!(m.no_response(), None);
            assert_eq!(m.first_unrecognised_critical(), None);
        } }
}
case! {
    no_response_1_byte, "RFC 7967 s2 No-Response uint", "50 01 0001 d1 f5 1a",
    Ok { then: |m| { assert_eq!(m.no_response(), Some(26)); } }
}
case! {
    accept_twice_is_unrecognised_critical, "s5.4.5 supernumerary occurrence = unrecognised",
    "50 01 0001 d2 04 2710 02 2710",
    Ok { options: [(17, [0x27, 0x10]), (17, [0x27, 0x10])],
        then: |m| {
            assert_eq!(m.first_unrecognised_critical(), Some(option::ACCEPT));
            assert_eq!(m.accept(), Some(10_000));
        } }
}
case! {
    content_format_twice_first_counts, "s5.4.5 supernumerary elective ignored",
    "50 01 0001 c2 2710 01 32",
    Ok { then: |m| {
            assert_eq!(m.content_format(), Some(10_000));
            assert_eq!(m.first_unrecognised_critical(), None);
        } }
}

// --- OCF Core options 2049 / 2053 ----------------------------------------------------------------

case! {
    ocf_accept_version_2049, "s3.1 delta 14 (1780 + 269), s3.2 uint", "50 01 0001 e2 06f4 0800",
    Ok { options: [(2049, [0x08, 0x00])], then: |m| {
            assert_eq!(m.ocf_accept_content_format_version(), Some(2048));
            assert_eq!(m.ocf_content_format_version(), None);
            assert_eq!(m.first_unrecognised_critical(), None);
        } }
}
case! {
    ocf_content_version_2053, "s3.1 delta 14 (1784 + 269), s3.2 uint", "50 45 0001 e2 06f8 0800",
    Ok { options: [(2053, [0x08, 0x00])], then: |m| {
            assert_eq!(m.ocf_content_format_version(), Some(2048));
            assert_eq!(m.ocf_accept_content_format_version(), None);
            assert_eq!(m.first_unrecognised_critical(), None);
        } }
}
case! {
    ocf_both_versions, "s3.1 delta 4 after 2049", "50 45 0001 e2 06f4 0800 42 0840",
    Ok { options: [(2049, [0x08, 0x00]), (2053, [0x08, 0x40])], then: |m| {
            assert_eq!(m.ocf_accept_content_format_version(), Some(2048));
            assert_eq!(m.ocf_content_format_version(), Some(2112));
        } }
}
case! {
    ocf_accept_version_3_bytes, "s5.4.3 out-of-range length on a critical option",
    "50 01 0001 e3 06f4 000800",
    Ok { then: |m| {
            assert_eq!(m.ocf_accept_content_format_version(), None);
            assert_eq!(m.first_unrecognised_critical(), Some(2049));
        } }
}
case! {
    ocf_content_version_twice, "s5.4.5 supernumerary critical", "50 45 0001 e2 06f8 0800 02 0800",
    Ok { then: |m| { assert_eq!(m.first_unrecognised_critical(), Some(2053)); } }
}

// --- s3.2: uint option values --------------------------------------------------------------------

case! {
    uint_empty_is_zero, "s3.2 uint: empty value = 0", "50 01 0001 d0 04",
    Ok { options: [(17, b"")], then: |m| { assert_eq!(m.accept(), Some(0)); } }
}
case! {
    uint_leading_zero_byte, "s3.2 uint: leading zeros tolerated", "50 01 0001 c2 0032",
    Ok { then: |m| { assert_eq!(m.content_format(), Some(50)); } }
}
case! {
    uint_two_zero_bytes, "s3.2 uint: leading zeros tolerated", "50 01 0001 d2 04 0000",
    Ok { then: |m| {
            assert_eq!(m.accept(), Some(0));
            assert_eq!(m.first_unrecognised_critical(), None);
        } }
}
case! {
    uint_one_byte, "s3.2 uint", "50 01 0001 c1 3c",
    Ok { then: |m| { assert_eq!(m.content_format(), Some(60)); } }
}
case! {
    uint_two_bytes_max, "s3.2 uint", "50 01 0001 c2 ffff",
    Ok { then: |m| { assert_eq!(m.content_format(), Some(65_535)); } }
}
case! {
    uint_accessor_forms, "s3.2 uint: 0..4 bytes, big endian",
    "50 01 0001 00 01 05 02 0102 03 010203 04 01020304 05 0102030405",
    Ok { then: |m| {
            let uints: Vec<Option<u32>> = m.options().map(|o| o.uint()).collect();
            let want = [Some(0), Some(5), Some(0x0102), Some(0x01_0203), Some(0x0102_0304), None];
            assert_eq!(uints, want);
        } }
}

/// A NON GET with 20 one-byte Uri-Path segments `a`..`t`, built by hand.
fn twenty_segments() -> Vec<u8> {
    let mut bytes = h("50 01 0001 b1 61");
    for i in 1..20u8 {
        bytes.extend_from_slice(&[0x01, b'a' + i]);
    }
    bytes
}

// --- s3.1 and s3.2 in the other direction: what the writer emits ---------------------------------

/// Writes a NON GET (mid 1, no token) with the given options; returns the datagram.
fn write(options: &[(u16, &[u8])]) -> Result<Vec<u8>, WriteError> {
    let mut buf = vec![0u8; 70_000];
    let mut w = Writer::new(&mut buf, NON, Code::GET, 1, &[])?;
    for (number, value) in options {
        w.option(*number, value)?;
    }
    let len = w.finish();
    buf.truncate(len);
    Ok(buf)
}

#[test]
fn writer_delta_nibble_and_extension_boundaries() {
    // RFC 7252 s3.1: 0-12 in the nibble, 13-268 as 13 + one byte, 269-65535 as 14 + two bytes.
    for (number, header) in
        [(12, "c0"), (13, "d0 00"), (268, "d0 ff"), (269, "e0 0000"), (65_535, "e0 fef2")]
    {
        assert_eq!(write(&[(number, b"")]), Ok(h(&format!("50 01 0001 {header}"))), "{number}");
    }
}

#[test]
fn writer_length_nibble_and_extension_boundaries() {
    // RFC 7252 s3.1: the same encoding for lengths, up to 0xffff + 269 = 65804.
    for (len, header) in [
        (12, "bc"),
        (13, "bd 00"),
        (268, "bd ff"),
        (269, "be 0000"),
        (65_535, "be fef2"),
        (65_804, "be ffff"),
    ] {
        let value = vec![0x2e; len];
        let want = cat(&[&h(&format!("50 01 0001 {header}")), &value]);
        assert_eq!(write(&[(11, &value)]), Ok(want), "length {len}");
    }
    assert_eq!(write(&[(11, &vec![0; 65_805])]), Err(WriteError::OptionTooLong));
}

#[test]
fn writer_running_deltas() {
    // 11 (b), 11 (delta 0), 15 (delta 4), 2049 (delta 2034 = 269 + 0x06e5), 2053 (delta 4).
    let got = write(&[(11, b"a"), (11, b""), (15, b"q"), (2049, &[8, 0]), (2053, &[8, 0])]);
    assert_eq!(got, Ok(h("50 01 0001 b1 61 00 41 71 e2 06e5 0800 42 0800")));
    assert_eq!(
        write(&[(15, b""), (11, b"")]),
        Err(WriteError::OptionOutOfOrder { previous: 15, number: 11 })
    );
}

#[test]
fn writer_uint_shortest_form() {
    // RFC 7252 s3.2: as few bytes as possible; 0 is the empty value.
    for (value, bytes) in [
        (0u32, ""),
        (1, "01"),
        (255, "ff"),
        (256, "0100"),
        (65_535, "ffff"),
        (65_536, "010000"),
        (u32::MAX, "ffffffff"),
    ] {
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf, NON, Code::GET, 1, &[]).unwrap();
        w.uint_option(option::ACCEPT, value).unwrap();
        let len = w.finish();
        let want = h(&format!("50 01 0001 d{:x} 04 {bytes}", bytes.len() / 2));
        assert_eq!(buf[..len], want[..], "{value}");
    }
}

#[test]
fn writer_refuses_what_the_parser_rejects() {
    let mut buf = [0u8; 32];
    // s3: TKL 9 is reserved.
    assert_eq!(
        Writer::new(&mut buf, CON, Code::GET, 1, &[0; 9]).unwrap_err(),
        WriteError::TokenTooLong
    );
    // s4.1: an Empty message has no token, options or payload.
    assert_eq!(
        Writer::new(&mut buf, ACK, Code::EMPTY, 1, b"t").unwrap_err(),
        WriteError::EmptyMessageNotEmpty
    );
    // s3: an empty payload writes no marker (a bare 0xff is a format error).
    let w = Writer::new(&mut buf, CON, Code::GET, 0xbeef, b"t").unwrap();
    let len = w.payload(b"").unwrap();
    assert_eq!(buf[..len], h("41 01 beef 74")[..]);
}
