//! Copies of one discovery exchange (SPEC section 1.1, "Duplicates"; RFC 7252 sections 4.5 and
//! 8.2).
//!
//! Clients send one discovery to several groups, and a device must answer the exchange once:
//!
//! - the IoTivity-Lite OBT sends it to `ff02::158` and `224.0.1.187` with the **same token and
//!   Message ID** from two source addresses (one per IP family);
//! - the plgd client sends it to `ff02::158`, `ff03::158` and `ff05::158` **from one socket
//!   with one Message ID** and a fresh token per group. On a host with only a link-local
//!   address that is one source endpoint; on a host with a ULA or global address the kernel
//!   picks that address as the source of the ff03/ff05 copies and the link-local one for the
//!   ff02 copy: **one source port, two source addresses, one interface**.
//!
//! So two requests within the exchange window are copies of one exchange when they have the same
//! Message ID and either the same token, or the same source endpoint, or the same source port
//! arriving on the same interface (SPEC 1.1). The source-endpoint rule is RFC 7252 section 4.5
//! (a NON is a duplicate when its Message ID repeats from the same endpoint within
//! `NON_LIFETIME`); the token rule is what SPEC 1.1 adds for copies sent over both families; the
//! port-and-interface rule is what it adds for the plgd copies from a host with two addresses.
//! Its price: two clients on one link that pick the same source port and the same Message ID
//! within the window are taken for one; with random ports and Message IDs that is a 2^-32 event
//! per pair of requests, and the client retransmits (a discovery is repeated anyway). The
//! first copy wins: it is recorded and answered on its own family; later copies are reported as
//! [`Seen::Copy`] and are not recorded again, so the window is measured from the first copy.
//!
//! # Design
//!
//! - A **ring** of entries in arrival order, preallocated to `capacity`. Entries older than the
//!   window are removed from its front on every [`Dedup::check`] (each entry is removed once, so
//!   this is amortised O(1)); when the ring is full, the oldest entry is evicted and counted
//!   ([`Dedup::evictions`]). A token is 0 to 8 bytes (RFC 7252 section 3) and is stored inline.
//! - Three **open-addressing indexes** (linear probing, load factor at most 1/2, deletion by
//!   backward shift, so no tombstones) map `(Message ID, token)`, `(Message ID, source
//!   endpoint)` and `(Message ID, source port, interface)` to ring slots. Among live entries
//!   each key is unique, because a request whose key is already present is a copy and is not
//!   recorded: the indexes are plain maps, not multimaps, and a check costs three expected-O(1)
//!   probes whatever the traffic.
//! - Keys are hashed with SipHash-1-3 (std's `DefaultHasher`) over a secret seed
//!   ([`Dedup::with_seed`]). Message ID, token and source port are all chosen by the sender; with
//!   a public hash an attacker could aim every key at one probe run and make each check
//!   O(capacity). A table indexed by Message ID alone (65,536 heads) was rejected for the same
//!   reason: one Message ID repeated with fresh tokens builds an O(capacity) chain.
//!
//! Nothing allocates after [`Dedup::new`]; nothing reads a clock (time is passed in).
//!
//! The source endpoint is the IP address and port. IPv4-mapped IPv6 addresses are compared as
//! the IPv4 address they carry (a dual-stack socket reports IPv4 peers that way). The IPv6 flow
//! label and scope id are ignored: a sender's flow label may differ per destination group, and
//! the scope id names our interface, not the sender.
//!
//! The window is the engine's to configure: RFC 7252's `NON_LIFETIME` is 145 s, while the copies
//! of one discovery arrive within milliseconds of each other. `now` should not decrease between
//! calls; an earlier instant is treated as no time passing.

use super::hash_index::{self, Index};
use std::hash::{DefaultHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Whether a request starts an exchange or repeats one, so that a device answers each exchange
/// once (SPEC section 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Seen {
    /// The first copy of an exchange within the window: recorded, and answered.
    New,
    /// A copy of an exchange already seen within the window: not answered again.
    Copy,
}

/// The recent discovery exchanges, bounded in memory and time, to recognise copies of a request
/// that arrive on several groups or IP families (SPEC section 1.1).
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    capacity: usize,
    /// Ring storage. Slots are pushed until `capacity`, then reused; never reallocated.
    entries: Vec<Entry>,
    /// Slot of the oldest live entry.
    head: usize,
    /// Number of live entries, from `head` onwards (wrapping).
    len: usize,
    by_token: Index,
    by_source: Index,
    by_port: Index,
    seed: u64,
    evictions: u64,
}

/// One recorded exchange.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    ip: IpAddr,
    port: u16,
    interface: u32,
    mid: u16,
    token_len: u8,
    token: [u8; 8],
    token_hash: u64,
    source_hash: u64,
    port_hash: u64,
}

impl Entry {
    fn token(&self) -> &[u8] {
        &self.token[..usize::from(self.token_len)]
    }
}

/// Largest supported capacity: ring slots are `u32` in the indexes, which hold twice as many.
const MAX_CAPACITY: usize = 1 << 30;

/// Seed used by [`Dedup::new`]: fine for tests and trusted links, not against hash flooding.
#[cfg(test)]
const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl Dedup {
    /// An empty detector that treats requests within `window` of each other as candidate copies
    /// and remembers at most `capacity` exchanges, with a fixed hash seed. Engines facing
    /// untrusted links should prefer [`Dedup::with_seed`] with a secret seed.
    ///
    /// A `capacity` of 0 is raised to 1; a zero `window` detects no copies. Memory, under
    /// 100 bytes per unit of capacity, is allocated here.
    ///
    /// # Panics
    ///
    /// If `capacity` exceeds 2^30.
    #[cfg(test)]
    pub fn new(window: Duration, capacity: usize) -> Dedup {
        Dedup::with_seed(window, capacity, DEFAULT_SEED)
    }

    /// As [`Dedup::new`], with the hash keyed by `seed`, so that senders, who choose Message ID,
    /// token and source port, cannot aim their keys at one probe sequence (hash flooding).
    ///
    /// # Panics
    ///
    /// If `capacity` exceeds 2^30.
    pub fn with_seed(window: Duration, capacity: usize, seed: u64) -> Dedup {
        assert!(capacity <= MAX_CAPACITY, "dedup capacity {capacity} exceeds {MAX_CAPACITY}");
        let capacity = capacity.max(1);
        Dedup {
            window,
            capacity,
            entries: Vec::with_capacity(capacity),
            head: 0,
            len: 0,
            by_token: Index::new(capacity),
            by_source: Index::new(capacity),
            by_port: Index::new(capacity),
            seed,
            evictions: 0,
        }
    }

    /// Classifies one request and records it if it is [`Seen::New`], so that later copies of the
    /// same exchange are recognised (SPEC section 1.1). `token` is the request token (at most 8
    /// bytes; a longer one, which the wire layer rejects, is truncated to 8); `interface` is the
    /// index of the interface it arrived on. Expected O(1), no allocation.
    pub fn check(
        &mut self,
        now: Instant,
        mid: u16,
        token: &[u8],
        source: SocketAddr,
        interface: u32,
    ) -> Seen {
        self.expire(now);
        let token = &token[..token.len().min(8)];
        let ip = source.ip().to_canonical();
        let port = source.port();

        let token_hash = self.hash_token(mid, token);
        let entries = &self.entries;
        let same_token = |slot: u32| {
            entries[slot as usize].mid == mid && entries[slot as usize].token() == token
        };
        if self.by_token.find(token_hash, same_token).is_some() {
            return Seen::Copy;
        }
        let source_hash = self.hash_source(mid, ip, port);
        let same_source = |slot: u32| {
            let e = &entries[slot as usize];
            e.mid == mid && e.port == port && e.ip == ip
        };
        if self.by_source.find(source_hash, same_source).is_some() {
            return Seen::Copy;
        }
        let port_hash = self.hash_port(mid, port, interface);
        let same_port = |slot: u32| {
            let e = &entries[slot as usize];
            e.mid == mid && e.port == port && e.interface == interface
        };
        if self.by_port.find(port_hash, same_port).is_some() {
            return Seen::Copy;
        }

        if self.len == self.capacity {
            self.remove_oldest();
            self.evictions += 1;
        }
        let mut inline = [0; 8];
        inline[..token.len()].copy_from_slice(token);
        let entry = Entry {
            at: now,
            ip,
            port,
            interface,
            mid,
            // At most 8 (truncated above).
            token_len: token.len() as u8,
            token: inline,
            token_hash,
            source_hash,
            port_hash,
        };
        let slot = (self.head + self.len) % self.capacity;
        if slot == self.entries.len() {
            self.entries.push(entry);
        } else {
            self.entries[slot] = entry;
        }
        self.len += 1;
        // `slot < capacity <= 2^30`, so it fits.
        self.by_token.insert(token_hash, slot as u32);
        self.by_source.insert(source_hash, slot as u32);
        self.by_port.insert(port_hash, slot as u32);
        Seen::New
    }

    /// How many exchanges were forgotten before their window ended because the table was full:
    /// a copy of one of them would be answered again, so a non-zero count means the capacity is
    /// too small for the request rate times the window.
    #[cfg(test)]
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The number of exchanges currently remembered (as of the last [`Dedup::check`]), for
    /// metrics.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The most exchanges remembered at once, as configured (memory is allocated up front).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Removes, from the front of the ring, every entry whose window has ended.
    fn expire(&mut self, now: Instant) {
        while self.len > 0 {
            let oldest = &self.entries[self.head];
            if now.saturating_duration_since(oldest.at) < self.window {
                break;
            }
            self.remove_oldest();
        }
    }

    /// Unlinks the oldest entry from both indexes and advances the ring head. `len > 0`.
    fn remove_oldest(&mut self) {
        let slot = self.head;
        let entry = self.entries[slot];
        let entries = &self.entries;
        // `slot < capacity <= 2^30`.
        self.by_token.remove(entry.token_hash, slot as u32, |s| entries[s as usize].token_hash);
        self.by_source.remove(entry.source_hash, slot as u32, |s| entries[s as usize].source_hash);
        self.by_port.remove(entry.port_hash, slot as u32, |s| entries[s as usize].port_hash);
        self.head = (self.head + 1) % self.capacity;
        self.len -= 1;
    }

    fn hash_token(&self, mid: u16, token: &[u8]) -> u64 {
        let mut h = DefaultHasher::new();
        h.write_u64(self.seed);
        h.write_u8(0);
        h.write_u16(mid);
        h.write_u8(token.len() as u8);
        h.write(token);
        h.finish()
    }

    fn hash_port(&self, mid: u16, port: u16, interface: u32) -> u64 {
        let mut h = DefaultHasher::new();
        h.write_u64(self.seed);
        h.write_u8(2);
        h.write_u16(mid);
        h.write_u16(port);
        h.write_u32(interface);
        h.finish()
    }

    fn hash_source(&self, mid: u16, ip: IpAddr, port: u16) -> u64 {
        let mut h = DefaultHasher::new();
        h.write_u64(self.seed);
        h.write_u8(1);
        h.write_u16(mid);
        h.write_u16(port);
        hash_index::write_ip(&mut h, ip);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    const WINDOW: Duration = Duration::from_secs(5);
    /// The interface requests arrive on, unless a test says otherwise.
    const IF: u32 = 3;

    fn v6(s: &str, port: u16) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), port)
    }

    fn v4(s: &str, port: u16) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), port)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn test_iotivity_lite_v6_and_v4_copies() {
        // Same token and Message ID to ff02::158 and 224.0.1.187, from one host's two families.
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 16);
        let token = [0x61, 0x38, 0x7b, 0x70, 0x99, 0x60, 0x2b, 0x0b];
        assert_eq!(dedup.check(t0, 0xf1cd, &token, v6("fe80::1", 49152), IF), Seen::New);
        let later = t0 + Duration::from_millis(3);
        assert_eq!(dedup.check(later, 0xf1cd, &token, v4("192.168.1.10", 41000), IF), Seen::Copy);
        assert_eq!(dedup.len(), 1, "a copy is not recorded");
    }

    #[test]
    fn test_plgd_fresh_token_per_group() {
        // One source endpoint and one Message ID to ff02::158, ff03::158 and ff05::158.
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 16);
        let source = v6("fe80::2", 5683);
        assert_eq!(dedup.check(t0, 77, &[1, 1, 1, 1], source, IF), Seen::New);
        assert_eq!(dedup.check(t0, 77, &[2, 2, 2, 2], source, IF), Seen::Copy);
        assert_eq!(dedup.check(t0 + secs(1), 77, &[3, 3, 3, 3], source, IF), Seen::Copy);
        assert_eq!(dedup.len(), 1);
    }

    #[test]
    fn test_plgd_copies_from_a_host_with_a_ula() {
        // One socket, one Message ID, a fresh token per group: ff02::158 from the link-local
        // address, ff03::158 and ff05::158 from the ULA (the kernel's source choice), all on
        // one interface.
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 16);
        assert_eq!(dedup.check(t0, 0x4242, &[1; 4], v6("fe80::77", 40404), 2), Seen::New);
        assert_eq!(dedup.check(t0, 0x4242, &[2; 4], v6("fd00:77::77", 40404), 2), Seen::Copy);
        assert_eq!(dedup.check(t0, 0x4242, &[3; 4], v6("fd00:77::77", 40404), 2), Seen::Copy);
        assert_eq!(dedup.len(), 1);
        // The same port and Message ID on another interface is another client.
        assert_eq!(dedup.check(t0, 0x4242, &[4; 4], v6("fd00:78::5", 40404), 5), Seen::New);
        // Another port on the same interface too, and another Message ID.
        assert_eq!(dedup.check(t0, 0x4242, &[5; 4], v6("fd00:77::77", 40405), 2), Seen::New);
        assert_eq!(dedup.check(t0, 0x4243, &[6; 4], v6("fd00:77::77", 40404), 2), Seen::New);
    }

    #[test]
    fn test_same_mid_other_token_other_source_is_new() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 16);
        assert_eq!(dedup.check(t0, 9, b"aa", v6("fe80::1", 5683), IF), Seen::New);
        // Another address with the same port, on another interface: another client.
        assert_eq!(dedup.check(t0, 9, b"bb", v6("fe80::2", 5683), IF + 1), Seen::New);
        // Same address, other port: another endpoint.
        assert_eq!(dedup.check(t0, 9, b"cc", v6("fe80::1", 5684), IF), Seen::New);
        // Same token and source, other Message ID: another exchange.
        assert_eq!(dedup.check(t0, 10, b"aa", v6("fe80::1", 5683), IF), Seen::New);
        assert_eq!(dedup.len(), 4);
    }

    #[test]
    fn test_first_copy_wins_and_window_counts_from_it() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 16);
        let source = v4("10.0.0.1", 5683);
        assert_eq!(dedup.check(t0, 1, b"t", source, IF), Seen::New);
        // A copy just inside the window does not extend it.
        assert_eq!(dedup.check(t0 + secs(4), 1, b"t", source, IF), Seen::Copy);
        assert_eq!(dedup.check(t0 + secs(5), 1, b"t", source, IF), Seen::New);
    }

    #[test]
    fn test_window_expiry() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 16);
        let source = v6("fe80::1", 5683);
        assert_eq!(dedup.check(t0, 1, b"x", source, IF), Seen::New);
        assert_eq!(
            dedup.check(t0 + WINDOW - Duration::from_nanos(1), 1, b"y", source, IF),
            Seen::Copy
        );
        assert_eq!(dedup.check(t0 + WINDOW, 1, b"x", source, IF), Seen::New);
        assert_eq!(dedup.len(), 1, "the expired entry is gone, the new one recorded");
        assert_eq!(dedup.evictions(), 0, "expiry is not eviction");
    }

    #[test]
    fn test_capacity_eviction() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 3);
        for mid in 0..3 {
            assert_eq!(dedup.check(t0, mid, b"k", v4("10.0.0.1", 1000 + mid), IF), Seen::New);
        }
        assert_eq!(dedup.evictions(), 0);
        assert_eq!(dedup.check(t0, 3, b"k", v4("10.0.0.1", 1003), IF), Seen::New);
        assert_eq!(dedup.evictions(), 1);
        assert_eq!(dedup.len(), 3);
        // Message ID 0 (the oldest) was forgotten; 1 and 2 are remembered.
        assert_eq!(dedup.check(t0, 1, b"k", v4("10.0.0.9", 1), IF), Seen::Copy);
        assert_eq!(dedup.check(t0, 2, b"k", v4("10.0.0.9", 1), IF), Seen::Copy);
        assert_eq!(dedup.check(t0, 0, b"k", v4("10.0.0.1", 1000), IF), Seen::New);
        assert_eq!(dedup.evictions(), 2);
        assert_eq!(dedup.entries.capacity(), 3, "no reallocation");
    }

    #[test]
    fn test_token_lengths_0_and_8() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 8);
        let a = v6("fe80::a", 5683);
        // Another client: another address, and another interface (one port, one interface
        // would make it the same socket by SPEC 1.1).
        let b = v6("fe80::b", 5683);
        assert_eq!(dedup.check(t0, 5, &[], a, IF), Seen::New);
        assert_eq!(dedup.check(t0, 5, &[], b, IF + 1), Seen::Copy, "empty tokens are equal tokens");
        assert_eq!(
            dedup.check(t0, 5, &[0], b, IF + 1),
            Seen::New,
            "a 1-byte zero token is not empty"
        );
        let full = [0xff; 8];
        assert_eq!(dedup.check(t0, 6, &full, a, IF), Seen::New);
        assert_eq!(dedup.check(t0, 6, &full, b, IF + 1), Seen::Copy);
        let mut other = full;
        other[7] = 0;
        assert_eq!(dedup.check(t0, 6, &other, v6("fe80::c", 1), IF), Seen::New);
    }

    #[test]
    fn test_source_endpoint_ignores_flowinfo_and_scope_and_mapping() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 8);
        let ip: Ipv6Addr = "fe80::1".parse().unwrap();
        let first = SocketAddr::V6(SocketAddrV6::new(ip, 5683, 0x1234, 2));
        let second = SocketAddr::V6(SocketAddrV6::new(ip, 5683, 0x5678, 3));
        assert_eq!(dedup.check(t0, 1, b"a", first, IF), Seen::New);
        assert_eq!(dedup.check(t0, 1, b"b", second, IF), Seen::Copy);
        // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
        let plain = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)), 5683);
        let mapped = SocketAddr::new("::ffff:10.0.0.7".parse().unwrap(), 5683);
        assert_eq!(dedup.check(t0, 2, b"a", plain, IF), Seen::New);
        assert_eq!(dedup.check(t0, 2, b"c", mapped, IF), Seen::Copy);
    }

    #[test]
    fn test_zero_capacity_is_one() {
        let t0 = Instant::now();
        let mut dedup = Dedup::new(WINDOW, 0);
        assert_eq!(dedup.capacity(), 1);
        assert_eq!(dedup.check(t0, 1, b"a", v4("10.0.0.1", 1), IF), Seen::New);
        assert_eq!(dedup.check(t0, 1, b"a", v4("10.0.0.1", 1), IF), Seen::Copy);
        assert_eq!(dedup.check(t0, 2, b"a", v4("10.0.0.1", 1), IF), Seen::New);
        assert_eq!(dedup.evictions(), 1);
    }

    /// A tiny xorshift64* generator: deterministic, no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The rule written the obvious way: a Vec scanned linearly.
    struct Reference {
        window: Duration,
        capacity: usize,
        entries: Vec<(Instant, u16, Vec<u8>, SocketAddr, u32)>,
        evictions: u64,
    }

    impl Reference {
        fn check(
            &mut self,
            now: Instant,
            mid: u16,
            token: &[u8],
            source: SocketAddr,
            interface: u32,
        ) -> Seen {
            self.entries.retain(|e| now.saturating_duration_since(e.0) < self.window);
            let copy = self.entries.iter().any(|(_, m, t, s, i)| {
                *m == mid
                    && (t.as_slice() == token
                        || *s == source
                        || (s.port() == source.port() && *i == interface))
            });
            if copy {
                return Seen::Copy;
            }
            if self.entries.len() == self.capacity {
                self.entries.remove(0);
                self.evictions += 1;
            }
            self.entries.push((now, mid, token.to_vec(), source, interface));
            Seen::New
        }
    }

    #[test]
    fn test_against_reference_model() {
        let mut tally = [0u64; 2];
        let mut evictions = 0;
        for seed in 1..=40u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let capacity = 1 + rng.below(24) as usize;
            let window = Duration::from_millis(50 + rng.below(400));
            let mut dedup = Dedup::with_seed(window, capacity, rng.next());
            let mut reference = Reference { window, capacity, entries: Vec::new(), evictions: 0 };
            // Small key spaces so that collisions of every kind are frequent.
            let sources = [
                v6("fe80::1", 5683),
                v6("fe80::1", 5684),
                v6("fe80::2", 5683),
                v4("192.168.1.2", 5683),
                v4("192.168.1.3", 40000),
            ];
            let tokens: [&[u8]; 5] = [&[], &[1], &[1, 2], &[9; 8], &[1, 2, 3, 4, 5, 6, 7, 8]];
            let mut now = Instant::now();
            for step in 0..3000 {
                now += Duration::from_millis(rng.below(40));
                let mid = rng.below(6) as u16;
                let token = tokens[rng.below(tokens.len() as u64) as usize];
                let source = sources[rng.below(sources.len() as u64) as usize];
                let interface = 1 + rng.below(2) as u32;
                let expected = reference.check(now, mid, token, source, interface);
                let got = dedup.check(now, mid, token, source, interface);
                assert_eq!(got, expected, "seed {seed} step {step}");
                assert_eq!(dedup.evictions(), reference.evictions, "seed {seed} step {step}");
                assert_eq!(dedup.len(), reference.entries.len(), "seed {seed} step {step}");
                tally[usize::from(got == Seen::Copy)] += 1;
            }
            evictions += dedup.evictions();
            assert_eq!(dedup.entries.capacity(), capacity, "no reallocation");
        }
        // The sequences exercise every path: new, copy, eviction (and expiry, by the windows).
        assert!(tally[0] > 10_000 && tally[1] > 10_000 && evictions > 1_000, "{tally:?}");
    }

    #[test]
    fn test_index_survives_heavy_collisions() {
        // Every key on one home slot: backward-shift deletion must keep all reachable.
        let mut index = Index::new(8);
        let hash_of = |_: u32| 0u64;
        for v in 0..8 {
            index.insert(0, v);
        }
        index.remove(0, 3, hash_of);
        index.remove(0, 0, hash_of);
        for v in 0..8 {
            let found = index.find(0, |s| s == v);
            assert_eq!(found.is_some(), v != 3 && v != 0, "value {v}");
        }
    }
}
