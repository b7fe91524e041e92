//! Every combination of delivery, `owned` query, `di`/`deviceuuid` query, `dos.s`, `owned`, DOC,
//! bridge and state-known, checked against the tables of SPEC section 1.1 written out here
//! independently of the code.
//!
//! Each request is a real datagram built with the writer and parsed back, so the test also covers
//! the wire -> policy path (query splitting, case, first occurrence wins).

use doxm_gate::policy::{self, Bridge, Decision, Delivery, DeviceFacts, Dos, Outcome, Reason};
use doxm_gate::wire::{option, Code, Message, MessageType, Writer};
use uuid::Uuid;

/// The `owned` query variants of the test, with the query strings that carry them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OwnedQuery {
    Absent,
    True,
    False,
    Invalid,
    /// `owned=false&owned=true`: the first occurrence wins, so this is `false`.
    DuplicatedFalseFirst,
    /// `Owned=TRUE` then `owned=false` in two options: `true`.
    DuplicatedTrueFirst,
}

impl OwnedQuery {
    const ALL: [OwnedQuery; 6] = [
        OwnedQuery::Absent,
        OwnedQuery::True,
        OwnedQuery::False,
        OwnedQuery::Invalid,
        OwnedQuery::DuplicatedFalseFirst,
        OwnedQuery::DuplicatedTrueFirst,
    ];

    fn options(self) -> &'static [&'static str] {
        match self {
            OwnedQuery::Absent => &[],
            OwnedQuery::True => &["owned=TRUE"],
            OwnedQuery::False => &["owned=FALSE"],
            OwnedQuery::Invalid => &["owned=0"],
            OwnedQuery::DuplicatedFalseFirst => &["owned=false&owned=true"],
            OwnedQuery::DuplicatedTrueFirst => &["Owned=TRUE", "owned=false"],
        }
    }
}

/// The device every request of the exhaustive test is decided for.
const THIS: &str = "50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403";

/// What pre-filter 5 makes of a multicast's `di` and `deviceuuid` for the device [`THIS`]
/// (SPEC 1.1; unicast checks neither).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// Every filter present names the device (or none is present).
    Passes,
    /// `deviceuuid` is empty or not a hyphenated UUID: no device is named, every one ignores.
    DeviceuuidInvalid,
    /// `di` names another device.
    DiOther,
    /// `deviceuuid` names another device (and `di`, if present, this one).
    DeviceuuidOther,
}

/// Another device's UUID.
const OTHER: &str = "00000000-0000-0000-0000-000000000001";

/// The `di` / `deviceuuid` query variants: the Uri-Query options that carry them, and what
/// they are for [`THIS`], decided by reading SPEC 1.1 and 2 (not by the parser).
fn targets() -> Vec<(&'static str, Vec<String>, Target)> {
    let upper = THIS.to_uppercase();
    let simple = THIS.replace('-', "");
    vec![
        ("none", vec![], Target::Passes),
        ("di this", vec![format!("di={THIS}")], Target::Passes),
        ("deviceuuid THIS", vec![format!("deviceuuid={upper}")], Target::Passes),
        ("DeviceUUID key case", vec![format!("DeviceUUID={THIS}")], Target::Passes),
        ("deviceuuid other", vec![format!("deviceuuid={OTHER}")], Target::DeviceuuidOther),
        ("deviceuuid=", vec!["deviceuuid=".into()], Target::DeviceuuidInvalid),
        ("deviceuuid without =", vec!["deviceuuid".into()], Target::DeviceuuidInvalid),
        ("deviceuuid simple", vec![format!("deviceuuid={simple}")], Target::DeviceuuidInvalid),
        (
            "first deviceuuid wins",
            vec![format!("deviceuuid={OTHER}&deviceuuid={THIS}")],
            Target::DeviceuuidOther,
        ),
        ("di and deviceuuid this", vec![format!("di={THIS}&deviceuuid={upper}")], Target::Passes),
        (
            "di this, deviceuuid other",
            vec![format!("di={THIS}"), format!("deviceuuid={OTHER}")],
            Target::DeviceuuidOther,
        ),
        (
            "di other, deviceuuid this",
            vec![format!("deviceuuid={THIS}"), format!("di={OTHER}")],
            Target::DiOther,
        ),
        (
            "di other, deviceuuid invalid",
            vec![format!("di={OTHER}&deviceuuid=xyz")],
            Target::DeviceuuidInvalid,
        ),
    ]
}

fn datagram(ty: MessageType, query: OwnedQuery, target: &[String], buf: &mut [u8]) -> usize {
    let mut w = Writer::new(buf, ty, Code::GET, 0x1234, b"tok").unwrap();
    for segment in ["oic", "sec", "doxm"] {
        w.option(option::URI_PATH, segment.as_bytes()).unwrap();
    }
    for q in query.options().iter().copied().chain(target.iter().map(String::as_str)) {
        w.option(option::URI_QUERY, q.as_bytes()).unwrap();
    }
    w.uint_option(option::ACCEPT, 10_000).unwrap();
    w.finish()
}

/// SPEC 1.1, multicast rows, for a request that passes every other pre-filter. Pre-filter 5
/// in SPEC order (`di`/`deviceuuid` before `owned`) for what the request alone decides (a
/// `deviceuuid` that names no device); whether a valid UUID names *this* device is the one
/// device-dependent part of pre-filter 5, checked after the request's own checks.
fn expected_multicast(q: OwnedQuery, t: Target, d: &DeviceFacts) -> (Outcome, Reason) {
    use OwnedQuery as Q;
    if t == Target::DeviceuuidInvalid {
        return (Outcome::Ignore, Reason::DeviceuuidInvalid);
    }
    match q {
        Q::True | Q::DuplicatedTrueFirst => return (Outcome::Ignore, Reason::OwnedTrue),
        Q::Invalid => return (Outcome::Ignore, Reason::OwnedInvalid),
        Q::Absent | Q::False | Q::DuplicatedFalseFirst => {}
    }
    match t {
        Target::DiOther => return (Outcome::Ignore, Reason::DiMismatch),
        Target::DeviceuuidOther => return (Outcome::Ignore, Reason::DeviceuuidMismatch),
        Target::Passes | Target::DeviceuuidInvalid => {}
    }
    // eligible(v), condition by condition.
    let reason = if !d.known {
        Reason::StateUnknown
    } else if d.bridge == Bridge::Unowned {
        Reason::BridgeUnowned
    } else if d.dos != Dos::Rfotm {
        Reason::NotRfotm
    } else if d.owned {
        Reason::DeviceOwned
    } else if d.doc_open {
        Reason::DocOpen
    } else {
        return (Outcome::Answer, Reason::Ok);
    };
    (Outcome::Ignore, reason)
}

/// SPEC 1.1, unicast rows (`di` and `deviceuuid` are not checked on unicast).
fn expected_unicast(q: OwnedQuery, d: &DeviceFacts) -> (Outcome, Reason) {
    use OwnedQuery as Q;
    // "state unknown, or its bridge unowned: nothing at all".
    if !d.known {
        return (Outcome::Ignore, Reason::StateUnknown);
    }
    if d.bridge == Bridge::Unowned {
        return (Outcome::Ignore, Reason::BridgeUnowned);
    }
    // "not in RFOTM, or DOC open: 4.01" for any query (an owned device is not eligible either).
    let rfotm_no_doc = d.dos == Dos::Rfotm && !d.doc_open && !d.owned;
    if !rfotm_no_doc {
        let reason = match (d.dos == Dos::Rfotm, d.owned) {
            (false, _) => Reason::NotRfotm,
            (true, true) => Reason::DeviceOwned,
            (true, false) => Reason::DocOpen,
        };
        return (Outcome::Respond(Code::UNAUTHORIZED), reason);
    }
    match q {
        Q::Absent | Q::False | Q::DuplicatedFalseFirst => {
            (Outcome::Respond(Code::CONTENT), Reason::Ok)
        }
        Q::True | Q::DuplicatedTrueFirst => {
            (Outcome::Respond(Code::BAD_REQUEST), Reason::OwnedTrue)
        }
        Q::Invalid => (Outcome::Respond(Code::BAD_REQUEST), Reason::OwnedInvalid),
    }
}

#[test]
fn every_combination_matches_the_spec_table() {
    let uuid = Uuid::parse_str(THIS).unwrap();
    let targets = targets();
    assert_eq!(targets.len(), 13);
    let mut checked = 0;
    let mut answers = 0;
    for delivery in [Delivery::Multicast, Delivery::Unicast] {
        // Multicast requests are NON (a CON multicast is dropped, tested below); unicast both.
        let types: &[MessageType] = match delivery {
            Delivery::Multicast => &[MessageType::NonConfirmable],
            Delivery::Unicast => &[MessageType::NonConfirmable, MessageType::Confirmable],
        };
        for &ty in types {
            for (query, (target_name, target, t)) in OwnedQuery::ALL
                .into_iter()
                .flat_map(|q| targets.iter().map(move |target| (q, target)))
            {
                let mut buf = [0u8; 256];
                let len = datagram(ty, query, target, &mut buf);
                let msg = Message::parse(&buf[..len]).unwrap();
                let request = policy::RequestFacts::from_message(&msg, delivery);
                for dos in Dos::ALL {
                    for owned in [false, true] {
                        for doc_open in [false, true] {
                            for bridge in [Bridge::None, Bridge::Owned, Bridge::Unowned] {
                                for known in [false, true] {
                                    let device =
                                        DeviceFacts { uuid, known, dos, owned, doc_open, bridge };
                                    let want = match delivery {
                                        Delivery::Multicast => {
                                            expected_multicast(query, *t, &device)
                                        }
                                        Delivery::Unicast => expected_unicast(query, &device),
                                    };
                                    let got = policy::decide(&request, &device);
                                    assert_eq!(
                                        (got.outcome, got.reason),
                                        want,
                                        "{delivery:?} {ty:?} {query:?} {target_name} \
                                         {device:?}"
                                    );
                                    checked += 1;
                                    answers += usize::from(matches!(
                                        got.outcome,
                                        Outcome::Answer | Outcome::Respond(Code::CONTENT)
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // 3 request types x 6 owned x 13 target queries x 5 dos x 2 owned x 2 doc x 3 bridges x 2
    // known.
    assert_eq!(checked, 3 * 6 * 13 * 5 * 2 * 2 * 3 * 2);
    // Eligible = known, RFOTM, unowned, no DOC, bridge none/owned: 2 devices per request,
    // answered for the 3 passing `owned` queries with, on multicast (1 request type), the 5
    // target queries that pass, and on unicast (2 request types) all 13.
    let passing_targets = targets.iter().filter(|(_, _, t)| *t == Target::Passes).count();
    assert_eq!(passing_targets, 5);
    assert_eq!(answers, 2 * 3 * (passing_targets + 2 * 13));
}

/// Helper: decide for an eligible device and a request built from raw options.
fn decide_raw(
    delivery: Delivery,
    ty: MessageType,
    code: Code,
    options: &[(u16, &[u8])],
) -> Decision {
    let mut buf = [0u8; 256];
    let mut w = Writer::new(&mut buf, ty, code, 7, b"t").unwrap();
    for (number, value) in options {
        w.option(*number, value).unwrap();
    }
    let len = w.finish();
    let msg = Message::parse(&buf[..len]).unwrap();
    let device = DeviceFacts {
        uuid: Uuid::parse_str("50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403").unwrap(),
        known: true,
        dos: Dos::Rfotm,
        owned: false,
        doc_open: false,
        bridge: Bridge::None,
    };
    policy::decide(&policy::RequestFacts::from_message(&msg, delivery), &device)
}

const DOXM: [(u16, &[u8]); 3] =
    [(option::URI_PATH, b"oic"), (option::URI_PATH, b"sec"), (option::URI_PATH, b"doxm")];

fn with(extra: &[(u16, &'static [u8])]) -> Vec<(u16, &'static [u8])> {
    let mut all: Vec<(u16, &[u8])> = DOXM.to_vec();
    all.extend_from_slice(extra);
    all.sort_by_key(|(n, _)| *n);
    all
}

/// Pre-filters 2 to 6 on multicast: every failure is a silent drop with its own reason; and on
/// unicast the codes of the table (4.02 CON only, 4.06, 4.00; NON errors are NON responses).
#[test]
fn pre_filters_on_both_deliveries() {
    use Delivery::{Multicast as M, Unicast as U};
    use MessageType::{Confirmable as Con, NonConfirmable as Non};
    let ignore = |r| (Outcome::Ignore, r);
    let respond = |c, r| (Outcome::Respond(c), r);
    type Case =
        (&'static str, Delivery, MessageType, Code, Vec<(u16, &'static [u8])>, (Outcome, Reason));
    let cases: Vec<Case> = vec![
        ("plain NON multicast", M, Non, Code::GET, with(&[]), (Outcome::Answer, Reason::Ok)),
        ("CON multicast", M, Con, Code::GET, with(&[]), ignore(Reason::ConMulticast)),
        (
            "ACK multicast",
            M,
            MessageType::Acknowledgement,
            Code::GET,
            with(&[]),
            ignore(Reason::WrongType),
        ),
        ("POST multicast", M, Non, Code::POST, with(&[]), ignore(Reason::WrongMethod)),
        ("path /oic/sec", M, Non, Code::GET, DOXM[..2].to_vec(), ignore(Reason::WrongPath)),
        (
            "path case",
            M,
            Non,
            Code::GET,
            vec![(11, b"oic"), (11, b"sec"), (11, b"DOXM")],
            ignore(Reason::WrongPath),
        ),
        (
            "trailing empty segment",
            M,
            Non,
            Code::GET,
            with(&[(11, b"")]),
            ignore(Reason::WrongPath),
        ),
        (
            "Uri-Host is critical",
            M,
            Non,
            Code::GET,
            with(&[(option::URI_HOST, b"h")]),
            ignore(Reason::UnknownCriticalOption),
        ),
        ("Accept 50", M, Non, Code::GET, with(&[(17, &[50])]), ignore(Reason::AcceptUnsupported)),
        (
            "Accept 10000",
            M,
            Non,
            Code::GET,
            with(&[(17, &[0x27, 0x10])]),
            (Outcome::Answer, Reason::Ok),
        ),
        (
            "2049 below 2048",
            M,
            Non,
            Code::GET,
            with(&[(2049, &[0x07, 0xff])]),
            ignore(Reason::VersionTooOld),
        ),
        (
            "2049 = 2048",
            M,
            Non,
            Code::GET,
            with(&[(2049, &[0x08, 0x00])]),
            (Outcome::Answer, Reason::Ok),
        ),
        (
            "if=oic.if.rw",
            M,
            Non,
            Code::GET,
            with(&[(15, b"if=oic.if.rw")]),
            (Outcome::Answer, Reason::Ok),
        ),
        (
            "if=oic.if.baseline",
            M,
            Non,
            Code::GET,
            with(&[(15, b"if=oic.if.baseline")]),
            (Outcome::Answer, Reason::Ok),
        ),
        (
            "if=oic.if.ll",
            M,
            Non,
            Code::GET,
            with(&[(15, b"if=oic.if.ll")]),
            ignore(Reason::BadInterface),
        ),
        (
            "di this device, upper case",
            M,
            Non,
            Code::GET,
            with(&[(15, b"di=50E1A3AE-6A0C-4AC0-7B4F-D1D818AE3403")]),
            (Outcome::Answer, Reason::Ok),
        ),
        (
            "di other device",
            M,
            Non,
            Code::GET,
            with(&[(15, b"di=00000000-0000-0000-0000-000000000001")]),
            ignore(Reason::DiMismatch),
        ),
        ("di not a uuid", M, Non, Code::GET, with(&[(15, b"di=xyz")]), ignore(Reason::DiMismatch)),
        (
            "deviceuuid this device, upper case",
            M,
            Non,
            Code::GET,
            with(&[(15, b"deviceuuid=50E1A3AE-6A0C-4AC0-7B4F-D1D818AE3403")]),
            (Outcome::Answer, Reason::Ok),
        ),
        (
            "deviceuuid other device",
            M,
            Non,
            Code::GET,
            with(&[(15, b"deviceuuid=00000000-0000-0000-0000-000000000001")]),
            ignore(Reason::DeviceuuidMismatch),
        ),
        (
            "deviceuuid not a uuid",
            M,
            Non,
            Code::GET,
            with(&[(15, b"deviceuuid=xyz")]),
            ignore(Reason::DeviceuuidInvalid),
        ),
        (
            "deviceuuid invalid before No-Response",
            M,
            Non,
            Code::GET,
            with(&[(15, b"deviceuuid="), (258, &[2])]),
            ignore(Reason::DeviceuuidInvalid),
        ),
        (
            "deviceuuid after a bad if",
            M,
            Non,
            Code::GET,
            with(&[(15, b"if=x&deviceuuid=")]),
            ignore(Reason::BadInterface),
        ),
        ("No-Response 2", M, Non, Code::GET, with(&[(258, &[2])]), ignore(Reason::NoResponse)),
        ("No-Response 26", M, Non, Code::GET, with(&[(258, &[26])]), ignore(Reason::NoResponse)),
        (
            "No-Response 8 (4.xx only)",
            M,
            Non,
            Code::GET,
            with(&[(258, &[8])]),
            (Outcome::Answer, Reason::Ok),
        ),
        (
            "No-Response too long is ignored",
            M,
            Non,
            Code::GET,
            with(&[(258, &[0, 2])]),
            (Outcome::Answer, Reason::Ok),
        ),
        // Unicast.
        ("unicast CON 2.05", U, Con, Code::GET, with(&[]), respond(Code::CONTENT, Reason::Ok)),
        (
            "unicast CON Uri-Host",
            U,
            Con,
            Code::GET,
            with(&[(3, b"h")]),
            respond(Code::BAD_OPTION, Reason::UnknownCriticalOption),
        ),
        (
            "unicast NON Uri-Host",
            U,
            Non,
            Code::GET,
            with(&[(3, b"h")]),
            ignore(Reason::UnknownCriticalOption),
        ),
        (
            "unicast Accept 50",
            U,
            Con,
            Code::GET,
            with(&[(17, &[50])]),
            respond(Code::NOT_ACCEPTABLE, Reason::AcceptUnsupported),
        ),
        (
            "unicast NON Accept 50",
            U,
            Non,
            Code::GET,
            with(&[(17, &[50])]),
            respond(Code::NOT_ACCEPTABLE, Reason::AcceptUnsupported),
        ),
        (
            "unicast old version",
            U,
            Con,
            Code::GET,
            with(&[(2049, &[1])]),
            respond(Code::BAD_REQUEST, Reason::VersionTooOld),
        ),
        (
            "unicast bad if",
            U,
            Con,
            Code::GET,
            with(&[(15, b"if=x")]),
            respond(Code::BAD_REQUEST, Reason::BadInterface),
        ),
        (
            "unicast di not checked",
            U,
            Con,
            Code::GET,
            with(&[(15, b"di=xyz")]),
            respond(Code::CONTENT, Reason::Ok),
        ),
        (
            "unicast deviceuuid not checked",
            U,
            Non,
            Code::GET,
            with(&[(15, b"deviceuuid=xyz&owned=FALSE")]),
            respond(Code::CONTENT, Reason::Ok),
        ),
        (
            "unicast POST",
            U,
            Con,
            Code::POST,
            with(&[]),
            respond(Code::NOT_FOUND, Reason::WrongMethod),
        ),
        ("unicast NON POST", U, Non, Code::POST, with(&[]), ignore(Reason::WrongMethod)),
        (
            "unicast other path",
            U,
            Con,
            Code::GET,
            vec![(11, b"x")],
            respond(Code::NOT_FOUND, Reason::WrongPath),
        ),
        (
            "unicast CON No-Response 2",
            U,
            Con,
            Code::GET,
            with(&[(258, &[2])]),
            (Outcome::EmptyAck, Reason::NoResponse),
        ),
        (
            "unicast NON No-Response 2",
            U,
            Non,
            Code::GET,
            with(&[(258, &[2])]),
            ignore(Reason::NoResponse),
        ),
        (
            "unicast No-Response 8 keeps 2.05",
            U,
            Con,
            Code::GET,
            with(&[(258, &[8])]),
            respond(Code::CONTENT, Reason::Ok),
        ),
        (
            "unicast No-Response 8 on 4.00",
            U,
            Con,
            Code::GET,
            with(&[(15, b"owned=1"), (258, &[8])]),
            (Outcome::EmptyAck, Reason::NoResponse),
        ),
    ];
    for (name, delivery, ty, code, options, want) in cases {
        let got = decide_raw(delivery, ty, code, &options);
        assert_eq!((got.outcome, got.reason), want, "{name}");
    }
}

#[test]
fn reason_labels_are_unique_and_kebab_case() {
    let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert!(labels.iter().all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), Reason::ALL.len());
}
