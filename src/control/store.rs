//! The durable fleet: every acknowledged change is in the journal before it is acknowledged.
//!
//! A change goes: under the store's lock, check (all of the batch), plan its revisions
//! ([`mutation::plan`]) and append it with them to the journal and to a queue of journaled
//! changes -> release the lock -> wait until the record is on disk (group commit: concurrent
//! callers share one fsync) -> under the lock again, apply every queued change whose record is
//! durable, in journal order -> acknowledge. So a change is visible (to `GET`, and to the data
//! path that answers discovery) only once it is durable, and the order of application is the
//! journal's. A crash before the fsync loses a change nobody was told about; a crash after it
//! loses nothing, because start-up replays the snapshot and the journal.
//!
//! A change is checked against the fleet while earlier changes may still be queued. So that the
//! check holds when it is applied after them (and on replay), a change that touches a device
//! some queued change touches, or that could overflow the fleet's capacity together with the
//! queued upserts, waits until those are applied before it is checked. (A check reads only the
//! devices of its batch and the fleet's size; a plan reads the same and the revision floor,
//! which queued deletes raise when they are planned.)
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
//! # Snapshots off the lock
//!
//! A snapshot of a million devices takes seconds to encode and write; under the store's lock
//! every change would wait that long (713 ms at 100k devices). So a snapshot is *fuzzy*:
//!
//! 1. When the queue is empty (every journaled record is applied) and enough has been journaled
//!    since the last one, the store takes the journal's [`Position`] `P` under its lock, and a
//!    background thread takes over: changes go on.
//! 2. The thread reads the fleet in chunks of [`SNAPSHOT_CHUNK`] devices, holding the lock for
//!    one chunk at a time (so each device is read whole, between two batches), and streams them
//!    into the snapshot ([`Journal::begin_snapshot`]), which covers the records up to `P`. Each
//!    device is read as it is when its chunk is read: with none, some or all of the changes
//!    after `P`.
//! 3. The journal installs the snapshot and drops the records up to `P`, keeping every record
//!    after it (`journal::snapshot`); only that last swap holds the journal's files, briefly.
//!
//! Restoring replays the records after `P` over that mixed state, *idempotently by revision*:
//! each record holds the revision every change of it gave its device (planned before it was
//! journaled), and a change is applied only where the device is not already at that revision or
//! a later one ([`mutation::apply_planned`] has the rule). Why the result is the fleet as it was
//! acknowledged, device by device:
//!
//! - A UUID's revisions strictly grow over its whole history: a change is one above the last, a
//!   device created (again) starts above the floor, which is at least the revision every deleted
//!   device had. A delete carries the revision its device had (the last change before it).
//! - Say the changes to a device after `P` are `e1 .. ek` (revisions `r1 < .. < rk`), and its
//!   chunk was read between `ej` and `ej+1`. If the snapshot holds it at `rj` (`ej` was no
//!   delete), every `ei` with `i <= j` is skipped (an upsert or patch has `ri <= rj`, a delete
//!   `ri < rj`) and every later one applies, each on the state it was made on, which is exactly
//!   where the live fleet went. If the snapshot has no such device, `ej` was a delete (or
//!   `j = 0` and it did not exist at `P`): replaying `e1 .. ej` on an absent device recreates
//!   nothing that `ej`, whose revision is at least each of theirs, does not delete again; the
//!   rest applies from the absent device, as live. A patch of an absent device is skipped: a
//!   replayed upsert recreates the device first whenever the live one existed.
//! - A device whose chunk was read twice (deleted, then created again in a slot the scan had
//!   not reached yet) is in the snapshot twice; the higher revision, the later state, wins.
//! - Capacity: replayed as above, the fleet could at some point hold more devices than the live
//!   one ever did (a device created after `P` is in the snapshot from the start of the replay,
//!   next to one deleted after `P`), and a full fleet would refuse a create the live one
//!   accepted. So before the replay, every device that the records upsert at or below the
//!   revision the snapshot holds it at is forgotten: its incarnation was created after `P`, and
//!   replaying from an absent device rebuilds it from its first upsert on (patches and deletes
//!   before it are skipped, everything after applies). What remains of the snapshot existed at
//!   `P` and until its chunk was read, so at every record the replayed fleet holds no device
//!   the live one did not.
//! - A batch is applied under the lock, so no chunk sees half of one; its changes are replayed
//!   one by one with the same rule (a device touched twice in a batch has two revisions).
//! - The floor is read when the snapshot starts (every delete up to `P` is in it) and raised by
//!   every replayed delete, applied or skipped.
//!
//! So an acknowledged change is never lost, a deleted device never comes back, and no device
//! comes back older than it was acknowledged (an owned device never returns unowned, which would
//! make it answer discovery). The property test `replay_is_idempotent` checks it over random
//! histories and random chunk interleavings, and the crash tests stop the gate at every stage.
//! A crash at any point of a snapshot leaves the previous snapshot with the whole journal, or the
//! new one with the records after `P` (see `journal::snapshot`).
//!
//! Journal records written before revisions were planned (a JSON array of changes rather than
//! an object) are replayed by planning them on the spot, which is right because they follow an
//! exact snapshot (one taken under the lock, named `devices`); a fuzzy snapshot names its
//! devices `fuzzy_devices`, so a gate too old to replay idempotently refuses it instead of
//! misreading it.
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
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use super::journal::{Health, Journal, JournalError, Position, Ticket};
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

/// A snapshot as it is read: exact (`devices`, taken under the lock by older gates) or fuzzy
/// (`fuzzy_devices`, see the [module docs](self)).
#[derive(Debug, Default, Serialize, Deserialize)]
struct SnapshotBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    devices: Option<Vec<SnapshotDevice>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fuzzy_devices: Option<Vec<SnapshotDevice>>,
    /// The revision floor; absent in snapshots written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision_floor: Option<u64>,
}

/// A journal record: a batch and the revisions it gives its devices ([`mutation::plan`]).
#[derive(Debug, Serialize, Deserialize)]
struct Record<R, B> {
    revisions: R,
    batch: B,
}

/// Why a journal record does not replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The record is not a batch.
    #[error("journal record {index}: {error}")]
    Decode {
        /// Its place after the snapshot, from 0.
        index: usize,
        /// What is wrong.
        error: serde_json::Error,
    },
    /// The fleet refuses a change of it.
    #[error("journal record {index}: {rejection}")]
    Apply {
        /// Its place after the snapshot, from 0.
        index: usize,
        /// What the fleet said.
        rejection: Rejection,
    },
    /// A record without revisions after a fuzzy snapshot: it cannot be replayed idempotently
    /// (a gate that predates fuzzy snapshots wrote to this directory after this one did).
    #[error("journal record {index} has no revisions but follows a fuzzy snapshot")]
    LegacyAfterFuzzy {
        /// Its place after the snapshot, from 0.
        index: usize,
    },
}

/// Decodes a journal record: `{"revisions":[..],"batch":[..]}`, or a bare batch (records
/// written before revisions were planned: `None` revisions).
fn decode_record(bytes: &[u8]) -> Result<(Vec<Mutation>, Option<Vec<u64>>), serde_json::Error> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Ok((serde_json::from_slice(bytes)?, None));
    }
    let record: Record<Vec<u64>, Vec<Mutation>> = serde_json::from_slice(bytes)?;
    Ok((record.batch, Some(record.revisions)))
}

/// Replays one record over `fleet` (see the [module docs](self)); `fuzzy`: the state may already
/// hold it, in part or whole.
fn replay(
    fleet: &Fleet,
    index: usize,
    bytes: &[u8],
    floor: &mut u64,
    fuzzy: bool,
) -> Result<(), ReplayError> {
    let (batch, revisions) =
        decode_record(bytes).map_err(|error| ReplayError::Decode { index, error })?;
    let revisions = match revisions {
        Some(revisions) => revisions,
        None if fuzzy => return Err(ReplayError::LegacyAfterFuzzy { index }),
        None => mutation::plan(fleet, &batch, floor),
    };
    mutation::apply_planned(fleet, &batch, &revisions, floor)
        .map_err(|rejection| ReplayError::Apply { index, rejection })?;
    Ok(())
}

/// Forgets, in a state restored from a fuzzy snapshot, every device that `records` upsert at or
/// below the revision the snapshot holds it at: its chunk was read after the record that created
/// it (again), so the replay rebuilds it from that record on (see the [module docs](self)).
/// Returns how many were forgotten.
fn forget_recreated(fleet: &Fleet, records: &[Vec<u8>]) -> Result<usize, ReplayError> {
    let mut first_upsert: HashMap<Uuid, u64> = HashMap::new();
    for (index, bytes) in records.iter().enumerate() {
        let (batch, revisions) =
            decode_record(bytes).map_err(|error| ReplayError::Decode { index, error })?;
        for (m, r) in batch.iter().zip(revisions.unwrap_or_default()) {
            if let Mutation::Upsert { device } = m {
                // Revisions grow in journal order: the first one is the smallest.
                first_upsert.entry(device.uuid).or_insert(r);
            }
        }
    }
    let mut forgotten = 0;
    for (uuid, r) in first_upsert {
        if fleet.lookup(&uuid).is_some_and(|id| fleet.revision(id) >= r) {
            fleet.remove(&uuid).map_err(|e| ReplayError::Apply {
                index: 0,
                rejection: Rejection::new(500, "snapshot", e.to_string()),
            })?;
            forgotten += 1;
        }
    }
    Ok(forgotten)
}

/// Restores a snapshot's device: a fuzzy snapshot may hold a device twice (module docs), the
/// higher revision wins.
fn restore(fleet: &Fleet, d: &SnapshotDevice) -> Result<(), String> {
    if fleet.lookup(&d.device.uuid).is_some_and(|id| fleet.revision(id) >= d.revision) {
        return Ok(());
    }
    let (record, state) = d.device.to_record().map_err(|e| format!("snapshot: {e}"))?;
    fleet.upsert(record, state).map_err(|e| format!("snapshot: {e}"))?;
    fleet.restore_revision(&d.device.uuid, d.revision).map_err(|e| e.to_string())
}

/// The revision floor of a store whose snapshot predates it (see the [module docs](self)).
pub const LEGACY_REVISION_FLOOR: u64 = 1 << 32;

/// Snapshot (and compact the journal) after this many records.
pub const SNAPSHOT_EVERY_RECORDS: u64 = 10_000;
/// ... or this many journal bytes.
const SNAPSHOT_EVERY_BYTES: u64 = 256 << 20;
/// Devices read per hold of the store's lock while a snapshot is taken: about a millisecond.
pub const SNAPSHOT_CHUNK: usize = 2_048;

/// The fleet and its journal; see the [module docs](self).
#[derive(Debug)]
pub struct Store {
    fleet: Arc<Fleet>,
    journal: Option<Arc<Journal>>,
    shared: Arc<Shared>,
    /// Microseconds from receiving a change to it being visible to the data path.
    visible: Mutex<hdrhistogram::Histogram<u64>>,
    /// The snapshot thread, if one was started.
    snapshotter: Mutex<Option<JoinHandle<()>>>,
    /// Records between snapshots ([`SNAPSHOT_EVERY_RECORDS`]; tests lower it).
    snapshot_every: AtomicU64,
}

/// What the store and its snapshot thread share.
#[derive(Debug, Default)]
struct Shared {
    lock: Mutex<Queue>,
    /// Signalled when queued changes are applied (or dropped).
    settled: Condvar,
    /// The revision floor, raised under `lock` when a delete is planned or applied.
    floor: AtomicU64,
    /// A snapshot thread is at work.
    snapshotting: AtomicBool,
    /// The store is being dropped: a running snapshot gives up.
    stopping: AtomicBool,
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
    revisions: Vec<u64>,
    received: Instant,
}

/// Why a snapshot was not written (it is retried after the next records).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The journal refused or failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Encoding a device failed.
    #[error("snapshot encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    Stopped,
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
    fn new(fleet: Arc<Fleet>, journal: Option<Journal>, floor: u64) -> Store {
        Store {
            fleet,
            journal: journal.map(Arc::new),
            shared: Arc::new(Shared { floor: AtomicU64::new(floor), ..Shared::default() }),
            visible: Mutex::new(histogram()),
            snapshotter: Mutex::new(None),
            snapshot_every: AtomicU64::new(SNAPSHOT_EVERY_RECORDS),
        }
    }

    /// A store without a journal: changes are applied but not durable (tests, `demo`).
    pub fn in_memory(fleet: Arc<Fleet>) -> Store {
        Store::new(fleet, None, 0)
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
        let mut fuzzy = false;
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
            fuzzy = body.fuzzy_devices.is_some();
            let devices = match (body.devices, body.fuzzy_devices) {
                (Some(devices), None) | (None, Some(devices)) => devices,
                _ => return Err("snapshot: neither devices nor fuzzy_devices, or both".into()),
            };
            for d in &devices {
                restore(&fleet, d)?;
            }
            recovery.from_snapshot = devices.len();
            floor = body.revision_floor.unwrap_or(LEGACY_REVISION_FLOOR);
        }
        if fuzzy {
            forget_recreated(&fleet, &loaded.records).map_err(|e| e.to_string())?;
        }
        for (i, record) in loaded.records.iter().enumerate() {
            replay(&fleet, i, record, &mut floor, fuzzy).map_err(|e| e.to_string())?;
        }
        recovery.replayed = loaded.records.len();
        let empty = loaded.snapshot.is_none() && loaded.records.is_empty();
        drop(loaded);
        let store = Store::new(fleet, Some(journal), floor);
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

    /// Snapshots after `records` journal records instead of [`SNAPSHOT_EVERY_RECORDS`] (tests
    /// and benches that want many snapshots).
    pub fn snapshot_every(&self, records: u64) {
        self.snapshot_every.store(records.max(1), Ordering::Relaxed);
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
        let shared = &*self.shared;
        let mut queue = shared.lock.lock();
        let Some(journal) = &self.journal else {
            drop(buffer);
            mutation::check(&self.fleet, &batch, conditions)?;
            let mut floor = shared.floor.load(Ordering::Acquire);
            let revisions = mutation::plan(&self.fleet, &batch, &mut floor);
            let result = self.apply(&batch, &revisions);
            self.record_visible(received);
            return result;
        };
        // Wait for the queued changes this one's check depends on (module docs).
        let adds = upserts(&batch);
        while batch.iter().any(|m| queue.touched.contains_key(uuid_of(m)))
            || (!queue.queued.is_empty()
                && self.fleet.len() + queue.upserts + adds > self.fleet.capacity())
        {
            shared.settled.wait(&mut queue);
        }
        mutation::check(&self.fleet, &batch, conditions)?;
        let mut floor = shared.floor.load(Ordering::Acquire);
        let revisions = mutation::plan(&self.fleet, &batch, &mut floor);
        // Measured, then written into the journal's own buffer of that size, which the journal
        // keeps without a copy: a growing buffer is copied as it doubles, which holds a 30 MB
        // record up to twice (issue 13).
        let record = Record { revisions: &revisions, batch: &batch };
        let encode = |e: serde_json::Error| Rejection::new(500, "body", e.to_string());
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, &record).map_err(encode)?;
        let mut payload = Journal::record_buffer_in(buffer, size.0);
        serde_json::to_writer(&mut payload, &record).map_err(encode)?;
        // After a failure, the journal must verify itself before it takes anything new.
        journal.recover().map_err(|e| not_durable(&e))?;
        let ticket = journal.append_buffer(payload).map_err(|e| not_durable(&e))?;
        // Raised now, so that later plans see this batch's deletes (harmless if it fails).
        shared.floor.store(floor, Ordering::Release);
        for m in &batch {
            *queue.touched.entry(*uuid_of(m)).or_default() += 1;
        }
        queue.upserts += adds;
        queue.queued.push_back(Queued { ticket, batch, revisions, received });
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
            self.maybe_snapshot(journal);
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
                let result = self.apply(&q.batch, &q.revisions);
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
            self.shared.settled.notify_all();
        }
    }

    /// Applies a checked and planned batch, raising the revision floor at its deletes. Called
    /// under `lock`; live, nothing may be skipped (the plan was made on this state).
    fn apply(&self, batch: &[Mutation], revisions: &[u64]) -> Result<Vec<(Uuid, u64)>, Rejection> {
        let mut floor = self.shared.floor.load(Ordering::Acquire);
        let applied = mutation::apply_planned(&self.fleet, batch, revisions, &mut floor)?;
        self.shared.floor.fetch_max(floor, Ordering::AcqRel);
        if applied.skipped > 0 {
            return Err(Rejection::new(
                500,
                "journal",
                format!("{} changes of a durable batch did not apply", applied.skipped),
            ));
        }
        Ok(applied.revisions)
    }

    fn record_visible(&self, received: Instant) {
        let visible = received.elapsed().as_micros() as u64;
        let _ = self.visible.lock().record(visible.max(1));
    }

    /// The journal's state (`None` in memory).
    pub fn journal_health(&self) -> Option<Health> {
        self.journal.as_deref().map(Journal::health)
    }

    /// The update-to-visible histogram (microseconds).
    pub fn visible_latency(&self) -> hdrhistogram::Histogram<u64> {
        self.visible.lock().clone()
    }

    /// Every device as fleet-file entries, with revisions (export).
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

    /// Starts a snapshot thread when enough was journaled since the last snapshot and none is
    /// running. Called under `lock` with the queue empty, so the journal's position is a state
    /// the fleet holds (module docs, step 1).
    fn maybe_snapshot(&self, journal: &Arc<Journal>) {
        if journal.records_since_snapshot() < self.snapshot_every.load(Ordering::Relaxed)
            && journal.bytes_since_snapshot() < SNAPSHOT_EVERY_BYTES
        {
            return;
        }
        if self.shared.snapshotting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(from) = journal.position() else {
            // A leader or a recovery holds the files: the next change tries again.
            self.shared.snapshotting.store(false, Ordering::Release);
            return;
        };
        let (fleet, journal, shared) =
            (Arc::clone(&self.fleet), Arc::clone(journal), Arc::clone(&self.shared));
        let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
            // Encoding a million devices is seconds of CPU: take what the API and the data
            // path leave.
            if let Err(e) = crate::io::sys::lower_thread_priority(10) {
                warn!(error = %e, "cannot lower the snapshot thread's priority");
            }
            if let Err(e) = snapshot(&fleet, &journal, &shared, from, SNAPSHOT_CHUNK, &mut |_| {}) {
                warn!(error = %e, "snapshot failed; the journal keeps every record, retried later");
            }
            shared.snapshotting.store(false, Ordering::Release);
        });
        match spawned {
            Ok(handle) => {
                if let Some(done) = self.snapshotter.lock().replace(handle) {
                    let _ = done.join();
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot start the snapshot thread");
                self.shared.snapshotting.store(false, Ordering::Release);
            }
        }
    }

    /// Takes a snapshot now, in this thread, as the snapshot thread would (tests).
    ///
    /// # Errors
    /// As the snapshot thread's ([`SnapshotError`]); no position when changes are in flight.
    #[cfg(test)]
    fn snapshot_now(
        &self,
        chunk: usize,
        hook: &mut dyn FnMut(Step),
    ) -> Result<usize, SnapshotError> {
        let journal = self.journal.as_ref().ok_or(SnapshotError::Stopped)?;
        let from = {
            let _queue = self.shared.lock.lock();
            journal.position().ok_or(SnapshotError::Stopped)?
        };
        snapshot(&self.fleet, journal, &self.shared, from, chunk, hook)
    }
}

impl Drop for Store {
    /// A running snapshot gives up between two chunks (its tmp file is removed), so that the
    /// journal, and with it the state directory's lock, is released when the store is.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(handle) = self.snapshotter.lock().take() {
            let _ = handle.join();
        }
    }
}

/// How far a snapshot got, for the tests' hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// This many chunks are read (and encoded).
    Chunks(usize),
    /// The snapshot is installed; the journal is not compacted yet.
    Installed,
}

/// Streams a fuzzy snapshot covering the records up to `from` (module docs, steps 2 and 3):
/// the fleet `chunk` devices at a time, each chunk under the store's lock; `hook` runs between
/// the steps, without the lock (tests change the fleet and take crash images there). Returns
/// the devices written.
fn snapshot(
    fleet: &Fleet,
    journal: &Journal,
    shared: &Shared,
    from: Position,
    chunk: usize,
    hook: &mut dyn FnMut(Step),
) -> Result<usize, SnapshotError> {
    let mut out = journal.begin_snapshot(from)?;
    let floor = shared.floor.load(Ordering::Acquire);
    write!(out, "{{\"revision_floor\":{floor},\"fuzzy_devices\":[").map_err(JournalError::from)?;
    let (mut cursor, mut written, mut chunks) = (0u32, 0usize, 0usize);
    let mut devices = Vec::with_capacity(chunk);
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return Err(SnapshotError::Stopped);
        }
        {
            let _queue = shared.lock.lock();
            for id in fleet.ids_from(cursor).take(chunk) {
                cursor = id.0 + 1;
                if let Some(record) = fleet.record(id) {
                    let state = fleet.word(id).state();
                    let device = DeviceEntry::from_record(&record, state);
                    devices.push(SnapshotDevice { device, revision: fleet.revision(id) });
                }
            }
        }
        if devices.is_empty() {
            break;
        }
        for d in devices.drain(..) {
            if written > 0 {
                out.write_all(b",").map_err(JournalError::from)?;
            }
            serde_json::to_writer(&mut out, &d)?;
            written += 1;
        }
        chunks += 1;
        hook(Step::Chunks(chunks));
    }
    out.write_all(b"]}").map_err(JournalError::from)?;
    out.install()?;
    hook(Step::Installed);
    out.compact()?;
    Ok(written)
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
    use super::*;
    use crate::control::fleet_file::demo_fleet;
    use crate::control::mutation::PatchBody;
    use crate::control::test_dir::TempDir;

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
        let dir = TempDir::new("store", "failed-journal");
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
        let dir = TempDir::new("store", "concurrent");
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
    use crate::control::test_dir::TempDir;

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
        let dir = TempDir::new("store", "floor");
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
        store.snapshot_now(SNAPSHOT_CHUNK, &mut |_| {}).unwrap();
        drop(store);
        let store = open(&dir);
        assert_eq!(store.fleet.len(), 0);
        store.mutate(vec![Mutation::Upsert { device: device.clone() }], &[]).unwrap();
        assert_eq!(revision(&store, &uuid), 5);
        stale_tags_fail(&store, uuid, 4);
    }

    #[test]
    fn test_snapshot_without_floor_is_read_with_the_legacy_floor() {
        let dir = TempDir::new("store", "legacy");
        let device = demo_fleet(1).device[1].clone();
        let store = open(&dir);
        three_revisions_then_delete(&store, &device);
        let bridge = demo_fleet(1).device[0].clone();
        store.mutate(vec![Mutation::Upsert { device: bridge.clone() }], &[]).unwrap();
        // A snapshot as the gate wrote it before revision floors existed.
        let body = SnapshotBody {
            devices: Some(vec![SnapshotDevice { device: bridge.clone(), revision: 1 }]),
            ..SnapshotBody::default()
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

#[cfg(test)]
mod fuzzy_tests {
    //! Fuzzy snapshots: replay by revision is idempotent, and a snapshot taken in chunks while
    //! changes go on restores to the acknowledged fleet at every crash point.
    use proptest::prelude::*;

    use super::*;
    use crate::control::fleet_file::demo_fleet;
    use crate::control::mutation::PatchBody;

    const OWNER: Uuid = Uuid::from_u128(0x0b7e_0000_0000_4000_8000_0000_0000_0001);

    /// Change `kind` of demo device `device` (the bridge is 0), variant `v`.
    fn change(kind: u8, device: u8, v: u8) -> Mutation {
        let mut entry = demo_fleet(5).device[usize::from(device % 6)].clone();
        let uuid = entry.uuid;
        match kind % 4 {
            0 => {
                entry.name = format!("variant {v}");
                Mutation::Upsert { device: entry }
            }
            1 if v % 2 == 0 => {
                // Owned (RFNOP): never answers discovery.
                let patch = PatchBody {
                    dos: Some(3),
                    owned: Some(true),
                    devowneruuid: Some(OWNER),
                    rowneruuid: Some(OWNER),
                    oxmsel: Some(0),
                    ..PatchBody::default()
                };
                Mutation::Patch { uuid, patch }
            }
            1 => {
                // Reset to RFOTM, unowned: eligible.
                let patch = PatchBody {
                    dos: Some(1),
                    owned: Some(false),
                    devowneruuid: Some(Uuid::nil()),
                    rowneruuid: Some(Uuid::nil()),
                    oxmsel: Some(4),
                    ..PatchBody::default()
                };
                Mutation::Patch { uuid, patch }
            }
            2 => Mutation::Patch {
                uuid,
                patch: PatchBody { doc_open: Some(v % 2 == 0), ..PatchBody::default() },
            },
            _ => Mutation::Delete { uuid },
        }
    }

    /// Every device with its revision and entry.
    fn contents(fleet: &Fleet) -> Vec<(Uuid, u64, DeviceEntry)> {
        let mut all: Vec<_> = fleet
            .ids_from(0)
            .filter_map(|id| {
                let record = fleet.record(id)?;
                let entry = DeviceEntry::from_record(&record, fleet.word(id).state());
                Some((entry.uuid, fleet.revision(id), entry))
            })
            .collect();
        all.sort_by_key(|d| d.0);
        all
    }

    /// Plans and applies a batch on the live fleet as the store does; returns its record.
    fn live(fleet: &Fleet, batch: Vec<Mutation>, floor: &mut u64) -> Option<Vec<u8>> {
        mutation::check(fleet, &batch, &[]).ok()?;
        let revisions = mutation::plan(fleet, &batch, floor);
        let applied = mutation::apply_planned(fleet, &batch, &revisions, floor).unwrap();
        assert_eq!(applied.skipped, 0, "live, nothing is skipped");
        Some(serde_json::to_vec(&Record { revisions: &revisions, batch: &batch }).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// A snapshot read in chunks of 1 to 3 slots, interleaved at random with the batches
        /// after its position, plus those batches replayed by revision, restores exactly the
        /// live fleet and floor, in a fleet with fewer slots than devices (so a replay that
        /// held more devices than the live fleet did would fail); restoring once more, from
        /// the restored fleet as a snapshot, changes nothing.
        #[test]
        fn replay_is_idempotent(
            changes in prop::collection::vec((0u8..4, 0u8..6, 0u8..4, any::<bool>()), 1..50),
            position in 0usize..50,
            schedule in prop::collection::vec((any::<bool>(), 1usize..4), 0..80),
        ) {
            // Fewer slots than devices: the fleet is often full, and a replay that held more
            // devices at some point than the live fleet did would overflow.
            let fleet = Fleet::with_capacity(4);
            let mut floor = 0;
            // The history as batches of 1 to 3 changes, each checked on the live fleet.
            let mut batches = Vec::new();
            let mut batch = Vec::new();
            for &(kind, device, v, end) in &changes {
                batch.push(change(kind, device, v));
                if end || batch.len() == 3 {
                    batches.push(std::mem::take(&mut batch));
                }
            }
            batches.push(batch);
            let position = position % batches.len();
            let mut pending = batches.into_iter();
            let mut records = Vec::new();
            for batch in pending.by_ref().take(position) {
                live(&fleet, batch, &mut floor);
            }
            // The snapshot starts: the floor, then chunks, interleaved with later batches.
            let snapshot_floor = floor;
            let mut snapshot = Vec::new();
            let mut cursor = 0u32;
            let mut scanned = false;
            let mut steps = schedule.into_iter();
            while !scanned {
                let (apply_next, chunk) = steps.next().unwrap_or((false, 3));
                if apply_next {
                    if let Some(batch) = pending.next() {
                        records.extend(live(&fleet, batch, &mut floor));
                        continue;
                    }
                }
                let ids: Vec<_> = fleet.ids_from(cursor).take(chunk).collect();
                scanned = ids.is_empty();
                for id in ids {
                    cursor = id.0 + 1;
                    let record = fleet.record(id).unwrap();
                    let device = DeviceEntry::from_record(&record, fleet.word(id).state());
                    snapshot.push(SnapshotDevice { device, revision: fleet.revision(id) });
                }
            }
            for batch in pending {
                records.extend(live(&fleet, batch, &mut floor));
            }
            // Restore as Store::open does.
            let restored = Fleet::with_capacity(4);
            let mut restored_floor = snapshot_floor;
            for d in &snapshot {
                restore(&restored, d).unwrap();
            }
            forget_recreated(&restored, &records).unwrap();
            for (i, r) in records.iter().enumerate() {
                replay(&restored, i, r, &mut restored_floor, true).unwrap();
            }
            prop_assert_eq!(contents(&restored), contents(&fleet));
            prop_assert_eq!(restored_floor, floor);
            // The restored fleet as a snapshot of itself (one that already holds every record).
            forget_recreated(&restored, &records).unwrap();
            for (i, r) in records.iter().enumerate() {
                replay(&restored, i, r, &mut restored_floor, true).unwrap();
            }
            prop_assert_eq!(contents(&restored), contents(&fleet), "replayed twice");
        }
    }
}

#[cfg(test)]
mod snapshot_tests {
    //! A chunked snapshot with changes between its chunks, and a crash image (the state
    //! directory's files as `kill -9` would leave them) at every step.

    use super::*;
    use crate::control::fleet_file::demo_fleet;
    use crate::control::mutation::PatchBody;
    use crate::control::test_dir::TempDir;

    fn open(dir: &Path) -> Store {
        let fleet = Arc::new(Fleet::with_capacity(4096));
        Store::open(dir, fleet, RestartPolicy::Resume, None).unwrap().0
    }

    /// Every device with its revision and entry, by UUID.
    fn contents(fleet: &Fleet) -> Vec<(Uuid, u64, DeviceEntry)> {
        let mut all: Vec<_> = fleet
            .ids_from(0)
            .filter_map(|id| {
                let record = fleet.record(id)?;
                let entry = DeviceEntry::from_record(&record, fleet.word(id).state());
                Some((entry.uuid, fleet.revision(id), entry))
            })
            .collect();
        all.sort_by_key(|d| d.0);
        all
    }

    /// The state directory's files now: what a `kill -9` leaves (the page cache survives it).
    fn crash_image(dir: &Path, image: &Path) {
        std::fs::create_dir_all(image).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), image.join(entry.file_name())).unwrap();
        }
    }

    /// Changes as a bridge makes them: devices made owned, reset, deleted and created again,
    /// their DOCs opened; some refused (404 of a deleted device), which is fine.
    fn churn(store: &Store, rng: &mut fastrand::Rng, devices: &[DeviceEntry]) -> usize {
        let mut acknowledged = 0;
        for _ in 0..40 {
            let device = &devices[rng.usize(..devices.len())];
            let uuid = device.uuid;
            let m = match rng.u8(..5) {
                0 => Mutation::Delete { uuid },
                1 => Mutation::Upsert { device: device.clone() },
                2 => Mutation::Patch {
                    uuid,
                    patch: PatchBody {
                        dos: Some(3),
                        owned: Some(true),
                        devowneruuid: Some(Uuid::from_u128(7)),
                        rowneruuid: Some(Uuid::from_u128(7)),
                        oxmsel: Some(0),
                        ..PatchBody::default()
                    },
                },
                3 => Mutation::Patch {
                    uuid,
                    patch: PatchBody { doc_open: Some(rng.bool()), ..PatchBody::default() },
                },
                _ => Mutation::Patch {
                    uuid,
                    patch: PatchBody {
                        dos: Some(1),
                        owned: Some(false),
                        devowneruuid: Some(Uuid::nil()),
                        rowneruuid: Some(Uuid::nil()),
                        oxmsel: Some(4),
                        ..PatchBody::default()
                    },
                },
            };
            let second = Mutation::Patch {
                uuid: devices[rng.usize(..devices.len())].uuid,
                patch: PatchBody { doc_open: Some(false), ..PatchBody::default() },
            };
            let batch = if rng.bool() { vec![m] } else { vec![m, second] };
            acknowledged += usize::from(store.mutate(batch, &[]).is_ok());
        }
        acknowledged
    }

    #[test]
    fn test_crash_at_every_step_of_a_chunked_snapshot_with_concurrent_changes() {
        let dir = TempDir::new("store", "chunked");
        let devices = demo_fleet(3_000).device;
        let store = open(&dir.0);
        store.snapshot_every(u64::MAX);
        let upserts = devices.iter().map(|d| Mutation::Upsert { device: d.clone() }).collect();
        store.mutate(upserts, &[]).unwrap();
        let mut rng = fastrand::Rng::with_seed(13);
        let mut images = Vec::new();
        let mut acknowledged = 0;
        // Two snapshots in a row, so that the second one starts from a fuzzy one.
        for round in 0..2 {
            let mut hook = |step: Step| {
                acknowledged += churn(&store, &mut rng, &devices);
                let image = dir.0.with_extension(format!("image-{round}-{step:?}"));
                crash_image(&dir.0, &image);
                images.push((TempDir(image), step, contents(&store.fleet)));
            };
            let written = store.snapshot_now(256, &mut hook).unwrap();
            assert!(written > 2_500, "{written} devices");
        }
        assert!(acknowledged > 200, "{acknowledged} changes acknowledged during the snapshots");
        assert!(images.len() > 20, "{} crash images", images.len());
        let live = contents(&store.fleet);
        drop(store);
        for (image, step, expected) in &images {
            let reopened = open(&image.0);
            assert!(contents(&reopened.fleet) == *expected, "crash image at {step:?} differs");
        }
        assert!(contents(&open(&dir.0).fleet) == live, "after the snapshots");
    }

    /// Snapshots in the background thread while threads change the fleet: the restart holds
    /// every acknowledged change.
    #[test]
    fn test_background_snapshots_under_concurrent_changes() {
        let dir = TempDir::new("store", "background");
        let devices = demo_fleet(2_000).device;
        let store = Arc::new(open(&dir.0));
        store.snapshot_every(200);
        let upserts = devices.iter().map(|d| Mutation::Upsert { device: d.clone() }).collect();
        store.mutate(upserts, &[]).unwrap();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (store, devices) = (Arc::clone(&store), devices.clone());
                std::thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t);
                    (0..30).map(|_| churn(&store, &mut rng, &devices)).sum::<usize>()
                })
            })
            .collect();
        let acknowledged: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(acknowledged > 1_000, "{acknowledged}");
        let live = contents(&store.fleet);
        let health = store.journal_health().unwrap();
        assert!(health.last_snapshot_us > 0, "a snapshot ran");
        drop(store);
        let snapshot = std::fs::metadata(dir.0.join(crate::control::journal::SNAPSHOT_FILE));
        assert!(snapshot.is_ok(), "a snapshot was installed");
        assert!(contents(&open(&dir.0).fleet) == live);
    }
}
