//! The discovery endpoint of one device: what a unicast request gets (SPEC sections 1.1 and 5).
//!
//! After a doxm answer, the IoTivity-Lite OBT sends `GET /oic/res?rt=oic.r.doxm` (CON) to the
//! answer's source, then `GET /oic/d`; the plgd client sends `GET /oic/sec/doxm?if=...baseline`.
//! The gate serves exactly these three GETs; any other request gets 4.04 on CON and nothing on
//! NON. A device whose state is unknown, or whose bridge is unowned, accepts nothing at all.
//!
//! Decisions here are pure; the bodies are encoded when the response is sent.

use crate::policy::{self, Bridge, Decision, DeviceFacts, Reason, RequestFacts};
use crate::wire::coap::{Code, Message, MessageType};
use crate::wire::ocf::{self, View};

/// The resources of a discovery endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `/oic/sec/doxm`.
    Doxm,
    /// `/oic/res`.
    Res,
    /// `/oic/d`.
    Device,
    /// Anything else.
    Other,
}

impl Resource {
    /// The resource a request's Uri-Path names.
    pub fn of(msg: &Message<'_>) -> Resource {
        if msg.path_is(&[b"oic", b"sec", b"doxm"]) {
            Resource::Doxm
        } else if msg.path_is(&[b"oic", b"res"]) {
            Resource::Res
        } else if msg.path_is(&[b"oic", b"d"]) {
            Resource::Device
        } else {
            Resource::Other
        }
    }
}

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

/// Decides what device `device` does with unicast request `msg`.
///
/// `device_types` are the device's `rt` values (for the `rt` filter of `/oic/res`).
pub fn route<'a>(
    msg: &Message<'a>,
    request: &RequestFacts<'a>,
    device: &DeviceFacts,
    device_types: &[Box<str>],
) -> Reply {
    let plain = |decision| Reply { decision, body: Body::None };
    let resource = Resource::of(msg);
    if resource == Resource::Doxm {
        let decision = policy::decide(request, device);
        let body = match decision.outcome {
            policy::Outcome::Respond(Code::CONTENT) => Body::Doxm(request.view()),
            _ => Body::None,
        };
        return Reply { decision, body };
    }
    // The device accepts nothing while its state is unknown or its bridge unowned.
    if !device.known {
        return plain(Decision::ignore(Reason::StateUnknown));
    }
    if device.bridge == Bridge::Unowned {
        return plain(Decision::ignore(Reason::BridgeUnowned));
    }
    let con = match request.ty {
        MessageType::Confirmable => true,
        MessageType::NonConfirmable => false,
        MessageType::Acknowledgement | MessageType::Reset => {
            return plain(Decision::ignore(Reason::WrongType))
        }
    };
    let con_only = |code, reason| {
        plain(if con { policy::respond(request, code, reason) } else { Decision::ignore(reason) })
    };
    if resource == Resource::Other {
        return con_only(Code::NOT_FOUND, Reason::WrongPath);
    }
    if request.code != Code::GET {
        return con_only(Code::NOT_FOUND, Reason::WrongMethod);
    }
    if request.unrecognised_critical.is_some() {
        return con_only(Code::BAD_OPTION, Reason::UnknownCriticalOption);
    }
    if let Err(reason) = policy::accept_check(request) {
        let code = if reason == Reason::AcceptUnsupported {
            Code::NOT_ACCEPTABLE
        } else {
            Code::BAD_REQUEST
        };
        return plain(policy::respond(request, code, reason));
    }
    let default_if = if resource == Resource::Res { ocf::IF_LL } else { ocf::IF_R };
    let baseline = match request.filters.interface {
        None => false,
        Some(i) if i == default_if.as_bytes() => false,
        Some(i) if i == ocf::IF_BASELINE.as_bytes() => true,
        Some(_) => return plain(policy::respond(request, Code::BAD_REQUEST, Reason::BadInterface)),
    };
    let body = match resource {
        Resource::Res => {
            let rt = request.filters.rt;
            let links = LinkSelection {
                doxm: rt.is_none_or(|rt| rt == ocf::RT_DOXM.as_bytes()),
                device: rt.is_none_or(|rt| device_types.iter().any(|t| t.as_bytes() == rt)),
            };
            Body::Links { baseline, links }
        }
        _ => Body::Device(if baseline { View::Baseline } else { View::Default }),
    };
    let decision = policy::respond(request, Code::CONTENT, Reason::Ok);
    // No-Response may turn the 2.05 into an empty ACK or nothing: then there is no body.
    let body =
        if decision.outcome == policy::Outcome::Respond(Code::CONTENT) { body } else { Body::None };
    Reply { decision, body }
}
