//! The operator's side of the journal: the state directory's lock, and the two commands for a
//! journal that [`Journal::open`](super::Journal::open) refuses as corrupt.
//!
//! - [`check`] reports what a directory holds and what is wrong with it, and changes nothing.
//! - [`salvage`] writes what can be trusted (the snapshot and the journal's valid prefix, byte
//!   for byte) into a new directory, and changes nothing in the old one. Records after the
//!   damage are not copied even when they are intact: without the damaged record between them
//!   and the prefix they would replay onto a state that never existed. The report counts them,
//!   and the old directory keeps them for whoever wants to look.
//!
//! Both take the directory's lock, so neither runs against a live gate.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{read_snapshot, scan, Damage};
use super::{sync_dir, JournalError, JOURNAL_FILE, LOCK_FILE, SNAPSHOT_FILE};

/// Takes the state directory's lock (see the [journal docs](super)): an exclusive `flock` on
/// [`LOCK_FILE`] in `dir`, with this process's pid written into it. Held while the returned file
/// is open.
///
/// # Errors
/// [`JournalError::Locked`] (naming the holder's pid when it wrote one), or I/O errors.
pub fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    if !crate::io::sys::try_lock_exclusive(&file)? {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(JournalError::Locked { dir: dir.to_owned(), pid: text.trim().parse().ok() });
    }
    file.set_len(0)?;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
    Ok(file)
}

/// What [`check`] found in a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The state directory.
    pub dir: PathBuf,
    /// The sequence the snapshot covers and its size, `None` without a snapshot.
    pub snapshot: Option<(u64, u64)>,
    /// The journal's size in bytes.
    pub journal_bytes: u64,
    /// Valid records at the start of the journal, and their first and last sequence numbers.
    pub records: u64,
    /// The first valid record's sequence (0 when none).
    pub first_seq: u64,
    /// The last valid record's sequence (0 when none).
    pub last_seq: u64,
    /// The length of the valid prefix.
    pub good_len: u64,
    /// What is wrong after the valid prefix, if anything.
    pub damage: Option<Damage>,
    /// A problem that stops the gate and that salvage cannot mend (a corrupt snapshot, records
    /// missing between the snapshot and the journal, a newer format).
    pub fatal: Option<String>,
}

impl Report {
    /// Whether a gate would start on this directory (perhaps discarding a torn tail).
    pub fn would_start(&self) -> bool {
        self.fatal.is_none() && !matches!(self.damage, Some(Damage::Corrupt(_)))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state directory {}", self.dir.display())?;
        match self.snapshot {
            Some((covers, bytes)) => {
                writeln!(f, "  snapshot: ok, {bytes} bytes, covers records up to {covers}")?;
            }
            None if self.fatal.is_none() => writeln!(f, "  snapshot: none")?,
            None => {}
        }
        writeln!(
            f,
            "  journal: {} bytes, {} valid records (sequence {}..={}) in the first {} bytes",
            self.journal_bytes, self.records, self.first_seq, self.last_seq, self.good_len
        )?;
        match &self.damage {
            None => {}
            Some(Damage::Torn(t)) => writeln!(
                f,
                "  torn tail: {} bytes at offset {} ({}): never acknowledged; the gate discards \
                 it when it starts",
                t.discarded_bytes, t.offset, t.reason
            )?,
            Some(Damage::Corrupt(c)) => writeln!(
                f,
                "  CORRUPT: {} at offset {}, record {} (sequence {}): {}; {} intact records \
                 follow it in the last {} bytes; the gate refuses to start",
                c.path.display(),
                c.offset,
                c.record,
                c.seq,
                c.reason,
                c.intact_after,
                c.bytes_after
            )?,
        }
        if let Some(fatal) = &self.fatal {
            writeln!(f, "  FATAL: {fatal}")?;
        }
        let verdict = match (&self.fatal, &self.damage) {
            (Some(_), _) => "the gate refuses to start; salvage cannot mend this".to_owned(),
            (None, Some(Damage::Corrupt(_))) => format!(
                "the gate refuses to start; keep the valid prefix with: doxm-gate journal \
                 salvage --state-dir {} --into NEWDIR",
                self.dir.display()
            ),
            (None, _) => "the gate starts from this directory".to_owned(),
        };
        writeln!(f, "  verdict: {verdict}")
    }
}

/// Reports what `dir` holds and whether a gate would start on it. Reads only (the lock file
/// aside); fails with [`JournalError::Locked`] while a gate runs on `dir`.
///
/// # Errors
/// A missing directory, the lock, I/O errors.
pub fn check(dir: &Path) -> Result<Report, JournalError> {
    must_exist(dir)?;
    let _lock = lock_dir(dir)?;
    inspect(dir)
}

/// [`check`] without the lock, for a caller that holds it.
fn inspect(dir: &Path) -> Result<Report, JournalError> {
    let mut report = Report {
        dir: dir.to_owned(),
        snapshot: None,
        journal_bytes: 0,
        records: 0,
        first_seq: 0,
        last_seq: 0,
        good_len: 0,
        damage: None,
        fatal: None,
    };
    // With a corrupt snapshot what it covered is unknown: scan as if it covered everything, so
    // that the journal is still reported.
    let covers = match read_snapshot(&dir.join(SNAPSHOT_FILE)) {
        Ok(Some((covers, payload))) => {
            report.snapshot = Some((covers, payload.len() as u64));
            covers
        }
        Ok(None) => 0,
        Err(e @ JournalError::CorruptSnapshot { .. }) => {
            report.fatal = Some(e.to_string());
            u64::MAX - 1
        }
        Err(e) => return Err(e),
    };
    let path = dir.join(JOURNAL_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e.into()),
    };
    match scan(&file, &path, covers) {
        Ok(scan) => {
            report.journal_bytes = scan.file_len;
            report.records = scan.valid;
            report.first_seq = scan.first_seq;
            report.last_seq = scan.last_seq;
            report.good_len = scan.good_len;
            report.damage = scan.damage;
        }
        Err(e @ (JournalError::Gap { .. } | JournalError::UnsupportedVersion { .. })) => {
            report.journal_bytes = file.metadata()?.len();
            report.fatal = Some(e.to_string());
        }
        Err(e) => return Err(e),
    }
    Ok(report)
}

/// What [`salvage`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// The check of the source directory.
    pub source: Report,
    /// The new directory.
    pub into: PathBuf,
}

impl fmt::Display for Salvaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.source;
        let dropped = s.journal_bytes - s.good_len;
        writeln!(f, "salvaged {} into {}", s.dir.display(), self.into.display())?;
        match s.snapshot {
            Some((covers, bytes)) => {
                writeln!(f, "  snapshot: copied ({bytes} bytes, covers up to {covers})")?;
            }
            None => writeln!(f, "  snapshot: none")?,
        }
        writeln!(
            f,
            "  journal: kept {} records (sequence {}..={}, {} bytes); left out {dropped} bytes",
            s.records, s.first_seq, s.last_seq, s.good_len
        )?;
        if let Some(Damage::Corrupt(c)) = &s.damage {
            writeln!(
                f,
                "  left out: record {} (sequence {}) at offset {}: {}, and the {} intact records \
                 after it, which cannot be replayed without it",
                c.record, c.seq, c.offset, c.reason, c.intact_after
            )?;
        }
        writeln!(
            f,
            "  {} is unchanged; to use the salvaged state, start the gate with --state-dir {}",
            s.dir.display(),
            self.into.display()
        )
    }
}

/// Writes what can be trusted in `dir` (its snapshot and its journal's valid prefix) into
/// `into`, a new or empty directory, and fsyncs it; `dir` is not changed.
///
/// # Errors
/// Whatever [`check`] finds fatal (a corrupt snapshot, missing records: there is no trusted
/// state to write), a non-empty `into`, the locks, I/O errors.
pub fn salvage(dir: &Path, into: &Path) -> Result<Salvaged, JournalError> {
    must_exist(dir)?;
    let _source_lock = lock_dir(dir)?;
    let source = inspect(dir)?;
    if let Some(fatal) = &source.fatal {
        return Err(io::Error::other(format!("nothing to salvage: {fatal}")).into());
    }
    if into.exists() {
        if fs::read_dir(into)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is not empty: salvage writes into a new directory", into.display()),
            )
            .into());
        }
    } else {
        fs::create_dir_all(into)?;
    }
    let _into_lock = lock_dir(into)?;
    if source.snapshot.is_some() {
        let bytes = fs::read(dir.join(SNAPSHOT_FILE))?;
        write_synced(&into.join(SNAPSHOT_FILE), &bytes)?;
    }
    let mut prefix = vec![0; usize::try_from(source.good_len).map_err(io::Error::other)?];
    if !prefix.is_empty() {
        File::open(dir.join(JOURNAL_FILE))?.read_exact_at(&mut prefix, 0)?;
    }
    write_synced(&into.join(JOURNAL_FILE), &prefix)?;
    sync_dir(into)?;
    let parent = into.parent().filter(|p| !p.as_os_str().is_empty());
    sync_dir(parent.unwrap_or(Path::new(".")))?;
    Ok(Salvaged { source, into: into.to_owned() })
}

/// `check` and `salvage` never create the directory they are pointed at.
fn must_exist(dir: &Path) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    let e =
        io::Error::new(io::ErrorKind::NotFound, format!("{}: no such directory", dir.display()));
    Err(e.into())
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()
}
