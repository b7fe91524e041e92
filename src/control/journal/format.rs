//! The journal's on-disk format, and the reading half of recovery: how records and snapshots are
//! laid out, how they are encoded, and how [`scan`] finds the valid prefix of a journal.
//!
//! Nothing here decides *when* to write or sync (that is the commit state machine in the parent
//! module); everything here is about bytes.
//!
//! # Files
//!
//! One directory, one process (the `lock` file's `flock`, taken before anything is read):
//!
//! ```text
//!   lock           the pid of the process that holds the flock (informative only)
//!   journal        record*                      appended, fdatasync'ed by group commit
//!   snapshot       snapshot header + payload    replaced whole: snapshot.tmp, fsync, rename
//!   snapshot.tmp   an unfinished snapshot       removed on open, never read
//!   journal.tmp    an unfinished compaction     removed on open, never read
//!
//!   record     = magic "DXJ" | version 1 | seq u64 | len u32 | crc u32 | payload (len bytes)
//!   snapshot   = magic "DXS" | version 1 | covers u64 | len u64 | crc u32 | payload (len bytes)
//! ```
//!
//! Integers are little endian. A record's CRC-32 (IEEE) covers `seq | len | payload`; the
//! snapshot's covers `covers | len | payload`. Sequence numbers start at 1 and never restart, not
//! even when the journal is compacted: the snapshot says which sequence it `covers` (every record
//! up to and including it), so a record can never be replayed twice nor be mistaken for another.
//!

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::JournalError;

/// Byte layout of a record header.
pub(super) mod record {
    use std::ops::Range;

    pub const MAGIC: [u8; 4] = *b"DXJ\x01";
    pub const MAGIC_FIELD: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..12;
    pub const LEN: Range<usize> = 12..16;
    pub const CRC: Range<usize> = 16..20;
    pub const HEADER_LEN: usize = 20;
}

/// Byte layout of the snapshot header.
pub(super) mod snapshot {
    use std::ops::Range;

    pub const MAGIC: [u8; 4] = *b"DXS\x01";
    pub const MAGIC_FIELD: Range<usize> = 0..4;
    pub const COVERS: Range<usize> = 4..12;
    pub const LEN: Range<usize> = 12..20;
    pub const CRC: Range<usize> = 20..24;
    pub const HEADER_LEN: usize = 24;
}

/// A torn tail: the last record, cut short by a write that never finished. [`Journal::open`](super::Journal::open)
/// discards it (truncates the file at `offset`) because it was never acknowledged: an
/// acknowledgement waits for the fdatasync that covers the whole record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset of the first discarded byte (the start of the cut record); the file is now
    /// truncated here.
    pub offset: u64,
    /// How many bytes were discarded (from `offset` to the old end of the file).
    pub discarded_bytes: u64,
    /// What the bytes at `offset` are: `"truncated header"`, `"length past end of file"`,
    /// `"zero-filled"` (pages allocated but never written) or `"bad magic"` (bytes that are not a
    /// record, and not a record with a damaged magic either).
    pub reason: &'static str,
}

/// Damage that is not a torn tail: a record that fails its checks with intact records after
/// it, or a whole last record that fails its checksum. What it held may have been acknowledged,
/// so nothing is discarded: the journal refuses to open and leaves every byte as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The journal file.
    pub path: PathBuf,
    /// Byte offset of the damaged record.
    pub offset: u64,
    /// Its position in the file, counting from 1.
    pub record: u64,
    /// The sequence number it should have had.
    pub seq: u64,
    /// `"bad magic"`, `"checksum mismatch"`, `"length past end of file"` (a record whose length
    /// field is damaged), `"sequence out of order"`.
    pub reason: &'static str,
    /// Intact records (good magic and checksum) found after it: acknowledged data that only this
    /// damage keeps from being replayed.
    pub intact_after: u64,
    /// Bytes from `offset` to the end of the file.
    pub bytes_after: u64,
}

/// What a scan found wrong, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Discarded at open.
    Torn(TornTail),
    /// Refused at open.
    Corrupt(Corruption),
}

/// The result of reading the journal.
pub(super) struct Scan {
    /// Payloads of the valid records after the snapshot.
    pub(super) records: Vec<Vec<u8>>,
    /// Their encoded size.
    pub(super) uncovered_bytes: u64,
    /// The first and last valid sequence numbers (0 when none).
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// Valid records in the file, covered ones included.
    pub(super) valid: u64,
    /// The length of the valid prefix.
    pub(super) good_len: u64,
    /// The file's length.
    pub(super) file_len: u64,
    pub(super) damage: Option<Damage>,
}

pub(super) fn record_header(
    seq: u64,
    len: u32,
    payload_crc: &crc32fast::Hasher,
) -> [u8; record::HEADER_LEN] {
    let mut header = [0; record::HEADER_LEN];
    header[record::MAGIC_FIELD].copy_from_slice(&record::MAGIC);
    header[record::SEQ].copy_from_slice(&seq.to_le_bytes());
    header[record::LEN].copy_from_slice(&len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[record::SEQ.start..record::LEN.end]);
    crc.combine(payload_crc);
    header[record::CRC].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

pub(super) fn snapshot_header(covers: u64, payload: &[u8]) -> [u8; snapshot::HEADER_LEN] {
    let mut header = [0; snapshot::HEADER_LEN];
    header[snapshot::MAGIC_FIELD].copy_from_slice(&snapshot::MAGIC);
    header[snapshot::COVERS].copy_from_slice(&covers.to_le_bytes());
    header[snapshot::LEN].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[snapshot::COVERS.start..snapshot::LEN.end]);
    crc.update(payload);
    header[snapshot::CRC].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("an 8-byte field"))
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("a 4-byte field"))
}

/// Reads and checks the snapshot: `(covers, payload)`, `None` when there is none.
pub(super) fn read_snapshot(path: &Path) -> Result<Option<(u64, Vec<u8>)>, JournalError> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |reason| JournalError::CorruptSnapshot { path: path.to_owned(), reason };
    if bytes.len() < snapshot::HEADER_LEN {
        return Err(corrupt("shorter than its header"));
    }
    let magic = &bytes[snapshot::MAGIC_FIELD];
    if magic[..3] != snapshot::MAGIC[..3] {
        return Err(corrupt("bad magic"));
    }
    if magic[3] != snapshot::MAGIC[3] {
        return Err(corrupt("unsupported format version"));
    }
    let covers = le_u64(&bytes[snapshot::COVERS]);
    let len = le_u64(&bytes[snapshot::LEN]);
    if len != (bytes.len() - snapshot::HEADER_LEN) as u64 {
        return Err(corrupt("length does not match the file size"));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[snapshot::COVERS.start..snapshot::LEN.end]);
    crc.update(&bytes[snapshot::HEADER_LEN..]);
    if crc.finalize() != le_u32(&bytes[snapshot::CRC]) {
        return Err(corrupt("checksum mismatch"));
    }
    bytes.drain(..snapshot::HEADER_LEN);
    Ok(Some((covers, bytes)))
}

/// Reads the journal's records in order, stops at the first bad one and tells a torn tail from
/// corruption (see the [module docs](super)). Reads only: the caller decides what to do.
pub(super) fn scan(file: &File, path: &Path, covers: u64) -> Result<Scan, JournalError> {
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut scan = Scan {
        records: Vec::new(),
        uncovered_bytes: 0,
        first_seq: 0,
        last_seq: 0,
        valid: 0,
        good_len: 0,
        file_len,
        damage: None,
    };
    let mut bad = None;
    while scan.good_len < file_len {
        let first = scan.valid == 0;
        let remaining = file_len - scan.good_len;
        if remaining < record::HEADER_LEN as u64 {
            bad = Some("truncated header");
            break;
        }
        let mut header = [0; record::HEADER_LEN];
        reader.read_exact(&mut header)?;
        let magic = &header[record::MAGIC_FIELD];
        if magic != record::MAGIC {
            if first && magic[..3] == record::MAGIC[..3] {
                return Err(JournalError::UnsupportedVersion { found: magic[3] });
            }
            bad = Some("bad magic");
            break;
        }
        let seq = le_u64(&header[record::SEQ]);
        let len = le_u32(&header[record::LEN]);
        let size = record::HEADER_LEN as u64 + u64::from(len);
        if size > remaining {
            bad = Some("length past end of file");
            break;
        }
        let mut payload = vec![0; len as usize];
        reader.read_exact(&mut payload)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[record::SEQ.start..record::LEN.end]);
        crc.update(&payload);
        if crc.finalize() != le_u32(&header[record::CRC]) {
            bad = Some("checksum mismatch");
            break;
        }
        if first && seq > covers.saturating_add(1) {
            return Err(JournalError::Gap { covered: covers, first: seq });
        }
        if (first && seq == 0) || (!first && Some(seq) != scan.last_seq.checked_add(1)) {
            bad = Some("sequence out of order");
            break;
        }
        if first {
            scan.first_seq = seq;
        }
        scan.valid += 1;
        scan.last_seq = seq;
        scan.good_len += size;
        if seq > covers {
            scan.records.push(payload);
            scan.uncovered_bytes += size;
        }
    }
    if let Some(reason) = bad {
        let offset = scan.good_len;
        let mut rest = Vec::new();
        file.read_at_exact(&mut rest, offset, file_len - offset)?;
        let intact_after = count_intact(&rest[1..]);
        let torn =
            |reason| Damage::Torn(TornTail { offset, discarded_bytes: rest.len() as u64, reason });
        let corrupt = |reason| {
            Damage::Corrupt(Corruption {
                path: path.to_owned(),
                offset,
                record: scan.valid + 1,
                seq: if scan.valid == 0 { covers + 1 } else { scan.last_seq + 1 },
                reason,
                intact_after,
                bytes_after: rest.len() as u64,
            })
        };
        scan.damage = Some(if intact_after > 0 {
            corrupt(reason)
        } else {
            match reason {
                "truncated header" => torn(reason),
                "length past end of file" if whole_with_length(&rest) => corrupt(reason),
                "length past end of file" => torn(reason),
                "bad magic" if whole_with_magic(&rest) => corrupt(reason),
                "bad magic" | "checksum mismatch" if zero_filled(&rest) => torn("zero-filled"),
                "bad magic" => torn(reason),
                _ => corrupt(reason),
            }
        });
    }
    Ok(scan)
}

/// Positioned reads of a whole range, for the (rare) damaged remainder of a journal.
trait ReadAtExact {
    fn read_at_exact(&self, buf: &mut Vec<u8>, offset: u64, len: u64) -> io::Result<()>;
}

impl ReadAtExact for File {
    fn read_at_exact(&self, buf: &mut Vec<u8>, offset: u64, len: u64) -> io::Result<()> {
        buf.resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// Whether `bytes` begin with a whole record (any sequence) whose checks pass.
fn intact_at(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..record::HEADER_LEN)?;
    if header[record::MAGIC_FIELD] != record::MAGIC {
        return None;
    }
    let size = record::HEADER_LEN + le_u32(&header[record::LEN]) as usize;
    let payload = bytes.get(record::HEADER_LEN..size)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[record::SEQ.start..record::LEN.end]);
    crc.update(payload);
    (crc.finalize() == le_u32(&header[record::CRC])).then_some(size)
}

/// Counts the intact records anywhere in `bytes` (found by their magic, so that a damaged
/// length cannot hide what follows it): any means the damage before them is not a torn tail.
fn count_intact(bytes: &[u8]) -> u64 {
    let (mut at, mut count) = (0, 0);
    while let Some(found) = find_magic(&bytes[at..]) {
        at += found;
        match intact_at(&bytes[at..]) {
            Some(size) => {
                count += 1;
                at += size;
            }
            None => at += 1,
        }
    }
    count
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(record::MAGIC.len()).position(|w| w == record::MAGIC)
}

/// Whether `rest` is one whole record whose only damage is its length field (it claims more
/// than the file holds): a complete record, possibly acknowledged, not a cut one.
fn whole_with_length(rest: &[u8]) -> bool {
    let Some(payload_len) = rest.len().checked_sub(record::HEADER_LEN) else { return false };
    let Ok(len) = u32::try_from(payload_len) else { return false };
    let mut fixed = rest.to_vec();
    fixed[record::LEN].copy_from_slice(&len.to_le_bytes());
    let header_crc = le_u32(&rest[record::CRC]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&fixed[record::SEQ.start..record::LEN.end]);
    crc.update(&fixed[record::HEADER_LEN..]);
    crc.finalize() == header_crc
}

/// Whether `rest` would begin with an intact record if its magic were right.
fn whole_with_magic(rest: &[u8]) -> bool {
    if rest.len() < record::HEADER_LEN {
        return false;
    }
    let mut fixed = rest.to_vec();
    fixed[record::MAGIC_FIELD].copy_from_slice(&record::MAGIC);
    intact_at(&fixed).is_some()
}

/// Whether `rest` ends in zeros, at least 8 of them: the pages of a write that never finished, which a
/// crash can leave allocated but unwritten. (The store's payloads are JSON, which never ends in
/// NUL bytes, so a whole record does not look like this.)
fn zero_filled(rest: &[u8]) -> bool {
    let nonzero = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    rest.len() - nonzero >= 8
}
