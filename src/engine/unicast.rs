//! The discovery endpoint of one device: what a unicast request gets (SPEC sections 1.1 and 5).
//!
//! After a doxm answer, the IoTivity-Lite OBT sends `GET /oic/res?rt=oic.r.doxm` (CON) to the
//! answer's source, then `GET /oic/d`; the plgd client sends `GET /oic/sec/doxm?if=...baseline`.
//! The gate serves exactly these three GETs; any other request gets 4.04 on CON and nothing on
//! NON. A device whose state is unknown, or whose bridge is unowned, accepts nothing at all.
//!
//! The decision is [`policy::decide`]'s unicast ladder; this module adds what a 2.05 carries
//! ([`Body`]) and encodes it from the device's record when the response is sent. Every reply,
//! error codes and empty ACKs included, then passes the answer byte budget (SPEC 7; see
//! `engine::limits`): over it, the reply is dropped and counted as `engine/over-budget`.

use super::Config;
use crate::fleet::{DeviceRecord, EndpointBuf, StateWord};
use crate::policy::{self, Decision, Delivery, DeviceFacts, Outcome, RequestFacts, Resource};
use crate::wire::coap::Code;
use crate::wire::ocf::{self, DeviceInfo, View};

/// Which links of `/oic/res` a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkSelection {
    /// The link to `/oic/sec/doxm`.
    pub doxm: bool,
    /// The link to `/oic/d`.
    pub device: bool,
}

/// The body of a unicast response, encoded at send time from the device's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// No payload (errors, empty ACK).
    None,
    /// The doxm representation.
    Doxm(View),
    /// `/oic/res`: links-list or baseline.
    Links {
        /// `if=oic.if.baseline`.
        baseline: bool,
        /// The links that pass the `rt` filter.
        links: LinkSelection,
    },
    /// `/oic/d`.
    Device(View),
}

/// The decision for one unicast request, and the body to send with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reply {
    /// What to do and why.
    pub decision: Decision,
    /// What to carry, when responding with 2.05.
    pub body: Body,
}

/// Decides what device `device` does with unicast request `request` (the one ladder of
/// [`policy::decide`]), and which body a 2.05 carries.
///
/// `device_types` are the device's `rt` values (for the `rt` filter of `/oic/res`).
pub fn route(request: &RequestFacts<'_>, device: &DeviceFacts, device_types: &[Box<str>]) -> Reply {
    debug_assert_eq!(request.delivery, Delivery::Unicast);
    let decision = policy::decide(request, device);
    // No-Response may turn the 2.05 into an empty ACK or nothing: then there is no body.
    if decision.outcome != Outcome::Respond(Code::CONTENT) {
        return Reply { decision, body: Body::None };
    }
    let view = request.view();
    let body = match request.resource {
        Resource::Doxm => Body::Doxm(view),
        Resource::Res => {
            let rt = request.filters.rt;
            let links = LinkSelection {
                doxm: rt.is_none_or(|rt| rt == ocf::RT_DOXM.as_bytes()),
                device: rt.is_none_or(|rt| device_types.iter().any(|t| t.as_bytes() == rt)),
            };
            Body::Links { baseline: view == View::Baseline, links }
        }
        Resource::Device => Body::Device(view),
        // The ladder answers 4.04 or nothing for any other resource.
        Resource::Other => Body::None,
    };
    Reply { decision, body }
}

/// Encodes a unicast body from the device's record (also what the control plane's door check,
/// `control::fleet_file`, measures: a device whose responses cannot fit is refused there).
pub fn encode_body(
    body: Body,
    record: &DeviceRecord,
    word: StateWord,
    v6: bool,
    config: &Config,
    out: &mut [u8],
) -> Result<usize, crate::wire::BufferTooSmall> {
    let owned = word.state().is_some_and(|s| s.owned);
    match body {
        Body::None => Ok(0),
        Body::Doxm(view) => record.doxm(owned).encode(view, out),
        Body::Device(view) => {
            let mut types = [""; MAX_LISTED];
            let info = DeviceInfo {
                di: record.uuid(),
                n: record.name(),
                rt: collect(record.device_types().iter().map(|t| &**t), &mut types),
                icv: &config.icv,
                dmv: &config.dmv,
                piid: record.piid(),
            };
            info.encode(view, out)
        }
        Body::Links { baseline, links } => encode_links(record, links, baseline, v6, out),
    }
}

/// At most this many device types, or endpoints of one IP family, are listed in a response (no
/// allocation); the control plane refuses a device with more.
pub const MAX_LISTED: usize = 8;

/// Collects up to [`MAX_LISTED`] strings into `buf` and returns them as a slice.
fn collect<'a, 'b>(
    items: impl Iterator<Item = &'a str>,
    buf: &'b mut [&'a str; MAX_LISTED],
) -> &'b [&'a str] {
    let mut n = 0;
    for (slot, item) in buf.iter_mut().zip(items) {
        *slot = item;
        n += 1;
    }
    &buf[..n]
}

/// Encodes `/oic/res`; `eps` lists the device's endpoints of the requester's family (SPEC 5).
fn encode_links(
    record: &DeviceRecord,
    links: LinkSelection,
    baseline: bool,
    v6: bool,
    out: &mut [u8],
) -> Result<usize, crate::wire::BufferTooSmall> {
    // Packed endpoints are written out here, on the stack (no allocation on the answer path).
    let mut bufs = [EndpointBuf::default(); MAX_LISTED];
    let mut eps = [""; MAX_LISTED];
    let eps = collect(record.eps_for(v6).zip(&mut bufs).map(|(ep, buf)| ep.as_str(buf)), &mut eps);
    let mut types = [""; MAX_LISTED];
    let types = collect(record.device_types().iter().map(|t| &**t), &mut types);
    let device_link = ocf::Link {
        anchor: record.uuid(),
        href: "/oic/d",
        rt: types,
        interfaces: &ocf::DEVICE_INTERFACES,
        bm: 1,
        eps,
    };
    let doxm_link = record.doxm_link(eps);
    let all = [doxm_link, device_link];
    let selected: &[ocf::Link<'_>] = match (links.doxm, links.device) {
        (true, true) => &all,
        (true, false) => &all[..1],
        (false, true) => &all[1..],
        (false, false) => &[],
    };
    if baseline {
        ocf::encode_res_baseline(selected, out)
    } else {
        ocf::encode_links(selected, out)
    }
}
