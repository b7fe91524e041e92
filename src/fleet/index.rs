//! The eligibility index: which devices may answer a multicast doxm discovery right now.
//!
//! A two-level bitmap over device ids plus a count. Leaf word `w` holds the eligibility bits of
//! devices `64w .. 64w+63`; summary bit `w` is set while leaf word `w` is non-zero. Enumerating
//! the eligible devices therefore costs one pass over the summary (capacity / 4096 words) plus
//! O(eligible), and a discovery with no eligible device costs one load of the count, whatever
//! the fleet size.
//!
//! One writer (the fleet's control side, under its lock) sets and clears bits; any number of
//! readers enumerate concurrently without locks. A reader racing a writer may see a device that
//! just stopped being eligible, or miss one that just became eligible: the engine re-checks each
//! candidate's state word before answering, so the index only has to be exact once the writer's
//! call has returned.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Devices per leaf word.
const LEAF_BITS: usize = 64;

/// See the [module docs](self).
#[derive(Debug)]
pub struct EligibilityIndex {
    leaves: Box<[AtomicU64]>,
    summary: Box<[AtomicU64]>,
    count: AtomicUsize,
}

impl EligibilityIndex {
    /// An empty index for device ids `0..capacity`.
    pub fn with_capacity(capacity: usize) -> EligibilityIndex {
        let leaves = capacity.div_ceil(LEAF_BITS);
        let summary = leaves.div_ceil(LEAF_BITS);
        EligibilityIndex {
            leaves: (0..leaves).map(|_| AtomicU64::new(0)).collect(),
            summary: (0..summary).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
        }
    }

    /// The number of eligible devices.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether device `id` is marked eligible.
    pub fn contains(&self, id: u32) -> bool {
        let (leaf, bit) = split(id);
        self.leaves.get(leaf).is_some_and(|w| w.load(Ordering::Acquire) & bit != 0)
    }

    /// Marks device `id` eligible or not. Writer side only (one writer at a time).
    /// Returns whether the bit changed. Ids beyond the capacity are ignored.
    pub fn set(&self, id: u32, eligible: bool) -> bool {
        let (leaf, bit) = split(id);
        let Some(word) = self.leaves.get(leaf) else { return false };
        // One writer: a plain read tells whether anything changes, and a write that changes
        // nothing would only invalidate the cache line under the readers.
        if (word.load(Ordering::Acquire) & bit != 0) == eligible {
            return false;
        }
        let (summary_word, summary_bit) = split(leaf as u32);
        let summary = &self.summary[summary_word];
        if eligible {
            let before = word.fetch_or(bit, Ordering::AcqRel);
            if before & bit != 0 {
                return false;
            }
            if before == 0 {
                summary.fetch_or(summary_bit, Ordering::AcqRel);
            }
            self.count.fetch_add(1, Ordering::AcqRel);
        } else {
            let before = word.fetch_and(!bit, Ordering::AcqRel);
            if before & bit == 0 {
                return false;
            }
            if before == bit {
                summary.fetch_and(!summary_bit, Ordering::AcqRel);
            }
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    /// The eligible device ids in ascending order, lazily.
    pub fn iter(&self) -> Eligible<'_> {
        let empty = self.count() == 0;
        Eligible {
            index: self,
            summary_at: if empty { self.summary.len() } else { 0 },
            summary_bits: 0,
            leaf_at: 0,
            leaf_bits: 0,
        }
    }
}

/// Iterator over eligible device ids; see [`EligibilityIndex::iter`].
#[derive(Debug, Clone)]
pub struct Eligible<'a> {
    index: &'a EligibilityIndex,
    /// The next summary word to load.
    summary_at: usize,
    /// Remaining set bits of the current summary word (leaf numbers relative to it).
    summary_bits: u64,
    /// The leaf word whose bits are in `leaf_bits`.
    leaf_at: usize,
    leaf_bits: u64,
}

impl Iterator for Eligible<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        loop {
            if self.leaf_bits != 0 {
                let bit = self.leaf_bits.trailing_zeros() as usize;
                self.leaf_bits &= self.leaf_bits - 1;
                return Some((self.leaf_at * LEAF_BITS + bit) as u32);
            }
            if self.summary_bits != 0 {
                let bit = self.summary_bits.trailing_zeros() as usize;
                self.summary_bits &= self.summary_bits - 1;
                self.leaf_at = (self.summary_at - 1) * LEAF_BITS + bit;
                self.leaf_bits =
                    self.index.leaves.get(self.leaf_at).map_or(0, |w| w.load(Ordering::Acquire));
                continue;
            }
            let word = self.index.summary.get(self.summary_at)?;
            self.summary_bits = word.load(Ordering::Acquire);
            self.summary_at += 1;
        }
    }
}

fn split(id: u32) -> (usize, u64) {
    (id as usize / LEAF_BITS, 1u64 << (id as usize % LEAF_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_set_iter_count() {
        let index = EligibilityIndex::with_capacity(100_000);
        let ids = [0u32, 1, 63, 64, 4095, 4096, 4097, 70_000, 99_999];
        for &id in &ids {
            assert!(index.set(id, true));
            assert!(!index.set(id, true), "setting twice changes nothing");
        }
        assert_eq!(index.count(), ids.len());
        assert_eq!(index.iter().collect::<Vec<_>>(), ids);
        assert!(index.set(4096, false));
        assert!(!index.set(4096, false));
        assert!(!index.contains(4096));
        assert_eq!(index.iter().count(), ids.len() - 1);
        for &id in &ids {
            index.set(id, false);
        }
        assert_eq!(index.count(), 0);
        assert_eq!(index.iter().next(), None);
        assert!(index.summary.iter().all(|w| w.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn test_out_of_capacity_ignored() {
        let index = EligibilityIndex::with_capacity(64);
        assert!(!index.set(64, true));
        assert!(index.set(63, true));
        assert_eq!(index.iter().collect::<Vec<_>>(), [63]);
    }

    #[test]
    fn test_matches_reference_model() {
        let index = EligibilityIndex::with_capacity(10_000);
        let mut model = vec![false; 10_000];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = (x % 10_000) as u32;
            let on = x & (1 << 40) != 0;
            assert_eq!(index.set(id, on), model[id as usize] != on);
            model[id as usize] = on;
        }
        let want: Vec<u32> = (0..10_000).filter(|&i| model[i as usize]).collect();
        assert_eq!(index.iter().collect::<Vec<_>>(), want);
        assert_eq!(index.count(), want.len());
    }
}
