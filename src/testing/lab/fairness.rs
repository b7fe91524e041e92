//! The fairness scenario of the answer scheduler (SPEC 7, "no source may starve another"),
//! shared by `tests/fairness.rs` (which asserts on it) and the report bench's section 5 (which
//! tabulates it): many source addresses each send one discovery within about a second, then a
//! legitimate OBT sends its own from another address, and every answer is timed on arrival.
//!
//! The case it reproduces was measured on a first-come-first-served budget: 999 eligible
//! devices, `--answer-rate-bytes 200000`, 70 discoveries from 70 addresses (about 3 KB) left an
//! OBT arriving next with no answer for 70 s. Here 200 addresses ([`Scenario::ISSUE`]).
//!
//! # How it runs
//!
//! - The gate (port mode, defaults but the budget) serves [`Scenario::eligible`] eligible
//!   devices; [`add_sources`] puts `attackers + 1` extra link-local addresses (`fe80::a:N`,
//!   `fe80::b7:1` for the OBT, `nodad`) on the OBT side's veth: the gate answers link-local
//!   sources only on ff02::158 (`engine::source_address`).
//! - [`role`] (run in the OBT namespace by a re-executed test or bench binary) binds one
//!   socket per address, sends attacker `i`'s discovery at `i x attack_secs / attackers`, the
//!   OBT's at `obt_after`, and receives on every socket in one thread until `observe` seconds
//!   after the OBT's request. Arrival times are the kernel's (`SO_TIMESTAMPNS`,
//!   [`crate::io::sys::recv_timestamped`]): on a veth they are taken in the gate's send call,
//!   so they are what the gate sent when, whatever the receiver's scheduling. A second thread
//!   reads the gate's `/v1/stats` every 250 ms (`answers.pending`).
//! - [`Outcome::figures`] turns the raw record into [`Figures`], whose [`Figures::failures`]
//!   are the issue's four assertions.
//!
//! # The figures, precisely
//!
//! All times are relative to the first attacker's request (t = 0); `R` is the budget in bytes/s.
//!
//! - A source is **answered** if at least one answer reached it. An answered source is
//!   **pending** over `[its request, its last answer seen]`; the OBT is pending from its
//!   request until its `eligible`-th answer. (A source whose answers all come after the end of
//!   the observation is not seen as pending; on a fair scheduler every pending source gets
//!   answers every second, so none is missed, and missing one only makes the share below larger,
//!   which is stricter.)
//! - **OBT first answer**: its first answer's arrival minus its request's send time.
//! - **OBT fair share** over `[t_obt, t_obt + observe)`, in one-second slots `k`:
//!   `min(eligible, sum_k R x 1 s / S / N_k)`, where `S` is the mean answer size (UDP payload)
//!   and `N_k` the number of sources pending at any time in slot `k`, the OBT included. With
//!   `N_k` = 201 throughout, `S` = 200 B: 15 x 200,000 / 200 / 201 = 74.6 answers.
//! - **Output per second**: answer bytes in each one-second slot `[k, k + 1)` from t = 0 to the
//!   end of the observation (whole slots only).
//! - A slot is **pending** if a pending interval (above) overlaps it, or the gate's
//!   `answers.pending` gauge read in its second half (the gate publishes every 500 ms, so that
//!   value is from within the slot) is above zero. **Stalled seconds**: pending slots with no
//!   output.
//! - **Sliding maximum**: the most answer bytes whose arrivals fall within any interval shorter
//!   than one second, against `R` plus the largest answer, plus [`STAMP_SLACK`] of budget for
//!   the stamps (two answers at 200,000 B/s).

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};

use super::{sh, Lab, AUTHORIZATION};
use crate::io::sys;
use crate::testing::sliding_max;
use crate::wire::{Code, Message};

/// Marks the role's result line on its stdout.
pub const RESULT: &str = "FAIRNESS-RESULT ";
/// The OBT's address on the OBT side's veth.
pub const OBT_SOURCE: &str = "fe80::b7:1";
const GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x158);
const PORT: u16 = 5683;
/// Socket buffers of the receiving sockets (capped by net.core.rmem_max).
const BUFFER_BYTES: usize = 4 << 20;
/// The sliding second's allowance for kernel receive stamps: the kernel stamps each datagram
/// as the gate's `sendmmsg` delivers it over the veth, so the datagrams of one batch, paced as
/// one decision, are stamped up to the call's duration apart (4-8 µs a datagram here, the
/// report's send floor: 0.1-0.5 ms for 32-64 answers, more when the call is interrupted); 2 ms
/// of budget (400 B at 200,000 B/s, two answers) covers that with room.
pub const STAMP_SLACK: Duration = Duration::from_millis(2);
/// The allowance when some arrivals carry the receiver's clock (the kernel gave no stamp): it
/// reads them when its thread runs, up to a scheduler quantum late on a loaded machine.
pub const CLOCK_SLACK: Duration = Duration::from_millis(10);
/// The token of source `i`'s discovery (the OBT is source `attackers`).
const TOKEN_BASE: u64 = 0xfa12_0000_0000_0000;

/// The scenario's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Eligible devices (each discovery draws this many answers).
    pub eligible: usize,
    /// `--answer-rate-bytes`.
    pub budget: u64,
    /// Source addresses that each send one discovery before the OBT.
    pub attackers: usize,
    /// Over how long the attackers' discoveries are spread.
    pub attack_secs: f64,
    /// When the OBT sends its discovery, after the first attacker's.
    pub obt_after: f64,
    /// How long after the OBT's request the answers are observed.
    pub observe: f64,
}

impl Scenario {
    /// The issue's case: 999 eligible devices, 200,000 B/s, 200 sources within a second, then
    /// the OBT, observed for 15 s.
    pub const ISSUE: Scenario = Scenario {
        eligible: 999,
        budget: 200_000,
        attackers: 200,
        attack_secs: 1.0,
        obt_after: 1.2,
        observe: 15.0,
    };

    /// The gate's flags (port mode; the defaults but the budget and the port count); with
    /// `fleet` the file [`Scenario::write_fleet`] wrote and the control address.
    pub fn gate_args(&self, fleet: &str, control: &str) -> Vec<String> {
        let port_count = self.eligible.max(1024).to_string();
        [
            "run",
            "--fleet",
            fleet,
            "--port-count",
            &port_count,
            "--answer-rate-bytes",
            &self.budget.to_string(),
            "--control",
            control,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Writes a fleet of `eligible` devices in RFOTM into the lab's directory; returns its path.
    pub fn write_fleet(&self, lab: &Lab) -> String {
        let mut text = String::new();
        for i in 0..self.eligible {
            text += &format!(
                "[[device]]\nuuid = \"fa1e0000-0000-4000-8000-{i:012x}\"\nname = \"fair {i}\"\ndos = 1\n\n"
            );
        }
        let path = lab.dir.join("fairness-fleet.toml");
        std::fs::write(&path, text).expect("fleet file");
        path.display().to_string()
    }

    /// The environment [`role`] reads.
    fn env(&self, lab: &Lab, control: &str) -> Vec<(&'static str, String)> {
        vec![
            ("FAIRNESS_IFACE", lab.obt_if.clone()),
            ("FAIRNESS_ATTACKERS", self.attackers.to_string()),
            ("FAIRNESS_ATTACK_SECS", self.attack_secs.to_string()),
            ("FAIRNESS_OBT_AFTER", self.obt_after.to_string()),
            ("FAIRNESS_OBSERVE", self.observe.to_string()),
            ("FAIRNESS_CONTROL", control.to_owned()),
        ]
    }
}

/// Attacker `i`'s address (`fe80::a:{i + 1}`, in hex).
pub fn attacker_source(i: usize) -> String {
    format!("fe80::a:{:x}", i + 1)
}

/// Adds the attackers' and the OBT's addresses to the OBT side's veth (one `ip -batch`).
pub fn add_sources(lab: &Lab, attackers: usize) {
    let mut batch = String::new();
    for ip in (0..attackers).map(attacker_source).chain([OBT_SOURCE.to_owned()]) {
        batch += &format!("addr add {ip}/64 dev {} nodad\n", lab.obt_if);
    }
    let path = lab.dir.join("fairness-addresses.batch");
    std::fs::write(&path, batch).expect("address batch");
    sh(&["ip", "-n", &lab.obt_ns, "-6", "-batch", &path.display().to_string()]);
}

/// Runs the scenario against a gate already serving it: `role` is the command that runs
/// [`role`] in the OBT namespace (a re-executed test or bench binary, selected by the caller's
/// own variable); `control` is the gate's API address (`""`: no `/v1/stats` samples).
pub fn run(lab: &Lab, mut role: Command, scenario: &Scenario, control: &str) -> Outcome {
    for (k, v) in scenario.env(lab, control) {
        role.env(k, v);
    }
    let out = role.output().expect("run the fairness role");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the fairness role failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(RESULT).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no {RESULT:?} line from the role:\n{stdout}"));
    let v: Value = serde_json::from_str(line).expect("the role's JSON");
    Outcome::from_json(*scenario, &v)
}

/// What the role recorded: times in microseconds from the first attacker's request.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub scenario: Option<Scenario>,
    /// `(sent at, source)`, one per source; the OBT is source `attackers`.
    pub requests: Vec<(u64, usize)>,
    /// `(arrival, bytes, source)`, sorted by arrival.
    pub answers: Vec<(u64, u64, usize)>,
    /// `(read at, answers.pending, answers.sent, answers.shed)` from `/v1/stats`.
    pub stats: Vec<(u64, u64, u64, u64)>,
    /// Answers stamped by the kernel, and by the receiver's clock (the kernel gave none).
    pub kernel_stamps: u64,
    pub user_stamps: u64,
    /// Datagrams that were not a 2.05 with the receiving source's token.
    pub foreign: u64,
    /// When the observation ended.
    pub end_us: u64,
}

impl Outcome {
    fn from_json(scenario: Scenario, v: &Value) -> Outcome {
        let rows = |key: &str| -> Vec<Vec<u64>> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut answers: Vec<(u64, u64, usize)> =
            rows("answers").iter().map(|r| (r[0], r[1], r[2] as usize)).collect();
        answers.sort_unstable();
        Outcome {
            scenario: Some(scenario),
            requests: rows("requests").iter().map(|r| (r[0], r[1] as usize)).collect(),
            answers,
            stats: rows("stats").iter().map(|r| (r[0], r[1], r[2], r[3])).collect(),
            kernel_stamps: v["kernel_stamps"].as_u64().unwrap_or(0),
            user_stamps: v["user_stamps"].as_u64().unwrap_or(0),
            foreign: v["foreign"].as_u64().unwrap_or(0),
            end_us: v["end_us"].as_u64().unwrap_or(0),
        }
    }

    /// The figures of the [module docs](self).
    pub fn figures(&self) -> Figures {
        let s = self.scenario.expect("a scenario");
        let obt = s.attackers;
        let sec = 1_000_000u64;
        let request: BTreeMap<usize, u64> = self.requests.iter().map(|&(t, i)| (i, t)).collect();
        let t_obt = request.get(&obt).copied().unwrap_or(0);
        let obt_end = t_obt + (s.observe * 1e6) as u64;
        let n = self.answers.len() as u64;
        let bytes: u64 = self.answers.iter().map(|a| a.1).sum();
        let mean_size = if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
        let max_size = self.answers.iter().map(|a| a.1).max().unwrap_or(0);
        // Per source: answers, last arrival.
        let mut per: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        for &(t, _, src) in &self.answers {
            let e = per.entry(src).or_default();
            e.0 += 1;
            e.1 = t;
        }
        let obt_times: Vec<u64> = self.answers.iter().filter(|a| a.2 == obt).map(|a| a.0).collect();
        // The OBT is pending until its `eligible`-th answer (or the end).
        let obt_done = obt_times.get(s.eligible.saturating_sub(1)).copied().unwrap_or(u64::MAX);
        let intervals: Vec<(u64, u64)> = per
            .iter()
            .filter(|(&src, _)| src != obt)
            .map(|(src, &(_, last))| (request.get(src).copied().unwrap_or(0), last))
            .chain([(t_obt, obt_done)])
            .collect();
        let pending_in = |lo: u64, hi: u64| -> usize {
            intervals.iter().filter(|&&(a, b)| a < hi && b >= lo).count()
        };
        // The OBT's fair share.
        let slots = s.observe.floor() as u64;
        let pending_per_slot: Vec<usize> =
            (0..slots).map(|k| pending_in(t_obt + k * sec, t_obt + (k + 1) * sec)).collect();
        let raw_share: f64 = if mean_size > 0.0 {
            pending_per_slot.iter().map(|&p| s.budget as f64 / mean_size / p.max(1) as f64).sum()
        } else {
            0.0
        };
        let fair_share = raw_share.min(s.eligible as f64);
        let obt_answers = obt_times.iter().filter(|&&t| t >= t_obt && t < obt_end).count() as u64;
        // Output per second, from t = 0 to the end of the observation.
        let end = self.end_us.max(obt_end);
        let whole = end / sec;
        let mut per_second = vec![0u64; whole as usize];
        for &(t, b, _) in &self.answers {
            if let Some(slot) = per_second.get_mut((t / sec) as usize) {
                *slot += b;
            }
        }
        let gauge_pending = |k: u64| {
            self.stats
                .iter()
                .any(|&(t, p, _, _)| t >= k * sec + sec / 2 && t < (k + 1) * sec && p > 0)
        };
        let pending_seconds: Vec<bool> = (0..whole)
            .map(|k| pending_in(k * sec, (k + 1) * sec) > 0 || gauge_pending(k))
            .collect();
        let stalled: Vec<usize> =
            (0..whole as usize).filter(|&k| pending_seconds[k] && per_second[k] == 0).collect();
        // The longest gap between outputs while something was pending (receiver-side).
        let mut longest_gap = 0u64;
        let mut prev = self.answers.first().map_or(0, |a| a.0);
        for &(t, _, _) in &self.answers {
            if t.saturating_sub(prev) > longest_gap && pending_in(prev, t) > 0 {
                longest_gap = t - prev;
            }
            prev = t;
        }
        let timed: Vec<(u64, u64)> = self.answers.iter().map(|a| (a.0, a.1)).collect();
        Figures {
            scenario: s,
            requests: self.requests.len(),
            attack_span_us: self
                .requests
                .iter()
                .filter(|r| r.1 != obt)
                .map(|r| r.0)
                .max()
                .unwrap_or(0),
            t_obt_us: t_obt,
            answers: n,
            bytes,
            mean_size,
            max_size,
            sources_answered: per.len(),
            obt_first_us: obt_times.iter().find(|&&t| t >= t_obt).map(|&t| t - t_obt),
            obt_answers,
            obt_total: obt_times.len() as u64,
            pending_per_slot,
            fair_share,
            raw_share,
            per_second,
            pending_seconds,
            stalled,
            longest_gap_us: longest_gap,
            sliding_max: sliding_max(&timed, sec),
            kernel_stamps: self.user_stamps == 0,
            foreign: self.foreign,
            max_pending: self.stats.iter().map(|s| s.1).max().unwrap_or(0),
            shed: self
                .stats
                .last()
                .map_or(0, |s| s.3)
                .saturating_sub(self.stats.first().map_or(0, |s| s.3)),
        }
    }
}

/// The scenario's figures (see the [module docs](self) for each definition).
#[derive(Debug, Clone)]
pub struct Figures {
    pub scenario: Scenario,
    pub requests: usize,
    /// The last attacker's request.
    pub attack_span_us: u64,
    pub t_obt_us: u64,
    /// Every answer seen, and their bytes (UDP payload).
    pub answers: u64,
    pub bytes: u64,
    pub mean_size: f64,
    pub max_size: u64,
    pub sources_answered: usize,
    /// The OBT's first answer after its request, if any came.
    pub obt_first_us: Option<u64>,
    /// The OBT's answers within `observe` of its request, and in all.
    pub obt_answers: u64,
    pub obt_total: u64,
    /// Sources pending in each second after the OBT's request (`N_k`).
    pub pending_per_slot: Vec<usize>,
    /// The OBT's fair share of answers over the observation (capped at `eligible`), and the
    /// uncapped sum.
    pub fair_share: f64,
    pub raw_share: f64,
    /// Answer bytes in each second from the first request.
    pub per_second: Vec<u64>,
    /// Whether answers were pending in each of those seconds.
    pub pending_seconds: Vec<bool>,
    /// Pending seconds without output.
    pub stalled: Vec<usize>,
    /// The longest time without output while answers were pending (receiver-side).
    pub longest_gap_us: u64,
    /// The most answer bytes in any sliding second.
    pub sliding_max: u64,
    /// Whether every arrival time was the kernel's (else some are the receiver's clock).
    pub kernel_stamps: bool,
    pub foreign: u64,
    /// The largest `answers.pending` the gate published, and the answers it shed meanwhile.
    pub max_pending: u64,
    pub shed: u64,
}

impl Figures {
    /// The allowance for the arrival times (bytes), see [`STAMP_SLACK`] and
    /// [`CLOCK_SLACK`].
    pub fn stamp_slack(&self) -> u64 {
        let slack = if self.kernel_stamps { STAMP_SLACK } else { CLOCK_SLACK };
        (self.scenario.budget as f64 * slack.as_secs_f64()).ceil() as u64
    }

    /// The bound on any sliding second: the budget plus one answer, plus [`Figures::stamp_slack`].
    pub fn sliding_bound(&self) -> u64 {
        self.scenario.budget + self.max_size + self.stamp_slack()
    }

    /// " + N B (why)" for the bound's allowance.
    fn slack_text(&self) -> String {
        let why = if self.kernel_stamps {
            "2 ms of budget: kernel stamps within one batched send"
        } else {
            "10 ms of budget: receiver's clock"
        };
        format!(" + {} B ({why})", self.stamp_slack())
    }

    /// The issue's assertions, each that fails as one line (empty: all hold): the OBT's first
    /// answer within 2 s of its request; at least half its fair share within `observe`; no
    /// second without output while answers are pending; no sliding second above the budget
    /// plus one answer.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.obt_first_us {
            Some(us) if us <= 2_000_000 => {}
            Some(us) => out.push(format!(
                "the OBT's first answer came {:.3} s after its request (bound 2 s)",
                us as f64 / 1e6
            )),
            None => out.push(format!(
                "the OBT got no answer within {} s of its request (bound for the first: 2 s)",
                self.scenario.observe
            )),
        }
        if (self.obt_answers as f64) < self.fair_share / 2.0 {
            out.push(format!(
                "the OBT got {} answers in the {} s after its request, less than half its fair \
                 share of {:.1} (budget x 1 s / {:.0} B / sources pending, summed over the \
                 seconds; sources pending per second: {:?})",
                self.obt_answers,
                self.scenario.observe,
                self.fair_share,
                self.mean_size,
                self.pending_per_slot
            ));
        }
        if !self.stalled.is_empty() {
            out.push(format!(
                "no output in second(s) {:?} while answers were pending",
                self.stalled
            ));
        }
        if self.sliding_max > self.sliding_bound() {
            out.push(format!(
                "{} B in a sliding second, above the budget {} + one answer {} B{}",
                self.sliding_max,
                self.scenario.budget,
                self.max_size,
                self.slack_text()
            ));
        }
        out
    }

    /// Mean sources pending per second of the observation.
    pub fn mean_pending(&self) -> f64 {
        let n = self.pending_per_slot.len().max(1);
        self.pending_per_slot.iter().sum::<usize>() as f64 / n as f64
    }

    /// Seconds in which answers were pending, and the output in them: min, median, max bytes.
    pub fn pending_output(&self) -> (usize, u64, u64, u64) {
        let mut v: Vec<u64> = self
            .per_second
            .iter()
            .zip(&self.pending_seconds)
            .filter(|(_, &p)| p)
            .map(|(&b, _)| b)
            .collect();
        v.sort_unstable();
        let pick = |i: usize| v.get(i).copied().unwrap_or(0);
        (v.len(), pick(0), pick(v.len() / 2), v.last().copied().unwrap_or(0))
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.scenario;
        writeln!(
            f,
            "fairness: {} eligible, --answer-rate-bytes {}; {} sources sent one discovery each \
             within {:.2} s, the OBT at {:.2} s; observed until {:.1} s",
            s.eligible,
            s.budget,
            s.attackers,
            self.attack_span_us as f64 / 1e6,
            self.t_obt_us as f64 / 1e6,
            self.t_obt_us as f64 / 1e6 + s.observe,
        )?;
        writeln!(
            f,
            "  {} answers ({} B, mean {:.1} B, max {} B) to {} sources; stamps: {}; foreign {}; \
             gate: pending up to {}, shed {}",
            self.answers,
            self.bytes,
            self.mean_size,
            self.max_size,
            self.sources_answered,
            if self.kernel_stamps { "kernel" } else { "some from the receiver's clock" },
            self.foreign,
            self.max_pending,
            self.shed,
        )?;
        writeln!(
            f,
            "  OBT: first answer {}; {} answers in {} s (fair share {:.1}, uncapped {:.1}; \
             sources pending per second {:?}, mean {:.1}); {} answers in all",
            self.obt_first_us
                .map_or("never".to_owned(), |us| format!("after {:.3} s", us as f64 / 1e6)),
            self.obt_answers,
            s.observe,
            self.fair_share,
            self.raw_share,
            self.pending_per_slot,
            self.mean_pending(),
            self.obt_total,
        )?;
        let (n, lo, med, hi) = self.pending_output();
        writeln!(
            f,
            "  output per second (B): {:?}; in the {n} pending seconds min {lo} / median {med} / \
             max {hi}; stalled seconds {:?}; longest gap while pending {:.3} s",
            self.per_second,
            self.stalled,
            self.longest_gap_us as f64 / 1e6,
        )?;
        write!(
            f,
            "  sliding max {} B in any second (bound {} = budget + one answer{})",
            self.sliding_max,
            self.sliding_bound(),
            self.slack_text()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The role (OBT namespace).

fn env_f64(key: &str) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not set"))
}

/// The OBT's discovery (the real one, `owned=FALSE`) with a Message ID and token.
fn discovery(mid: u16, token: u64) -> Vec<u8> {
    let mut d = crate::wire::fixtures::OBT_REQUEST.to_vec();
    d[2..4].copy_from_slice(&mid.to_be_bytes());
    d[4..12].copy_from_slice(&token.to_be_bytes());
    d
}

fn source_socket(ip: Ipv6Addr, index: u32) -> std::net::UdpSocket {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_only_v6(true).expect("v6only");
    s.set_multicast_if_v6(index).expect("multicast interface");
    let _ = s.set_recv_buffer_size(BUFFER_BYTES);
    s.bind(&SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, index)).into())
        .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    sys::enable_timestamps(&s).expect("SO_TIMESTAMPNS");
    s.set_nonblocking(true).expect("nonblocking");
    s.into()
}

fn micros_since(t: SystemTime, start: SystemTime) -> u64 {
    t.duration_since(start).map_or(0, |d| d.as_micros() as u64)
}

/// The OBT side of the scenario, run in the OBT namespace (see the [module docs](self)): prints
/// one [`RESULT`] line of JSON that [`run`] reads. Returns the exit code.
pub fn role() -> i32 {
    let iface = std::env::var("FAIRNESS_IFACE").expect("FAIRNESS_IFACE");
    let attackers = env_f64("FAIRNESS_ATTACKERS") as usize;
    let attack_secs = env_f64("FAIRNESS_ATTACK_SECS");
    let obt_after = env_f64("FAIRNESS_OBT_AFTER");
    let observe = env_f64("FAIRNESS_OBSERVE");
    let control = std::env::var("FAIRNESS_CONTROL").unwrap_or_default();
    let index: u32 = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .expect("interface index")
        .trim()
        .parse()
        .expect("an index");
    let addresses: Vec<Ipv6Addr> = (0..attackers)
        .map(attacker_source)
        .chain([OBT_SOURCE.to_owned()])
        .map(|a| a.parse().expect("an address"))
        .collect();
    let sockets: Vec<std::net::UdpSocket> =
        addresses.iter().map(|&ip| source_socket(ip, index)).collect();
    let tokens: Vec<u64> = (0..sockets.len()).map(|i| TOKEN_BASE | i as u64).collect();
    let group = SocketAddr::V6(SocketAddrV6::new(GROUP, PORT, 0, index));

    let start = SystemTime::now();
    let clock = Instant::now();
    let t_obt = Duration::from_secs_f64(obt_after);
    let end = t_obt + Duration::from_secs_f64(observe) + Duration::from_millis(200);
    let stop = Arc::new(AtomicBool::new(false));

    // The receiver: every socket in one mio poll; arrival times from the kernel.
    let receiver = {
        let stop = stop.clone();
        let mut socks: Vec<mio::net::UdpSocket> = sockets
            .iter()
            .map(|s| mio::net::UdpSocket::from_std(s.try_clone().expect("clone")))
            .collect();
        let tokens = tokens.clone();
        std::thread::spawn(move || {
            let mut poll = mio::Poll::new().expect("poll");
            for (i, s) in socks.iter_mut().enumerate() {
                poll.registry()
                    .register(s, mio::Token(i), mio::Interest::READABLE)
                    .expect("register");
            }
            let mut events = mio::Events::with_capacity(256);
            let mut buf = [0u8; 2048];
            let (mut answers, mut kernel, mut user, mut foreign) = (Vec::new(), 0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let _ = poll.poll(&mut events, Some(Duration::from_millis(20)));
                for event in &events {
                    let i = event.token().0;
                    loop {
                        match sys::recv_timestamped(&socks[i], &mut buf) {
                            Ok((len, _, stamp)) => {
                                let t = match stamp {
                                    Some(t) => {
                                        kernel += 1;
                                        t
                                    }
                                    None => {
                                        user += 1;
                                        SystemTime::now()
                                    }
                                };
                                let ours = Message::parse(&buf[..len]).is_ok_and(|m| {
                                    m.code() == Code::CONTENT
                                        && m.token() == tokens[i].to_be_bytes()
                                });
                                if ours {
                                    answers.push(json!([micros_since(t, start), len, i]));
                                } else {
                                    foreign += 1;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                }
            }
            (answers, kernel, user, foreign)
        })
    };

    // The gate's pending gauge, every 250 ms.
    let sampler = (!control.is_empty()).then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_millis(500)).build();
            let url = format!("http://{control}/v1/stats");
            let mut rows = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let at = micros_since(SystemTime::now(), start);
                if let Ok(r) = agent.get(&url).set("Authorization", AUTHORIZATION).call() {
                    let text = r.into_string().unwrap_or_default();
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        let a = &v["answers"];
                        let n = |k: &str| a[k].as_u64().unwrap_or(0);
                        rows.push(json!([at, n("pending"), n("sent"), n("shed")]));
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            rows
        })
    });

    // The discoveries: attacker i at i x attack_secs / attackers, the OBT at obt_after.
    let mut requests = Vec::new();
    let spacing = Duration::from_secs_f64(attack_secs / attackers.max(1) as f64);
    let plan = (0..attackers).map(|i| (spacing * i as u32, i)).chain([(t_obt, attackers)]);
    for (due, i) in plan {
        if let Some(wait) = (clock + due).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let datagram = discovery(0x4000 + i as u16, tokens[i]);
        let at = micros_since(SystemTime::now(), start);
        sockets[i].send_to(&datagram, group).expect("send a discovery");
        requests.push(json!([at, i]));
    }
    if let Some(wait) = (clock + end).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let end_us = micros_since(SystemTime::now(), start);
    stop.store(true, Ordering::Relaxed);
    let (answers, kernel, user, foreign) = receiver.join().expect("receiver");
    let stats = sampler.map(|s| s.join().expect("sampler")).unwrap_or_default();
    let result = json!({
        "requests": requests,
        "answers": answers,
        "stats": stats,
        "kernel_stamps": kernel,
        "user_stamps": user,
        "foreign": foreign,
        "end_us": end_us,
    });
    println!("{RESULT}{result}");
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(answers: Vec<(u64, u64, usize)>, end_us: u64) -> Outcome {
        let s = Scenario {
            attackers: 2,
            eligible: 10,
            observe: 3.0,
            obt_after: 0.5,
            ..Scenario::ISSUE
        };
        Outcome {
            scenario: Some(s),
            requests: vec![(0, 0), (100_000, 1), (500_000, 2)],
            answers,
            end_us,
            ..Outcome::default()
        }
    }

    /// The checks can hold: an ideal fair scheduler (round robin over the sources with answers
    /// pending, one 199 B answer every 995 µs, exactly 200,000 B/s) passes all four on the
    /// issue's scenario.
    #[test]
    fn test_ideal_fair_scheduler_passes() {
        let s = Scenario::ISSUE;
        let requests: Vec<(u64, usize)> = (0..s.attackers)
            .map(|i| (i as u64 * 5_000, i))
            .chain([(1_200_000, s.attackers)])
            .collect();
        let end_us = 16_400_000;
        let (mut answers, mut next) = (Vec::new(), 0usize);
        let mut t = 0;
        while t < end_us {
            let arrived: Vec<usize> = requests.iter().filter(|r| r.0 <= t).map(|r| r.1).collect();
            if !arrived.is_empty() {
                answers.push((t, 199, arrived[next % arrived.len()]));
                next += 1;
            }
            t += 995;
        }
        let outcome =
            Outcome { scenario: Some(s), requests, answers, end_us, ..Outcome::default() };
        let f = outcome.figures();
        assert_eq!(f.failures(), Vec::<String>::new(), "{f}");
        assert!(f.obt_first_us.unwrap() < 300_000, "{f}");
        assert_eq!(f.pending_per_slot, vec![201; 15]);
        assert!((f.fair_share - 75.0).abs() < 0.1, "{f}");
        assert!(f.obt_answers >= 70, "{f}");
    }

    #[test]
    fn test_sliding_max() {
        let e = [(0, 100), (500_000, 100), (999_999, 100), (1_000_000, 100), (2_500_000, 50)];
        assert_eq!(sliding_max(&e, 1_000_000), 300);
        assert_eq!(sliding_max(&[], 1_000_000), 0);
    }

    #[test]
    fn test_share_and_stalls() {
        // Source 0 answered at 0.2 s and 3.2 s (pending all along), source 1 never, the OBT
        // (source 2) at 0.6 s only: in second 1 and 2 (from 0) nothing arrives.
        let f = outcome(vec![(200_000, 200, 0), (600_000, 200, 2), (3_200_000, 200, 0)], 3_700_000)
            .figures();
        assert_eq!(f.obt_first_us, Some(100_000));
        assert_eq!(f.pending_per_slot, vec![2, 2, 2]);
        // 3 s x 200,000 B/s / 200 B / 2, capped at 10 eligible.
        assert_eq!(f.raw_share, 1_500.0);
        assert_eq!(f.fair_share, 10.0);
        assert_eq!(f.per_second, vec![400, 0, 0]);
        assert_eq!(f.stalled, vec![1, 2]);
        assert_eq!(f.longest_gap_us, 2_600_000);
        let failures = f.failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
    }
}
