//! The sans-IO gate: datagrams, metadata and time in; verdicts and datagrams to send out.
//!
//! The engine has no sockets, no threads and no clock. A driver feeds it every received
//! datagram with [`Engine::handle`], asks [`Engine::poll_transmit`] for datagrams to send, and
//! sleeps until [`Engine::poll_timeout`] (quinn-proto's shape). Time is always passed in, and
//! randomness comes from a seeded generator, so the same inputs give the same outputs.
//!
//! ```text
//!  handle(now, meta, bytes)
//!     |  policy::RequestFacts::parse ........... malformed -> drop, counted by reason;
//!     |                                          one pass validates and reads the facts
//!     |  multicast (destination is a group):
//!     |    policy::screen ...................... pre-filters 2..6 -> drop, counted
//!     |    source_address::check_source ........ spoofed/odd sources -> drop
//!     |    dedup ............................... copies of one exchange -> drop
//!     |    eligible count == 0 ................. drop in O(1)
//!     |    SourceLimiter ....................... per-source token bucket
//!     |    fleet eligibility index ............. O(eligible) candidates, each re-checked;
//!     |      or UUID index (di, deviceuuid) .... O(1): the one device a request names
//!     |    AnswerBudget ........................ leisure L = max(default, bytes / share),
//!     |                                          share = 4/5 rate / sources pending
//!     |    Schedule ............................ one random stream per request, bounded,
//!     |                                          the bound shared equally by sources
//!     |  unicast (destination is a device endpoint):
//!     |    unicast::route ...................... policy::decide's one ladder for doxm,
//!     |                                          res and d (else 4.04)
//!     |    SendPacer ........................... the same byte budget as answers, the
//!     |                                          replies one more source in the share:
//!     |                                          over it, dropped (a CON retransmits)
//!  poll_timeout()  the next due time, rounded up to the 10 ms timer grain
//!  poll_transmit(now, buf)
//!        unicast responses first, then answers that are due, by deficit round robin over
//!        sources, while the SendPacer allows (no sliding second above the rate plus one
//!        datagram); an answer whose window has
//!        ended (held by the pacer, or the loop came late) is expired, never sent late; each
//!        answer re-checks the device's state word (cancelled if no longer eligible) and is
//!        encoded into `buf`.
//! ```

mod dedup;
pub mod endpoint;
mod hash_index;
mod limits;
mod schedule;
mod source_address;
pub mod stats;
pub mod unicast;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::fleet::{DeviceId, Fleet, StateWord};
use crate::policy::{self, Delivery, Outcome, RequestFacts};
use crate::wire::coap::{Code, Message, MessageType, MAX_TOKEN_LEN};
use crate::wire::ocf::{self, View};
use crate::wire::writer::Writer;

use dedup::{Dedup, Seen};
use endpoint::{EndpointPlan, LocalEndpoint};
pub use limits::plannable_bytes;
use limits::{AnswerBudget, SendPacer, SourceLimiter};
pub use schedule::LATE_ALLOWANCE;
use schedule::{Owed, Popped, RequestInfo, Schedule};
pub use source_address::SourceReject;
pub use stats::{EngineDrop, Stats, Verdict};
use unicast::Body;

/// How recent a unicast reply must be for the reply stream to count as a source sharing the
/// answer budget.
const REPLY_RECENCY: Duration = Duration::from_secs(1);

/// The timer grain (SPEC 4: at most 10 ms): [`Engine::poll_timeout`] rounds wake-ups up to it,
/// the schedule draws send times at least this before their deadline, and the pacer's ring
/// counts bytes per grain. The one definition of the 10 ms.
pub const TIMER_GRAIN: Duration = Duration::from_millis(10);

/// The engine's limits and timings. Every limit is configurable; the defaults suit a bridge of
/// up to a million devices on one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The default leisure window (RFC 7252 s8.2 suggests 2 s for answers to multicast).
    pub leisure: Duration,
    /// The longest window a request may be stretched to by the byte budget.
    pub max_window: Duration,
    /// The budget time one source may hold while its earlier answers are pending (its share of
    /// `max_window`), so that a looping client cannot starve other OBTs; a source with nothing
    /// pending may take all of `max_window`.
    pub source_window: Duration,
    /// Global budget for multicast answers, bytes per second.
    pub answer_rate_bytes: u64,
    /// How long a request's copies count as the same exchange (RFC 7252 NON_LIFETIME is 145 s).
    pub exchange_window: Duration,
    /// How many exchanges the duplicate detector remembers.
    pub dedup_capacity: usize,
    /// Per-source rate of answer-producing multicast requests (requests per second).
    pub source_rate: f64,
    /// Per-source burst of answer-producing multicast requests.
    pub source_burst: f64,
    /// How many sources the rate limiter tracks.
    pub source_capacity: usize,
    /// Bound on pending multicast answers (memory: 8 bytes each).
    pub max_pending_answers: usize,
    /// Bound on requests with pending answers.
    pub max_pending_requests: usize,
    /// Bound on queued unicast responses.
    pub max_unicast_queue: usize,
    /// How device ids map to discovery endpoints.
    pub endpoints: EndpointPlan,
    /// `/oic/d` `icv`.
    pub icv: String,
    /// `/oic/d` `dmv`.
    pub dmv: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            leisure: Duration::from_secs(2),
            max_window: Duration::from_secs(60),
            source_window: Duration::from_secs(10),
            answer_rate_bytes: 2_000_000,
            exchange_window: Duration::from_secs(145),
            dedup_capacity: 4_096,
            source_rate: 1.0,
            source_burst: 5.0,
            source_capacity: 4_096,
            max_pending_answers: 2_000_000,
            max_pending_requests: 1_024,
            max_unicast_queue: 4_096,
            endpoints: EndpointPlan::Ports { base: 40_000, count: 20_000 },
            icv: String::from("ocf.2.0.5"),
            dmv: String::from("ocf.res.1.3.0,ocf.sh.1.3.0"),
        }
    }
}

/// Where a datagram came from and went to, as the driver learnt it (IPV6_PKTINFO/IP_PKTINFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Meta {
    /// The sender.
    pub source: SocketAddr,
    /// The destination address and port: a multicast group, or a device's endpoint.
    pub destination: SocketAddr,
    /// The interface index the datagram arrived on.
    pub interface: u32,
}

/// A datagram to send: written into the caller's buffer by [`Engine::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The device's endpoint to send it from.
    pub source: LocalEndpoint,
    /// The interface to send it on (the one the request came in on).
    pub interface: u32,
    /// The device it speaks for.
    pub device: DeviceId,
    /// Its length in the caller's buffer.
    pub len: usize,
    /// How long after its scheduled time a multicast answer left (zero for unicast).
    pub late: Duration,
}

/// A unicast response waiting to be sent.
#[derive(Debug, Clone, Copy)]
struct Immediate {
    destination: SocketAddr,
    source: LocalEndpoint,
    interface: u32,
    device: DeviceId,
    ty: MessageType,
    code: Code,
    message_id: u16,
    token: [u8; MAX_TOKEN_LEN],
    token_len: u8,
    body: Body,
}

/// The gate; see the [module docs](self).
#[derive(Debug)]
pub struct Engine {
    config: Config,
    fleet: Arc<Fleet>,
    dedup: Dedup,
    sources: SourceLimiter,
    budget: AnswerBudget,
    schedule: Schedule,
    immediate: VecDeque<Immediate>,
    rng: fastrand::Rng,
    next_message_id: u16,
    /// Encoded size of a typical answer per view, for the byte budget.
    answer_size: [usize; 2],
    /// The hard bound on answer bytes sent per second (the budget's windows spread answers;
    /// overlapping windows could briefly exceed the rate without it).
    pacer: SendPacer,
    /// Unicast replies' share of the rate while multicast answers wait (see `admit_reply`); a
    /// discovery made while replies flow plans its window for that share.
    reply_pacer: SendPacer,
    /// The timer grain's grid starts here (the first datagram handled): see `poll_timeout`.
    epoch: Option<Instant>,
    /// Where a unicast reply is encoded at admission, to charge its exact bytes.
    scratch: Vec<u8>,
    /// The length of the reply in `scratch`, while it is the last one queued.
    scratch_len: Option<usize>,
    stats: Stats,
}

impl Engine {
    /// An engine over `fleet`; `seed` fixes its random choices.
    pub fn new(config: Config, fleet: Arc<Fleet>, seed: u64) -> Engine {
        let mut rng = fastrand::Rng::with_seed(seed);
        Engine {
            // Senders choose Message IDs, tokens and ports: the hash tables are seeded.
            dedup: Dedup::with_seed(config.exchange_window, config.dedup_capacity, rng.u64(..)),
            sources: SourceLimiter::with_seed(
                config.source_rate,
                config.source_burst,
                config.source_capacity,
                rng.u64(..),
            ),
            budget: AnswerBudget::new(
                config.leisure,
                config.answer_rate_bytes,
                config.max_window,
                config.source_window,
            ),
            schedule: Schedule::new(
                config.max_pending_requests,
                config.max_pending_answers,
                config.leisure.max(config.max_window),
            ),
            immediate: VecDeque::with_capacity(config.max_unicast_queue),
            next_message_id: rng.u16(..),
            answer_size: [typical_answer_size(View::Default), typical_answer_size(View::Baseline)],
            rng,
            pacer: SendPacer::new(config.answer_rate_bytes),
            reply_pacer: SendPacer::new(config.answer_rate_bytes),
            epoch: None,
            scratch: vec![0; SCRATCH_LEN],
            scratch_len: None,
            stats: Stats::default(),
            fleet,
            config,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The fleet the engine answers for.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// The number of sources with multicast answers pending (what the answer budget is shared
    /// among, SPEC 7).
    pub fn pending_sources(&self) -> usize {
        self.schedule.sources()
    }

    /// The number of multicast answers waiting for their time.
    pub fn pending_answers(&self) -> usize {
        self.schedule.pending_answers()
    }

    /// Handles one received datagram; returns (and counts) what became of it.
    pub fn handle(&mut self, now: Instant, meta: &Meta, datagram: &[u8]) -> Verdict {
        let _ = self.epoch.get_or_insert(now);
        let delivery = if meta.destination.ip().is_multicast() {
            Delivery::Multicast
        } else {
            Delivery::Unicast
        };
        // One pass over the options validates them and reads the request's facts.
        let verdict = match RequestFacts::parse(datagram, delivery) {
            Err(e) => Verdict::Malformed(e),
            Ok((msg, request)) => match delivery {
                Delivery::Multicast => self.multicast(now, meta, &msg, &request),
                Delivery::Unicast => self.unicast(now, meta, &msg, &request),
            },
        };
        self.stats.count(verdict);
        verdict
    }

    /// When to call [`Engine::poll_transmit`] next for multicast answers: when the next one
    /// comes due and the pacer lets it go, rounded up to the timer grain (SPEC 4, 10 ms) on a
    /// grid that starts at the first datagram handled. So every answer due within one grain
    /// leaves in one wake-up and one batched send: a discovery wakes the driver at most once
    /// per grain of its window, not once per answer (send times are drawn a grain and
    /// [`LATE_ALLOWANCE`] before their deadline, so neither the rounding nor a driver waking
    /// up to 20 ms late makes one expire). Unicast responses are ready at
    /// once: after [`Engine::handle`], drain [`Engine::poll_transmit`] until it returns `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.schedule.next_due()?;
        let wake = match self.pacer.ready_at() {
            Some(ready) => due.max(ready),
            None => due,
        };
        Some(match self.epoch {
            Some(epoch) if wake > epoch => {
                let grain = TIMER_GRAIN.as_nanos();
                let grains = (wake - epoch).as_nanos().div_ceil(grain);
                let offset = u64::try_from(grains * grain).unwrap_or(u64::MAX);
                epoch.checked_add(Duration::from_nanos(offset)).unwrap_or(wake)
            }
            _ => wake,
        })
    }

    /// Whether a unicast response is queued (the driver should call [`Engine::poll_transmit`]
    /// right away).
    pub fn has_immediate(&self) -> bool {
        !self.immediate.is_empty()
    }

    /// Writes the next datagram due at `now` into `buf` and describes it; `None` when nothing
    /// is due. `buf` should hold at least 1280 bytes (the IPv6 minimum MTU).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(reply) = self.immediate.pop_front() {
            // The reply admitted last is still encoded in the scratch buffer (see
            // `admit_reply`): usually the only one queued, so most replies are encoded once.
            let encoded = if self.immediate.is_empty() { self.scratch_len.take() } else { None };
            let sent = match encoded {
                Some(len) if len <= buf.len() => {
                    buf[..len].copy_from_slice(&self.scratch[..len]);
                    Some(transmit_of(&reply, len))
                }
                _ => self.encode_immediate(&reply, buf),
            };
            if let Some(t) = sent {
                self.stats.responses_sent += 1;
                return Some(t);
            }
        }
        if self.pacer.holds(now) {
            return None;
        }
        while let Some(popped) = self.schedule.pop_due(now, &mut self.rng) {
            let due = match popped {
                Popped::Due(due) => due,
                Popped::Expired(n) => {
                    self.stats.answers_expired += n as u64;
                    continue;
                }
            };
            let Owed { device, incarnation } = due.owed;
            let word = self.fleet.word(device);
            if !word.is_eligible() || word.incarnation() != incarnation {
                self.stats.answers_cancelled += 1;
                continue;
            }
            let record = self.fleet.record_guard(device);
            let (Some(record), Some(source)) =
                (record.as_ref(), self.config.endpoints.local(device, &due.info.peer))
            else {
                self.stats.answers_cancelled += 1;
                continue;
            };
            let message_id = self.fresh_message_id();
            let written = ocf::write_response(
                buf,
                MessageType::NonConfirmable,
                Code::CONTENT,
                message_id,
                due.info.token(),
                |out| record.doxm(false).encode(due.info.view, out),
            );
            match written {
                Ok(len) => {
                    self.stats.answers_sent += 1;
                    let _ = self.pacer.charge(now, len);
                    return Some(Transmit {
                        destination: due.info.peer,
                        source,
                        interface: due.info.interface,
                        device,
                        len,
                        late: now.saturating_duration_since(due.due),
                    });
                }
                Err(_) => self.stats.answers_cancelled += 1,
            }
        }
        None
    }

    /// Drops every pending answer and response (shutdown); returns how many were dropped.
    pub fn shutdown(&mut self) -> usize {
        let dropped = self.schedule.clear() + self.immediate.len();
        self.stats.answers_shed += dropped as u64;
        self.immediate.clear();
        self.scratch_len = None;
        dropped
    }

    fn multicast(
        &mut self,
        now: Instant,
        meta: &Meta,
        msg: &Message<'_>,
        request: &RequestFacts<'_>,
    ) -> Verdict {
        if let Err(reason) = policy::screen(request) {
            return Verdict::Policy(reason);
        }
        if let Err(reject) = source_address::check_source(meta.source, meta.destination.ip()) {
            return Verdict::Source(reject);
        }
        // Devices `0..reachable` have an endpoint in the request's family (with prefixes of two
        // sizes, the rest are reachable in the other family only): the others are not answered
        // here, nor charged to the budget.
        let reachable = self.config.endpoints.capacity_in(meta.source.is_ipv6());
        if reachable == 0 {
            return Verdict::Engine(EngineDrop::NoEndpointForFamily);
        }
        // Before dedup: with nothing eligible the request costs one load and leaves no state.
        if self.fleet.eligible_count() == 0 {
            return Verdict::Engine(EngineDrop::NoEligible);
        }
        let seen =
            self.dedup.check(now, msg.message_id(), msg.token(), meta.source, meta.interface);
        if seen == Seen::Copy {
            return Verdict::Engine(EngineDrop::Duplicate);
        }
        let Some(grant) = self.sources.allow(now, meta.source.ip()) else {
            return Verdict::Engine(EngineDrop::RateLimited);
        };
        let mut owed = self.schedule.take_list();
        let mut push = |id: DeviceId| {
            if (id.0 as usize) < reachable {
                push_if_eligible(&mut owed, id, self.fleet.word(id));
            }
        };
        // A request that names a device (`di`, `deviceuuid`) costs one UUID-index lookup, not a
        // walk of the eligible set; the slot's UUID is re-read, as the slot may have been reused.
        match policy::target_text(&request.filters) {
            Some(text) => {
                let device = policy::named_uuid(text).and_then(|u| self.fleet.lookup(&u));
                if let Some(id) = device.filter(|&id| {
                    self.fleet
                        .uuid_of(id)
                        .is_some_and(|u| policy::target_check(&request.filters, &u).is_ok())
                }) {
                    push(id);
                }
            }
            None => self.fleet.eligible().for_each(push),
        }
        if owed.is_empty() {
            self.schedule.give_back(owed);
            return Verdict::Engine(EngineDrop::NoEligible);
        }
        let view = request.view();
        let size = self.answer_size[usize::from(view == View::Baseline)] + msg.token().len();
        // Unicast replies sent in the last second share the rate like one more source (see
        // `admit_reply`).
        let replying = self.reply_pacer.ready_at().is_some_and(|r| r + REPLY_RECENCY > now);
        let (sharing, queued) = self.schedule.standing(meta.source.ip());
        let sharing = sharing + usize::from(replying);
        let window = self.budget.window(owed.len(), size, grant.held, sharing, queued);
        self.sources.charge(now, grant, window.cost);
        if window.stretched {
            self.stats.budget_stretches += 1;
        }
        if window.share_limited {
            self.stats.source_share_cuts += 1;
        }
        let mut shed = 0;
        if window.admitted < owed.len() {
            shed += owed.len() - window.admitted;
            owed.truncate(window.admitted);
        }
        let scheduled = owed.len();
        let info = request_info(meta, msg, view);
        shed += self.schedule.insert(now, info, owed, window.length, size, &mut self.rng);
        self.stats.answers_scheduled += scheduled as u64;
        self.stats.answers_shed += shed as u64;
        Verdict::Answering(scheduled)
    }

    fn unicast(
        &mut self,
        now: Instant,
        meta: &Meta,
        msg: &Message<'_>,
        request: &RequestFacts<'_>,
    ) -> Verdict {
        let plan = self.config.endpoints;
        let Some(device) = plan.device_at(&meta.destination) else {
            return Verdict::Engine(EngineDrop::UnknownEndpoint);
        };
        let word = self.fleet.word(device);
        let (Some(uuid), Some(record)) = (self.fleet.uuid_of(device), self.fleet.record(device))
        else {
            return Verdict::Engine(EngineDrop::UnknownEndpoint);
        };
        if let Err(reject) = source_address::check_source(meta.source, meta.destination.ip()) {
            return Verdict::Source(reject);
        }
        let reply = unicast::route(request, &word.facts(uuid), record.device_types());
        let code = match reply.decision.outcome {
            Outcome::Respond(code) => code,
            Outcome::EmptyAck => Code::EMPTY,
            Outcome::Ignore | Outcome::Answer => return Verdict::Policy(reply.decision.reason),
        };
        if self.immediate.len() >= self.config.max_unicast_queue {
            return Verdict::Engine(EngineDrop::QueueFull);
        }
        let Some(source) = plan.local(device, &meta.source) else {
            return Verdict::Engine(EngineDrop::NoEndpointForFamily);
        };
        let (ty, message_id) = match msg.ty() {
            MessageType::Confirmable => (MessageType::Acknowledgement, msg.message_id()),
            _ => (MessageType::NonConfirmable, self.fresh_message_id()),
        };
        let (token, token_len) = copy_token(msg.token());
        let reply = Immediate {
            destination: meta.source,
            source,
            interface: meta.interface,
            device,
            ty,
            code,
            message_id,
            token: if code == Code::EMPTY { [0; MAX_TOKEN_LEN] } else { token },
            token_len: if code == Code::EMPTY { 0 } else { token_len },
            body: reply.body,
        };
        if let Err(drop) = self.admit_reply(now, &reply) {
            return Verdict::Engine(drop);
        }
        self.immediate.push_back(reply);
        Verdict::Responding
    }

    /// Unicast replies under the answer limits (SPEC 7): a reply is admitted
    /// only while the send pacer, the hard bound on the bytes that leave per second, has room
    /// for it, exactly as a due answer is; its exact bytes (encoded here once to learn their
    /// length) are then charged to the pacer, to the budget that places later windows
    /// ([`AnswerBudget::charge`]) and to its source's share of it
    /// ([`SourceLimiter::charge_reply`]). A reply over budget is dropped, never queued for
    /// later: a CON client retransmits (RFC 7252 s4.2), and an ACK that comes seconds late is
    /// worth no more than the retransmission.
    ///
    /// The encoding is kept: the reply queued last is copied from it when it leaves, so a
    /// reply handled and sent in one go (the driver flushes after every receive batch) is
    /// encoded once.
    ///
    /// The per-source *request* bucket is not charged: it bounds answer-producing multicast
    /// requests, and an OBT sends a unicast request or two to every device that answered it.
    /// Nor is a reply refused for its source's share alone: a lone OBT's first discovery may
    /// hold much more than `source_window`, and its follow-ups must not wait for that; what
    /// its replies take counts against the room of its next multicast request instead. So one
    /// source flooding unicast requests gets at most the budget rate of replies; sharing the
    /// budget fairly between it and everyone else is SPEC 7's fair share, not this check.
    fn admit_reply(&mut self, now: Instant, reply: &Immediate) -> Result<(), EngineDrop> {
        // While multicast answers wait, the replies together are one more source in the fair
        // share: `rate / (sources with answers pending + 1)`.
        let sharing = self.schedule.sources() as u64;
        self.reply_pacer.set_rate(self.config.answer_rate_bytes / (sharing + 1));
        if self.pacer.holds(now) || (sharing > 0 && self.reply_pacer.holds(now)) {
            return Err(EngineDrop::OverBudget);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let encoded = self.encode_immediate(reply, &mut scratch).map(|t| t.len);
        self.scratch = scratch;
        // Kept for `poll_transmit`, which takes it when this reply, queued last, leaves.
        self.scratch_len = encoded;
        let len = encoded.unwrap_or(0);
        let cost = self.pacer.charge(now, len);
        let _ = self.reply_pacer.charge(now, len);
        let _ = self.sources.charge_reply(now, reply.destination.ip(), cost);
        Ok(())
    }

    fn encode_immediate(&mut self, reply: &Immediate, buf: &mut [u8]) -> Option<Transmit> {
        let record = self.fleet.record(reply.device)?;
        let word = self.fleet.word(reply.device);
        let token = &reply.token[..usize::from(reply.token_len)];
        let len = match reply.body {
            Body::None => {
                Writer::new(buf, reply.ty, reply.code, reply.message_id, token).map(Writer::finish)
            }
            body => {
                ocf::write_response(buf, reply.ty, reply.code, reply.message_id, token, |out| {
                    unicast::encode_body(
                        body,
                        &record,
                        word,
                        reply.destination.is_ipv6(),
                        &self.config,
                        out,
                    )
                })
            }
        };
        Some(transmit_of(reply, len.ok()?))
    }

    fn fresh_message_id(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.next_message_id
    }
}

/// The datagram of a unicast reply of `len` bytes.
fn transmit_of(reply: &Immediate, len: usize) -> Transmit {
    Transmit {
        destination: reply.destination,
        source: reply.source,
        interface: reply.interface,
        device: reply.device,
        len,
        late: Duration::ZERO,
    }
}

/// The largest unicast reply the engine encodes (a `/oic/res` with every link and endpoint
/// fits in far less; the driver's buffers are at least the IPv6 minimum MTU).
const SCRATCH_LEN: usize = 2_048;

fn push_if_eligible(owed: &mut Vec<Owed>, id: DeviceId, word: StateWord) {
    if word.is_eligible() {
        owed.push(Owed { device: id, incarnation: word.incarnation() });
    }
}

fn copy_token(token: &[u8]) -> ([u8; MAX_TOKEN_LEN], u8) {
    let mut out = [0u8; MAX_TOKEN_LEN];
    let len = token.len().min(MAX_TOKEN_LEN);
    out[..len].copy_from_slice(&token[..len]);
    (out, len as u8)
}

fn request_info(meta: &Meta, msg: &Message<'_>, view: View) -> RequestInfo {
    let (token, token_len) = copy_token(msg.token());
    RequestInfo { peer: meta.source, interface: meta.interface, token, token_len, view }
}

/// The encoded size of a doxm answer with one oxm and a zero-length token, per view: what the
/// byte budget charges for each answer of a request, plus the request's token.
pub fn typical_answer_size(view: View) -> usize {
    let doxm = ocf::Doxm {
        oxms: &[ocf::oxm::JUST_WORKS],
        oxmsel: ocf::oxm::SELF,
        sct: ocf::sct::PAIRWISE_PSK | ocf::sct::CERTIFICATE,
        owned: false,
        devowneruuid: Uuid::nil(),
        deviceuuid: Uuid::nil(),
        rowneruuid: Uuid::nil(),
    };
    let mut buf = [0u8; 512];
    ocf::write_response(&mut buf, MessageType::NonConfirmable, Code::CONTENT, 0, &[], |out| {
        doxm.encode(view, out)
    })
    .unwrap_or(buf.len())
}
