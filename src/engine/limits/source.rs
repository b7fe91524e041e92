//! The per-source limit on answer-producing requests (SPEC section 7): a bounded table of
//! token buckets keyed by source address, which also records how much of the answer budget each
//! source's admitted answers still hold.

use std::hash::{DefaultHasher, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::super::hash_index::{self, Index};

/// A per-source token bucket for answer-producing requests (SPEC section 7), so that one
/// sender cannot make the fleet answer faster than `rate_per_sec` requests per second after an
/// initial `burst`.
///
/// # Key
///
/// Sources are keyed by IP address, without the port (a client picks a fresh port at will).
/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry. IPv6 sources are keyed by
/// the full 128-bit address. Aggregating IPv6 sources by /64 was considered and **not**
/// implemented: the sources that `ff02::158` accepts are link-local, and every link-local
/// address is in `fe80::/64`, so /64 keys would put every OBT on a link into one bucket. A
/// sender with a routed /64 can rotate addresses and so behaves like a spoofer; per-source
/// limits do not bound spoofers (each fresh address brings a full bucket), the global
/// [`AnswerBudget`](super::AnswerBudget) does.
///
/// # Bucket
///
/// Each bucket is kept as a GCRA "theoretical arrival time" `tat` (ITU-T I.371): with
/// `T = 1 / rate` and tolerance `tau = (burst - 1) * T`, a request at `now` is allowed when
/// `max(tat, now) - now <= tau`, and then `tat = max(tat, now) + T`. This is the token bucket
/// with capacity `burst` and refill `rate`, in integer nanoseconds (no drift), and a bucket is
/// **full** exactly when `tat <= now`, so a full bucket and an absent one behave the same.
///
/// # Bounded table and eviction
///
/// At most `capacity` buckets exist. When a new source arrives and the table is full, the
/// **least recently used** bucket is evicted; every request, allowed or refused, makes its
/// source the most recently used. Why LRU rather than "the fullest bucket":
///
/// - the LRU bucket has been idle longest; if it has been idle for `burst / rate` it is full
///   and evicting it loses nothing. If it is not full, then all `capacity` sources sent within
///   the last `burst / rate`: the table is overloaded, and [`SourceLimiter::resets`] counts it;
/// - a source that keeps sending, even while refused, is always the most recently used, so it
///   is the *last* to be evicted. To reset its own drained bucket, a sender must stay silent
///   while `capacity` other sources send. If it owns that many addresses, each of them already
///   brings a full bucket, so a reset gains it `burst` requests for `capacity` requests spent:
///   nothing a spoofer does not have anyway. A sender with fewer addresses cannot do it;
/// - finding the fullest bucket exactly needs a priority queue (O(log n)) or a scan; LRU is an
///   intrusive list, O(1). Refusing new sources when full was rejected: it would let whoever
///   fills the table lock every genuine OBT out.
///
/// Lookups use an open-addressing index (linear probing, load factor at most 1/2) with keys
/// hashed by SipHash-1-3 over a secret seed ([`SourceLimiter::with_seed`]), since sources are
/// chosen by senders: expected O(1) per request.
///
/// # Answer budget held
///
/// Each bucket also keeps `answers_until`, a second GCRA time over the source's admitted
/// answers: the instant by which their bytes would be paid for at the full budget rate. The
/// engine charges it ([`SourceLimiter::charge`]) with the budget time of every request it
/// admits, and [`AnswerBudget::window`](super::AnswerBudget::window) reads what is left ([`Grant::held`]) to cap a busy
/// source at its share. It lives here because it is keyed, bounded and evicted exactly like
/// the request bucket; an evicted source with answers still held counts as a reset too.
///
/// Unicast replies on device endpoints count against the same share (SPEC 7):
/// [`SourceLimiter::charge_reply`] adds their budget time to `answers_until` without spending a
/// request of the bucket, so a source that has just taken replies gets less room for its next
/// multicast request while it is busy. A reply is never refused for its source's share alone:
/// the pacer refuses what the global budget has no room for.
#[derive(Debug)]
pub struct SourceLimiter {
    /// `T`, the time one request costs, in nanoseconds (at least 1).
    interval: u64,
    /// `tau = (burst - 1) * T`, in nanoseconds.
    tolerance: u64,
    capacity: usize,
    /// Bucket storage: pushed up to `capacity`, then slots are reused; never reallocated.
    buckets: Vec<Bucket>,
    index: Index,
    /// Least recently used bucket (`NIL` when empty).
    lru: u32,
    /// Most recently used bucket (`NIL` when empty).
    mru: u32,
    seed: u64,
    evictions: u64,
    resets: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    ip: IpAddr,
    hash: u64,
    /// GCRA theoretical arrival time: the bucket is full from this instant on.
    tat: Instant,
    /// When the budget has paid for this source's admitted answers, at the full rate.
    answers_until: Instant,
    /// Towards the least recently used end.
    older: u32,
    /// Towards the most recently used end.
    newer: u32,
}

/// A source's admission by [`SourceLimiter::allow`]: where to [charge](SourceLimiter::charge)
/// its answers, and how much answer budget its earlier answers still hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Grant {
    slot: u32,
    /// The budget time the source's admitted answers still hold at the full rate: zero for a
    /// source with nothing pending.
    pub held: Duration,
}

const NIL: u32 = u32::MAX;

/// Largest supported table: bucket numbers are `u32`, and the index holds twice as many slots.
const MAX_CAPACITY: usize = 1 << 30;

/// Seed used by the plain constructors: fine for tests and trusted links, not against hash
/// flooding.
#[cfg(test)]
const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl SourceLimiter {
    /// A limiter allowing each source `burst` answer-producing requests at once and
    /// `rate_per_sec` per second after that, tracking at most `capacity` sources (memory is
    /// allocated here, once), with a fixed hash seed. Engines facing untrusted links should
    /// prefer [`SourceLimiter::with_seed`].
    ///
    /// A fractional burst is rounded down to whole requests; a `capacity` of 0 is raised to 1.
    ///
    /// # Panics
    ///
    /// If `rate_per_sec` is not a positive finite number, `burst` is not a finite number of at
    /// least 1, or `capacity` exceeds 2^30.
    #[cfg(test)]
    pub fn new(rate_per_sec: f64, burst: f64, capacity: usize) -> SourceLimiter {
        SourceLimiter::with_seed(rate_per_sec, burst, capacity, DEFAULT_SEED)
    }

    /// As [`SourceLimiter::new`], with the index hash keyed by `seed`, so that senders cannot
    /// pick addresses that all land on one probe sequence (hash flooding).
    ///
    /// # Panics
    ///
    /// As [`SourceLimiter::new`].
    pub fn with_seed(rate_per_sec: f64, burst: f64, capacity: usize, seed: u64) -> SourceLimiter {
        assert!(
            rate_per_sec.is_finite() && rate_per_sec > 0.0,
            "source rate must be positive and finite, got {rate_per_sec}"
        );
        assert!(burst.is_finite() && burst >= 1.0, "source burst must be at least 1, got {burst}");
        assert!(capacity <= MAX_CAPACITY, "source capacity {capacity} exceeds {MAX_CAPACITY}");
        let capacity = capacity.max(1);
        // `as` saturates: a rate below ~1e-10/s gives the largest interval, not a wrap.
        let interval = ((1e9 / rate_per_sec).round() as u64).max(1);
        let tolerance = ((burst.floor() - 1.0) * interval as f64) as u64;
        SourceLimiter {
            interval,
            tolerance,
            capacity,
            buckets: Vec::with_capacity(capacity),
            index: Index::new(capacity),
            lru: NIL,
            mru: NIL,
            seed,
            evictions: 0,
            resets: 0,
        }
    }

    /// Whether `source` may have one more answer-producing request at `now`; if so, the request
    /// is charged to its bucket and the [`Grant`] says how much answer budget the source
    /// already holds. A refused request is not charged, but it does make the source the most
    /// recently used (see the type's docs). Expected O(1), no allocation.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> Option<Grant> {
        let slot = self.touch(now, source);
        let bucket = &mut self.buckets[slot as usize];
        let start = bucket.tat.max(now);
        let waited = start.saturating_duration_since(now);
        if waited > Duration::from_nanos(self.tolerance) {
            return None;
        }
        bucket.tat = start + Duration::from_nanos(self.interval);
        Some(Grant { slot, held: bucket.answers_until.saturating_duration_since(now) })
    }

    /// Charges `cost` of budget time (the admitted answers' [`Window::cost`]) to the source
    /// that `grant` was given to. Call it before the next [`SourceLimiter::allow`]: a grant
    /// names a table slot, which a later new source may take over.
    pub fn charge(&mut self, now: Instant, grant: Grant, cost: Duration) {
        let bucket = &mut self.buckets[grant.slot as usize];
        bucket.answers_until = bucket.answers_until.max(now) + cost;
    }

    /// Charges `cost` of budget time to `source` without spending a request of its bucket: a
    /// unicast reply on a device endpoint (SPEC 7: unicast replies count against the same
    /// per-source limits), so that what a source's replies took shrinks the room its next
    /// multicast request gets while it is busy ([`Grant::held`]). Tracks the source like
    /// [`SourceLimiter::allow`] does (most recently used; a new source takes a bucket).
    /// Returns what the source holds after the charge. Expected O(1), no allocation.
    pub fn charge_reply(&mut self, now: Instant, source: IpAddr, cost: Duration) -> Duration {
        let slot = self.touch(now, source);
        let bucket = &mut self.buckets[slot as usize];
        bucket.answers_until = bucket.answers_until.max(now) + cost;
        bucket.answers_until.saturating_duration_since(now)
    }

    /// The bucket of `source`, admitted if new, made the most recently used.
    fn touch(&mut self, now: Instant, source: IpAddr) -> u32 {
        let ip = source.to_canonical();
        let hash = self.hash(ip);
        let buckets = &self.buckets;
        match self.index.find(hash, |s| buckets[s as usize].ip == ip) {
            Some(slot) => {
                self.unlink(slot);
                self.push_mru(slot);
                slot
            }
            None => self.admit(now, ip, hash),
        }
    }

    /// How many buckets were evicted to make room for a new source, for metrics.
    #[cfg(test)]
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// How many evicted buckets were not full, so that their source starts over with a full
    /// burst: non-zero means the table is too small for the sources active within
    /// `burst / rate`, or someone is spraying source addresses.
    #[cfg(test)]
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// The number of sources tracked, for metrics; never more than [`SourceLimiter::capacity`].
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// A bucket for a source not in the table, full (`tat = now`), most recently used.
    fn admit(&mut self, now: Instant, ip: IpAddr, hash: u64) -> u32 {
        let fresh = Bucket { ip, hash, tat: now, answers_until: now, older: NIL, newer: NIL };
        let slot = if self.buckets.len() < self.capacity {
            self.buckets.push(fresh);
            // `len <= capacity <= 2^30`.
            (self.buckets.len() - 1) as u32
        } else {
            let victim = self.lru;
            let old = self.buckets[victim as usize];
            self.unlink(victim);
            let buckets = &self.buckets;
            self.index.remove(old.hash, victim, |s| buckets[s as usize].hash);
            self.evictions += 1;
            if old.tat > now || old.answers_until > now {
                self.resets += 1;
            }
            self.buckets[victim as usize] = fresh;
            victim
        };
        self.index.insert(hash, slot);
        self.push_mru(slot);
        slot
    }

    fn unlink(&mut self, slot: u32) {
        let Bucket { older, newer, .. } = self.buckets[slot as usize];
        match older {
            NIL => self.lru = newer,
            o => self.buckets[o as usize].newer = newer,
        }
        match newer {
            NIL => self.mru = older,
            n => self.buckets[n as usize].older = older,
        }
    }

    fn push_mru(&mut self, slot: u32) {
        let old_mru = self.mru;
        {
            let bucket = &mut self.buckets[slot as usize];
            bucket.older = old_mru;
            bucket.newer = NIL;
        }
        match old_mru {
            NIL => self.lru = slot,
            m => self.buckets[m as usize].newer = slot,
        }
        self.mru = slot;
    }

    fn hash(&self, ip: IpAddr) -> u64 {
        let mut h = DefaultHasher::new();
        h.write_u64(self.seed);
        hash_index::write_ip(&mut h, ip);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, ms, secs};
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn allowed(limiter: &mut SourceLimiter, now: Instant, source: IpAddr, tries: usize) -> usize {
        (0..tries).filter(|_| limiter.allow(now, source).is_some()).count()
    }

    #[test]
    fn test_source_burst_then_limited() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(1.0, 5.0, 16);
        let obt = ip("fe80::1");
        assert_eq!(allowed(&mut limiter, t0, obt, 20), 5);
        assert!(limiter.allow(t0 + ms(999), obt).is_none());
        // Another source has its own bucket.
        assert_eq!(allowed(&mut limiter, t0, ip("fe80::2"), 20), 5);
    }

    #[test]
    fn test_source_refill_over_time() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(2.0, 4.0, 16);
        let obt = ip("192.168.1.20");
        assert_eq!(allowed(&mut limiter, t0, obt, 10), 4);
        // 2 per second: one more every 500 ms.
        assert!(limiter.allow(t0 + ms(499), obt).is_none());
        assert!(limiter.allow(t0 + ms(500), obt).is_some());
        assert!(limiter.allow(t0 + ms(500), obt).is_none());
        // Long idle refills to the burst, never beyond.
        assert_eq!(allowed(&mut limiter, t0 + secs(60), obt, 10), 4);
    }

    #[test]
    fn test_source_fractional_rate_and_burst() {
        let t0 = Instant::now();
        // One request every 3 s; burst 2.9 rounds down to 2.
        let mut limiter = SourceLimiter::new(1.0 / 3.0, 2.9, 4);
        let obt = ip("10.1.1.1");
        assert_eq!(allowed(&mut limiter, t0, obt, 5), 2);
        assert!(limiter.allow(t0 + ms(2_999), obt).is_none());
        assert!(limiter.allow(t0 + secs(3), obt).is_some());
        // Burst 1: strictly one per interval (rate 3/s has an inexact interval).
        let mut strict = SourceLimiter::new(3.0, 1.0, 4);
        assert_eq!(allowed(&mut strict, t0, obt, 5), 1);
        assert_eq!(allowed(&mut strict, t0 + secs(1), obt, 5), 1);
        let mut three = SourceLimiter::new(3.0, 3.0, 4);
        assert_eq!(allowed(&mut three, t0, obt, 5), 3);
    }

    #[test]
    fn test_source_mapped_ipv4_is_ipv4() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(1.0, 2.0, 4);
        assert_eq!(allowed(&mut limiter, t0, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 2), 2);
        assert!(limiter.allow(t0, ip("::ffff:10.0.0.1")).is_none());
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn test_source_many_sources_bounded_memory() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::with_seed(1.0, 3.0, 64, 42);
        for i in 0..10_000u32 {
            let source = IpAddr::V6(Ipv6Addr::from_bits(0xfe80 << 112 | u128::from(i)));
            assert!(
                limiter.allow(t0 + ms(u64::from(i)), source).is_some(),
                "a new source has a burst"
            );
            assert!(limiter.len() <= 64);
        }
        assert_eq!(limiter.len(), 64);
        assert_eq!(limiter.buckets.capacity(), 64, "no reallocation");
        assert_eq!(limiter.evictions(), 10_000 - 64);
        // One request per source, 1 ms apart: each evicted bucket (64 ms old, T = 1 s) was not
        // full again yet.
        assert_eq!(limiter.resets(), limiter.evictions());
    }

    #[test]
    fn test_source_evicts_full_bucket_without_reset() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(1.0, 2.0, 2);
        assert!(limiter.allow(t0, ip("10.0.0.1")).is_some());
        assert!(limiter.allow(t0, ip("10.0.0.2")).is_some());
        // 10.0.0.1 refilled long ago: evicting it loses nothing.
        assert!(limiter.allow(t0 + secs(10), ip("10.0.0.3")).is_some());
        assert_eq!((limiter.evictions(), limiter.resets()), (1, 0));
    }

    #[test]
    fn test_source_hammering_source_is_not_evicted() {
        // A drained source that keeps sending stays most recently used: a stream of new
        // sources evicts everybody else first, and its bucket is never reset.
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(0.1, 3.0, 4);
        let attacker = ip("10.9.9.9");
        assert_eq!(allowed(&mut limiter, t0, attacker, 10), 3);
        for i in 0..100u8 {
            let now = t0 + ms(u64::from(i));
            assert!(limiter.allow(now, IpAddr::V4(Ipv4Addr::new(10, 0, 1, i))).is_some());
            assert!(limiter.allow(now, attacker).is_none(), "request {i}: still drained");
        }
        assert_eq!(limiter.evictions(), 97);
    }

    #[test]
    fn test_source_reset_costs_capacity_requests() {
        // The trade-off, measured: to reset its bucket, a source must go quiet while `capacity`
        // other sources send, and each of those already got a full burst of its own.
        let t0 = Instant::now();
        let capacity = 8;
        let mut limiter = SourceLimiter::new(0.1, 3.0, capacity);
        let attacker = ip("10.9.9.9");
        assert_eq!(allowed(&mut limiter, t0, attacker, 10), 3);
        for i in 0..capacity - 1 {
            assert!(limiter.allow(t0, IpAddr::V4(Ipv4Addr::new(10, 0, 2, i as u8))).is_some());
        }
        assert!(limiter.allow(t0, attacker).is_none(), "capacity - 1 others are not enough");
        for i in 0..capacity {
            assert!(limiter.allow(t0, IpAddr::V4(Ipv4Addr::new(10, 0, 3, i as u8))).is_some());
        }
        assert_eq!(allowed(&mut limiter, t0, attacker, 10), 3, "reset after `capacity` others");
        assert!(limiter.resets() >= 1);
    }

    #[test]
    fn test_source_index_consistent_under_churn() {
        // A small table with constant eviction keeps finding every tracked source.
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::with_seed(1000.0, 1.0, 5, 7);
        let mut x: u64 = 0x1234_5678;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let source = IpAddr::V4(Ipv4Addr::new(10, 0, 0, (x % 12) as u8));
            let _ = limiter.allow(t0 + Duration::from_micros(step * 100), source);
            let tracked = limiter.buckets.iter().filter(|b| {
                let buckets = &limiter.buckets;
                limiter.index.find(b.hash, |s| buckets[s as usize].ip == b.ip).is_some()
            });
            assert_eq!(tracked.count(), limiter.len(), "step {step}");
        }
    }

    #[test]
    fn test_source_held_budget_drains() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(100.0, 100.0, 4);
        let obt = ip("fe80::1");
        let grant = limiter.allow(t0, obt).unwrap();
        assert_eq!(grant.held, Duration::ZERO, "a new source holds nothing");
        limiter.charge(t0, grant, secs(3));
        assert_eq!(limiter.allow(t0 + secs(1), obt).unwrap().held, secs(2));
        // Charges add up from the later of now and what is already held.
        let grant = limiter.allow(t0 + secs(1), obt).unwrap();
        limiter.charge(t0 + secs(1), grant, secs(4));
        assert_eq!(limiter.allow(t0 + secs(2), obt).unwrap().held, secs(5));
        assert_eq!(limiter.allow(t0 + secs(10), obt).unwrap().held, Duration::ZERO);
        // Another source holds nothing of it.
        assert_eq!(limiter.allow(t0 + secs(2), ip("fe80::2")).unwrap().held, Duration::ZERO);
    }

    #[test]
    fn test_source_evicted_while_holding_budget_is_a_reset() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(1_000.0, 1.0, 1);
        let grant = limiter.allow(t0, ip("10.0.0.1")).unwrap();
        limiter.charge(t0, grant, secs(5));
        // Its request bucket is full again after 1 ms, its answers are not paid for.
        assert!(limiter.allow(t0 + secs(1), ip("10.0.0.2")).is_some());
        assert_eq!((limiter.evictions(), limiter.resets()), (1, 1));
    }

    #[test]
    #[should_panic(expected = "burst")]
    fn test_source_burst_below_one_panics() {
        let _ = SourceLimiter::new(1.0, 0.5, 4);
    }

    #[test]
    fn test_source_reply_charges_the_share_not_the_bucket() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(1.0, 1.0, 4);
        let obt = ip("fe80::1");
        // Replies take budget time, not requests: the bucket still has its one request.
        assert_eq!(limiter.charge_reply(t0, obt, ms(3)), ms(3));
        assert_eq!(limiter.charge_reply(t0, obt, ms(2)), ms(5));
        let grant = limiter.allow(t0 + ms(1), obt).expect("the request bucket is untouched");
        assert_eq!(grant.held, ms(4), "what the replies took counts against its share");
        assert!(limiter.allow(t0 + ms(1), obt).is_none());
        assert_eq!(limiter.len(), 1);
    }
}
