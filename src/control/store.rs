//! The durable fleet: every acknowledged change is in the journal before it is acknowledged.
//!
//! A change goes: under the store's lock, check (all of the batch) and append it to the journal
//! and to a queue of journaled changes -> release the lock -> wait until the record is on disk
//! (group commit: concurrent callers share one fsync) -> under the lock again, apply every
//! queued change whose record is durable, in journal order -> acknowledge. So a change is
//! visible (to `GET`, and to the data path that answers discovery) only once it is durable, and
//! the order of application is the journal's. A crash before the fsync loses a change nobody
//! was told about; a crash after it loses nothing, because start-up replays the snapshot and
//! the journal.
//!
//! A change is checked against the fleet while earlier changes may still be queued. So that the
//! check holds when it is applied after them (and on replay), a change that touches a device
//! some queued change touches, or that could overflow the fleet's capacity together with the
//! queued upserts, waits until those are applied before it is checked. (A check reads only the
//! devices of its batch and the fleet's size.) A snapshot is taken only when the queue is empty,
//! so that it holds every record it covers.
//!
//! When the journal cannot write (disk full, I/O error), the call gets a 503 naming the journal
//! and nothing changed, neither in memory nor on disk: the fleet keeps serving what was
//! acknowledged (no device is forced to unknown). The next change first asks the journal to
//! recover ([`Journal::recover`]: reopen, truncate to the last durable batch, verify, continue),
//! so the gate heals without a restart once space returns; until then every change gets 503 and
//! `/healthz` says why.
//!
//! (Applying first and undoing on failure, the other way to keep the fsync shared, would show
//! readers, for an fsync's time, changes that may then vanish.)
//!
//! Restart policy: `fail-closed` (the default) brings every device back with its registry data
//! but an unknown state, so nothing answers until the bridge reports it again; `resume` keeps the
//! recovered states.
//!
//! Revisions: the store keeps the *revision floor* (see [`super::mutation`]), the highest
//! revision a deleted device had reached; a device created after it starts above it. Replaying
//! the journal raises it again at every delete, and snapshots record it
//! (`"revision_floor"`), so revisions survive restarts and compaction and never repeat for a
//! UUID. A snapshot written before the floor existed has none: the floor is then taken as
//! [`LEGACY_REVISION_FLOOR`] (2^32), above any count of one device's changes that the old
//! per-device numbering could have reached, so that no ETag handed out before the upgrade
//! matches a device created after it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use super::journal::{Health, Journal, Ticket};
use super::mutation::{self, Mutation, Preconditions, Rejection};
use super::RestartPolicy;
use crate::control::fleet_file::DeviceEntry;
use crate::fleet::Fleet;

/// What start-up found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Devices restored from the snapshot.
    pub from_snapshot: usize,
    /// Journal records replayed after it.
    pub replayed: usize,
    /// A torn journal tail that was discarded (the last record cut short: never acknowledged).
    pub torn_tail: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotDevice {
    device: DeviceEntry,
    revision: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    devices: Vec<SnapshotDevice>,
    /// The revision floor; absent in snapshots written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision_floor: Option<u64>,
}

/// The revision floor of a store whose snapshot predates it (see the [module docs](self)).
pub const LEGACY_REVISION_FLOOR: u64 = 1 << 32;

/// Snapshot (and compact the journal) after this many records.
const SNAPSHOT_EVERY_RECORDS: u64 = 10_000;
/// ... or this many journal bytes.
const SNAPSHOT_EVERY_BYTES: u64 = 256 << 20;

/// The fleet and its journal; see the [module docs](self).
#[derive(Debug)]
pub struct Store {
    fleet: Arc<Fleet>,
    journal: Option<Journal>,
    lock: Mutex<Queue>,
    /// Signalled when queued changes are applied (or dropped).
    settled: Condvar,
    /// The revision floor (changed only under `lock`, when a change is applied).
    floor: AtomicU64,
    /// Microseconds from receiving a change to it being visible to the data path.
    visible: Mutex<hdrhistogram::Histogram<u64>>,
}

/// Journaled changes not yet applied, in journal order; see the [module docs](self).
#[derive(Debug, Default)]
struct Queue {
    queued: VecDeque<Queued>,
    /// How many queued changes touch each device.
    touched: HashMap<Uuid, usize>,
    /// Upserts queued: at most this many devices will be added.
    upserts: usize,
    /// Results of applied changes whose callers have not collected them yet.
    results: HashMap<Ticket, Result<Vec<(Uuid, u64)>, Rejection>>,
}

#[derive(Debug)]
struct Queued {
    ticket: Ticket,
    batch: Vec<Mutation>,
    received: Instant,
}

fn uuid_of(m: &Mutation) -> &Uuid {
    match m {
        Mutation::Upsert { device } => &device.uuid,
        Mutation::Patch { uuid, .. } | Mutation::Delete { uuid } => uuid,
    }
}

fn upserts(batch: &[Mutation]) -> usize {
    batch.iter().filter(|m| matches!(m, Mutation::Upsert { .. })).count()
}

fn histogram() -> hdrhistogram::Histogram<u64> {
    // 1 us .. 1 h at 3 significant digits; the bounds are constants, so this cannot fail.
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl Store {
    /// A store without a journal: changes are applied but not durable (tests, `demo`).
    pub fn in_memory(fleet: Arc<Fleet>) -> Store {
        Store {
            fleet,
            journal: None,
            lock: Mutex::default(),
            settled: Condvar::new(),
            floor: AtomicU64::new(0),
            visible: Mutex::new(histogram()),
        }
    }

    /// Opens the journal in `dir`, restores the fleet from it, and applies the restart policy.
    /// When the journal is empty and `seed` is given (a fleet file), the seed is applied and
    /// journaled as the first record.
    ///
    /// # Errors
    /// A journal that cannot be opened, or records that do not replay (refuse to start rather
    /// than serve a fleet that differs from what was acknowledged).
    pub fn open(
        dir: &Path,
        fleet: Arc<Fleet>,
        policy: RestartPolicy,
        seed: Option<Vec<Mutation>>,
    ) -> Result<(Store, Recovery), String> {
        let (journal, loaded) =
            Journal::open(dir).map_err(|e| format!("journal {}: {e}", dir.display()))?;
        let mut recovery = Recovery::default();
        let mut floor = 0;
        if let Some(tail) = &loaded.torn_tail {
            let text = format!(
                "discarded {} bytes at offset {} ({})",
                tail.discarded_bytes, tail.offset, tail.reason
            );
            warn!(journal = %dir.display(), "torn journal tail: {text}");
            recovery.torn_tail = Some(text);
        }
        if let Some(bytes) = &loaded.snapshot {
            let body: SnapshotBody =
                serde_json::from_slice(bytes).map_err(|e| format!("snapshot: {e}"))?;
            for d in &body.devices {
                let (record, state) = d.device.to_record().map_err(|e| format!("snapshot: {e}"))?;
                fleet.upsert(record, state).map_err(|e| format!("snapshot: {e}"))?;
                fleet.restore_revision(&d.device.uuid, d.revision).map_err(|e| e.to_string())?;
            }
            recovery.from_snapshot = body.devices.len();
            floor = body.revision_floor.unwrap_or(LEGACY_REVISION_FLOOR);
        }
        for (i, record) in loaded.records.iter().enumerate() {
            let batch: Vec<Mutation> =
                serde_json::from_slice(record).map_err(|e| format!("journal record {i}: {e}"))?;
            mutation::apply(&fleet, &batch, &mut floor)
                .map_err(|e| format!("journal record {i}: {e}"))?;
        }
        recovery.replayed = loaded.records.len();
        let empty = loaded.snapshot.is_none() && loaded.records.is_empty();
        let store = Store {
            fleet,
            journal: Some(journal),
            lock: Mutex::default(),
            settled: Condvar::new(),
            floor: AtomicU64::new(floor),
            visible: Mutex::new(histogram()),
        };
        if policy == RestartPolicy::FailClosed && !empty {
            store.fleet.mark_all_unknown();
        }
        if let (true, Some(seed)) = (empty, seed) {
            store.mutate(seed, &[]).map_err(|e| format!("fleet file: {e}"))?;
        }
        info!(
            devices = store.fleet.len(),
            from_snapshot = recovery.from_snapshot,
            replayed = recovery.replayed,
            ?policy,
            "fleet restored"
        );
        Ok((store, recovery))
    }

    /// The fleet.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Whether changes are journaled.
    pub fn is_durable(&self) -> bool {
        self.journal.is_some()
    }

    /// Checks (`conditions[i]` are change `i`'s, see [`mutation::check`]), journals and (when
    /// durable) waits for the disk, then applies; returns each touched device's new revision.
    /// Nothing changes when the batch is refused or the journal fails.
    ///
    /// # Errors
    /// The refused change ([`Rejection`], 4xx), or 503 naming the journal when it cannot make
    /// the change durable (nothing changed; the next call retries the journal).
    pub fn mutate(
        &self,
        batch: Vec<Mutation>,
        conditions: &[Preconditions],
    ) -> Result<Vec<(Uuid, u64)>, Rejection> {
        self.mutate_in(batch, conditions, Vec::new())
    }

    /// [`Store::mutate`], writing the journal's record into `buffer` (a batch call passes its
    /// request body's, already resident): a buffer freed and another taken would hold both
    /// sizes at once whenever the allocator keeps the freed one (issue 13).
    ///
    /// # Errors
    /// As [`Store::mutate`].
    pub fn mutate_in(
        &self,
        batch: Vec<Mutation>,
        conditions: &[Preconditions],
        buffer: Vec<u8>,
    ) -> Result<Vec<(Uuid, u64)>, Rejection> {
        let received = Instant::now();
        let mut queue = self.lock.lock();
        let Some(journal) = &self.journal else {
            drop(buffer);
            mutation::check(&self.fleet, &batch, conditions)?;
            let revisions = self.apply(&batch)?;
            self.record_visible(received);
            return Ok(revisions);
        };
        // Wait for the queued changes this one's check depends on (module docs).
        let adds = upserts(&batch);
        while batch.iter().any(|m| queue.touched.contains_key(uuid_of(m)))
            || (!queue.queued.is_empty()
                && self.fleet.len() + queue.upserts + adds > self.fleet.capacity())
        {
            self.settled.wait(&mut queue);
        }
        mutation::check(&self.fleet, &batch, conditions)?;
        // Measured, then written into the journal's own buffer of that size, which the journal
        // keeps without a copy: a growing buffer is copied as it doubles, which holds a 30 MB
        // record up to twice (issue 13).
        let encode = |e: serde_json::Error| Rejection::new(500, "body", e.to_string());
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, &batch).map_err(encode)?;
        let mut payload = Journal::record_buffer_in(buffer, size.0);
        serde_json::to_writer(&mut payload, &batch).map_err(encode)?;
        // After a failure, the journal must verify itself before it takes anything new.
        journal.recover().map_err(|e| not_durable(&e))?;
        let ticket = journal.append_buffer(payload).map_err(|e| not_durable(&e))?;
        for m in &batch {
            *queue.touched.entry(*uuid_of(m)).or_default() += 1;
        }
        queue.upserts += adds;
        queue.queued.push_back(Queued { ticket, batch, received });
        let durable = MutexGuard::unlocked(&mut queue, || journal.wait_durable(ticket));
        self.settle(&mut queue, journal);
        let result = match durable {
            // Every change before this one is settled too: durable ones before a durable one,
            // and any one before a failed one (its batch ended its epoch).
            Ok(()) => queue.results.remove(&ticket).unwrap_or_else(|| {
                Err(Rejection::new(500, "journal", "a durable change was not applied"))
            }),
            Err(e) => Err(not_durable(&e)),
        };
        if queue.queued.is_empty() {
            self.maybe_snapshot();
        }
        result
    }

    /// Applies the queued changes whose records are durable, in journal order, and drops those
    /// whose records failed, up to the first still pending.
    fn settle(&self, queue: &mut Queue, journal: &Journal) {
        let mut changed = false;
        while let Some(front) = queue.queued.front() {
            let Some(durable) = journal.status(front.ticket) else { break };
            let Some(q) = queue.queued.pop_front() else { break };
            if durable {
                let result = self.apply(&q.batch);
                self.record_visible(q.received);
                queue.results.insert(q.ticket, result);
            }
            for m in &q.batch {
                let uuid = uuid_of(m);
                if let Some(n) = queue.touched.get_mut(uuid) {
                    *n -= 1;
                    if *n == 0 {
                        queue.touched.remove(uuid);
                    }
                }
            }
            queue.upserts -= upserts(&q.batch);
            changed = true;
        }
        if changed {
            self.settled.notify_all();
        }
    }

    /// Applies a checked batch, raising the revision floor at its deletes. Called under `lock`.
    fn apply(&self, batch: &[Mutation]) -> Result<Vec<(Uuid, u64)>, Rejection> {
        let mut floor = self.floor.load(Ordering::Acquire);
        let revisions = mutation::apply(&self.fleet, batch, &mut floor)?;
        self.floor.store(floor, Ordering::Release);
        Ok(revisions)
    }

    fn record_visible(&self, received: Instant) {
        let visible = received.elapsed().as_micros() as u64;
        let _ = self.visible.lock().record(visible.max(1));
    }

    /// The journal's state (`None` in memory).
    pub fn journal_health(&self) -> Option<Health> {
        self.journal.as_ref().map(Journal::health)
    }

    /// The update-to-visible histogram (microseconds).
    pub fn visible_latency(&self) -> hdrhistogram::Histogram<u64> {
        self.visible.lock().clone()
    }

    /// Every device as fleet-file entries, with revisions (export and snapshots).
    pub fn export(&self) -> Vec<(DeviceEntry, u64)> {
        self.fleet
            .ids_from(0)
            .filter_map(|id| {
                let record = self.fleet.record(id)?;
                let state = self.fleet.word(id).state();
                Some((DeviceEntry::from_record(&record, state), self.fleet.revision(id)))
            })
            .collect()
    }

    fn maybe_snapshot(&self) {
        let Some(journal) = &self.journal else { return };
        if journal.records_since_snapshot() < SNAPSHOT_EVERY_RECORDS
            && journal.bytes_since_snapshot() < SNAPSHOT_EVERY_BYTES
        {
            return;
        }
        self.snapshot(journal);
    }

    /// Writes a snapshot of the fleet and the revision floor, compacting the journal.
    fn snapshot(&self, journal: &Journal) {
        let body = SnapshotBody {
            devices: self
                .export()
                .into_iter()
                .map(|(device, revision)| SnapshotDevice { device, revision })
                .collect(),
            revision_floor: Some(self.floor.load(Ordering::Acquire)),
        };
        match serde_json::to_vec(&body) {
            Ok(bytes) => {
                if let Err(e) = journal.write_snapshot(&bytes) {
                    warn!(error = %e, "snapshot failed; the journal keeps every record");
                }
            }
            Err(e) => warn!(error = %e, "snapshot encoding failed"),
        }
    }
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn not_durable(e: &dyn std::fmt::Display) -> Rejection {
    warn!(error = %e, "journal failed: the change was refused, nothing changed");
    Rejection::new(
        503,
        "journal",
        format!("the change could not be made durable, nothing changed: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::control::fleet_file::demo_fleet;
    use crate::control::mutation::PatchBody;

    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(dir: &Path) -> Store {
        let fleet = Arc::new(Fleet::with_capacity(64));
        Store::open(dir, fleet, RestartPolicy::Resume, None).unwrap().0
    }

    fn state(store: &Store, uuid: &Uuid) -> Option<(u64, Option<u8>)> {
        let id = store.fleet.lookup(uuid)?;
        let dos = store.fleet.word(id).state().map(|s| s.dos as u8);
        Some((store.fleet.revision(id), dos))
    }

    /// A change whose journal write or fsync fails changes nothing, in memory or on disk; the
    /// next change recovers the journal without a restart; no device becomes unknown.
    #[test]
    fn test_failed_journal_changes_nothing_then_recovers() {
        let dir = TempDir(std::env::temp_dir().join(format!("doxm-store-{}", std::process::id())));
        let devices = demo_fleet(3).device;
        let store = open(&dir.0);
        let upserts = devices.iter().map(|d| Mutation::Upsert { device: d.clone() }).collect();
        store.mutate(upserts, &[]).unwrap();
        let (a, b) = (devices[1].uuid, devices[2].uuid);
        let before = (state(&store, &a), state(&store, &b));
        let rfpro = || PatchBody { dos: Some(3), owned: Some(true), ..PatchBody::default() };
        let faults = store.journal.as_ref().unwrap().faults();
        for (write, sync) in [(true, false), (false, true)] {
            faults.fail_writes(write);
            faults.fail_syncs(sync);
            let patch = vec![Mutation::Patch { uuid: a, patch: rfpro() }];
            let refused = store.mutate(patch, &[]).unwrap_err();
            assert_eq!((refused.status, refused.field.as_str()), (503, "journal"));
            let refused = store.mutate(vec![Mutation::Delete { uuid: b }], &[]).unwrap_err();
            assert_eq!(refused.status, 503);
            assert_eq!((state(&store, &a), state(&store, &b)), before, "nothing changed");
            assert!(store.fleet.word(store.fleet.lookup(&a).unwrap()).state().is_some());
            assert!(!store.journal_health().unwrap().writable);
        }
        faults.fail_writes(false);
        faults.fail_syncs(false);
        let revisions =
            store.mutate(vec![Mutation::Patch { uuid: a, patch: rfpro() }], &[]).unwrap();
        assert_eq!(revisions, [(a, before.0.unwrap().0 + 1)]);
        assert!(store.journal_health().unwrap().writable);
        let after = (state(&store, &a), state(&store, &b));
        drop(store);
        let reopened = open(&dir.0);
        assert_eq!((state(&reopened, &a), state(&reopened, &b)), after);
        assert_eq!(reopened.fleet.len(), 4);
    }

    /// Concurrent callers, some on the same devices: every change is applied in journal order
    /// (a restart replays to the same fleet), and callers still share fsyncs.
    #[test]
    fn test_concurrent_changes_share_fsyncs_and_replay_identically() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("doxm-store-conc-{}", std::process::id())));
        let devices = demo_fleet(8).device;
        let store = Arc::new(open(&dir.0));
        let upserts = devices.iter().map(|d| Mutation::Upsert { device: d.clone() }).collect();
        store.mutate(upserts, &[]).unwrap();
        // First, deterministically: while one leader is held before its write, 7 callers on
        // other devices queue up behind it; they all go out with the next leader (2 fsyncs).
        let journal = || store.journal.as_ref().unwrap();
        let before = journal().syncs();
        let hold = journal().faults().hold();
        let patch_on = |store: &Arc<Store>, uuid: Uuid, dos: u8| {
            let patch = PatchBody { dos: Some(dos), owned: Some(dos >= 2), ..PatchBody::default() };
            store.mutate(vec![Mutation::Patch { uuid, patch }], &[]).unwrap();
        };
        let queued: Vec<_> = (1..=8)
            .map(|d| {
                let (store, uuid) = (Arc::clone(&store), devices[d].uuid);
                std::thread::spawn(move || patch_on(&store, uuid, 3))
            })
            .collect();
        while journal().records_since_snapshot() < 9 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(state(&store, &devices[1].uuid).unwrap().0, 1, "nothing visible before durable");
        drop(hold);
        for t in queued {
            t.join().unwrap();
        }
        assert_eq!(journal().syncs(), before + 2);
        // Then freely, half the threads on the same two devices.
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                let uuids: Vec<Uuid> = devices.iter().map(|d| d.uuid).collect();
                std::thread::spawn(move || {
                    for i in 0..40usize {
                        let d = if t % 2 == 0 { 1 + i % 2 } else { 3 + t / 2 };
                        patch_on(&store, uuids[d], [1u8, 2, 3][(i + t) % 3]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let live: Vec<_> = devices.iter().map(|d| state(&store, &d.uuid)).collect();
        assert_eq!(live[1].unwrap().0, 2 + 80, "every change to device 1 applied once");
        drop(store);
        let reopened = open(&dir.0);
        let replayed: Vec<_> = devices.iter().map(|d| state(&reopened, &d.uuid)).collect();
        assert_eq!(replayed, live);
    }
}

#[cfg(test)]
mod revision_tests {
    //! Revisions and conditions (the revision floor, RFC 9110 preconditions).
    use super::*;
    use crate::control::fleet_file::demo_fleet;
    use crate::control::mutation::{PatchBody, TagCondition};

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("doxm-store-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(dir: &TempDir) -> Store {
        let fleet = Arc::new(Fleet::with_capacity(64));
        Store::open(&dir.0, fleet, RestartPolicy::Resume, None).unwrap().0
    }

    fn revision(store: &Store, uuid: &Uuid) -> u64 {
        store.fleet.revision(store.fleet.lookup(uuid).unwrap())
    }

    fn if_match(revision: u64) -> Preconditions {
        Preconditions { if_match: Some(TagCondition::revision(revision)), if_none_match: None }
    }

    /// Creates `device`, changes it twice, deletes it: returns its last revision (3).
    fn three_revisions_then_delete(store: &Store, device: &DeviceEntry) -> u64 {
        let uuid = device.uuid;
        store.mutate(vec![Mutation::Upsert { device: device.clone() }], &[]).unwrap();
        for _ in 0..2 {
            let patch = PatchBody { doc_open: Some(true), ..PatchBody::default() };
            store.mutate(vec![Mutation::Patch { uuid, patch }], &[]).unwrap();
        }
        let last = revision(store, &uuid);
        store.mutate(vec![Mutation::Delete { uuid }], &[]).unwrap();
        last
    }

    fn stale_tags_fail(store: &Store, uuid: Uuid, up_to: u64) {
        for stale in 1..=up_to {
            let patch = PatchBody::default();
            let r = store
                .mutate(vec![Mutation::Patch { uuid, patch }], &[if_match(stale)])
                .unwrap_err();
            assert_eq!((r.status, r.field.as_str()), (412, "If-Match"), "{stale}: {r}");
        }
    }

    #[test]
    fn test_revisions_never_repeat_across_delete_recreate_snapshot_and_restart() {
        let dir = TempDir::new("floor");
        let device = demo_fleet(1).device[1].clone();
        let uuid = device.uuid;
        let store = open(&dir);
        let last = three_revisions_then_delete(&store, &device);
        assert_eq!(last, 3);
        // Re-created: above every revision the deleted device had.
        store.mutate(vec![Mutation::Upsert { device: device.clone() }], &[]).unwrap();
        assert_eq!(revision(&store, &uuid), 4);
        stale_tags_fail(&store, uuid, 3);
        // Replayed from the journal: the same revisions, and the same floor.
        drop(store);
        let store = open(&dir);
        assert_eq!(revision(&store, &uuid), 4);
        store.mutate(vec![Mutation::Delete { uuid }], &[]).unwrap();
        // From a snapshot, which keeps the floor though the device is gone.
        store.snapshot(store.journal.as_ref().unwrap());
        drop(store);
        let store = open(&dir);
        assert_eq!(store.fleet.len(), 0);
        store.mutate(vec![Mutation::Upsert { device: device.clone() }], &[]).unwrap();
        assert_eq!(revision(&store, &uuid), 5);
        stale_tags_fail(&store, uuid, 4);
    }

    #[test]
    fn test_snapshot_without_floor_is_read_with_the_legacy_floor() {
        let dir = TempDir::new("legacy");
        let device = demo_fleet(1).device[1].clone();
        let store = open(&dir);
        three_revisions_then_delete(&store, &device);
        let bridge = demo_fleet(1).device[0].clone();
        store.mutate(vec![Mutation::Upsert { device: bridge.clone() }], &[]).unwrap();
        // A snapshot as the gate wrote it before revision floors existed.
        let body = SnapshotBody {
            devices: vec![SnapshotDevice { device: bridge.clone(), revision: 1 }],
            revision_floor: None,
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("revision_floor"));
        store.journal.as_ref().unwrap().write_snapshot(&bytes).unwrap();
        drop(store);
        let store = open(&dir);
        assert_eq!(revision(&store, &bridge.uuid), 1, "old revisions are kept");
        store.mutate(vec![Mutation::Upsert { device: device.clone() }], &[]).unwrap();
        assert_eq!(revision(&store, &device.uuid), LEGACY_REVISION_FLOOR + 1);
    }

    #[test]
    fn test_conditions_are_checked_with_the_change() {
        let store = Store::in_memory(Arc::new(Fleet::with_capacity(8)));
        let device = demo_fleet(1).device[1].clone();
        let uuid = device.uuid;
        let create_only = Preconditions { if_match: None, if_none_match: Some(TagCondition::Any) };
        let upsert = || vec![Mutation::Upsert { device: device.clone() }];
        store.mutate(upsert(), std::slice::from_ref(&create_only)).unwrap();
        let r = store.mutate(upsert(), std::slice::from_ref(&create_only)).unwrap_err();
        assert_eq!((r.status, r.field.as_str()), (412, "If-None-Match"), "{r}");
        let any = Preconditions { if_match: Some(TagCondition::Any), if_none_match: None };
        store.mutate(upsert(), std::slice::from_ref(&any)).unwrap();
        assert_eq!(revision(&store, &uuid), 2);
        let delete = || vec![Mutation::Delete { uuid }];
        let r = store.mutate(delete(), &[if_match(1)]).unwrap_err();
        assert_eq!((r.status, r.field.as_str()), (412, "If-Match"), "{r}");
        store.mutate(delete(), &[if_match(2)]).unwrap();
        // If-Match: * of a device that does not exist: a PUT is 412, a DELETE 404.
        let r = store.mutate(upsert(), std::slice::from_ref(&any)).unwrap_err();
        assert_eq!((r.status, r.field.as_str()), (412, "If-Match"), "{r}");
        let r = store.mutate(delete(), std::slice::from_ref(&any)).unwrap_err();
        assert_eq!((r.status, r.field.as_str()), (404, "uuid"), "{r}");
        assert!(store.fleet.lookup(&uuid).is_none());
    }
}
