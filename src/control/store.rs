//! The durable fleet: every acknowledged change is in the journal before it is acknowledged.
//!
//! A change goes: check (all of the batch) -> apply to the fleet and append to the journal,
//! both under one lock so the journal's order is the order of application -> release the lock
//! -> wait until the record is on disk (group commit: concurrent callers share one fsync) ->
//! acknowledge. A crash before the fsync loses a change nobody was told about; a crash after it
//! loses nothing, because start-up replays the snapshot and the journal.
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

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use super::journal::Journal;
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
    /// A torn or corrupt journal tail that was discarded (never acknowledged), described.
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
    lock: Mutex<()>,
    /// The revision floor (changed only under `lock`).
    floor: AtomicU64,
    /// Microseconds from receiving a change to it being visible to the data path.
    visible: Mutex<hdrhistogram::Histogram<u64>>,
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
            lock: Mutex::new(()),
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
            lock: Mutex::new(()),
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

    /// Checks (`conditions[i]` are change `i`'s, see [`mutation::check`]), applies, journals and
    /// (when durable) waits for the disk; returns each touched device's new revision. Nothing
    /// changes when the batch is refused.
    ///
    /// # Errors
    /// The refused change ([`Rejection`], 4xx), or 503 when the journal cannot make it durable
    /// (the fleet then fails closed: every state becomes unknown).
    pub fn mutate(
        &self,
        batch: Vec<Mutation>,
        conditions: &[Preconditions],
    ) -> Result<Vec<(Uuid, u64)>, Rejection> {
        let received = Instant::now();
        let (revisions, ticket) = {
            let _guard = self.lock.lock();
            mutation::check(&self.fleet, &batch, conditions)?;
            let payload = serde_json::to_vec(&batch)
                .map_err(|e| Rejection::new(500, "body", e.to_string()))?;
            // Apply first: the journal must only ever hold records that replay. If the append
            // then fails, the change is visible but not acknowledged, and the fleet fails closed.
            let mut floor = self.floor.load(Ordering::Acquire);
            let revisions = mutation::apply(&self.fleet, &batch, &mut floor)?;
            self.floor.store(floor, Ordering::Release);
            let ticket = match &self.journal {
                Some(journal) => Some(journal.append(&payload).map_err(|e| self.not_durable(&e))?),
                None => None,
            };
            self.maybe_snapshot();
            (revisions, ticket)
        };
        let visible = received.elapsed().as_micros() as u64;
        let _ = self.visible.lock().record(visible.max(1));
        if let (Some(journal), Some(ticket)) = (&self.journal, ticket) {
            journal.wait_durable(ticket).map_err(|e| self.not_durable(&e))?;
        }
        Ok(revisions)
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

    fn not_durable(&self, e: &dyn std::fmt::Display) -> Rejection {
        warn!(error = %e, "journal failed: failing closed (every device state unknown)");
        self.fleet.mark_all_unknown();
        Rejection::new(503, "journal", format!("the change could not be made durable: {e}"))
    }
}

#[cfg(test)]
mod tests {
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
