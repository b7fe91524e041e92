//! The journal's on-disk format, and the reading half of recovery: how records and snapshots are
//! laid out, how they are encoded, and how [`scan`] finds the valid prefix of a journal.
//!
//! Nothing here decides *when* to write or sync (that is the commit state machine in the parent
//! module); everything here is about bytes.
//!
//! # Files
//!
//! One directory, one process (nothing here locks the directory against a second writer):
//!
//! ```text
//!   journal        record*                      appended, fdatasync'ed by group commit
//!   snapshot       snapshot header + payload    replaced whole: snapshot.tmp, fsync, rename
//!   snapshot.tmp   an unfinished snapshot       removed on open, never read
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
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

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

/// The part of the journal that [`Journal::open`](super::Journal::open) discarded, described for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset of the first discarded byte (the start of the first bad record); the file is
    /// now truncated here.
    pub offset: u64,
    /// How many bytes were discarded (from `offset` to the old end of the file).
    pub discarded_bytes: u64,
    /// Why the record at `offset` was refused: `"truncated header"`, `"bad magic"`, `"length past
    /// end of file"`, `"checksum mismatch"` or `"sequence out of order"`.
    pub reason: &'static str,
    /// Intact records (good magic and checksum) found right after the bad one and discarded with
    /// it. 0 for an ordinary torn write. More means either a group commit that never finished
    /// and whose pages reached the disk out of order (never acknowledged), or a disk that lost
    /// acknowledged data in the middle of the journal: worth an alert either way.
    pub intact_after: u64,
}

/// The result of reading the journal at open.
pub(super) struct Scan {
    /// Payloads of the valid records after the snapshot.
    pub(super) records: Vec<Vec<u8>>,
    /// Their encoded size.
    pub(super) uncovered_bytes: u64,
    /// The last valid sequence number (0 when none).
    pub(super) last_seq: u64,
    /// The length of the valid prefix.
    pub(super) good_len: u64,
    pub(super) torn: Option<TornTail>,
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

/// Reads the journal's records in order and stops at the first bad one (see the module docs).
pub(super) fn scan(file: &File, covers: u64) -> Result<Scan, JournalError> {
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut scan =
        Scan { records: Vec::new(), uncovered_bytes: 0, last_seq: 0, good_len: 0, torn: None };
    let mut first = true;
    while scan.good_len < file_len {
        let offset = scan.good_len;
        let remaining = file_len - offset;
        let tear =
            |reason| TornTail { offset, discarded_bytes: remaining, reason, intact_after: 0 };
        if remaining < record::HEADER_LEN as u64 {
            scan.torn = Some(tear("truncated header"));
            break;
        }
        let mut header = [0; record::HEADER_LEN];
        reader.read_exact(&mut header)?;
        let magic = &header[record::MAGIC_FIELD];
        if magic != record::MAGIC {
            if first && magic[..3] == record::MAGIC[..3] {
                return Err(JournalError::UnsupportedVersion { found: magic[3] });
            }
            scan.torn = Some(tear("bad magic"));
            break;
        }
        let seq = le_u64(&header[record::SEQ]);
        let len = le_u32(&header[record::LEN]);
        let size = record::HEADER_LEN as u64 + u64::from(len);
        if size > remaining {
            scan.torn = Some(tear("length past end of file"));
            break;
        }
        let mut payload = vec![0; len as usize];
        reader.read_exact(&mut payload)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[record::SEQ.start..record::LEN.end]);
        crc.update(&payload);
        let reason = if crc.finalize() != le_u32(&header[record::CRC]) {
            Some("checksum mismatch")
        } else if first && seq > covers.saturating_add(1) {
            return Err(JournalError::Gap { covered: covers, first: seq });
        } else if (first && seq == 0) || (!first && Some(seq) != scan.last_seq.checked_add(1)) {
            Some("sequence out of order")
        } else {
            None
        };
        if let Some(reason) = reason {
            let mut torn = tear(reason);
            torn.intact_after = count_intact(file, offset + size, file_len)?;
            scan.torn = Some(torn);
            break;
        }
        first = false;
        scan.last_seq = seq;
        scan.good_len += size;
        if seq > covers {
            scan.records.push(payload);
            scan.uncovered_bytes += size;
        }
    }
    Ok(scan)
}

/// Counts the intact records (good magic and checksum, any sequence) that follow a bad one at
/// `from`, to tell an ordinary torn write from lost data in the middle of the journal.
fn count_intact(file: &File, from: u64, file_len: u64) -> Result<u64, JournalError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(from))?;
    let (mut offset, mut count) = (from, 0);
    while file_len - offset >= record::HEADER_LEN as u64 {
        let mut header = [0; record::HEADER_LEN];
        reader.read_exact(&mut header)?;
        let size = record::HEADER_LEN as u64 + u64::from(le_u32(&header[record::LEN]));
        if header[record::MAGIC_FIELD] != record::MAGIC || size > file_len - offset {
            break;
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[record::SEQ.start..record::LEN.end]);
        let mut payload = (&mut reader).take(size - record::HEADER_LEN as u64);
        let mut chunk = [0; 8192];
        loop {
            let n = payload.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            crc.update(&chunk[..n]);
        }
        if crc.finalize() != le_u32(&header[record::CRC]) {
            break;
        }
        count += 1;
        offset += size;
    }
    Ok(count)
}
