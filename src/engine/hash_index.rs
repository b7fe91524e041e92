//! An open-addressing index from a 64-bit hash to small integers (ring slots, buckets), shared
//! by the duplicate detector and the source limiter.
//!
//! Linear probing with backward-shift deletion (no tombstones, so a long-running gate never
//! degrades), preallocated at construction: the hot path never allocates. The caller compares
//! full keys through the value and supplies each value's stored hash on removal, so the index
//! holds nothing but `u32`s.

/// Feeds an address to a hasher the way both tables key sources: its 4 or 16 octets.
pub(crate) fn write_ip(h: &mut impl std::hash::Hasher, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => h.write(&v4.octets()),
        std::net::IpAddr::V6(v6) => h.write(&v6.octets()),
    }
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Index {
    slots: Box<[u32]>,
    mask: usize,
}

const EMPTY: u32 = u32::MAX;

impl Index {
    /// Room for `capacity` keys at a load factor of at most 1/2.
    pub(crate) fn new(capacity: usize) -> Index {
        let size = (capacity * 2).next_power_of_two().max(2);
        Index { slots: vec![EMPTY; size].into_boxed_slice(), mask: size - 1 }
    }

    fn home(&self, hash: u64) -> usize {
        // Truncation keeps the low bits, which is what the mask wants.
        hash as usize & self.mask
    }

    /// The first slot on `hash`'s probe sequence for which `is_key` holds.
    pub(crate) fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut i = self.home(hash);
        loop {
            let value = self.slots[i];
            if value == EMPTY {
                return None;
            }
            if is_key(value) {
                return Some(value);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds `value` under `hash`. The caller keeps at most half the slots in use.
    pub(crate) fn insert(&mut self, hash: u64, value: u32) {
        let mut i = self.home(hash);
        while self.slots[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = value;
    }

    /// Removes `value`, stored under `hash`, and shifts later members of its run back so that
    /// every remaining value stays reachable from its home slot. `hash_of` gives the stored hash
    /// of any value still in the index.
    pub(crate) fn remove(&mut self, hash: u64, value: u32, hash_of: impl Fn(u32) -> u64) {
        let mut hole = self.home(hash);
        while self.slots[hole] != value {
            debug_assert!(self.slots[hole] != EMPTY, "removing a value that is not indexed");
            if self.slots[hole] == EMPTY {
                return;
            }
            hole = (hole + 1) & self.mask;
        }
        self.slots[hole] = EMPTY;
        let mut i = hole;
        loop {
            i = (i + 1) & self.mask;
            let moved = self.slots[i];
            if moved == EMPTY {
                return;
            }
            let home = self.home(hash_of(moved));
            // `moved` may fill the hole unless its home lies cyclically in (hole, i].
            let stays = if hole <= i { hole < home && home <= i } else { hole < home || home <= i };
            if !stays {
                self.slots[hole] = moved;
                self.slots[i] = EMPTY;
                hole = i;
            }
        }
    }
}
