//! The OCF Security rule for `/oic/sec/doxm` discovery, as pure functions (SPEC section 1.1).
//!
//! OCF Security clause 7.3.1 (CR 2640): a device supports unsecured multicast RETRIEVE of
//! `/oic/sec/doxm`, filtered by the `owned` query parameter. When the request omits `owned` or
//! has `owned=false`, the device answers only if it is in RFOTM and has no open Device Onboarding
//! Connection; otherwise it ignores the request, regardless of ACE configuration. OCF Bridging
//! adds that an unowned virtual device accepts nothing while its bridge is unowned.
//!
//! The rule is split in two so that the engine can run the device-independent part once per
//! datagram and the device part only for devices the eligibility index yields:
//!
//! - [`screen`]: the pre-filters that depend only on the request (SPEC 1.1 steps 2 to 6);
//! - [`target_check`]: the per-device part of pre-filter 5, whether the `di` and `deviceuuid`
//!   filters name the device (a request that names one device is looked up, not enumerated);
//! - [`eligibility`]: the per-device predicate `eligible(v)`;
//! - [`decide`]: all together for one device, multicast or unicast, which is what `explain`
//!   prints and what the exhaustive test checks against an independent table.
//!
//! What the rule needs of a request ([`RequestFacts`]) is read once per datagram, in the
//! parser's own pass over the options ([`RequestFacts::parse`], the engine's way in);
//! [`RequestFacts::from_message`] reads the same through the message's accessors.
//!
//! Fail closed: a device whose state is unknown is never eligible, and on unicast it does not
//! even answer with an error.

use uuid::Uuid;

use crate::wire::coap::{CoapOption, Code, Message, MessageType};
use crate::wire::ocf::{self, View, CONTENT_FORMAT_OCF_CBOR, OCF_VERSION_1_0_0};
use crate::wire::option;
use crate::wire::query::{Filters, Owned};

/// How a datagram reached the gate: to a multicast group, or to one device's endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// To one of the OCF multicast groups.
    Multicast,
    /// To the discovery endpoint of one device.
    Unicast,
}

/// The resource a request names on a device's discovery endpoint (SPEC section 5): the gate
/// serves exactly these three GETs there, and multicast discovery only ever names the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `/oic/sec/doxm`.
    Doxm,
    /// `/oic/res`.
    Res,
    /// `/oic/d`.
    Device,
    /// Anything else (4.04 on a unicast CON).
    Other,
}

impl Resource {
    /// The resource a request's Uri-Path names (exactly, case-sensitive; RFC 7252 s6.4; an
    /// empty trailing segment makes it another path). One walk of the path, whatever it names:
    /// the multicast `/oic/res` discovery every OCF client sends is the commonest datagram the
    /// gate drops.
    pub fn of(msg: &Message<'_>) -> Resource {
        let mut path = msg.uri_path();
        Resource::of_segments([path.next(), path.next(), path.next(), path.next()])
    }

    /// The resource a path names from its first four segments (`None` past its end): three
    /// segments at most name a resource, and the fourth tells a longer path apart.
    fn of_segments(segments: [Option<&[u8]>; 4]) -> Resource {
        match segments {
            [Some(b"oic"), Some(b"sec"), Some(b"doxm"), None] => Resource::Doxm,
            [Some(b"oic"), Some(b"res"), None, None] => Resource::Res,
            [Some(b"oic"), Some(b"d"), None, None] => Resource::Device,
            _ => Resource::Other,
        }
    }

    /// The interface a request without `if` gets; the other one it accepts is
    /// `oic.if.baseline` (OCF Core: doxm is `oic.if.rw`, `/oic/res` `oic.if.ll`, `/oic/d`
    /// `oic.if.r`).
    pub const fn default_interface(self) -> &'static str {
        match self {
            Resource::Doxm | Resource::Other => ocf::IF_RW,
            Resource::Res => ocf::IF_LL,
            Resource::Device => ocf::IF_R,
        }
    }
}

/// The device onboarding state `dos.s` (OCF Security, `/oic/sec/pstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dos {
    /// RESET (0).
    Reset = 0,
    /// Ready For Ownership Transfer Method (1): the only state that answers discovery.
    Rfotm = 1,
    /// Ready For Provisioning (2).
    Rfpro = 2,
    /// Ready For Normal Operation (3).
    Rfnop = 3,
    /// Soft Reset (4).
    Sreset = 4,
}

impl Dos {
    /// Every state, in numeric order.
    pub const ALL: [Dos; 5] = [Dos::Reset, Dos::Rfotm, Dos::Rfpro, Dos::Rfnop, Dos::Sreset];

    /// The state with numeric value `value`, if it is one (0..=4).
    pub fn from_u8(value: u8) -> Option<Dos> {
        Dos::ALL.get(usize::from(value)).copied()
    }
}

/// Whether a device sits behind a bridge, and the bridge's ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bridge {
    /// A device of its own, not created by a bridge.
    None,
    /// A virtual device whose bridge is owned.
    Owned,
    /// A virtual device whose bridge is unowned: it accepts nothing (OCF Bridging).
    Unowned,
}

/// What the rule needs to know about one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The device UUID (what the multicast `di` and `deviceuuid` filters are compared with).
    pub uuid: Uuid,
    /// Whether the bridge has reported the device's state since start; unknown never answers.
    pub known: bool,
    /// `dos.s`.
    pub dos: Dos,
    /// `doxm.owned`.
    pub owned: bool,
    /// Whether a Device Onboarding Connection is open (from the first ClientHello until close).
    pub doc_open: bool,
    /// The bridge, if any.
    pub bridge: Bridge,
}

/// What the rule needs to know about one request; built once per datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// Multicast or unicast.
    pub delivery: Delivery,
    /// The message type.
    pub ty: MessageType,
    /// The request code.
    pub code: Code,
    /// The resource the Uri-Path names.
    pub resource: Resource,
    /// The first critical option the gate does not recognise.
    pub unrecognised_critical: Option<u16>,
    /// Accept.
    pub accept: Option<u16>,
    /// OCF-Accept-Content-Format-Version.
    pub ocf_accept_version: Option<u16>,
    /// No-Response (RFC 7967).
    pub no_response: Option<u8>,
    /// The query filters.
    pub filters: Filters<'a>,
}

impl<'a> RequestFacts<'a> {
    /// Parses and validates a datagram ([`Message::parse_with`]) and reads its facts in the
    /// same pass over its options: the engine's way in, once per datagram. The facts are those
    /// [`RequestFacts::from_message`] reads from the message returned.
    ///
    /// ```
    /// use doxm_gate::policy::{Delivery, RequestFacts, Resource};
    /// use doxm_gate::wire::fixtures::OBT_REQUEST;
    /// use doxm_gate::wire::query::Owned;
    ///
    /// let (msg, facts) = RequestFacts::parse(&OBT_REQUEST, Delivery::Multicast).unwrap();
    /// assert_eq!(facts, RequestFacts::from_message(&msg, Delivery::Multicast));
    /// assert_eq!(facts.resource, Resource::Doxm);
    /// assert_eq!(facts.filters.owned, Owned::False);
    /// ```
    ///
    /// # Errors
    /// The datagram's first format error, as [`Message::parse`] names it.
    #[inline]
    pub fn parse(
        datagram: &'a [u8],
        delivery: Delivery,
    ) -> Result<(Message<'a>, RequestFacts<'a>), crate::wire::Error> {
        let mut options = OptionFacts::NONE;
        let msg = Message::parse_with(datagram, |opt| options.push(opt))?;
        Ok((msg, options.finish(&msg, delivery)))
    }

    /// Reads the facts of a parsed message, each from the message's own accessor.
    pub fn from_message(msg: &Message<'a>, delivery: Delivery) -> RequestFacts<'a> {
        RequestFacts {
            delivery,
            ty: msg.ty(),
            code: msg.code(),
            resource: Resource::of(msg),
            unrecognised_critical: msg.first_unrecognised_critical(),
            accept: msg.accept(),
            ocf_accept_version: msg.ocf_accept_content_format_version(),
            no_response: msg.no_response(),
            filters: Filters::parse(msg.uri_query()),
        }
    }

    /// The representation view the request asks for (`if=oic.if.baseline` or the default).
    pub fn view(&self) -> View {
        match self.filters.interface {
            Some(i) if i == ocf::IF_BASELINE.as_bytes() => View::Baseline,
            _ => View::Default,
        }
    }
}

/// The request facts that come from the options, gathered one option at a time in wire order
/// (a [`Message::parse_with`] visitor): the same readings as [`Message`]'s accessors, which
/// walk the options again each, with the same rules from [`option`] and [`Filters::push`].
#[derive(Debug, Clone, Copy)]
struct OptionFacts<'a> {
    /// The first four Uri-Path segments ([`Resource::of_segments`]).
    path: [Option<&'a [u8]>; 4],
    /// How many Uri-Path segments came so far.
    path_len: usize,
    /// The number of the option before (repeats of a non-repeatable option are supernumerary).
    previous: Option<u16>,
    /// [`Message::first_unrecognised_critical`].
    unrecognised_critical: Option<u16>,
    /// The value of the first Accept ([`option::single_uint`] reads it at the end).
    accept: Option<&'a [u8]>,
    /// The value of the first OCF-Accept-Content-Format-Version.
    ocf_accept_version: Option<&'a [u8]>,
    /// The value of the first No-Response.
    no_response: Option<&'a [u8]>,
    /// The filters of the Uri-Query values so far.
    filters: Filters<'a>,
}

impl<'a> OptionFacts<'a> {
    /// A request without options.
    const NONE: OptionFacts<'static> = OptionFacts {
        path: [None; 4],
        path_len: 0,
        previous: None,
        unrecognised_critical: None,
        accept: None,
        ocf_accept_version: None,
        no_response: None,
        filters: Filters::NONE,
    };

    /// Reads the next option on the wire.
    #[inline(always)]
    fn push(&mut self, opt: CoapOption<'a>) {
        match opt.number {
            option::URI_PATH => {
                if let Some(segment) = self.path.get_mut(self.path_len) {
                    *segment = Some(opt.value);
                }
                self.path_len += 1;
            }
            option::URI_QUERY => self.filters.push(opt.value),
            option::ACCEPT => {
                self.accept.get_or_insert(opt.value);
            }
            option::NO_RESPONSE => {
                self.no_response.get_or_insert(opt.value);
            }
            option::OCF_ACCEPT_CONTENT_FORMAT_VERSION => {
                self.ocf_accept_version.get_or_insert(opt.value);
            }
            _ => {}
        }
        if self.unrecognised_critical.is_none()
            && option::is_unrecognised_critical(opt.number, opt.value.len(), self.previous)
        {
            self.unrecognised_critical = Some(opt.number);
        }
        self.previous = Some(opt.number);
    }

    /// The facts of `msg`, whose options were all pushed.
    #[inline]
    fn finish(self, msg: &Message<'a>, delivery: Delivery) -> RequestFacts<'a> {
        let uint = |number, first: Option<&[u8]>| option::single_uint(number, first?);
        RequestFacts {
            delivery,
            ty: msg.ty(),
            code: msg.code(),
            resource: Resource::of_segments(self.path),
            unrecognised_critical: self.unrecognised_critical,
            accept: uint(option::ACCEPT, self.accept).map(|v| v as u16),
            ocf_accept_version: uint(
                option::OCF_ACCEPT_CONTENT_FORMAT_VERSION,
                self.ocf_accept_version,
            )
            .map(|v| v as u16),
            no_response: uint(option::NO_RESPONSE, self.no_response).map(|v| v as u8),
            filters: self.filters,
        }
    }
}

/// Why a request is not answered with 2.05 by a device. A closed set; each variant maps one to
/// one to a metric label ([`Reason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Answered: not a drop.
    Ok,
    /// ACK or RST where a request was expected.
    WrongType,
    /// A CON request to a multicast group (RFC 7252 section 8.1).
    ConMulticast,
    /// A code other than GET.
    WrongMethod,
    /// A Uri-Path other than exactly `oic/sec/doxm`.
    WrongPath,
    /// A critical option the gate does not recognise (pre-filter 3).
    UnknownCriticalOption,
    /// Accept other than 10000 (pre-filter 4).
    AcceptUnsupported,
    /// OCF-Accept-Content-Format-Version below 2048 (pre-filter 4).
    VersionTooOld,
    /// `if` other than `oic.if.rw` or `oic.if.baseline` (pre-filter 5).
    BadInterface,
    /// A multicast `di` naming another device, or not a hyphenated UUID (pre-filter 5).
    DiMismatch,
    /// A multicast `deviceuuid` naming another device (pre-filter 5).
    DeviceuuidMismatch,
    /// A multicast `deviceuuid` that is empty or not a hyphenated UUID, so that it names no
    /// device: every device ignores the request (pre-filter 5).
    DeviceuuidInvalid,
    /// `owned` with a value other than true/false (pre-filter 5).
    OwnedInvalid,
    /// `owned=true`: owned devices are never in RFOTM, so the rule never lets them answer.
    OwnedTrue,
    /// No-Response suppresses 2.xx (pre-filter 6).
    NoResponse,
    /// The device's state has not been reported since start: fail closed.
    StateUnknown,
    /// The device's bridge is unowned (OCF Bridging).
    BridgeUnowned,
    /// The device is not in RFOTM.
    NotRfotm,
    /// A Device Onboarding Connection is open.
    DocOpen,
    /// The device is owned (inconsistent with RFOTM, but never eligible either).
    DeviceOwned,
}

impl Reason {
    /// Every variant, in declaration order.
    pub const ALL: [Reason; 20] = [
        Reason::Ok,
        Reason::WrongType,
        Reason::ConMulticast,
        Reason::WrongMethod,
        Reason::WrongPath,
        Reason::UnknownCriticalOption,
        Reason::AcceptUnsupported,
        Reason::VersionTooOld,
        Reason::BadInterface,
        Reason::DiMismatch,
        Reason::DeviceuuidMismatch,
        Reason::DeviceuuidInvalid,
        Reason::OwnedInvalid,
        Reason::OwnedTrue,
        Reason::NoResponse,
        Reason::StateUnknown,
        Reason::BridgeUnowned,
        Reason::NotRfotm,
        Reason::DocOpen,
        Reason::DeviceOwned,
    ];

    /// The stable, kebab-case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::WrongType => "wrong-type",
            Reason::ConMulticast => "con-multicast",
            Reason::WrongMethod => "wrong-method",
            Reason::WrongPath => "wrong-path",
            Reason::UnknownCriticalOption => "unknown-critical-option",
            Reason::AcceptUnsupported => "accept-unsupported",
            Reason::VersionTooOld => "version-too-old",
            Reason::BadInterface => "bad-interface",
            Reason::DiMismatch => "di-mismatch",
            Reason::DeviceuuidMismatch => "deviceuuid-mismatch",
            Reason::DeviceuuidInvalid => "deviceuuid-invalid",
            Reason::OwnedInvalid => "owned-invalid",
            Reason::OwnedTrue => "owned-true",
            Reason::NoResponse => "no-response",
            Reason::StateUnknown => "state-unknown",
            Reason::BridgeUnowned => "bridge-unowned",
            Reason::NotRfotm => "not-rfotm",
            Reason::DocOpen => "doc-open",
            Reason::DeviceOwned => "device-owned",
        }
    }
}

/// What one device does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Multicast: send a 2.05 doxm answer after a random delay in the leisure window.
    Answer,
    /// Unicast: respond now with this code (2.05 carries the doxm); piggybacked on the ACK for
    /// CON, NON for NON.
    Respond(Code),
    /// Unicast CON whose response No-Response suppresses: acknowledge with an empty ACK only.
    EmptyAck,
    /// Send nothing.
    Ignore,
}

/// The outcome and the reason behind it ([`Reason::Ok`] for 2.05 and answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    const fn new(outcome: Outcome, reason: Reason) -> Decision {
        Decision { outcome, reason }
    }

    /// Nothing sent, for `reason`.
    pub const fn ignore(reason: Reason) -> Decision {
        Decision::new(Outcome::Ignore, reason)
    }
}

/// `eligible(v)` (SPEC section 1.1): state known, in RFOTM, unowned, no open DOC, and no bridge
/// or an owned bridge. `Err` names the first failing condition, in that order.
///
/// # Errors
/// The reason the device is not eligible.
pub fn eligibility(device: &DeviceFacts) -> Result<(), Reason> {
    if !device.known {
        return Err(Reason::StateUnknown);
    }
    if device.bridge == Bridge::Unowned {
        return Err(Reason::BridgeUnowned);
    }
    if device.dos != Dos::Rfotm {
        return Err(Reason::NotRfotm);
    }
    if device.owned {
        return Err(Reason::DeviceOwned);
    }
    if device.doc_open {
        return Err(Reason::DocOpen);
    }
    Ok(())
}

/// The device-independent pre-filters of a multicast doxm discovery (SPEC 1.1 steps 2 to 6).
///
/// `Ok` means "each eligible device whose UUID passes the `di` and `deviceuuid` filters
/// answers" ([`target_check`]); the engine then asks the eligibility index (or, for a request
/// that names a device, the UUID index) for those devices. `owned=true`, invalid `owned` values
/// and a `deviceuuid` that is not a UUID drop here: no device can answer them.
///
/// # Errors
/// The reason the datagram is dropped for every device.
pub fn screen(request: &RequestFacts<'_>) -> Result<(), Reason> {
    match request.ty {
        MessageType::NonConfirmable => {}
        MessageType::Confirmable => return Err(Reason::ConMulticast),
        MessageType::Acknowledgement | MessageType::Reset => return Err(Reason::WrongType),
    }
    if request.code != Code::GET {
        return Err(Reason::WrongMethod);
    }
    if request.resource != Resource::Doxm {
        return Err(Reason::WrongPath);
    }
    if request.unrecognised_critical.is_some() {
        return Err(Reason::UnknownCriticalOption);
    }
    accept_check(request)?;
    interface_check(request)?;
    if request.filters.deviceuuid.is_some_and(|text| named_uuid(text).is_none()) {
        return Err(Reason::DeviceuuidInvalid);
    }
    match request.filters.owned {
        Owned::Absent | Owned::False => {}
        Owned::True => return Err(Reason::OwnedTrue),
        Owned::Invalid => return Err(Reason::OwnedInvalid),
    }
    if suppresses_success(request.no_response) {
        return Err(Reason::NoResponse);
    }
    Ok(())
}

/// The device UUID a `di` or `deviceuuid` value names: the 36-character hyphenated UUID text,
/// in any case (SPEC 1.1; the UUID pattern of OCF's schemas). Another UUID spelling (simple,
/// braced, `urn:uuid:`), an empty value or other text names no device.
pub fn named_uuid(text: &[u8]) -> Option<Uuid> {
    if text.len() != uuid::fmt::Hyphenated::LENGTH {
        return None;
    }
    Uuid::try_parse_ascii(text).ok()
}

/// Whether a multicast `di` or `deviceuuid` filter lets device `uuid` answer: absent, or it
/// names `uuid` ([`named_uuid`]).
pub fn uuid_filter_matches(filter: Option<&[u8]>, uuid: &Uuid) -> bool {
    filter.is_none_or(|text| named_uuid(text) == Some(*uuid))
}

/// Pre-filter 5 for one device of a multicast: `di` and `deviceuuid`, each if present, name
/// `uuid`. Each is a filter of its own, so a request with both is answered only by a device
/// that both name (`di` is checked first).
///
/// # Errors
/// [`Reason::DiMismatch`] or [`Reason::DeviceuuidMismatch`].
pub fn target_check(filters: &Filters<'_>, uuid: &Uuid) -> Result<(), Reason> {
    if !uuid_filter_matches(filters.di, uuid) {
        return Err(Reason::DiMismatch);
    }
    if !uuid_filter_matches(filters.deviceuuid, uuid) {
        return Err(Reason::DeviceuuidMismatch);
    }
    Ok(())
}

/// The UUID text of a request that names one device (`di`, else `deviceuuid`): at most that
/// device can answer, so the engine looks it up instead of walking the eligible set.
pub fn target_text<'a>(filters: &Filters<'a>) -> Option<&'a [u8]> {
    filters.di.or(filters.deviceuuid)
}

/// What device `device` does with a doxm request (SPEC section 1.1, both tables).
pub fn decide(request: &RequestFacts<'_>, device: &DeviceFacts) -> Decision {
    match request.delivery {
        Delivery::Multicast => decide_multicast(request, device),
        Delivery::Unicast => decide_unicast(request, device),
    }
}

fn decide_multicast(request: &RequestFacts<'_>, device: &DeviceFacts) -> Decision {
    if let Err(reason) = screen(request) {
        return Decision::ignore(reason);
    }
    if let Err(reason) = target_check(&request.filters, &device.uuid) {
        return Decision::ignore(reason);
    }
    match eligibility(device) {
        Ok(()) => Decision::new(Outcome::Answer, Reason::Ok),
        Err(reason) => Decision::ignore(reason),
    }
}

/// Unicast to the device's own discovery endpoint, for every resource it serves (SPEC sections
/// 1.1 and 5): the one ladder the engine, `explain` and the exhaustive table share. The order
/// follows the table: a device that accepts nothing stays silent; then the pre-filters with
/// their error codes (a NON request gets no error for a request it could not have meant, RFC
/// 7252 s5.4.1); then, for doxm, the state (4.01) before the `owned` filter (4.00), because "not
/// in RFOTM, or DOC open" is 4.01 for any query. `/oic/res` and `/oic/d` describe the device
/// and do not depend on its onboarding state.
fn decide_unicast(request: &RequestFacts<'_>, device: &DeviceFacts) -> Decision {
    use Reason as R;
    if !device.known {
        return Decision::ignore(R::StateUnknown);
    }
    if device.bridge == Bridge::Unowned {
        return Decision::ignore(R::BridgeUnowned);
    }
    let con = match request.ty {
        MessageType::Confirmable => true,
        MessageType::NonConfirmable => false,
        MessageType::Acknowledgement | MessageType::Reset => return Decision::ignore(R::WrongType),
    };
    let con_only = |code: Code, reason: Reason| {
        if con {
            respond(request, code, reason)
        } else {
            Decision::ignore(reason)
        }
    };
    if request.resource == Resource::Other {
        return con_only(Code::NOT_FOUND, R::WrongPath);
    }
    // SPEC section 5: the discovery endpoint serves three GETs; every other request is 4.04.
    if request.code != Code::GET {
        return con_only(Code::NOT_FOUND, R::WrongMethod);
    }
    if request.unrecognised_critical.is_some() {
        return con_only(Code::BAD_OPTION, R::UnknownCriticalOption);
    }
    if let Err(reason) = accept_check(request) {
        let code =
            if reason == R::AcceptUnsupported { Code::NOT_ACCEPTABLE } else { Code::BAD_REQUEST };
        return respond(request, code, reason);
    }
    if let Err(reason) = interface_check(request) {
        return respond(request, Code::BAD_REQUEST, reason);
    }
    if request.resource != Resource::Doxm {
        return respond(request, Code::CONTENT, R::Ok);
    }
    if let Err(reason) = eligibility(device) {
        return respond(request, Code::UNAUTHORIZED, reason);
    }
    match request.filters.owned {
        Owned::Absent | Owned::False => respond(request, Code::CONTENT, R::Ok),
        Owned::True => respond(request, Code::BAD_REQUEST, R::OwnedTrue),
        Owned::Invalid => respond(request, Code::BAD_REQUEST, R::OwnedInvalid),
    }
}

/// A unicast response, unless No-Response suppresses its class (RFC 7967): then an empty ACK
/// for CON, nothing for NON. Shared by every resource of the discovery endpoint.
pub fn respond(request: &RequestFacts<'_>, code: Code, reason: Reason) -> Decision {
    let suppressed_classes = request.no_response.unwrap_or(0);
    let bit = match code.class() {
        2 => 2,
        4 => 8,
        5 => 16,
        _ => 0,
    };
    if suppressed_classes & bit == 0 {
        return Decision::new(Outcome::Respond(code), reason);
    }
    match request.ty {
        MessageType::Confirmable => Decision::new(Outcome::EmptyAck, Reason::NoResponse),
        _ => Decision::ignore(Reason::NoResponse),
    }
}

/// Pre-filter 4: Accept absent or 10000; OCF-Accept-Content-Format-Version absent or >= 2048.
///
/// # Errors
/// [`Reason::AcceptUnsupported`] or [`Reason::VersionTooOld`].
pub fn accept_check(request: &RequestFacts<'_>) -> Result<(), Reason> {
    if request.accept.is_some_and(|a| a != CONTENT_FORMAT_OCF_CBOR) {
        return Err(Reason::AcceptUnsupported);
    }
    if request.ocf_accept_version.is_some_and(|v| v < OCF_VERSION_1_0_0) {
        return Err(Reason::VersionTooOld);
    }
    Ok(())
}

/// Pre-filter 5, `if`: absent, the resource's default interface, or `oic.if.baseline`
/// (compared exactly); for doxm that is `oic.if.rw` or `oic.if.baseline`.
fn interface_check(request: &RequestFacts<'_>) -> Result<(), Reason> {
    match request.filters.interface {
        None => Ok(()),
        Some(i) if i == request.resource.default_interface().as_bytes() => Ok(()),
        Some(i) if i == ocf::IF_BASELINE.as_bytes() => Ok(()),
        Some(_) => Err(Reason::BadInterface),
    }
}

/// Pre-filter 6: No-Response bit 2 suppresses 2.xx responses (RFC 7967 section 2.1).
fn suppresses_success(no_response: Option<u8>) -> bool {
    no_response.is_some_and(|v| v & 2 != 0)
}
