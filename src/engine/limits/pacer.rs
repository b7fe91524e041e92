//! The send-time pacer: the hard bound on the answer bytes that actually leave per second,
//! multicast answers and unicast replies together (SPEC 7).
//!
//! [`super::AnswerBudget`] sizes each request's window for its fair share of the rate, but the
//! windows of many requests can still line up, and unicast replies leave at once. The pacer is
//! what the bytes on the wire obey, with two rules, both O(1) and allocation-free:
//!
//! 1. **Smooth**: a GCRA (ITU-T I.371) over the bytes sent. `paid_until` is the instant by
//!    which every byte sent so far is paid for at the configured rate; the next datagram may
//!    leave while that instant is at most [`BURST`] ahead of now. [`BURST`] is one timer grain
//!    (SPEC 4: 10 ms), so a driver that wakes once per grain sends one grain's worth per
//!    wake-up, and steady output is exactly the rate.
//! 2. **Strict over any second**: the bytes sent in every sliding one-second interval stay
//!    within the rate plus one datagram (the one that crosses it). The GCRA alone allows one
//!    burst more (`rate x BURST` on top of a second's worth after an idle spell); a ring of
//!    per-grain byte counts over the last [`SLOTS`] grains takes that away: a datagram may leave
//!    only while the ring's sum is below the rate.
//!
//! Why the ring gives the bound: the ring covers the grain of `now` and the 100 before it, which
//! contain every send of the last second. A send happens only while their sum is below the
//! rate, so the bytes of any one-second interval, counted at its last send, are below the rate
//! plus that last datagram. The cost is that steady output runs at 100/101 of the rate at
//! worst, which is the price of a bound that holds for every interval, not just on average.
//!
//! Pure like the rest of the engine: time is passed in.

use std::time::{Duration, Instant};

/// How far ahead of the rate the pacer lets datagrams go: one timer grain (SPEC 4), so that
/// one wake-up per grain keeps the full rate.
pub const BURST: Duration = GRAIN;

/// The timer grain (SPEC 4: at most 10 ms): the pacer's ring counts bytes per grain.
pub const GRAIN: Duration = crate::engine::TIMER_GRAIN;

/// Grains in the ring: the grain of `now` plus the 100 before it cover any one-second interval
/// that ends now.
pub const SLOTS: usize = 101;

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct SendPacer {
    rate_bytes: u64,
    /// `None` until the first datagram leaves.
    paid_until: Option<Instant>,
    /// The per-grain byte counts of the last [`SLOTS`] grains, indexed by grain number modulo
    /// [`SLOTS`], and their sum.
    ring: [u64; SLOTS],
    ring_sum: u64,
    /// The grain number of the newest slot in the ring (grains counted from `epoch`).
    newest: u64,
    /// Grain 0 starts here: the instant of the first datagram.
    epoch: Option<Instant>,
}

impl SendPacer {
    /// A pacer for `rate_bytes` bytes per second (positive: the engine's configuration is
    /// checked before it gets here).
    pub fn new(rate_bytes: u64) -> SendPacer {
        assert!(rate_bytes > 0, "the answer rate must be positive");
        SendPacer {
            rate_bytes,
            paid_until: None,
            ring: [0; SLOTS],
            ring_sum: 0,
            newest: 0,
            epoch: None,
        }
    }

    /// Changes the rate (positive) for what leaves from now on: the bytes already sent stay
    /// paid for at the rate they were charged at.
    pub fn set_rate(&mut self, rate_bytes: u64) {
        self.rate_bytes = rate_bytes.max(1);
    }

    /// The instant from which the pacer lets the next datagram go, or `None` when it holds
    /// nothing back at all (nothing has left yet). May be in the past.
    pub fn ready_at(&self) -> Option<Instant> {
        let smooth = self.paid_until.and_then(|until| until.checked_sub(BURST))?;
        if self.ring_sum < self.rate_bytes {
            return Some(smooth);
        }
        // The strict bound holds it: wait until enough of the oldest grains have left the ring
        // for the sum to fall below the rate (grain g leaves at the start of grain g + SLOTS).
        let epoch = self.epoch?;
        let oldest = self.newest.saturating_sub(SLOTS as u64 - 1);
        let mut sum = self.ring_sum;
        let mut last = self.newest;
        for g in oldest..=self.newest {
            sum -= self.ring[slot(g)];
            if sum < self.rate_bytes {
                last = g;
                break;
            }
        }
        Some(smooth.max(epoch + grains(last + SLOTS as u64)))
    }

    /// Whether the pacer holds datagrams back at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        if self.paid_until.and_then(|until| until.checked_sub(BURST)).is_some_and(|r| r > now) {
            return true;
        }
        self.sum_at(now) >= self.rate_bytes
    }

    /// Accounts for a datagram of `bytes` bytes that leaves at `now`; returns its time at the
    /// rate.
    pub fn charge(&mut self, now: Instant, bytes: usize) -> Duration {
        let cost = super::time_at(bytes as u128, self.rate_bytes);
        self.paid_until = Some(self.paid_until.map_or(now, |p| p.max(now)) + cost);
        let grain = self.advance(now);
        self.ring[slot(grain)] += bytes as u64;
        self.ring_sum += bytes as u64;
        cost
    }

    /// The ring's sum as it will be at `now` (grains older than the ring dropped), without
    /// changing it.
    fn sum_at(&self, now: Instant) -> u64 {
        let Some(epoch) = self.epoch else { return 0 };
        let grain = grain_of(epoch, now);
        if grain <= self.newest {
            return self.ring_sum;
        }
        let dropped_from = self.newest.saturating_sub(SLOTS as u64 - 1);
        let dropped_to = grain.saturating_sub(SLOTS as u64 - 1).min(self.newest + 1);
        let dropped: u64 = (dropped_from..dropped_to).map(|g| self.ring[slot(g)]).sum();
        self.ring_sum - dropped
    }

    /// Moves the ring forward to `now`'s grain, dropping grains older than a second; returns
    /// that grain.
    fn advance(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        let grain = grain_of(epoch, now);
        if grain > self.newest {
            // At most SLOTS slots to clear, however long the pacer was idle.
            let from = (self.newest + 1).max(grain.saturating_sub(SLOTS as u64 - 1));
            for g in from..=grain {
                self.ring_sum -= self.ring[slot(g)];
                self.ring[slot(g)] = 0;
            }
            self.newest = grain;
        }
        self.newest
    }
}

fn slot(grain: u64) -> usize {
    (grain % SLOTS as u64) as usize
}

fn grain_of(epoch: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(epoch).as_nanos() / GRAIN.as_nanos()) as u64
}

fn grains(n: u64) -> Duration {
    GRAIN * u32::try_from(n).unwrap_or(u32::MAX)
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
    fn test_burst_of_one_grain_then_paced_at_the_rate() {
        let t0 = Instant::now();
        let mut pacer = SendPacer::new(1_000);
        // 10 ms of burst at 1,000 B/s is 10 bytes: one 10-byte datagram, and the one that
        // crosses the burst.
        let mut sent = 0;
        while !pacer.holds(t0) {
            let _ = pacer.charge(t0, 10);
            sent += 1;
        }
        assert_eq!(sent, 2, "the datagram that crosses the burst still leaves");
        // Each further 10 bytes is paid for 10 ms later.
        let ready = pacer.ready_at().unwrap();
        assert_eq!(ready - t0, Duration::from_millis(10));
        let _ = pacer.charge(ready, 10);
        assert_eq!(pacer.ready_at().unwrap() - ready, Duration::from_millis(10));
    }

    #[test]
    fn test_idle_time_is_not_banked() {
        let t0 = Instant::now();
        let mut pacer = SendPacer::new(100_000);
        let _ = pacer.charge(t0, 10);
        // After a long pause the debt starts from now, not from the old instant.
        let later = t0 + Duration::from_secs(100);
        let _ = pacer.charge(later, 10_000);
        assert_eq!(pacer.ready_at().unwrap(), later + Duration::from_millis(90));
    }

    /// The strict rule: whatever the sender does (here: greedy, at random instants), no
    /// sliding second holds more than the rate plus one datagram.
    #[test]
    fn test_no_sliding_second_above_rate_plus_one_datagram() {
        let t0 = Instant::now();
        let rate = 20_000;
        let mut pacer = SendPacer::new(rate);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut sent: Vec<(Duration, u64)> = Vec::new();
        let mut at = Duration::ZERO;
        while at < Duration::from_secs(20) {
            // Wake-ups 0-15 ms apart (late ones too), idle spells now and then.
            at += Duration::from_micros(rng.u64(0..15_000));
            if rng.u8(..) == 0 {
                at += Duration::from_millis(rng.u64(0..500));
            }
            while !pacer.holds(t0 + at) {
                let bytes = rng.u64(50..400);
                let _ = pacer.charge(t0 + at, bytes as usize);
                sent.push((at, bytes));
            }
        }
        let total: u64 = sent.iter().map(|s| s.1).sum();
        assert!(total > rate * 12, "the pacer kept most of the rate: {total} B in 20 s");
        let mut window = 0u64;
        let mut from = 0;
        for to in 0..sent.len() {
            window += sent[to].1;
            while sent[to].0 - sent[from].0 >= Duration::from_secs(1) {
                window -= sent[from].1;
                from += 1;
            }
            assert!(
                window < rate + 400,
                "{window} B within one second ending at {:?}: over {rate} B + one datagram",
                sent[to].0
            );
        }
    }

    /// Held by the ring, the pacer says when it frees, and it does free then; also when the
    /// ring was last moved long ago (the instant it names is never one that still holds).
    #[test]
    fn test_ready_at_after_an_idle_spell_is_not_held() {
        let t0 = Instant::now();
        let mut pacer = SendPacer::new(1_000);
        // 40 B every 4 grains: the GCRA keeps up, the ring fills to the rate by grain 96.
        for g in 0..25u32 {
            let _ = pacer.charge(t0 + GRAIN * g * 4, 40);
        }
        // Grain 0 (40 B) leaving brings the ring below the rate, at grain 101.
        let ready = pacer.ready_at().unwrap();
        assert_eq!(ready, t0 + GRAIN * 101);
        assert!(pacer.holds(ready - Duration::from_nanos(1)));
        assert!(!pacer.holds(ready));
        // 10 B in each of grains 0..=100 (1,010 B): grain 0 leaving is not enough, grain 1
        // must leave too, at grain 102 (fuzzing found the engine asked to wake at 101).
        let mut pacer = SendPacer::new(1_000);
        for g in 0..=100u32 {
            let _ = pacer.charge(t0 + GRAIN * g, 10);
        }
        let ready = pacer.ready_at().unwrap();
        assert_eq!(ready, t0 + GRAIN * 102);
        assert!(pacer.holds(ready - Duration::from_nanos(1)) && !pacer.holds(ready));
        // Much later, the instant named is in the past and nothing holds.
        let later = t0 + Duration::from_secs(5);
        assert!(pacer.ready_at().unwrap() <= later && !pacer.holds(later));
    }

    /// Held by the ring, the pacer says when it frees, and it does free then.
    #[test]
    fn test_ready_at_frees_the_ring() {
        let t0 = Instant::now();
        let mut pacer = SendPacer::new(1_000);
        // 20 grains of 50 bytes: the ring reaches the rate, the GCRA alone would not hold.
        for g in 0..20u32 {
            let now = t0 + GRAIN * g * 5;
            assert!(!pacer.holds(now), "grain {g}");
            let _ = pacer.charge(now, 50);
        }
        let now = t0 + GRAIN * 99;
        assert!(pacer.holds(now));
        let ready = pacer.ready_at().unwrap();
        assert_eq!(ready, t0 + GRAIN * 101, "grain 0 leaves the ring");
        assert!(pacer.holds(ready - Duration::from_nanos(1)));
        assert!(!pacer.holds(ready));
    }
}
