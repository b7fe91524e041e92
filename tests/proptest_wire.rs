//! Property tests of the wire layer.
//!
//! - Writer -> parser: any message the [`Writer`] produces parses back to the same fields,
//!   options and payload, and has exactly the length RFC 7252 section 3 gives it.
//! - Parser on arbitrary bytes: never panics; when it accepts, every accessor runs, the option
//!   walk accounts for every byte, the typed accessors agree with a reference model written from
//!   SPEC section 3, and re-encoding the parsed fields gives back the same bytes (the option
//!   header encoding of RFC 7252 section 3.1 is unique).
//! - The parser's verdict, error reason included, is that of a plain reading of RFC 7252
//!   section 3 written here ([`model_parse`]); `Message::parse_with` hands its visitor exactly
//!   the options `Message::options` yields, and returns the same message or error as `parse`;
//!   `policy::RequestFacts::parse` (the engine's one pass) reads the facts the accessors give.
//! - Mutations of valid messages (bit flips, truncations, insertions, deletions) never panic.
//! - `query::Filters::parse` agrees with a reference model of SPEC section 2.

use doxm_gate::policy::{Delivery, RequestFacts};
use doxm_gate::wire::query::{self, Filters, Owned};
use doxm_gate::wire::{option, CoapOption, Code, Error, Message, MessageType, WriteError, Writer};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

// ---------------------------------------------------------------------------------------------
// Messages as plain data, and the writer that encodes them.
// ---------------------------------------------------------------------------------------------

/// The fields of one message, owned.
#[derive(Debug, Clone)]
struct Spec {
    ty: MessageType,
    code: u8,
    message_id: u16,
    token: Vec<u8>,
    options: Vec<(u16, Vec<u8>)>,
    payload: Vec<u8>,
}

impl Spec {
    fn has_content(&self) -> bool {
        !self.token.is_empty() || !self.options.is_empty() || !self.payload.is_empty()
    }

    /// The encoded length, computed from RFC 7252 section 3 independently of the writer.
    fn encoded_len(&self) -> usize {
        let mut previous = 0;
        let mut len = 4 + self.token.len();
        for (number, value) in &self.options {
            len += option_len(number - previous, value.len());
            previous = *number;
        }
        if !self.payload.is_empty() {
            len += 1 + self.payload.len();
        }
        len
    }

    fn write(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let code = Code::from_byte(self.code);
        let mut w = Writer::new(buf, self.ty, code, self.message_id, &self.token)?;
        for (number, value) in &self.options {
            w.option(*number, value)?;
        }
        w.payload(&self.payload)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.encoded_len()];
        let len = self.write(&mut buf).expect("a valid spec encodes into its exact length");
        assert_eq!(len, buf.len());
        buf
    }
}

/// The size of an extension for a delta or length value (RFC 7252 section 3.1).
fn ext_len(value: usize) -> usize {
    match value {
        0..=12 => 0,
        13..=268 => 1,
        _ => 2,
    }
}

/// The encoded size of one option: header byte, extensions, value.
fn option_len(delta: u16, value_len: usize) -> usize {
    1 + ext_len(usize::from(delta)) + ext_len(value_len) + value_len
}

// ---------------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------------

/// Option value lengths, biased to the nibble boundaries 12/13 and 268/269.
fn value_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..=16,
        3 => select(vec![12usize, 13, 14, 255, 256, 267, 268, 269, 270, 300]),
        2 => 0usize..=300,
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    value_len().prop_flat_map(|len| vec(any::<u8>(), len))
}

/// Option numbers the gate knows, plus unknown critical and elective ones and the extremes.
fn interesting_number() -> impl Strategy<Value = u16> {
    select(vec![
        0u16, 1, 3, 4, 7, 11, 12, 13, 14, 15, 17, 23, 258, 259, 268, 269, 2049, 2053, 65535,
    ])
}

/// A sorted list of options, built either from deltas (hitting the 13/14 extension boundaries of
/// the delta) or from absolute numbers, sorted (hitting the numbers the gate knows).
fn options() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    let delta = prop_oneof![
        4 => 0u16..=14,
        2 => select(vec![12u16, 13, 14, 267, 268, 269, 270, 2049, 65535]),
        1 => any::<u16>(),
    ];
    let by_delta = vec((delta, value()), 0..=8).prop_map(|items| {
        let mut number = 0u32;
        let mut out = Vec::new();
        for (delta, value) in items {
            number += u32::from(delta);
            let Ok(n) = u16::try_from(number) else { break };
            out.push((n, value));
        }
        out
    });
    let number = prop_oneof![3 => interesting_number(), 1 => any::<u16>()];
    let by_number = vec((number, value()), 0..=8).prop_map(|mut items| {
        items.sort_by_key(|(n, _)| *n);
        items
    });
    // Mostly the options the gate knows, with short values around their length limits (so
    // repeats and out-of-range lengths of known options are common).
    let segment = select(vec![&b"oic"[..], b"sec", b"doxm", b"res", b""]).prop_map(<[u8]>::to_vec);
    let known_value = prop_oneof![3 => vec(any::<u8>(), 0..=3), 2 => segment, 1 => value()];
    let known_number = select(vec![3u16, 11, 12, 15, 17, 258, 2049, 2053]);
    let by_known = vec((known_number, known_value), 0..=6).prop_map(|mut items| {
        items.sort_by_key(|(n, _)| *n);
        items
    });
    prop_oneof![by_delta, by_number, by_known]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (0u8..4).prop_map(MessageType::from_bits),
        prop_oneof![1 => Just(0u8), 1 => Just(1u8), 1 => Just(0x45u8), 6 => any::<u8>()],
        any::<u16>(),
        vec(any::<u8>(), 0..=8),
        options(),
        prop_oneof![1 => Just(Vec::new()), 3 => vec(any::<u8>(), 0..=300)],
    )
        .prop_map(|(ty, code, message_id, token, options, payload)| Spec {
            ty,
            code,
            message_id,
            token,
            options,
            payload,
        })
}

/// A spec the writer must accept (no content on an Empty message).
fn valid_spec() -> impl Strategy<Value = Spec> {
    spec().prop_map(|mut s| {
        if s.code == 0 && s.has_content() {
            s.code = 1;
        }
        s
    })
}

/// The bytes that matter to option framing: nibbles 12/13/14/15 and the payload marker.
const FRAMING_BYTES: [u8; 12] =
    [0x00, 0x01, 0x0c, 0x0d, 0x0e, 0x0f, 0xd0, 0xe0, 0xf0, 0xff, 0xdd, 0xee];

/// Maps a random `u16` to a byte that looks like CoAP often enough for the parser to get past
/// the header: 3/8 any byte, 2/8 a framing byte, 3/8 a small option header (delta and length
/// 0..3).
fn wire_byte_from(x: u16) -> u8 {
    let [class, low] = x.to_be_bytes();
    match class {
        0..=95 => low,
        96..=159 => FRAMING_BYTES[usize::from(low) % FRAMING_BYTES.len()],
        _ => low % 0x35,
    }
}

fn wire_byte() -> impl Strategy<Value = u8> {
    any::<u16>().prop_map(wire_byte_from)
}

/// A run of [`wire_byte`]s, generated as one vector (cheap, even in debug builds).
fn wire_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u16>(), 0..=max_len).prop_map(|xs| xs.into_iter().map(wire_byte_from).collect())
}

fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let tkl = prop_oneof![1 => Just(0u8), 2 => 0u8..=8];
    let code = prop_oneof![1 => Just(0u8), 1 => Just(1u8), 1 => Just(0x45u8), 3 => any::<u8>()];
    let header = (0u8..4, tkl, code, any::<u16>()).prop_map(|(ty, tkl, code, mid)| {
        let [hi, lo] = mid.to_be_bytes();
        vec![0x40 | ty << 4 | tkl, code, hi, lo]
    });
    // Mostly short datagrams (where the framing cases are), sometimes up to 512 bytes.
    let rest = prop_oneof![3 => wire_bytes(60), 1 => wire_bytes(508)];
    prop_oneof![
        1 => vec(any::<u8>(), 0..=512),
        3 => (header, rest).prop_map(|(mut h, rest)| {
            h.extend(rest);
            h
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    Delete(Index),
    Set(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), wire_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), wire_byte()).prop_map(|(i, b)| Mutation::Set(i, b)),
    ]
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            if let Mutation::Insert(_, b) = self {
                bytes.push(*b);
            }
            return;
        }
        let len = bytes.len();
        match self {
            Mutation::Flip(i, bit) => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Mutation::Delete(i) => {
                bytes.remove(i.index(bytes.len()));
            }
            Mutation::Set(i, b) => bytes[i.index(len)] = *b,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reference models (SPEC section 3 and RFC 7252 sections 5.4.1, 5.4.3, 5.4.5).
// ---------------------------------------------------------------------------------------------

/// (number, max length, repeatable) of the options SPEC section 3 lists.
const KNOWN: [(u16, usize, bool); 7] = [
    (11, 255, true),
    (12, 2, false),
    (15, 255, true),
    (17, 2, false),
    (258, 1, false),
    (2049, 2, false),
    (2053, 2, false),
];

fn known(number: u16) -> Option<(usize, bool)> {
    KNOWN.iter().find(|k| k.0 == number).map(|k| (k.1, k.2))
}

/// The first occurrence of a known uint option, if its length is in range.
fn model_single_uint(options: &[(u16, &[u8])], number: u16) -> Option<u32> {
    let (max_len, _) = known(number).expect("a known option");
    let value = options.iter().find(|(n, _)| *n == number)?.1;
    if value.len() > max_len {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)))
}

/// The first critical option that is unknown, out of range, or a supernumerary repeat.
fn model_first_unrecognised_critical(options: &[(u16, &[u8])]) -> Option<u16> {
    for (i, (number, value)) in options.iter().enumerate() {
        if number % 2 == 0 {
            continue;
        }
        let repeated = i > 0 && options[i - 1].0 == *number;
        match known(*number) {
            None => return Some(*number),
            Some((max_len, repeatable)) => {
                if value.len() > max_len || (repeated && !repeatable) {
                    return Some(*number);
                }
            }
        }
    }
    None
}

/// What [`model_parse`] reads from a well-formed datagram: its options and its payload.
type ModelMessage<'a> = (Vec<(u16, &'a [u8])>, &'a [u8]);

/// RFC 7252 section 3 read plainly, byte by byte: the options and payload of a well-formed
/// datagram, or the first format error on the wire, in the order the header fields, the token
/// and then each option (header byte, delta extension, length extension, number, value) come.
fn model_parse(bytes: &[u8]) -> Result<ModelMessage<'_>, Error> {
    if bytes.len() < 4 {
        return Err(Error::HeaderTruncated);
    }
    if bytes[0] >> 6 != 1 {
        return Err(Error::UnknownVersion);
    }
    let tkl = usize::from(bytes[0] & 0x0f);
    if tkl > 8 {
        return Err(Error::ReservedTkl);
    }
    if bytes[1] == 0 && (tkl != 0 || bytes.len() > 4) {
        return Err(Error::EmptyMessageNotEmpty);
    }
    if bytes.len() < 4 + tkl {
        return Err(Error::TokenTruncated);
    }
    let mut i = 4 + tkl;
    let mut number = 0u32;
    let mut options = Vec::new();
    while i < bytes.len() {
        let byte = bytes[i];
        i += 1;
        if byte == 0xff {
            if i == bytes.len() {
                return Err(Error::PayloadMarkerWithoutPayload);
            }
            return Ok((options, &bytes[i..]));
        }
        let (delta_nibble, len_nibble) = (u32::from(byte >> 4), u32::from(byte & 0x0f));
        if delta_nibble == 15 {
            return Err(Error::ReservedDeltaNibble15);
        }
        if len_nibble == 15 {
            return Err(Error::ReservedLengthNibble15);
        }
        let mut extended = |nibble: u32| match nibble {
            13 if i < bytes.len() => {
                i += 1;
                Ok(u32::from(bytes[i - 1]) + 13)
            }
            14 if i + 1 < bytes.len() => {
                i += 2;
                Ok(u32::from(bytes[i - 2]) * 256 + u32::from(bytes[i - 1]) + 269)
            }
            13 | 14 => Err(Error::ExtendedFieldTruncated),
            _ => Ok(nibble),
        };
        let delta = extended(delta_nibble)?;
        let len = extended(len_nibble)? as usize;
        number += delta;
        if number > 65_535 {
            return Err(Error::OptionNumberOverflow);
        }
        if bytes.len() - i < len {
            return Err(Error::OptionValueTruncated);
        }
        options.push((number as u16, &bytes[i..i + len]));
        i += len;
    }
    Ok((options, &[]))
}

/// Every check that can be made of one datagram: never panics, and when it parses, all the
/// accessors run and agree with the bytes and with the models.
fn check_datagram(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut visited = Vec::new();
    let one_pass = Message::parse_with(bytes, |o| visited.push((o.number, o.value)));
    prop_assert_eq!(one_pass, Message::parse(bytes), "parse_with and parse disagree");
    let model = model_parse(bytes);
    let msg = match (Message::parse(bytes), model) {
        (Ok(msg), Ok((model_options, model_payload))) => {
            prop_assert_eq!(&visited, &model_options, "parse_with's visits");
            prop_assert_eq!(msg.payload(), model_payload);
            msg
        }
        (Err(e), Err(model_error)) => {
            prop_assert_eq!(e, model_error, "the first error on the wire");
            prop_assert_eq!(RequestFacts::parse(bytes, Delivery::Multicast).err(), Some(e));
            prop_assert!(Error::ALL.contains(&e));
            prop_assert!(!e.as_str().is_empty());
            return Ok(());
        }
        (parsed, model) => {
            return Err(TestCaseError::fail(format!("parse {parsed:?}, model {model:?}")));
        }
    };

    // Header fields straight from the bytes.
    prop_assert_eq!(bytes[0] >> 6, 1);
    prop_assert_eq!(msg.ty() as u8, (bytes[0] >> 4) & 0b11);
    prop_assert_eq!(msg.code().byte(), bytes[1]);
    prop_assert_eq!(msg.message_id(), u16::from_be_bytes([bytes[2], bytes[3]]));
    let tkl = usize::from(bytes[0] & 0x0f);
    prop_assert!(tkl <= 8);
    prop_assert_eq!(msg.token(), &bytes[4..4 + tkl]);
    let _ = msg.code().to_string();
    let _ = (msg.code().class(), msg.code().detail(), msg.code().is_request(), msg.ty().as_str());

    // The options walk accounts for every byte between the token and the payload.
    let options: Vec<(u16, &[u8])> = msg.options().map(|o| (o.number, o.value)).collect();
    prop_assert_eq!(&options, &visited, "options() and parse_with's visits");
    let mut previous = 0u16;
    let mut consumed = 0;
    for &(number, value) in &options {
        prop_assert!(number >= previous, "options out of order");
        consumed += option_len(number - previous, value.len());
        previous = number;
        let _ = CoapOption { number, value }.uint();
    }
    let payload = msg.payload();
    let payload_part = if payload.is_empty() { 0 } else { 1 + payload.len() };
    prop_assert_eq!(4 + tkl + consumed + payload_part, bytes.len());
    prop_assert_eq!(payload, &bytes[bytes.len() - payload.len()..]);
    if msg.code() == Code::EMPTY {
        prop_assert_eq!(bytes.len(), 4);
    }

    // Values of one number, and the typed accessors, against the models.
    let of = |n: u16| -> Vec<&[u8]> {
        options.iter().filter(|(m, _)| *m == n).map(|(_, v)| *v).collect()
    };
    let path: Vec<&[u8]> = msg.uri_path().collect();
    prop_assert_eq!(&path, &of(option::URI_PATH));
    prop_assert!(msg.path_is(&path));
    let query_values: Vec<&[u8]> = msg.uri_query().collect();
    prop_assert_eq!(&query_values, &of(option::URI_QUERY));
    for &(number, _) in options.iter().take(3) {
        prop_assert_eq!(msg.values(number).collect::<Vec<_>>(), of(number));
    }
    let doxm: [&[u8]; 3] = [b"oic", b"sec", b"doxm"];
    prop_assert_eq!(msg.path_is(&doxm), path == doxm);
    for end in 0..path.len() {
        prop_assert!(!msg.path_is(&path[..end]), "a strict prefix of the path matched");
    }
    let mut longer = path.clone();
    longer.push(b"");
    prop_assert!(!msg.path_is(&longer), "a longer path matched");
    let trunc = |v: Option<u32>| v.map(|v| v as u16);
    prop_assert_eq!(msg.content_format(), trunc(model_single_uint(&options, 12)));
    prop_assert_eq!(msg.accept(), trunc(model_single_uint(&options, 17)));
    prop_assert_eq!(msg.no_response(), model_single_uint(&options, 258).map(|v| v as u8));
    prop_assert_eq!(
        msg.ocf_accept_content_format_version(),
        trunc(model_single_uint(&options, 2049))
    );
    prop_assert_eq!(msg.ocf_content_format_version(), trunc(model_single_uint(&options, 2053)));
    prop_assert_eq!(msg.first_unrecognised_critical(), model_first_unrecognised_critical(&options));
    let filters = Filters::parse(msg.uri_query());
    let _ = filters.owned.as_str();

    // The engine's one pass reads the same facts as the accessors above, one by one.
    for delivery in [Delivery::Multicast, Delivery::Unicast] {
        let (one_pass, facts) = RequestFacts::parse(bytes, delivery).expect("parse accepted it");
        prop_assert_eq!(one_pass, msg);
        prop_assert_eq!(facts, RequestFacts::from_message(&msg, delivery));
    }

    // The option header encoding is unique, so re-encoding gives back the same bytes.
    let spec = Spec {
        ty: msg.ty(),
        code: msg.code().byte(),
        message_id: msg.message_id(),
        token: msg.token().to_vec(),
        options: options.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
        payload: payload.to_vec(),
    };
    prop_assert_eq!(spec.to_bytes(), bytes);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Query reference model (SPEC section 2).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct ModelFilters {
    owned: Owned,
    di: Option<Vec<u8>>,
    deviceuuid: Option<Vec<u8>>,
    interface: Option<Vec<u8>>,
    rt: Option<Vec<u8>>,
}

fn model_filters(values: &[Vec<u8>]) -> ModelFilters {
    let mut owned = None;
    let (mut di, mut deviceuuid, mut interface, mut rt) = (None, None, None, None);
    for value in values {
        for arg in value.split(|&b| b == b'&') {
            let (key, value) = match arg.iter().position(|&b| b == b'=') {
                Some(at) => (&arg[..at], Some(&arg[at + 1..])),
                None => (arg, None),
            };
            let literal = value.unwrap_or_default().to_vec();
            match key.to_ascii_lowercase().as_slice() {
                b"owned" if owned.is_none() => {
                    owned = Some(match value.map(|v| v.to_ascii_lowercase()) {
                        Some(v) if v == b"true" => Owned::True,
                        Some(v) if v == b"false" => Owned::False,
                        _ => Owned::Invalid,
                    });
                }
                b"di" if di.is_none() => di = Some(literal),
                b"deviceuuid" if deviceuuid.is_none() => deviceuuid = Some(literal),
                b"if" if interface.is_none() => interface = Some(literal),
                b"rt" if rt.is_none() => rt = Some(literal),
                _ => {}
            }
        }
    }
    ModelFilters { owned: owned.unwrap_or(Owned::Absent), di, deviceuuid, interface, rt }
}

/// Query values as real clients build them: `key[=value]` arguments joined by `&`, with keys
/// and values in any case; sometimes with empty arguments, stray separators or raw bytes.
fn query_value() -> impl Strategy<Value = Vec<u8>> {
    let key = select(vec![
        "owned",
        "OWNED",
        "Owned",
        "oWnEd",
        "di",
        "DI",
        "Di",
        "if",
        "IF",
        "rt",
        "Rt",
        "",
        "x",
        "ownedx",
        "owned ",
        "\u{e9}",
        "deviceuuid",
        "DeviceUUID",
        "deviceuuidx",
        "device",
    ]);
    let value = select(vec![
        "true",
        "TRUE",
        "True",
        "false",
        "FALSE",
        "fAlSe",
        "0",
        "1",
        "yes",
        "",
        "oic.if.rw",
        "oic.if.baseline",
        "oic.r.doxm",
        "=false",
        "true&",
        "a=b",
        " false",
        "6E4B",
        "50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403",
    ]);
    let arg = prop_oneof![
        6 => (key, proptest::option::of(value)).prop_map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.to_owned(),
        }),
        1 => Just(String::new()),
        1 => select(vec!["&", "=", "==", "&=&"]).prop_map(str::to_owned),
    ];
    prop_oneof![
        6 => vec(arg, 0..6).prop_map(|args| args.join("&").into_bytes()),
        1 => vec(any::<u8>(), 0..32),
    ]
}

// ---------------------------------------------------------------------------------------------
// The properties.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (i) Whatever the writer produces parses back to the same fields, options and payload.
    #[test]
    fn prop_writer_output_parses_back(spec in spec(), cut in any::<Index>()) {
        let mut buf = vec![0u8; spec.encoded_len() + 16];
        let written = spec.write(&mut buf);
        if spec.code == 0 && spec.has_content() {
            prop_assert_eq!(written, Err(WriteError::EmptyMessageNotEmpty));
            return Ok(());
        }
        let len = written.expect("the writer accepts a valid spec");
        prop_assert_eq!(len, spec.encoded_len());

        let msg = Message::parse(&buf[..len]).expect("writer output parses");
        prop_assert_eq!(msg.ty(), spec.ty);
        prop_assert_eq!(msg.code(), Code::from_byte(spec.code));
        prop_assert_eq!(msg.message_id(), spec.message_id);
        prop_assert_eq!(msg.token(), spec.token.as_slice());
        let options: Vec<(u16, Vec<u8>)> =
            msg.options().map(|o| (o.number, o.value.to_vec())).collect();
        prop_assert_eq!(&options, &spec.options);
        prop_assert_eq!(msg.payload(), spec.payload.as_slice());
        check_datagram(&buf[..len])?;

        // An exact buffer suffices; any shorter one is "buffer too small".
        let mut exact = vec![0u8; len];
        prop_assert_eq!(spec.write(&mut exact), Ok(len));
        prop_assert_eq!(&exact[..], &buf[..len]);
        let mut short = vec![0u8; cut.index(len)];
        prop_assert_eq!(spec.write(&mut short), Err(WriteError::BufferTooSmall));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// (ii) The parser never panics on arbitrary bytes, and what it accepts is consistent.
    #[test]
    fn prop_parse_arbitrary_bytes(bytes in datagram()) {
        check_datagram(&bytes)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    /// (iii) Mutations of valid messages never panic (and stay consistent when they parse).
    #[test]
    fn prop_mutated_messages(spec in valid_spec(), mutations in vec(mutation(), 1..=4)) {
        let mut bytes = spec.to_bytes();
        for m in &mutations {
            m.apply(&mut bytes);
            check_datagram(&bytes)?;
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// (iii) Every prefix of a valid message is handled without panicking.
    #[test]
    fn prop_every_prefix(spec in valid_spec()) {
        let bytes = spec.to_bytes();
        for end in 0..bytes.len() {
            check_datagram(&bytes[..end])?;
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// (iv) `Filters::parse` agrees with the reference model of SPEC section 2.
    #[test]
    fn prop_query_filters_match_model(values in vec(query_value(), 0..4)) {
        let filters = Filters::parse(values.iter().map(Vec::as_slice));
        let got = ModelFilters {
            owned: filters.owned,
            di: filters.di.map(<[u8]>::to_vec),
            deviceuuid: filters.deviceuuid.map(<[u8]>::to_vec),
            interface: filters.interface.map(<[u8]>::to_vec),
            rt: filters.rt.map(<[u8]>::to_vec),
        };
        prop_assert_eq!(got, model_filters(&values));

        // The argument splitter: `&`-separated, empty arguments skipped, split at the first `=`.
        let args: Vec<(Vec<u8>, Option<Vec<u8>>)> = query::args(values.iter().map(Vec::as_slice))
            .map(|a| (a.key.to_vec(), a.value.map(<[u8]>::to_vec)))
            .collect();
        let want: Vec<(Vec<u8>, Option<Vec<u8>>)> = values
            .iter()
            .flat_map(|v| v.split(|&b| b == b'&'))
            .filter(|arg| !arg.is_empty())
            .map(|arg| match arg.iter().position(|&b| b == b'=') {
                Some(at) => (arg[..at].to_vec(), Some(arg[at + 1..].to_vec())),
                None => (arg.to_vec(), None),
            })
            .collect();
        prop_assert_eq!(args, want);
    }
}

/// The properties above rely on the strategies reaching the interesting cases; check a few
/// fixed inputs through the same checker so a regression in the checker itself shows.
#[test]
fn test_checker_on_fixed_inputs() {
    let obt = doxm_gate::wire::fixtures::OBT_REQUEST;
    check_datagram(&obt).unwrap();
    let msg = Message::parse(&obt).unwrap();
    let options: Vec<(u16, &[u8])> = msg.options().map(|o| (o.number, o.value)).collect();
    assert_eq!(model_single_uint(&options, 17), Some(10_000));
    assert_eq!(model_first_unrecognised_critical(&options), None);
    // Uri-Host (3) is critical and unknown; a repeated Accept is supernumerary.
    assert_eq!(model_first_unrecognised_critical(&[(3, b"h")]), Some(3));
    assert_eq!(model_first_unrecognised_critical(&[(17, b""), (17, b"")]), Some(17));
    for bytes in
        [&[][..], &[0x40], &[0x40, 0, 0, 0], &[0x40, 1, 0, 0, 0xff], &[0x50, 1, 0, 0, 0xd0]]
    {
        check_datagram(bytes).unwrap();
    }
}
