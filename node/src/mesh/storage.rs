//! Raft log storage on sled, implementing raft-rs's [`Storage`].
//!
//! Architecture invariants:
//! - this is the only module that touches sled;
//! - every write method is atomic with respect to a crash: it is one sled
//!   batch when it touches one tree, one sled transaction over both trees
//!   when it touches both (installing a snapshot), so a crash keeps all of
//!   it or none of it;
//! - writes do not flush: [`SledStorage::sync`] makes every earlier write
//!   durable with one flush, and the node acknowledges (votes, append
//!   responses) only after it. sled replays its log in order and stops
//!   at the first torn batch, so a crash keeps a prefix of the unflushed
//!   writes, each whole (the crash model of `simulated` stores does the
//!   same);
//! - every call blocks: the Raft driver calls it from its own thread (or
//!   `spawn_blocking`), never from an async worker.
//!
//! Layout: tree `entries` maps the index (8 bytes, big-endian, so sled's
//! order is log order) to a protobuf `Entry`; tree `meta` holds the hard
//! state, the conf state, the last snapshot (metadata and data), a format
//! marker that tells our data dir from anything else, and the store's
//! instance id (random, written with the marker: a wiped data dir gets a
//! new one).
//!
//! Parts: no stored value is larger than `part_bytes` (by segment size). An
//! entry that encodes larger is stored as its first part at the index key
//! and the rest at the index followed by the part number (4 bytes,
//! big-endian, from 1), so one entry's parts sort together and before the
//! next entry; the snapshot's data likewise under `snapshot_data` and
//! `snapshot_data` + part number. The reason: sled writes a page that
//! exceeds a quarter of its segment to a file of its own under `blobs/`
//! and never fsyncs those files, so after a power loss its log can point
//! at a torn blob (the store cannot open) or a missing one (sled's
//! recovery skips that update and keeps later ones: an acknowledged write
//! lost). A leaf page holds at most 17 keys (20 just after a merge), so
//! parts of at most 1/24 of a quarter segment keep every page inside the
//! fsynced log. Data dirs written before parts (format v1, every value
//! whole) read the same; once opened they are marked v2, which an older
//! binary refuses by name. Reads of an entry or of the snapshot's parts
//! are not atomic against a writer on another thread: only the raft thread
//! writes, and it reads between its writes.
//!
//! Segment size: a new data dir uses [`SEGMENT_BYTES`], smaller than sled's
//! default (512 KiB) because sled's space floor is a few segments and the
//! log a watchdog keeps is small; sled refuses to open a database with
//! another segment size than it was made with, so an existing data dir
//! keeps the one its `conf` file records.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional as _};

/// Written into a new data dir (and over a v1 marker); checked at every open.
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
/// sled's page cache: the log is small and the node must stay small.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// sled's segment size for a new data dir (sled's default: 512 KiB).
pub const SEGMENT_BYTES: usize = 64 * 1024;
/// The smallest segment size a new data dir gets: below it a leaf of
/// parts no longer fits a quarter segment.
const MIN_SEGMENT_BYTES: usize = 32 * 1024;
/// How many parts fit a quarter segment: a leaf page holds at most 17
/// keys (20 for a moment after a merge, split at its next write), and each
/// key and length costs some bytes besides its value.
const PARTS_PER_PAGE: usize = 24;

/// Why the store could not be opened or used. Opening errors name the path;
/// every one of them stops the node (a Raft log cannot be half trusted).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, or its own files are corrupt).
    #[error("raft log at {path}: {}", sled_reason(.source))]
    Sled {
        /// The data dir.
        path: String,
        /// sled's error.
        source: sled::Error,
    },
    /// The directory holds a sled database that is not ours, or another version's.
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

/// The sled-backed Raft log.
#[derive(Debug, Clone)]
pub struct SledStorage {
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    /// This data dir's random id, read at open.
    instance: u64,
    /// The largest value stored whole (see "Parts" above).
    part_bytes: usize,
    /// Set by every write, cleared by `sync`: a ready that wrote nothing
    /// costs no flush. Shared by clones, as the database is.
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

/// One write: the changes to each tree, applied all or nothing.
#[derive(Debug, Clone, Default)]
struct Write {
    entries: Vec<(IVec, Option<IVec>)>,
    meta: Vec<(IVec, Option<IVec>)>,
}

fn batch(changes: &[(IVec, Option<IVec>)]) -> sled::Batch {
    let mut b = sled::Batch::default();
    for (k, v) in changes {
        match v {
            Some(v) => b.insert(k.clone(), v.clone()),
            None => b.remove(k.clone()),
        }
    }
    b
}

/// Applies one write to a pair of trees (of one database): one batch when
/// it touches one tree, one transaction when it touches both.
fn apply_write(entries: &sled::Tree, meta: &sled::Tree, w: &Write) -> sled::Result<()> {
    match (w.entries.is_empty(), w.meta.is_empty()) {
        (true, true) => Ok(()),
        (false, true) => entries.apply_batch(batch(&w.entries)),
        (true, false) => meta.apply_batch(batch(&w.meta)),
        (false, false) => {
            let (eb, mb) = (batch(&w.entries), batch(&w.meta));
            (entries, meta)
                .transaction(|(te, tm)| {
                    te.apply_batch(&eb)?;
                    tm.apply_batch(&mb)?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => e,
                    TransactionError::Abort(()) => {
                        sled::Error::Unsupported("raft log transaction aborted".into())
                    }
                })
        }
    }
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

/// Joins the parts of each entry read from the `entries` tree, in key
/// order: (index, encoded entry). A part without the ones before it is
/// corruption.
struct Joined<I: Iterator<Item = sled::Result<(IVec, IVec)>>> {
    iter: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Iterator for Joined<I> {
    type Item = raft::Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (k, v) = match self.iter.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(store_err(e))),
        };
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
        loop {
            match self.iter.peek() {
                None => break,
                // A part that cannot be read is an error, not the end.
                Some(Err(_)) => {
                    return self
                        .iter
                        .next()
                        .and_then(Result::err)
                        .map(|e| Err(store_err(e)));
                }
                Some(Ok((k, _))) => match index_of(k) {
                    Ok((i, p)) if i == index && p == want => {}
                    Ok((i, p)) if i == index => {
                        return Some(Err(corrupt(
                            "entry",
                            format!("{index}: part {p} where part {want} belongs"),
                        )));
                    }
                    _ => break,
                },
            }
            if let Some(Ok((_, v))) = self.iter.next() {
                buf.extend_from_slice(&v);
            }
            want = want.saturating_add(1);
        }
        Some(Ok((index, buf)))
    }
}

fn joined<I: Iterator<Item = sled::Result<(IVec, IVec)>>>(iter: I) -> Joined<I> {
    Joined {
        iter: iter.peekable(),
    }
}

/// The segment size a sled database in `dir` was made with, from its
/// `conf` file (sled refuses to open it with another); `None` for a new
/// one. An unreadable `conf` is left to sled, which names the problem.
fn segment_size_of(dir: &Path) -> Option<usize> {
    std::fs::read(dir.join("conf")).ok().and_then(|b| {
        String::from_utf8_lossy(&b).lines().find_map(|l| {
            l.strip_prefix("segment_size: ")
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
    })
}

/// The largest value stored whole in a database of `segment` bytes.
fn part_bytes_for(segment: usize) -> usize {
    (segment / 4 / PARTS_PER_PAGE).max(64)
}

/// The snapshot's data, joined from its parts in `meta`.
fn snapshot_data(meta: &sled::Tree) -> raft::Result<Vec<u8>> {
    let mut data = Vec::new();
    for (kv, n) in meta.scan_prefix(K_SNAP_DATA).zip(0u32..) {
        let (k, v) = kv.map_err(store_err)?;
        let want = if n == 0 {
            IVec::from(K_SNAP_DATA)
        } else {
            part_key(K_SNAP_DATA, n)
        };
        if k != want {
            return Err(corrupt(
                "snapshot data",
                format!("part {n} missing or misnamed ({} byte key)", k.len()),
            ));
        }
        data.extend_from_slice(&v);
    }
    Ok(data)
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

fn store_err(e: sled::Error) -> raft::Error {
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

impl SledStorage {
    /// Opens (or creates) the log in `dir`. A directory that holds another
    /// program's sled database, or files sled cannot read, is an error that
    /// names the directory; nothing in it is changed. A new store gets a
    /// random instance id, written (and flushed) with the format marker; a
    /// store made before instance ids gets one at its first open.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_segment(dir, SEGMENT_BYTES)
    }

    /// [`SledStorage::open`] with the segment size of a new data dir (for
    /// benchmarks; an existing one keeps its own).
    pub fn open_with_segment(dir: &Path, segment: usize) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let segment = match segment_size_of(dir) {
            Some(s) => s,
            // sled would write a new conf over a database it cannot read
            // with the size given: refuse rather than guess.
            None if std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0) => {
                return Err(StoreError::Corrupt {
                    what: format!("data dir {path}"),
                    reason: "sled's `conf` file is missing or unreadable, so its segment size is unknown (a data dir from before v2 used 524288: restore `conf` with `segment_size: 524288`, `use_compression: false` and `version: 0.34` lines, or move the dir aside and rejoin)".into(),
                });
            }
            // Smaller segments would make every page a blob (see "Parts").
            None => segment.max(MIN_SEGMENT_BYTES),
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .segment_size(segment)
            .open()
            .map_err(|source| StoreError::Sled {
                path: path.clone(),
                source,
            })?;
        let s = Self::init(
            db,
            path.clone(),
            new_instance,
            true,
            part_bytes_for(segment),
        )?;
        // sled writes its conf file (the segment size) without an fsync.
        for p in [dir.join("conf"), dir.to_path_buf()] {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::Sled {
                    path: path.clone(),
                    source: sled::Error::Io(e),
                })?;
        }
        Ok(s)
    }

    /// Checks (or writes) the format marker and the instance id of an open
    /// database. `instance` names a new store; `flush` makes that durable.
    fn init(
        db: sled::Db,
        path: String,
        instance: impl FnOnce() -> u64,
        flush: bool,
        part_bytes: usize,
    ) -> Result<Self, StoreError> {
        let sled_err = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        let meta = db.open_tree("meta").map_err(sled_err)?;
        let entries = db.open_tree("entries").map_err(sled_err)?;
        let mut created = Vec::new();
        match meta.get(K_FORMAT).map_err(sled_err)? {
            Some(f) if f.as_ref() == FORMAT => {}
            Some(f) if f.as_ref() == FORMAT_V1 => {
                // From now on values may be stored in parts, which a v1
                // reader would misread: the marker says so.
                created.push((IVec::from(K_FORMAT), Some(IVec::from(FORMAT))));
            }
            Some(f) => {
                return Err(StoreError::Foreign {
                    path,
                    found: String::from_utf8_lossy(&f).into_owned(),
                });
            }
            None => {
                // A new store must be empty: any other tree or key means foreign data.
                let foreign = db
                    .tree_names()
                    .iter()
                    .any(|n| !matches!(n.as_ref(), b"meta" | b"entries" | b"__sled__default"))
                    || !db.is_empty()
                    || !entries.is_empty();
                if foreign {
                    return Err(StoreError::Foreign {
                        path,
                        found: "(none)".into(),
                    });
                }
                created.push((IVec::from(K_FORMAT), Some(IVec::from(FORMAT))));
            }
        }
        let id = match meta.get(K_INSTANCE).map_err(sled_err)? {
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
        if !created.is_empty() {
            meta.apply_batch(batch(&created)).map_err(sled_err)?;
            if flush {
                db.flush().map_err(sled_err)?;
            }
        }
        Ok(Self {
            db,
            entries,
            meta,
            instance: id,
            part_bytes,
            dirty: Arc::default(),
            snapshot_wanted: Arc::default(),
            #[cfg(test)]
            model: None,
            #[cfg(test)]
            split_install: false,
        })
    }

    /// This data dir's instance id: random and non-zero, fixed when the
    /// store was created; a wiped data dir gets a new one.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Makes every earlier write durable (one flush). The driver calls it
    /// once per ready, after writing entries and hard state and before
    /// sending the messages that acknowledge them. Free when nothing was
    /// written since the last sync.
    pub fn sync(&self) -> raft::Result<()> {
        #[cfg(test)]
        if let Some(model) = &self.model {
            self.dirty.store(false, Ordering::Release);
            return model.sync();
        }
        if self.dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = self.db.flush()
        {
            self.dirty.store(true, Ordering::Release);
            return Err(store_err(e));
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
        apply_write(&self.entries, &self.meta, &w).map_err(store_err)?;
        self.dirty.store(true, Ordering::Release);
        #[cfg(test)]
        if let Some(model) = &self.model {
            model.record(w);
        }
        Ok(())
    }

    fn get_msg<M: protobuf::Message + Default>(&self, k: &[u8], what: &str) -> raft::Result<M> {
        match self.meta.get(k).map_err(store_err)? {
            None => Ok(M::default()),
            Some(v) => M::parse_from_bytes(&v).map_err(|e| corrupt(what, e)),
        }
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
        let mut snap = Snapshot::default();
        snap.set_metadata(self.snapshot_meta()?);
        snap.set_data(snapshot_data(&self.meta)?.into());
        Ok(snap)
    }

    /// Writes the conf state; durable at the next sync.
    pub fn set_conf_state(&self, cs: &ConfState) -> raft::Result<()> {
        self.write(Write {
            meta: vec![(K_CONF_STATE.into(), Some(encode(cs, "conf state")?))],
            ..Write::default()
        })
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
        let mut w = Write::default();
        for k in self.entries.range(key(first.index)..).keys() {
            w.entries.push((k.map_err(store_err)?, None));
        }
        for e in ents {
            let bytes = e.write_to_bytes().map_err(|err| corrupt("entry", err))?;
            w.entries
                .extend(parts(&key(e.index), &bytes, self.part_bytes));
        }
        self.write(w)
    }

    /// Drops every entry before `index` (they are in a snapshot) in one
    /// write; durable at the next sync.
    pub fn compact(&self, index: u64) -> raft::Result<()> {
        if index > self.last_index()? + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut w = Write::default();
        for k in self.entries.range(..key(index)).keys() {
            w.entries.push((k.map_err(store_err)?, None));
        }
        self.write(w)
    }

    /// The changes that store `data` as the snapshot's data, in parts,
    /// dropping any part of the previous data past the new ones.
    fn snapshot_data_writes(&self, data: &[u8]) -> raft::Result<Vec<(IVec, Option<IVec>)>> {
        let mut w = parts(K_SNAP_DATA, data, self.part_bytes);
        let count = w.len();
        for k in self.meta.scan_prefix(K_SNAP_DATA).keys() {
            let k = k.map_err(store_err)?;
            // Parts 0..count are overwritten; any other key under the
            // prefix (a part past the new ones) goes.
            let part = k[K_SNAP_DATA.len()..]
                .try_into()
                .ok()
                .map(u32::from_be_bytes)
                .and_then(|n| usize::try_from(n).ok());
            if k.len() != K_SNAP_DATA.len() && part.is_none_or(|n| n == 0 || n >= count) {
                w.push((k, None));
            }
        }
        Ok(w)
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
        changes.extend(self.snapshot_data_writes(&data)?);
        self.write(Write {
            meta: changes,
            ..Write::default()
        })
    }

    /// Installs a snapshot received from the leader: the whole log is
    /// dropped, the hard state's commit moves to the snapshot (and its term
    /// up to the snapshot's, with no vote in that term), the conf state
    /// becomes the snapshot's. One transaction over both trees; durable at
    /// the next sync.
    pub fn apply_snapshot(&self, snap: &Snapshot) -> raft::Result<()> {
        let meta = snap.get_metadata();
        if meta.index < self.first_index()? - 1 || meta.index < self.snapshot_meta()?.index {
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
            ..Write::default()
        };
        w.meta.extend(self.snapshot_data_writes(snap.get_data())?);
        for k in self.entries.iter().keys() {
            w.entries.push((k.map_err(store_err)?, None));
        }
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

/// What a disk holds: both trees as plain maps.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
struct Image {
    entries: std::collections::BTreeMap<IVec, IVec>,
    meta: std::collections::BTreeMap<IVec, IVec>,
}

#[cfg(test)]
impl Image {
    /// A copy of a store's trees.
    fn of(s: &SledStorage) -> sled::Result<Self> {
        let mut image = Image::default();
        for (tree, map) in [(&s.entries, &mut image.entries), (&s.meta, &mut image.meta)] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                map.insert(k, v);
            }
        }
        Ok(image)
    }

    /// One write, whole (what sled's recovery keeps of a batch or a
    /// transaction: all of it).
    fn apply(&mut self, w: &Write) {
        for (changes, map) in [(&w.entries, &mut self.entries), (&w.meta, &mut self.meta)] {
            for (k, v) in changes {
                match v {
                    Some(v) => map.insert(k.clone(), v.clone()),
                    None => map.remove(k),
                };
            }
        }
    }

    fn msg<M: protobuf::Message + Default>(&self, k: &[u8], what: &str) -> raft::Result<M> {
        match self.meta.get(k) {
            None => Ok(M::default()),
            Some(v) => M::parse_from_bytes(v).map_err(|e| corrupt(what, e)),
        }
    }

    /// Whether the entry at `index` is held, or covered by the snapshot.
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
        let held = self
            .entries
            .range(IVec::from(&key(index))..)
            .map(|(k, v)| Ok((k.clone(), v.clone())));
        match joined(held).next().transpose()? {
            Some((i, v)) if i == index => Ok(Some(
                Entry::parse_from_bytes(&v)
                    .map_err(|e| corrupt("entry", e))?
                    .term,
            )),
            _ => Ok(None),
        }
    }
}

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

/// A temporary sled database that is never flushed.
#[cfg(test)]
fn temporary_db() -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .temporary(true)
        .flush_every_ms(None)
        .cache_capacity(CACHE_BYTES)
        .segment_size(SEGMENT_BYTES)
        .open()
        .map_err(|source| StoreError::Sled {
            path: SIMULATED.into(),
            source,
        })
}

#[cfg(test)]
fn not_simulated() -> raft::Error {
    raft::Error::Store(StorageError::Other("not a simulated store".into()))
}

/// The crash model, for tests and the simulator.
#[cfg(test)]
impl SledStorage {
    /// An in-memory store that models crashes: every write since the last
    /// [`sync`](Self::sync) is pending, and `sync` applies the pending
    /// writes to a durable image of the store (what its disk would hold).
    /// Nothing is ever flushed to disk. `instance` is its instance id
    /// (non-zero).
    pub fn simulated(instance: u64) -> Result<Self, StoreError> {
        Self::init(
            temporary_db()?,
            SIMULATED.into(),
            || instance,
            false,
            part_bytes_for(SEGMENT_BYTES),
        )?
        .with_model()
    }

    /// Starts the crash model: everything in the store is durable.
    fn with_model(mut self) -> Result<Self, StoreError> {
        let durable = Image::of(&self).map_err(|source| StoreError::Sled {
            path: SIMULATED.into(),
            source,
        })?;
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
    /// whole, as sled recovers its log in write order. The result is a new
    /// simulated store with nothing pending; this one is unchanged.
    pub fn crash(&self, keep: usize) -> Result<Self, StoreError> {
        let sled_err = |source| StoreError::Sled {
            path: SIMULATED.into(),
            source,
        };
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| sled_err(sled::Error::Unsupported("not a simulated store".into())))?;
        let mut disk = {
            let st = model.lock();
            let mut disk = st.durable.clone();
            for w in st.pending.iter().take(keep) {
                disk.apply(w);
            }
            disk
        };
        let db = temporary_db()?;
        for (name, map) in [("entries", &mut disk.entries), ("meta", &mut disk.meta)] {
            let mut all = sled::Batch::default();
            for (k, v) in std::mem::take(map) {
                all.insert(k, v);
            }
            db.open_tree(name)
                .and_then(|t| t.apply_batch(all))
                .map_err(sled_err)?;
        }
        // Opened as a restarting node opens its data dir.
        Self::init(
            db,
            SIMULATED.into(),
            new_instance,
            false,
            part_bytes_for(SEGMENT_BYTES),
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
    #[cfg(test)]
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
        let mut out = Vec::new();
        let mut size = 0u64;
        for item in joined(self.entries.range(key(low)..key(high))) {
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
        match joined(self.entries.range(key(idx)..)).next().transpose()? {
            Some((i, v)) if i == idx => Ok(Entry::parse_from_bytes(&v)
                .map_err(|e| corrupt("entry", e))?
                .term),
            _ => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        match self.entries.first().map_err(store_err)? {
            Some((k, _)) => Ok(index_of(&k)?.0),
            None => Ok(self.snapshot_meta()?.index + 1),
        }
    }

    fn last_index(&self) -> raft::Result<u64> {
        match self.entries.last().map_err(store_err)? {
            Some((k, _)) => Ok(index_of(&k)?.0),
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
