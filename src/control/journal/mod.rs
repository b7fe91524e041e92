//! The control plane's durable log: an append-only journal of checksummed records, committed in
//! groups, and a snapshot that lets the journal be compacted.
//!
//! This layer knows nothing about devices: a record is an opaque payload, one payload is one
//! atomic unit (a batch of 100,000 upserts is one record), and the caller decides what a snapshot
//! contains and when to write one. The rule it serves: every
//! mutation acknowledged with a 2xx is on disk, and a torn or corrupt tail is detected, reported
//! and discarded because it was never acknowledged.
//!
//! # Guarantees
//!
//! - [`Journal::wait_durable`] returns `Ok` only once its record is written and `fdatasync`ed, or
//!   is covered by a snapshot that is renamed into place with its directory fsynced.
//! - Group commit: [`Journal::append`] only copies the record into a pending buffer; the first
//!   waiter becomes the leader, writes every pending record with one write and one fsync, and
//!   wakes everyone it covered. Concurrent callers and batches therefore share fsyncs.
//! - One process owns the directory: [`Journal::open`] takes an exclusive `flock` on its
//!   [`LOCK_FILE`] before it reads anything, writes its pid there for the next one to name, and
//!   holds it until the journal is dropped (the kernel releases it when the process dies, even by
//!   `kill -9`). A second opener gets [`JournalError::Locked`].
//! - Only a torn tail is discarded. A torn tail is the last record cut short (its header, or the
//!   length it declares, runs past the end of the file) or zero-filled pages after the last good
//!   record, with no intact record anywhere after it (searched by magic, so a damaged length
//!   cannot hide one). It was provably never acknowledged, because an acknowledgement waits for
//!   the fdatasync that covers the whole record: loading reports it ([`TornTail`], a `tracing`
//!   warning), truncates the file there and fsyncs, so that new appends follow the good prefix.
//!   Anything else is corruption ([`Corruption`]): a record that fails its checks with intact
//!   records after it, a whole last record that fails its checksum (a cut record is never whole),
//!   or an intact record out of sequence. What it held may have been acknowledged, so loading
//!   refuses ([`JournalError::Corrupt`]) before it changes any byte of any file; the operator
//!   inspects with [`check`] (`doxm-gate journal check`) and writes the trusted prefix into a new
//!   directory with [`salvage`] (`doxm-gate journal salvage --into`).
//! - A snapshot that fails its checks, or a journal that begins after what the snapshot covers
//!   (records missing in between), is a hard error: the gate refuses to start rather than start
//!   from a silently smaller state. A missing snapshot is fine (a new gate).
//! - Compaction is crash-safe at every step (see [`Journal::write_snapshot`], which covers every
//!   record appended and holds the files meanwhile, and [`SnapshotWriter`], which covers the
//!   records up to a [`Position`] and lets commits go on while it writes: `snapshot.rs`).
//! - A failed write or fsync fails its batch, never more and never less. Every record not yet
//!   durable when a write or fsync fails (the leader's batch, and whatever was appended while it
//!   wrote) is dropped and its waiters get an error, so none of them may be acknowledged; every
//!   record acknowledged before stays. The journal then refuses appends until
//!   [`Journal::recover`] succeeds; the caller calls it on its next change (the store does), so
//!   the gate heals without a restart once the disk has room again.
//! - Why recovery does not trust the page cache. After a failed fsync Linux may have dropped the
//!   dirty pages, or marked them clean while the disk never got them, and it reports the error
//!   once per open file ("fsyncgate", PostgreSQL 2018): retrying the fsync can succeed while the
//!   data is not on disk, and reading the file back can show bytes that the disk does not hold.
//!   So recovery never retries an fsync over the failed batch's pages and never takes them from
//!   the cache: it opens the file anew (a new descriptor, which does not inherit the old one's
//!   error state), truncates it to the length of the last batch whose fsync *succeeded*, which
//!   throws the failed pages away whatever state the cache holds them in, fsyncs that
//!   truncation, and scans the file to verify that what remains is exactly the acknowledged
//!   records, ending with the last durable sequence number. Only then are appends accepted
//!   again, continuing the sequence from there. The records of the failed batch are written
//!   again only if their callers retry them, as new records. A snapshot whose rename succeeded
//!   but whose directory fsync or journal reset failed is settled the same way: the directory
//!   fsync is redone, the snapshot read and checked, and the journal reset to empty.
//!
//! # Layout
//!
//! [`format`] owns the bytes on disk (record and snapshot layout, their encoders, and the scan
//! that finds the valid prefix at open); this file owns the commit state machine (appends,
//! group commit, snapshots and compaction) and neither encodes nor parses a byte itself.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};
use tracing::{error, info, warn};

mod format;
mod repair;
pub mod snapshot;

use format::{read_snapshot, record_header, scan, snapshot_header};
pub use format::{Corruption, Damage, TornTail};
pub use repair::{check, lock_dir, salvage, Report, Salvaged};
pub use snapshot::{Position, SnapshotWriter, JOURNAL_TMP_FILE};
#[cfg(test)]
pub(crate) use tests::Faults;

/// The journal's file name inside the directory: operators and crash tests name it.
pub const JOURNAL_FILE: &str = "journal";
/// The snapshot's file name inside the directory: operators and crash tests name it.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// An unfinished snapshot: written and fsynced before it is renamed over [`SNAPSHOT_FILE`], so a
/// crash leaves at worst this file, which the next open removes.
pub const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
/// The state directory's lock: `flock`ed by the one process that owns the directory, and holding
/// its pid for the error message of the next one.
pub const LOCK_FILE: &str = "lock";
/// The largest payload of one record: the length field is a `u32`. A caller with more must split
/// it into several records (and lose all-or-nothing) or snapshot instead.
pub const MAX_RECORD: usize = u32::MAX as usize;

/// A pending buffer whose capacity is at most this is kept for the next batch (saves a page-fault
/// storm per commit); a larger one (a 30 MB batch) is freed rather than held forever.
const SPARE_MAX: usize = 4 << 20;

/// The durable log; see the [module docs](self). `Send + Sync`: the API's worker threads share
/// one journal so that their commits can share fsyncs.
pub struct Journal {
    dir: PathBuf,
    /// The directory's lock, held (open) as long as the journal lives.
    _lock: File,
    state: Mutex<State>,
    /// Signalled whenever the files change hands (a leader or a snapshot finishes).
    turn: Condvar,
    /// Touched only by the holder of `State::busy`, so never contended: the mutex only makes the
    /// length mutable through `&self`.
    io: Mutex<Io>,
    syncs: AtomicU64,
    stats: Stats,
    #[cfg(test)]
    faults: tests::Faults,
}

/// Counters for metrics, updated without the state lock.
#[derive(Default)]
struct Stats {
    errors: AtomicU64,
    bytes: AtomicU64,
    recoveries: AtomicU64,
    last_fsync_us: AtomicU64,
    last_snapshot_us: AtomicU64,
}

/// The journal's state for `/healthz` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Whether appends are accepted (false from a failed write or fsync until a recovery).
    pub writable: bool,
    /// The failure that keeps it from writing (or the last failed recovery).
    pub error: Option<String>,
    /// Write, fsync, snapshot and recovery failures since start.
    pub errors: u64,
    /// Recoveries without restart since start.
    pub recoveries: u64,
    /// Journal bytes written (and fsynced) since start.
    pub bytes_written: u64,
    /// Journal bytes since the last snapshot: what a restart replays.
    pub bytes_since_snapshot: u64,
    /// The duration of the last journal fsync, in microseconds.
    pub last_fsync_us: u64,
    /// The duration of the last snapshot (write, fsync, rename, reset), in microseconds.
    pub last_snapshot_us: u64,
}

/// The sequence number of an appended record: pass it to [`Journal::wait_durable`] before
/// acknowledging the change. `#[must_use]` because dropping it means acknowledging without
/// knowing the change is on disk.
#[must_use = "a change is durable only after wait_durable(ticket) returns Ok"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket {
    seq: u64,
    /// Which run of the journal between failures issued it: a ticket from before a failure was
    /// either durable by then or failed, whatever a later record with its sequence does.
    epoch: u64,
}

impl Ticket {
    /// The record's sequence number (logs, and tests that check the order).
    pub fn seq(self) -> u64 {
        self.seq
    }
}

/// What [`Journal::open`] found on disk, for the caller to rebuild its state from: the snapshot,
/// then the records in order.
pub struct Loaded {
    /// The last complete snapshot's payload (`None` for a new directory).
    pub snapshot: Option<Vec<u8>>,
    /// Payloads appended after that snapshot, in append order (records it covers are skipped).
    pub records: Vec<Vec<u8>>,
    /// What was discarded at the end of the journal, if anything: the caller reports it (metrics,
    /// health) because it means the last process died mid-write, or the disk lost data.
    pub torn_tail: Option<TornTail>,
}

/// Why a journal call failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file system refused a read, write, fsync, rename or truncation.
    #[error("journal I/O: {0}")]
    Io(#[from] io::Error),
    /// A write or fsync failed and the journal has not recovered yet (see
    /// [`Journal::recover`]); or this record was dropped with the failed batch.
    #[error(
        "journal unavailable since a write or fsync failed; nothing of this change was written"
    )]
    Poisoned,
    /// The snapshot fails its checks. A hard error: starting without it would silently lose the
    /// state it holds.
    #[error("corrupt snapshot {}: {reason}", path.display())]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The journal's first record comes after the record that follows the snapshot: the records
    /// in between (acknowledged ones) are gone, for instance because the snapshot was deleted or
    /// replaced by an older one. A hard error, for the same reason.
    #[error(
        "the journal starts at record {first} but the snapshot covers only up to {covered}: \
         records are missing"
    )]
    Gap {
        /// The last sequence number the snapshot covers (0 without a snapshot).
        covered: u64,
        /// The journal's first sequence number.
        first: u64,
    },
    /// The journal was written by a newer format version: refuse rather than truncate it.
    #[error("journal format version {found} is not supported (this build reads version 1)")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// The payload does not fit one record ([`MAX_RECORD`]).
    #[error("payload of {len} bytes exceeds the record limit of {MAX_RECORD} bytes")]
    TooLarge {
        /// The payload's length.
        len: usize,
    },
    /// The ticket was not issued by this journal (waiting on it would never end).
    #[error("ticket {0} was not issued by this journal")]
    UnknownTicket(u64),
    /// Another process holds the state directory's lock.
    #[error(
        "state directory {} is locked by another process{}: only one doxm-gate may use a \
         state directory",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it in the lock file (`None` if unreadable).
        pid: Option<u32>,
    },
    /// The journal is damaged before its last record: nothing was changed on disk.
    #[error(
        "journal {} is corrupt at offset {}, record {} (sequence {}): {}; {} intact records \
         follow it. Nothing was changed. Report: doxm-gate journal check --state-dir {dir}; \
         keep what can be trusted: doxm-gate journal salvage --state-dir {dir} --into NEWDIR, \
         then start the gate with --state-dir NEWDIR",
        .0.path.display(),
        .0.offset,
        .0.record,
        .0.seq,
        .0.reason,
        .0.intact_after,
        dir = .0.path.parent().unwrap_or(Path::new(".")).display()
    )]
    Corrupt(Box<Corruption>),
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and returns what it holds: the snapshot,
    /// the records after it, and any torn tail, which is truncated away (and fsynced) so that new
    /// appends follow the good prefix. Appends continue the sequence.
    ///
    /// # Errors
    /// I/O errors, a corrupt snapshot ([`JournalError::CorruptSnapshot`]), missing records
    /// ([`JournalError::Gap`]), or a newer format ([`JournalError::UnsupportedVersion`]): the
    /// caller must not start from a state it cannot trust.
    pub fn open(dir: &Path) -> Result<(Journal, Loaded), JournalError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            // A new directory's own entry must be durable too, or a crash right after the first
            // acknowledgement could lose the whole directory. (Only the immediate parent is
            // synced: ancestors created along with it are the operator's to make durable.)
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            sync_dir(parent.unwrap_or(Path::new(".")))?;
        }
        let lock = lock_dir(dir)?;
        let (covers, snapshot) = match read_snapshot(&dir.join(SNAPSHOT_FILE))? {
            Some((covers, payload)) => (covers, Some(payload)),
            None => (0, None),
        };

        let path = dir.join(JOURNAL_FILE);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut scan = scan(&file, &path, covers)?;
        // Corruption is refused before anything on disk changes.
        let torn = match scan.damage.take() {
            Some(Damage::Corrupt(c)) => return Err(JournalError::Corrupt(Box::new(c))),
            Some(Damage::Torn(t)) => Some(t),
            None => None,
        };
        for unfinished in [SNAPSHOT_TMP_FILE, JOURNAL_TMP_FILE] {
            let tmp = dir.join(unfinished);
            match fs::remove_file(&tmp) {
                Ok(()) => {
                    info!(path = %tmp.display(), "journal: removed an unfinished {unfinished}")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut len = scan.good_len;
        if let Some(tail) = &torn {
            warn!(
                path = %path.display(),
                offset = tail.offset,
                discarded_bytes = tail.discarded_bytes,
                reason = tail.reason,
                "journal: discarding a torn tail (never acknowledged)"
            );
            file.set_len(len)?;
            file.sync_all()?;
        }
        if scan.last_seq <= covers && len > 0 {
            // A crash between the snapshot's rename and the journal's reset: every record is in
            // the snapshot. Finish the reset, or the next append (covers + 1) would follow a
            // record older than `covers` and look out of order on the next open.
            info!(path = %path.display(), covers, "journal: finishing an interrupted compaction");
            file.set_len(0)?;
            file.sync_all()?;
            len = 0;
        }
        // The journal's directory entry (when just created) and the removed tmp file must be
        // durable before anything is acknowledged.
        sync_dir(dir)?;

        let last = scan.last_seq.max(covers);
        let journal = Journal {
            dir: dir.to_owned(),
            _lock: lock,
            state: Mutex::new(State {
                pending: Vec::new(),
                spare: Vec::new(),
                next_seq: last + 1,
                durable: last,
                busy: false,
                poisoned: false,
                failure: None,
                epoch: 0,
                epoch_ends: Vec::new(),
                unsettled_snapshot: None,
                snapshotting: false,
                compactions: 0,
                records_since_snapshot: scan.records.len() as u64,
                bytes_since_snapshot: scan.uncovered_bytes,
            }),
            turn: Condvar::new(),
            io: Mutex::new(Io { file, len, durable_len: len }),
            syncs: AtomicU64::new(0),
            stats: Stats::default(),
            #[cfg(test)]
            faults: tests::Faults::default(),
        };
        info!(
            dir = %dir.display(),
            snapshot_covers = covers,
            records = scan.records.len(),
            next_seq = last + 1,
            "journal opened"
        );
        Ok((journal, Loaded { snapshot, records: scan.records, torn_tail: torn }))
    }

    /// Appends one record (one payload = one atomic unit) and returns its ticket. Cheap: the
    /// payload is checksummed and copied once into the pending buffer, with no I/O, so the caller
    /// can hold its own lock around "apply to memory + append" and records stay in apply order.
    /// Nothing is durable until [`Journal::wait_durable`] returns.
    ///
    /// # Errors
    /// [`JournalError::Poisoned`] after a failed write, [`JournalError::TooLarge`].
    pub fn append(&self, payload: &[u8]) -> Result<Ticket, JournalError> {
        self.enqueue(measure(payload)?, |st, header| {
            st.pending.reserve(header.len() + payload.len());
            st.pending.extend_from_slice(header);
            st.pending.extend_from_slice(payload);
            (header.len() + payload.len()) as u64
        })
    }

    /// A buffer for [`Journal::append_buffer`]: room for a record's header, then nothing, with
    /// capacity for a payload of `payload_len` bytes, which the caller writes after it.
    pub fn record_buffer(payload_len: usize) -> Vec<u8> {
        Journal::record_buffer_in(Vec::new(), payload_len)
    }

    /// [`Journal::record_buffer`] in `buffer`'s memory (its content is dropped).
    pub fn record_buffer_in(mut buffer: Vec<u8>, payload_len: usize) -> Vec<u8> {
        buffer.clear();
        buffer.reserve_exact(format::record::HEADER_LEN + payload_len);
        buffer.resize(format::record::HEADER_LEN, 0);
        buffer
    }

    /// [`Journal::append`] of a payload written into a [`Journal::record_buffer`], which the
    /// journal takes: with nothing else pending, the buffer becomes the pending one without a
    /// copy, so a 30 MB batch is held once rather than twice until it is written (issue 13:
    /// a 100k batch peaks at no more than 3x its body).
    ///
    /// # Errors
    /// As [`Journal::append`].
    pub fn append_buffer(&self, mut record: Vec<u8>) -> Result<Ticket, JournalError> {
        let start = format::record::HEADER_LEN.min(record.len());
        let measured = measure(&record[start..])?;
        self.enqueue(measured, |st, header| {
            match record.get_mut(..header.len()) {
                Some(room) => room.copy_from_slice(header),
                None => record = header.to_vec(),
            }
            let total = record.len() as u64;
            if st.pending.is_empty() {
                let old = std::mem::replace(&mut st.pending, record);
                if st.spare.capacity() == 0 && old.capacity() <= SPARE_MAX {
                    st.spare = old;
                }
            } else {
                st.pending.extend_from_slice(&record);
            }
            total
        })
    }

    /// Numbers a [`measure`]d record under the lock and lets `place` put it, after `header`,
    /// into the pending buffer (returning the bytes it added); the one path of
    /// [`Journal::append`] and [`Journal::append_buffer`].
    fn enqueue(
        &self,
        (len, payload_crc): (u32, crc32fast::Hasher),
        place: impl FnOnce(&mut State, &[u8]) -> u64,
    ) -> Result<Ticket, JournalError> {
        let mut st = self.state.lock();
        if st.poisoned {
            return Err(JournalError::Poisoned);
        }
        let seq = st.next_seq;
        let header = record_header(seq, len, &payload_crc);
        let added = place(&mut st, &header);
        st.next_seq += 1;
        st.records_since_snapshot += 1;
        st.bytes_since_snapshot += added;
        Ok(Ticket { seq, epoch: st.epoch })
    }

    /// Blocks until the record of `ticket` is on disk (written and fdatasync'ed, or covered by a
    /// durable snapshot). Group commit: the first waiter becomes the leader, writes every pending
    /// record in one write, fsyncs once and wakes everyone it covered; records appended meanwhile
    /// go out with the next leader.
    ///
    /// # Errors
    /// The leader whose write or fsync fails gets [`JournalError::Io`]; every other record not
    /// yet durable is dropped with its batch and its waiter gets [`JournalError::Poisoned`] (the
    /// change must not be acknowledged), and appends are refused until [`Journal::recover`]. A
    /// ticket durable before the failure still returns `Ok`.
    pub fn wait_durable(&self, ticket: Ticket) -> Result<(), JournalError> {
        let mut st = self.state.lock();
        if ticket.epoch > st.epoch || (ticket.epoch == st.epoch && ticket.seq >= st.next_seq) {
            return Err(JournalError::UnknownTicket(ticket.seq));
        }
        loop {
            if ticket.epoch < st.epoch {
                // Its run ended with a failure: durable by then, or dropped.
                return match st.epoch_ends.get(ticket.epoch as usize) {
                    Some(&end) if ticket.seq <= end => Ok(()),
                    _ => Err(JournalError::Poisoned),
                };
            }
            if st.durable >= ticket.seq {
                return Ok(());
            }
            if st.poisoned {
                return Err(JournalError::Poisoned);
            }
            if st.busy {
                self.turn.wait(&mut st);
                continue;
            }
            // Lead: everything pending goes out with one write and one fsync.
            st.busy = true;
            let target = st.next_seq - 1;
            let spare = std::mem::take(&mut st.spare);
            let mut batch = std::mem::replace(&mut st.pending, spare);
            let result = MutexGuard::unlocked(&mut st, || self.write_batch(&batch));
            st.busy = false;
            self.turn.notify_all();
            if let Err(e) = result {
                self.fail(&mut st, &e, "journal write or fsync failed: the batch is dropped");
                return Err(e);
            }
            st.durable = target;
            if batch.capacity() <= SPARE_MAX {
                batch.clear();
                st.spare = batch;
            }
        }
    }

    /// Whether `ticket`'s record is durable (`Some(true)`), was dropped with a failed batch
    /// (`Some(false)`), or is still pending (`None`). Never blocks on I/O.
    pub fn status(&self, ticket: Ticket) -> Option<bool> {
        let st = self.state.lock();
        if ticket.epoch < st.epoch {
            return Some(
                st.epoch_ends.get(ticket.epoch as usize).is_some_and(|&e| ticket.seq <= e),
            );
        }
        if st.durable >= ticket.seq {
            Some(true)
        } else if st.poisoned {
            Some(false)
        } else {
            None
        }
    }

    /// Brings the journal back after a failed write or fsync (see the [module docs](self) for
    /// why it does not trust the page cache): reopens the file, truncates it to the last durable
    /// batch, fsyncs, verifies by a scan that it holds exactly the durable records, and accepts
    /// appends again, continuing the sequence. `Ok(false)` when there was nothing to recover.
    ///
    /// # Errors
    /// The I/O error that still stands (the disk is still full), or a journal that does not
    /// verify: it stays failed, and the next call tries again.
    pub fn recover(&self) -> Result<bool, JournalError> {
        let mut st = self.state.lock();
        // The common case returns at once: never wait for a leader's I/O here (a caller may
        // hold its own lock around this, as the store does).
        if !st.poisoned {
            return Ok(false);
        }
        while st.busy {
            self.turn.wait(&mut st);
        }
        if !st.poisoned {
            return Ok(false);
        }
        st.busy = true;
        let (unsettled, durable) = (st.unsettled_snapshot, st.durable);
        let result = MutexGuard::unlocked(&mut st, || self.reopen(unsettled, durable));
        st.busy = false;
        self.turn.notify_all();
        match result {
            Ok(reopened) => {
                st.poisoned = false;
                st.failure = None;
                st.unsettled_snapshot = None;
                st.durable = durable.max(reopened.covers);
                st.next_seq = st.durable + 1;
                st.pending.clear();
                st.records_since_snapshot = reopened.records;
                st.bytes_since_snapshot = reopened.bytes;
                // The file may have been reset (an unsettled snapshot): older positions are stale.
                st.compactions += 1;
                self.stats.recoveries.fetch_add(1, Ordering::Relaxed);
                info!(
                    dir = %self.dir.display(),
                    durable = st.durable,
                    journal_bytes = reopened.len,
                    "journal recovered: reopened, truncated to the last durable batch, verified"
                );
                Ok(true)
            }
            Err(e) => {
                st.failure = Some(e.to_string());
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(dir = %self.dir.display(), error = %e, "journal still cannot recover");
                Err(e)
            }
        }
    }

    /// Appends `payload` and waits until it is durable: [`Journal::append`] +
    /// [`Journal::wait_durable`], for a caller that needs no lock between the two.
    ///
    /// # Errors
    /// As [`Journal::append`] and [`Journal::wait_durable`].
    pub fn commit(&self, payload: &[u8]) -> Result<(), JournalError> {
        let ticket = self.append(payload)?;
        self.wait_durable(ticket)
    }

    /// Replaces the snapshot with `payload`, which must reflect every record appended so far (the
    /// caller holds its lock across building the payload and this call), then compacts: the
    /// journal restarts empty. Pending records are not written at all: the snapshot makes them
    /// durable, and their waiters are woken when it is.
    ///
    /// Crash-safe at every step, because the snapshot names the last sequence it covers and
    /// sequence numbers never restart:
    ///
    /// 1. write `snapshot.tmp`, fsync: a crash leaves a tmp file, removed on open;
    /// 2. rename over `snapshot`, fsync the directory: a crash before the directory is durable
    ///    leaves the old snapshot and the whole journal, or the new snapshot and a journal whose
    ///    records it covers, which loading skips (never replayed twice);
    /// 3. truncate the journal and fsync: a crash before this leaves covered records, skipped as
    ///    above, and the next open finishes the truncation.
    ///
    /// # Errors
    /// A failure in step 1 (or a refused rename) changes nothing: the journal keeps every record
    /// and the caller may retry later. A failure once the rename is done poisons the journal: the
    /// directory's or the journal's state on disk is unknown.
    pub fn write_snapshot(&self, payload: &[u8]) -> Result<(), JournalError> {
        let mut st = self.state.lock();
        while st.busy {
            self.turn.wait(&mut st);
        }
        if st.poisoned {
            return Err(JournalError::Poisoned);
        }
        if st.snapshotting {
            return Err(io::Error::other("a snapshot is being written beside the journal").into());
        }
        st.busy = true;
        let started = Instant::now();
        let covers = st.next_seq - 1;
        let covered = std::mem::take(&mut st.pending);
        let (records, bytes) = (st.records_since_snapshot, st.bytes_since_snapshot);
        let result = MutexGuard::unlocked(&mut st, || self.replace_snapshot(covers, payload));
        st.busy = false;
        self.turn.notify_all();
        self.stats.last_snapshot_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                st.durable = covers;
                st.records_since_snapshot -= records;
                st.bytes_since_snapshot -= bytes;
                // The journal restarted empty: byte offsets of older positions are stale.
                st.compactions += 1;
                Ok(())
            }
            Err((Stage::NotInstalled, e)) => {
                // Nothing changed on disk: put the covered records back in front of any appended
                // since, for the next leader to write.
                let later = std::mem::replace(&mut st.pending, covered);
                st.pending.extend_from_slice(&later);
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(dir = %self.dir.display(), error = %e, "snapshot not written");
                Err(e)
            }
            Err((stage, e)) => {
                if stage == Stage::Durable {
                    st.durable = covers;
                }
                st.unsettled_snapshot = Some(covers);
                self.fail(&mut st, &e, "snapshot failed after its rename: settled by recovery");
                Err(e)
            }
        }
    }

    /// Records appended since the last snapshot (including those loaded at open): with
    /// [`Journal::bytes_since_snapshot`], what the caller weighs to decide when to snapshot.
    pub fn records_since_snapshot(&self) -> u64 {
        self.state.lock().records_since_snapshot
    }

    /// Journal bytes (headers included) appended since the last snapshot: replay time and disk
    /// use grow with it.
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.state.lock().bytes_since_snapshot
    }

    /// Test-only fault injection (the store's tests fail the journal under it).
    #[cfg(test)]
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Journal fsyncs done so far by group commits: commits per fsync is the grouping achieved
    /// (metrics, tests).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Whether a write or fsync failed and the journal has not recovered yet.
    pub fn is_poisoned(&self) -> bool {
        self.state.lock().poisoned
    }

    /// The journal's state and counters, for `/healthz` and `/metrics`.
    pub fn health(&self) -> Health {
        let (writable, error, bytes_since_snapshot) = {
            let st = self.state.lock();
            (!st.poisoned, st.failure.clone(), st.bytes_since_snapshot)
        };
        let s = &self.stats;
        Health {
            writable,
            error,
            errors: s.errors.load(Ordering::Relaxed),
            recoveries: s.recoveries.load(Ordering::Relaxed),
            bytes_written: s.bytes.load(Ordering::Relaxed),
            bytes_since_snapshot,
            last_fsync_us: s.last_fsync_us.load(Ordering::Relaxed),
            last_snapshot_us: s.last_snapshot_us.load(Ordering::Relaxed),
        }
    }

    /// Marks the journal failed: every record not durable is dropped (their tickets end with
    /// this epoch), appends are refused until [`Journal::recover`].
    fn fail(&self, st: &mut State, e: &JournalError, what: &str) {
        st.poisoned = true;
        st.failure = Some(e.to_string());
        st.epoch_ends.push(st.durable);
        st.epoch += 1;
        st.pending.clear();
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        error!(
            dir = %self.dir.display(),
            error = %e,
            durable = st.durable,
            "{what}; refusing changes until the journal recovers (retried on the next change)"
        );
    }

    /// The I/O of [`Journal::recover`], with the files to itself.
    fn reopen(&self, unsettled: Option<u64>, durable: u64) -> Result<Reopened, JournalError> {
        let mut io = self.io.lock();
        #[cfg(test)]
        {
            self.faults.before_write()?;
            self.faults.before_sync()?;
        }
        let mut target = io.durable_len;
        // Whatever was renamed into place before the failure (a snapshot, a compacted journal)
        // is made durable before anything is built on it.
        sync_dir(&self.dir)?;
        if unsettled.is_some() {
            // The snapshot was renamed into place: the journal it covers is reset to empty.
            target = 0;
        }
        let path = self.dir.join(JOURNAL_FILE);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        file.set_len(target)?;
        file.sync_all()?;
        let covers = read_snapshot(&self.dir.join(SNAPSHOT_FILE))?.map_or(0, |(c, _)| c);
        let scan = scan(&file, &path, covers)?;
        let last = scan.last_seq.max(covers);
        if scan.damage.is_some() || scan.good_len != target || last < durable {
            return Err(io::Error::other(format!(
                "{} does not verify after truncation to {target} bytes: {} valid bytes, last \
                 record {last}, {durable} expected",
                path.display(),
                scan.good_len,
            ))
            .into());
        }
        io.file = file;
        io.len = target;
        io.durable_len = target;
        Ok(Reopened {
            covers,
            records: scan.records.len() as u64,
            bytes: scan.uncovered_bytes,
            len: target,
        })
    }

    /// The leader's I/O: one positioned write of the whole batch, one fdatasync.
    fn write_batch(&self, batch: &[u8]) -> Result<(), JournalError> {
        let mut io = self.io.lock();
        #[cfg(test)]
        self.faults.before_write()?;
        io.file.write_all_at(batch, io.len)?;
        io.len += batch.len() as u64;
        #[cfg(test)]
        self.faults.before_sync()?;
        let started = Instant::now();
        io.file.sync_data()?;
        self.stats.last_fsync_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        io.durable_len = io.len;
        self.stats.bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Steps 1-3 of [`Journal::write_snapshot`], reporting how far it got when one fails.
    fn replace_snapshot(&self, covers: u64, payload: &[u8]) -> Result<(), (Stage, JournalError)> {
        let tmp = self.dir.join(SNAPSHOT_TMP_FILE);
        let header = snapshot_header(covers, payload);
        let written = (|| -> io::Result<()> {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            io::Write::write_all(&mut file, &header)?;
            io::Write::write_all(&mut file, payload)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err((Stage::NotInstalled, e.into()));
        }
        fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))
            .map_err(|e| (Stage::NotInstalled, e.into()))?;
        sync_dir(&self.dir).map_err(|e| (Stage::Installed, e.into()))?;
        let mut io = self.io.lock();
        io.file.set_len(0).map_err(|e| (Stage::Durable, e.into()))?;
        io.len = 0;
        io.durable_len = 0;
        io.file.sync_all().map_err(|e| (Stage::Durable, e.into()))?;
        Ok(())
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("next_seq", &st.next_seq)
            .field("durable", &st.durable)
            .field("pending_bytes", &st.pending.len())
            .field("poisoned", &st.poisoned)
            .field("syncs", &self.syncs())
            .finish()
    }
}

impl fmt::Debug for Loaded {
    /// Sizes, not bytes: a payload may be 30 MB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("snapshot_bytes", &self.snapshot.as_ref().map(Vec::len))
            .field("records", &self.records.len())
            .field("torn_tail", &self.torn_tail)
            .finish()
    }
}

/// A payload's length, checked, and its CRC: computed before the journal's lock is taken, as
/// the CRC is the expensive part (30 MB for a big batch); the sequence number's is combined
/// with it once known.
fn measure(payload: &[u8]) -> Result<(u32, crc32fast::Hasher), JournalError> {
    let len =
        u32::try_from(payload.len()).map_err(|_| JournalError::TooLarge { len: payload.len() })?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(payload);
    Ok((len, crc))
}

/// Everything the appenders, waiters and the snapshot writer share, under one short-held lock.
struct State {
    /// Encoded records appended but not yet handed to a leader.
    pending: Vec<u8>,
    /// A cleared buffer from an earlier batch, reused for the next pending buffer.
    spare: Vec<u8>,
    /// The sequence number of the next append.
    next_seq: u64,
    /// Every record up to this one is on disk (journal or snapshot).
    durable: u64,
    /// A leader or a snapshot owns the files. Invariant while false: every record after
    /// `durable` is in `pending`.
    busy: bool,
    /// A write or fsync failed; no appends until [`Journal::recover`].
    poisoned: bool,
    /// What failed (health).
    failure: Option<String>,
    /// Runs between failures, counted; a ticket carries the one that issued it.
    epoch: u64,
    /// `durable` at the end of each finished epoch.
    epoch_ends: Vec<u64>,
    /// A snapshot renamed into place whose directory fsync or journal reset failed: what it
    /// covers (recovery settles it).
    unsettled_snapshot: Option<u64>,
    /// A [`SnapshotWriter`] is at work (one at a time, and no [`Journal::write_snapshot`]).
    snapshotting: bool,
    /// Compactions by a [`SnapshotWriter`] so far: byte offsets of older positions are stale.
    compactions: u64,
    records_since_snapshot: u64,
    bytes_since_snapshot: u64,
}

struct Io {
    file: File,
    /// Where the next batch is written: the end of the good records.
    len: u64,
    /// The length after the last successful fsync: what recovery truncates back to.
    durable_len: u64,
}

/// What [`Journal::recover`] found after reopening.
struct Reopened {
    covers: u64,
    records: u64,
    bytes: u64,
    len: u64,
}

/// How far a failed snapshot got, which decides whether the journal must be poisoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The old snapshot is in place: nothing changed.
    NotInstalled,
    /// Renamed, but the directory fsync failed: which snapshot survives a crash is unknown.
    Installed,
    /// The new snapshot is durable; the journal's truncation failed.
    Durable,
}

/// Makes renames, creations and removals in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::control::test_dir::TempDir;

    /// Test-only fault injection: fail the leader's write or fsync, or hold the leader before
    /// its write so that waiters pile up deterministically.
    #[derive(Default)]
    pub(crate) struct Faults {
        fail_write: AtomicBool,
        fail_sync: AtomicBool,
        hold: Mutex<()>,
    }

    impl Faults {
        /// Fail every write (ENOSPC-like) until cleared.
        pub(crate) fn fail_writes(&self, on: bool) {
            self.fail_write.store(on, Ordering::SeqCst);
        }

        /// Holds every leader before its write while the guard lives, so that commits queue up.
        pub(crate) fn hold(&self) -> parking_lot::MutexGuard<'_, ()> {
            self.hold.lock()
        }

        /// Fail every fsync (EIO-like) until cleared.
        pub(crate) fn fail_syncs(&self, on: bool) {
            self.fail_sync.store(on, Ordering::SeqCst);
        }

        pub(super) fn before_write(&self) -> io::Result<()> {
            drop(self.hold.lock());
            if self.fail_write.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected write failure"));
            }
            Ok(())
        }

        pub(super) fn before_sync(&self) -> io::Result<()> {
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fsync failure"));
            }
            Ok(())
        }
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("record {i}").into_bytes()
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("timed out waiting until {what}");
    }

    #[test]
    fn test_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Journal>();
    }

    #[test]
    fn test_header_layout() {
        let mut crc = crc32fast::Hasher::new();
        crc.update(b"abc");
        let header = record_header(0x0102_0304_0506_0708, 3, &crc);
        assert_eq!(&header[..4], b"DXJ\x01");
        assert_eq!(header[4..12], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(header[12..16], [3, 0, 0, 0]);
        let mut whole = header[4..16].to_vec();
        whole.extend_from_slice(b"abc");
        assert_eq!(header[16..20], crc32fast::hash(&whole).to_le_bytes());
    }

    #[test]
    fn test_group_commit_deterministic() {
        // The first leader is held before its write while 20 more commits queue up: they must
        // all go out with the next leader, in one write and one fsync.
        let dir = TempDir::new("journal-unit", "group");
        let (journal, _) = Journal::open(&dir.0).unwrap();
        let journal = Arc::new(journal);
        let hold = journal.faults.hold.lock();
        let first = {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || journal.commit(&payload(0)).unwrap())
        };
        wait_until("the first leader holds the files", || journal.state.lock().busy);
        let others: Vec<_> = (1..=20)
            .map(|i| {
                let journal = Arc::clone(&journal);
                std::thread::spawn(move || journal.commit(&payload(i)).unwrap())
            })
            .collect();
        wait_until("every commit is appended", || journal.records_since_snapshot() == 21);
        drop(hold);
        first.join().unwrap();
        for t in others {
            t.join().unwrap();
        }
        assert_eq!(journal.syncs(), 2);
        drop(journal);
        let (_, loaded) = Journal::open(&dir.0).unwrap();
        assert_eq!(loaded.records.len(), 21);
        assert_eq!(loaded.records[0], payload(0));
    }

    #[test]
    fn test_failed_fsync_drops_the_batch_then_recovers() {
        let dir = TempDir::new("journal-unit", "fail-sync");
        let (journal, _) = Journal::open(&dir.0).unwrap();
        journal.commit(b"acknowledged").unwrap();
        let covered = journal.append(b"durable before the failure").unwrap();
        journal.wait_durable(covered).unwrap();
        journal.faults.fail_syncs(true);
        let a = journal.append(b"a").unwrap();
        let b = journal.append(b"b").unwrap();
        assert!(matches!(journal.wait_durable(a), Err(JournalError::Io(_))));
        assert!(journal.is_poisoned());
        assert!(!journal.health().writable);
        assert_eq!(journal.health().errors, 1);
        // The other record of the failed batch, and every call until recovery, fail; a ticket
        // covered before the failure stays durable.
        assert!(matches!(journal.wait_durable(b), Err(JournalError::Poisoned)));
        assert!(matches!(journal.append(b"c"), Err(JournalError::Poisoned)));
        assert!(matches!(journal.commit(b"c"), Err(JournalError::Poisoned)));
        assert!(matches!(journal.write_snapshot(b"s"), Err(JournalError::Poisoned)));
        journal.wait_durable(covered).unwrap();
        // Recovery fails while the fault stands, and succeeds once it is gone.
        assert!(journal.recover().is_err());
        assert!(journal.is_poisoned());
        journal.faults.fail_syncs(false);
        assert!(journal.recover().unwrap());
        assert!(!journal.recover().unwrap(), "nothing more to recover");
        let health = journal.health();
        assert!(health.writable && health.error.is_none() && health.recoveries == 1);
        let d = journal.append(b"d").unwrap();
        assert_eq!(d.seq(), 3, "the sequence continues after the last durable record");
        journal.wait_durable(d).unwrap();
        // Old tickets keep their answers even though seq 3 now exists again.
        assert!(matches!(journal.wait_durable(a), Err(JournalError::Poisoned)));
        journal.wait_durable(covered).unwrap();
        drop(journal);
        // The failed batch reached the page cache (only the fsync failed), yet it is gone: the
        // recovery truncated it away.
        let (_, loaded) = Journal::open(&dir.0).unwrap();
        assert_eq!(
            loaded.records,
            [b"acknowledged".to_vec(), b"durable before the failure".to_vec(), b"d".to_vec()]
        );
        assert!(loaded.torn_tail.is_none());
    }

    #[test]
    fn test_failed_write_wakes_waiters_then_recovers() {
        let dir = TempDir::new("journal-unit", "fail-write");
        let (journal, _) = Journal::open(&dir.0).unwrap();
        let journal = Arc::new(journal);
        journal.faults.fail_writes(true);
        let hold = journal.faults.hold.lock();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let journal = Arc::clone(&journal);
                std::thread::spawn(move || journal.commit(&payload(i)))
            })
            .collect();
        wait_until("every commit is appended", || journal.records_since_snapshot() == 4);
        drop(hold);
        for t in threads {
            assert!(t.join().unwrap().is_err());
        }
        assert_eq!(journal.syncs(), 0);
        journal.faults.fail_writes(false);
        assert!(journal.recover().unwrap());
        assert_eq!(journal.records_since_snapshot(), 0);
        journal.commit(b"after").unwrap();
        drop(journal);
        let (_, loaded) = Journal::open(&dir.0).unwrap();
        assert_eq!(loaded.records, [b"after".to_vec()]);
    }

    #[test]
    fn test_snapshot_covers_pending_records() {
        // Records appended but not yet written are made durable by the snapshot itself.
        let dir = TempDir::new("journal-unit", "pending");
        let (journal, _) = Journal::open(&dir.0).unwrap();
        let t = journal.append(b"pending").unwrap();
        journal.write_snapshot(b"state with pending").unwrap();
        journal.wait_durable(t).unwrap();
        assert_eq!(journal.syncs(), 0);
        assert_eq!(journal.records_since_snapshot(), 0);
        assert_eq!(journal.bytes_since_snapshot(), 0);
        let after = journal.append(b"after").unwrap();
        assert_eq!(after.seq(), 2);
        journal.wait_durable(after).unwrap();
        drop(journal);
        let (_, loaded) = Journal::open(&dir.0).unwrap();
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"state with pending"[..]));
        assert_eq!(loaded.records, [b"after".to_vec()]);
    }

    #[test]
    fn test_append_buffer_reads_back_as_append_does() {
        // Alone (the buffer becomes the pending one) and behind another pending record (copied).
        let dir = TempDir::new("journal-unit", "buffer");
        let (journal, _) = Journal::open(&dir.0).unwrap();
        let buffer = |payload: &[u8]| {
            let mut b = Journal::record_buffer(payload.len());
            b.extend_from_slice(payload);
            b
        };
        let first = journal.append_buffer(buffer(b"first")).unwrap();
        journal.wait_durable(first).unwrap();
        let second = journal.append(b"second").unwrap();
        let third = journal.append_buffer(buffer(b"third")).unwrap();
        assert_eq!((first.seq(), second.seq(), third.seq()), (1, 2, 3));
        journal.wait_durable(third).unwrap();
        let empty = journal.append_buffer(Vec::new()).unwrap();
        journal.wait_durable(empty).unwrap();
        drop(journal);
        let (_, loaded) = Journal::open(&dir.0).unwrap();
        let want: [&[u8]; 4] = [b"first", b"second", b"third", b""];
        assert_eq!(loaded.records, want.map(<[u8]>::to_vec));
    }

    #[test]
    fn test_unknown_ticket() {
        let dir = TempDir::new("journal-unit", "ticket");
        let (journal, _) = Journal::open(&dir.0).unwrap();
        assert!(matches!(
            journal.wait_durable(Ticket { seq: 1, epoch: 0 }),
            Err(JournalError::UnknownTicket(1))
        ));
    }
}
