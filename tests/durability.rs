//! The state directory against operator and disk mistakes, on the real daemon: two gates on one
//! directory, and a journal damaged before its last record (refused, files untouched, then
//! `doxm-gate journal check` and `salvage`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use doxm_gate::control::journal::{JOURNAL_FILE, LOCK_FILE};
use support::{entry, to_json, uuid, Gate, GateOpts, TempDir, BIN};

fn put(gate: &Gate, space: u32, i: u64) {
    let u = uuid(space, i);
    let reply = gate.call(
        "PUT",
        &format!("/v1/devices/{u}"),
        Some(&to_json(&entry(u, "d", (Some(3), Some(true), false)))),
    );
    assert_eq!(reply.status, 201, "{reply:?}");
}

/// Every file of `dir` but the lock, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("state dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name() != LOCK_FILE)
        .map(|e| {
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// The byte offset where each record of a journal starts.
fn record_offsets(journal: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 20 <= journal.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(journal[at + 12..at + 16].try_into().expect("4 bytes"));
        at += 20 + len as usize;
    }
    offsets
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run doxm-gate");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn two_gates_on_one_state_dir() {
    let dir = TempDir::new("two-gates");
    let opts = GateOpts::ports(8).state_dir(dir.path()).policy("resume");
    let Some(mut first) = Gate::start(opts.clone()) else { return };
    put(&first, 0x300, 0);
    let pid = first.pid().expect("running");

    let started = Instant::now();
    let log = Gate::refused(opts.clone());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused quickly: {:?}",
        started.elapsed()
    );
    assert!(log.contains(&format!("state directory {} is locked", dir.path().display())), "{log}");
    assert!(log.contains(&format!("(pid {pid})")), "{log}");
    assert!(log.contains("exit status: 2"), "{log}");

    // The first gate keeps working, and still owns everything it acknowledged.
    put(&first, 0x300, 1);
    assert_eq!(first.device_count(), 2);
    first.kill9();
    // The kernel released the lock with the process: the directory can be used again.
    let again = first.restart();
    assert_eq!(again.device_count(), 2);
}

#[test]
fn corrupt_journal_is_refused_then_checked_and_salvaged() {
    let dir = TempDir::new("corrupt");
    let into = TempDir::new("salvaged");
    let opts = GateOpts::ports(16).state_dir(dir.path()).policy("resume");
    let Some(mut gate) = Gate::start(opts.clone()) else { return };
    for i in 0..10 {
        put(&gate, 0x301, i);
    }
    gate.kill9();
    let journal = dir.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&journal).expect("journal");
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), 10);
    // One byte of the 4th record's payload.
    bytes[offsets[3] + 30] ^= 0x40;
    std::fs::write(&journal, &bytes).expect("write");
    let before = files(dir.path());

    let log = Gate::refused(opts.clone());
    for needle in [
        format!("journal {} is corrupt at offset {}, record 4", journal.display(), offsets[3]),
        "checksum mismatch; 6 intact records follow it. Nothing was changed.".to_owned(),
        format!("doxm-gate journal check --state-dir {}", dir.path().display()),
        format!("doxm-gate journal salvage --state-dir {} --into NEWDIR", dir.path().display()),
    ] {
        assert!(log.contains(&needle), "the refusal should say {needle:?}:\n{log}");
    }
    assert!(log.contains("exit status: 2"), "{log}");
    assert_eq!(files(dir.path()), before, "every file byte-for-byte as it was");

    let dir_arg = dir.path().to_str().expect("utf-8 path");
    let (code, out, err) = cli(&["journal", "check", "--state-dir", dir_arg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("CORRUPT: {} at offset {}", journal.display(), offsets[3])),
        "{out}"
    );
    assert!(out.contains("3 valid records"), "{out}");

    let into_arg = into.path().to_str().expect("utf-8 path");
    let (code, out, err) = cli(&["journal", "salvage", "--state-dir", dir_arg, "--into", into_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kept 3 records"), "{out}");
    assert_eq!(files(dir.path()), before, "salvage leaves the source as it was");
    let (code, out, _) = cli(&["journal", "check", "--state-dir", into_arg]);
    assert_eq!(code, 0, "{out}");

    // The operator chooses the salvaged directory: the records before the damage are there.
    let salvaged = Gate::start(GateOpts::ports(16).state_dir(into.path()).policy("resume"))
        .expect("started before");
    assert_eq!(salvaged.device_count(), 3);
    for i in 0..3 {
        assert!(salvaged.device(&uuid(0x301, i)).is_some());
    }
}
