//! A deterministic storm simulator: N devices, K clients, duplicate copies, a jumping clock.
//!
//! Drives one [`Engine`] with the traffic real clients send (the IoTivity-Lite OBT's v6 + v4
//! copies, the plgd client's three IPv6 groups, an abusive repeater, a junk sender, an OBT that
//! asks one device by `deviceuuid`) and state
//! changes from the bridge in the middle of the storm. Time never sleeps: the clock jumps to the
//! next client event or to the engine's [`Engine::poll_timeout`]. With the same [`Scenario`] the
//! run, and so its [`Report`], is always the same, which makes the report a snapshot test and
//! the invariants (nobody ineligible answers, nobody answers one exchange twice) checkable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::engine::{Config, Engine, Meta};
use crate::fleet::{DeviceId, DeviceRecord, Fleet, OnboardingState, StatePatch};
use crate::policy::Dos;
use crate::wire::{option, Code, Message, MessageType, Writer};

/// The kinds of client the simulator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKind {
    /// IoTivity-Lite OBT: `owned=FALSE` to ff02::158 and 224.0.1.187, same token and MID.
    IotivityLite,
    /// plgd client: ff02, ff03 and ff05::158 from one source, one MID, a token per group.
    Plgd,
    /// Repeats valid discoveries with fresh MIDs as fast as it is scheduled to.
    Repeater,
    /// Sends malformed and wrong datagrams.
    Junk,
    /// An OBT that asks for one device (by fleet index) with `deviceuuid`, in the
    /// IoTivity-Lite OBT's v6 + v4 copies. Its discoveries cycle through four queries:
    /// `deviceuuid=<device>`; `DeviceUUID=<DEVICE>&di=<device>`; `deviceuuid=` (names nobody);
    /// `deviceuuid=<the next device>`.
    Targeted(u32),
}

impl ClientKind {
    fn as_str(self) -> &'static str {
        match self {
            ClientKind::IotivityLite => "iotivity-lite",
            ClientKind::Plgd => "plgd",
            ClientKind::Repeater => "repeater",
            ClientKind::Junk => "junk",
            ClientKind::Targeted(_) => "targeted",
        }
    }
}

/// One client: what it is and when it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its behaviour.
    pub kind: ClientKind,
    /// When it sends its first discovery, from the start.
    pub first: Duration,
    /// How many discoveries it sends.
    pub count: u32,
    /// The time between discoveries.
    pub every: Duration,
}

/// A state change reported by the bridge during the storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flip {
    /// When, from the start.
    pub at: Duration,
    /// Which device (by index in the fleet).
    pub device: u32,
    /// `true`: a DOC opens; `false`: it closes.
    pub doc_open: bool,
}

/// Everything that determines a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Fleet size.
    pub devices: u32,
    /// Every `eligible_every`-th device is in RFOTM; the rest are owned and in RFNOP.
    pub eligible_every: u32,
    /// The clients.
    pub clients: Vec<Client>,
    /// State changes.
    pub flips: Vec<Flip>,
    /// The engine's configuration.
    pub config: Config,
    /// The engine's seed.
    pub seed: u64,
}

/// What one client saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientReport {
    /// Datagrams sent (copies included).
    pub sent: u64,
    /// Answers received.
    pub answers: u64,
    /// Distinct devices that answered.
    pub devices: u64,
    /// Answers from a device that already answered the same exchange (must be 0).
    pub duplicate_answers: u64,
    /// Answers from a device that was not eligible when the answer left (must be 0).
    pub ineligible_answers: u64,
    /// The latest answer, after its request.
    pub last_answer: Duration,
    /// When each answer arrived, after the client's first request (not in the table).
    pub answer_times: Vec<Duration>,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Per client, in scenario order.
    pub clients: Vec<(ClientKind, ClientReport)>,
    /// Every non-zero verdict counter: `group/label -> count`.
    pub verdicts: BTreeMap<String, u64>,
    /// Answer-level counters: scheduled, sent, cancelled, shed, expired, budget stretches.
    pub answers: [u64; 6],
    /// The largest number of bytes sent in any sliding one-second interval.
    pub peak_bytes_per_second: u64,
    /// Every datagram the engine sent: (when, bytes), from the start (not in the table).
    pub sent: Vec<(Duration, u64)>,
    /// The engine's pending answers after every wake-up: (when, answers) (not in the table).
    pub pending: Vec<(Duration, usize)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "client         sent  answers  devices  dup  ineligible  last_ms")?;
        for (kind, c) in &self.clients {
            writeln!(
                f,
                "{:<13} {:>5} {:>8} {:>8} {:>4} {:>11} {:>8}",
                kind.as_str(),
                c.sent,
                c.answers,
                c.devices,
                c.duplicate_answers,
                c.ineligible_answers,
                c.last_answer.as_millis()
            )?;
        }
        let [scheduled, sent, cancelled, shed, expired, stretches] = self.answers;
        writeln!(
            f,
            "answers: scheduled {scheduled}, sent {sent}, cancelled {cancelled}, shed {shed}, \
             expired {expired}, stretched windows {stretches}; peak {} B in a sliding second",
            self.peak_bytes_per_second
        )?;
        for (label, n) in &self.verdicts {
            writeln!(f, "  {label:<42} {n:>6}")?;
        }
        Ok(())
    }
}

struct ClientState {
    kind: ClientKind,
    v6: SocketAddr,
    v4: SocketAddr,
    report: ClientReport,
    /// Devices that answered, per token (an exchange).
    answered: HashMap<Vec<u8>, HashSet<DeviceId>>,
    /// When each token was sent.
    sent_at: HashMap<Vec<u8>, Instant>,
    /// When its first request left.
    first_sent: Option<Instant>,
    seen: HashSet<DeviceId>,
}

/// Runs `scenario` to completion.
pub fn run(scenario: &Scenario) -> Report {
    let fleet = Arc::new(Fleet::with_capacity(scenario.devices as usize));
    for i in 0..scenario.devices {
        let eligible = i % scenario.eligible_every.max(1) == 0;
        let state = if eligible {
            OnboardingState { dos: Dos::Rfotm, owned: false, doc_open: false }
        } else {
            OnboardingState { dos: Dos::Rfnop, owned: true, doc_open: false }
        };
        // Records are well-formed by construction; a failure would be a simulator bug.
        if let Ok(record) = sim_record(i) {
            let _ = fleet.upsert(record, Some(state));
        }
    }
    let mut engine = Engine::new(scenario.config.clone(), fleet.clone(), scenario.seed);
    let t0 = Instant::now();
    let mut clients: Vec<ClientState> = scenario
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| ClientState {
            kind: c.kind,
            v6: SocketAddr::new([0xfe80, 0, 0, 0, 0, 0, 0, 0x100 + i as u16].into(), 5683),
            v4: SocketAddr::new([192, 0, 2, 10 + i as u8].into(), 5683),
            report: ClientReport::default(),
            answered: HashMap::new(),
            sent_at: HashMap::new(),
            first_sent: None,
            seen: HashSet::new(),
        })
        .collect();
    // Every client event and flip, in time order (stable for equal times).
    let mut events: Vec<(Duration, usize, u32)> = Vec::new();
    for (i, c) in scenario.clients.iter().enumerate() {
        for n in 0..c.count {
            events.push((c.first + c.every * n, i, n));
        }
    }
    events.sort_by_key(|&(at, i, n)| (at, i, n));
    let mut flips = scenario.flips.clone();
    flips.sort_by_key(|f| f.at);
    let (mut next_event, mut next_flip) = (0, 0);
    let mut buf = [0u8; 1500];
    // (when, bytes) of every datagram sent, for the sliding-second peak.
    let mut sent: Vec<(Duration, u64)> = Vec::new();
    let mut pending = Vec::new();
    let mut now = t0;
    loop {
        // Deliver everything due now.
        while let Some(t) = engine.poll_transmit(now, &mut buf) {
            let at = now - t0;
            sent.push((at, t.len as u64));
            let eligible = fleet.word(t.device).is_eligible();
            if let Some(c) =
                clients.iter_mut().find(|c| c.v6 == t.destination || c.v4 == t.destination)
            {
                receive(c, now, t.device, eligible, &buf[..t.len]);
            }
        }
        pending.push((now - t0, engine.pending_answers()));
        let event_at = events.get(next_event).map(|e| t0 + e.0);
        let flip_at = flips.get(next_flip).map(|f| t0 + f.at);
        let wake = [event_at, flip_at, engine.poll_timeout()].into_iter().flatten().min();
        let Some(wake) = wake else { break };
        now = now.max(wake);
        while let Some(flip) = flips.get(next_flip).filter(|f| t0 + f.at <= now) {
            let uuid = sim_uuid(flip.device);
            let _ = fleet.patch(
                &uuid,
                &StatePatch { doc_open: Some(flip.doc_open), ..Default::default() },
                None,
            );
            next_flip += 1;
        }
        while let Some(&(_, i, n)) = events.get(next_event).filter(|e| t0 + e.0 <= now) {
            send(&mut engine, &mut clients[i], now, n, i);
            next_event += 1;
        }
    }
    let stats = engine.stats();
    let verdicts = stats
        .verdicts()
        .filter(|&(_, _, n)| n > 0)
        .map(|(group, label, n)| (format!("{group}/{label}"), n))
        .collect();
    Report {
        clients: clients.into_iter().map(|c| (c.kind, c.report)).collect(),
        verdicts,
        answers: [
            stats.answers_scheduled,
            stats.answers_sent,
            stats.answers_cancelled,
            stats.answers_shed,
            stats.answers_expired,
            stats.budget_stretches,
        ],
        peak_bytes_per_second: {
            let nanos: Vec<(u64, u64)> =
                sent.iter().map(|&(at, bytes)| (at.as_nanos() as u64, bytes)).collect();
            super::sliding_max(&nanos, 1_000_000_000)
        },
        sent,
        pending,
    }
}

fn receive(c: &mut ClientState, now: Instant, device: DeviceId, eligible: bool, bytes: &[u8]) {
    let Ok(msg) = Message::parse(bytes) else { return };
    c.report.answers += 1;
    if !eligible {
        c.report.ineligible_answers += 1;
    }
    let token = msg.token().to_vec();
    // plgd's three tokens belong to one exchange: key its exchanges by the first token.
    let exchange = if c.kind == ClientKind::Plgd {
        token[..token.len().min(3)].to_vec()
    } else {
        token.clone()
    };
    if !c.answered.entry(exchange).or_default().insert(device) {
        c.report.duplicate_answers += 1;
    }
    c.seen.insert(device);
    c.report.devices = c.seen.len() as u64;
    if let Some(first) = c.first_sent {
        c.report.answer_times.push(now - first);
    }
    if let Some(sent) = c.sent_at.get(&token) {
        c.report.last_answer = c.report.last_answer.max(now - *sent);
    }
}

fn send(engine: &mut Engine, c: &mut ClientState, now: Instant, n: u32, client: usize) {
    let mid = (client as u16).wrapping_mul(1000).wrapping_add(n as u16);
    let token = [client as u8, (n >> 8) as u8, n as u8];
    let groups_v6 = ["[ff02::158]:5683", "[ff03::158]:5683", "[ff05::158]:5683"];
    let meta = |source: SocketAddr, group: &str| Meta {
        source,
        destination: group.parse().unwrap_or(source),
        interface: 1,
    };
    let mut deliver = |engine: &mut Engine, m: Meta, bytes: &[u8], token: &[u8]| {
        c.report.sent += 1;
        c.sent_at.entry(token.to_vec()).or_insert(now);
        let _ = c.first_sent.get_or_insert(now);
        engine.handle(now, &m, bytes);
    };
    match c.kind {
        ClientKind::IotivityLite => {
            let bytes = discovery(mid, &token, &[]);
            deliver(engine, meta(c.v6, groups_v6[0]), &bytes, &token);
            deliver(engine, meta(c.v4, "224.0.1.187:5683"), &bytes, &token);
        }
        ClientKind::Plgd => {
            for (g, group) in groups_v6.iter().enumerate() {
                let token = [token[0], token[1], token[2], g as u8];
                deliver(engine, meta(c.v6, group), &discovery(mid, &token, &[]), &token);
            }
        }
        ClientKind::Repeater => {
            deliver(engine, meta(c.v6, groups_v6[0]), &discovery(mid, &token, &[]), &token);
        }
        ClientKind::Junk => {
            let junk: [&[u8]; 4] =
                [&[0x50], &[0x4f, 0x01, 0, 1], &[0x58, 0x01, 0, 1], &[0x40, 0x01, 0, 1, 0xff]];
            deliver(engine, meta(c.v6, groups_v6[0]), junk[n as usize % junk.len()], &token);
        }
        ClientKind::Targeted(device) => {
            let named = sim_uuid(device).hyphenated().to_string();
            let queries = match n % 4 {
                0 => vec![format!("deviceuuid={named}")],
                1 => vec![format!("DeviceUUID={}&di={named}", named.to_uppercase())],
                2 => vec![String::from("deviceuuid=")],
                _ => vec![format!("deviceuuid={}", sim_uuid(device.wrapping_add(1)).hyphenated())],
            };
            let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
            let bytes = discovery(mid, &token, &queries);
            deliver(engine, meta(c.v6, groups_v6[0]), &bytes, &token);
            deliver(engine, meta(c.v4, "224.0.1.187:5683"), &bytes, &token);
        }
    }
}

/// The OBT's discovery (`owned=FALSE`), with `extra` Uri-Query options after it.
fn discovery(mid: u16, token: &[u8], extra: &[&str]) -> Vec<u8> {
    let mut buf = [0u8; 192];
    let written = Writer::new(&mut buf, MessageType::NonConfirmable, Code::GET, mid, token)
        .and_then(|mut w| {
            for segment in ["oic", "sec", "doxm"] {
                w.option(option::URI_PATH, segment.as_bytes())?;
            }
            w.option(option::URI_QUERY, b"owned=FALSE")?;
            for query in extra {
                w.option(option::URI_QUERY, query.as_bytes())?;
            }
            w.uint_option(option::ACCEPT, 10_000)?;
            Ok(w.finish())
        });
    buf[..written.unwrap_or(0)].to_vec()
}

fn sim_uuid(i: u32) -> Uuid {
    Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | u128::from(i))
}

fn sim_record(i: u32) -> Result<DeviceRecord, crate::fleet::RecordError> {
    let mut name = String::new();
    let _ = write!(name, "sim-{i}");
    DeviceRecord::new(
        sim_uuid(i),
        sim_uuid(i),
        &name,
        Arc::from(vec![Box::from("oic.wk.d"), Box::from("oic.d.virtual")]),
        None,
        Arc::from(vec![0]),
        4,
        9,
        Uuid::nil(),
        Uuid::nil(),
        &[],
    )
}
