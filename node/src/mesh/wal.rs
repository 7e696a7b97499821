//! An append-only log of checksummed records in a directory of its own:
//! the Raft log's files (`mesh::storage` keeps what it holds in memory and
//! writes every change here).
//!
//! Files: `wal-<generation, 16 hex digits>`, each a header (`FXWAL1\0\0`,
//! then the generation, 8 bytes little-endian) and records: the payload's
//! length (4 bytes LE), the CRC-32 of the generation and the length, the
//! CRC-32 of the generation, the length and the payload, then the payload.
//! The newest generation is the log; [`Wal::rotate`] writes a new one
//! holding only the records the caller still needs (a checkpoint), so the
//! space in use is what is live plus what was appended since.
//!
//! Architecture invariants:
//! - a crash keeps a prefix of the appended records, each whole: from the
//!   first record that does not check (cut short, zeros, garbage), the
//!   file is a torn tail, cut off at open, unless a whole record follows
//!   somewhere after it: that is corruption, an error that names the file
//!   and offset, never skipped (synced records would be lost);
//! - open fsyncs the file, so what a killed process left in the page
//!   cache is durable before anything is acknowledged from it;
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
const HEADER: u64 = 24;
const RECORD_HEADER: u64 = 20;
/// Largest record accepted (the length is 4 bytes).
pub const MAX_RECORD: u32 = u32::MAX - 16;

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
    /// The file's random salt (in its header, in every checksum).
    salt: u64,
    file: File,
    /// Bytes in the file (header included).
    len: u64,
    /// Bytes known durable (at the last sync): written into each record,
    /// so that open can tell a torn tail from damage.
    synced: u64,
    /// Set by any I/O error: every later call fails.
    stopped: bool,
}

fn file_name(generation: u64) -> String {
    format!("wal-{generation:016x}")
}

fn generation_of(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?;
    (hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The CRC-32 (IEEE) of the file's salt, a record's length and synced
/// mark, and `payload` (empty for the header's own checksum): a header of
/// zeros (a file extended but never written, after a crash) does not
/// pass, nor does a record left on disk by another file, nor bytes that a
/// payload carries (the salt is random and never leaves the file).
fn crc(salt: u64, len: u32, synced: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(&synced.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The whole record at the start of `rest`, if there is one: its header
/// checks against its own checksum, the payload fits in `rest` and
/// checks. Its synced mark and payload; `None` for anything else (torn,
/// zeros, garbage).
fn record_at(rest: &[u8], salt: u64) -> Option<(u64, &[u8])> {
    let word = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(rest.get(i..i + 4)?);
        Some(u32::from_le_bytes(b))
    };
    let mut m = [0u8; 8];
    m.copy_from_slice(rest.get(4..12)?);
    let synced = u64::from_le_bytes(m);
    let (len, head_sum, sum) = (word(0)?, word(12)?, word(16)?);
    if crc(salt, len, synced, &[]) != head_sum {
        return None;
    }
    let start = RECORD_HEADER as usize;
    let payload = rest.get(start..start.checked_add(len as usize)?)?;
    (crc(salt, len, synced, payload) == sum).then_some((synced, payload))
}

fn header(generation: u64, salt: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    h[16..].copy_from_slice(&salt.to_le_bytes());
    h
}

fn record(salt: u64, synced: u64, payload: &[u8]) -> Result<Vec<u8>, WalError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or(WalError::TooLarge(payload.len()))?;
    let mut r = Vec::with_capacity(payload.len() + RECORD_HEADER as usize);
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(&synced.to_le_bytes());
    r.extend_from_slice(&crc(salt, len, synced, &[]).to_le_bytes());
    r.extend_from_slice(&crc(salt, len, synced, payload).to_le_bytes());
    r.extend_from_slice(payload);
    Ok(r)
}

fn fsync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Reads the records of `bytes` (a whole file): the payloads, and the
/// length of the valid prefix (where a torn tail starts).
fn parse(path: &Path, bytes: &[u8], generation: u64) -> Result<(Vec<Vec<u8>>, u64, u64), WalError> {
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
    g.copy_from_slice(&bytes[16..24]);
    let salt = u64::from_le_bytes(g);
    let mut out = Vec::new();
    let mut at = HEADER as usize;
    while at < bytes.len() {
        if let Some((_, payload)) = record_at(&bytes[at..], salt) {
            out.push(payload.to_vec());
            at += RECORD_HEADER as usize + payload.len();
            continue;
        }
        // A record that does not check. Whole records after it carry the
        // synced mark of when they were written: one past this record
        // means it had been synced (damaged data: an error, since cutting
        // would drop it); none means it was in the writes a crash cut
        // short, some of which reached the disk out of order (a torn tail,
        // cut off). With no record after it the two cannot be told apart,
        // and it is taken as torn.
        let mut i = at + 1;
        while i < bytes.len() {
            match record_at(&bytes[i..], salt) {
                Some((synced, _)) if synced > at as u64 => {
                    return Err(corrupt(
                        at as u64,
                        format!(
                            "a record that does not check, and the record at byte {i} says it had been synced (treat the data dir as a lost disk: move it aside, then `faxictl members remove` and `members add` the node)"
                        ),
                    ));
                }
                Some((_, payload)) => i += RECORD_HEADER as usize + payload.len(),
                None => i += 1,
            }
        }
        break;
    }
    Ok((out, at as u64, salt))
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
        let path = dir.join(file_name(newest));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let (records, valid, salt) = parse(&path, &bytes, newest)?;
        // Older generations only once the newest reads (a rotation that a
        // crash cut short after its rename).
        for g in &generations[..generations.len() - 1] {
            let p = dir.join(file_name(*g));
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        if valid < bytes.len() as u64 {
            tracing::warn!(
                file = %path.display(),
                at = valid,
                dropped = bytes.len() as u64 - valid,
                "raft log: a torn tail cut off (writes a crash cut short before they were synced)"
            );
            file.set_len(valid).map_err(io(&path))?;
        }
        // What a killed process wrote may sit in the page cache only: make
        // it durable before anything is acknowledged from it.
        file.sync_all().map_err(io(&path))?;
        // And the directory: a rename a killed process made may not be.
        fsync_dir(dir)?;
        file.seek(SeekFrom::Start(valid)).map_err(io(&path))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                generation: newest,
                salt,
                file,
                len: valid,
                synced: valid,
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
        let tmp = dir.join(format!("{}.tmp", file_name(generation)));
        let made = Self::create_at(dir, &tmp, generation, records);
        if made.is_err() {
            // A partial copy would only take space (a full disk, say).
            let _ = std::fs::remove_file(&tmp);
        }
        made
    }

    fn create_at<'a>(
        dir: &Path,
        tmp: &Path,
        generation: u64,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, WalError> {
        let path = dir.join(file_name(generation));
        let tmp = tmp.to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let salt = rand::random::<u64>();
        let mut buf = header(generation, salt).to_vec();
        for r in records {
            buf.extend_from_slice(&record(salt, HEADER, r)?);
        }
        file.write_all(&buf).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&tmp))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            generation,
            salt,
            file,
            len: buf.len() as u64,
            synced: buf.len() as u64,
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
        let r = record(self.salt, self.synced, payload)?;
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
        self.synced = self.len;
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
        let next = self
            .generation
            .checked_add(1)
            .ok_or_else(|| WalError::Corrupt {
                path: self.dir.display().to_string(),
                offset: 0,
                reason: "no generation after the last one".into(),
            })?;
        *self = Self::create(&self.dir, next, records)?;
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
            // A ready at a time: each record synced before the next.
            let (mut w, _) = Wal::open(d.path()).unwrap();
            for p in payloads(5) {
                w.append(&p).unwrap();
                w.sync().unwrap();
            }
        }
        let file = d.path().join(file_name(1));
        let mut bytes = std::fs::read(&file).unwrap();
        // The second record's payload (the first is empty).
        let at = HEADER as usize + RECORD_HEADER as usize + RECORD_HEADER as usize + 3;
        bytes[at] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let err = Wal::open(d.path()).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("says it had been synced"), "{err}");
        assert!(err.contains("members remove"), "{err}");
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
            let mut b = header(3, 9).to_vec();
            b.extend_from_slice(&record(9, HEADER, b"only").unwrap());
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
        let mut bytes = header(1, 5).to_vec();
        bytes.extend_from_slice(&record(5, HEADER, b"kept").unwrap());
        bytes.extend_from_slice(&[0u8; 4096]);
        std::fs::write(d.path().join(file_name(1)), &bytes).unwrap();
        let (w, got) = Wal::open(d.path()).unwrap();
        assert_eq!(got, vec![b"kept".to_vec()]);
        assert_eq!(w.bytes(), HEADER + RECORD_HEADER + 4);
    }

    #[test]
    fn a_huge_length_at_the_end_is_a_torn_tail_not_an_allocation() {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = header(1, 5).to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 16]);
        std::fs::write(d.path().join(file_name(1)), &bytes).unwrap();
        let (w, got) = Wal::open(d.path()).unwrap();
        assert!(got.is_empty());
        assert_eq!(w.bytes(), HEADER);
    }

    #[test]
    fn unsynced_writes_that_reached_the_disk_out_of_order_are_a_torn_tail() {
        // Ten synced records, then one ready's five records unsynced; a
        // power loss left the second of those as zeros, the rest written.
        let d = tempfile::tempdir().unwrap();
        let mut starts = Vec::new();
        let all = payloads(15);
        {
            let (mut w, _) = Wal::open(d.path()).unwrap();
            for (n, p) in all.iter().enumerate() {
                starts.push(w.bytes());
                w.append(p).unwrap();
                if n < 10 {
                    w.sync().unwrap();
                }
            }
            starts.push(w.bytes());
        }
        let file = d.path().join(file_name(1));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[starts[11] as usize..starts[12] as usize].fill(0);
        std::fs::write(&file, &bytes).unwrap();
        let (_, got) = Wal::open(d.path()).unwrap();
        assert_eq!(got, all[..11]);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), starts[11]);
    }

    #[test]
    fn a_flipped_bit_in_a_length_is_corruption_not_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let mut starts = Vec::new();
        {
            let (mut w, _) = Wal::open(d.path()).unwrap();
            for p in payloads(50) {
                starts.push(w.bytes());
                w.append(&p).unwrap();
                w.sync().unwrap();
            }
        }
        let file = d.path().join(file_name(1));
        let good = std::fs::read(&file).unwrap();
        for bit in [0, 7, 13, 31] {
            let mut bytes = good.clone();
            let at = starts[3] as usize + bit / 8;
            bytes[at] ^= 1 << (bit % 8);
            std::fs::write(&file, &bytes).unwrap();
            let err = Wal::open(d.path()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("corrupt at byte {}", starts[3])),
                "bit {bit}: {err}"
            );
            // Nothing was cut: the evidence stays.
            assert_eq!(std::fs::read(&file).unwrap(), bytes, "bit {bit}");
        }
    }
}
