//! An append-only log of checksummed records in a directory of its own:
//! the Raft log's files (`mesh::storage` keeps what it holds in memory and
//! writes every change here).
//!
//! Files: `wal-<generation, 16 hex digits>`, each a header (`FXWAL1\0\0`,
//! then the generation, 8 bytes little-endian) and records: the payload's
//! length (4 bytes LE), its CRC-32 (4 bytes LE), the payload. The newest
//! generation is the log (the checksum covers the length and the
//! payload); [`Wal::rotate`] writes a new one holding only
//! the records the caller still needs (a checkpoint), so the space in use
//! is what is live plus what was appended since.
//!
//! Architecture invariants:
//! - a crash keeps a prefix of the appended records, each whole: a record
//!   cut short at the end of the newest file (length past the end, a
//!   checksum that fails on the last record, or zeros to the end) is
//!   dropped at open and the file truncated before it; a bad record with more bytes after it is
//!   corruption, an error that names the file and offset, never skipped;
//! - [`Wal::sync`] makes every earlier append durable (fdatasync);
//! - a rotation is one rename: the new generation is written as `.tmp`,
//!   fsynced, renamed, the directory fsynced, and only then are older
//!   generations removed; at open, `.tmp` files and older generations
//!   are removed;
//! - after any I/O error the log refuses every later call (a partly
//!   written record may sit at its end): the caller stops, as it does for
//!   any storage error.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FXWAL1\0\0";
const HEADER: u64 = 16;
const RECORD_HEADER: u64 = 8;
/// Largest record accepted, written or read: a length above it is
/// corruption, not an allocation.
pub const MAX_RECORD: u32 = 256 << 20;

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O error on a file of the log.
    #[error("log file {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A record or header that is not torn but wrong.
    #[error("log file {path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// Where the bad record or header starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier error left the log's end unknown.
    #[error("log in {path} stopped after an earlier error")]
    Stopped {
        /// The directory.
        path: String,
    },
    /// A record over [`MAX_RECORD`].
    #[error("log record of {0} bytes is over the limit")]
    TooLarge(usize),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The log: the newest generation's file, open for appending.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    generation: u64,
    file: File,
    /// Bytes in the file (header included).
    len: u64,
    /// Set by any I/O error: every later call fails.
    stopped: bool,
}

fn file_name(generation: u64) -> String {
    format!("wal-{generation:016x}")
}

fn generation_of(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The CRC-32 (IEEE) of a record's length and payload: a header of zeros
/// (a file extended but never written, after a crash) does not pass.
fn crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn header(generation: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&generation.to_le_bytes());
    h
}

fn record(payload: &[u8]) -> Result<Vec<u8>, WalError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or(WalError::TooLarge(payload.len()))?;
    let mut r = Vec::with_capacity(payload.len() + RECORD_HEADER as usize);
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(&crc(len, payload).to_le_bytes());
    r.extend_from_slice(payload);
    Ok(r)
}

fn fsync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Reads the records of `bytes` (a whole file): the payloads, and the
/// length of the valid prefix (where a torn tail starts).
fn parse(path: &Path, bytes: &[u8], generation: u64) -> Result<(Vec<Vec<u8>>, u64), WalError> {
    let corrupt = |offset: u64, reason: String| WalError::Corrupt {
        path: path.display().to_string(),
        offset,
        reason,
    };
    if bytes.len() < HEADER as usize || bytes[..8] != MAGIC[..] {
        return Err(corrupt(0, "not a faxi-watchdog log file (header)".into()));
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&bytes[8..16]);
    if u64::from_le_bytes(g) != generation {
        return Err(corrupt(8, "its header names another generation".into()));
    }
    let mut out = Vec::new();
    let mut at = HEADER as usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < RECORD_HEADER as usize {
            break; // torn: a record header cut short at the end
        }
        let mut l = [0u8; 4];
        l.copy_from_slice(&rest[..4]);
        let len = u32::from_le_bytes(l);
        let mut c = [0u8; 4];
        c.copy_from_slice(&rest[4..8]);
        let sum = u32::from_le_bytes(c);
        let end = RECORD_HEADER as usize + len as usize;
        if len > MAX_RECORD || end > rest.len() {
            // Past the end: torn, unless it is too large to be anything.
            if len > MAX_RECORD && end <= rest.len() {
                return Err(corrupt(at as u64, format!("a record of {len} bytes")));
            }
            break;
        }
        let payload = &rest[RECORD_HEADER as usize..end];
        if crc(len, payload) != sum {
            if at + end == bytes.len() || rest.iter().all(|b| *b == 0) {
                break; // torn: the last record written in part, or zeros
            }
            return Err(corrupt(
                at as u64,
                "a record's checksum fails and records follow it".into(),
            ));
        }
        out.push(payload.to_vec());
        at += end;
    }
    Ok((out, at as u64))
}

impl Wal {
    /// Opens the log in `dir` (created if missing) and returns it with
    /// every whole record of its newest generation, in order. A torn tail
    /// is cut off; what an interrupted rotation left is removed.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Vec<u8>>), WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut generations = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("wal-") && name.ends_with(".tmp") {
                std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
            } else if let Some(g) = generation_of(&name) {
                generations.push(g);
            }
        }
        generations.sort_unstable();
        let Some(&newest) = generations.last() else {
            let wal = Self::create(dir, 1, std::iter::empty())?;
            fsync_dir(dir)?;
            return Ok((wal, Vec::new()));
        };
        for g in &generations[..generations.len() - 1] {
            let p = dir.join(file_name(*g));
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        let path = dir.join(file_name(newest));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let (records, valid) = parse(&path, &bytes, newest)?;
        if valid < bytes.len() as u64 {
            file.set_len(valid).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        file.seek(SeekFrom::Start(valid)).map_err(io(&path))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                generation: newest,
                file,
                len: valid,
                stopped: false,
            },
            records,
        ))
    }

    /// Whether `dir` holds a log (a generation file).
    pub fn exists(dir: &Path) -> Result<bool, WalError> {
        match std::fs::read_dir(dir) {
            Ok(listing) => Ok(listing
                .flatten()
                .any(|e| generation_of(&e.file_name().to_string_lossy()).is_some())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(dir)(e)),
        }
    }

    /// Creates the log in `dir`, which holds none, with `records` as its
    /// first records: the file appears whole (written, fsynced, renamed
    /// into place) or not at all.
    pub fn create_new<'a>(
        dir: &Path,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let wal = Self::create(dir, 1, records)?;
        fsync_dir(dir)?;
        Ok(wal)
    }

    /// Writes generation `generation` holding `records`, fsynced, and
    /// renames it into place (the directory is not yet fsynced); opens it
    /// for appending.
    fn create<'a>(
        dir: &Path,
        generation: u64,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, WalError> {
        let path = dir.join(file_name(generation));
        let tmp = dir.join(format!("{}.tmp", file_name(generation)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let mut buf = header(generation).to_vec();
        for r in records {
            buf.extend_from_slice(&record(r)?);
        }
        file.write_all(&buf).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&tmp))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            generation,
            file,
            len: buf.len() as u64,
            stopped: false,
        })
    }

    fn check(&self) -> Result<(), WalError> {
        if self.stopped {
            return Err(WalError::Stopped {
                path: self.dir.display().to_string(),
            });
        }
        Ok(())
    }

    /// Appends one record; durable at the next [`Wal::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.check()?;
        let r = record(payload)?;
        let path = self.dir.join(file_name(self.generation));
        if let Err(e) = self.file.write_all(&r) {
            self.stopped = true;
            return Err(io(&path)(e));
        }
        self.len += r.len() as u64;
        Ok(())
    }

    /// Makes every earlier append durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check()?;
        let path = self.dir.join(file_name(self.generation));
        if let Err(e) = self.file.sync_data() {
            self.stopped = true;
            return Err(io(&path)(e));
        }
        Ok(())
    }

    /// Replaces the log with one holding only `records` (what the caller
    /// still needs, in order), durably; then removes the old generation.
    /// A crash at any point leaves either the old log whole or the new one.
    pub fn rotate<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), WalError> {
        self.check()?;
        let old = self.dir.join(file_name(self.generation));
        // Until the rename, the old generation is the log (a stray .tmp
        // goes at the next open) and a failure changes nothing.
        *self = Self::create(&self.dir, self.generation + 1, records)?;
        // After it, the new one is: if it cannot be made durable, stop.
        if let Err(e) = fsync_dir(&self.dir) {
            self.stopped = true;
            return Err(e);
        }
        if let Err(e) = std::fs::remove_file(&old) {
            // The new generation is current; the next open removes the old.
            tracing::warn!(file = %old.display(), error = %e, "could not remove an old log generation");
        }
        Ok(())
    }

    /// Bytes the log's file holds.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Whether an error stopped the log (every later call fails).
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| (0..(i * 37 % 300)).map(|b| (b ^ i) as u8).collect())
            .collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_survive_a_reopen_in_order() {
        let d = tempfile::tempdir().unwrap();
        let want = payloads(50);
        {
            let (mut w, got) = Wal::open(d.path()).unwrap();
            assert!(got.is_empty());
            for p in &want {
                w.append(p).unwrap();
            }
            w.sync().unwrap();
        }
        let (mut w, got) = Wal::open(d.path()).unwrap();
        assert_eq!(got, want);
        w.append(b"more").unwrap();
        w.sync().unwrap();
        drop(w);
        let (_, got) = Wal::open(d.path()).unwrap();
        assert_eq!(got.len(), 51);
        assert_eq!(got[50], b"more");
    }

    #[test]
    fn a_crash_at_any_byte_keeps_a_prefix_of_whole_records() {
        let d = tempfile::tempdir().unwrap();
        let want = payloads(12);
        let mut ends = Vec::new();
        {
            let (mut w, _) = Wal::open(d.path()).unwrap();
            for p in &want {
                w.append(p).unwrap();
                ends.push(w.bytes());
            }
            w.sync().unwrap();
        }
        let file = d.path().join(file_name(1));
        let full = std::fs::read(&file).unwrap();
        for cut in HEADER as usize..=full.len() {
            let c = tempfile::tempdir().unwrap();
            std::fs::write(c.path().join(file_name(1)), &full[..cut]).unwrap();
            let whole = ends.iter().filter(|e| **e <= cut as u64).count();
            let (mut w, got) = Wal::open(c.path()).unwrap();
            assert_eq!(got, want[..whole], "cut at {cut}");
            // The torn tail is gone: what is appended next reads back.
            w.append(b"after").unwrap();
            w.sync().unwrap();
            drop(w);
            let (_, got) = Wal::open(c.path()).unwrap();
            assert_eq!(got.len(), whole + 1, "cut at {cut}");
            assert_eq!(got[whole], b"after", "cut at {cut}");
        }
    }

    #[test]
    fn a_bad_record_with_records_after_it_is_corruption_by_name() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut w, _) = Wal::open(d.path()).unwrap();
            for p in payloads(5) {
                w.append(&p).unwrap();
            }
            w.sync().unwrap();
        }
        let file = d.path().join(file_name(1));
        let mut bytes = std::fs::read(&file).unwrap();
        // The second record's payload (the first is empty).
        let at = HEADER as usize + RECORD_HEADER as usize + RECORD_HEADER as usize + 3;
        bytes[at] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let err = Wal::open(d.path()).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("checksum fails and records follow"), "{err}");
        // Not a log file at all.
        std::fs::write(&file, b"something else entirely").unwrap();
        let err = Wal::open(d.path()).unwrap_err().to_string();
        assert!(err.contains("not a faxi-watchdog log file"), "{err}");
    }

    #[test]
    fn a_rotation_keeps_what_it_is_given_and_a_cut_one_leaves_one_whole_log() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(d.path()).unwrap();
        for p in payloads(40) {
            w.append(&p).unwrap();
        }
        w.sync().unwrap();
        let before = w.bytes();
        let keep = payloads(40)[35..].to_vec();
        w.rotate(keep.iter().map(Vec::as_slice)).unwrap();
        assert!(w.bytes() < before);
        assert_eq!(files(d.path()), vec![file_name(2)]);
        w.append(b"next").unwrap();
        w.sync().unwrap();
        drop(w);
        let (_, got) = Wal::open(d.path()).unwrap();
        let mut want = keep.clone();
        want.push(b"next".to_vec());
        assert_eq!(got, want);

        // Cut before the rename: a .tmp of generation 3 beside 2.
        std::fs::write(d.path().join(format!("{}.tmp", file_name(3))), b"half").unwrap();
        let (_, got) = Wal::open(d.path()).unwrap();
        assert_eq!(got, want);
        assert_eq!(files(d.path()), vec![file_name(2)]);
        // Cut after the rename, before the old one went: 3 is the log.
        let three = {
            let mut b = header(3).to_vec();
            b.extend_from_slice(&record(b"only").unwrap());
            b
        };
        std::fs::write(d.path().join(file_name(3)), three).unwrap();
        let (_, got) = Wal::open(d.path()).unwrap();
        assert_eq!(got, vec![b"only".to_vec()]);
        assert_eq!(files(d.path()), vec![file_name(3)]);
    }

    #[test]
    fn zeros_at_the_end_are_a_torn_tail_not_records() {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = header(1).to_vec();
        bytes.extend_from_slice(&record(b"kept").unwrap());
        bytes.extend_from_slice(&[0u8; 4096]);
        std::fs::write(d.path().join(file_name(1)), &bytes).unwrap();
        let (w, got) = Wal::open(d.path()).unwrap();
        assert_eq!(got, vec![b"kept".to_vec()]);
        assert_eq!(w.bytes(), HEADER + RECORD_HEADER + 4);
    }

    #[test]
    fn a_huge_length_at_the_end_is_a_torn_tail_not_an_allocation() {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = header(1).to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        std::fs::write(d.path().join(file_name(1)), &bytes).unwrap();
        let (w, got) = Wal::open(d.path()).unwrap();
        assert!(got.is_empty());
        assert_eq!(w.bytes(), HEADER);
        assert!(matches!(
            record(&vec![0u8; MAX_RECORD as usize + 1]),
            Err(WalError::TooLarge(_))
        ));
    }
}
