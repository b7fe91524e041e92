//! The check behind the `coap_parse` fuzz target (and its corpus replay in tests/fuzz_corpus.rs).
//!
//! Any input: [`Message::parse`] must not panic, and [`Message::parse_with`] and
//! [`RequestFacts::parse`] (the engine's one pass) give the same verdict. When it accepts the
//! input:
//!
//! - `parse_with` visits exactly the options [`Message::options`] yields, and the one-pass
//!   request facts are those [`RequestFacts::from_message`] reads through the accessors;
//! - every option and every typed accessor agrees with a reference computed here from the plain
//!   option list and the option table of SPEC section 3 (not from `wire::option`);
//! - writing the same fields back with [`Writer`] yields a message that parses to the same fields
//!   and is the *same bytes*. The encoding is unique, so byte equality is the right assertion:
//!   an option delta or length has exactly one form (nibble 0..=12 for 0..=12, nibble 13 plus
//!   one byte for 13..=268, nibble 14 plus two bytes for 269..=65804: the ranges are disjoint, so
//!   there is no non-minimal extension to normalise), the header bits are all fields, and the
//!   payload marker is present exactly when the payload is non-empty (`0xFF` with nothing after
//!   it is rejected by the parser, and the writer writes no marker for an empty payload).

use crate::policy::{Delivery, RequestFacts};
use crate::wire::query::Filters;
use crate::wire::{CoapOption, Code, Message, MessageType, Writer};

/// SPEC section 3: the options the gate recognises, as `(number, max_len, repeatable)`.
const SPEC_OPTIONS: [(u16, usize, bool); 7] = [
    (11, 255, true),  // Uri-Path
    (12, 2, false),   // Content-Format
    (15, 255, true),  // Uri-Query
    (17, 2, false),   // Accept
    (258, 1, false),  // No-Response
    (2049, 2, false), // OCF-Accept-Content-Format-Version
    (2053, 2, false), // OCF-Content-Format-Version
];

/// Runs one input; panics on any violated invariant.
pub fn check(data: &[u8]) {
    let mut visited = Vec::new();
    let one_pass = Message::parse_with(data, |opt| visited.push(opt));
    let facts = RequestFacts::parse(data, Delivery::Multicast);
    let Ok(msg) = Message::parse(data) else {
        assert_eq!(one_pass, Message::parse(data), "parse_with's error");
        assert_eq!(facts.err(), Message::parse(data).err(), "RequestFacts::parse's error");
        return;
    };
    assert_eq!(one_pass, Ok(msg), "parse_with's message");
    let opts: Vec<CoapOption<'_>> = msg.options().collect();
    assert_eq!(visited, opts, "parse_with's visits");
    check_accessors(&msg, &opts);
    let facts = facts.expect("RequestFacts::parse accepts what parse accepts").1;
    assert_eq!(facts, RequestFacts::from_message(&msg, Delivery::Multicast), "one-pass facts");

    // Write the same fields back; the input length is enough since the encoding is unique.
    let mut buf = vec![0u8; data.len()];
    let len = rewrite(&msg, &opts, &mut buf)
        .unwrap_or_else(|e| panic!("writer refused a message the parser accepted: {e}"));
    let again = Message::parse(&buf[..len]).expect("the writer's output parses");
    assert_eq!(again.ty(), msg.ty(), "type");
    assert_eq!(again.code(), msg.code(), "code");
    assert_eq!(again.message_id(), msg.message_id(), "message id");
    assert_eq!(again.token(), msg.token(), "token");
    assert_eq!(again.options().collect::<Vec<_>>(), opts, "options");
    assert_eq!(again.payload(), msg.payload(), "payload");
    assert_eq!(&buf[..len], data, "re-encoding gives different bytes");
}

fn rewrite(
    msg: &Message<'_>,
    opts: &[CoapOption<'_>],
    buf: &mut [u8],
) -> Result<usize, crate::wire::WriteError> {
    let mut w = Writer::new(buf, msg.ty(), msg.code(), msg.message_id(), msg.token())?;
    for opt in opts {
        w.option(opt.number, opt.value)?;
    }
    w.payload(msg.payload())
}

fn check_accessors(msg: &Message<'_>, opts: &[CoapOption<'_>]) {
    assert_eq!(MessageType::from_bits(msg.ty() as u8), msg.ty());
    assert!(["CON", "NON", "ACK", "RST"].contains(&msg.ty().as_str()));
    let code = msg.code();
    assert_eq!(Code::new(code.class(), code.detail()), code);
    assert_eq!(code.is_request(), code.class() == 0 && code.detail() != 0);
    assert_eq!(code.to_string(), format!("{}.{:02}", code.byte() >> 5, code.byte() & 0x1f));
    assert!(msg.token().len() <= 8);

    assert!(opts.windows(2).all(|w| w[0].number <= w[1].number), "options out of order");
    for opt in opts {
        let want = (opt.value.len() <= 4).then(|| be_uint(opt.value));
        assert_eq!(opt.uint(), want, "uint of option {}", opt.number);
    }
    // `values(n)` walks up to `n`: checking every number present would be quadratic, so check
    // the options of SPEC section 3, the first and last few numbers, and some maybe absent.
    let mut numbers: Vec<u16> = opts.iter().map(|o| o.number).collect();
    numbers.dedup();
    let ends = numbers.iter().take(8).chain(numbers.iter().rev().take(2)).copied();
    let known = SPEC_OPTIONS.iter().map(|d| d.0);
    for n in ends.chain(known).chain([0, 1, 65_535]) {
        assert_eq!(msg.values(n).collect::<Vec<_>>(), values(opts, n), "values({n})");
    }
    let path = values(opts, 11);
    assert_eq!(msg.uri_path().collect::<Vec<_>>(), path);
    assert!(msg.path_is(&path));
    let mut longer = path.clone();
    longer.push(b"x");
    assert!(!msg.path_is(&longer));
    assert_eq!(msg.uri_query().collect::<Vec<_>>(), values(opts, 15));
    assert_eq!(Filters::parse(msg.uri_query()), Filters::parse(values(opts, 15)));

    assert_eq!(msg.content_format().map(u32::from), spec_uint(opts, 12));
    assert_eq!(msg.accept().map(u32::from), spec_uint(opts, 17));
    assert_eq!(msg.no_response().map(u32::from), spec_uint(opts, 258));
    assert_eq!(msg.ocf_accept_content_format_version().map(u32::from), spec_uint(opts, 2049));
    assert_eq!(msg.ocf_content_format_version().map(u32::from), spec_uint(opts, 2053));
    assert_eq!(msg.first_unrecognised_critical(), spec_unrecognised_critical(opts));
}

fn values<'a>(opts: &[CoapOption<'a>], number: u16) -> Vec<&'a [u8]> {
    opts.iter().filter(|o| o.number == number).map(|o| o.value).collect()
}

fn be_uint(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, &b| acc << 8 | u32::from(b))
}

fn spec(number: u16) -> Option<(usize, bool)> {
    SPEC_OPTIONS.iter().find(|d| d.0 == number).map(|d| (d.1, d.2))
}

/// A non-repeatable uint option: its first occurrence when its length is in range (RFC 7252
/// 5.4.3: out of range is unrecognised; 5.4.5: later occurrences are supernumerary).
fn spec_uint(opts: &[CoapOption<'_>], number: u16) -> Option<u32> {
    let first = opts.iter().find(|o| o.number == number)?;
    let (max_len, _) = spec(number)?;
    (first.value.len() <= max_len).then(|| be_uint(first.value))
}

/// The first critical (odd) option that is unknown, out of range, or a supernumerary occurrence.
fn spec_unrecognised_critical(opts: &[CoapOption<'_>]) -> Option<u16> {
    let bad = |i: usize, o: &CoapOption<'_>| match spec(o.number) {
        None => true,
        Some((max_len, repeatable)) => {
            o.value.len() > max_len || (!repeatable && i > 0 && opts[i - 1].number == o.number)
        }
    };
    opts.iter().enumerate().find(|&(i, o)| o.number % 2 == 1 && bad(i, o)).map(|(_, o)| o.number)
}
