//! UUID -> device id, readable without locks.
//!
//! An open-addressing table of `AtomicU32` device ids with linear probing. The table stores only
//! ids; the UUID to compare with is the one held by the device's record, read through a
//! closure, so the table costs 8 bytes per device at its maximum load factor of 1/2.
//!
//! One writer inserts and removes (removal leaves a tombstone). When the live entries and
//! tombstones pass half the table, the writer builds a table twice the size (or the same size,
//! when mostly tombstones), fills it, and publishes it with one pointer swap: readers holding
//! the old table finish their probe on it.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use uuid::Uuid;

const EMPTY: u32 = u32::MAX;
const TOMBSTONE: u32 = u32::MAX - 1;
/// The largest device id the table can hold (the two values above are markers).
pub const MAX_ID: u32 = u32::MAX - 2;

#[derive(Debug)]
struct Table {
    slots: Box<[AtomicU32]>,
}

impl Table {
    fn new(len: usize) -> Table {
        Table { slots: (0..len).map(|_| AtomicU32::new(EMPTY)).collect() }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct UuidIndex {
    table: ArcSwap<Table>,
    /// Live entries plus tombstones in the current table (writer side).
    used: AtomicUsize,
    /// Live entries.
    live: AtomicUsize,
}

impl Default for UuidIndex {
    fn default() -> UuidIndex {
        UuidIndex::new()
    }
}

/// A well-mixed 64-bit hash of a UUID (UUIDs are not always random: test fleets count up).
fn hash(uuid: &Uuid) -> usize {
    let (hi, lo) = uuid.as_u64_pair();
    let mut x = hi ^ lo.rotate_left(29);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (x ^ (x >> 33)) as usize
}

impl UuidIndex {
    /// An empty index.
    pub fn new() -> UuidIndex {
        UuidIndex {
            table: ArcSwap::from_pointee(Table::new(16)),
            used: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        }
    }

    /// The id of the device whose UUID is `uuid`; `uuid_of` reads the UUID of a candidate id.
    pub fn get(&self, uuid: &Uuid, uuid_of: impl Fn(u32) -> Option<Uuid>) -> Option<u32> {
        let table = self.table.load();
        find(&table, uuid, &uuid_of).map(|(_, id)| id)
    }

    /// Inserts `uuid -> id` (writer side, one writer at a time; `uuid` must not be present).
    pub fn insert(&self, uuid: &Uuid, id: u32, uuid_of: impl Fn(u32) -> Option<Uuid>) {
        debug_assert!(id <= MAX_ID);
        let current = self.table.load_full();
        let live = self.live.load(Ordering::Relaxed);
        if (self.used.load(Ordering::Relaxed) + 1) * 2 > current.slots.len() {
            // Grow when live entries fill a quarter; otherwise just sweep the tombstones.
            let len = if (live + 1) * 4 > current.slots.len() {
                current.slots.len() * 2
            } else {
                current.slots.len()
            };
            let mut fresh = Table::new(len);
            for slot in current.slots.iter() {
                let old = slot.load(Ordering::Acquire);
                if old != EMPTY && old != TOMBSTONE {
                    if let Some(old_uuid) = uuid_of(old) {
                        place(&mut fresh, &old_uuid, old);
                    }
                }
            }
            place(&mut fresh, uuid, id);
            self.table.store(Arc::new(fresh));
            self.used.store(live + 1, Ordering::Relaxed);
            self.live.store(live + 1, Ordering::Relaxed);
            return;
        }
        let mask = current.mask();
        let mut at = hash(uuid) & mask;
        loop {
            let slot = &current.slots[at];
            let v = slot.load(Ordering::Acquire);
            if v == EMPTY || v == TOMBSTONE {
                slot.store(id, Ordering::Release);
                if v == EMPTY {
                    self.used.fetch_add(1, Ordering::Relaxed);
                }
                self.live.fetch_add(1, Ordering::Relaxed);
                return;
            }
            at = (at + 1) & mask;
        }
    }

    /// Removes the entry for `uuid` (writer side).
    pub fn remove(&self, uuid: &Uuid, uuid_of: impl Fn(u32) -> Option<Uuid>) -> Option<u32> {
        let table = self.table.load();
        let (at, id) = find(&table, uuid, &uuid_of)?;
        table.slots[at].store(TOMBSTONE, Ordering::Release);
        self.live.fetch_sub(1, Ordering::Relaxed);
        Some(id)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Probes for `uuid`: the slot position and the id.
fn find(
    table: &Table,
    uuid: &Uuid,
    uuid_of: &impl Fn(u32) -> Option<Uuid>,
) -> Option<(usize, u32)> {
    let mask = table.mask();
    let mut at = hash(uuid) & mask;
    for _ in 0..table.slots.len() {
        match table.slots[at].load(Ordering::Acquire) {
            EMPTY => return None,
            TOMBSTONE => {}
            id if uuid_of(id).as_ref() == Some(uuid) => return Some((at, id)),
            _ => {}
        }
        at = (at + 1) & mask;
    }
    None
}

fn place(table: &mut Table, uuid: &Uuid, id: u32) {
    let mask = table.mask();
    let mut at = hash(uuid) & mask;
    while *table.slots[at].get_mut() != EMPTY {
        at = (at + 1) & mask;
    }
    *table.slots[at].get_mut() = id;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn test_insert_get_remove_with_growth_and_tombstones() {
        let index = UuidIndex::new();
        let mut by_id: HashMap<u32, Uuid> = HashMap::new();
        for id in 0..5_000u32 {
            let uuid = Uuid::from_u128(u128::from(id) + 1);
            by_id.insert(id, uuid);
            let uuids = by_id.clone();
            index.insert(&uuid, id, |i| uuids.get(&i).copied());
        }
        let lookup = |i: u32| by_id.get(&i).copied();
        assert_eq!(index.len(), 5_000);
        for id in 0..5_000u32 {
            assert_eq!(index.get(&Uuid::from_u128(u128::from(id) + 1), lookup), Some(id));
        }
        assert_eq!(index.get(&Uuid::from_u128(0), lookup), None);
        for id in (0..5_000u32).step_by(2) {
            assert_eq!(index.remove(&Uuid::from_u128(u128::from(id) + 1), lookup), Some(id));
        }
        assert_eq!(index.len(), 2_500);
        for id in 0..5_000u32 {
            let want = (id % 2 == 1).then_some(id);
            assert_eq!(index.get(&Uuid::from_u128(u128::from(id) + 1), lookup), want);
        }
    }

    #[test]
    fn test_churn_does_not_fill_with_tombstones() {
        let index = UuidIndex::new();
        let mut by_id: HashMap<u32, Uuid> = HashMap::new();
        for round in 0..10_000u32 {
            let uuid = Uuid::from_u128(u128::from(round) << 64 | 7);
            by_id.insert(0, uuid);
            let uuids = by_id.clone();
            index.insert(&uuid, 0, |i| uuids.get(&i).copied());
            assert_eq!(index.get(&uuid, |i| uuids.get(&i).copied()), Some(0));
            index.remove(&uuid, |i| uuids.get(&i).copied());
        }
        assert!(index.table.load().slots.len() <= 64, "tombstones are swept, not grown over");
    }
}
