//! The journal on a real file system: round trips, group commit under concurrency, torn and
//! corrupt tails at every byte, snapshots and compaction interrupted at every step.
//!
//! Commit rate with fsync on this machine (ignored by default):
//! `cargo test --release --test journal -- --ignored --nocapture commit_rate`

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use doxm_gate::control::journal::{
    Journal, JournalError, Loaded, TornTail, JOURNAL_FILE, SNAPSHOT_FILE, SNAPSHOT_TMP_FILE,
};

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("doxm-journal-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn payload(i: usize) -> Vec<u8> {
    // Varied lengths, including empty.
    (0..i % 97).map(|b| (b * 31 + i) as u8).collect()
}

fn open(dir: &Path) -> (Journal, Loaded) {
    Journal::open(dir).unwrap()
}

fn reopen(dir: &Path) -> Loaded {
    open(dir).1
}

fn journal_len(dir: &TempDir) -> u64 {
    fs::metadata(dir.file(JOURNAL_FILE)).unwrap().len()
}

/// Commits `payloads` and returns the journal's length after each.
fn commit_all(journal: &Journal, dir: &TempDir, payloads: &[Vec<u8>]) -> Vec<u64> {
    payloads
        .iter()
        .map(|p| {
            journal.commit(p).unwrap();
            journal_len(dir)
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn round_trip() {
    let dir = TempDir::new("round-trip");
    let payloads: Vec<Vec<u8>> = (0..300).map(payload).collect();
    {
        let (journal, loaded) = open(&dir.0);
        assert!(loaded.snapshot.is_none() && loaded.records.is_empty());
        assert!(loaded.torn_tail.is_none());
        let mut last = 0;
        for p in &payloads {
            let ticket = journal.append(p).unwrap();
            assert_eq!(ticket.seq(), last + 1, "tickets increase by one");
            last = ticket.seq();
            if last % 7 == 0 {
                journal.wait_durable(ticket).unwrap();
            }
        }
        journal.commit(b"last").unwrap();
        assert_eq!(journal.records_since_snapshot(), 301);
    }
    let (journal, loaded) = open(&dir.0);
    assert_eq!(loaded.records[..300], payloads[..]);
    assert_eq!(loaded.records[300], b"last");
    assert!(loaded.torn_tail.is_none());
    assert_eq!(journal.records_since_snapshot(), 301);
    assert_eq!(journal.bytes_since_snapshot(), journal_len(&dir));
    // Appends continue the sequence.
    let ticket = journal.append(b"next").unwrap();
    assert_eq!(ticket.seq(), 302);
    journal.wait_durable(ticket).unwrap();
}

#[test]
fn large_record() {
    // One 100k-device batch is one record of tens of megabytes.
    let dir = TempDir::new("large");
    let big: Vec<u8> = (0..30_000_000u32).map(|i| (i % 251) as u8).collect();
    let (journal, _) = open(&dir.0);
    journal.commit(b"small").unwrap();
    journal.commit(&big).unwrap();
    drop(journal);
    let loaded = reopen(&dir.0);
    assert_eq!(loaded.records.len(), 2);
    assert!(loaded.records[1] == big);
}

#[test]
fn group_commit_concurrent() {
    const THREADS: usize = 8;
    const COMMITS: usize = 200;
    let dir = TempDir::new("group");
    let (journal, _) = open(&dir.0);
    let journal = Arc::new(journal);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                for i in 0..COMMITS {
                    journal.commit(format!("{t}:{i}").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = journal.syncs();
    let commits = (THREADS * COMMITS) as u64;
    println!(
        "{commits} commits, {syncs} fsyncs: {:.2} commits per fsync",
        commits as f64 / syncs as f64
    );
    assert!(syncs <= commits);
    drop(journal);

    let loaded = reopen(&dir.0);
    assert_eq!(loaded.records.len(), THREADS * COMMITS);
    let mut seen: Vec<String> =
        loaded.records.iter().map(|r| String::from_utf8(r.clone()).unwrap()).collect();
    // Each thread's commits are in its own order...
    for t in 0..THREADS {
        let mine: Vec<&String> = seen.iter().filter(|s| s.starts_with(&format!("{t}:"))).collect();
        let expected: Vec<String> = (0..COMMITS).map(|i| format!("{t}:{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    // ... and every commit is there exactly once.
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), THREADS * COMMITS);
}

#[test]
fn torn_tail_at_every_offset() {
    let base = TempDir::new("torn-base");
    let payloads = [b"first record".to_vec(), b"second".to_vec(), vec![0xA5; 60]];
    let ends = {
        let (journal, _) = open(&base.0);
        commit_all(&journal, &base, &payloads)
    };
    let (good, end) = (ends[1], ends[2]);
    let work = TempDir::new("torn-work");
    for cut in good..end {
        copy_dir(&base.0, &work.0);
        OpenOptions::new().write(true).open(work.file(JOURNAL_FILE)).unwrap().set_len(cut).unwrap();
        let (journal, loaded) = open(&work.0);
        assert_eq!(loaded.records, payloads[..2], "cut at {cut}");
        let expected = (cut > good).then(|| TornTail {
            offset: good,
            discarded_bytes: cut - good,
            reason: if cut - good < 20 { "truncated header" } else { "length past end of file" },
            intact_after: 0,
        });
        assert_eq!(loaded.torn_tail, expected, "cut at {cut}");
        assert_eq!(journal_len(&work), good, "truncated back to the good prefix");
        // The next append follows the good prefix directly: no garbage in between.
        journal.commit(b"after").unwrap();
        drop(journal);
        let loaded = reopen(&work.0);
        assert_eq!(loaded.records, [&payloads[..2], &[b"after".to_vec()]].concat(), "cut at {cut}");
        assert!(loaded.torn_tail.is_none());
    }
}

#[test]
fn corrupt_last_record() {
    let dir = TempDir::new("flip-last");
    let payloads: Vec<Vec<u8>> = (1..=3).map(payload).collect();
    let ends = {
        let (journal, _) = open(&dir.0);
        commit_all(&journal, &dir, &payloads)
    };
    flip(&dir.file(JOURNAL_FILE), ends[2] - 1);
    let (journal, loaded) = open(&dir.0);
    assert_eq!(loaded.records, payloads[..2]);
    let tail = loaded.torn_tail.unwrap();
    assert_eq!((tail.offset, tail.reason, tail.intact_after), (ends[1], "checksum mismatch", 0));
    assert_eq!(tail.discarded_bytes, ends[2] - ends[1]);
    journal.commit(b"after").unwrap();
    drop(journal);
    assert_eq!(reopen(&dir.0).records, [&payloads[..2], &[b"after".to_vec()]].concat());
}

#[test]
fn corrupt_header_fields() {
    // Magic, sequence and length are each caught (the CRC covers sequence and length).
    let cases: [(u64, &str); 3] =
        [(0, "bad magic"), (4, "checksum mismatch"), (12, "length past end of file")];
    for (field, reason) in cases {
        let dir = TempDir::new("flip-header");
        let ends = {
            let (journal, _) = open(&dir.0);
            commit_all(&journal, &dir, &[b"one".to_vec(), b"two".to_vec()])
        };
        let mut bytes = fs::read(dir.file(JOURNAL_FILE)).unwrap();
        // Byte 15 is the length's top byte: a flip there claims gigabytes.
        let at = ends[0] + if field == 12 { 15 } else { field };
        bytes[at as usize] ^= 0x40;
        fs::write(dir.file(JOURNAL_FILE), bytes).unwrap();
        let loaded = reopen(&dir.0);
        assert_eq!(loaded.records, [b"one".to_vec()], "{reason}");
        assert_eq!(loaded.torn_tail.unwrap().reason, reason);
    }
}

#[test]
fn sequence_out_of_order() {
    // A valid record whose sequence is not the next one (here: a record duplicated by a
    // misbehaving disk or copy) ends the good prefix.
    let dir = TempDir::new("seq");
    let ends = {
        let (journal, _) = open(&dir.0);
        commit_all(&journal, &dir, &[b"one".to_vec(), b"two".to_vec()])
    };
    let mut bytes = fs::read(dir.file(JOURNAL_FILE)).unwrap();
    let second = bytes[ends[0] as usize..].to_vec();
    bytes.extend_from_slice(&second);
    fs::write(dir.file(JOURNAL_FILE), bytes).unwrap();
    let loaded = reopen(&dir.0);
    assert_eq!(loaded.records, [b"one".to_vec(), b"two".to_vec()]);
    let tail = loaded.torn_tail.unwrap();
    assert_eq!((tail.offset, tail.reason), (ends[1], "sequence out of order"));
}

/// A corrupt record in the middle means the disk lost data that may have been acknowledged. We
/// keep the prefix (nothing after a broken link can be trusted: fail closed) and report loudly:
/// `intact_after` counts the intact records thrown away with it.
#[test]
fn corrupt_middle_record() {
    let dir = TempDir::new("flip-middle");
    let payloads: Vec<Vec<u8>> = (10..15).map(payload).collect();
    let ends = {
        let (journal, _) = open(&dir.0);
        commit_all(&journal, &dir, &payloads)
    };
    flip(&dir.file(JOURNAL_FILE), ends[1] - 1);
    let (journal, loaded) = open(&dir.0);
    assert_eq!(loaded.records, payloads[..1]);
    assert_eq!(
        loaded.torn_tail,
        Some(TornTail {
            offset: ends[0],
            discarded_bytes: ends[4] - ends[0],
            reason: "checksum mismatch",
            intact_after: 3,
        })
    );
    assert_eq!(journal_len(&dir), ends[0]);
    journal.commit(b"after").unwrap();
    drop(journal);
    assert_eq!(reopen(&dir.0).records, [payloads[0].clone(), b"after".to_vec()]);
}

#[test]
fn snapshot_and_compaction() {
    let dir = TempDir::new("snapshot");
    {
        let (journal, _) = open(&dir.0);
        for i in 0..10 {
            journal.commit(&payload(i)).unwrap();
        }
        assert_eq!(journal.records_since_snapshot(), 10);
        journal.write_snapshot(b"state after 10").unwrap();
        assert_eq!(journal.records_since_snapshot(), 0);
        assert_eq!(journal.bytes_since_snapshot(), 0);
        assert_eq!(journal_len(&dir), 0, "the journal restarts empty");
        for i in 10..13 {
            journal.commit(&payload(i)).unwrap();
        }
        assert_eq!(journal.records_since_snapshot(), 3);
    }
    let (journal, loaded) = open(&dir.0);
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"state after 10"[..]));
    assert_eq!(loaded.records, (10..13).map(payload).collect::<Vec<_>>());
    assert!(loaded.torn_tail.is_none());
    // Sequence numbers continue across compactions.
    let ticket = journal.append(b"x").unwrap();
    assert_eq!(ticket.seq(), 14);
    journal.wait_durable(ticket).unwrap();
    // A second snapshot replaces the first.
    journal.write_snapshot(b"state after 14").unwrap();
    journal.commit(b"y").unwrap();
    drop(journal);
    let loaded = reopen(&dir.0);
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"state after 14"[..]));
    assert_eq!(loaded.records, [b"y".to_vec()]);
}

#[test]
fn crash_before_snapshot_rename() {
    // snapshot.tmp written (complete or not) but never renamed: ignored and removed; the old
    // snapshot and the whole journal are the state.
    let dir = TempDir::new("crash-tmp");
    {
        let (journal, _) = open(&dir.0);
        journal.commit(b"a").unwrap();
        journal.write_snapshot(b"old state").unwrap();
        journal.commit(b"b").unwrap();
        journal.commit(b"c").unwrap();
    }
    // A complete-looking tmp (a real snapshot's bytes) and a partial one are both ignored.
    for tmp in [fs::read(dir.file(SNAPSHOT_FILE)).unwrap(), b"DXS\x01 partial".to_vec()] {
        fs::write(dir.file(SNAPSHOT_TMP_FILE), tmp).unwrap();
        let loaded = reopen(&dir.0);
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"old state"[..]));
        assert_eq!(loaded.records, [b"b".to_vec(), b"c".to_vec()]);
        assert!(!dir.file(SNAPSHOT_TMP_FILE).exists());
    }
}

#[test]
fn crash_after_rename_before_journal_reset() {
    // The new snapshot is in place but the journal still holds the records it covers: they are
    // skipped, not replayed twice, and the next open finishes the compaction.
    let dir = TempDir::new("crash-rename");
    let (journal, _) = open(&dir.0);
    journal.commit(b"a").unwrap();
    journal.write_snapshot(b"state a").unwrap();
    journal.commit(b"b").unwrap();
    journal.commit(b"c").unwrap();
    let old_journal = fs::read(dir.file(JOURNAL_FILE)).unwrap();
    journal.write_snapshot(b"state a b c").unwrap();
    drop(journal);
    fs::write(dir.file(JOURNAL_FILE), &old_journal).unwrap();

    let (journal, loaded) = open(&dir.0);
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"state a b c"[..]));
    assert!(loaded.records.is_empty(), "covered records are not replayed");
    assert!(loaded.torn_tail.is_none());
    assert_eq!(journal_len(&dir), 0, "the interrupted compaction is finished");
    assert_eq!(journal.records_since_snapshot(), 0);
    journal.commit(b"d").unwrap();
    drop(journal);
    let loaded = reopen(&dir.0);
    assert_eq!(loaded.records, [b"d".to_vec()]);
}

#[test]
fn crash_after_rename_with_unwritten_records() {
    // Records appended but never written are covered by the snapshot alone: after a crash the
    // journal ends before what the snapshot covers, and appends must still follow cleanly.
    let dir = TempDir::new("crash-unwritten");
    let (journal, _) = open(&dir.0);
    journal.commit(b"a").unwrap();
    let b = journal.append(b"b").unwrap();
    let c = journal.append(b"c").unwrap();
    let old_journal = fs::read(dir.file(JOURNAL_FILE)).unwrap();
    journal.write_snapshot(b"state a b c").unwrap();
    journal.wait_durable(b).unwrap();
    journal.wait_durable(c).unwrap();
    drop(journal);
    fs::write(dir.file(JOURNAL_FILE), &old_journal).unwrap();

    let (journal, loaded) = open(&dir.0);
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"state a b c"[..]));
    assert!(loaded.records.is_empty());
    let d = journal.append(b"d").unwrap();
    assert_eq!(d.seq(), 4);
    journal.wait_durable(d).unwrap();
    drop(journal);
    let loaded = reopen(&dir.0);
    assert_eq!(loaded.records, [b"d".to_vec()]);
    assert!(loaded.torn_tail.is_none());
}

#[test]
fn corrupt_snapshot_is_a_hard_error() {
    let dir = TempDir::new("bad-snapshot");
    {
        let (journal, _) = open(&dir.0);
        journal.commit(b"a").unwrap();
        journal.write_snapshot(b"state").unwrap();
    }
    let good = fs::read(dir.file(SNAPSHOT_FILE)).unwrap();
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..10].to_vec(), "shorter than its header"),
        (good[..good.len() - 1].to_vec(), "length does not match the file size"),
        ([&good[..], b"x"].concat(), "length does not match the file size"),
    ];
    for (at, reason) in
        [(0, "bad magic"), (3, "unsupported format version"), (25, "checksum mismatch")]
    {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        cases.push((bad, reason));
    }
    for (bytes, reason) in cases {
        fs::write(dir.file(SNAPSHOT_FILE), bytes).unwrap();
        match Journal::open(&dir.0) {
            Err(JournalError::CorruptSnapshot { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("expected a corrupt snapshot ({reason}), got {other:?}"),
        }
    }
    // Restored, it loads again.
    fs::write(dir.file(SNAPSHOT_FILE), good).unwrap();
    assert_eq!(reopen(&dir.0).snapshot.as_deref(), Some(&b"state"[..]));
}

#[test]
fn missing_snapshot_with_later_journal_is_a_hard_error() {
    // Records 1..=2 live only in the snapshot; without it, starting from record 3 would silently
    // lose them.
    let dir = TempDir::new("gap");
    {
        let (journal, _) = open(&dir.0);
        journal.commit(b"a").unwrap();
        journal.commit(b"b").unwrap();
        journal.write_snapshot(b"state").unwrap();
        journal.commit(b"c").unwrap();
    }
    fs::remove_file(dir.file(SNAPSHOT_FILE)).unwrap();
    assert!(matches!(Journal::open(&dir.0), Err(JournalError::Gap { covered: 0, first: 3 })));
}

#[test]
fn newer_format_is_refused_not_truncated() {
    let dir = TempDir::new("version");
    {
        let (journal, _) = open(&dir.0);
        journal.commit(b"a").unwrap();
    }
    let mut bytes = fs::read(dir.file(JOURNAL_FILE)).unwrap();
    bytes[3] = 2;
    fs::write(dir.file(JOURNAL_FILE), &bytes).unwrap();
    assert!(matches!(Journal::open(&dir.0), Err(JournalError::UnsupportedVersion { found: 2 })));
    assert_eq!(fs::read(dir.file(JOURNAL_FILE)).unwrap(), bytes, "left untouched");
}

/// Commits per second with fsync: 1 thread, then 8 threads sharing fsyncs (three rounds), then
/// one 30 MiB batch and one 30 MiB snapshot.
#[test]
#[ignore = "a measurement: cargo test --release --test journal -- --ignored --nocapture"]
fn commit_rate() {
    let record = vec![0x5A; 300];
    // Three rounds, alternating: a shared disk is noisy, so look at the spread.
    for (threads, per_thread) in [(1, 500), (8, 500)].repeat(3) {
        let dir = TempDir::new("rate");
        let (journal, _) = open(&dir.0);
        let journal = Arc::new(journal);
        let start = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (journal, record) = (Arc::clone(&journal), record.clone());
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        journal.commit(&record).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let elapsed = start.elapsed();
        let commits = threads * per_thread;
        println!(
            "{threads} thread(s): {commits} commits of {} B in {elapsed:.2?}: {:.0} commits/s, \
             {} fsyncs ({:.1} commits per fsync)",
            record.len(),
            commits as f64 / elapsed.as_secs_f64(),
            journal.syncs(),
            commits as f64 / journal.syncs() as f64
        );
    }
    let dir = TempDir::new("rate-big");
    let (journal, _) = open(&dir.0);
    let big = vec![0x5A; 30 << 20];
    let start = Instant::now();
    journal.commit(&big).unwrap();
    println!("one 30 MiB record: {:.2?}", start.elapsed());
    let start = Instant::now();
    journal.write_snapshot(&big).unwrap();
    println!("one 30 MiB snapshot + compaction: {:.2?}", start.elapsed());
}
