//! The device table: up to millions of devices, read without locks, written by one thread.
//!
//! Devices live in slots addressed by a dense [`DeviceId`]. Slots come in segments of 4096 that
//! are allocated on first use and never move, so a reader indexes them with two loads and no
//! lock. Each slot holds:
//!
//! - the [`StateWord`]: the hot state, stored and loaded as one atomic `u64`;
//! - the [`DeviceRecord`] behind an `ArcSwapOption`, replaced whole on change; it holds the
//!   device's UUID, which the slot does not repeat (the UUID never changes while the slot's
//!   incarnation lasts, so every record the slot holds in that time has the same one);
//! - a revision counter for the control plane's conditional updates.
//!
//! Writers (the control plane) serialise on one mutex that the data path never touches. Every
//! write ends by storing the new state word and updating the [`EligibilityIndex`], so a change
//! is visible to the next datagram once the call returns. A bridge's ownership change flows to
//! its VODs through a writer-side child list: O(children), never a fleet scan.
//!
//! Records share their device-type and oxm lists: the writer keeps one copy of each distinct
//! list, and of each distinct pair of them, and points every record at it, whoever built the
//! record (a fleet of VODs loaded through the control API repeats a few lists a million times).
//!
//! Memory per device (`cargo bench --bench fleet`, section 3, measures it): the slot (24 B),
//! the record's head (the UUID, the lists and the tail's pointer: 40 B, 64 B from the allocator
//! with the `Arc` counts), its tail (the other fields, only those that differ from their
//! default, the name and the endpoints packed as address and port: 59 B, 80 B from the
//! allocator, for a 10-byte name and two IPv6 endpoints on one address) and the UUID index
//! (8 B at most), about 176 B in all (see [`super::record`] for the layout).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use arc_swap::ArcSwapOption;
use uuid::Uuid;

use super::index::EligibilityIndex;
use super::record::{DeviceRecord, Lists};
use super::state::{OnboardingState, StateWord};
use super::uuid_index::{UuidIndex, MAX_ID};
use crate::policy::Dos;

const SEGMENT_BITS: u32 = 12;
const SEGMENT_LEN: usize = 1 << SEGMENT_BITS;

/// The dense id of a device slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

/// Why a fleet change was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The table is at its configured capacity.
    #[error("the fleet is full ({0} devices)")]
    Full(usize),
    /// No device with that UUID.
    #[error("no device {0}")]
    NotFound(Uuid),
    /// The state combination cannot happen on a real device.
    #[error("{0}")]
    Inconsistent(&'static str),
    /// A state patch on a device whose state is unknown must give dos, owned and doc_open.
    #[error("the device's state is unknown: a patch must set dos, owned and doc_open together")]
    IncompleteState,
    /// A conditional update whose expected revision is not the current one.
    #[error("revision {expected} does not match the current revision {current}")]
    RevisionMismatch {
        /// The revision the caller expected.
        expected: u64,
        /// The device's current revision.
        current: u64,
    },
    /// A device named as its own bridge.
    #[error("bridge: a device cannot be its own bridge")]
    SelfBridge,
}

/// A change to a device's state and owner fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatePatch {
    /// `dos.s`.
    pub dos: Option<Dos>,
    /// `owned`.
    pub owned: Option<bool>,
    /// Whether a DOC is open.
    pub doc_open: Option<bool>,
    /// `devowneruuid`.
    pub devowneruuid: Option<Uuid>,
    /// `rowneruuid`.
    pub rowneruuid: Option<Uuid>,
    /// `oxmsel`.
    pub oxmsel: Option<i32>,
}

/// Rejects states no real device can be in (OCF Security: RFOTM is unowned; RFPRO, RFNOP and
/// SRESET are owned; RESET is unowned).
///
/// # Errors
/// [`FleetError::Inconsistent`] with the reason.
pub fn check_consistent(state: &OnboardingState) -> Result<(), FleetError> {
    match (state.dos, state.owned) {
        (Dos::Reset | Dos::Rfotm, true) => {
            Err(FleetError::Inconsistent("owned: a device in RESET or RFOTM is not owned"))
        }
        (Dos::Rfpro | Dos::Rfnop | Dos::Sreset, false) => {
            Err(FleetError::Inconsistent("owned: a device in RFPRO, RFNOP or SRESET is owned"))
        }
        _ => Ok(()),
    }
}

/// The state a device has after `patch`, from `old` (`None`: unknown), or why it cannot.
///
/// # Errors
/// [`FleetError::IncompleteState`] or [`FleetError::Inconsistent`].
pub fn patched_state(
    old: Option<OnboardingState>,
    patch: &StatePatch,
) -> Result<Option<OnboardingState>, FleetError> {
    let state = match (old, patch.dos, patch.owned, patch.doc_open) {
        (Some(old), dos, owned, doc_open) => Some(OnboardingState {
            dos: dos.unwrap_or(old.dos),
            owned: owned.unwrap_or(old.owned),
            doc_open: doc_open.unwrap_or(old.doc_open),
        }),
        (None, Some(dos), Some(owned), Some(doc_open)) => {
            Some(OnboardingState { dos, owned, doc_open })
        }
        (None, None, None, None) => None,
        (None, _, _, _) => return Err(FleetError::IncompleteState),
    };
    if let Some(s) = &state {
        check_consistent(s)?;
    }
    Ok(state)
}

#[derive(Debug, Default)]
struct Slot {
    word: AtomicU64,
    revision: AtomicU64,
    record: ArcSwapOption<DeviceRecord>,
}

/// Writer-side bookkeeping, under the writer mutex.
#[derive(Debug, Default)]
struct Writer {
    /// Ids freed by removals, reused first.
    free: Vec<u32>,
    /// The next never-used id.
    next: u32,
    /// VODs by the UUID of their bridge (the bridge may be registered later).
    children: HashMap<Uuid, Vec<u32>>,
    /// The lists records share.
    shared: Shared,
}

/// One copy of each distinct device-type list, oxm list and pair of them in use (writer side).
#[derive(Debug, Default)]
struct Shared {
    types: Interner<[Box<str>]>,
    oxms: Interner<[i32]>,
    lists: Interner<Lists>,
}

impl Shared {
    /// Points `record` at the shared copy of its lists (sharing them first if they are new).
    fn share(&mut self, record: &mut DeviceRecord) {
        if let Some(shared) = self.lists.get(record.lists()) {
            record.share_lists(shared);
            return;
        }
        let (mut types, mut oxms) = (record.device_types().clone(), record.oxms().clone());
        self.types.share(&mut types);
        self.oxms.share(&mut oxms);
        let mut lists = Arc::new(Lists::new(types, oxms));
        self.lists.share(&mut lists);
        record.share_lists(lists);
    }
}

/// A set of shared values. A value only the set still holds is swept when the set has doubled
/// since the last sweep, so lists that no record uses any more cost at most as much as the ones
/// in use.
#[derive(Debug)]
struct Interner<T: ?Sized> {
    set: HashSet<Arc<T>>,
    /// The set's size after the last sweep.
    swept: usize,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner { set: HashSet::new(), swept: 0 }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The shared copy of a value equal to `value`, if there is one.
    fn get(&self, value: &T) -> Option<Arc<T>> {
        self.set.get(value).cloned()
    }

    /// Points `value` at the shared copy of an equal value, or shares `value`.
    fn share(&mut self, value: &mut Arc<T>) {
        if let Some(shared) = self.set.get(&**value) {
            if !Arc::ptr_eq(shared, value) {
                *value = shared.clone();
            }
            return;
        }
        if self.set.len() >= (2 * self.swept).max(64) {
            self.set.retain(|v| Arc::strong_count(v) > 1);
            self.swept = self.set.len();
        }
        self.set.insert(value.clone());
    }
}

/// The fleet; see the [module docs](self).
#[derive(Debug)]
pub struct Fleet {
    segments: Box<[OnceLock<Box<[Slot]>>]>,
    capacity: usize,
    eligible: EligibilityIndex,
    uuids: UuidIndex,
    len: AtomicUsize,
    writer: Mutex<Writer>,
}

impl Fleet {
    /// The writer lock (never taken by the data path). A poisoned lock is taken over, as the
    /// `parking_lot` lock this replaces did: std's lock keeps the core free of libc.
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty fleet for up to `capacity` devices (memory for the slots is taken per 4096
    /// devices as they are added; the index takes capacity / 8 bytes up front).
    pub fn with_capacity(capacity: usize) -> Fleet {
        let capacity = capacity.min(MAX_ID as usize);
        let segments = capacity.div_ceil(SEGMENT_LEN);
        Fleet {
            segments: (0..segments).map(|_| OnceLock::new()).collect(),
            capacity,
            eligible: EligibilityIndex::with_capacity(capacity),
            uuids: UuidIndex::new(),
            len: AtomicUsize::new(0),
            writer: Mutex::new(Writer::default()),
        }
    }

    // ---- Reader side: lock-free, allocation-free. ----

    /// The number of devices.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether the fleet has no device.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of eligible devices.
    pub fn eligible_count(&self) -> usize {
        self.eligible.count()
    }

    /// Candidate eligible devices, ascending; re-check each one's [`Fleet::word`] before acting
    /// (see [`EligibilityIndex`]).
    pub fn eligible(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.eligible.iter().map(DeviceId)
    }

    /// The id of device `uuid`.
    pub fn lookup(&self, uuid: &Uuid) -> Option<DeviceId> {
        self.uuids.get(uuid, |id| self.uuid_of(DeviceId(id))).map(DeviceId)
    }

    /// The state word of slot `id` ([`StateWord::EMPTY`] for a free or unknown slot).
    pub fn word(&self, id: DeviceId) -> StateWord {
        self.slot(id)
            .map_or(StateWord::EMPTY, |s| StateWord::from_bits(s.word.load(Ordering::Acquire)))
    }

    /// The UUID of the device in slot `id`, read from its record (no reference-count
    /// increment, no allocation). A slot's record is stored before its word says present and
    /// cleared after its word says gone.
    pub fn uuid_of(&self, id: DeviceId) -> Option<Uuid> {
        let slot = self.slot(id)?;
        if !StateWord::from_bits(slot.word.load(Ordering::Acquire)).is_present() {
            return None;
        }
        slot.record.load().as_ref().map(|r| r.uuid())
    }

    /// The record of slot `id` (one reference-count increment, no allocation).
    pub fn record(&self, id: DeviceId) -> Option<Arc<DeviceRecord>> {
        self.slot(id)?.record.load_full()
    }

    /// The record of slot `id` without touching its reference count (the answer path: a
    /// shared count is a contended cache line when thousands of answers leave at once).
    pub fn record_guard(&self, id: DeviceId) -> arc_swap::Guard<Option<Arc<DeviceRecord>>> {
        match self.slot(id) {
            Some(slot) => slot.record.load(),
            None => arc_swap::Guard::from_inner(None),
        }
    }

    /// The revision of device `id`: bumped by every accepted change (the control plane's ETag).
    pub fn revision(&self, id: DeviceId) -> u64 {
        self.slot(id).map_or(0, |s| s.revision.load(Ordering::Acquire))
    }

    // ---- Writer side: serialised on the writer mutex. ----

    /// Creates or replaces device `record.uuid`; `state` is `None` while the bridge has not
    /// reported it (the device then never answers). Returns the id and the new revision.
    ///
    /// # Errors
    /// [`FleetError::Full`], [`FleetError::Inconsistent`] or [`FleetError::SelfBridge`];
    /// nothing changes.
    pub fn upsert(
        &self,
        mut record: DeviceRecord,
        state: Option<OnboardingState>,
    ) -> Result<(DeviceId, u64), FleetError> {
        if let Some(s) = &state {
            check_consistent(s)?;
        }
        let uuid = record.uuid();
        let bridge = record.bridge();
        if bridge == Some(uuid) {
            return Err(FleetError::SelfBridge);
        }
        let mut w = self.writer();
        w.shared.share(&mut record);
        let existing = self.lookup(&uuid);
        let id = match existing {
            Some(id) => id,
            None => DeviceId(self.allocate(&mut w)?),
        };
        let slot = self.slot_or_create(id);
        let old_word = StateWord::from_bits(slot.word.load(Ordering::Acquire));
        let incarnation = if existing.is_some() {
            old_word.incarnation()
        } else {
            old_word.incarnation().wrapping_add(1)
        };
        // Re-link the VOD under its (new) bridge.
        let old_bridge = slot.record.load().as_ref().and_then(|r| r.bridge());
        if existing.is_some() && old_bridge != bridge {
            unlink_child(&mut w, old_bridge, id.0);
        }
        if let Some(b) = bridge.filter(|_| existing.is_none() || old_bridge != bridge) {
            w.children.entry(b).or_default().push(id.0);
        }
        let bridge_owned = bridge.is_some_and(|b| self.is_owned(&b));
        slot.record.store(Some(Arc::new(record)));
        let word = StateWord::new(incarnation, state, bridge.is_some(), bridge_owned);
        let was_owned = existing.is_some() && word_owned(old_word);
        self.publish(id, slot, word);
        if existing.is_none() {
            self.uuids.insert(&uuid, id.0, |i| self.uuid_of(DeviceId(i)));
            self.len.fetch_add(1, Ordering::AcqRel);
        }
        // Revisions count the changes of one device: a new device starts at 1 even in a reused
        // slot, so that replaying a snapshot gives every device the revision it was acknowledged
        // with (a slot's history is not part of the snapshot).
        let revision = if existing.is_some() {
            slot.revision.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            slot.revision.store(1, Ordering::Release);
            1
        };
        if was_owned != word_owned(word) || existing.is_none() {
            self.cascade(&w, &uuid);
        }
        Ok((id, revision))
    }

    /// Applies `patch` to device `uuid`; with `expected_revision`, only if it is current.
    /// Returns the new revision.
    ///
    /// # Errors
    /// [`FleetError::NotFound`], [`FleetError::RevisionMismatch`],
    /// [`FleetError::IncompleteState`] or [`FleetError::Inconsistent`]; nothing changes.
    pub fn patch(
        &self,
        uuid: &Uuid,
        patch: &StatePatch,
        expected_revision: Option<u64>,
    ) -> Result<u64, FleetError> {
        let w = self.writer();
        let id = self.lookup(uuid).ok_or(FleetError::NotFound(*uuid))?;
        let slot = self.slot(id).ok_or(FleetError::NotFound(*uuid))?;
        let current = slot.revision.load(Ordering::Acquire);
        if let Some(expected) = expected_revision.filter(|&e| e != current) {
            return Err(FleetError::RevisionMismatch { expected, current });
        }
        let old_word = StateWord::from_bits(slot.word.load(Ordering::Acquire));
        let state = patched_state(old_word.state(), patch)?;
        if patch.devowneruuid.is_some() || patch.rowneruuid.is_some() || patch.oxmsel.is_some() {
            if let Some(old) = slot.record.load_full() {
                let record = old.with_owners(
                    patch.devowneruuid.unwrap_or(old.devowneruuid()),
                    patch.rowneruuid.unwrap_or(old.rowneruuid()),
                    patch.oxmsel.unwrap_or(old.oxmsel()),
                );
                slot.record.store(Some(Arc::new(record)));
            }
        }
        let word = StateWord::new(
            old_word.incarnation(),
            state,
            old_word.has_bridge(),
            old_word.bridge_owned(),
        );
        self.publish(id, slot, word);
        let revision = slot.revision.fetch_add(1, Ordering::AcqRel) + 1;
        if word_owned(old_word) != word_owned(word) {
            self.cascade(&w, uuid);
        }
        Ok(revision)
    }

    /// Removes device `uuid`. Its VODs, if it is a bridge, become bridge-unowned (fail closed).
    ///
    /// # Errors
    /// [`FleetError::NotFound`].
    pub fn remove(&self, uuid: &Uuid) -> Result<(), FleetError> {
        let mut w = self.writer();
        let id = self.lookup(uuid).ok_or(FleetError::NotFound(*uuid))?;
        let slot = self.slot(id).ok_or(FleetError::NotFound(*uuid))?;
        let old_word = StateWord::from_bits(slot.word.load(Ordering::Acquire));
        let bridge = slot.record.load().as_ref().and_then(|r| r.bridge());
        unlink_child(&mut w, bridge, id.0);
        self.uuids.remove(uuid, |i| self.uuid_of(DeviceId(i)));
        // Keep the incarnation so the next device in this slot gets a new one.
        let gone = StateWord::from_bits(u64::from(old_word.incarnation()) << 32);
        self.publish(id, slot, gone);
        slot.record.store(None);
        slot.revision.fetch_add(1, Ordering::AcqRel);
        w.free.push(id.0);
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.cascade(&w, uuid);
        Ok(())
    }

    /// Sets device `uuid`'s revision (restoring a snapshot, so that ETags survive restarts).
    ///
    /// # Errors
    /// [`FleetError::NotFound`].
    pub fn restore_revision(&self, uuid: &Uuid, revision: u64) -> Result<(), FleetError> {
        let _w = self.writer();
        let id = self.lookup(uuid).ok_or(FleetError::NotFound(*uuid))?;
        let slot = self.slot(id).ok_or(FleetError::NotFound(*uuid))?;
        slot.revision.store(revision, Ordering::Release);
        Ok(())
    }

    /// Every device id in use, ascending, from `from` on (the control plane's listings).
    pub fn ids_from(&self, from: u32) -> impl Iterator<Item = DeviceId> + '_ {
        (from..self.capacity as u32).map(DeviceId).filter(|&id| self.word(id).is_present())
    }

    /// The VODs whose bridge is not in the fleet, as `(vod, bridge)` pairs sorted by VOD. They
    /// answer nothing (fail closed: a missing bridge counts as unowned) until the bridge is
    /// added and owned; the control plane reports them as `bridge-missing`. A scan of the
    /// fleet on the reader side (no lock), for start-up and diagnostics.
    pub fn missing_bridges(&self) -> Vec<(Uuid, Uuid)> {
        let mut orphans: Vec<(Uuid, Uuid)> = self
            .ids_from(0)
            .filter_map(|id| {
                let record = self.record(id)?;
                let bridge = record.bridge().filter(|b| self.lookup(b).is_none())?;
                Some((record.uuid(), bridge))
            })
            .collect();
        orphans.sort_unstable();
        orphans
    }

    /// Forgets every device's reported state (fail-closed restart): devices stay registered but
    /// answer nothing until the bridge reports them again.
    pub fn mark_all_unknown(&self) {
        let _w = self.writer();
        for id in 0..self.capacity as u32 {
            let Some(slot) = self.slot(DeviceId(id)) else { continue };
            let word = StateWord::from_bits(slot.word.load(Ordering::Acquire));
            // Every present device, known or not: a VOD whose own state was already unknown must
            // still forget that its bridge was owned, since the bridge is unknown now too.
            if word.is_present() {
                let unknown = StateWord::new(word.incarnation(), None, word.has_bridge(), false);
                self.publish(DeviceId(id), slot, unknown);
            }
        }
    }

    /// Whether device `uuid` is known and owned (what a VOD needs of its bridge).
    fn is_owned(&self, uuid: &Uuid) -> bool {
        self.lookup(uuid).is_some_and(|id| word_owned(self.word(id)))
    }

    /// Pushes the ownership of bridge `bridge` to its VODs.
    fn cascade(&self, w: &Writer, bridge: &Uuid) {
        let owned = self.is_owned(bridge);
        for &child in w.children.get(bridge).map_or(&[][..], |c| c.as_slice()) {
            let id = DeviceId(child);
            if let Some(slot) = self.slot(id) {
                let word = StateWord::from_bits(slot.word.load(Ordering::Acquire));
                self.publish(id, slot, word.with_bridge_owned(owned));
            }
        }
    }

    /// Stores `word` and updates the eligibility index to match it.
    fn publish(&self, id: DeviceId, slot: &Slot, word: StateWord) {
        slot.word.store(word.bits(), Ordering::Release);
        self.eligible.set(id.0, word.is_eligible());
    }

    fn allocate(&self, w: &mut Writer) -> Result<u32, FleetError> {
        if let Some(id) = w.free.pop() {
            return Ok(id);
        }
        if w.next as usize >= self.capacity {
            return Err(FleetError::Full(self.capacity));
        }
        w.next += 1;
        Ok(w.next - 1)
    }

    fn slot(&self, id: DeviceId) -> Option<&Slot> {
        let index = id.0 as usize;
        self.segments.get(index >> SEGMENT_BITS)?.get()?.get(index & (SEGMENT_LEN - 1))
    }

    fn slot_or_create(&self, id: DeviceId) -> &Slot {
        let index = id.0 as usize;
        let segment = self.segments[index >> SEGMENT_BITS]
            .get_or_init(|| (0..SEGMENT_LEN).map(|_| Slot::default()).collect());
        &segment[index & (SEGMENT_LEN - 1)]
    }
}

fn word_owned(word: StateWord) -> bool {
    word.is_present() && word.state().is_some_and(|s| s.owned)
}

fn unlink_child(w: &mut Writer, bridge: Option<Uuid>, child: u32) {
    if let Some(children) = bridge.and_then(|b| w.children.get_mut(&b)) {
        children.retain(|&c| c != child);
    }
}
