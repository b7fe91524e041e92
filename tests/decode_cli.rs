//! `doxm-gate decode HEX`, run as users run it: the real binary, its stdout, stderr and exit code.
//!
//! Contract: one JSON line and exit 0 for a well-formed datagram; `{"error":"<reason>"}`
//! and exit 1 for a malformed one; a message on stderr, nothing on stdout and exit 2 for an
//! argument that is not hex.

use std::process::{Command, Output};
use std::sync::LazyLock;

/// SPEC section 4: the real 45-byte OBT request, as hex.
static OBT_REQUEST: LazyLock<String> =
    LazyLock::new(|| hex::encode(doxm_gate::wire::fixtures::OBT_REQUEST));

fn decode(arg: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_doxm-gate"))
        .args(["decode", arg])
        .output()
        .expect("the doxm-gate binary runs")
}

fn stdout(out: &Output) -> &str {
    std::str::from_utf8(&out.stdout).expect("stdout is UTF-8")
}

#[test]
fn obt_request_prints_the_issue_json_line() {
    let out = decode(&OBT_REQUEST);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let expected = concat!(
        r#"{"type":"NON","code":"0.01","mid":61901,"token":"61387b7099602b0b","#,
        r#""options":[[11,"6f6963"],[11,"736563"],[11,"646f786d"],"#,
        r#"[15,"6f776e65643d46414c5345"],[17,"2710"],[2049,"0800"]],"#,
        r#""uri_path":"/oic/sec/doxm","uri_query":["owned=FALSE"],"payload":""}"#,
        "\n"
    );
    assert_eq!(stdout(&out), expected);
    assert!(out.stderr.is_empty());
}

#[test]
fn ack_with_payload_and_repeated_options() {
    // 61 45 abcd: ACK 2.05 mid 43981, token 7f; c2 2710: Content-Format 10000;
    // e2 06ec 0800: 2053; ff 0102ff: payload.
    let out = decode("6145abcd7fc22710e206ec0800ff0102ff");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        concat!(
            r#"{"type":"ACK","code":"2.05","mid":43981,"token":"7f","#,
            r#""options":[[12,"2710"],[2053,"0800"]],"uri_path":"/","uri_query":[],"#,
            r#""payload":"0102ff"}"#,
            "\n"
        )
    );
}

#[test]
fn empty_rst_prints_empty_fields() {
    let out = decode("70000000");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        concat!(
            r#"{"type":"RST","code":"0.00","mid":0,"token":"","options":[],"uri_path":"/","#,
            r#""uri_query":[],"payload":""}"#,
            "\n"
        )
    );
}

#[test]
fn uri_path_and_queries_as_text() {
    // NON GET /oic/res/a%2Fb?rt=oic.r.doxm&if%FF: a segment holding "/" and a query holding a
    // byte that is not ASCII.
    // 50 01 0001: NON GET, no token; b3 6f6963 03 726573: oic / res; 03 612f62: "a/b";
    // 4d 00 72743d6f69632e722e646f786d: Uri-Query of 13 bytes; 03 6966ff.
    let out = decode("50010001b36f69630372657303612f624d0072743d6f69632e722e646f786d036966ff");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(stdout(&out)).unwrap();
    assert_eq!(json["uri_path"], "/oic/res/a%2Fb");
    assert_eq!(json["uri_query"], serde_json::json!(["rt=oic.r.doxm", "if%FF"]));
}

#[test]
fn uppercase_hex_digits_are_accepted() {
    let out = decode(&OBT_REQUEST.to_uppercase());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), stdout(&decode(&OBT_REQUEST)));
}

/// One malformed datagram per reason, each built by hand from RFC 7252 section 3.
const MALFORMED: [(&str, &str); 11] = [
    ("4001f1", "header-truncated"),
    ("80010001", "unknown-version"),
    ("49010001010203040506070809", "reserved-tkl"),
    ("44010001aabbcc", "token-truncated"),
    ("60000001ff00", "empty-message-not-empty"),
    ("40010001b161ff", "payload-marker-without-payload"),
    ("40010001f161", "reserved-delta-nibble-15"),
    ("40010001bf", "reserved-length-nibble-15"),
    ("40010001e001", "extended-field-truncated"),
    ("40010001e0fef210", "option-number-overflow"),
    ("40010001b36f69", "option-value-truncated"),
];

#[test]
fn every_error_reason_exits_1() {
    for (datagram, reason) in MALFORMED {
        let out = decode(datagram);
        assert_eq!(out.status.code(), Some(1), "{datagram}");
        assert_eq!(stdout(&out), format!("{{\"error\":\"{reason}\"}}\n"), "{datagram}");
    }
}

#[test]
fn malformed_table_covers_all_eleven_reasons() {
    let mut reasons: Vec<&str> = MALFORMED.iter().map(|(_, r)| *r).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), 11);
}

#[test]
fn empty_argument_is_a_truncated_header() {
    let out = decode("");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "{\"error\":\"header-truncated\"}\n");
}

fn assert_bad_hex(arg: &str) {
    let out = decode(arg);
    assert_eq!(out.status.code(), Some(2), "{arg:?}");
    assert!(out.stdout.is_empty(), "{arg:?}: stdout {:?}", stdout(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty(), "{arg:?}: no message");
}

#[test]
fn odd_length_hex_exits_2() {
    assert_bad_hex("4001f1c");
}

#[test]
fn non_hex_characters_exit_2() {
    assert_bad_hex("4001zz00");
    assert_bad_hex("g0010001");
}
