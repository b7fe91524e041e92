//! The check behind the `query` fuzz target (and its corpus replay in tests/fuzz_corpus.rs).
//!
//! The input is split at every 0x00 byte into Uri-Query option values (so a corpus file is
//! readable text: `owned=FALSE\0di=...`). Then, against a naive reference written from SPEC
//! section 2 (split at `&`, skip empty arguments, key up to the first `=`; first occurrence of a
//! key wins, keys and `owned` values compare ASCII case-insensitively):
//!
//! - [`args`] yields exactly the reference arguments; no key contains `&` or `=`, no value `&`;
//! - [`Filters::parse`] gives the reference filters;
//! - the same values carried as Uri-Query options of a CoAP message come back unchanged from
//!   [`Message::uri_query`], with the same filters.

use crate::wire::query::{args, Arg, Filters, Owned};
use crate::wire::{option, Code, Message, MessageType, Writer};

/// Runs one input; panics on any violated invariant.
pub fn check(data: &[u8]) {
    let values: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let got: Vec<Arg<'_>> = args(values.iter().copied()).collect();
    for arg in &got {
        assert!(!arg.key.contains(&b'&') && !arg.key.contains(&b'='), "key {arg:?}");
        assert!(!arg.value.unwrap_or_default().contains(&b'&'), "value {arg:?}");
        assert!(!arg.key.is_empty() || arg.value.is_some(), "empty argument {arg:?}");
    }
    let want = reference_args(&values);
    assert_eq!(got, want, "arguments of {values:?}");
    let filters = Filters::parse(values.iter().copied());
    assert_eq!(filters, reference_filters(&want), "filters of {values:?}");

    let mut buf = vec![0u8; 4 + values.iter().map(|v| 5 + v.len()).sum::<usize>()];
    let len = carry(&values, &mut buf).expect("the buffer is large enough");
    let msg = Message::parse(&buf[..len]).expect("the writer's output parses");
    assert_eq!(msg.uri_query().collect::<Vec<_>>(), values);
    assert_eq!(Filters::parse(msg.uri_query()), filters);
}

/// A GET carrying `values` as Uri-Query options.
fn carry(values: &[&[u8]], buf: &mut [u8]) -> Result<usize, crate::wire::WriteError> {
    let mut w = Writer::new(buf, MessageType::NonConfirmable, Code::GET, 1, &[])?;
    for value in values {
        w.option(option::URI_QUERY, value)?;
    }
    Ok(w.finish())
}

fn reference_args<'a>(values: &[&'a [u8]]) -> Vec<Arg<'a>> {
    let pieces = values.iter().flat_map(|v| v.split(|&b| b == b'&'));
    pieces
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.iter().position(|&b| b == b'=') {
            Some(at) => Arg { key: &piece[..at], value: Some(&piece[at + 1..]) },
            None => Arg { key: piece, value: None },
        })
        .collect()
}

fn reference_filters<'a>(args: &[Arg<'a>]) -> Filters<'a> {
    let first = |key: &str| args.iter().find(|a| a.key.eq_ignore_ascii_case(key.as_bytes()));
    let value = |key: &str| first(key).map(|a| a.value.unwrap_or_default());
    let owned = match first("owned") {
        None => Owned::Absent,
        Some(a) => match a.value.map(|v| v.to_ascii_lowercase()).as_deref() {
            Some(b"true") => Owned::True,
            Some(b"false") => Owned::False,
            _ => Owned::Invalid,
        },
    };
    Filters {
        owned,
        di: value("di"),
        deviceuuid: value("deviceuuid"),
        interface: value("if"),
        rt: value("rt"),
    }
}
