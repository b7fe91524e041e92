//! Our CBOR encoders checked with an independent decoder (ciborium).
//!
//! Every representation the gate serves is decoded into a `ciborium::Value` and compared with
//! a value built here by hand from SPEC sections 4 and 5: keys in the expected order, and the
//! right types (integers, booleans, 36-character lowercase UUID text, arrays, nested maps). The
//! decoder must also consume every byte, so trailing garbage cannot hide.

use ciborium::Value;
use doxm_gate::wire::fixtures::{real_doxm, REAL_DOXM_PAYLOAD};
use doxm_gate::wire::ocf::{self, oxm, sct, DeviceInfo, Doxm, Link, View};
use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

const NIL: &str = "00000000-0000-0000-0000-000000000000";
const DEVICE: &str = "50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403";

// ---------------------------------------------------------------------------------------------
// Building expected values, and decoding.
// ---------------------------------------------------------------------------------------------

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

fn texts(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| text(s)).collect())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// Decodes exactly one CBOR item that spans all of `bytes`.
fn decode(bytes: &[u8]) -> Value {
    let mut reader = bytes;
    let value: Value = ciborium::from_reader(&mut reader).expect("ciborium decodes our output");
    assert!(reader.is_empty(), "{} bytes left after the item", reader.len());
    value
}

/// Asserts the keys of a map, in order (for a readable failure before the full comparison).
fn assert_keys(value: &Value, keys: &[&str]) {
    let Value::Map(pairs) = value else { panic!("not a map: {value:?}") };
    let got: Vec<&str> = pairs.iter().map(|(k, _)| k.as_text().expect("text key")).collect();
    assert_eq!(got, keys);
}

/// Every text value under a key named like a UUID is 36 characters of lowercase hyphenated hex.
fn assert_uuid_texts(value: &Value) {
    match value {
        Value::Map(pairs) => {
            for (k, v) in pairs {
                let key = k.as_text().expect("text key");
                if key.ends_with("uuid") || key == "di" || key == "piid" {
                    let s = v.as_text().unwrap_or_else(|| panic!("{key} is not text: {v:?}"));
                    assert_uuid_text(s);
                }
                if key == "anchor" {
                    let s = v.as_text().expect("anchor is text");
                    assert_uuid_text(s.strip_prefix("ocf://").expect("anchor is ocf://<uuid>"));
                }
                assert_uuid_texts(v);
            }
        }
        Value::Array(items) => items.iter().for_each(assert_uuid_texts),
        _ => {}
    }
}

fn assert_uuid_text(s: &str) {
    assert_eq!(s.len(), 36, "{s:?}");
    assert!(s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-')), "{s:?}");
    assert_eq!(Uuid::parse_str(s).unwrap().hyphenated().to_string(), s);
}

fn encode_doxm(doxm: &Doxm<'_>, view: View) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    let len = doxm.encode(view, &mut buf).expect("fits");
    buf[..len].to_vec()
}

// ---------------------------------------------------------------------------------------------
// doxm (SPEC section 4).
// ---------------------------------------------------------------------------------------------

const DOXM_KEYS: [&str; 7] =
    ["oxms", "oxmsel", "sct", "owned", "devowneruuid", "deviceuuid", "rowneruuid"];

fn expected_real_doxm() -> Vec<(&'static str, Value)> {
    vec![
        ("oxms", Value::Array(vec![int(0)])),
        ("oxmsel", int(4)),
        ("sct", int(329)),
        ("owned", Value::Bool(false)),
        ("devowneruuid", text(NIL)),
        ("deviceuuid", text(DEVICE)),
        ("rowneruuid", text(NIL)),
    ]
}

#[test]
fn test_real_doxm_payload_decodes_to_expected() {
    let real = REAL_DOXM_PAYLOAD.to_vec();
    let expected = map(expected_real_doxm());
    assert_eq!(decode(&real), expected, "the captured payload itself");

    let ours = encode_doxm(&real_doxm(), View::Default);
    assert_eq!(ours, real, "byte-identical to the capture");
    let value = decode(&ours);
    assert_keys(&value, &DOXM_KEYS);
    assert_uuid_texts(&value);
    assert_eq!(value, expected);
    assert_eq!((ours[0], ours[ours.len() - 1]), (0xbf, 0xff), "indefinite-length map");
}

#[test]
fn test_baseline_doxm_has_rt_and_if_first() {
    let ours = encode_doxm(&real_doxm(), View::Baseline);
    let mut pairs =
        vec![("rt", texts(&["oic.r.doxm"])), ("if", texts(&["oic.if.rw", "oic.if.baseline"]))];
    pairs.extend(expected_real_doxm());
    let value = decode(&ours);
    let mut keys = vec!["rt", "if"];
    keys.extend(DOXM_KEYS);
    assert_keys(&value, &keys);
    assert_uuid_texts(&value);
    assert_eq!(value, map(pairs));
    assert_eq!((ours[0], ours[ours.len() - 1]), (0xbf, 0xff), "indefinite-length map");
}

#[test]
fn test_owned_doxm_with_several_oxms() {
    let owner = Uuid::parse_str("C0FFEE00-1234-4ABC-8DEF-0123456789AB").unwrap();
    let doxm = Doxm {
        oxms: &[oxm::JUST_WORKS, oxm::RANDOM_PIN, oxm::MANUFACTURER_CERTIFICATE],
        oxmsel: oxm::MANUFACTURER_CERTIFICATE,
        sct: sct::CERTIFICATE,
        owned: true,
        devowneruuid: owner,
        rowneruuid: owner,
        ..real_doxm()
    };
    let value = decode(&encode_doxm(&doxm, View::Default));
    assert_uuid_texts(&value);
    assert_eq!(
        value,
        map(vec![
            ("oxms", Value::Array(vec![int(0), int(1), int(2)])),
            ("oxmsel", int(2)),
            ("sct", int(8)),
            ("owned", Value::Bool(true)),
            ("devowneruuid", text("c0ffee00-1234-4abc-8def-0123456789ab")),
            ("deviceuuid", text(DEVICE)),
            ("rowneruuid", text("c0ffee00-1234-4abc-8def-0123456789ab")),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// /oic/res (SPEC section 5).
// ---------------------------------------------------------------------------------------------

const EPS: [&str; 2] = ["coap://[fe80::b1d6]:44129", "coaps://[fe80::b1d6]:44130"];

fn doxm_link() -> Link<'static> {
    Link {
        anchor: Uuid::parse_str(DEVICE).unwrap(),
        href: "/oic/sec/doxm",
        rt: &[ocf::RT_DOXM],
        interfaces: &ocf::DOXM_INTERFACES,
        bm: 1,
        eps: &EPS,
    }
}

fn expected_link(anchor: &str, eps: &[&str]) -> Value {
    map(vec![
        ("anchor", text(&format!("ocf://{anchor}"))),
        ("href", text("/oic/sec/doxm")),
        ("rt", texts(&["oic.r.doxm"])),
        ("if", texts(&["oic.if.rw", "oic.if.baseline"])),
        ("p", map(vec![("bm", int(1))])),
        ("eps", Value::Array(eps.iter().map(|ep| map(vec![("ep", text(ep))])).collect())),
    ])
}

#[test]
fn test_links_decode_to_expected() {
    let second = Link {
        anchor: Uuid::parse_str("6E4B0000-0000-4000-8000-00000000ABCD").unwrap(),
        eps: &EPS[..1],
        ..doxm_link()
    };
    let mut buf = [0u8; 1024];
    let len = ocf::encode_links(&[doxm_link(), second], &mut buf).unwrap();
    let value = decode(&buf[..len]);
    assert_uuid_texts(&value);
    let Value::Array(links) = &value else { panic!("not an array: {value:?}") };
    assert_keys(&links[0], &["anchor", "href", "rt", "if", "p", "eps"]);
    assert_eq!(
        value,
        Value::Array(vec![
            expected_link(DEVICE, &EPS),
            expected_link("6e4b0000-0000-4000-8000-00000000abcd", &EPS[..1]),
        ])
    );

    let len = ocf::encode_links(&[], &mut buf).unwrap();
    assert_eq!(decode(&buf[..len]), Value::Array(vec![]));
}

#[test]
fn test_res_baseline_decodes_to_expected() {
    let mut buf = [0u8; 1024];
    let len = ocf::encode_res_baseline(&[doxm_link()], &mut buf).unwrap();
    let value = decode(&buf[..len]);
    assert_uuid_texts(&value);
    let Value::Array(items) = &value else { panic!("not an array: {value:?}") };
    assert_keys(&items[0], &["rt", "if", "links"]);
    assert_eq!(
        value,
        Value::Array(vec![map(vec![
            ("rt", texts(&["oic.wk.res"])),
            ("if", texts(&["oic.if.ll", "oic.if.baseline"])),
            ("links", Value::Array(vec![expected_link(DEVICE, &EPS)])),
        ])])
    );
}

// ---------------------------------------------------------------------------------------------
// /oic/d (SPEC section 5).
// ---------------------------------------------------------------------------------------------

fn device_info() -> DeviceInfo<'static> {
    DeviceInfo {
        di: Uuid::parse_str(DEVICE).unwrap(),
        n: "Bridged lamp 7",
        rt: &[ocf::RT_DEVICE, "oic.d.virtual", "oic.d.light"],
        icv: "ocf.2.0.5",
        dmv: "ocf.res.1.3.0,ocf.sh.1.3.0",
        piid: Uuid::parse_str("A1B2C3D4-0000-4000-8000-0000000000FF").unwrap(),
    }
}

fn expected_device(view: View) -> Value {
    let mut pairs = vec![("rt", texts(&["oic.wk.d", "oic.d.virtual", "oic.d.light"]))];
    if view == View::Baseline {
        pairs.push(("if", texts(&["oic.if.r", "oic.if.baseline"])));
    }
    pairs.extend([
        ("n", text("Bridged lamp 7")),
        ("di", text(DEVICE)),
        ("icv", text("ocf.2.0.5")),
        ("dmv", text("ocf.res.1.3.0,ocf.sh.1.3.0")),
        ("piid", text("a1b2c3d4-0000-4000-8000-0000000000ff")),
    ]);
    map(pairs)
}

#[test]
fn test_device_info_both_views() {
    for (view, keys) in [
        (View::Default, &["rt", "n", "di", "icv", "dmv", "piid"][..]),
        (View::Baseline, &["rt", "if", "n", "di", "icv", "dmv", "piid"][..]),
    ] {
        let mut buf = [0u8; 1024];
        let len = device_info().encode(view, &mut buf).unwrap();
        let value = decode(&buf[..len]);
        assert_keys(&value, keys);
        assert_uuid_texts(&value);
        assert_eq!(value, expected_device(view), "{view:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary field values: every integer head size, negative oxms, long and non-ASCII text.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_doxm_any_fields_decode(
        oxms in vec(any::<i32>(), 0..=8),
        oxmsel in any::<i32>(),
        sct in any::<u32>(),
        owned in any::<bool>(),
        uuids in any::<[u128; 3]>(),
        baseline in any::<bool>(),
    ) {
        let [owner, device, rowner] = uuids.map(Uuid::from_u128);
        let doxm = Doxm {
            oxms: &oxms,
            oxmsel,
            sct,
            owned,
            devowneruuid: owner,
            deviceuuid: device,
            rowneruuid: rowner,
        };
        let view = if baseline { View::Baseline } else { View::Default };
        let mut pairs = Vec::new();
        if baseline {
            pairs.push(("rt", texts(&["oic.r.doxm"])));
            pairs.push(("if", texts(&["oic.if.rw", "oic.if.baseline"])));
        }
        pairs.extend([
            ("oxms", Value::Array(oxms.iter().map(|&o| int(i64::from(o))).collect())),
            ("oxmsel", int(i64::from(oxmsel))),
            ("sct", int(i64::from(sct))),
            ("owned", Value::Bool(owned)),
            ("devowneruuid", text(&owner.hyphenated().to_string())),
            ("deviceuuid", text(&device.hyphenated().to_string())),
            ("rowneruuid", text(&rowner.hyphenated().to_string())),
        ]);
        let mut buf = [0u8; Doxm::MAX_LEN];
        let len = doxm.encode(view, &mut buf).expect("MAX_LEN holds up to 8 oxms");
        let value = decode(&buf[..len]);
        assert_uuid_texts(&value);
        prop_assert_eq!(value, map(pairs));
    }

    #[test]
    fn prop_device_info_any_text_decodes(
        n in "\\PC{0,300}",
        icv in "[a-z0-9.]{0,30}",
        rt in vec("[a-z.]{1,40}", 0..4),
        di in any::<u128>(),
    ) {
        let rt: Vec<&str> = rt.iter().map(String::as_str).collect();
        let device = DeviceInfo { n: &n, icv: &icv, rt: &rt, di: Uuid::from_u128(di), ..device_info() };
        let mut buf = vec![0u8; 4096];
        let len = device.encode(View::Default, &mut buf).expect("fits");
        let value = decode(&buf[..len]);
        assert_uuid_texts(&value);
        prop_assert_eq!(
            value,
            map(vec![
                ("rt", texts(&rt)),
                ("n", text(&n)),
                ("di", text(&Uuid::from_u128(di).hyphenated().to_string())),
                ("icv", text(&icv)),
                ("dmv", text("ocf.res.1.3.0,ocf.sh.1.3.0")),
                ("piid", text("a1b2c3d4-0000-4000-8000-0000000000ff")),
            ])
        );
    }
}
