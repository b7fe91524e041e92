//! URI query arguments (SPEC section 2) and the filters a discovery request carries.
//!
//! Each Uri-Query option holds one or more `key[=value]` arguments separated by `&`. CoAP
//! options are not percent-encoded (RFC 7252 section 6.5), so values are taken literally. Keys
//! compare case-insensitively, and so do the `owned` values: the IoTivity-Lite OBT sends
//! `owned=FALSE`, the plgd client `Owned=TRUE`, and both are spec behaviour here, not leniency.
//! The first occurrence of a key wins; unknown keys are ignored; empty arguments (`a&&b`) are
//! skipped.
//!
//! ```
//! use doxm_gate::wire::query::{Filters, Owned};
//!
//! let values: [&[u8]; 2] = [b"owned=FALSE&di=6e4b", b"owned=true&DeviceUUID=6e4b"];
//! let filters = Filters::parse(values);
//! assert_eq!(filters.owned, Owned::False); // the first `owned` wins
//! assert_eq!(filters.di, Some(&b"6e4b"[..]));
//! assert_eq!(filters.deviceuuid, Some(&b"6e4b"[..])); // keys in any case
//! ```

use nom::bytes::complete::{tag, take_till};
use nom::combinator::{opt, rest};
use nom::sequence::preceded;
use nom::{IResult, Parser};

/// One `key[=value]` argument. `value` is `None` when there is no `=`, `Some(b"")` for `key=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a> {
    /// The key, as sent.
    pub key: &'a [u8],
    /// The value after the first `=`, as sent.
    pub value: Option<&'a [u8]>,
}

impl Arg<'_> {
    /// Whether the key is `key`, compared case-insensitively (ASCII).
    pub fn key_is(&self, key: &str) -> bool {
        self.key.eq_ignore_ascii_case(key.as_bytes())
    }
}

/// The arguments of every Uri-Query value, in order; see [`args`].
#[derive(Debug, Clone)]
pub struct Args<'a, I> {
    values: I,
    current: Option<&'a [u8]>,
}

/// Splits Uri-Query option values into arguments, lazily and without allocating.
pub fn args<'a, I: IntoIterator<Item = &'a [u8]>>(values: I) -> Args<'a, I::IntoIter> {
    Args { values: values.into_iter(), current: None }
}

impl<'a, I: Iterator<Item = &'a [u8]>> Iterator for Args<'a, I> {
    type Item = Arg<'a>;

    fn next(&mut self) -> Option<Arg<'a>> {
        loop {
            let current = match self.current.take() {
                Some(current) => current,
                None => self.values.next()?,
            };
            let (arg, more) = match current.iter().position(|&b| b == b'&') {
                Some(at) => (&current[..at], Some(&current[at + 1..])),
                None => (current, None),
            };
            self.current = more;
            if !arg.is_empty() {
                return Some(parse_arg(arg));
            }
        }
    }
}

/// What `parse_arg`'s nom parser yields: the key, and the value after `=` if there is one.
type KeyValue<'a> = (&'a [u8], Option<&'a [u8]>);

/// `key` up to the first `=`, and the rest as the value when there is an `=`.
fn parse_arg(arg: &[u8]) -> Arg<'_> {
    let parsed: IResult<&[u8], KeyValue<'_>, ()> =
        (take_till(|b| b == b'='), opt(preceded(tag(&b"="[..]), rest))).parse(arg);
    match parsed {
        Ok((_, (key, value))) => Arg { key, value },
        // `take_till`, `opt` and `rest` accept any input; keep the whole argument as the key.
        Err(_) => Arg { key: arg, value: None },
    }
}

/// The `owned` filter of a doxm request (SPEC section 2 and the table of section 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owned {
    /// No `owned` argument.
    Absent,
    /// `owned=true`, in any case.
    True,
    /// `owned=false`, in any case.
    False,
    /// `owned` with any other value (`0`, `1`, `yes`, empty) or without `=`.
    Invalid,
}

impl Owned {
    /// Interprets the value of an `owned` argument.
    pub fn from_value(value: Option<&[u8]>) -> Owned {
        match value {
            Some(v) if v.eq_ignore_ascii_case(b"true") => Owned::True,
            Some(v) if v.eq_ignore_ascii_case(b"false") => Owned::False,
            _ => Owned::Invalid,
        }
    }

    /// The stable label of this value (for metrics and reports).
    pub const fn as_str(self) -> &'static str {
        match self {
            Owned::Absent => "absent",
            Owned::True => "true",
            Owned::False => "false",
            Owned::Invalid => "invalid",
        }
    }
}

/// The filters of a request, each from the first occurrence of its key.
///
/// A key present without `=` yields `Some(b"")`, which matches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filters<'a> {
    /// `owned`: which devices a doxm discovery asks for.
    pub owned: Owned,
    /// `di`: the device UUID a multicast request is addressed to (compared case-insensitively);
    /// IoTivity-Lite's spelling.
    pub di: Option<&'a [u8]>,
    /// `deviceuuid`: the same filter under the name of OCF's published `oic.sec.doxm` schema
    /// (swagger2.0, 2020-10-19). Each of `di` and `deviceuuid` filters on its own.
    pub deviceuuid: Option<&'a [u8]>,
    /// `if`: the interface (`oic.if.rw`, `oic.if.baseline`, ...), compared exactly.
    pub interface: Option<&'a [u8]>,
    /// `rt`: the resource type that `/oic/res` links must have.
    pub rt: Option<&'a [u8]>,
}

impl<'a> Filters<'a> {
    /// The filters of a request without Uri-Query: nothing asked for.
    pub const NONE: Filters<'static> =
        Filters { owned: Owned::Absent, di: None, deviceuuid: None, interface: None, rt: None };

    /// Reads the filters from the Uri-Query option values of one request.
    pub fn parse<I: IntoIterator<Item = &'a [u8]>>(values: I) -> Filters<'a> {
        let mut filters = Filters::NONE;
        for value in values {
            filters.push(value);
        }
        filters
    }

    /// Reads the arguments of one more Uri-Query value, the next in wire order (an argument
    /// never spans two values). This is [`Filters::parse`] one value at a time, for a caller
    /// that meets the values one by one, such as a [`super::coap::Message::parse_with`] visitor.
    pub fn push(&mut self, value: &'a [u8]) {
        for arg in args([value]) {
            let value = arg.value.unwrap_or_default();
            if arg.key_is("owned") {
                if self.owned == Owned::Absent {
                    self.owned = Owned::from_value(arg.value);
                }
            } else if arg.key_is("di") {
                self.di.get_or_insert(value);
            } else if arg.key_is("deviceuuid") {
                self.deviceuuid.get_or_insert(value);
            } else if arg.key_is("if") {
                self.interface.get_or_insert(value);
            } else if arg.key_is("rt") {
                self.rt.get_or_insert(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&'static str]) -> Filters<'static> {
        Filters::parse(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn test_iotivity_lite_owned_false() {
        assert_eq!(parse(&["owned=FALSE"]).owned, Owned::False);
    }

    #[test]
    fn test_plgd_owned_true() {
        assert_eq!(parse(&["Owned=TRUE"]).owned, Owned::True);
    }

    #[test]
    fn test_owned_values() {
        for (query, owned) in [
            ("owned=false", Owned::False),
            ("owned=tRuE", Owned::True),
            ("owned=0", Owned::Invalid),
            ("owned=1", Owned::Invalid),
            ("owned=yes", Owned::Invalid),
            ("owned=", Owned::Invalid),
            ("owned", Owned::Invalid),
            ("owned=false ", Owned::Invalid),
            ("owned==false", Owned::Invalid),
            ("ownedx=false", Owned::Absent),
            ("", Owned::Absent),
        ] {
            assert_eq!(parse(&[query]).owned, owned, "{query:?}");
        }
    }

    #[test]
    fn test_first_occurrence_wins() {
        assert_eq!(parse(&["owned=false&owned=true"]).owned, Owned::False);
        assert_eq!(parse(&["owned=bogus", "owned=false"]).owned, Owned::Invalid);
        assert_eq!(parse(&["if=oic.if.rw&IF=oic.if.baseline"]).interface, Some(&b"oic.if.rw"[..]));
    }

    #[test]
    fn test_args_split() {
        let values: [&[u8]; 2] = [b"a=1&&b&c=", b"=x&d=e=f"];
        let got: Vec<Arg<'_>> = args(values).collect();
        assert_eq!(
            got,
            [
                Arg { key: b"a", value: Some(b"1") },
                Arg { key: b"b", value: None },
                Arg { key: b"c", value: Some(b"") },
                Arg { key: b"", value: Some(b"x") },
                Arg { key: b"d", value: Some(b"e=f") },
            ]
        );
    }

    #[test]
    fn test_all_filters() {
        let f = parse(&["rt=oic.r.doxm", "di=ABC&if=oic.if.baseline&unknown=1"]);
        assert_eq!(f.rt, Some(&b"oic.r.doxm"[..]));
        assert_eq!(f.di, Some(&b"ABC"[..]));
        assert_eq!(f.interface, Some(&b"oic.if.baseline"[..]));
        assert_eq!(f.owned, Owned::Absent);
        assert_eq!(parse(&["di"]).di, Some(&b""[..]));
    }

    #[test]
    fn test_deviceuuid() {
        let f = parse(&["owned=FALSE", "DeviceUUID=50E1A3AE-6A0C-4AC0-7B4F-D1D818AE3403"]);
        assert_eq!(f.deviceuuid, Some(&b"50E1A3AE-6A0C-4AC0-7B4F-D1D818AE3403"[..]));
        assert_eq!(f.di, None, "deviceuuid is not di");
        assert_eq!(parse(&["deviceuuid=a&deviceuuid=b"]).deviceuuid, Some(&b"a"[..]));
        assert_eq!(parse(&["deviceuuid", "deviceuuid=b"]).deviceuuid, Some(&b""[..]));
        assert_eq!(parse(&["deviceuuidx=a&xdeviceuuid=b"]).deviceuuid, None);
        let both = parse(&["di=x&deviceuuid=y"]);
        assert_eq!((both.di, both.deviceuuid), (Some(&b"x"[..]), Some(&b"y"[..])));
    }
}
