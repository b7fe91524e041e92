//! The durable fleet: every acknowledged change is in the journal before it is acknowledged.
//!
//! A change goes, under one lock: check (all of the batch) -> append to the journal -> wait
//! until the record is on disk -> apply to the fleet -> acknowledge. So a change is visible
//! (to `GET`, and to the data path that answers discovery) only once it is durable, and the
//! journal's order is the order of application. A crash before the fsync loses a change nobody
//! was told about; a crash after it loses nothing, because start-up replays the snapshot and
//! the journal.
//!
//! When the journal cannot write (disk full, I/O error), the call gets a 503 naming the journal
//! and nothing changed, neither in memory nor on disk: the fleet keeps serving what was
//! acknowledged (no device is forced to unknown). The next change first asks the journal to
//! recover ([`Journal::recover`]: reopen, truncate to the last durable batch, verify, continue),
//! so the gate heals without a restart once space returns; until then every change gets 503 and
//! `/healthz` says why.
//!
//! The price of "visible only once durable": changes are serialised through their fsync, so
//! concurrent API calls no longer share one (the journal still groups concurrent appenders; the
//! store no longer has any). Applying first and undoing on failure would keep the sharing but
//! show readers, for an fsync's time, changes that may then vanish.
//!
//! Restart policy: `fail-closed` (the default) brings every device back with its registry data
//! but an unknown state, so nothing answers until the bridge reports it again; `resume` keeps the
//! recovered states.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use super::journal::{Health, Journal};
use super::mutation::{self, Mutation, Rejection};
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
}

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
        Store { fleet, journal: None, lock: Mutex::new(()), visible: Mutex::new(histogram()) }
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
        }
        for (i, record) in loaded.records.iter().enumerate() {
            let batch: Vec<Mutation> =
                serde_json::from_slice(record).map_err(|e| format!("journal record {i}: {e}"))?;
            mutation::apply(&fleet, &batch).map_err(|e| format!("journal record {i}: {e}"))?;
        }
        recovery.replayed = loaded.records.len();
        let empty = loaded.snapshot.is_none() && loaded.records.is_empty();
        let store = Store {
            fleet,
            journal: Some(journal),
            lock: Mutex::new(()),
            visible: Mutex::new(histogram()),
        };
        if policy == RestartPolicy::FailClosed && !empty {
            store.fleet.mark_all_unknown();
        }
        if let (true, Some(seed)) = (empty, seed) {
            store.mutate(seed, None).map_err(|e| format!("fleet file: {e}"))?;
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

    /// Checks, journals and (when durable) waits for the disk, then applies; returns each
    /// touched device's new revision. Nothing changes when the batch is refused or the journal
    /// fails.
    ///
    /// # Errors
    /// The refused change ([`Rejection`], 4xx), or 503 naming the journal when it cannot make
    /// the change durable (nothing changed; the next call retries the journal).
    pub fn mutate(
        &self,
        batch: Vec<Mutation>,
        expected_revision: Option<u64>,
    ) -> Result<Vec<(Uuid, u64)>, Rejection> {
        let received = Instant::now();
        let _guard = self.lock.lock();
        mutation::check(&self.fleet, &batch, expected_revision)?;
        if let Some(journal) = &self.journal {
            let payload = serde_json::to_vec(&batch)
                .map_err(|e| Rejection::new(500, "body", e.to_string()))?;
            // After a failure, the journal must verify itself before it takes anything new.
            journal.recover().map_err(|e| not_durable(&e))?;
            let ticket = journal.append(&payload).map_err(|e| not_durable(&e))?;
            journal.wait_durable(ticket).map_err(|e| not_durable(&e))?;
        }
        // Checked under the same lock, so this cannot fail; were it to, the journal would hold a
        // record that does not replay, and the next start would say so.
        let revisions = mutation::apply(&self.fleet, &batch)?;
        let visible = received.elapsed().as_micros() as u64;
        let _ = self.visible.lock().record(visible.max(1));
        self.maybe_snapshot();
        Ok(revisions)
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
        let body = SnapshotBody {
            devices: self
                .export()
                .into_iter()
                .map(|(device, revision)| SnapshotDevice { device, revision })
                .collect(),
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
        store.mutate(upserts, None).unwrap();
        let (a, b) = (devices[1].uuid, devices[2].uuid);
        let before = (state(&store, &a), state(&store, &b));
        let rfpro = || PatchBody { dos: Some(3), owned: Some(true), ..PatchBody::default() };
        let faults = store.journal.as_ref().unwrap().faults();
        for (write, sync) in [(true, false), (false, true)] {
            faults.fail_writes(write);
            faults.fail_syncs(sync);
            let patch = vec![Mutation::Patch { uuid: a, patch: rfpro() }];
            let refused = store.mutate(patch, None).unwrap_err();
            assert_eq!((refused.status, refused.field.as_str()), (503, "journal"));
            let refused = store.mutate(vec![Mutation::Delete { uuid: b }], None).unwrap_err();
            assert_eq!(refused.status, 503);
            assert_eq!((state(&store, &a), state(&store, &b)), before, "nothing changed");
            assert!(store.fleet.word(store.fleet.lookup(&a).unwrap()).state().is_some());
            assert!(!store.journal_health().unwrap().writable);
        }
        faults.fail_writes(false);
        faults.fail_syncs(false);
        let revisions =
            store.mutate(vec![Mutation::Patch { uuid: a, patch: rfpro() }], None).unwrap();
        assert_eq!(revisions, [(a, before.0.unwrap().0 + 1)]);
        assert!(store.journal_health().unwrap().writable);
        let after = (state(&store, &a), state(&store, &b));
        drop(store);
        let reopened = open(&dir.0);
        assert_eq!((state(&reopened, &a), state(&reopened, &b)), after);
        assert_eq!(reopened.fleet.len(), 4);
    }
}
