//! The state directory against operator and disk mistakes, on the real daemon: two gates on one
//! directory; a journal damaged before its last record (refused, files untouched, then
//! `doxm-gate journal check` and `salvage`); and a full disk (a 3 MB tmpfs): a change that
//! cannot be made durable is invisible, the gate heals without a restart once space returns,
//! and a `kill -9` afterwards loses no acknowledged change and resurrects no failed one; the
//! same with EIO, from a block device switched to fail every I/O ([`FaultyDisk`]).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use doxm_gate::control::journal::{JOURNAL_FILE, LOCK_FILE};
use serde_json::Value;
use support::{entry, link, to_json, uuid, Gate, GateOpts, TempDir, BIN};

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

/// A tmpfs of `size` mounted on a fresh directory; unmounted (lazily, should a process still
/// hold it) and removed on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Result<Tmpfs, String> {
        let dir = TempDir::new(name);
        std::fs::create_dir_all(dir.path()).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the file system with a file `filler` until ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path().join("filler")).expect("filler");
        let chunk = vec![0x55; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn metric(gate: &Gate, name: &str) -> u64 {
    let text = gate.get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[test]
fn disk_full_changes_nothing_and_heals_without_restart() {
    let fs = match Tmpfs::mount("enospc", "3m") {
        Ok(fs) => fs,
        Err(e) => return link::skip(&format!("cannot mount a tmpfs (needs root): {e}")),
    };
    let state_dir = fs.path().join("state");
    let opts = GateOpts::ports(32).state_dir(&state_dir).policy("resume");
    let Some(mut gate) = Gate::start(opts) else { return };
    assert_eq!(gate.get("/healthz").json()["journal"], "ok");
    // Acknowledged before the disk fills.
    let mut acked = Vec::new();
    for i in 0..5 {
        put(&gate, 0x302, i);
        acked.push(i);
    }
    fs.fill();
    // The journal's last page may still have room for a record or two: go on until one fails.
    let mut next = 5;
    let failed_put = loop {
        let u = uuid(0x302, next);
        let e = entry(u, "d", (Some(3), Some(true), false));
        let reply = gate.call("PUT", &format!("/v1/devices/{u}"), Some(&to_json(&e)));
        if reply.status == 503 {
            break reply;
        }
        assert_eq!(reply.status, 201, "{reply:?}");
        acked.push(next);
        next += 1;
        assert!(next < 200, "the journal never hit ENOSPC");
    };
    let (field, reason) = failed_put.error();
    assert_eq!(field, "journal");
    assert!(reason.contains("No space left on device"), "{reason}");
    // The failing change is invisible.
    let ghost = uuid(0x302, next);
    assert_eq!(gate.get(&format!("/v1/devices/{ghost}")).status, 404, "a 503 PUT is not visible");
    // A replacement that fails leaves the old device; a failed DELETE leaves it too.
    let first = uuid(0x302, 0);
    let renamed = entry(first, "renamed", (Some(3), Some(true), false));
    let reply = gate.call("PUT", &format!("/v1/devices/{first}"), Some(&to_json(&renamed)));
    assert_eq!(reply.status, 503, "{reply:?}");
    let reply = gate.call("DELETE", &format!("/v1/devices/{first}"), None);
    assert_eq!(reply.status, 503, "{reply:?}");
    let view = gate.device(&first).expect("a 503 DELETE leaves the device");
    assert_eq!(view.device.name, "d");
    assert_eq!(view.revision, 1);
    assert_eq!(view.device.dos, Some(3), "the fleet is not forced to unknown");
    // Health and metrics say so.
    let health = gate.get("/healthz");
    assert_eq!(health.status, 503, "{health:?}");
    let body: Value = health.json();
    assert_eq!(body["status"], "journal-failing");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("No space left")), "{body}");
    assert_eq!(metric(&gate, "doxm_gate_journal_writable"), 0);
    assert!(metric(&gate, "doxm_gate_journal_errors_total") >= 1);

    // Space returns: the next change recovers the journal, without a restart.
    fs.free();
    let reply = gate.call("PUT", &format!("/v1/devices/{first}"), Some(&to_json(&renamed)));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(gate.get("/healthz").status, 200);
    assert_eq!(metric(&gate, "doxm_gate_journal_writable"), 1);
    assert!(metric(&gate, "doxm_gate_journal_recoveries_total") >= 1);
    assert!(metric(&gate, "doxm_gate_journal_bytes_written_total") > 0);
    put(&gate, 0x302, 1000);

    // kill -9 and restart: every acknowledged change, none of the failed ones.
    gate.kill9();
    let gate = gate.restart();
    for &i in &acked {
        let view = gate.device(&uuid(0x302, i)).unwrap_or_else(|| panic!("device {i} lost"));
        assert_eq!(view.device.name, if i == 0 { "renamed" } else { "d" });
    }
    assert!(gate.device(&uuid(0x302, 1000)).is_some());
    assert!(gate.device(&ghost).is_none(), "the failed PUT came back");
    assert_eq!(gate.device_count(), acked.len() as u64 + 1);
    assert_eq!(gate.device(&first).expect("first").revision, 2);
}

/// An ext4 file system on a block device that can be switched to fail every read and write with
/// EIO, and back: a loop device over a file in the temporary directory, under a device-mapper
/// device whose table is switched between `linear` and `error` (`dmsetup`). A kernel without
/// device-mapper (a minimal VM kernel) gets the same EIO from the block layer by shrinking the
/// loop device to nothing under the file system (`losetup -c` after truncating its file; the
/// file's content is put back to switch back). ext4 runs without its own journal
/// (`-O ^has_journal`) and with `errors=continue`, so that a failed metadata write does not
/// abort it for good: switching back heals it as it would heal a device that came back.
struct FaultyDisk {
    dir: std::path::PathBuf,
    loop_dev: String,
    /// The device-mapper device's name, when the kernel has device-mapper.
    dm: Option<String>,
    sectors: u64,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl FaultyDisk {
    /// `Err` names what this machine lacks: root, or `losetup`/`mkfs.ext4`.
    fn create(name: &str, bytes: u64) -> Result<FaultyDisk, String> {
        if !link::is_root() {
            return Err("loop and device-mapper devices need root; CI runs as root".into());
        }
        for tool in ["losetup", "mkfs.ext4", "mount"] {
            if Command::new(tool).arg("--version").output().is_err() {
                return Err(format!("{tool} is not installed (util-linux, e2fsprogs, mount)"));
            }
        }
        let dir = std::env::temp_dir().join(format!("doxm-gate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnt")).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(dir.join("disk")).map_err(|e| e.to_string())?;
        file.set_len(bytes).map_err(|e| e.to_string())?;
        let backing = dir.join("disk").display().to_string();
        let loop_dev = run("losetup", &["-f", "--show", &backing])?;
        let mut disk = FaultyDisk { dir, loop_dev, dm: None, sectors: bytes / 512 };
        let device = match run("dmsetup", &["version"]) {
            Ok(_) => {
                let dm = format!("doxm-eio-{}", std::process::id());
                // Without udev (a container, a minimal CI machine) dmsetup makes the node itself.
                run("dmsetup", &["create", "--noudevsync", &dm, "--table", &disk.table("linear")])?;
                disk.dm = Some(dm.clone());
                run("dmsetup", &["mknodes", &dm])?;
                format!("/dev/mapper/{dm}")
            }
            Err(e) => {
                eprintln!("no device-mapper ({e}): failing the loop device itself instead");
                disk.loop_dev.clone()
            }
        };
        run("mkfs.ext4", &["-q", "-F", "-O", "^has_journal", &device])?;
        let mnt = disk.path().display().to_string();
        run("mount", &["-o", "errors=continue", &device, &mnt])?;
        Ok(disk)
    }

    fn table(&self, target: &str) -> String {
        match target {
            "linear" => format!("0 {} linear {} 0", self.sectors, self.loop_dev),
            _ => format!("0 {} error", self.sectors),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.join("mnt")
    }

    /// Every I/O from now on fails with EIO.
    fn fail(&self) {
        match &self.dm {
            Some(dm) => self.switch(dm, "error"),
            None => {
                // What the loop device wrote is in its file (through the page cache): keep it.
                std::fs::copy(self.dir.join("disk"), self.dir.join("saved")).expect("save");
                std::fs::File::options()
                    .write(true)
                    .open(self.dir.join("disk"))
                    .and_then(|f| f.set_len(0))
                    .expect("truncate the loop device's file");
                run("losetup", &["-c", &self.loop_dev]).expect("losetup -c");
            }
        }
    }

    /// The device works again, with what it held before it failed.
    fn heal(&self) {
        match &self.dm {
            Some(dm) => self.switch(dm, "linear"),
            None => {
                std::fs::copy(self.dir.join("saved"), self.dir.join("disk")).expect("restore");
                run("losetup", &["-c", &self.loop_dev]).expect("losetup -c");
            }
        }
    }

    fn switch(&self, dm: &str, target: &str) {
        run("dmsetup", &["suspend", "--noflush", dm]).expect("dmsetup suspend");
        run("dmsetup", &["load", dm, "--table", &self.table(target)]).expect("dmsetup load");
        run("dmsetup", &["resume", dm]).expect("dmsetup resume");
    }
}

impl Drop for FaultyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        if let Some(dm) = &self.dm {
            let _ = run("dmsetup", &["remove", "--noudevsync", "--retry", dm]);
        }
        let _ = run("losetup", &["-d", &self.loop_dev]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn io_error_changes_nothing_and_heals_without_restart() {
    let disk = match FaultyDisk::create("eio", 32 << 20) {
        Ok(disk) => disk,
        Err(e) => return link::skip(&format!("cannot inject EIO: {e}")),
    };
    let state_dir = disk.path().join("state");
    let opts = GateOpts::ports(32).state_dir(&state_dir).policy("resume");
    let Some(mut gate) = Gate::start(opts) else { return };
    let mut acked = Vec::new();
    for i in 0..5 {
        put(&gate, 0x304, i);
        acked.push(i);
    }
    let owned = uuid(0x304, 1);
    let reset = serde_json::json!({"dos": 1, "owned": false,
        "devowneruuid": uuid::Uuid::nil(), "rowneruuid": uuid::Uuid::nil(), "oxmsel": 4});

    disk.fail();
    let ghost = uuid(0x304, 100);
    let e = entry(ghost, "d", (Some(3), Some(true), false));
    let reply = gate.call("PUT", &format!("/v1/devices/{ghost}"), Some(&to_json(&e)));
    assert_eq!(reply.status, 503, "{reply:?}");
    let (field, reason) = reply.error();
    assert_eq!(field, "journal");
    assert!(reason.contains("nothing changed"), "{reason}");
    assert!(reason.contains("Input/output error"), "{reason}");
    assert_eq!(gate.get(&format!("/v1/devices/{ghost}")).status, 404, "a 503 PUT is not visible");
    // The journal retries at every call, and fails again while the device fails: an owned
    // device made unowned (it would answer discovery) and a DELETE change nothing.
    let reply = gate.call("PATCH", &format!("/v1/devices/{owned}"), Some(&reset.to_string()));
    assert_eq!(reply.status, 503, "{reply:?}");
    let reply = gate.call("DELETE", &format!("/v1/devices/{}", uuid(0x304, 2)), None);
    assert_eq!(reply.status, 503, "{reply:?}");
    let view = gate.device(&owned).expect("present");
    assert_eq!((view.revision, view.device.owned, view.device.dos), (1, Some(true), Some(3)));
    assert!(gate.device(&uuid(0x304, 2)).is_some(), "a 503 DELETE leaves the device");
    let health = gate.get("/healthz");
    assert_eq!(health.status, 503, "{health:?}");
    let body: Value = health.json();
    assert_eq!(body["status"], "journal-failing");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Input/output error")), "{body}");
    assert_eq!(metric(&gate, "doxm_gate_journal_writable"), 0);
    assert!(metric(&gate, "doxm_gate_journal_errors_total") >= 2);

    // The device is back: the next change recovers the journal, without a restart.
    disk.heal();
    put(&gate, 0x304, 5);
    acked.push(5);
    assert_eq!(gate.get("/healthz").status, 200);
    assert_eq!(metric(&gate, "doxm_gate_journal_writable"), 1);
    assert!(metric(&gate, "doxm_gate_journal_recoveries_total") >= 1);

    // kill -9 and restart: every acknowledged change, none of the failed ones.
    gate.kill9();
    let gate = gate.restart();
    for &i in &acked {
        let view = gate.device(&uuid(0x304, i)).unwrap_or_else(|| panic!("device {i} lost"));
        assert_eq!((view.revision, view.device.owned), (1, Some(true)), "device {i}");
    }
    assert!(gate.device(&ghost).is_none(), "the failed PUT came back");
    assert_eq!(gate.device_count(), acked.len() as u64);
}

/// A batch carries at most `MAX_BATCH` changes (more: 413, nothing changed), and its reply
/// does not grow with it: counts, and the revisions of the first 1,000 changes only.
#[test]
fn batches_are_bounded() {
    use doxm_gate::control::api::{MAX_BATCH, REPLY_REVISIONS_MAX};
    let dir = TempDir::new("bounded");
    let Some(gate) = Gate::start(GateOpts::addresses().state_dir(dir.path())) else { return };
    let n = 2_500u64;
    let devices: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"uuid": uuid(0x303, i), "name": format!("d{i}"), "dos": 3}))
        .collect();
    let reply = gate.call(
        "POST",
        "/v1/devices:batch",
        Some(&to_json(&serde_json::json!({"upserts": devices, "deletes": []}))),
    );
    assert_eq!(reply.status, 200, "{}", &reply.body[..reply.body.len().min(300)]);
    let body = reply.json();
    assert_eq!(body["count"], n);
    assert_eq!((body["upserts"].as_u64(), body["patches"].as_u64()), (Some(n), Some(0)));
    assert_eq!(body["applied"].as_array().map(Vec::len), Some(REPLY_REVISIONS_MAX));
    assert_eq!(body["applied"][0]["uuid"], uuid(0x303, 0).to_string());
    assert_eq!(body["applied_omitted"], n - REPLY_REVISIONS_MAX as u64);
    assert!(reply.body.len() < 80_000, "{} bytes", reply.body.len());

    let too_many: Vec<String> =
        (0..=MAX_BATCH as u64).map(|i| uuid(0x303, i % n).to_string()).collect();
    let reply = gate.call(
        "POST",
        "/v1/devices:batch",
        Some(&to_json(&serde_json::json!({ "deletes": too_many }))),
    );
    assert_eq!(reply.status, 413, "{reply:?}");
    let (field, reason) = reply.error();
    assert_eq!(field, "body");
    assert!(reason.contains(&format!("at most {MAX_BATCH} changes")), "{reason}");
    assert!(reason.contains(&format!("this one has {}", MAX_BATCH + 1)), "{reason}");
    assert_eq!(gate.device_count(), n, "nothing changed");
}
