//! Snapshots written beside the journal, not instead of it: the caller streams a snapshot that
//! covers the records up to a [`Position`] while appends, group commits and fsyncs go on, and
//! only the final swap of the journal file holds the files for a moment.
//!
//! [`Journal::write_snapshot`](super::Journal::write_snapshot) holds the files for the whole
//! write and fsync of the snapshot (it covers *every* record appended, so nothing may be appended
//! meanwhile); at a million devices that is seconds of stalled commits. Here the snapshot covers
//! only the records up to `from.seq`, which were durable before it began, and the journal keeps
//! every record after them:
//!
//! 1. [`Journal::begin_snapshot`]: `snapshot.tmp` is created; the caller streams the payload
//!    ([`SnapshotWriter`] is an [`io::Write`]). No journal lock is held. The writer is *paced*
//!    (`Paced`): it fdatasyncs every [`SYNC_EVERY`] bytes and then rests as long as that
//!    took, so that it never holds more than that much dirty data nor more than half of the
//!    disk. On ext4 (`data=ordered`) a journal fdatasync commits the file system's journal,
//!    which first writes every newly allocated data block of every file: without pacing, the
//!    commit that acknowledges a PATCH would wait for hundreds of megabytes of snapshot.
//! 2. [`SnapshotWriter::install`]: the header (covers, length, CRC) is written, the file fsynced,
//!    renamed over `snapshot`, the directory fsynced. A crash before the rename leaves the old
//!    snapshot and the whole journal (and a tmp file, removed on open); after it, the new
//!    snapshot and a journal whose records up to `covers` are skipped on load. Either way every
//!    record is still in the journal, so a failure here never poisons it.
//! 3. [`SnapshotWriter::compact`]: the records after `covers` are copied into `journal.tmp`
//!    (most of them without any lock and paced; only those appended during the copy with the
//!    files held),
//!    which is fsynced and renamed over `journal`, and the directory fsynced. A crash before the
//!    rename leaves the whole journal (records up to `covers` skipped), after it the compacted
//!    one; both load to the same state. A failure before the rename changes nothing; a failure of
//!    the directory fsync after it poisons the journal (appends now go to the new file, whose
//!    name may not survive a crash), and recovery fsyncs the directory first.
//!
//! The caller decides what "covers" means for its state: the store takes a *fuzzy* snapshot
//! (see `control::store`) and replays the records after `covers` idempotently.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use parking_lot::MutexGuard;
use tracing::{info, warn};

use super::format::snapshot;
use super::{sync_dir, Journal, JournalError, JOURNAL_FILE, SNAPSHOT_FILE, SNAPSHOT_TMP_FILE};

/// The compacted journal while it is written: renamed over [`JOURNAL_FILE`] when complete, so a
/// crash leaves at worst this file, which the next open removes.
pub const JOURNAL_TMP_FILE: &str = "journal.tmp";

/// The snapshot writer fdatasyncs after this many bytes (see the [module docs](self)).
pub const SYNC_EVERY: u64 = 1 << 20;

/// Writes at most half of the disk's time: after every [`SYNC_EVERY`] bytes, an fdatasync and a
/// rest as long as the write and the fdatasync took (see the [module docs](self)).
#[derive(Debug)]
struct Paced {
    file: File,
    unsynced: u64,
    since: Instant,
}

impl Paced {
    fn new(file: File) -> Paced {
        Paced { file, unsynced: 0, since: Instant::now() }
    }

    /// Writes `buf` at `at`, syncing and resting as it goes.
    fn write_at(&mut self, buf: &[u8], at: u64) -> io::Result<()> {
        self.file.write_all_at(buf, at)?;
        self.unsynced += buf.len() as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            std::thread::sleep(self.since.elapsed().min(std::time::Duration::from_millis(200)));
            self.unsynced = 0;
            self.since = Instant::now();
        }
        Ok(())
    }
}

/// Copies run in pieces of this size.
const COPY_CHUNK: usize = 1 << 20;
/// The compaction copies without the files until less than this was appended during a round...
const CATCH_UP_BYTES: u64 = 64 << 10;
/// ... or for at most this many rounds.
const CATCH_UP_ROUNDS: usize = 4;

/// Where the journal stood when nothing was pending: every record up to `seq` is durable and
/// ends at byte `offset` of the journal file. Taken by [`Journal::position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    seq: u64,
    offset: u64,
    /// Compactions done before it: a position is only meaningful in the file it was taken in.
    compactions: u64,
    /// `records_since_snapshot` and `bytes_since_snapshot` then: what a compaction removes.
    records: u64,
    bytes: u64,
}

impl Position {
    /// The last record it covers.
    pub fn seq(self) -> u64 {
        self.seq
    }
}

/// A snapshot being written; see the [module docs](self). Dropped unfinished, it removes its
/// tmp file and leaves everything as it was.
pub struct SnapshotWriter<'a> {
    journal: &'a Journal,
    from: Position,
    out: BufWriter<PacedWrite>,
    crc: crc32fast::Hasher,
    len: u64,
    started: Instant,
    installed: bool,
}

/// [`Paced`] as an [`io::Write`] at the end of the file.
struct PacedWrite {
    paced: Paced,
    at: u64,
}

impl Write for PacedWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.paced.write_at(buf, self.at)?;
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Journal {
    /// The journal's position when every record appended is durable and no leader, recovery or
    /// snapshot holds the files; `None` otherwise (ask again later). A caller that applies
    /// records to its state only once they are durable, and asks under the lock it applies
    /// them under with nothing queued, knows its state holds every record up to it.
    pub fn position(&self) -> Option<Position> {
        let st = self.state.lock();
        if st.busy || st.poisoned || st.snapshotting || st.durable + 1 != st.next_seq {
            return None;
        }
        // Not busy: nobody does I/O, so the lock is free (try_lock keeps the lock order moot).
        let io = self.io.try_lock()?;
        Some(Position {
            seq: st.durable,
            offset: io.durable_len,
            compactions: st.compactions,
            records: st.records_since_snapshot,
            bytes: st.bytes_since_snapshot,
        })
    }

    /// Starts a snapshot covering every record up to `from` (module docs, step 1). One at a
    /// time, and not while [`Journal::write_snapshot`] runs.
    ///
    /// # Errors
    /// [`JournalError::Poisoned`] while the journal is failed; [`JournalError::Io`] when the tmp
    /// file cannot be created, or another snapshot is being written, or `from` is stale (a
    /// compaction happened since).
    pub fn begin_snapshot(&self, from: Position) -> Result<SnapshotWriter<'_>, JournalError> {
        {
            let mut st = self.state.lock();
            while st.busy {
                self.turn.wait(&mut st);
            }
            if st.poisoned {
                return Err(JournalError::Poisoned);
            }
            if st.snapshotting || st.compactions != from.compactions || from.seq > st.durable {
                return Err(
                    io::Error::other("another snapshot is running, or a stale position").into()
                );
            }
            st.snapshotting = true;
        }
        let created = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(SNAPSHOT_TMP_FILE))
            .and_then(|file| {
                // The header is written last, when the length and the CRC are known.
                file.write_all_at(&[0; snapshot::HEADER_LEN], 0)?;
                Ok(file)
            });
        match created {
            Ok(file) => Ok(SnapshotWriter {
                journal: self,
                from,
                out: BufWriter::with_capacity(
                    256 << 10,
                    PacedWrite { paced: Paced::new(file), at: snapshot::HEADER_LEN as u64 },
                ),
                crc: crc32fast::Hasher::new(),
                len: 0,
                started: Instant::now(),
                installed: false,
            }),
            Err(e) => {
                self.state.lock().snapshotting = false;
                let _ = fs::remove_file(self.dir.join(SNAPSHOT_TMP_FILE));
                Err(e.into())
            }
        }
    }
}

impl Write for SnapshotWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl SnapshotWriter<'_> {
    /// The record the snapshot covers up to.
    pub fn covers(&self) -> u64 {
        self.from.seq
    }

    /// Installs the snapshot (module docs, step 2), then compacts the journal (step 3).
    ///
    /// # Errors
    /// As [`SnapshotWriter::install`] and [`SnapshotWriter::compact`].
    pub fn finish(mut self) -> Result<(), JournalError> {
        self.install()?;
        self.compact()
    }

    /// Writes the header, fsyncs, renames the snapshot into place and fsyncs the directory
    /// (module docs, step 2). The journal is untouched: it still holds every record.
    ///
    /// # Errors
    /// I/O: the journal is not poisoned (nothing it needs changed), and the next snapshot
    /// starts over.
    pub fn install(&mut self) -> Result<(), JournalError> {
        let journal = self.journal;
        let result = (|| -> io::Result<()> {
            self.out.flush()?;
            let mut crc = crc32fast::Hasher::new();
            let mut header = [0; snapshot::HEADER_LEN];
            header[snapshot::MAGIC_FIELD].copy_from_slice(&snapshot::MAGIC);
            header[snapshot::COVERS].copy_from_slice(&self.from.seq.to_le_bytes());
            header[snapshot::LEN].copy_from_slice(&self.len.to_le_bytes());
            crc.update(&header[snapshot::COVERS.start..snapshot::LEN.end]);
            crc.combine(&self.crc);
            header[snapshot::CRC].copy_from_slice(&crc.finalize().to_le_bytes());
            let file = &self.out.get_ref().paced.file;
            file.write_all_at(&header, 0)?;
            #[cfg(test)]
            journal.faults.before_sync()?;
            file.sync_all()?;
            fs::rename(journal.dir.join(SNAPSHOT_TMP_FILE), journal.dir.join(SNAPSHOT_FILE))?;
            self.installed = true;
            sync_dir(&journal.dir)
        })();
        let elapsed = self.started.elapsed().as_micros() as u64;
        journal.stats.last_snapshot_us.store(elapsed, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = result {
            journal.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!(dir = %journal.dir.display(), error = %e, "snapshot not installed; the journal keeps every record");
            return Err(e.into());
        }
        info!(
            dir = %journal.dir.display(),
            covers = self.from.seq,
            bytes = self.len,
            ms = elapsed / 1000,
            "snapshot written"
        );
        Ok(())
    }

    /// Drops the records the installed snapshot covers from the journal (module docs, step 3).
    /// Skipped (`Ok`) when the journal failed and recovered meanwhile: its records stay, skipped
    /// on load, until the next snapshot.
    ///
    /// # Errors
    /// I/O; after the rename, the journal is poisoned until it recovers.
    pub fn compact(&mut self) -> Result<(), JournalError> {
        let journal = self.journal;
        if !self.installed {
            return Err(io::Error::other("compaction before the snapshot is installed").into());
        }
        let dir = &journal.dir;
        let tmp_path = dir.join(JOURNAL_TMP_FILE);
        let epoch = journal.state.lock().epoch;
        let started = Instant::now();
        // Unlocked: the bytes up to the durable length never change while the epoch holds
        // (recovery truncates only after them; it is checked again below). Rounds catch up
        // with what was appended meanwhile, so that little is left to copy with the files held.
        let mut stable = self.from.offset;
        let tmp = (|| -> io::Result<File> {
            let source = File::open(dir.join(JOURNAL_FILE))?;
            let tmp = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp_path)?;
            let mut paced = Paced::new(tmp);
            for _ in 0..CATCH_UP_ROUNDS {
                let end = journal.io.lock().durable_len;
                copy_range(&source, &mut paced, stable, end, stable - self.from.offset)?;
                let copied = end.saturating_sub(stable);
                stable = end;
                if copied < CATCH_UP_BYTES {
                    break;
                }
            }
            paced.file.sync_data()?;
            Ok(paced.file)
        })();
        let tmp = match tmp {
            Ok(tmp) => tmp,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e.into());
            }
        };
        let mut st = journal.state.lock();
        while st.busy {
            journal.turn.wait(&mut st);
        }
        if st.poisoned || st.epoch != epoch {
            drop(st);
            let _ = fs::remove_file(&tmp_path);
            info!(dir = %dir.display(), "journal compaction skipped: the journal failed meanwhile");
            return Ok(());
        }
        st.busy = true;
        let unlocked = started.elapsed();
        let held = Instant::now();
        let swapped = MutexGuard::unlocked(&mut st, || {
            let mut io = journal.io.lock();
            // Not busy and not poisoned: everything written is durable, `len == durable_len`.
            let end = io.len;
            // Not paced: a rest would hold the files, and this is only what was appended
            // during the unlocked copy.
            let copied = (|| -> io::Result<()> {
                let mut buf = vec![0; (end - stable) as usize];
                io.file.read_exact_at(&mut buf, stable)?;
                tmp.write_all_at(&buf, stable - self.from.offset)?;
                tmp.sync_data()?;
                fs::rename(&tmp_path, dir.join(JOURNAL_FILE))
            })();
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp_path);
                return Err((false, e));
            }
            let len = end - self.from.offset;
            let old = std::mem::replace(&mut io.file, tmp);
            io.len = len;
            io.durable_len = len;
            sync_dir(dir).map_err(|e| (true, e))?;
            Ok(old)
        });
        st.busy = false;
        journal.turn.notify_all();
        match swapped {
            Ok(old) => {
                st.compactions += 1;
                st.records_since_snapshot -= self.from.records;
                st.bytes_since_snapshot -= self.from.bytes;
                info!(
                    dir = %dir.display(),
                    unlocked_ms = unlocked.as_millis() as u64,
                    held_ms = held.elapsed().as_millis() as u64,
                    "journal compacted"
                );
                // The old journal (all of it, hundreds of megabytes after a big load) is freed
                // when its last descriptor closes: here, with the files no longer held.
                drop(st);
                drop(old);
                Ok(())
            }
            Err((renamed, e)) => {
                let e = JournalError::from(e);
                if renamed {
                    st.compactions += 1;
                    st.records_since_snapshot -= self.from.records;
                    st.bytes_since_snapshot -= self.from.bytes;
                    journal.fail(&mut st, &e, "journal compaction renamed but not durable");
                } else {
                    journal.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(dir = %dir.display(), error = %e, "journal compaction failed; nothing changed");
                }
                Err(e)
            }
        }
    }
}

impl Drop for SnapshotWriter<'_> {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(self.journal.dir.join(SNAPSHOT_TMP_FILE));
        }
        self.journal.state.lock().snapshotting = false;
    }
}

/// Copies bytes `from..to` of `source` to `dest` at `at`, paced.
fn copy_range(source: &File, dest: &mut Paced, from: u64, to: u64, at: u64) -> io::Result<()> {
    let mut buf = vec![0; COPY_CHUNK.min((to.saturating_sub(from)) as usize)];
    let (mut pos, mut out) = (from, at);
    while pos < to {
        let n = buf.len().min((to - pos) as usize);
        source.read_exact_at(&mut buf[..n], pos)?;
        dest.write_at(&buf[..n], out)?;
        pos += n as u64;
        out += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::test_dir::TempDir;

    fn records(n: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        n.map(|i| format!("record {i}").into_bytes()).collect()
    }

    fn crash_image(dir: &std::path::Path, image: &std::path::Path) {
        fs::create_dir_all(image).unwrap();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), image.join(entry.file_name())).unwrap();
        }
    }

    /// Commits go on while a snapshot is written (no lock is held between begin and install)
    /// and while the journal is compacted; every record after the snapshot's position survives,
    /// in order, at every step.
    #[test]
    fn test_commits_go_on_during_snapshot_and_compaction() {
        let dir = TempDir::new("snapshot-unit", "concurrent");
        let image = TempDir::new("snapshot-unit", "concurrent-image");
        let (journal, _) = Journal::open(&dir.0).unwrap();
        for r in records(0..10) {
            journal.commit(&r).unwrap();
        }
        let from = journal.position().expect("nothing pending");
        assert_eq!(from.seq(), 10);
        {
            let mut snapshot = journal.begin_snapshot(from).unwrap();
            assert!(journal.position().is_none(), "one snapshot at a time");
            assert!(journal.write_snapshot(b"x").is_err(), "not beside a snapshot writer");
            for r in records(10..20) {
                journal.commit(&r).unwrap();
            }
            snapshot.write_all(b"state up to 10").unwrap();
            snapshot.install().unwrap();
            crash_image(&dir.0, &image.0);
            std::thread::scope(|s| {
                s.spawn(|| {
                    for r in records(20..300) {
                        journal.commit(&r).unwrap();
                    }
                });
                snapshot.compact().unwrap();
            });
        }
        assert_eq!(journal.records_since_snapshot(), 290);
        let next = journal.position().expect("idle again");
        assert_eq!(next.seq(), 300);
        drop(journal);
        let (_, loaded) = Journal::open(&dir.0).unwrap();
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"state up to 10"[..]));
        assert_eq!(loaded.records, records(10..300));
        // Killed between the install and the compaction: the same state.
        let (_, loaded) = Journal::open(&image.0).unwrap();
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"state up to 10"[..]));
        assert_eq!(loaded.records, records(10..20));
    }

    /// A snapshot that cannot be installed changes nothing and leaves the journal writable.
    #[test]
    fn test_failed_install_changes_nothing() {
        let dir = TempDir::new("snapshot-unit", "failed");
        let (journal, _) = Journal::open(&dir.0).unwrap();
        for r in records(0..5) {
            journal.commit(&r).unwrap();
        }
        let from = journal.position().unwrap();
        let mut snapshot = journal.begin_snapshot(from).unwrap();
        snapshot.write_all(b"state").unwrap();
        journal.faults.fail_syncs(true);
        assert!(snapshot.install().is_err());
        journal.faults.fail_syncs(false);
        assert!(snapshot.compact().is_err(), "nothing to compact against");
        drop(snapshot);
        assert!(!journal.is_poisoned());
        assert!(!dir.0.join(SNAPSHOT_TMP_FILE).exists() && !dir.0.join(SNAPSHOT_FILE).exists());
        for r in records(5..8) {
            journal.commit(&r).unwrap();
        }
        // A position from before a compaction is stale.
        let mut snapshot = journal.begin_snapshot(journal.position().unwrap()).unwrap();
        snapshot.write_all(b"state up to 8").unwrap();
        snapshot.finish().unwrap();
        assert!(journal.begin_snapshot(from).is_err(), "stale position");
        drop(journal);
        let (_, loaded) = Journal::open(&dir.0).unwrap();
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"state up to 8"[..]));
        assert!(loaded.records.is_empty());
    }
}
