//! Byte-exact tests against the real captures of SPEC section 4 (the 45-byte OBT request and the
//! 180-byte doxm payload, defined once in `doxm_gate::wire::fixtures`), plus the query spellings
//! of the two real clients (SPEC section 1.1).
//!
//! Expected values come from the SPEC text and from decoding the captures by hand (the layout of
//! each vector is spelled out next to it) or with an independent CBOR decoder (ciborium).

use ciborium::value::Value;
use doxm_gate::wire::fixtures::{real_doxm, OBT_REQUEST, OBT_TOKEN, REAL_DOXM_PAYLOAD};
use doxm_gate::wire::ocf::{self, Doxm, View};
use doxm_gate::wire::query::{self, Filters, Owned};
use doxm_gate::wire::{option, BufferTooSmall, Code, Message, MessageType, WriteError, Writer};

const DEVICE_UUID: &str = "50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403";
const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

fn h(digits: &str) -> Vec<u8> {
    hex::decode(digits).expect("SPEC vector is hex")
}

/// The (key, value) pairs of a CBOR map, in encoded order.
fn map_entries(bytes: &[u8]) -> Vec<(String, Value)> {
    let value: Value = ciborium::de::from_reader(bytes).expect("valid CBOR");
    let Value::Map(entries) = value else { panic!("not a map: {value:?}") };
    entries.into_iter().map(|(k, v)| (k.into_text().expect("text key"), v)).collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

// --- The OBT request -----------------------------------------------------------------------------

#[test]
fn obt_request_is_45_bytes() {
    assert_eq!(OBT_REQUEST.to_vec().len(), 45);
}

#[test]
fn obt_request_header_and_token() {
    let bytes = OBT_REQUEST.to_vec();
    let msg = Message::parse(&bytes).expect("the real request parses");
    assert_eq!(msg.ty(), MessageType::NonConfirmable);
    assert_eq!(msg.code(), Code::GET);
    assert_eq!(msg.message_id(), 61_901);
    assert_eq!(msg.token(), OBT_TOKEN);
    assert_eq!(msg.payload(), b"");
}

#[test]
fn obt_request_every_option_in_wire_order() {
    let bytes = OBT_REQUEST.to_vec();
    let msg = Message::parse(&bytes).unwrap();
    let options: Vec<(u16, &[u8])> = msg.options().map(|o| (o.number, o.value)).collect();
    let expected: [(u16, &[u8]); 6] = [
        (11, b"oic"),
        (11, b"sec"),
        (11, b"doxm"),
        (15, b"owned=FALSE"),
        (17, &[0x27, 0x10]),
        (2049, &[0x08, 0x00]),
    ];
    assert_eq!(options, expected);
}

#[test]
fn obt_request_typed_accessors() {
    let bytes = OBT_REQUEST.to_vec();
    let msg = Message::parse(&bytes).unwrap();
    assert!(msg.path_is(&[b"oic", b"sec", b"doxm"]));
    assert_eq!(msg.uri_path().collect::<Vec<_>>(), [&b"oic"[..], b"sec", b"doxm"]);
    assert_eq!(msg.uri_query().collect::<Vec<_>>(), [&b"owned=FALSE"[..]]);
    assert_eq!(msg.accept(), Some(10_000));
    assert_eq!(msg.ocf_accept_content_format_version(), Some(2048));
    assert_eq!(msg.ocf_content_format_version(), None);
    assert_eq!(msg.content_format(), None);
    assert_eq!(msg.no_response(), None);
    assert_eq!(msg.first_unrecognised_critical(), None);
}

#[test]
fn obt_request_writer_needs_exactly_45_bytes() {
    let write = |buf: &mut [u8]| -> Result<usize, WriteError> {
        let mut w = Writer::new(buf, MessageType::NonConfirmable, Code::GET, 0xf1cd, &OBT_TOKEN)?;
        w.option(option::URI_PATH, b"oic")?;
        w.option(option::URI_PATH, b"sec")?;
        w.option(option::URI_PATH, b"doxm")?;
        w.option(option::URI_QUERY, b"owned=FALSE")?;
        w.uint_option(option::ACCEPT, 10_000)?;
        w.uint_option(option::OCF_ACCEPT_CONTENT_FORMAT_VERSION, 2048)?;
        Ok(w.finish())
    };
    let mut exact = [0u8; 45];
    assert_eq!(write(&mut exact), Ok(45));
    assert_eq!(exact[..], OBT_REQUEST.to_vec()[..]);
    let mut short = [0u8; 44];
    assert_eq!(write(&mut short), Err(WriteError::BufferTooSmall));
}

// --- The doxm payload ----------------------------------------------------------------------------

#[test]
fn real_doxm_payload_is_180_bytes_of_the_spec_fields() {
    // Checks the vector itself with an independent decoder, so the byte-exact tests below
    // compare our encoder with the SPEC field values.
    let payload = REAL_DOXM_PAYLOAD.to_vec();
    assert_eq!(payload.len(), 180);
    assert_eq!(payload[0], 0xbf, "indefinite-length map");
    assert_eq!(payload[179], 0xff, "break");
    assert_eq!(
        map_entries(&payload),
        [
            ("oxms".to_owned(), Value::Array(vec![int(0)])),
            ("oxmsel".to_owned(), int(4)),
            ("sct".to_owned(), int(329)),
            ("owned".to_owned(), Value::Bool(false)),
            ("devowneruuid".to_owned(), text(NIL_UUID)),
            ("deviceuuid".to_owned(), text(DEVICE_UUID)),
            ("rowneruuid".to_owned(), text(NIL_UUID)),
        ]
    );
}

#[test]
fn doxm_encoder_matches_real_payload() {
    let mut buf = [0u8; Doxm::MAX_LEN];
    let len = real_doxm().encode(View::Default, &mut buf).unwrap();
    assert_eq!(buf[..len], REAL_DOXM_PAYLOAD);
}

#[test]
fn doxm_named_constants_are_the_spec_numbers() {
    // SPEC section 4: oxm 0 Just Works, 4 "self"; sct 329 = 1 + 8 + 64 + 256.
    assert_eq!(ocf::oxm::JUST_WORKS, 0);
    assert_eq!(ocf::oxm::SELF, 4);
    let sct = ocf::sct::PAIRWISE_PSK
        | ocf::sct::CERTIFICATE
        | ocf::sct::OSCORE
        | ocf::sct::OSCORE_GROUP_SERVER;
    assert_eq!(sct, 329);
}

#[test]
fn doxm_encoder_reports_a_short_buffer() {
    let mut buf = [0u8; 179];
    assert_eq!(real_doxm().encode(View::Default, &mut buf), Err(BufferTooSmall));
}

#[test]
fn doxm_baseline_view_puts_rt_and_if_first() {
    let mut buf = [0u8; Doxm::MAX_LEN];
    let len = real_doxm().encode(View::Baseline, &mut buf).unwrap();
    let entries = map_entries(&buf[..len]);
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["rt", "if", "oxms", "oxmsel", "sct", "owned", "devowneruuid", "deviceuuid", "rowneruuid"]
    );
    assert_eq!(entries[0].1, Value::Array(vec![text("oic.r.doxm")]));
    assert_eq!(entries[1].1, Value::Array(vec![text("oic.if.rw"), text("oic.if.baseline")]));
    // The rest is the default view, byte for byte.
    let default = REAL_DOXM_PAYLOAD.to_vec();
    assert_eq!(buf[len - 179..len], default[1..]);
}

// --- The full answer -----------------------------------------------------------------------------

/// Writes the 2.05 answer to the OBT request with message ID `mid`.
fn write_answer(buf: &mut [u8], mid: u16) -> Result<usize, WriteError> {
    let request_bytes = OBT_REQUEST.to_vec();
    let request = Message::parse(&request_bytes).unwrap();
    ocf::write_response(
        buf,
        MessageType::NonConfirmable,
        Code::CONTENT,
        mid,
        request.token(),
        |out| real_doxm().encode(View::Default, out),
    )
}

#[test]
fn doxm_answer_is_byte_exact() {
    // 58 (NON, TKL 8) 45 (2.05) 2bad (mid) token,
    // c2 2710 (Content-Format 12 = 10000),
    // e2 06ec 0800 (12 + 1772 + 269 = 2053 = 0x0800), ff, the 180-byte payload.
    let expected = format!(
        "58452bad{}c22710e206ec0800ff{}",
        hex::encode(OBT_TOKEN),
        hex::encode(REAL_DOXM_PAYLOAD)
    );
    let mut buf = [0u8; 256];
    let len = write_answer(&mut buf, 0x2bad).unwrap();
    assert_eq!(len, 201);
    assert_eq!(hex::encode(&buf[..len]), expected);
}

#[test]
fn doxm_answer_parses_back() {
    let mut buf = [0u8; 256];
    let len = write_answer(&mut buf, 0x0102).unwrap();
    let answer = Message::parse(&buf[..len]).expect("the answer is well-formed");
    assert_eq!(answer.ty(), MessageType::NonConfirmable);
    assert_eq!(answer.code(), Code::CONTENT);
    assert_eq!(answer.message_id(), 0x0102);
    assert_eq!(answer.token(), OBT_TOKEN);
    let options: Vec<(u16, &[u8])> = answer.options().map(|o| (o.number, o.value)).collect();
    assert_eq!(options, [(12, &[0x27, 0x10][..]), (2053, &[0x08, 0x00][..])]);
    assert_eq!(answer.content_format(), Some(10_000));
    assert_eq!(answer.ocf_content_format_version(), Some(2048));
    assert_eq!(answer.first_unrecognised_critical(), None);
    assert_eq!(answer.payload(), REAL_DOXM_PAYLOAD.to_vec());
}

#[test]
fn doxm_answer_buffer_one_byte_short() {
    let mut buf = [0u8; 200];
    assert_eq!(write_answer(&mut buf, 1), Err(WriteError::BufferTooSmall));
    let mut buf = [0u8; 201];
    assert_eq!(write_answer(&mut buf, 1), Ok(201));
}

// --- Query filters of the real clients (SPEC sections 1.1 and 2) ---------------------------------

#[test]
fn iotivity_lite_obt_owned_false() {
    let bytes = OBT_REQUEST.to_vec();
    let msg = Message::parse(&bytes).unwrap();
    let filters = Filters::parse(msg.uri_query());
    assert_eq!(filters.owned, Owned::False);
    assert_eq!(filters.di, None);
    assert_eq!(filters.interface, None);
    assert_eq!(filters.rt, None);
}

/// A plgd client discovery, built by hand: NON GET /oic/sec/doxm?Owned=TRUE.
///
/// ```text
/// 58 01 1a2b 0102030405060708         NON GET, mid 0x1a2b, 8-byte token
/// b3 6f6963 03 736563 04 646f786d     Uri-Path oic / sec / doxm
/// 4a 4f776e65643d54525545             Uri-Query "Owned=TRUE"
/// ```
const PLGD_DISCOVERY: &str =
    "58011a2b0102030405060708b36f69630373656304646f786d4a4f776e65643d54525545";

#[test]
fn plgd_client_owned_true() {
    let bytes = h(PLGD_DISCOVERY);
    let msg = Message::parse(&bytes).unwrap();
    assert!(msg.path_is(&[b"oic", b"sec", b"doxm"]));
    assert_eq!(msg.uri_query().collect::<Vec<_>>(), [&b"Owned=TRUE"[..]]);
    assert_eq!(msg.first_unrecognised_critical(), None);
    assert_eq!(Filters::parse(msg.uri_query()).owned, Owned::True);
}

#[test]
fn plgd_client_baseline_doxm_request() {
    // SPEC section 5: GET /oic/sec/doxm?if=oic.if.baseline to the answer's source (CON):
    // 48 01 0007 token, Uri-Path as above, then Uri-Query (11 + 4) of 18 bytes (13 + 5).
    let bytes = h(concat!(
        "480100070102030405060708b36f69630373656304646f786d",
        "4d05",
        "69663d6f69632e69662e626173656c696e65",
    ));
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.ty(), MessageType::Confirmable);
    let filters = Filters::parse(msg.uri_query());
    assert_eq!(filters.interface, Some(&b"oic.if.baseline"[..]));
    assert_eq!(filters.owned, Owned::Absent);
}

#[test]
fn owned_spellings_of_both_clients_in_one_query() {
    // Keys and `owned` values compare case-insensitively; the first key wins (SPEC section 2).
    let values: [&[u8]; 1] = [b"OWNED=false&owned=TRUE"];
    assert_eq!(Filters::parse(values).owned, Owned::False);
    let args: Vec<query::Arg<'_>> = query::args(values).collect();
    assert_eq!(args.len(), 2);
    assert!(args[0].key_is("owned") && args[1].key_is("Owned"));
}
