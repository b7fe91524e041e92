//! The send-time pacer: the hard bound on the answer bytes that actually leave per second,
//! multicast answers and unicast replies together (SPEC 7).
//!
//! [`super::AnswerBudget`] spreads each request's answers over a window sized for the rate
//! budget, but windows of overlapping requests can still line up and briefly exceed it. The
//! pacer is a GCRA (ITU-T I.371) over the bytes sent: `paid_until` is the instant by which every
//! answer byte sent so far is paid for at the configured rate; an answer may leave while that
//! instant is at most [`BURST`] ahead of now, and its bytes then push it further.
//!
//! Pure like the rest of the engine: time is passed in.

use std::time::{Duration, Instant};

/// How far ahead of the rate the pacer lets answers go (a burst of rate x this).
pub const BURST: Duration = Duration::from_millis(50);

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct SendPacer {
    rate_bytes: u64,
    /// `None` until the first answer leaves.
    paid_until: Option<Instant>,
}

impl SendPacer {
    /// A pacer for `rate_bytes` bytes per second (positive: the engine's configuration is
    /// checked before it gets here).
    pub fn new(rate_bytes: u64) -> SendPacer {
        assert!(rate_bytes > 0, "the answer rate must be positive");
        SendPacer { rate_bytes, paid_until: None }
    }

    /// The instant from which the pacer lets the next answer go, or `None` when it holds
    /// nothing back at all (no answer has left yet).
    pub fn ready_at(&self) -> Option<Instant> {
        self.paid_until.and_then(|until| until.checked_sub(BURST))
    }

    /// Whether the pacer holds answers back at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.ready_at().is_some_and(|ready| ready > now)
    }

    /// Accounts for an answer of `bytes` bytes that leaves at `now`.
    pub fn charge(&mut self, now: Instant, bytes: usize) {
        let cost = super::time_at(bytes as u128, self.rate_bytes);
        self.paid_until = Some(self.paid_until.map_or(now, |p| p.max(now)) + cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_idle_pacer_holds_nothing() {
        let pacer = SendPacer::new(1_000);
        assert_eq!(pacer.ready_at(), None);
        assert!(!pacer.holds(Instant::now()));
    }

    #[test]
    fn test_burst_then_paced_at_the_rate() {
        let t0 = Instant::now();
        let mut pacer = SendPacer::new(1_000);
        // 50 ms of burst at 1,000 B/s is 50 bytes: five 10-byte answers leave at once.
        let mut sent = 0;
        while !pacer.holds(t0) {
            pacer.charge(t0, 10);
            sent += 1;
        }
        assert_eq!(sent, 6, "the answer that crosses the burst still leaves");
        // Each further 10 bytes is paid for 10 ms later.
        let ready = pacer.ready_at().unwrap();
        assert_eq!(ready - t0, Duration::from_millis(10));
        pacer.charge(ready, 10);
        assert_eq!(pacer.ready_at().unwrap() - ready, Duration::from_millis(10));
    }

    #[test]
    fn test_idle_time_is_not_banked() {
        let t0 = Instant::now();
        let mut pacer = SendPacer::new(1_000);
        pacer.charge(t0, 10);
        // After a long pause the debt starts from now, not from the old instant.
        let later = t0 + Duration::from_secs(100);
        pacer.charge(later, 100);
        assert_eq!(pacer.ready_at().unwrap(), later + Duration::from_millis(50));
    }
}
