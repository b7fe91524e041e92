//! The journal on a real file system: round trips, group commit under concurrency, torn and
//! corrupt tails at every byte, snapshots and compaction interrupted at every step.
//!
//! Commit rate with fsync on this machine (ignored by default):
//! `cargo test --release --test journal -- --ignored --nocapture commit_rate`

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

mod support;

use support::TempDir;

use doxm_gate::control::journal::{
    check, salvage, Corruption, Damage, Journal, JournalError, Loaded, TornTail, JOURNAL_FILE,
    LOCK_FILE, SNAPSHOT_FILE, SNAPSHOT_TMP_FILE,
};

/// A file in a test directory.
fn file(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
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
    fs::metadata(file(dir, JOURNAL_FILE)).unwrap().len()
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
        let (journal, loaded) = open(dir.path());
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
    let (journal, loaded) = open(dir.path());
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
    let (journal, _) = open(dir.path());
    journal.commit(b"small").unwrap();
    journal.commit(&big).unwrap();
    drop(journal);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.records.len(), 2);
    assert!(loaded.records[1] == big);
}

#[test]
fn group_commit_concurrent() {
    const THREADS: usize = 8;
    const COMMITS: usize = 200;
    let dir = TempDir::new("group");
    let (journal, _) = open(dir.path());
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

    let loaded = reopen(dir.path());
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
        let (journal, _) = open(base.path());
        commit_all(&journal, &base, &payloads)
    };
    let (good, end) = (ends[1], ends[2]);
    let work = TempDir::new("torn-work");
    for cut in good..end {
        copy_dir(base.path(), work.path());
        OpenOptions::new()
            .write(true)
            .open(file(&work, JOURNAL_FILE))
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (journal, loaded) = open(work.path());
        assert_eq!(loaded.records, payloads[..2], "cut at {cut}");
        let expected = (cut > good).then(|| TornTail {
            offset: good,
            discarded_bytes: cut - good,
            reason: if cut - good < 20 { "truncated header" } else { "length past end of file" },
        });
        assert_eq!(loaded.torn_tail, expected, "cut at {cut}");
        assert_eq!(journal_len(&work), good, "truncated back to the good prefix");
        // The next append follows the good prefix directly: no garbage in between.
        journal.commit(b"after").unwrap();
        drop(journal);
        let loaded = reopen(work.path());
        assert_eq!(loaded.records, [&payloads[..2], &[b"after".to_vec()]].concat(), "cut at {cut}");
        assert!(loaded.torn_tail.is_none());
    }
}

/// Every file of `dir` but the lock (which holds the opener's pid), by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != LOCK_FILE)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

fn corruption(dir: &Path) -> Corruption {
    match Journal::open(dir) {
        Err(JournalError::Corrupt(c)) => *c,
        Err(e) => panic!("expected corruption, got {e}"),
        Ok((_, loaded)) => panic!("expected corruption, the journal opened: {loaded:?}"),
    }
}

/// A byte flipped in each field of a record (magic, length, payload, checksum), in the first,
/// a middle and the last record: every one is corruption, refused with the offset and record
/// named, and no file changes. Only a cut (a torn tail) is discarded.
#[test]
fn flipped_byte_in_every_field_is_refused() {
    let base = TempDir::new("flip-base");
    let payloads: Vec<Vec<u8>> =
        (0..5).map(|i| format!("{{\"record\":{i},\"pad\":\"xxxxxxxx\"}}").into_bytes()).collect();
    let ends = {
        let (journal, _) = open(base.path());
        journal.write_snapshot(b"state").unwrap();
        commit_all(&journal, &base, &payloads)
    };
    let starts: Vec<u64> = [0].into_iter().chain(ends.iter().copied()).collect();
    // (field, offset in the record, expected reason); 13 is a low byte of the length (a smaller
    // or larger length), 15 its top byte (claims gigabytes).
    let fields: [(&str, u64, &[&str]); 6] = [
        ("magic", 1, &["bad magic"]),
        ("length low byte", 12, &["checksum mismatch", "length past end of file"]),
        ("length top byte", 15, &["length past end of file"]),
        ("sequence", 6, &["checksum mismatch"]),
        ("checksum", 17, &["checksum mismatch"]),
        ("payload", 25, &["checksum mismatch"]),
    ];
    let work = TempDir::new("flip-work");
    for (place, record) in [("start", 0), ("middle", 2), ("tail", 4)] {
        for (field, at, reasons) in fields {
            copy_dir(base.path(), work.path());
            flip(&file(&work, JOURNAL_FILE), starts[record] + at);
            let before = files(work.path());
            let c = corruption(work.path());
            let what = format!("{field} of the {place} record");
            assert_eq!(c.offset, starts[record], "{what}");
            assert_eq!((c.record, c.seq), (record as u64 + 1, record as u64 + 1), "{what}");
            assert!(reasons.contains(&c.reason), "{what}: {}", c.reason);
            assert_eq!(c.intact_after, 4 - record as u64, "{what}");
            assert_eq!(c.path, file(&work, JOURNAL_FILE));
            assert_eq!(files(work.path()), before, "{what}: every file byte-for-byte as it was");
            let text = JournalError::Corrupt(Box::new(c)).to_string();
            for needle in [
                format!("offset {}", starts[record]),
                format!("record {}", record + 1),
                format!("doxm-gate journal check --state-dir {}", work.path().display()),
                format!(
                    "doxm-gate journal salvage --state-dir {} --into NEWDIR",
                    work.path().display()
                ),
            ] {
                assert!(text.contains(&needle), "{what}: {text:?} lacks {needle:?}");
            }
        }
    }
}

/// A cut last record, and the zero-filled pages of a write that never finished, are torn tails:
/// discarded, and the journal continues after the good prefix.
#[test]
fn zero_filled_tail_is_torn() {
    let dir = TempDir::new("zeros");
    let ends = {
        let (journal, _) = open(dir.path());
        commit_all(&journal, &dir, &[b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()])
    };
    // The second record's payload zeroed (header intact), then 4 KiB of zeros after it.
    let mut bytes = fs::read(file(&dir, JOURNAL_FILE)).unwrap();
    for b in &mut bytes[ends[0] as usize + 20..] {
        *b = 0;
    }
    bytes.resize(bytes.len() + 4096, 0);
    fs::write(file(&dir, JOURNAL_FILE), &bytes).unwrap();
    let (journal, loaded) = open(dir.path());
    assert_eq!(loaded.records, [b"{\"a\":1}".to_vec()]);
    let tail = loaded.torn_tail.unwrap();
    assert_eq!((tail.offset, tail.reason), (ends[0], "zero-filled"));
    journal.commit(b"after").unwrap();
    drop(journal);
    assert_eq!(reopen(dir.path()).records, [b"{\"a\":1}".to_vec(), b"after".to_vec()]);
}

#[test]
fn sequence_out_of_order_is_corruption() {
    // A valid record whose sequence is not the next one (here: a record duplicated by a
    // misbehaving disk or copy) cannot be a torn write.
    let dir = TempDir::new("seq");
    let ends = {
        let (journal, _) = open(dir.path());
        commit_all(&journal, &dir, &[b"one".to_vec(), b"two".to_vec()])
    };
    let mut bytes = fs::read(file(&dir, JOURNAL_FILE)).unwrap();
    let second = bytes[ends[0] as usize..].to_vec();
    bytes.extend_from_slice(&second);
    fs::write(file(&dir, JOURNAL_FILE), bytes).unwrap();
    let c = corruption(dir.path());
    assert_eq!((c.offset, c.record, c.seq, c.reason), (ends[1], 3, 3, "sequence out of order"));
}

/// `check` reports and changes nothing; `salvage` writes the snapshot and the valid prefix into
/// a new directory that opens, and leaves the old one as it was.
#[test]
fn check_and_salvage_a_corrupt_directory() {
    let dir = TempDir::new("salvage-src");
    let into = TempDir::new("salvage-into");
    let payloads: Vec<Vec<u8>> = (20..26).map(payload).collect();
    let ends = {
        let (journal, _) = open(dir.path());
        journal.commit(b"covered").unwrap();
        journal.write_snapshot(b"state").unwrap();
        commit_all(&journal, &dir, &payloads)
    };
    flip(&file(&dir, JOURNAL_FILE), ends[2] + 25);
    let before = files(dir.path());

    let report = check(dir.path()).unwrap();
    assert!(!report.would_start());
    assert_eq!(report.snapshot, Some((1, 5)));
    assert_eq!((report.records, report.first_seq, report.last_seq), (3, 2, 4));
    let Some(Damage::Corrupt(c)) = &report.damage else { panic!("{report:?}") };
    assert_eq!((c.offset, c.record, c.seq, c.intact_after), (ends[2], 4, 5, 2));
    let text = report.to_string();
    assert!(text.contains("CORRUPT"), "{text}");
    assert!(text.contains(&format!("offset {}", ends[2])), "{text}");
    assert_eq!(files(dir.path()), before);

    let salvaged = salvage(dir.path(), into.path()).unwrap();
    let text = salvaged.to_string();
    assert!(text.contains("kept 3 records"), "{text}");
    assert!(text.contains(&format!("--state-dir {}", into.path().display())), "{text}");
    assert_eq!(files(dir.path()), before, "salvage leaves the source as it was");
    assert!(check(into.path()).unwrap().would_start());
    let (_, loaded) = open(into.path());
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"state"[..]));
    assert_eq!(loaded.records, payloads[..3]);
    assert!(loaded.torn_tail.is_none());
    // Salvage writes only into a new or empty directory.
    assert!(salvage(dir.path(), into.path()).is_err());
}

/// One process owns a state directory: a second opener is refused with the directory and the
/// holder's pid; the lock goes with the journal.
#[test]
fn state_dir_is_locked() {
    let dir = TempDir::new("lock");
    let (journal, _) = open(dir.path());
    let refused = Journal::open(dir.path()).map(|_| ()).unwrap_err();
    let pid = std::process::id();
    assert!(
        matches!(&refused, JournalError::Locked { dir: d, pid: Some(p) } if *d == dir.path() && *p == pid),
        "{refused:?}"
    );
    let text = refused.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains(&format!("pid {pid}"))
    );
    assert!(matches!(check(dir.path()), Err(JournalError::Locked { .. })));
    journal.commit(b"still working").unwrap();
    drop(journal);
    assert_eq!(reopen(dir.path()).records, [b"still working".to_vec()]);
}

#[test]
fn snapshot_and_compaction() {
    let dir = TempDir::new("snapshot");
    {
        let (journal, _) = open(dir.path());
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
    let (journal, loaded) = open(dir.path());
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
    let loaded = reopen(dir.path());
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"state after 14"[..]));
    assert_eq!(loaded.records, [b"y".to_vec()]);
}

#[test]
fn crash_before_snapshot_rename() {
    // snapshot.tmp written (complete or not) but never renamed: ignored and removed; the old
    // snapshot and the whole journal are the state.
    let dir = TempDir::new("crash-tmp");
    {
        let (journal, _) = open(dir.path());
        journal.commit(b"a").unwrap();
        journal.write_snapshot(b"old state").unwrap();
        journal.commit(b"b").unwrap();
        journal.commit(b"c").unwrap();
    }
    // A complete-looking tmp (a real snapshot's bytes) and a partial one are both ignored.
    for tmp in [fs::read(file(&dir, SNAPSHOT_FILE)).unwrap(), b"DXS\x01 partial".to_vec()] {
        fs::write(file(&dir, SNAPSHOT_TMP_FILE), tmp).unwrap();
        let loaded = reopen(dir.path());
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"old state"[..]));
        assert_eq!(loaded.records, [b"b".to_vec(), b"c".to_vec()]);
        assert!(!file(&dir, SNAPSHOT_TMP_FILE).exists());
    }
}

#[test]
fn crash_after_rename_before_journal_reset() {
    // The new snapshot is in place but the journal still holds the records it covers: they are
    // skipped, not replayed twice, and the next open finishes the compaction.
    let dir = TempDir::new("crash-rename");
    let (journal, _) = open(dir.path());
    journal.commit(b"a").unwrap();
    journal.write_snapshot(b"state a").unwrap();
    journal.commit(b"b").unwrap();
    journal.commit(b"c").unwrap();
    let old_journal = fs::read(file(&dir, JOURNAL_FILE)).unwrap();
    journal.write_snapshot(b"state a b c").unwrap();
    drop(journal);
    fs::write(file(&dir, JOURNAL_FILE), &old_journal).unwrap();

    let (journal, loaded) = open(dir.path());
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"state a b c"[..]));
    assert!(loaded.records.is_empty(), "covered records are not replayed");
    assert!(loaded.torn_tail.is_none());
    assert_eq!(journal_len(&dir), 0, "the interrupted compaction is finished");
    assert_eq!(journal.records_since_snapshot(), 0);
    journal.commit(b"d").unwrap();
    drop(journal);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.records, [b"d".to_vec()]);
}

#[test]
fn crash_after_rename_with_unwritten_records() {
    // Records appended but never written are covered by the snapshot alone: after a crash the
    // journal ends before what the snapshot covers, and appends must still follow cleanly.
    let dir = TempDir::new("crash-unwritten");
    let (journal, _) = open(dir.path());
    journal.commit(b"a").unwrap();
    let b = journal.append(b"b").unwrap();
    let c = journal.append(b"c").unwrap();
    let old_journal = fs::read(file(&dir, JOURNAL_FILE)).unwrap();
    journal.write_snapshot(b"state a b c").unwrap();
    journal.wait_durable(b).unwrap();
    journal.wait_durable(c).unwrap();
    drop(journal);
    fs::write(file(&dir, JOURNAL_FILE), &old_journal).unwrap();

    let (journal, loaded) = open(dir.path());
    assert_eq!(loaded.snapshot.as_deref(), Some(&b"state a b c"[..]));
    assert!(loaded.records.is_empty());
    let d = journal.append(b"d").unwrap();
    assert_eq!(d.seq(), 4);
    journal.wait_durable(d).unwrap();
    drop(journal);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.records, [b"d".to_vec()]);
    assert!(loaded.torn_tail.is_none());
}

#[test]
fn corrupt_snapshot_is_a_hard_error() {
    let dir = TempDir::new("bad-snapshot");
    {
        let (journal, _) = open(dir.path());
        journal.commit(b"a").unwrap();
        journal.write_snapshot(b"state").unwrap();
    }
    let good = fs::read(file(&dir, SNAPSHOT_FILE)).unwrap();
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
        fs::write(file(&dir, SNAPSHOT_FILE), bytes).unwrap();
        match Journal::open(dir.path()) {
            Err(JournalError::CorruptSnapshot { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("expected a corrupt snapshot ({reason}), got {other:?}"),
        }
    }
    // Restored, it loads again.
    fs::write(file(&dir, SNAPSHOT_FILE), good).unwrap();
    assert_eq!(reopen(dir.path()).snapshot.as_deref(), Some(&b"state"[..]));
}

#[test]
fn missing_snapshot_with_later_journal_is_a_hard_error() {
    // Records 1..=2 live only in the snapshot; without it, starting from record 3 would silently
    // lose them.
    let dir = TempDir::new("gap");
    {
        let (journal, _) = open(dir.path());
        journal.commit(b"a").unwrap();
        journal.commit(b"b").unwrap();
        journal.write_snapshot(b"state").unwrap();
        journal.commit(b"c").unwrap();
    }
    fs::remove_file(file(&dir, SNAPSHOT_FILE)).unwrap();
    assert!(matches!(Journal::open(dir.path()), Err(JournalError::Gap { covered: 0, first: 3 })));
}

#[test]
fn newer_format_is_refused_not_truncated() {
    let dir = TempDir::new("version");
    {
        let (journal, _) = open(dir.path());
        journal.commit(b"a").unwrap();
    }
    let mut bytes = fs::read(file(&dir, JOURNAL_FILE)).unwrap();
    bytes[3] = 2;
    fs::write(file(&dir, JOURNAL_FILE), &bytes).unwrap();
    assert!(matches!(
        Journal::open(dir.path()),
        Err(JournalError::UnsupportedVersion { found: 2 })
    ));
    assert_eq!(fs::read(file(&dir, JOURNAL_FILE)).unwrap(), bytes, "left untouched");
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
        let (journal, _) = open(dir.path());
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
    let (journal, _) = open(dir.path());
    let big = vec![0x5A; 30 << 20];
    let start = Instant::now();
    journal.commit(&big).unwrap();
    println!("one 30 MiB record: {:.2?}", start.elapsed());
    let start = Instant::now();
    journal.write_snapshot(&big).unwrap();
    println!("one 30 MiB snapshot + compaction: {:.2?}", start.elapsed());
}
