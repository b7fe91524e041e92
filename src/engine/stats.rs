//! Counters of everything the engine does, one per closed-enum label.
//!
//! Every datagram ends in exactly one [`Verdict`]; its label is counted once, so the sum of the
//! verdict counters is the number of datagrams handled. Answer-level events (scheduled, sent,
//! cancelled, shed, expired) are counted separately, because one request yields many answers;
//! [`Stats::answer_fates`] lists the fates of answers, one label each.

use super::source_address::SourceReject;
use crate::policy::Reason;
use crate::wire::coap;

/// Why the engine itself dropped a datagram (beyond the wire format and the policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineDrop {
    /// A copy of an exchange already handled (SPEC 1.1, duplicates).
    Duplicate,
    /// The source passed its rate of answer-producing requests.
    RateLimited,
    /// No device is eligible (or none that `di` and `deviceuuid` name is).
    NoEligible,
    /// The endpoint plan gives devices no endpoint in the request's IP family.
    NoEndpointForFamily,
    /// A unicast datagram to an endpoint with no device behind it.
    UnknownEndpoint,
    /// The queue of unicast responses is full.
    QueueFull,
    /// A unicast reply the answer byte budget has no room for now (SPEC 7: unicast replies
    /// count against the same budget as answers): not sent, and a CON client retransmits.
    OverBudget,
}

impl EngineDrop {
    /// Every variant.
    pub const ALL: [EngineDrop; 7] = [
        EngineDrop::Duplicate,
        EngineDrop::RateLimited,
        EngineDrop::NoEligible,
        EngineDrop::NoEndpointForFamily,
        EngineDrop::UnknownEndpoint,
        EngineDrop::QueueFull,
        EngineDrop::OverBudget,
    ];

    /// The stable label.
    pub const fn as_str(self) -> &'static str {
        match self {
            EngineDrop::Duplicate => "duplicate",
            EngineDrop::RateLimited => "rate-limited",
            EngineDrop::NoEligible => "no-eligible",
            EngineDrop::NoEndpointForFamily => "no-endpoint-for-family",
            EngineDrop::UnknownEndpoint => "unknown-endpoint",
            EngineDrop::QueueFull => "queue-full",
            EngineDrop::OverBudget => "over-budget",
        }
    }
}

/// What became of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A multicast discovery: this many answers were scheduled.
    Answering(usize),
    /// A unicast request: a response (or empty ACK) was queued.
    Responding,
    /// Not a well-formed CoAP message.
    Malformed(coap::Error),
    /// Dropped by the rule.
    Policy(Reason),
    /// Dropped by the source checks.
    Source(SourceReject),
    /// Dropped by the engine.
    Engine(EngineDrop),
}

impl Verdict {
    /// `(group, label)` for metrics: e.g. `("malformed", "reserved-tkl")`.
    pub fn label(&self) -> (&'static str, &'static str) {
        match self {
            Verdict::Answering(_) => ("accepted", "answering"),
            Verdict::Responding => ("accepted", "responding"),
            Verdict::Malformed(e) => ("malformed", e.as_str()),
            Verdict::Policy(r) => ("policy", r.as_str()),
            Verdict::Source(r) => ("source", r.as_str()),
            Verdict::Engine(d) => ("engine", d.as_str()),
        }
    }
}

/// The engine's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Multicast requests that scheduled answers.
    pub answering: u64,
    /// Unicast requests that got a response.
    pub responding: u64,
    /// By [`coap::Error`], in [`coap::Error::ALL`] order.
    pub malformed: [u64; coap::Error::ALL.len()],
    /// By [`Reason`], in [`Reason::ALL`] order (`Ok` stays 0).
    pub policy: [u64; Reason::ALL.len()],
    /// By [`SourceReject`], in [`SourceReject::ALL`] order.
    pub source: [u64; SourceReject::ALL.len()],
    /// By [`EngineDrop`], in [`EngineDrop::ALL`] order.
    pub engine: [u64; EngineDrop::ALL.len()],
    /// Multicast answers scheduled.
    pub answers_scheduled: u64,
    /// Multicast answers handed to the driver.
    pub answers_sent: u64,
    /// Scheduled answers not sent because the device stopped being eligible.
    pub answers_cancelled: u64,
    /// Answers dropped to respect the pending bound or the byte budget.
    pub answers_shed: u64,
    /// Scheduled answers dropped because their window ended before they could leave (the send
    /// pacer held them, or the driver came late): SPEC 4 sends no answer after its window.
    pub answers_expired: u64,
    /// Requests whose leisure window was stretched to fit the byte budget.
    pub budget_stretches: u64,
    /// Requests cut short because their source already held its share of the byte budget
    /// (`Config::source_window`); their shed answers are in `answers_shed` too.
    pub source_share_cuts: u64,
    /// Unicast responses handed to the driver.
    pub responses_sent: u64,
}

impl Stats {
    /// Counts one datagram's verdict.
    pub fn count(&mut self, verdict: Verdict) {
        self.datagrams += 1;
        match verdict {
            Verdict::Answering(_) => self.answering += 1,
            Verdict::Responding => self.responding += 1,
            Verdict::Malformed(e) => self.malformed[index_of(&coap::Error::ALL, &e)] += 1,
            Verdict::Policy(r) => self.policy[index_of(&Reason::ALL, &r)] += 1,
            Verdict::Source(r) => self.source[index_of(&SourceReject::ALL, &r)] += 1,
            Verdict::Engine(d) => self.engine[index_of(&EngineDrop::ALL, &d)] += 1,
        }
    }

    /// Every verdict counter as `(group, label, count)`, zeros included.
    pub fn verdicts(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        let accepted = [
            ("accepted", "answering", self.answering),
            ("accepted", "responding", self.responding),
        ];
        let malformed =
            coap::Error::ALL.iter().zip(self.malformed).map(|(e, n)| ("malformed", e.as_str(), n));
        let policy = Reason::ALL.iter().zip(self.policy).map(|(r, n)| ("policy", r.as_str(), n));
        let source =
            SourceReject::ALL.iter().zip(self.source).map(|(r, n)| ("source", r.as_str(), n));
        let engine =
            EngineDrop::ALL.iter().zip(self.engine).map(|(d, n)| ("engine", d.as_str(), n));
        accepted.into_iter().chain(malformed).chain(policy).chain(source).chain(engine)
    }

    /// What became of multicast answers, as `(fate, count)`: one label per counter, for
    /// metrics. `sent`, `cancelled`, `shed` and `expired` are disjoint (the budget sheds some
    /// answers before they are scheduled).
    pub fn answer_fates(&self) -> [(&'static str, u64); 5] {
        [
            ("scheduled", self.answers_scheduled),
            ("sent", self.answers_sent),
            ("cancelled", self.answers_cancelled),
            ("shed", self.answers_shed),
            ("expired", self.answers_expired),
        ]
    }

    /// The count of one verdict label.
    pub fn get(&self, verdict: Verdict) -> u64 {
        let (group, label) = verdict.label();
        self.verdicts().find(|&(g, l, _)| g == group && l == label).map_or(0, |(_, _, n)| n)
    }
}

fn index_of<T: PartialEq>(all: &[T], item: &T) -> usize {
    all.iter().position(|x| x == item).unwrap_or(0)
}
