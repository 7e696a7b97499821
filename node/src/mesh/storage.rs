//! Raft log storage, implementing raft-rs's [`Storage`]: two ordered maps
//! of bytes held in memory, every change to them written to a log of
//! checksummed records ([`super::wal`]) in the data dir.
//!
//! Architecture invariants:
//! - every write method is one [`Write`] (changes to one map or both),
//!   and one record of the log: a crash keeps all of it or none of it,
//!   and the writes it keeps are a prefix of those made, each whole (the
//!   crash model of `simulated` stores does the same);
//! - writes do not flush: [`SledStorage::sync`] makes every earlier write
//!   durable with one fdatasync, and the node acknowledges (votes, append
//!   responses) only after it;
//! - the log holds what the maps hold and little more: once its file
//!   exceeds twice what the maps hold (plus 64 KiB), a sync rewrites it
//!   as one record of every key (a new generation, switched to by one
//!   rename), so the data dir stays within about 2× the logical state;
//! - every call blocks: the Raft driver calls it from its own thread (or
//!   `spawn_blocking`), never from an async worker;
//! - the only module that touches sled: a data dir written by an earlier
//!   version (a sled database) is read once, copied into a new log
//!   (written whole, then switched to by a rename), and sled's files are
//!   removed; sled kept several times what a log of tiny entries held
//!   (BENCHMARKS.md, "Scale").
//!
//! Layout: map `entries` maps the index (8 bytes, big-endian, so the
//! order is log order) to a protobuf `Entry`; map `meta` holds the hard
//! state, the conf state, the last snapshot (metadata and data), a format
//! marker that tells our data dir from anything else, and the store's
//! instance id (random, written with the marker: a wiped data dir gets a
//! new one).
//!
//! Parts: an entry or snapshot data larger than [`PART_BYTES`] is stored
//! as its first part at its key and the rest at the key followed by the
//! part number (4 bytes, big-endian, from 1), so one entry's parts sort
//! together and before the next entry. (Sled-era data dirs needed this:
//! sled wrote a large page to a blob file it never fsynced. The layout is
//! kept so that they read the same.)

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use sled::IVec;

use super::wal::{Wal, WalError};

/// Written into a new data dir (and over an older marker); checked at every open.
const FORMAT: &[u8] = b"faxi-watchdog raft log v2";
/// The marker of data dirs from before values were stored in parts: read
/// the same (every value whole), re-marked v2 at open.
const FORMAT_V1: &[u8] = b"faxi-watchdog raft log v1";
const K_FORMAT: &[u8] = b"format";
const K_INSTANCE: &[u8] = b"instance";
const K_HARD_STATE: &[u8] = b"hard_state";
const K_CONF_STATE: &[u8] = b"conf_state";
const K_SNAP_META: &[u8] = b"snapshot_meta";
const K_SNAP_DATA: &[u8] = b"snapshot_data";
/// The largest value stored whole (see "Parts" above).
pub const PART_BYTES: usize = 64 * 1024 / 4 / 24;
/// Slack before the log is rewritten: below it, a rewrite would cost more
/// than it saves.
const REWRITE_SLACK: u64 = 64 * 1024;
/// The version byte of a log record (one [`Write`]).
const RECORD_V1: u8 = 1;

/// Why the store could not be opened or used. Opening errors name the path;
/// every one of them stops the node (a Raft log cannot be half trusted).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed reading a data dir of an earlier version.
    #[error("raft log at {path}: {}", sled_reason(.source))]
    Sled {
        /// The data dir.
        path: String,
        /// sled's error.
        source: sled::Error,
    },
    /// The log's files failed or are damaged.
    #[error("raft log at {path}: {source}")]
    Log {
        /// The data dir.
        path: String,
        /// The log's error.
        source: WalError,
    },
    /// Another process has the data dir open.
    #[error(
        "raft log at {path}: in use by another process (it holds the lock on {path}/lock); one node per data dir"
    )]
    InUse {
        /// The data dir.
        path: String,
    },
    /// The directory holds a database that is not ours, or another version's.
    #[error("raft log at {path}: not a faxi-watchdog data dir (format marker {found:?})")]
    Foreign {
        /// The data dir.
        path: String,
        /// What the marker said.
        found: String,
    },
    /// A stored record does not decode.
    #[error("raft log: corrupt {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The decoder's message.
        reason: String,
    },
}

/// sled's error in words an operator can act on.
fn sled_reason(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { .. } => "its files are damaged or are not a faxi-watchdog raft log (move them aside, then the node rejoins with `join = true` and catches up by snapshot)".into(),
        sled::Error::Io(io) => format!("I/O error: {io}"),
        other => other.to_string(),
    }
}

/// One write: the changes to each map, applied all or nothing.
#[derive(Debug, Clone, Default)]
struct Write {
    entries: Vec<(IVec, Option<IVec>)>,
    meta: Vec<(IVec, Option<IVec>)>,
}

/// What the store holds: both maps.
#[derive(Debug, Clone, Default)]
struct Image {
    entries: BTreeMap<IVec, IVec>,
    meta: BTreeMap<IVec, IVec>,
    /// Bytes of keys and values held.
    bytes: u64,
}

impl Image {
    /// One write, whole.
    fn apply(&mut self, w: &Write) {
        for (changes, map) in [(&w.entries, &mut self.entries), (&w.meta, &mut self.meta)] {
            for (k, v) in changes {
                let old = match v {
                    Some(v) => {
                        self.bytes += (k.len() + v.len()) as u64;
                        map.insert(k.clone(), v.clone())
                    }
                    None => map.remove(k),
                };
                if let Some(old) = old {
                    self.bytes = self.bytes.saturating_sub((k.len() + old.len()) as u64);
                }
            }
        }
    }

    /// Every key, as one write (what a rewritten log starts with).
    fn checkpoint(&self) -> Write {
        let all = |m: &BTreeMap<IVec, IVec>| {
            m.iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect()
        };
        Write {
            entries: all(&self.entries),
            meta: all(&self.meta),
        }
    }

    fn msg<M: protobuf::Message + Default>(&self, k: &[u8], what: &str) -> raft::Result<M> {
        match self.meta.get(k) {
            None => Ok(M::default()),
            Some(v) => M::parse_from_bytes(v).map_err(|e| corrupt(what, e)),
        }
    }

    /// The entries from `low` (inclusive) to `high` (exclusive, or to the
    /// end), joined from their parts: (index, encoded entry).
    fn entries_from(
        &self,
        low: u64,
        high: Option<u64>,
    ) -> Joined<impl Iterator<Item = (IVec, IVec)> + '_> {
        let hi = high.map_or(Bound::Unbounded, |h| Bound::Excluded(IVec::from(&key(h))));
        joined(
            self.entries
                .range((Bound::Included(IVec::from(&key(low))), hi))
                .map(|(k, v)| (k.clone(), v.clone())),
        )
    }

    /// The keys of `map` under `prefix`.
    fn prefixed<'a>(
        map: &'a BTreeMap<IVec, IVec>,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a IVec, &'a IVec)> + 'a {
        map.range(IVec::from(prefix)..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The snapshot's data, joined from its parts.
    fn snapshot_data(&self) -> raft::Result<Vec<u8>> {
        let mut data = Vec::new();
        for ((k, v), n) in Self::prefixed(&self.meta, K_SNAP_DATA).zip(0u32..) {
            let want = if n == 0 {
                IVec::from(K_SNAP_DATA)
            } else {
                part_key(K_SNAP_DATA, n)
            };
            if *k != want {
                return Err(corrupt(
                    "snapshot data",
                    format!("part {n} missing or misnamed ({} byte key)", k.len()),
                ));
            }
            data.extend_from_slice(v);
        }
        Ok(data)
    }

    /// Whether the entry at `index` is held, or covered by the snapshot.
    #[cfg(test)]
    fn covers(&self, index: u64) -> raft::Result<bool> {
        let snap: SnapshotMetadata = self.msg(K_SNAP_META, "snapshot metadata")?;
        Ok(index <= snap.index || self.entries.contains_key(&key(index)[..]))
    }

    /// The term of the entry at `index`, or of the snapshot at its index.
    fn term(&self, index: u64) -> raft::Result<Option<u64>> {
        let snap: SnapshotMetadata = self.msg(K_SNAP_META, "snapshot metadata")?;
        if index == snap.index {
            return Ok(Some(snap.term));
        }
        match self.entries_from(index, None).next().transpose()? {
            Some((i, v)) if i == index => Ok(Some(
                Entry::parse_from_bytes(&v)
                    .map_err(|e| corrupt("entry", e))?
                    .term,
            )),
            _ => Ok(None),
        }
    }
}

/// A log record: one write. The version byte, then each change: the map
/// (0 entries, 1 meta), 0 to remove or 1 to insert, the key's length (4
/// bytes LE) and the key, and for an insert the value's length and value.
fn encode_write(w: &Write) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    for (tree, changes) in [(0u8, &w.entries), (1u8, &w.meta)] {
        for (k, v) in changes {
            out.push(tree);
            out.push(u8::from(v.is_some()));
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

fn decode_write(rec: &[u8]) -> Result<Write, String> {
    let (&version, mut rest) = rec.split_first().ok_or("an empty record")?;
    if version != RECORD_V1 {
        return Err(format!(
            "record version {version}, this build reads {RECORD_V1}"
        ));
    }
    let take = |n: usize, rest: &mut &[u8]| -> Result<Vec<u8>, String> {
        if rest.len() < n {
            return Err("a record shorter than its lengths say".into());
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Ok(a.to_vec())
    };
    let len = |b: Vec<u8>| -> usize {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b);
        u32::from_le_bytes(a) as usize
    };
    let mut w = Write::default();
    while !rest.is_empty() {
        let head = take(2, &mut rest)?;
        let k = take(4, &mut rest).map(len)?;
        let k = IVec::from(take(k, &mut rest)?);
        let v = match head[1] {
            0 => None,
            1 => {
                let n = take(4, &mut rest).map(len)?;
                Some(IVec::from(take(n, &mut rest)?))
            }
            other => return Err(format!("change kind {other}")),
        };
        match head[0] {
            0 => w.entries.push((k, v)),
            1 => w.meta.push((k, v)),
            other => return Err(format!("map {other}")),
        }
    }
    Ok(w)
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The key of part `part` (from 1) of the value at `base`.
fn part_key(base: &[u8], part: u32) -> IVec {
    let mut k = base.to_vec();
    k.extend_from_slice(&part.to_be_bytes());
    k.into()
}

/// The index and part number of an `entries` key: 8 bytes (part 0) or 12;
/// a key of another length is corruption.
fn index_of(k: &[u8]) -> raft::Result<(u64, u32)> {
    let bad = || corrupt("entry key", format!("{} bytes, not 8 or 12", k.len()));
    let (i, p) = match k.len() {
        8 => (k, None),
        12 => (&k[..8], Some(&k[8..])),
        _ => return Err(bad()),
    };
    let index = u64::from_be_bytes(i.try_into().map_err(|_| bad())?);
    let part = match p {
        None => 0,
        Some(p) => match u32::from_be_bytes(p.try_into().map_err(|_| bad())?) {
            0 => return Err(bad()),
            n => n,
        },
    };
    Ok((index, part))
}

/// `value` as the changes that store it in parts of at most `part_bytes`
/// under `base` (the first part at `base` itself).
fn parts(base: &[u8], value: &[u8], part_bytes: usize) -> Vec<(IVec, Option<IVec>)> {
    if value.is_empty() {
        return vec![(IVec::from(base), Some(IVec::default()))];
    }
    value
        .chunks(part_bytes.max(1))
        .zip(0u32..)
        .map(|(chunk, n)| {
            let k = if n == 0 {
                IVec::from(base)
            } else {
                part_key(base, n)
            };
            (k, Some(IVec::from(chunk)))
        })
        .collect()
}

/// Joins the parts of each entry of the `entries` map, in key order:
/// (index, encoded entry). A part without the ones before it is corruption.
struct Joined<I: Iterator<Item = (IVec, IVec)>> {
    iter: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = (IVec, IVec)>> Iterator for Joined<I> {
    type Item = raft::Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (k, v) = self.iter.next()?;
        let (index, part) = match index_of(&k) {
            Ok(ip) => ip,
            Err(e) => return Some(Err(e)),
        };
        if part != 0 {
            return Some(Err(corrupt(
                "entry",
                format!("{index}: part {part} without the parts before it"),
            )));
        }
        let mut buf = v.to_vec();
        let mut want = 1u32;
        while let Some((k, _)) = self.iter.peek() {
            match index_of(k) {
                Ok((i, p)) if i == index && p == want => {}
                Ok((i, p)) if i == index => {
                    return Some(Err(corrupt(
                        "entry",
                        format!("{index}: part {p} where part {want} belongs"),
                    )));
                }
                _ => break,
            }
            if let Some((_, v)) = self.iter.next() {
                buf.extend_from_slice(&v);
            }
            want = want.saturating_add(1);
        }
        Some(Ok((index, buf)))
    }
}

fn joined<I: Iterator<Item = (IVec, IVec)>>(iter: I) -> Joined<I> {
    Joined {
        iter: iter.peekable(),
    }
}

/// Bytes allocated on disk under `dir` (as `du` counts them).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some(if m.is_dir() {
                disk_bytes(&e.path())
            } else {
                m.blocks() * 512
            })
        })
        .sum()
}

fn log_err(e: WalError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(StoreError::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })))
}

fn encode<M: protobuf::Message>(m: &M, what: &str) -> raft::Result<IVec> {
    Ok(m.write_to_bytes().map_err(|e| corrupt(what, e))?.into())
}

/// A random non-zero instance id.
fn new_instance() -> u64 {
    rand::random_range(1..=u64::MAX)
}

/// sled's files in a data dir of an earlier version.
fn sled_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            matches!(n.as_str(), "conf" | "db" | "blobs") || n.starts_with("snap.")
        })
        .map(|e| e.path())
        .collect()
}

/// The segment size a sled database in `dir` was made with, from its
/// `conf` file (sled refuses to open it with another).
fn segment_size_of(dir: &Path) -> Option<usize> {
    std::fs::read(dir.join("conf")).ok().and_then(|b| {
        String::from_utf8_lossy(&b).lines().find_map(|l| {
            l.strip_prefix("segment_size: ")
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
    })
}

/// Reads a data dir of an earlier version (a sled database) into an image.
/// Another program's sled database is refused by name.
fn read_sled(dir: &Path) -> Result<Image, StoreError> {
    let path = dir.display().to_string();
    let sled_err = |source| StoreError::Sled {
        path: path.clone(),
        source,
    };
    let Some(segment) = segment_size_of(dir) else {
        return Err(StoreError::Corrupt {
            what: format!("data dir {path}"),
            reason: "it holds sled's files from an earlier version, but sled's `conf` file is missing or unreadable, so its segment size is unknown (those versions used 524288 or 65536: restore `conf` with `segment_size: N`, `use_compression: false` and `version: 0.34` lines, or move the dir aside and rejoin)".into(),
        });
    };
    #[allow(clippy::disallowed_types)]
    let db = sled::Config::new()
        .path(dir)
        .segment_size(segment)
        .open()
        .map_err(sled_err)?;
    let foreign = db
        .tree_names()
        .iter()
        .any(|n| !matches!(n.as_ref(), b"meta" | b"entries" | b"__sled__default"))
        || !db.is_empty();
    let mut image = Image::default();
    let mut w = Write::default();
    for (name, changes) in [("entries", &mut w.entries), ("meta", &mut w.meta)] {
        let tree = db.open_tree(name).map_err(sled_err)?;
        for kv in tree.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            changes.push((k, Some(v)));
        }
    }
    image.apply(&w);
    // Checked before anything is copied or removed: only our own data
    // dirs (marked v1 or v2, or empty) are taken over.
    let ours = match image.meta.get(K_FORMAT) {
        Some(f) => f.as_ref() == FORMAT || f.as_ref() == FORMAT_V1,
        None => image.meta.is_empty() && image.entries.is_empty(),
    };
    if foreign || !ours {
        return Err(StoreError::Foreign {
            path,
            found: image
                .meta
                .get(K_FORMAT)
                .map_or("(none)".into(), |f| String::from_utf8_lossy(f).into_owned()),
        });
    }
    Ok(image)
}

/// The store's shared state: what it holds, and its log (none for a
/// simulated store).
#[derive(Debug)]
struct Inner {
    image: Image,
    log: Option<Wal>,
    /// The data dir's lock, held while the store is open (none for a
    /// simulated store).
    _lock: Option<std::fs::File>,
    /// After a failed rewrite, the log's size at which to try again.
    retry_rewrite_at: u64,
}

/// The Raft log: an in-memory image of two maps, every write logged.
#[derive(Debug, Clone)]
pub struct SledStorage {
    inner: Arc<Mutex<Inner>>,
    /// The data dir, for errors.
    path: Arc<str>,
    /// This data dir's random id, read at open.
    instance: u64,
    /// Set by every write, cleared by `sync`: a ready that wrote nothing
    /// costs no flush. Shared by clones.
    dirty: Arc<AtomicBool>,
    /// Raft asked for a snapshot the store does not have (shared by clones).
    snapshot_wanted: Arc<AtomicBool>,
    /// The crash model of a simulated store; `None` for a real one.
    #[cfg(test)]
    model: Option<Arc<CrashModel>>,
    /// A planted bug for the crash harness: installs a snapshot in two
    /// writes (meta, then the entries' removal), as the store once did.
    #[cfg(test)]
    split_install: bool,
}

impl SledStorage {
    /// Opens (or creates) the log in `dir`. A directory that holds another
    /// program's database, or files that do not read, is an error that
    /// names the directory. A new store gets a random instance id, written
    /// (and synced) with the format marker; a store made before instance
    /// ids gets one at its first open. A data dir of an earlier version (a
    /// sled database) is copied into a new log, then sled's files go.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let log_err = |source| StoreError::Log {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            log_err(WalError::Io {
                path: path.clone(),
                source: e,
            })
        })?;
        // One process per data dir: an exclusive lock on `lock`, released
        // when the store (every clone) is dropped or the process ends.
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                log_err(WalError::Io {
                    path: lock_path.display().to_string(),
                    source: e,
                })
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::InUse { path }),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(log_err(WalError::Io {
                    path: lock_path.display().to_string(),
                    source: e,
                }));
            }
        }
        let has_log = Wal::exists(dir).map_err(log_err)?;
        let old = sled_files(dir);
        let (log, image) = if has_log {
            let (log, records) = Wal::open(dir).map_err(log_err)?;
            let mut image = Image::default();
            for (n, r) in records.iter().enumerate() {
                let w = decode_write(r).map_err(|reason| StoreError::Corrupt {
                    what: format!("log record {n} in {path}"),
                    reason,
                })?;
                image.apply(&w);
            }
            (log, image)
        } else if old.is_empty() {
            (Wal::create_new(dir, []).map_err(log_err)?, Image::default())
        } else {
            let image = read_sled(dir)?;
            let first = encode_write(&image.checkpoint());
            let log = Wal::create_new(dir, [first.as_slice()]).map_err(log_err)?;
            (log, image)
        };
        // sled's files of an earlier version, once the log holds it all
        // (or left by a copy whose removal was cut short).
        for f in sled_files(dir) {
            let r = if f.is_dir() {
                std::fs::remove_dir_all(&f)
            } else {
                std::fs::remove_file(&f)
            };
            r.map_err(|e| {
                log_err(WalError::Io {
                    path: f.display().to_string(),
                    source: e,
                })
            })?;
        }
        let s = Self::init(
            Inner {
                image,
                log: Some(log),
                _lock: Some(lock),
                retry_rewrite_at: 0,
            },
            path,
            new_instance,
        )?;
        s.sync().map_err(|e| StoreError::Corrupt {
            what: "data dir".into(),
            reason: e.to_string(),
        })?;
        Ok(s)
    }

    /// Checks (or writes) the format marker and the instance id of a store.
    /// `instance` names a new store.
    fn init(
        inner: Inner,
        path: String,
        instance: impl FnOnce() -> u64,
    ) -> Result<Self, StoreError> {
        let mut created = Vec::new();
        match inner.image.meta.get(K_FORMAT) {
            Some(f) if f.as_ref() == FORMAT => {}
            Some(f) if f.as_ref() == FORMAT_V1 => {
                // From now on values may be stored in parts, which a v1
                // reader would misread: the marker says so.
                created.push((IVec::from(K_FORMAT), Some(IVec::from(FORMAT))));
            }
            Some(f) => {
                return Err(StoreError::Foreign {
                    path,
                    found: String::from_utf8_lossy(f).into_owned(),
                });
            }
            None => {
                // A new store must be empty: any key means foreign data.
                if !inner.image.meta.is_empty() || !inner.image.entries.is_empty() {
                    return Err(StoreError::Foreign {
                        path,
                        found: "(none)".into(),
                    });
                }
                created.push((IVec::from(K_FORMAT), Some(IVec::from(FORMAT))));
            }
        }
        let id = match inner.image.meta.get(K_INSTANCE) {
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    what: "instance id".into(),
                    reason: format!("{} bytes, not 8", v.len()),
                })?;
                match u64::from_be_bytes(b) {
                    0 => {
                        return Err(StoreError::Corrupt {
                            what: "instance id".into(),
                            reason: "zero".into(),
                        });
                    }
                    id => id,
                }
            }
            None => {
                let id = instance();
                if id == 0 {
                    return Err(StoreError::Corrupt {
                        what: "instance id".into(),
                        reason: "a new store's instance id must not be zero".into(),
                    });
                }
                created.push((IVec::from(K_INSTANCE), Some(IVec::from(&key(id)))));
                id
            }
        };
        let s = Self {
            inner: Arc::new(Mutex::new(inner)),
            path: path.clone().into(),
            instance: id,
            dirty: Arc::default(),
            snapshot_wanted: Arc::default(),
            #[cfg(test)]
            model: None,
            #[cfg(test)]
            split_install: false,
        };
        if !created.is_empty() {
            s.write(Write {
                meta: created,
                ..Write::default()
            })
            .map_err(|e| StoreError::Corrupt {
                what: format!("data dir {path}"),
                reason: e.to_string(),
            })?;
        }
        Ok(s)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This data dir's instance id: random and non-zero, fixed when the
    /// store was created; a wiped data dir gets a new one.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Makes every earlier write durable (one fdatasync). The driver calls
    /// it once per ready, after writing entries and hard state and before
    /// sending the messages that acknowledge them. Free when nothing was
    /// written since the last sync. Then, if the log's file has grown past
    /// twice what the store holds, rewrites it (see the invariants above);
    /// a failed rewrite is logged and the old log goes on.
    pub fn sync(&self) -> raft::Result<()> {
        #[cfg(test)]
        if let Some(model) = &self.model {
            self.dirty.store(false, Ordering::Release);
            return model.sync();
        }
        // Under the lock, so that a sync never returns before the
        // fdatasync that covers every write made before it.
        let mut inner = self.lock();
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let Inner {
            image,
            log,
            retry_rewrite_at,
            ..
        } = &mut *inner;
        let Some(log) = log else { return Ok(()) };
        if let Err(e) = log.sync() {
            self.dirty.store(true, Ordering::Release);
            return Err(log_err(e));
        }
        if log.bytes() > 2 * image.bytes + REWRITE_SLACK && log.bytes() >= *retry_rewrite_at {
            let before = log.bytes();
            let first = encode_write(&image.checkpoint());
            match log.rotate([first.as_slice()]) {
                Ok(()) => {
                    *retry_rewrite_at = 0;
                    tracing::debug!(
                        before,
                        after = log.bytes(),
                        held = image.bytes,
                        "raft log rewritten"
                    );
                }
                Err(e) => {
                    tracing::warn!(data_dir = %self.path, error = %e, "raft log: rewrite failed; the log goes on as it was");
                    if log.stopped() {
                        return Err(log_err(e));
                    }
                    // Not at every sync (a full disk): once it has grown by half.
                    *retry_rewrite_at = before + before / 2;
                }
            }
        }
        Ok(())
    }

    /// Whether raft asked for a snapshot this store could not give (too old,
    /// or its conf state lacks the receiver) since the last call; clears the
    /// request. The driver then takes a fresh snapshot.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::AcqRel)
    }

    /// Applies one write (all of it or, after a crash, none of it).
    fn write(&self, w: Write) -> raft::Result<()> {
        if w.entries.is_empty() && w.meta.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        if let Some(log) = &mut inner.log {
            log.append(&encode_write(&w)).map_err(log_err)?;
        }
        inner.image.apply(&w);
        self.dirty.store(true, Ordering::Release);
        drop(inner);
        #[cfg(test)]
        if let Some(model) = &self.model {
            model.record(w);
        }
        Ok(())
    }

    fn get_msg<M: protobuf::Message + Default>(&self, k: &[u8], what: &str) -> raft::Result<M> {
        self.lock().image.msg(k, what)
    }

    fn snapshot_meta(&self) -> raft::Result<SnapshotMetadata> {
        self.get_msg(K_SNAP_META, "snapshot metadata")
    }

    fn hard_state(&self) -> raft::Result<HardState> {
        self.get_msg(K_HARD_STATE, "hard state")
    }

    /// Writes the hard state (term, vote, commit); durable at the next sync.
    pub fn set_hard_state(&self, hs: &HardState) -> raft::Result<()> {
        self.write(Write {
            meta: vec![(K_HARD_STATE.into(), Some(encode(hs, "hard state")?))],
            ..Write::default()
        })
    }

    /// Moves the stored commit index forward (a commit learned after the
    /// hard state was written); durable at the next sync. Losing it in a
    /// crash is safe: the leader tells the node again.
    pub fn set_commit(&self, commit: u64) -> raft::Result<()> {
        let mut hs = self.hard_state()?;
        if commit <= hs.commit {
            return Ok(());
        }
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    /// The last snapshot taken or installed (empty when there is none).
    pub fn last_snapshot(&self) -> raft::Result<Snapshot> {
        let inner = self.lock();
        let mut snap = Snapshot::default();
        snap.set_metadata(inner.image.msg(K_SNAP_META, "snapshot metadata")?);
        snap.set_data(inner.image.snapshot_data()?.into());
        Ok(snap)
    }

    /// Writes the conf state; durable at the next sync.
    pub fn set_conf_state(&self, cs: &ConfState) -> raft::Result<()> {
        self.write(Write {
            meta: vec![(K_CONF_STATE.into(), Some(encode(cs, "conf state")?))],
            ..Write::default()
        })
    }

    /// The keys of `entries` in a range, to remove.
    fn entry_keys(&self, range: (Bound<IVec>, Bound<IVec>)) -> Vec<(IVec, Option<IVec>)> {
        self.lock()
            .image
            .entries
            .range(range)
            .map(|(k, _)| (k.clone(), None))
            .collect()
    }

    /// Appends entries, first dropping any stored entry at or after the first
    /// new index (a conflicting suffix from an old term), in one write;
    /// durable at the next sync.
    pub fn append(&self, ents: &[Entry]) -> raft::Result<()> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index < self.first_index()? {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if first.index > self.last_index()? + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut w = Write {
            entries: self.entry_keys((
                Bound::Included(IVec::from(&key(first.index))),
                Bound::Unbounded,
            )),
            ..Write::default()
        };
        for e in ents {
            let bytes = e.write_to_bytes().map_err(|err| corrupt("entry", err))?;
            w.entries.extend(parts(&key(e.index), &bytes, PART_BYTES));
        }
        self.write(w)
    }

    /// Drops every entry before `index` (they are in a snapshot) in one
    /// write; durable at the next sync.
    pub fn compact(&self, index: u64) -> raft::Result<()> {
        if index > self.last_index()? + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.write(Write {
            entries: self.entry_keys((Bound::Unbounded, Bound::Excluded(IVec::from(&key(index))))),
            ..Write::default()
        })
    }

    /// The changes that store `data` as the snapshot's data, in parts,
    /// dropping any part of the previous data past the new ones.
    fn snapshot_data_writes(&self, data: &[u8]) -> Vec<(IVec, Option<IVec>)> {
        let mut w = parts(K_SNAP_DATA, data, PART_BYTES);
        let count = w.len();
        let inner = self.lock();
        for (k, _) in Image::prefixed(&inner.image.meta, K_SNAP_DATA) {
            // Parts 0..count are overwritten; any other key under the
            // prefix (a part past the new ones) goes.
            let part = k[K_SNAP_DATA.len()..]
                .try_into()
                .ok()
                .map(u32::from_be_bytes)
                .and_then(|n| usize::try_from(n).ok());
            if k.len() != K_SNAP_DATA.len() && part.is_none_or(|n| n == 0 || n >= count) {
                w.push((k.clone(), None));
            }
        }
        w
    }

    /// Records a snapshot of the applied state at `index` (whose term is
    /// `term`), for followers that fall behind: metadata and data in one
    /// write, durable at the next sync. Compact separately, after it.
    pub fn create_snapshot(&self, index: u64, conf: &ConfState, data: Vec<u8>) -> raft::Result<()> {
        let term = self.term(index)?;
        let mut meta = SnapshotMetadata::default();
        meta.set_index(index);
        meta.set_term(term);
        meta.set_conf_state(conf.clone());
        let mut changes = vec![(
            K_SNAP_META.into(),
            Some(encode(&meta, "snapshot metadata")?),
        )];
        changes.extend(self.snapshot_data_writes(&data));
        self.write(Write {
            meta: changes,
            ..Write::default()
        })
    }

    /// Installs a snapshot received from the leader: the whole log is
    /// dropped, the hard state's commit moves to the snapshot (and its term
    /// up to the snapshot's, with no vote in that term), the conf state
    /// becomes the snapshot's. One write; durable at the next sync.
    pub fn apply_snapshot(&self, snap: &Snapshot) -> raft::Result<()> {
        let meta = snap.get_metadata();
        if meta.index < self.first_index()?.saturating_sub(1)
            || meta.index < self.snapshot_meta()?.index
        {
            return Err(raft::Error::Store(StorageError::SnapshotOutOfDate));
        }
        let mut hs = self.hard_state()?;
        if meta.term > hs.term {
            // A vote belongs to its term: none is known in the new one.
            hs.term = meta.term;
            hs.vote = raft::INVALID_ID;
        }
        hs.commit = meta.index;
        let mut w = Write {
            meta: vec![
                (K_HARD_STATE.into(), Some(encode(&hs, "hard state")?)),
                (
                    K_CONF_STATE.into(),
                    Some(encode(meta.get_conf_state(), "conf state")?),
                ),
                (K_SNAP_META.into(), Some(encode(meta, "snapshot metadata")?)),
            ],
            entries: self.entry_keys((Bound::Unbounded, Bound::Unbounded)),
        };
        w.meta.extend(self.snapshot_data_writes(snap.get_data()));
        #[cfg(test)]
        if self.split_install {
            let entries = std::mem::take(&mut w.entries);
            self.write(w)?;
            return self.write(Write {
                entries,
                ..Write::default()
            });
        }
        self.write(w)
    }
}

/// The path shown for a simulated store.
#[cfg(test)]
const SIMULATED: &str = "(simulated)";

/// A simulated store's crash model: what was written since the last sync,
/// and the durable image (what the disk holds after a crash).
#[cfg(test)]
#[derive(Debug)]
struct CrashModel {
    state: std::sync::Mutex<ModelState>,
}

#[cfg(test)]
#[derive(Debug)]
struct ModelState {
    /// Writes since the last sync, in order, each whole.
    pending: Vec<Write>,
    /// Every synced write applied.
    durable: Image,
}

#[cfg(test)]
impl CrashModel {
    fn lock(&self) -> std::sync::MutexGuard<'_, ModelState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, w: Write) {
        self.lock().pending.push(w);
    }

    /// What a flush does: every pending write reaches the durable image.
    fn sync(&self) -> raft::Result<()> {
        let mut st = self.lock();
        let ModelState { pending, durable } = &mut *st;
        for w in pending.drain(..) {
            durable.apply(&w);
        }
        Ok(())
    }
}

#[cfg(test)]
fn not_simulated() -> raft::Error {
    raft::Error::Store(StorageError::Other("not a simulated store".into()))
}

/// The crash model, for tests and the simulator.
#[cfg(test)]
impl SledStorage {
    /// An in-memory store that models crashes: every write since the last
    /// sync is pending until `sync`, and `crash` gives the store a crash
    /// would leave. Nothing is ever written to disk. `instance` is its
    /// instance id (the simulator gives each node's store its own).
    pub fn simulated(instance: u64) -> Result<Self, StoreError> {
        Self::init(
            Inner {
                image: Image::default(),
                log: None,
                _lock: None,
                retry_rewrite_at: 0,
            },
            SIMULATED.into(),
            || instance,
        )?
        .with_model()
    }

    /// Starts the crash model: everything in the store is durable.
    fn with_model(mut self) -> Result<Self, StoreError> {
        let durable = self.lock().image.clone();
        self.model = Some(Arc::new(CrashModel {
            state: std::sync::Mutex::new(ModelState {
                pending: Vec::new(),
                durable,
            }),
        }));
        Ok(self)
    }

    fn model(&self) -> raft::Result<&CrashModel> {
        self.model.as_deref().ok_or_else(not_simulated)
    }

    /// The store as a crash now would leave it, reopened: the durable image
    /// plus the first `keep` pending writes (at most all of them), each
    /// whole, as the log is recovered in write order. The result is a new
    /// simulated store with nothing pending; this one is unchanged.
    pub fn crash(&self, keep: usize) -> Result<Self, StoreError> {
        let model = self.model.as_ref().ok_or_else(|| StoreError::Corrupt {
            what: SIMULATED.into(),
            reason: "not a simulated store".into(),
        })?;
        let disk = {
            let st = model.lock();
            let mut disk = st.durable.clone();
            for w in st.pending.iter().take(keep) {
                disk.apply(w);
            }
            disk
        };
        // Opened as a restarting node opens its data dir.
        Self::init(
            Inner {
                image: disk,
                log: None,
                _lock: None,
                retry_rewrite_at: 0,
            },
            SIMULATED.into(),
            new_instance,
        )?
        .with_model()
    }

    /// How many writes a crash now could lose (0 for a real store).
    pub fn pending_writes(&self) -> usize {
        self.model.as_ref().map_or(0, |m| m.lock().pending.len())
    }

    /// The hard state a crash now would leave.
    pub fn durable_hard_state(&self) -> raft::Result<HardState> {
        self.model()?.lock().durable.msg(K_HARD_STATE, "hard state")
    }

    /// The term of the entry at `index` a crash now would leave (or of the
    /// snapshot, at its index); `None` when a crash could lose it.
    pub fn durable_term(&self, index: u64) -> raft::Result<Option<u64>> {
        self.model()?.lock().durable.term(index)
    }

    /// Whether the flushed log holds the entry at `index` or a snapshot at
    /// or past it (what an append acknowledgement for `index` needs).
    pub fn durable_covers(&self, index: u64) -> raft::Result<bool> {
        self.model()?.lock().durable.covers(index)
    }
}

impl Storage for SledStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state()?,
            self.get_msg(K_CONF_STATE, "conf state")?,
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        if low < self.first_index()? {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index()? + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let inner = self.lock();
        let mut out = Vec::new();
        let mut size = 0u64;
        for item in inner.image.entries_from(low, Some(high)) {
            let (_, v) = item?;
            let e = Entry::parse_from_bytes(&v).map_err(|err| corrupt("entry", err))?;
            size += u64::from(e.compute_size());
            // At least one entry, then only while under max_size.
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot_meta()?;
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < self.first_index()? {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.lock().image.term(idx)? {
            Some(t) => Ok(t),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        let first = self.lock().image.entries.keys().next().cloned();
        match first {
            Some(k) => Ok(index_of(&k)?.0),
            None => Ok(self.snapshot_meta()?.index + 1),
        }
    }

    fn last_index(&self) -> raft::Result<u64> {
        let last = self.lock().image.entries.keys().next_back().cloned();
        match last {
            Some(k) => Ok(index_of(&k)?.0),
            None => Ok(self.snapshot_meta()?.index),
        }
    }

    /// The stored snapshot, if it is at or after `request_index` and its
    /// conf state lists `to` (raft-rs's receiver refuses a snapshot that
    /// does not name it). Otherwise raft is told to retry later and the
    /// request is recorded for [`SledStorage::take_snapshot_request`].
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = self.snapshot_meta()?;
        let cs = meta.get_conf_state();
        let names_to = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .any(|id| *id == to);
        // A snapshot made before the latest membership change would hand
        // the receiver an old configuration (a re-added node could find
        // itself the only voter of the bootstrap state and elect itself):
        // only one with the current configuration is sent.
        let current: ConfState = self.get_msg(K_CONF_STATE, "conf state")?;
        let same = |a: &[u64], b: &[u64]| {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            a == b
        };
        let current_conf = same(&cs.voters, &current.voters)
            && same(&cs.learners, &current.learners)
            && same(&cs.voters_outgoing, &current.voters_outgoing);
        if meta.index < request_index || !names_to || !current_conf {
            self.snapshot_wanted.store(true, Ordering::Release);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        self.last_snapshot()
    }
}

#[cfg(test)]
mod tests;
