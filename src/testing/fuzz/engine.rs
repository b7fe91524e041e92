//! The check behind the `engine` fuzz target (and its corpus replay in tests/fuzz_corpus.rs).
//!
//! The input is a script: a fleet, an engine configuration, then events (datagrams, fleet
//! changes, clock jumps) that drive one [`Engine`] the way the daemon's driver does: after every
//! datagram it drains [`Engine::poll_transmit`], and a clock jump stops at each
//! [`Engine::poll_timeout`] on the way. Next to the engine the check keeps its own model of the
//! fleet and of SPEC section 1.1 (pre-filters, `eligible(v)`, the duplicate rule) and section 7
//! (sources that cannot be genuine), and asserts on every datagram the engine sends:
//!
//! 1. a multicast answer names (in its CBOR `deviceuuid`) a device that is eligible when the
//!    answer leaves **and** was eligible, and passed the `di` and `deviceuuid` filters (each
//!    naming it, hyphenated UUID text in any case), when the request arrived;
//!    it is NON 2.05 with the request's token, CF 10000, `owned: false`, sent to the request's
//!    source from the device's own endpoint (port `base + id`);
//! 2. a device answers an exchange at most once: no two answers of one device to one request,
//!    nor to two requests that are copies by SPEC 1.1 (same Message ID and the same token, or
//!    the same source endpoint, or the same source port on the same interface, less than
//!    `exchange_window` apart; endpoints compared as IP, IPv4 mapped addresses unmapped, and
//!    port);
//! 3. no answer, and not even a scheduled one, to a multicast request the rule ignores for every
//!    device: not NON, not GET, Uri-Path not exactly `oic/sec/doxm`, an unrecognised critical
//!    option, Accept or OCF-Accept-Content-Format-Version refused, a bad `if`, a `deviceuuid`
//!    that is not hyphenated UUID text (empty, another spelling, not a UUID), `owned` true or
//!    invalid, No-Response bit 2, or a source that cannot be genuine (multicast, unspecified,
//!    broadcast; on `ff02::158` a source that is not link-local);
//! 4. nothing at all in reply to a malformed datagram, and never anything but NON 2.05 to a
//!    multicast request;
//! 5. unicast: a device whose state is unknown, or whose bridge is unowned, or no device at all,
//!    never responds; at most one response per request, at once, from the device's endpoint;
//!    2.05 on `/oic/sec/doxm` only for an eligible device (and its own `deviceuuid`); a CON gets
//!    an ACK with its Message ID (and every CON from a plain source to a device that accepts
//!    requests gets exactly one, unless the byte budget refuses it: `engine/over-budget`,
//!    only while the pacer holds), a NON a NON; ACK and RST get nothing; a reply leaves
//!    within the pacer's rate and is charged to it, like an answer (SPEC 7);
//! 6. an answer is due no earlier than its request and no later than `L = max(leisure,
//!    max_window)` after it; it leaves at its due time, or later only while the pacer holds it
//!    (modelled here: a GCRA at `answer_rate_bytes` with a 50 ms burst; the driver is punctual,
//!    so any lateness is the engine's), never ahead of that rate, and within `L` of its request
//!    even when the pacer held it (`STRICT_WINDOW_END`): an answer that cannot leave in time
//!    expires, and every scheduled answer is sent, cancelled, shed or expired.
//!
//! Also: the engine never panics; after a drain, [`Engine::poll_timeout`] is in the future;
//! `Verdict::Answering(k)`: `k` is at most the number of devices eligible (and named by `di`
//! and `deviceuuid`)
//! at arrival, and at most `k` answers leave;
//! `Verdict::Responding` means exactly one response; fleet changes succeed exactly when the
//! model says they should; at the end every answer has left and the engine's counters agree
//! with what was seen.
//!
//! The transmit-to-request link is exact: each datagram is handed to the engine with its own
//! interface index (its sequence number + 1), which the engine copies into the
//! [`Transmit`]; token and destination are then checked against that request. A copy sent on
//! its original's interface (event 5, bit 7) shares the original's index; an answer on such an
//! interface belongs to the first of its requests that was answering, from its source and with
//! its token. The model reads
//! requests through [`Message`]'s accessors and [`Filters::parse`], which the `coap_parse` and
//! `query` targets check against references of their own.
//!
//! # Script format
//!
//! Any bytes are a script; reads past the end give zeros, and zeros mean the common case (a
//! known RFOTM device, a NON GET `/oic/sec/doxm` from a link-local source, ...).
//!
//! ```text
//! header  n:u8        devices = 1 + n % 64; device i has UUID
//!                     50e1a3ae-6a0c-4ac0-7b4f-d1d8<i:08x>; device 0 is the bridge of every VOD
//!         fleet:u8    bit 0 bridge registered after its VODs; bits 1-2 endpoint count
//!                     {64, 16, 40, 1}; bits 3-4 leisure {2 s, 500 ms, 1 s, 3 s}
//!         limits:u8   bits 0-1 max_pending_answers {1000, 64, 16, 4}; bits 2-3
//!                     max_pending_requests {64, 8, 2, 1}; bits 4-5 source_burst {5, 2, 1, 20};
//!                     bits 6-7 source_rate {1, 10, 0.5, 100}/s
//!         budget:u8   bits 0-1 answer_rate_bytes {2 MB, 20 kB, 2 kB, 500}/s; bits 2-3
//!                     max_window {60 s, 5 s, 2 s, 10 s}; bits 4-5 exchange_window {145 s, 3 s,
//!                     500 ms, 10 s}; bits 6-7 max_unicast_queue {64, 4, 1, 16}
//!         seed:u8     the engine's seed
//!         state:u8 x devices (see `state byte`); bit 6 set: not registered at start
//! events, until the input ends (at most 1000), each an op byte, kind = op % 16:
//!   0-4   multicast discovery: ty mid tok grp path q di [dev] [dev] opts (`Discovery::read`)
//!   5     copy of the last discovery: grp [bit 6: fresh token (plgd), else same (IoTivity);
//!         bit 7: on the last discovery's interface, if within the exchange window (plgd on a
//!         host with a ULA: one socket, another source address)]
//!   6     raw datagram: dst len bytes; dst bits 0-1 {ff02::158, 224.0.1.187, device endpoint
//!         v6, v4}, bits 2-7 endpoint slot
//!   7-8   unicast request: slot kind path mid (see `Unicast::read`)
//!   9-10  fleet.patch: device kind [arbitrary]: kind % 8 {DOC open, DOC close, owner transfer
//!         (RFPRO), RFNOP, reset to RFOTM, RESET, arbitrary fields, SRESET}
//!   11-13 clock: u16 big endian, advance (value % 3001) ms
//!   14    poll at the current time
//!   15    admin: kind device state: kind % 4 {remove, upsert, mark_all_unknown, report a full
//!         state}
//! state byte: bits 0-2 dos {RFOTM, RESET, RFPRO, RFNOP, SRESET, RFOTM, RFOTM, RFOTM}[v]
//!             (owned = RFPRO, RFNOP or SRESET); bit 3 unknown; bit 4 DOC open; bit 5 VOD
//!             (ignored for device 0); bit 7 also a coap:// IPv4 endpoint
//! ```
//!
//! The seeds in `fuzz/corpus/engine/` were written in this format with a throwaway Python
//! script (one helper per event kind, `bytes.fromhex` for SPEC 4's real request), for example:
//!
//! ```text
//! iotivity-v6-v4-copy-pair
//!   07 00 00 00 07 00 00 03 00 08 10 00 02  8 devices: 2 RFNOP, 4 unknown, 5 DOC open, 7 RFPRO
//!   00 00 00 00 00 00 01 00 50              owned=FALSE, Accept 10000, 2049 = 2048, to ff02::158
//!                                           from [fe80::1234]:49152
//!   05 01                                   the same to 224.0.1.187 from 192.0.2.10:49153
//!   0b 00 32  05 00                         50 ms later, to ff02::158 again
//!   (0b 0b b8) x 49                         147 s: the exchange window (145 s) has ended
//!   06 00 2d <45 bytes>  06 01 2d <45 bytes> SPEC 4's request as raw bytes, on both families
//!   0b 09 c4                                2.5 s
//! ```
//!
//! and `plgd-three-groups` (ff02/ff03/ff05 from one source, fresh tokens, then unicast doxm
//! baseline), `plgd-ula-one-socket` (ff02 from the link-local source, ff03/ff05 from a
//! global one with the same port on the same interface, then the same port on another
//! interface), `doc-opens-mid-window`, `bridge-vods-owner-transfer` (VODs silent until their
//! bridge is owned; bridge removed and re-registered; `mark_all_unknown`),
//! `unicast-obt-follow-up` (`/oic/res?rt=oic.r.doxm`, `/oic/d`, error codes, empty ACK),
//! `filters-and-odd-sources` (one request per pre-filter and source rule), `limits-shed-and-rate`
//! (the smallest limits), `unicast-flood-over-budget` (35 `CON GET /oic/res` at a 500 B/s
//! budget, most refused while the pacer holds), `budget-stretch`, `junk` and
//! `deviceuuid-names-one-device` (`deviceuuid` in each form, alone and with `di`, to eligible,
//! RFNOP and unknown devices).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::endpoint::EndpointPlan;
use crate::engine::{Config, Engine, EngineDrop, Meta, Transmit, Verdict};
use crate::fleet::{DeviceRecord, Fleet, OnboardingState, StatePatch};
use crate::policy::Dos;
use crate::wire::query::{Filters, Owned};
use crate::wire::{option, Code, Message, MessageType, Writer};
use ciborium::Value;
use uuid::Uuid;

/// Runs one script; panics on any violated invariant.
pub fn check(data: &[u8]) {
    let mut input = Bytes(data);
    let mut run = Run::new(&mut input);
    let mut events = 0;
    while !input.is_empty() && events < MAX_EVENTS {
        run.event(&mut input);
        events += 1;
    }
    run.finish();
}

/// At most this many events per script: with one datagram each, fewer than the duplicate
/// detector remembers, so it never forgets an exchange early (its documented limit).
const MAX_EVENTS: usize = 1_000;
const DEDUP_CAPACITY: usize = 1_024;
const MAX_DEVICES: usize = 64;
/// Device `id`'s discovery endpoint is port `PORT_BASE + id` (port mode).
const PORT_BASE: u16 = 40_000;
/// The burst the engine's pacer allows: `answer_rate_bytes` times this, one timer grain
/// (src/engine/limits/pacer.rs).
const PACER_BURST: Duration = crate::engine::TIMER_GRAIN;
/// `dos.s` by the low three bits of a state byte: RFOTM by default and for 5..=7.
const DOS_CHOICES: [Dos; 8] = [
    Dos::Rfotm,
    Dos::Reset,
    Dos::Rfpro,
    Dos::Rfnop,
    Dos::Sreset,
    Dos::Rfotm,
    Dos::Rfotm,
    Dos::Rfotm,
];
/// The OCF groups (SPEC 8), port 5683.
const GROUPS: [&str; 4] =
    ["[ff02::158]:5683", "224.0.1.187:5683", "[ff03::158]:5683", "[ff05::158]:5683"];

/// Known deviations of the engine from SPEC, reported and tolerated by default so that a
/// campaign looks further than them; set to `true` to reproduce them.
///
/// `di` in another spelling of the device's UUID (32 hex digits without hyphens, braced,
/// `urn:uuid:`): SPEC 1.1 pre-filter 5 compares the text case-insensitively; the engine once
/// parsed any spelling the uuid crate accepts and answered. Fixed: now strict.
const STRICT_DI_SPELLING: bool = true;
/// An answer the pacer holds past the end of its request's window (`max(leisure, max_window)`):
/// SPEC 4 sends each answer inside `[0, L)`. The engine once let the pacer's hard rate bound win
/// and sent such answers up to a window late; fixed: they expire, counted in
/// `answers_expired`. When tolerated, up to one more window is allowed.
const STRICT_WINDOW_END: bool = true;

/// The check's model of one device.
#[derive(Debug, Clone)]
struct Device {
    uuid: Uuid,
    text: String,
    present: bool,
    state: Option<OnboardingState>,
    vod: bool,
    v4: bool,
    /// The slot the fleet gave it while present.
    slot: Option<u32>,
    /// Requests this device answered (indexes into `Run::requests`).
    answered: Vec<usize>,
}

/// One datagram handed to the engine, and what the model says about it.
#[derive(Debug, Clone)]
struct Request {
    at: Instant,
    source: SocketAddr,
    /// The interface index it was handed over with.
    interface: u32,
    multicast: bool,
    /// Parsed as CoAP; `ty`, `mid` and `token` are meaningful only then.
    parsed: bool,
    ty: MessageType,
    mid: u16,
    token: Vec<u8>,
    /// Nothing may be sent in reply (multicast: by any device; unicast: by the device).
    ignore: bool,
    /// Devices that may answer (multicast), or the device itself when eligible (unicast).
    eligible: u64,
    /// Eligible devices that `di` names in another UUID spelling (see `STRICT_DI_SPELLING`).
    lenient: u64,
    /// Unicast: the endpoint slot, the device behind it, and whether Uri-Path is the doxm.
    slot: Option<u32>,
    device: Option<usize>,
    doxm_path: bool,
    /// Unicast CON that must get exactly one ACK.
    must_ack: bool,
    /// `Verdict::Answering(k)`: k.
    scheduled: usize,
    sent: usize,
}

/// The check's model of the fleet, next to the fleet itself.
struct Model {
    fleet: Arc<Fleet>,
    devices: Vec<Device>,
}

/// One script's run: the engine, the model next to it, and every datagram handed over.
struct Run {
    model: Model,
    engine: Engine,
    config: Config,
    endpoints: u16,
    requests: Vec<Request>,
    t0: Instant,
    now: Instant,
    last: Option<Discovery>,
    /// The request index of the last discovery (for copies on its interface).
    last_index: Option<usize>,
    /// Interfaces that more than one request arrived on (a copy on its original's interface):
    /// the requests, in arrival order. Every other interface names one request.
    shared: HashMap<u32, Vec<usize>>,
    answers_seen: u64,
    responses_seen: u64,
    /// The pacer's theoretical arrival time: the answers sent so far paid for at the rate.
    paced_until: Option<Instant>,
    /// Every datagram sent, (when, bytes), for the strict one-second bound (SPEC 7).
    sent_log: VecDeque<(Instant, usize)>,
    /// The same for unicast replies, and the replies' own GCRA at their share of the rate.
    reply_log: VecDeque<(Instant, usize)>,
    reply_paced_until: Option<Instant>,
    /// The replies' rate as the engine last set it.
    reply_rate: u64,
    buf: Vec<u8>,
}

impl Run {
    fn new(input: &mut Bytes<'_>) -> Run {
        let n = 1 + usize::from(input.u8()) % MAX_DEVICES;
        let fleet_bits = input.u8();
        let limits = input.u8();
        let budget = input.u8();
        let seed = u64::from(input.u8());
        let endpoints = [64, 16, 40, 1][usize::from(fleet_bits >> 1 & 3)];
        let pick = |byte: u8, shift: u8| usize::from(byte >> shift & 3);
        let config = Config {
            leisure: [2_000, 500, 1_000, 3_000].map(Duration::from_millis)[pick(fleet_bits, 3)],
            max_window: [60, 5, 2, 10].map(Duration::from_secs)[pick(budget, 2)],
            answer_rate_bytes: [2_000_000, 20_000, 2_000, 500][pick(budget, 0)],
            exchange_window: [145_000, 3_000, 500, 10_000].map(Duration::from_millis)
                [pick(budget, 4)],
            dedup_capacity: DEDUP_CAPACITY,
            source_rate: [1.0, 10.0, 0.5, 100.0][pick(limits, 6)],
            source_burst: [5.0, 2.0, 1.0, 20.0][pick(limits, 4)],
            source_capacity: 4,
            max_pending_answers: [1_000, 64, 16, 4][pick(limits, 0)],
            max_pending_requests: [64, 8, 2, 1][pick(limits, 2)],
            max_unicast_queue: [64, 4, 1, 16][pick(budget, 6)],
            endpoints: EndpointPlan::Ports { base: PORT_BASE, count: endpoints },
            ..Config::default()
        };
        let mut model =
            Model { fleet: Arc::new(Fleet::with_capacity(MAX_DEVICES)), devices: Vec::new() };
        let mut initial = Vec::with_capacity(n);
        for i in 0..n {
            let byte = input.u8();
            let uuid = device_uuid(i);
            model.devices.push(Device {
                uuid,
                text: uuid.hyphenated().to_string(),
                present: false,
                state: None,
                vod: i != 0 && byte & 0x20 != 0,
                v4: byte & 0x80 != 0,
                slot: None,
                answered: Vec::new(),
            });
            initial.push((byte & 0x40 == 0).then(|| state_of(byte)));
        }
        // The bridge (device 0) before or after its VODs: the fleet must cascade either way.
        let mut order: Vec<usize> = (0..n).collect();
        if fleet_bits & 1 != 0 {
            order.rotate_left(1);
        }
        for i in order {
            if let Some(state) = initial[i] {
                model.upsert(i, state);
            }
        }
        let now = Instant::now();
        Run {
            engine: Engine::new(config.clone(), model.fleet.clone(), seed),
            model,
            config,
            endpoints,
            requests: Vec::new(),
            t0: now,
            now,
            last: None,
            last_index: None,
            shared: HashMap::new(),
            answers_seen: 0,
            responses_seen: 0,
            paced_until: None,
            sent_log: VecDeque::new(),
            reply_log: VecDeque::new(),
            reply_paced_until: None,
            reply_rate: 1,
            buf: vec![0; 1_500],
        }
    }

    fn event(&mut self, input: &mut Bytes<'_>) {
        let devices = self.model.devices.len();
        let op = input.u8();
        match op % 16 {
            0..=4 => {
                let discovery = Discovery::read(input, devices);
                self.send_discovery(discovery);
            }
            5 => {
                let grp = input.u8();
                if let Some(mut copy) = self.last.clone() {
                    copy.group = usize::from(grp & 3);
                    copy.source = usize::from(grp >> 2 & 15);
                    if grp & 0x40 != 0 {
                        // plgd: one Message ID, a fresh token per group.
                        match copy.token.last_mut() {
                            Some(last) => *last = last.wrapping_add(1),
                            None => copy.token.push(0x80),
                        }
                    }
                    // plgd from a host with a ULA: the same socket, on the same interface.
                    let interface = self.last_index.map(|i| &self.requests[i]).filter(|o| {
                        grp & 0x80 != 0 && self.now - o.at < self.config.exchange_window
                    });
                    let interface = interface.map(|o| o.interface);
                    self.send_discovery_on(copy, interface);
                }
            }
            6 => {
                let dst = input.u8();
                let len = usize::from(input.u8());
                let bytes = input.take(len).to_vec();
                let (source, destination) = match dst & 3 {
                    0 => (SOURCES_V6[0], GROUPS[0]),
                    1 => (SOURCES_V4[0], GROUPS[1]),
                    2 => (SOURCES_V6[0], "[fe80::1]:0"),
                    _ => (SOURCES_V4[0], "192.0.2.1:0"),
                };
                let mut destination: SocketAddr = parse(destination);
                if dst & 2 != 0 {
                    destination.set_port(PORT_BASE + u16::from(dst >> 2));
                }
                self.deliver(source, destination, &bytes);
            }
            7 | 8 => {
                let (bytes, source, destination) = Unicast::read(input).datagram();
                self.deliver(source, destination, &bytes);
            }
            9 | 10 => {
                let device = usize::from(input.u8()) % devices;
                let kind = input.u8();
                let patch = patch_of(kind, input);
                self.model.patch(device, &patch);
            }
            11..=13 => {
                let ms = u64::from(input.u16()) % 3_001;
                self.advance(Duration::from_millis(ms));
            }
            14 => self.drain(),
            _ => {
                let kind = input.u8();
                let device = usize::from(input.u8()) % devices;
                let state = state_of(input.u8());
                match kind % 4 {
                    0 => self.model.remove(device),
                    1 => self.model.upsert(device, state),
                    2 => self.model.mark_all_unknown(),
                    _ => {
                        let patch = StatePatch {
                            dos: state.map(|s| s.dos),
                            owned: state.map(|s| s.owned),
                            doc_open: state.map(|s| s.doc_open),
                            ..StatePatch::default()
                        };
                        self.model.patch(device, &patch);
                    }
                }
            }
        }
    }

    // ---- Datagrams. ----

    fn send_discovery(&mut self, discovery: Discovery) {
        self.send_discovery_on(discovery, None);
    }

    /// Sends a discovery, on the interface of an earlier request when `interface` is given.
    fn send_discovery_on(&mut self, discovery: Discovery, interface: Option<u32>) {
        let group: SocketAddr = parse(GROUPS[discovery.group]);
        let table = if group.is_ipv4() { &SOURCES_V4 } else { &SOURCES_V6 };
        let source = table[discovery.source];
        let bytes = discovery.encode(&self.model.devices);
        self.last = Some(discovery);
        self.last_index = Some(self.requests.len());
        self.deliver_on(source, group, &bytes, interface);
    }

    /// Hands one datagram to the engine, records the model's view of it, drains, and checks
    /// the verdict.
    fn deliver(&mut self, source: Source, destination: SocketAddr, bytes: &[u8]) {
        self.deliver_on(source, destination, bytes, None);
    }

    /// As [`Run::deliver`], on the interface of an earlier request when `shared` is given.
    fn deliver_on(
        &mut self,
        (source, plain): Source,
        destination: SocketAddr,
        bytes: &[u8],
        shared: Option<u32>,
    ) {
        let source = source();
        let index = self.requests.len();
        let own = u32::try_from(index + 1).expect("fewer than 2^32 requests");
        let interface = shared.unwrap_or(own);
        let mut request = self.model_request(source, plain, destination, bytes);
        request.interface = interface;
        self.requests.push(request);
        if shared.is_some() {
            let first = interface as usize - 1;
            self.shared.entry(interface).or_insert_with(|| vec![first]).push(index);
        }
        let meta = Meta { source, destination, interface };
        // The replies' share while answers wait: one more source (src/engine/mod.rs).
        let sharing = self.engine.pending_sources() as u64;
        let answers_waiting = sharing > 0;
        if !destination.ip().is_multicast() {
            self.reply_rate = (self.config.answer_rate_bytes / (sharing + 1)).max(1);
        }
        let verdict = self.engine.handle(self.now, &meta, bytes);
        let r = &mut self.requests[index];
        match verdict {
            Verdict::Answering(k) => {
                assert!(r.multicast && !r.ignore, "request {index} answered: {verdict:?} {r:?}");
                let may = if STRICT_DI_SPELLING { r.eligible } else { r.eligible | r.lenient };
                assert!(k <= may.count_ones() as usize, "{verdict:?} {r:?}");
                r.scheduled = k;
            }
            Verdict::Responding => {
                assert!(!r.multicast && !r.ignore, "request {index}: {verdict:?} {r:?}");
            }
            Verdict::Malformed(_) => assert!(!r.parsed, "{verdict:?} of a parsed datagram"),
            Verdict::Engine(EngineDrop::OverBudget) => {
                // SPEC 7: a unicast reply is refused for the byte budget only, exactly when
                // the pacer holds (its source's share is charged, never refused).
                assert!(!r.multicast && !r.ignore, "request {index}: {verdict:?} {r:?}");
                let rate = self.config.answer_rate_bytes;
                // The replies' own pacer at their share of this moment (set just above, as
                // the engine sets it before its check); it was `rate / 2` before the replies
                // became one more source of the fair share, and the model kept that.
                let held = pacer_holds(self.paced_until, &self.sent_log, rate, self.now)
                    || (answers_waiting
                        && pacer_holds(
                            self.reply_paced_until,
                            &self.reply_log,
                            self.reply_rate,
                            self.now,
                        ));
                assert!(held, "request {index} refused over budget while the pacer had room");
            }
            _ => {}
        }
        self.drain();
        let r = &self.requests[index];
        if !r.multicast {
            let responded = verdict == Verdict::Responding;
            assert_eq!(r.sent, usize::from(responded), "request {index}: {verdict:?} {r:?}");
            let over_budget = verdict == Verdict::Engine(EngineDrop::OverBudget);
            assert!(!r.must_ack || responded || over_budget, "a CON got no ACK: {verdict:?} {r:?}");
        }
    }

    fn model_request(
        &self,
        source: SocketAddr,
        plain: bool,
        destination: SocketAddr,
        bytes: &[u8],
    ) -> Request {
        let multicast = destination.ip().is_multicast();
        let mut r = Request {
            at: self.now,
            source,
            interface: 0,
            multicast,
            parsed: false,
            ty: MessageType::Reset,
            mid: 0,
            token: Vec::new(),
            ignore: true,
            eligible: 0,
            lenient: 0,
            slot: None,
            device: None,
            doxm_path: false,
            must_ack: false,
            scheduled: 0,
            sent: 0,
        };
        let Ok(msg) = Message::parse(bytes) else {
            return r;
        };
        r.parsed = true;
        r.ty = msg.ty();
        r.mid = msg.message_id();
        r.token = msg.token().to_vec();
        let path: Vec<&[u8]> = msg.uri_path().collect();
        r.doxm_path = path == [&b"oic"[..], b"sec", b"doxm"];
        let bad_source = source_cannot_be_genuine(source, destination.ip());
        if multicast {
            let filters = Filters::parse(msg.uri_query());
            let interface_ok =
                filters.interface.is_none_or(|i| i == b"oic.if.rw" || i == b"oic.if.baseline");
            r.ignore = msg.ty() != MessageType::NonConfirmable
                || msg.code() != Code::GET
                || !r.doxm_path
                || msg.first_unrecognised_critical().is_some()
                || msg.accept().is_some_and(|a| a != 10_000)
                || msg.ocf_accept_content_format_version().is_some_and(|v| v < 2_048)
                || !interface_ok
                || filters.deviceuuid.is_some_and(|v| !hyphenated_uuid_text(v))
                || !matches!(filters.owned, Owned::Absent | Owned::False)
                || msg.no_response().is_some_and(|v| v & 2 != 0)
                || bad_source;
            if !r.ignore {
                for (i, device) in self.model.devices.iter().enumerate() {
                    let named = |v: &[u8]| v.eq_ignore_ascii_case(device.text.as_bytes());
                    if !self.model.eligible(i) || !filters.deviceuuid.is_none_or(named) {
                        continue;
                    }
                    match filters.di {
                        None => r.eligible |= 1 << i,
                        Some(di) if di.eq_ignore_ascii_case(device.text.as_bytes()) => {
                            r.eligible |= 1 << i
                        }
                        Some(di) if other_spelling(di, &device.text) => r.lenient |= 1 << i,
                        Some(_) => {}
                    }
                }
            }
        } else {
            let offset = destination.port().checked_sub(PORT_BASE).filter(|&o| o < self.endpoints);
            r.slot = offset.map(u32::from);
            r.device = r.slot.and_then(|s| self.model.in_slot(s));
            let accepts = r.device.is_some_and(|i| self.model.accepts(i));
            let request_type =
                matches!(msg.ty(), MessageType::Confirmable | MessageType::NonConfirmable);
            r.ignore = !accepts || bad_source || !request_type;
            if let Some(i) = r.device.filter(|&i| self.model.eligible(i)) {
                r.eligible = 1 << i;
            }
            r.must_ack = !r.ignore && msg.ty() == MessageType::Confirmable && plain;
        }
        r
    }

    /// Takes every datagram the engine has ready now, checking each.
    fn drain(&mut self) {
        let expired = self.engine.stats().answers_expired;
        // Whether the pacer held answers until within a grain of now (the driver wakes at
        // `poll_timeout`, rounded up to the grain, once the pacer lets go).
        let rate = self.config.answer_rate_bytes;
        let grain = crate::engine::TIMER_GRAIN + Duration::from_micros(1);
        let ready = self.paced_until.and_then(|p| p.checked_sub(PACER_BURST));
        let held = ready.is_some_and(|r| r + grain >= self.now)
            || [Duration::ZERO, grain].iter().any(|&back| {
                self.now
                    .checked_sub(back)
                    .is_some_and(|t| pacer_holds(None, &self.sent_log, rate, t))
            });
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(t) = self.engine.poll_transmit(self.now, &mut buf) {
            self.on_transmit(&t, &buf[..t.len]);
        }
        self.buf = buf;
        // The driver here is punctual: it wakes at every `poll_timeout`. So an answer can only
        // miss its window while the pacer holds it, and then it expires at the wake-up where
        // the pacer lets go (SPEC 4: never sent late, never dropped without a cause).
        if self.engine.stats().answers_expired > expired {
            assert!(
                held,
                "answers expired at {:?}, and the pacer did not hold them",
                self.now - self.t0
            );
        }
        assert!(!self.engine.has_immediate(), "a unicast response left queued after a drain");
        if let Some(next) = self.engine.poll_timeout() {
            assert!(next > self.now, "poll_timeout {:?} is not after a full drain", next - self.t0);
        }
    }

    /// Moves the clock forward by `by`, stopping at every wakeup the engine asks for.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(next) = self.engine.poll_timeout().filter(|&t| t <= target) {
            self.now = next;
            self.drain();
        }
        self.now = target;
        self.drain();
    }

    fn finish(mut self) {
        while let Some(next) = self.engine.poll_timeout() {
            self.now = next;
            self.drain();
        }
        assert_eq!(self.engine.pending_answers(), 0, "answers pending with no wakeup");
        let stats = self.engine.stats();
        assert_eq!(stats.answers_sent, self.answers_seen, "answers_sent");
        assert_eq!(stats.responses_sent, self.responses_seen, "responses_sent");
        assert_eq!(stats.datagrams, self.requests.len() as u64, "datagrams");
        // Every scheduled answer was sent, cancelled, shed or expired, and nothing twice.
        let settled = stats.answers_sent + stats.answers_cancelled + stats.answers_expired;
        assert!(settled <= stats.answers_scheduled, "{stats:?}");
        assert!(stats.answers_scheduled <= settled + stats.answers_shed, "{stats:?}");
        for (index, r) in self.requests.iter().enumerate() {
            assert!(r.sent <= r.scheduled.max(1), "request {index}: {r:?}");
        }
    }

    // ---- What the engine sends. ----

    fn on_transmit(&mut self, t: &Transmit, bytes: &[u8]) {
        let msg = Message::parse(bytes).expect("the engine sends well-formed CoAP");
        let index = (t.interface as usize).checked_sub(1).filter(|&i| i < self.requests.len());
        let mut index = index.unwrap_or_else(|| panic!("{t:?} answers no request"));
        // On an interface several requests arrived on (copies), the answer belongs to the first
        // that was answering, from its source and with its token.
        if let Some(sharing) = self.shared.get(&t.interface) {
            let requests = &self.requests;
            let mine = sharing.iter().copied().find(|&i| {
                let r = &requests[i];
                r.scheduled > 0 && r.source == t.destination && r.token == msg.token()
            });
            index = mine.unwrap_or(index);
        }
        let r = &self.requests[index];
        assert!(r.parsed, "a reply to malformed request {index}: {t:?}");
        assert!(!r.ignore, "a reply to request {index}, which must be ignored: {r:?} {t:?}");
        assert_eq!(t.destination, r.source, "reply to request {index} not sent to its source");
        let port = u32::from(t.source.port).checked_sub(u32::from(PORT_BASE));
        assert_eq!(port, Some(t.device.0), "{t:?}: not from the device's endpoint");
        if r.multicast {
            self.on_answer(index, t, &msg);
        } else {
            self.on_response(index, t, &msg);
        }
    }

    fn on_answer(&mut self, index: usize, t: &Transmit, msg: &Message<'_>) {
        self.answers_seen += 1;
        let r = &self.requests[index];
        assert_eq!(msg.ty(), MessageType::NonConfirmable, "answer type");
        assert_eq!(msg.code(), Code::CONTENT, "a multicast request gets 2.05 or nothing");
        assert_eq!(msg.token(), r.token, "answer token");
        assert_eq!(msg.content_format(), Some(10_000), "answer content format");
        let (uuid, owned) = doxm_fields(msg.payload());
        let d = self.model.devices.iter().position(|d| d.text == uuid);
        let d = d.unwrap_or_else(|| panic!("answer from {uuid}, not a device of the fleet"));
        assert!(!owned, "an answer says owned: true");
        assert_eq!(self.model.devices[d].slot, Some(t.device.0), "answer of device {d} from {t:?}");
        assert!(
            self.model.eligible(d),
            "device {d} answers while not eligible: {:?}",
            self.model.devices[d]
        );
        let lenient = if STRICT_DI_SPELLING { 0 } else { r.lenient };
        assert!(
            (r.eligible | lenient) & 1 << d != 0,
            "device {d} answers request {index} but was not eligible (or not named by di) \
             when it arrived"
        );
        for &other in &self.model.devices[d].answered {
            assert_ne!(other, index, "device {d} answers request {index} twice");
            let o = &self.requests[other];
            assert!(
                !self.copies(r, o),
                "device {d} answers requests {other} and {index}, copies of one exchange: \
                 {o:?} {r:?}"
            );
        }
        // The due time against the request's arrival (SPEC 4, `Config::max_window`), and the
        // departure against the due time and the pacer (SPEC 7: a hard rate bound with a burst
        // of `PACER_BURST`, a GCRA over the bytes of the answers sent so far).
        let longest = self.config.leisure.max(self.config.max_window);
        let due = self.now.checked_sub(t.late).expect("late is within the run");
        assert!(due >= r.at, "answer due {:?} before its request", r.at - due);
        assert!(due - r.at <= longest, "answer due {:?} after its request", due - r.at);
        let rate = self.config.answer_rate_bytes;
        assert!(
            !pacer_holds(self.paced_until, &self.sent_log, rate, self.now),
            "answer sent ahead of the rate"
        );
        // The driver wakes at `poll_timeout`, which rounds up to the timer grain (SPEC 4): an
        // answer leaves within a grain of its due time, or of the pacer letting it go.
        let ready = self.paced_until.and_then(|p| p.checked_sub(PACER_BURST));
        let held = ready.filter(|&ready| ready > due);
        let release = held.unwrap_or(due);
        let late = self.now > release + crate::engine::TIMER_GRAIN;
        // Later than that only while the pacer's one-second ring was full at some point after
        // the release (sampled every millisecond): it frees at a grain boundary.
        let ring_full = late && {
            let mut t = release;
            let mut full = false;
            while t < self.now && !full {
                full = pacer_holds(None, &self.sent_log, rate, t);
                t += Duration::from_millis(1);
            }
            full
        };
        assert!(
            !late || ring_full,
            "answer held {:?} past its due time and the pacer",
            self.now - release
        );
        // Answers bunched at the end of overlapping windows can be held past the end by a
        // fraction of a window; by more than a whole window, lateness is piling up.
        let after = self.now - r.at;
        let allowed = if held.is_some() && !STRICT_WINDOW_END { 2 * longest } else { longest };
        assert!(
            after <= allowed,
            "answer left {after:?} after its request, due {:?} (held by the pacer: {})",
            due - r.at,
            held.is_some()
        );
        self.pace(t.len);
        let r = &mut self.requests[index];
        r.sent += 1;
        assert!(r.sent <= r.scheduled, "request {index}: more answers than scheduled");
        self.model.devices[d].answered.push(index);
    }

    fn on_response(&mut self, index: usize, t: &Transmit, msg: &Message<'_>) {
        self.responses_seen += 1;
        // SPEC 7: replies go through the same pacer as answers, never ahead of its rate.
        let rate = self.config.answer_rate_bytes;
        assert!(
            !pacer_holds(self.paced_until, &self.sent_log, rate, self.now),
            "reply sent ahead of the rate"
        );
        self.pace(t.len);
        self.reply_paced_until =
            Some(gcra(self.reply_paced_until, self.now, t.len, self.reply_rate));
        self.reply_log.push_back((self.now, t.len));
        let r = &mut self.requests[index];
        r.sent += 1;
        assert_eq!(r.sent, 1, "request {index} got two responses");
        assert_eq!(self.now, r.at, "a unicast response waits");
        assert_eq!(Some(t.device.0), r.slot, "response from another device's endpoint");
        match r.ty {
            MessageType::Confirmable => {
                assert_eq!(msg.ty(), MessageType::Acknowledgement, "CON gets an ACK");
                assert_eq!(msg.message_id(), r.mid, "the ACK has the CON's Message ID");
            }
            MessageType::NonConfirmable => {
                assert_eq!(msg.ty(), MessageType::NonConfirmable, "NON gets NON")
            }
            _ => panic!("a response to an ACK or RST"),
        }
        if msg.code() == Code::EMPTY {
            assert_eq!(r.ty, MessageType::Confirmable, "an empty message for a NON");
            assert!(msg.token().is_empty() && msg.payload().is_empty(), "empty ACK with content");
            return;
        }
        assert_eq!(msg.token(), r.token, "response token");
        assert!(matches!(msg.code().class(), 2 | 4), "response code {}", msg.code());
        if r.doxm_path && msg.code() == Code::CONTENT {
            let d = r.device.expect("a device behind the endpoint");
            assert!(r.eligible & 1 << d != 0, "unicast doxm 2.05 from ineligible device {d}");
            let (uuid, owned) = doxm_fields(msg.payload());
            assert_eq!(uuid, self.model.devices[d].text, "unicast doxm of another device");
            assert!(!owned, "unicast doxm 2.05 says owned: true");
        }
    }

    /// Charges `bytes` sent now to the model's pacer (the engine's GCRA, `PACER_BURST`).
    /// Also checks SPEC 7's strict bound: no sliding second holds more than the rate plus
    /// one datagram.
    fn pace(&mut self, bytes: usize) {
        let rate = self.config.answer_rate_bytes;
        self.paced_until = Some(gcra(self.paced_until, self.now, bytes, rate));
        let second_ago = self.now.checked_sub(Duration::from_secs(1));
        let in_last_second: usize = self
            .sent_log
            .iter()
            .rev()
            .take_while(|(at, _)| second_ago.is_none_or(|ago| *at > ago))
            .map(|(_, b)| b)
            .sum();
        assert!(
            (in_last_second as u64) < rate,
            "{in_last_second} B sent in the second before a {bytes} B datagram, rate {rate} B/s"
        );
        self.sent_log.push_back((self.now, bytes));
    }

    /// SPEC 1.1: two requests are copies of one exchange when they have the same Message ID
    /// and either the same token, or the same source endpoint, or the same source port on the
    /// same interface (plgd from a host with a ULA), within the exchange window.
    fn copies(&self, a: &Request, b: &Request) -> bool {
        let same_port = a.source.port() == b.source.port();
        let same_source = a.source.ip().to_canonical() == b.source.ip().to_canonical() && same_port;
        let same_socket = same_port && a.interface == b.interface;
        let apart = if a.at > b.at { a.at - b.at } else { b.at - a.at };
        a.mid == b.mid
            && (a.token == b.token || same_source || same_socket)
            && apart < self.config.exchange_window
    }
}

/// The model of the fleet (SPEC sections 1.1 and 6); every change goes to both.
impl Model {
    /// The bridge (device 0) is registered, its state known, and owned.
    fn bridge_owned(&self) -> bool {
        let bridge = &self.devices[0];
        bridge.present && bridge.state.is_some_and(|s| s.owned)
    }

    /// The device accepts requests at all: present, state known, no unowned bridge.
    fn accepts(&self, i: usize) -> bool {
        let d = &self.devices[i];
        d.present && d.state.is_some() && (!d.vod || self.bridge_owned())
    }

    /// `eligible(v)` of SPEC 1.1.
    fn eligible(&self, i: usize) -> bool {
        let d = &self.devices[i];
        self.accepts(i) && d.state.is_some_and(|s| s.dos == Dos::Rfotm && !s.owned && !s.doc_open)
    }

    /// The device in endpoint slot `slot`.
    fn in_slot(&self, slot: u32) -> Option<usize> {
        self.devices.iter().position(|d| d.slot == Some(slot))
    }

    fn upsert(&mut self, i: usize, state: Option<OnboardingState>) {
        let d = &self.devices[i];
        let record = record_of(i, d.vod, d.v4);
        let (id, _) = self.fleet.upsert(record, state).expect("a consistent upsert succeeds");
        if let Some(slot) = d.slot {
            assert_eq!(id.0, slot, "an upsert of a present device keeps its slot");
        }
        let other = self.in_slot(id.0).filter(|&j| j != i);
        assert_eq!(other, None, "slot {} given to device {i} is in use", id.0);
        let d = &mut self.devices[i];
        d.present = true;
        d.state = state;
        d.slot = Some(id.0);
    }

    fn remove(&mut self, i: usize) {
        let result = self.fleet.remove(&self.devices[i].uuid);
        let d = &mut self.devices[i];
        assert_eq!(result.is_ok(), d.present, "remove device {i}: {result:?}");
        d.present = false;
        d.state = None;
        d.slot = None;
    }

    fn mark_all_unknown(&mut self) {
        self.fleet.mark_all_unknown();
        for d in &mut self.devices {
            d.state = None;
        }
    }

    fn patch(&mut self, i: usize, patch: &StatePatch) {
        let result = self.fleet.patch(&self.devices[i].uuid, patch, None);
        let d = &mut self.devices[i];
        let want = if d.present { model_patch(d.state, patch) } else { None };
        assert_eq!(result.is_ok(), want.is_some(), "patch {patch:?} of device {i}: {result:?}");
        if let Some(state) = want {
            d.state = state;
        }
    }
}

/// A multicast discovery built from input choices.
#[derive(Debug, Clone)]
struct Discovery {
    ty: MessageType,
    code: Code,
    mid: u16,
    token: Vec<u8>,
    group: usize,
    source: usize,
    path: &'static [&'static str],
    /// Uri-Host (3): critical, not recognised.
    critical: bool,
    /// Option 2052: elective, not recognised.
    elective: bool,
    content_format: bool,
    /// One Uri-Query option per argument, instead of one joined with `&`.
    split: bool,
    owned: Option<&'static str>,
    interface: Option<&'static str>,
    extra: Vec<&'static str>,
    di: Option<(u8, usize)>,
    /// `deviceuuid` comes before `di` in the query.
    deviceuuid_first: bool,
    /// `deviceuuid`: the form (as `di`'s, but 5 is empty) and the device it names.
    deviceuuid: Option<(u8, usize)>,
    accept: Option<&'static [u8]>,
    accept_twice: bool,
    no_response: Option<&'static [u8]>,
    version: Option<u16>,
}

const PATHS: [&[&str]; 8] = [
    &["oic", "sec", "doxm"],
    &["oic", "sec", "doxm"],
    &["oic", "sec", "doxm", ""],
    &["oic", "res"],
    &["OIC", "sec", "doxm"],
    &["oic", "sec"],
    &["oic", "sec", "doxm", "x"],
    &[],
];
const OWNED: [Option<&str>; 8] = [
    None,
    Some("owned=FALSE"),
    Some("owned=false"),
    Some("Owned=TRUE"),
    Some("owned=true"),
    Some("owned=1"),
    Some("owned"),
    Some("owned="),
];
const INTERFACES: [Option<&str>; 8] = [
    None,
    None,
    Some("if=oic.if.rw"),
    Some("if=oic.if.baseline"),
    Some("if=oic.if.ll"),
    Some("if=OIC.IF.RW"),
    Some("if="),
    Some("IF=oic.if.baseline"),
];
const NO_RESPONSE: [Option<&[u8]>; 8] =
    [None, None, Some(&[]), Some(&[2]), Some(&[8]), Some(&[26]), Some(&[16]), Some(&[0, 2])];
const ACCEPT: [Option<&[u8]>; 8] = [
    None,
    None,
    Some(&[0x27, 0x10]),
    Some(&[50]),
    Some(&[60]),
    Some(&[]),
    Some(&[0, 0x27, 0x10]),
    Some(&[0x27, 0x11]),
];

impl Discovery {
    /// `ty mid tok grp path q di [dev] [dev] opts`:
    ///
    /// ```text
    /// ty    bits 0-1 {NON, NON, CON, ACK (bit 2: RST)}; bit 3 POST instead of GET
    /// mid   bits 0-1 {0xf1cd, 0x4242, 0x0001, a u16 that follows}
    /// tok   bits 0-1 {61387b7099602b0b, 01020304, empty, (tok >> 2) % 9 bytes that follow}
    /// grp   bits 0-1 group {ff02::158, 224.0.1.187, ff03::158, ff05::158}; bits 2-5 source
    ///       (SOURCES_V6 or SOURCES_V4, by the group's family)
    /// path  bits 0-2 PATHS; bit 3 Uri-Host; bit 4 option 2052; bit 5 Content-Format;
    ///       bit 6 split queries; bit 7 Accept twice
    /// q     bits 0-2 OWNED; bits 3-5 INTERFACES; bit 6 then `owned=TRUE`; bit 7 `rt=oic.r.doxm`
    /// di    bits 0-2 `di` {none, none, lower, UPPER, simple, braced, unknown UUID, not a UUID};
    ///       bits 3-5 `deviceuuid` {none, none, lower, UPPER, simple, empty, unknown UUID, not
    ///       a UUID}, after `di` in the query (bit 6: before it); a device byte follows for each
    ///       form that names a device (2-5 for `di`, then 2-4 for `deviceuuid`)
    /// opts  bits 0-2 NO_RESPONSE; bits 3-5 ACCEPT; bits 6-7 version {none, 2048, 2047, 2049}
    /// ```
    fn read(input: &mut Bytes<'_>, devices: usize) -> Discovery {
        let ty = input.u8();
        let mid = input.u8();
        let tok = input.u8();
        let mid = match mid & 3 {
            0 => 0xf1cd,
            1 => 0x4242,
            2 => 0x0001,
            _ => input.u16(),
        };
        let token = match tok & 3 {
            0 => vec![0x61, 0x38, 0x7b, 0x70, 0x99, 0x60, 0x2b, 0x0b],
            1 => vec![1, 2, 3, 4],
            2 => Vec::new(),
            _ => input.take(usize::from(tok >> 2) % 9).to_vec(),
        };
        let grp = input.u8();
        let path = input.u8();
        let q = input.u8();
        let forms = input.u8();
        let di = match forms & 7 {
            form @ 2..=5 => Some((form, usize::from(input.u8()) % devices)),
            form => Some((form, 0)).filter(|_| form >= 6),
        };
        let deviceuuid = match forms >> 3 & 7 {
            form @ 2..=4 => Some((form, usize::from(input.u8()) % devices)),
            form => Some((form, 0)).filter(|_| form >= 5),
        };
        let deviceuuid_first = forms & 0x40 != 0;
        let opts = input.u8();
        let mut extra = Vec::new();
        if q & 0x40 != 0 {
            extra.push("owned=TRUE");
        }
        if q & 0x80 != 0 {
            extra.push("rt=oic.r.doxm");
        }
        Discovery {
            ty: match ty & 3 {
                0 | 1 => MessageType::NonConfirmable,
                2 => MessageType::Confirmable,
                _ if ty & 4 != 0 => MessageType::Reset,
                _ => MessageType::Acknowledgement,
            },
            code: if ty & 8 != 0 { Code::POST } else { Code::GET },
            mid,
            token,
            group: usize::from(grp & 3),
            source: usize::from(grp >> 2 & 15),
            path: PATHS[usize::from(path & 7)],
            critical: path & 0x08 != 0,
            elective: path & 0x10 != 0,
            content_format: path & 0x20 != 0,
            split: path & 0x40 != 0,
            accept_twice: path & 0x80 != 0,
            owned: OWNED[usize::from(q & 7)],
            interface: INTERFACES[usize::from(q >> 3 & 7)],
            extra,
            di,
            deviceuuid,
            deviceuuid_first,
            no_response: NO_RESPONSE[usize::from(opts & 7)],
            accept: ACCEPT[usize::from(opts >> 3 & 7)],
            version: [None, Some(2_048), Some(2_047), Some(2_049)][usize::from(opts >> 6)],
        }
    }

    fn encode(&self, devices: &[Device]) -> Vec<u8> {
        let di = self.di.map(|(form, i)| {
            let uuid = devices[i].uuid;
            match form {
                2 => format!("di={}", uuid.hyphenated()),
                3 => format!("di={}", uuid.hyphenated().to_string().to_uppercase()),
                4 => format!("di={}", uuid.simple()),
                5 => format!("di={}", uuid.braced()),
                6 => format!("di={}", device_uuid(0xdead)),
                _ => String::from("di=not-a-uuid"),
            }
        });
        let deviceuuid = self.deviceuuid.map(|(form, i)| {
            let uuid = devices[i].uuid;
            match form {
                2 => format!("deviceuuid={}", uuid.hyphenated()),
                3 => format!("DeviceUUID={}", uuid.hyphenated().to_string().to_uppercase()),
                4 => format!("deviceuuid={}", uuid.simple()),
                5 => String::from("deviceuuid="),
                6 => format!("deviceuuid={}", device_uuid(0xbeef)),
                _ => String::from("deviceuuid=not-a-uuid"),
            }
        });
        let mut queries: Vec<&str> = Vec::new();
        queries.extend(self.owned);
        if self.deviceuuid_first {
            queries.extend(deviceuuid.as_deref());
        }
        queries.extend(di.as_deref());
        if !self.deviceuuid_first {
            queries.extend(deviceuuid.as_deref());
        }
        queries.extend(self.interface);
        queries.extend(&self.extra);
        let joined = queries.join("&");
        let mut buf = [0u8; 512];
        let written = Writer::new(&mut buf, self.ty, self.code, self.mid, &self.token)
            .and_then(|mut w| {
                if self.critical {
                    w.option(option::URI_HOST, b"gw")?;
                }
                for segment in self.path {
                    w.option(option::URI_PATH, segment.as_bytes())?;
                }
                if self.content_format {
                    w.uint_option(option::CONTENT_FORMAT, 10_000)?;
                }
                if self.split {
                    for q in &queries {
                        w.option(option::URI_QUERY, q.as_bytes())?;
                    }
                } else if !joined.is_empty() {
                    w.option(option::URI_QUERY, joined.as_bytes())?;
                }
                for accept in
                    self.accept.into_iter().chain(self.accept.filter(|_| self.accept_twice))
                {
                    w.option(option::ACCEPT, accept)?;
                }
                if let Some(value) = self.no_response {
                    w.option(option::NO_RESPONSE, value)?;
                }
                if let Some(version) = self.version {
                    w.uint_option(option::OCF_ACCEPT_CONTENT_FORMAT_VERSION, u32::from(version))?;
                }
                if self.elective {
                    w.option(2_052, b"x")?;
                }
                Ok(w.finish())
            })
            .expect("a discovery fits in 512 bytes");
        buf[..written].to_vec()
    }
}

/// A unicast request to a device endpoint, built from input choices.
#[derive(Debug, Clone, Copy)]
struct Unicast {
    slot: u8,
    kind: u8,
    path: u8,
    mid: u8,
}

impl Unicast {
    /// `slot kind path mid`:
    ///
    /// ```text
    /// slot  endpoint port 40000 + slot % 72 (past the plan's count: no device)
    /// kind  bits 0-1 {CON, NON, CON, ACK}; bits 2-3 destination {[fe80::1], 192.0.2.1,
    ///       [fd00::1], 10.0.0.2}; bits 4-7 source (SOURCES_V6 or SOURCES_V4, by family)
    /// path  bits 0-1 {/oic/sec/doxm, /oic/res, /oic/d, /oic/p}; bits 2-4 query {none,
    ///       rt=oic.r.doxm, owned=TRUE, owned=FALSE, if=oic.if.baseline, owned=1, if=oic.if.ll,
    ///       rt=oic.d.light}; bit 5 POST; bit 6 No-Response 2; bit 7 No-Response 8
    /// mid   Message ID 0x7700 + mid, token 75 mid (empty when mid is 0)
    /// ```
    fn read(input: &mut Bytes<'_>) -> Unicast {
        Unicast { slot: input.u8(), kind: input.u8(), path: input.u8(), mid: input.u8() }
    }

    fn datagram(&self) -> (Vec<u8>, Source, SocketAddr) {
        let ty = [
            MessageType::Confirmable,
            MessageType::NonConfirmable,
            MessageType::Confirmable,
            MessageType::Acknowledgement,
        ][usize::from(self.kind & 3)];
        let ip = ["fe80::1", "192.0.2.1", "fd00::1", "10.0.0.2"][usize::from(self.kind >> 2 & 3)];
        let ip: IpAddr = ip.parse().expect("a literal address");
        let destination = SocketAddr::new(ip, PORT_BASE + u16::from(self.slot) % 72);
        let table = if ip.is_ipv4() { &SOURCES_V4 } else { &SOURCES_V6 };
        let source = table[usize::from(self.kind >> 4)];
        let path: &[&str] =
            [&["oic", "sec", "doxm"][..], &["oic", "res"], &["oic", "d"], &["oic", "p"]]
                [usize::from(self.path & 3)];
        let query = [
            None,
            Some("rt=oic.r.doxm"),
            Some("owned=TRUE"),
            Some("owned=FALSE"),
            Some("if=oic.if.baseline"),
            Some("owned=1"),
            Some("if=oic.if.ll"),
            Some("rt=oic.d.light"),
        ][usize::from(self.path >> 2 & 7)];
        let code = if self.path & 0x20 != 0 { Code::POST } else { Code::GET };
        let no_response = match self.path >> 6 {
            0 => None,
            1 => Some(2),
            2 => Some(8),
            _ => Some(10),
        };
        let token: &[u8] = if self.mid == 0 { &[] } else { &[0x75, self.mid] };
        let mut buf = [0u8; 128];
        let written = Writer::new(&mut buf, ty, code, 0x7700 + u16::from(self.mid), token)
            .and_then(|mut w| {
                for segment in path {
                    w.option(option::URI_PATH, segment.as_bytes())?;
                }
                if let Some(q) = query {
                    w.option(option::URI_QUERY, q.as_bytes())?;
                }
                if let Some(value) = no_response {
                    w.uint_option(option::NO_RESPONSE, value)?;
                }
                Ok(w.finish())
            })
            .expect("a unicast request fits in 128 bytes");
        (buf[..written].to_vec(), source, destination)
    }
}

/// A source address, and whether it is a plain one for its table's destinations (same family,
/// a unicast address, a port): the engine must then reply to a CON that the device accepts.
type Source = (fn() -> SocketAddr, bool);
/// Sources for IPv6 destinations: `0` is the IoTivity-Lite OBT's, `1` plgd's.
const SOURCES_V6: [Source; 16] = [
    (|| parse("[fe80::1234]:49152"), true),
    (|| parse("[fe80::77]:40404"), true),
    (|| parse("[fe80::1234]:5683"), true),
    (|| parse("[fe80::9]:5683"), true),
    (|| parse("[2001:db8::1]:5683"), true),
    (|| parse("[fd00::5]:5683"), true),
    (|| parse("[::1]:5683"), true),
    (|| parse("[::ffff:192.0.2.10]:49153"), false),
    (|| parse("[ff02::1]:5683"), false),
    (|| parse("[::]:5683"), false),
    (|| parse("[fe80::1234]:0"), false),
    (|| parse("192.0.2.10:49153"), false),
    (|| parse("[fe80::1234%3]:49152"), true),
    (|| parse("[ff05::1]:5683"), false),
    (|| parse("[2001:db8::2]:40404"), true),
    // plgd's source again, with a flow label: the same endpoint for the duplicate rule.
    (
        || {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x77),
                40404,
                7,
                0,
            ))
        },
        true,
    ),
];
/// Sources for IPv4 destinations: `0` is the IoTivity-Lite OBT's.
const SOURCES_V4: [Source; 16] = [
    (|| parse("192.0.2.10:49153"), true),
    (|| parse("192.0.2.11:5683"), true),
    (|| parse("192.0.2.10:5683"), true),
    (|| parse("10.0.0.1:5683"), true),
    (|| parse("127.0.0.1:5683"), true),
    (|| parse("0.0.0.0:5683"), false),
    (|| parse("224.0.0.1:5683"), false),
    (|| parse("255.255.255.255:5683"), false),
    (|| parse("0.1.2.3:5683"), false),
    (|| parse("192.0.2.10:0"), false),
    (|| parse("[fe80::1234]:49152"), false),
    (|| parse("192.168.1.255:5683"), false),
    (|| parse("239.255.255.250:1900"), false),
    (|| parse("192.0.2.12:49153"), true),
    (|| parse("192.0.2.10:49153"), true),
    // The OBT's IPv4 source as a dual-stack socket reports it: the same endpoint.
    (|| parse("[::ffff:192.0.2.10]:49153"), false),
];

/// Whether `value` is UUID text in the hyphenated 8-4-4-4-12 form (hex digits in any case),
/// the only form a `deviceuuid` (or `di`) names a device in (SPEC 1.1).
fn hyphenated_uuid_text(value: &[u8]) -> bool {
    value.len() == 36
        && value.iter().enumerate().all(|(at, &b)| match at {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Whether `di` is another spelling of the UUID whose hyphenated form is `text`: without
/// hyphens, in braces, or as a `urn:uuid:` URN, in any case.
fn other_spelling(di: &[u8], text: &str) -> bool {
    let di = String::from_utf8_lossy(di).to_ascii_lowercase();
    let bare = di.strip_prefix("urn:uuid:").unwrap_or(&di);
    let bare = bare.strip_prefix('{').and_then(|b| b.strip_suffix('}')).unwrap_or(bare);
    bare == text.replace('-', "") || (bare == text && bare != di)
}

fn parse(text: &str) -> SocketAddr {
    text.parse().expect("a literal socket address")
}

/// SPEC section 7: no answer to a source that cannot be genuine: multicast, unspecified or
/// broadcast, or a non-link-local source for `ff02::158`. Loopback sources count as on-link
/// here, as the engine documents (src/engine/source.rs: the kernel drops martian loopback
/// sources, and an answer to one stays on the host).
fn source_cannot_be_genuine(source: SocketAddr, destination: IpAddr) -> bool {
    let ip = source.ip().to_canonical();
    let odd = ip.is_multicast() || ip.is_unspecified() || ip == Ipv4Addr::BROADCAST;
    let link_local = match ip {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    };
    let ff02 = destination == IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x158));
    odd || (ff02 && !link_local && !ip.is_loopback())
}

/// The `deviceuuid` and `owned` of a doxm payload.
fn doxm_fields(payload: &[u8]) -> (String, bool) {
    let value: Value = ciborium::from_reader(payload).expect("a doxm payload is CBOR");
    let map = value.as_map().expect("a doxm payload is a map");
    let field = |key: &str| map.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v);
    let uuid = field("deviceuuid").and_then(Value::as_text).expect("deviceuuid text");
    let owned = field("owned").and_then(Value::as_bool).expect("owned bool");
    (uuid.to_owned(), owned)
}

fn device_uuid(i: usize) -> Uuid {
    Uuid::from_u128(0x50e1_a3ae_6a0c_4ac0_7b4f_d1d8_0000_0000 | i as u128)
}

fn record_of(i: usize, vod: bool, v4: bool) -> DeviceRecord {
    let kind = if i == 0 {
        "oic.d.bridge"
    } else if vod {
        "oic.d.virtual"
    } else {
        "oic.d.light"
    };
    let port = 50_000 + i;
    let mut eps = Vec::new();
    if v4 {
        eps.push(format!("coap://192.0.2.200:{port}"));
    }
    eps.push(format!("coap://[fd00::b]:{port}"));
    eps.push(format!("coaps://[fd00::b]:{}", port + 1_000));
    let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
    // Answers of several sizes (the byte budget estimates one oxm).
    let oxms: &[i32] = match i % 4 {
        0 => &[0],
        1 => &[0, 2],
        2 => &[0, 1, 2, 4],
        _ => &[0, 1, 2, 3, 0xff00, 0x7fff_ffff, -1, -0x8000_0000],
    };
    DeviceRecord::new(
        device_uuid(i),
        Uuid::from_u128(i as u128 + 1),
        &format!("dev-{i}"),
        Arc::from(vec![Box::from("oic.wk.d"), Box::from(kind)]),
        vod.then(|| device_uuid(0)),
        Arc::from(oxms),
        4,
        if i % 4 == 3 { 0x1ff } else { 9 },
        Uuid::nil(),
        Uuid::nil(),
        &eps,
    )
    .expect("a well-formed record")
}

/// A state byte: see the module docs. `None` for an unknown state.
fn state_of(byte: u8) -> Option<OnboardingState> {
    let dos = DOS_CHOICES[usize::from(byte & 7)];
    let owned = matches!(dos, Dos::Rfpro | Dos::Rfnop | Dos::Sreset);
    (byte & 0x08 == 0).then_some(OnboardingState { dos, owned, doc_open: byte & 0x10 != 0 })
}

/// A fleet patch from its kind byte (and, for the arbitrary kind, one more byte: bits 0-2 dos
/// {0..4, none, none, none}; bit 3 owned given, bit 4 its value; bit 5 doc given, bit 6 its
/// value).
fn patch_of(kind: u8, input: &mut Bytes<'_>) -> StatePatch {
    let owner = Some(device_uuid(0xb0b));
    let none = StatePatch::default();
    match kind % 8 {
        0 => StatePatch { doc_open: Some(true), ..none },
        1 => StatePatch { doc_open: Some(false), ..none },
        2 => StatePatch {
            dos: Some(Dos::Rfpro),
            owned: Some(true),
            doc_open: Some(false),
            devowneruuid: owner,
            ..none
        },
        3 => StatePatch { dos: Some(Dos::Rfnop), owned: Some(true), devowneruuid: owner, ..none },
        4 => StatePatch {
            dos: Some(Dos::Rfotm),
            owned: Some(false),
            doc_open: Some(false),
            devowneruuid: Some(Uuid::nil()),
            ..none
        },
        5 => StatePatch { dos: Some(Dos::Reset), owned: Some(false), ..none },
        6 => {
            let b = input.u8();
            StatePatch {
                dos: Dos::from_u8(b & 7),
                owned: (b & 0x08 != 0).then_some(b & 0x10 != 0),
                doc_open: (b & 0x20 != 0).then_some(b & 0x40 != 0),
                oxmsel: (b & 0x80 != 0).then_some(0),
                ..none
            }
        }
        _ => StatePatch { dos: Some(Dos::Sreset), ..none },
    }
}

/// SPEC section 6: the state after a patch, or `None` when the fleet must refuse it (a device
/// of unknown state needs dos, owned and doc_open together; RESET and RFOTM are unowned, RFPRO,
/// RFNOP and SRESET owned).
fn model_patch(
    old: Option<OnboardingState>,
    patch: &StatePatch,
) -> Option<Option<OnboardingState>> {
    let new = match (old, patch.dos, patch.owned, patch.doc_open) {
        (Some(old), dos, owned, doc_open) => Some(OnboardingState {
            dos: dos.unwrap_or(old.dos),
            owned: owned.unwrap_or(old.owned),
            doc_open: doc_open.unwrap_or(old.doc_open),
        }),
        (None, Some(dos), Some(owned), Some(doc_open)) => {
            Some(OnboardingState { dos, owned, doc_open })
        }
        (None, None, None, None) => None,
        (None, _, _, _) => return None,
    };
    let consistent =
        new.is_none_or(|s| s.owned == matches!(s.dos, Dos::Rfpro | Dos::Rfnop | Dos::Sreset));
    consistent.then_some(new)
}

/// A cursor over the script; reads past the end give zeros.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
}

/// The model's GCRA: `paid` after `bytes` leave at `now`, at `rate` bytes per second.
fn gcra(paid: Option<Instant>, now: Instant, bytes: usize, rate: u64) -> Instant {
    let cost = Duration::from_nanos(
        u64::try_from((bytes as u128 * 1_000_000_000).div_ceil(u128::from(rate)))
            .unwrap_or(u64::MAX),
    );
    paid.map_or(now, |p| p.max(now)) + cost
}

/// Whether the engine's pacer (src/engine/limits/pacer.rs) holds datagrams at `now`, modelled
/// from what was sent: the GCRA is more than a grain ahead, or the grains of the last second
/// (the grain of `now` and the 100 before it, counted from the first datagram) hold the rate.
fn pacer_holds(
    paid: Option<Instant>,
    log: &VecDeque<(Instant, usize)>,
    rate: u64,
    now: Instant,
) -> bool {
    if paid.and_then(|p| p.checked_sub(PACER_BURST)).is_some_and(|ready| ready > now) {
        return true;
    }
    // The first datagram is the pacer's epoch: the logs are never trimmed (a script sends at
    // most a few thousand datagrams).
    let Some(&(epoch, _)) = log.front() else { return false };
    let grain = |t: Instant| t.saturating_duration_since(epoch).as_nanos() / PACER_BURST.as_nanos();
    let oldest = grain(now).saturating_sub(100);
    let in_ring: usize = log
        .iter()
        .rev()
        .skip_while(|(at, _)| *at > now)
        .take_while(|(at, _)| grain(*at) >= oldest)
        .map(|(_, b)| b)
        .sum();
    in_ring as u64 >= rate.max(1)
}
