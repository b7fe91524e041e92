//! `doxm-gate decode HEX`: one CoAP datagram in, one JSON object out.
//!
//! The output lists every field exactly as on the wire (options in wire order, values and token
//! as lowercase hex), so that it can be compared with captures and with other decoders, and
//! then the Uri-Path and Uri-Query options as text:
//!
//! ```text
//! {"type":"NON","code":"0.01","mid":61901,"token":"61387b7099602b0b","options":[[11,"6f6963"],...],"uri_path":"/oic/sec/doxm","uri_query":["owned=FALSE"],"payload":""}
//! {"error":"option-value-truncated"}
//! ```
//!
//! `uri_path` is `/` and each Uri-Path value after a `/` (just `/` without any); `uri_query` has
//! one string per Uri-Query option. In both, a byte that is not printable ASCII, and `%` (and
//! `/` inside a path segment), is written `%XX` as in a URI (RFC 7252 section 6.5), so the text
//! is never ambiguous and never hides a byte.

use std::process::ExitCode;

use doxm_gate::wire::Message;
use serde::Serialize;

/// The JSON shape of a well-formed message. Field order is the output order.
#[derive(Serialize)]
struct Decoded {
    #[serde(rename = "type")]
    ty: &'static str,
    code: String,
    mid: u16,
    token: String,
    options: Vec<(u16, String)>,
    uri_path: String,
    uri_query: Vec<String>,
    payload: String,
}

#[derive(Serialize)]
struct Failed {
    error: &'static str,
}

/// Decodes `input` and prints the result; returns the exit status (0 ok, 1 malformed, 2 bad hex).
pub fn run(input: &str) -> ExitCode {
    let datagram = match parse_hex(input) {
        Ok(bytes) => bytes,
        Err(err) => {
            eprintln!("doxm-gate decode: the argument is not a hex string: {err}");
            return ExitCode::from(2);
        }
    };
    match render(&datagram) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(json) => {
            println!("{json}");
            ExitCode::from(1)
        }
    }
}

/// The JSON line for `datagram`: `Ok` for a well-formed message, `Err` for the error object.
fn render(datagram: &[u8]) -> Result<String, String> {
    match Message::parse(datagram) {
        Ok(msg) => {
            let decoded = Decoded {
                ty: msg.ty().as_str(),
                code: msg.code().to_string(),
                mid: msg.message_id(),
                token: hex::encode(msg.token()),
                options: msg.options().map(|o| (o.number, hex::encode(o.value))).collect(),
                uri_path: uri_path(&msg),
                uri_query: msg.uri_query().map(|q| uri_text(q, false)).collect(),
                payload: hex::encode(msg.payload()),
            };
            Ok(to_json(&decoded))
        }
        Err(err) => Err(to_json(&Failed { error: err.as_str() })),
    }
}

/// The Uri-Path options as one path: `/oic/sec/doxm`, or `/` without any.
fn uri_path(msg: &Message<'_>) -> String {
    let path: String =
        msg.uri_path().map(|segment| format!("/{}", uri_text(segment, true))).collect();
    if path.is_empty() {
        "/".to_owned()
    } else {
        path
    }
}

/// One option value as URI text: printable ASCII as is, other bytes, `%` and (in a path
/// segment) `/` as `%XX`.
fn uri_text(value: &[u8], segment: bool) -> String {
    let mut text = String::with_capacity(value.len());
    for &byte in value {
        let escape = !(0x21..=0x7e).contains(&byte) || byte == b'%' || (segment && byte == b'/');
        if escape {
            text.push_str(&format!("%{byte:02X}"));
        } else {
            text.push(char::from(byte));
        }
    }
    text
}

fn to_json(value: &impl Serialize) -> String {
    // Serialising plain strings and integers into a String cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

/// Hex digits, ignoring ASCII whitespace and one leading `0x`.
pub fn parse_hex(input: &str) -> Result<Vec<u8>, hex::FromHexError> {
    let trimmed = input.trim();
    let digits = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    let compact: String = digits.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    hex::decode(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_render_obt_request() {
        let bytes = doxm_gate::wire::fixtures::OBT_REQUEST;
        assert_eq!(
            render(&bytes).unwrap(),
            concat!(
                r#"{"type":"NON","code":"0.01","mid":61901,"token":"61387b7099602b0b","#,
                r#""options":[[11,"6f6963"],[11,"736563"],[11,"646f786d"],[15,"6f776e65643d46414c5345"],"#,
                r#"[17,"2710"],[2049,"0800"]],"uri_path":"/oic/sec/doxm","uri_query":["owned=FALSE"],"#,
                r#""payload":""}"#
            )
        );
    }

    #[test]
    fn test_uri_text_escapes() {
        assert_eq!(uri_text(b"owned=FALSE&di=x", false), "owned=FALSE&di=x");
        assert_eq!(uri_text(b"a/b %\xff", true), "a%2Fb%20%25%FF");
        assert_eq!(uri_text(b"a/b", false), "a/b");
        assert_eq!(uri_text(b"", true), "");
    }

    #[test]
    fn test_render_error() {
        assert_eq!(render(&[0x40]).unwrap_err(), r#"{"error":"header-truncated"}"#);
    }

    #[test]
    fn test_parse_hex_forms() {
        assert_eq!(parse_hex(" 0x40 01\n00 00 ").unwrap(), [0x40, 1, 0, 0]);
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("401").is_err());
    }
}
