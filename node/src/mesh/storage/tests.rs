//! One storage suite, run against raft-rs's MemStorage (the reference) and
//! SledStorage; then what only a durable store must do.

// Protobuf messages are built field by field, as their docs show.
#![allow(clippy::field_reassign_with_default)]

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, Storage, StorageError};

use super::*;

/// The writes both stores support, behind one face.
trait Store: Storage {
    fn put(&self, ents: &[Entry]);
    fn cut(&self, index: u64);
    fn hard(&self, hs: HardState);
    fn install(&self, snap: Snapshot) -> raft::Result<()>;
}

impl Store for MemStorage {
    fn put(&self, ents: &[Entry]) {
        self.wl().append(ents).unwrap();
    }
    fn cut(&self, index: u64) {
        self.wl().compact(index).unwrap();
    }
    fn hard(&self, hs: HardState) {
        self.wl().set_hardstate(hs);
    }
    fn install(&self, snap: Snapshot) -> raft::Result<()> {
        self.wl().apply_snapshot(snap)
    }
}

impl Store for SledStorage {
    fn put(&self, ents: &[Entry]) {
        self.append(ents).unwrap();
    }
    fn cut(&self, index: u64) {
        self.compact(index).unwrap();
    }
    fn hard(&self, hs: HardState) {
        self.set_hard_state(&hs).unwrap();
    }
    fn install(&self, snap: Snapshot) -> raft::Result<()> {
        self.apply_snapshot(&snap)
    }
}

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = vec![index as u8; 10].into();
    e
}

fn snapshot(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters;
    s.data = b"state".to_vec().into();
    s
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn indexes(es: &[Entry]) -> Vec<(u64, u64)> {
    es.iter().map(|e| (e.index, e.term)).collect()
}

/// The shared behaviour; `fresh` makes an empty store.
fn suite<S: Store>(fresh: impl Fn() -> S) {
    // Empty: first 1, last 0.
    let s = fresh();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));

    // Append, read back, terms.
    let s = fresh();
    s.put(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 3));
    assert_eq!(
        indexes(&s.entries(1, 4, None, ctx()).unwrap()),
        vec![(1, 1), (2, 1), (3, 2)]
    );
    assert_eq!(s.term(3).unwrap(), 2);
    assert_eq!(s.term(0).unwrap(), 0);
    assert!(matches!(
        s.term(9),
        Err(raft::Error::Store(StorageError::Unavailable))
    ));

    // A conflicting suffix is replaced.
    s.put(&[entry(2, 3)]);
    assert_eq!(
        indexes(&s.entries(1, 3, None, ctx()).unwrap()),
        vec![(1, 1), (2, 3)]
    );
    assert_eq!(s.last_index().unwrap(), 2);

    // max_size: always at least one entry.
    s.put(&[entry(3, 3), entry(4, 3)]);
    let one = u64::from(entry(1, 1).compute_size());
    assert_eq!(s.entries(1, 5, 0, ctx()).unwrap().len(), 1);
    assert_eq!(s.entries(1, 5, one * 2, ctx()).unwrap().len(), 2);
    assert_eq!(s.entries(1, 5, None, ctx()).unwrap().len(), 4);

    // Compaction: the index before the first keeps its term for matching
    // only in the snapshot case; entries before are gone.
    s.cut(3);
    assert_eq!(s.first_index().unwrap(), 3);
    assert!(matches!(
        s.entries(2, 4, None, ctx()),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    assert!(matches!(
        s.term(1),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    assert_eq!(
        indexes(&s.entries(3, 5, None, ctx()).unwrap()),
        vec![(3, 3), (4, 3)]
    );

    // Hard state round trip.
    let mut hs = HardState::default();
    hs.term = 3;
    hs.vote = 2;
    hs.commit = 4;
    s.hard(hs.clone());
    assert_eq!(s.initial_state().unwrap().hard_state, hs);

    // Installing a snapshot drops the log and moves commit.
    let s = fresh();
    s.put(&[entry(1, 1), entry(2, 1)]);
    s.install(snapshot(10, 4, vec![1, 2, 3])).unwrap();
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (11, 10)
    );
    assert_eq!(s.term(10).unwrap(), 4);
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.commit, 10);
    assert_eq!(st.hard_state.term, 4);
    assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
    s.put(&[entry(11, 4)]);
    assert_eq!(s.last_index().unwrap(), 11);
    // An older snapshot is refused.
    assert!(matches!(
        s.install(snapshot(5, 2, vec![1])),
        Err(raft::Error::Store(StorageError::SnapshotOutOfDate))
    ));

    // Entries far larger than a stored part read back whole, between small
    // ones; a conflicting suffix of large entries is replaced whole.
    let s = fresh();
    s.put(&[
        entry(1, 1),
        big_entry(2, 1, 300_000),
        entry(3, 1),
        big_entry(4, 1, 50_000),
    ]);
    let got = s.entries(1, 5, None, ctx()).unwrap();
    assert_eq!(
        got,
        vec![
            entry(1, 1),
            big_entry(2, 1, 300_000),
            entry(3, 1),
            big_entry(4, 1, 50_000)
        ]
    );
    assert_eq!((s.term(2).unwrap(), s.term(4).unwrap()), (1, 1));
    s.put(&[big_entry(2, 2, 10_000)]);
    assert_eq!(
        s.entries(1, 3, None, ctx()).unwrap(),
        vec![entry(1, 1), big_entry(2, 2, 10_000)]
    );
    assert_eq!(s.last_index().unwrap(), 2);
    s.cut(2);
    assert_eq!((s.first_index().unwrap(), s.term(2).unwrap()), (2, 2));
}

/// An entry whose data is `len` bytes of a pattern that shows misordered parts.
fn big_entry(index: u64, term: u64, len: usize) -> Entry {
    let mut e = entry(index, term);
    e.data = (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    e
}

#[test]
fn mem_storage_passes_the_suite() {
    suite(MemStorage::new);
}

#[test]
fn sled_storage_passes_the_suite() {
    let dirs = std::cell::RefCell::new(Vec::new());
    suite(|| {
        let d = tempfile::tempdir().unwrap();
        let s = SledStorage::open(d.path()).unwrap();
        dirs.borrow_mut().push(d);
        s
    });
}

/// Opens `dir` again after a handle on it was dropped. sled releases its
/// directory lock when its last background write lets go of the database,
/// a moment after the drop: retry while (and only while) the lock is held,
/// up to a deadline.
fn reopen(dir: &std::path::Path) -> SledStorage {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStorage::open(dir) {
            Err(StoreError::InUse { .. }) if tokio::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            r => return r.unwrap(),
        }
    }
}

#[test]
fn simulated_storage_passes_the_suite() {
    suite(|| SledStorage::simulated(1).unwrap());
}

#[test]
fn sled_storage_survives_a_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(d.path()).unwrap();
        s.append(&[entry(1, 1), entry(2, 2)]).unwrap();
        let mut hs = HardState::default();
        hs.term = 2;
        hs.commit = 2;
        s.set_hard_state(&hs).unwrap();
        let mut cs = ConfState::default();
        cs.voters = vec![1, 2, 3];
        s.set_conf_state(&cs).unwrap();
        s.create_snapshot(2, &cs, b"applied".to_vec()).unwrap();
        s.sync().unwrap();
        // Dropping the handle also flushes: this test checks what a reopen
        // reads back, `a_synced_write_survives_a_process_exit` that sync
        // alone makes writes durable.
    }
    let s = reopen(d.path());
    assert_eq!(
        indexes(&s.entries(1, 3, None, ctx()).unwrap()),
        vec![(1, 1), (2, 2)]
    );
    let st = s.initial_state().unwrap();
    assert_eq!((st.hard_state.term, st.hard_state.commit), (2, 2));
    assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
    let snap = s.snapshot(2, 3).unwrap();
    assert_eq!(
        (snap.get_metadata().index, snap.get_metadata().term),
        (2, 2)
    );
    assert_eq!(snap.get_data(), b"applied");
    assert!(matches!(
        s.snapshot(3, 3),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
}

#[test]
fn a_foreign_data_dir_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    {
        let other = sled::open(d.path()).unwrap();
        other.insert(b"someone", b"else").unwrap();
        other.flush().unwrap();
    }
    let err = SledStorage::open(d.path()).unwrap_err().to_string();
    assert!(err.contains(&d.path().display().to_string()), "{err}");
    assert!(err.contains("not a faxi-watchdog data dir"), "{err}");

    // Garbage where sled expects its files.
    let g = tempfile::tempdir().unwrap();
    std::fs::write(g.path().join("conf"), b"\xff\xfe garbage").unwrap();
    std::fs::write(g.path().join("db"), b"\x00\x01 not a sled file").unwrap();
    let err = SledStorage::open(g.path()).unwrap_err().to_string();
    assert!(err.contains(&g.path().display().to_string()), "{err}");
}

#[test]
fn a_sled_data_dir_of_an_earlier_version_is_copied_into_the_log_and_reads_the_same() {
    // A v1 data dir: sled's default segment size, every value whole.
    let d = tempfile::tempdir().unwrap();
    let big = big_entry(2, 1, 300_000);
    let data = vec![5u8; 400_000];
    {
        let db = sled::Config::new().path(d.path()).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        let entries = db.open_tree("entries").unwrap();
        meta.insert(K_FORMAT, FORMAT_V1).unwrap();
        meta.insert(K_INSTANCE, &key(77)).unwrap();
        meta.insert(K_SNAP_DATA, data.clone()).unwrap();
        for e in [entry(1, 1), big.clone(), entry(3, 1)] {
            entries
                .insert(key(e.index), e.write_to_bytes().unwrap())
                .unwrap();
        }
        db.flush().unwrap();
    }
    let s = reopen(d.path());
    assert_eq!(s.instance(), 77);
    assert_eq!(
        s.entries(1, 4, None, ctx()).unwrap(),
        vec![entry(1, 1), big.clone(), entry(3, 1)]
    );
    assert_eq!(s.term(2).unwrap(), 1);
    assert_eq!(s.last_snapshot().unwrap().get_data(), &data[..]);
    assert_eq!(s.lock().image.meta.get(K_FORMAT).unwrap(), FORMAT);
    // sled's files are gone; the log holds it all.
    assert!(
        sled_files(d.path()).is_empty(),
        "{:?}",
        sled_files(d.path())
    );
    // New writes go in parts, next to the whole ones.
    s.append(&[big_entry(4, 2, 200_000)]).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = reopen(d.path());
    assert_eq!(s.instance(), 77);
    assert_eq!(
        s.entries(2, 5, None, ctx()).unwrap()[2],
        big_entry(4, 2, 200_000)
    );
    assert_eq!(s.entries(2, 5, None, ctx()).unwrap()[0], big);
}

#[test]
fn a_copy_cut_short_before_sleds_files_went_reads_the_log() {
    // The log was written whole, sled's files were still there: the log is
    // the store, and the leftovers go.
    let d = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(d.path()).unwrap();
        s.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        s.sync().unwrap();
    }
    {
        let db = sled::Config::new().path(d.path()).open().unwrap();
        db.insert(b"stale", b"sled").unwrap();
        db.flush().unwrap();
    }
    let s = reopen(d.path());
    assert_eq!(
        indexes(&s.entries(1, 3, None, ctx()).unwrap()),
        vec![(1, 1), (2, 1)]
    );
    assert!(sled_files(d.path()).is_empty());
}

#[test]
fn a_data_dir_that_lost_sleds_conf_is_refused_not_opened_with_a_guessed_segment_size() {
    let d = tempfile::tempdir().unwrap();
    {
        let db = sled::Config::new().path(d.path()).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(K_FORMAT, FORMAT_V1).unwrap();
        db.flush().unwrap();
    }
    std::fs::remove_file(d.path().join("conf")).unwrap();
    let err = match SledStorage::open(d.path()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened without its conf"),
    };
    assert!(err.contains(&d.path().display().to_string()), "{err}");
    assert!(
        err.contains("`conf` file is missing or unreadable"),
        "{err}"
    );
}

#[test]
fn a_part_without_its_start_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let s = SledStorage::open(d.path()).unwrap();
    s.append(&[entry(1, 1), big_entry(2, 1, 10_000), entry(3, 1)])
        .unwrap();
    s.write(Write {
        entries: vec![(IVec::from(&key(2)), None)],
        ..Write::default()
    })
    .unwrap();
    let err = s.entries(1, 4, None, ctx()).unwrap_err().to_string();
    assert!(
        err.contains("corrupt entry: 2: part 1 without the parts before it"),
        "{err}"
    );
    s.write(Write {
        entries: vec![(part_key(&key(2), 1), None)],
        ..Write::default()
    })
    .unwrap();
    let err = s.entries(1, 4, None, ctx()).unwrap_err().to_string();
    assert!(
        err.contains("corrupt entry: 2: part 2 without the parts before it"),
        "{err}"
    );
}

#[test]
fn a_corrupt_entry_key_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let s = SledStorage::open(d.path()).unwrap();
    s.write(Write {
        entries: vec![(IVec::from(b"bad"), Some(IVec::from(b"x")))],
        ..Write::default()
    })
    .unwrap();
    let err = s.first_index().unwrap_err().to_string();
    assert!(
        err.contains("corrupt entry key: 3 bytes, not 8 or 12"),
        "{err}"
    );
}

// ---- Durability: sync, and nothing else, makes writes survive. ----

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = vote;
    hs.commit = commit;
    hs
}

/// Set in the child process of `a_synced_write_survives_a_process_exit`.
const EXIT_CHILD_DIR: &str = "FAXI_STORAGE_EXIT_CHILD_DIR";
/// The child's exit status: proves it got to its end.
const EXIT_CHILD_CODE: i32 = 42;

/// Real sled, real files: a child process writes, syncs and exits without
/// dropping the store (so sled's flush on drop never runs), as a killed
/// node would; the parent reopens the dir and finds what was synced.
#[test]
fn a_synced_write_survives_a_process_exit() {
    if let Some(dir) = std::env::var_os(EXIT_CHILD_DIR) {
        let s = SledStorage::open(std::path::Path::new(&dir)).unwrap();
        s.append(&[entry(1, 1), entry(2, 2), entry(3, 2)]).unwrap();
        s.set_hard_state(&hard_state(2, 1, 3)).unwrap();
        s.sync().unwrap();
        // Exits without running destructors: nothing else flushes.
        std::process::exit(EXIT_CHILD_CODE);
    }
    let d = tempfile::tempdir().unwrap();
    let name = concat!(module_path!(), "::a_synced_write_survives_a_process_exit");
    let name = name.split_once("::").map_or(name, |(_, rest)| rest);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(EXIT_CHILD_DIR, d.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(EXIT_CHILD_CODE),
        "the child did not get to its exit: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = SledStorage::open(d.path()).unwrap();
    assert_eq!(s.last_index().unwrap(), 3, "synced entries were lost");
    assert_eq!(
        indexes(&s.entries(1, 4, None, ctx()).unwrap()),
        vec![(1, 1), (2, 2), (3, 2)]
    );
    assert_eq!(s.initial_state().unwrap().hard_state, hard_state(2, 1, 3));
}

#[test]
fn a_crash_keeps_exactly_what_was_synced_and_whole_writes_after_it() {
    let s = SledStorage::simulated(7).unwrap();
    s.append(&[entry(1, 1), entry(2, 1)]).unwrap();
    s.set_hard_state(&hard_state(1, 1, 1)).unwrap();
    assert_eq!(s.pending_writes(), 2);
    // Nothing synced yet: the durable image is empty.
    assert_eq!(s.durable_hard_state().unwrap(), HardState::default());
    assert_eq!(s.durable_term(1).unwrap(), None);
    let lost = s.crash(0).unwrap();
    assert_eq!(lost.last_index().unwrap(), 0);
    assert_eq!(
        lost.initial_state().unwrap().hard_state,
        HardState::default()
    );
    assert_eq!(
        lost.instance(),
        7,
        "the instance id is durable from the start"
    );
    // The first write survives whole, the second not at all.
    let one = s.crash(1).unwrap();
    assert_eq!(one.last_index().unwrap(), 2);
    assert_eq!(
        one.initial_state().unwrap().hard_state,
        HardState::default()
    );

    s.sync().unwrap();
    assert_eq!(s.pending_writes(), 0);
    assert_eq!(s.durable_hard_state().unwrap(), hard_state(1, 1, 1));
    assert_eq!(s.durable_term(2).unwrap(), Some(1));
    assert_eq!(s.durable_term(3).unwrap(), None);

    // A crashed store models crashes again: unsynced writes go, synced stay.
    let c = s.crash(0).unwrap();
    assert_eq!(c.pending_writes(), 0);
    assert_eq!(c.durable_hard_state().unwrap(), hard_state(1, 1, 1));
    c.append(&[entry(3, 2)]).unwrap();
    assert_eq!(c.crash(0).unwrap().last_index().unwrap(), 2);
    c.sync().unwrap();
    assert_eq!(c.crash(0).unwrap().last_index().unwrap(), 3);

    // A snapshot's term is durable at its index once synced.
    c.apply_snapshot(&snapshot(10, 4, vec![1, 2, 3])).unwrap();
    assert_eq!(c.durable_term(10).unwrap(), None);
    c.sync().unwrap();
    assert_eq!(c.durable_term(10).unwrap(), Some(4));
    assert_eq!(
        c.durable_term(3).unwrap(),
        None,
        "the log went with the install"
    );
}

// ---- The crash-between-writes harness. ----

/// One step of a scripted node life: a write of the store's API, or the
/// sync that ends a ready.
#[derive(Debug, Clone)]
enum Step {
    Append(Vec<Entry>),
    Hard(HardState),
    Commit(u64),
    Conf(ConfState),
    Snap(u64, ConfState, &'static [u8]),
    Compact(u64),
    Install(Snapshot),
    Sync,
}

/// Writes as the driver makes them, ready by ready: a bootstrap install,
/// appends with hard states, the light ready's commit, a conf change
/// applied, a conflicting append that truncates an uncommitted suffix, a
/// snapshot taken and the log compacted, a newer snapshot installed from a
/// leader, more appends, and writes left unsynced at the end.
fn workload() -> Vec<Step> {
    use Step::*;
    let with_learner = conf(vec![1, 2, 3], vec![4]);
    let mut snap20 = snapshot(20, 4, vec![1, 2, 3]);
    snap20.mut_metadata().mut_conf_state().learners = vec![4];
    vec![
        // Core::open: the bootstrap snapshot (synced by the first ready).
        Install(snapshot(1, 1, vec![1, 2, 3])),
        // A follower in term 2: entries and the vote, then the ack.
        Append(entries(2, 4, 2)),
        Hard(hard_state(2, 1, 1)),
        Sync,
        Append(entries(5, 7, 2)),
        Hard(hard_state(2, 1, 4)),
        Sync,
        // The light ready's commit, then a conf change applied.
        Commit(5),
        Conf(with_learner.clone()),
        // Term 3: a new leader overwrites the uncommitted 6 and 7.
        Append(entries(6, 8, 3)),
        Hard(hard_state(3, 2, 5)),
        Sync,
        // Commit, then a snapshot at the applied index and compaction.
        Commit(7),
        Snap(7, with_learner.clone(), b"state@7"),
        Compact(7),
        Append(entries(9, 10, 3)),
        Hard(hard_state(3, 2, 8)),
        Sync,
        // Far behind a term-4 leader: its snapshot, installed.
        Install(snap20),
        Hard(hard_state(4, 0, 20)),
        Sync,
        Append(entries(21, 23, 4)),
        Hard(hard_state(4, 0, 21)),
        Sync,
        // Left unsynced: a crash may keep any prefix of these.
        Commit(23),
        Conf(conf(vec![1, 2, 3, 4], vec![])),
        Snap(22, conf(vec![1, 2, 3, 4], vec![]), b"state@22"),
        Compact(22),
        Append(entries(24, 24, 4)),
    ]
}

fn run(s: &SledStorage, step: &Step) {
    match step {
        Step::Append(es) => s.append(es).unwrap(),
        Step::Hard(hs) => s.set_hard_state(hs).unwrap(),
        Step::Commit(c) => s.set_commit(*c).unwrap(),
        Step::Conf(cs) => s.set_conf_state(cs).unwrap(),
        Step::Snap(i, cs, data) => s.create_snapshot(*i, cs, data.to_vec()).unwrap(),
        Step::Compact(i) => s.compact(*i).unwrap(),
        Step::Install(snap) => s.apply_snapshot(snap).unwrap(),
        Step::Sync => s.sync().unwrap(),
    }
}

/// Everything raft-rs can read from a store.
#[derive(Debug, Clone, PartialEq)]
struct View {
    hard: HardState,
    conf: ConfState,
    snapshot: Snapshot,
    first: u64,
    last: u64,
    /// Every stored entry (index, term, data), read straight from the map.
    log: Vec<(u64, u64, Vec<u8>)>,
}

fn view(s: &SledStorage) -> View {
    let st = s.initial_state().unwrap();
    let log = s
        .lock()
        .image
        .entries_from(0, None)
        .map(|v| {
            let e = Entry::parse_from_bytes(&v.unwrap().1).unwrap();
            (e.index, e.term, e.data.to_vec())
        })
        .collect();
    View {
        hard: st.hard_state,
        conf: st.conf_state,
        snapshot: s.last_snapshot().unwrap(),
        first: s.first_index().unwrap(),
        last: s.last_index().unwrap(),
        log,
    }
}

/// What raft-rs needs of a store it starts on (the driver starts it with
/// `applied` = the snapshot's index): a log contiguous from the snapshot,
/// a commit index inside it, a term for the snapshot's index; then
/// `RawNode::new` itself, which panics on what it cannot use. Returns every
/// check that fails.
fn consistency(s: &SledStorage, v: &View) -> Vec<String> {
    let mut bad = Vec::new();
    let snap = v.snapshot.get_metadata();
    let indexes: Vec<u64> = v.log.iter().map(|e| e.0).collect();
    if !indexes.is_empty() && indexes != (v.first..=v.last).collect::<Vec<_>>() {
        bad.push(format!(
            "log not contiguous: {indexes:?} for first {} last {}",
            v.first, v.last
        ));
    }
    if indexes.is_empty() && (v.first, v.last) != (snap.index + 1, snap.index) {
        bad.push(format!(
            "empty log but first {} last {} around snapshot {}",
            v.first, v.last, snap.index
        ));
    }
    if v.first > snap.index + 1 || snap.index > v.last {
        bad.push(format!(
            "snapshot {} outside the log [{}, {}]",
            snap.index, v.first, v.last
        ));
    }
    if let Some(e) = v.log.iter().find(|e| e.0 == snap.index)
        && e.1 != snap.term
    {
        bad.push(format!(
            "entry {} has term {}, the snapshot there term {}",
            e.0, e.1, snap.term
        ));
    }
    match s.term(snap.index) {
        Ok(t) if t == snap.term => {}
        other => bad.push(format!(
            "term of the snapshot's index {}: {other:?}",
            snap.index
        )),
    }
    if v.hard.commit < snap.index || v.hard.commit > v.last {
        bad.push(format!(
            "commit {} outside [snapshot {}, last {}]",
            v.hard.commit, snap.index, v.last
        ));
    }
    if snap.index > 0 && v.conf.voters.is_empty() {
        bad.push("a snapshot but no voters".into());
    }
    let cfg = raft::Config {
        id: 1,
        applied: snap.index,
        ..raft::Config::default()
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let store = s.clone();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        raft::RawNode::new(&cfg, store, &logger).map(drop)
    })) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bad.push(format!("raft-rs refuses the store: {e}")),
        Err(p) => bad.push(format!(
            "raft-rs refuses the store: panic {:?}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
        )),
    }
    bad
}

/// Runs the workload; after every step, crashes a copy at every point (the
/// durable image plus each prefix of the pending writes) and checks the
/// reopened store: consistent, raft-rs starts on it, and it equals the
/// store as it was after some whole step at or after the last sync (the
/// acknowledged prefix survives, and no write survives in part). Returns
/// every violation found, naming the step and the crash point.
fn crash_everywhere(split_install: bool) -> (Vec<String>, usize) {
    let mut s = SledStorage::simulated(1).unwrap();
    s.split_install = split_install;
    // states[m]: the store after m writing steps.
    let mut states = vec![view(&s)];
    let mut synced = 0;
    let mut violations = Vec::new();
    let mut crashes = 0;
    for (n, step) in workload().iter().enumerate() {
        run(&s, step);
        if matches!(step, Step::Sync) {
            synced = states.len() - 1;
            assert_eq!(s.pending_writes(), 0);
        } else {
            states.push(view(&s));
        }
        // The script itself is a life raft-rs accepts.
        let live = consistency(&s, states.last().unwrap());
        assert!(live.is_empty(), "step {n} {step:?}: live store: {live:?}");
        for keep in 0..=s.pending_writes() {
            crashes += 1;
            let c = s.crash(keep).unwrap();
            let v = view(&c);
            let at = format!("after step {n} ({step:?}), crash keeping {keep} write(s)");
            for e in consistency(&c, &v) {
                violations.push(format!("{at}: {e}"));
            }
            if !states[synced..].contains(&v) {
                violations.push(format!(
                    "{at}: the store matches no whole step since the last sync (step {synced}): {v:?}"
                ));
            }
            if c.instance() != s.instance() {
                violations.push(format!("{at}: instance id changed"));
            }
        }
    }
    (violations, crashes)
}

#[test]
fn a_crash_between_any_two_writes_leaves_a_consistent_acknowledged_store() {
    let (violations, crashes) = crash_everywhere(false);
    assert!(violations.is_empty(), "{violations:#?}");
    // Every step was crashed after, with at least one unsynced write often.
    assert!(crashes > workload().len() + 10, "{crashes} crashes");
}

/// The planted bug: a snapshot installed in two writes (meta, then the
/// log's removal). A crash between them leaves a commit index past the
/// log; the harness must catch it.
#[test]
fn the_harness_catches_a_snapshot_install_split_in_two_writes() {
    let (violations, _) = crash_everywhere(true);
    for want in [
        "matches no whole step",
        "outside the log",
        "raft-rs refuses the store",
    ] {
        assert!(
            violations.iter().any(|v| v.contains(want)),
            "no {want:?} in {violations:#?}"
        );
    }
}

// ---- Instance id. ----

#[test]
fn the_instance_id_is_stable_across_reopen_and_new_for_a_new_dir() {
    let d = tempfile::tempdir().unwrap();
    let first = SledStorage::open(d.path()).unwrap().instance();
    assert_ne!(first, 0);
    assert_eq!(reopen(d.path()).instance(), first);
    let other = tempfile::tempdir().unwrap();
    assert_ne!(SledStorage::open(other.path()).unwrap().instance(), first);
}

#[test]
fn a_store_from_before_instance_ids_gets_one_that_stays() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(d.path()).unwrap();
        s.append(&[entry(1, 1)]).unwrap();
        s.write(Write {
            meta: vec![(IVec::from(K_INSTANCE), None)],
            ..Write::default()
        })
        .unwrap();
        s.sync().unwrap();
    }
    let id = reopen(d.path()).instance();
    assert_ne!(id, 0);
    let s = reopen(d.path());
    assert_eq!(s.instance(), id);
    assert_eq!(s.last_index().unwrap(), 1, "the log is kept");
}

// ---- Snapshot on demand. ----

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term)).collect()
}

fn conf(voters: Vec<u64>, learners: Vec<u64>) -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = voters;
    cs.learners = learners;
    cs
}

#[test]
fn a_snapshot_that_does_not_name_the_receiver_is_made_on_demand() {
    let d = tempfile::tempdir().unwrap();
    let s = SledStorage::open(d.path()).unwrap();
    let twin = s.clone();
    s.apply_snapshot(&snapshot(5, 2, vec![1, 2, 3])).unwrap();
    assert!(!s.take_snapshot_request());

    // Node 4 was added after the snapshot: raft-rs on node 4 would refuse it.
    assert!(matches!(
        s.snapshot(0, 4),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
    assert!(twin.take_snapshot_request(), "clones share the request");
    assert!(!s.take_snapshot_request(), "taking it clears it");

    // Too old for the request.
    assert!(matches!(
        s.snapshot(6, 3),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
    assert!(s.take_snapshot_request());

    // One that names it, as a learner, is sent; no request.
    s.append(&entries(6, 8, 2)).unwrap();
    s.set_conf_state(&conf(vec![1, 2, 3], vec![4])).unwrap();
    s.create_snapshot(8, &conf(vec![1, 2, 3], vec![4]), b"state@8".to_vec())
        .unwrap();
    let snap = s.snapshot(0, 4).unwrap();
    assert_eq!(snap.get_metadata().index, 8);
    assert_eq!(snap.get_data(), b"state@8");
    assert_eq!(s.snapshot(8, 2).unwrap().get_metadata().index, 8);
    assert!(!s.take_snapshot_request());

    // One made before the latest membership change is not sent: it would
    // hand the receiver an old configuration.
    s.set_conf_state(&conf(vec![1, 2, 3, 4], vec![])).unwrap();
    assert!(matches!(
        s.snapshot(0, 4),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
    assert!(s.take_snapshot_request());
}

// ---- The log's files. ----

/// The one log file in `dir`.
fn log_file(dir: &std::path::Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn a_real_log_cut_at_any_byte_reopens_as_the_store_after_some_whole_write() {
    let d = tempfile::tempdir().unwrap();
    let mut states = Vec::new();
    {
        let s = SledStorage::open(d.path()).unwrap();
        states.push(view(&s));
        for step in workload() {
            run(&s, &step);
            states.push(view(&s));
        }
        s.sync().unwrap();
    }
    let file = log_file(d.path());
    let full = std::fs::read(&file).unwrap();
    let name = file.file_name().unwrap().to_owned();
    for cut in 0..=full.len() {
        let c = tempfile::tempdir().unwrap();
        std::fs::write(c.path().join(&name), &full[..cut]).unwrap();
        let r = match SledStorage::open(c.path()) {
            Ok(r) => r,
            // A header cut short is not a log this build wrote.
            Err(e) if cut < 24 => {
                assert!(
                    e.to_string().contains("not a faxi-watchdog log file"),
                    "{e}"
                );
                continue;
            }
            Err(e) => panic!("cut at {cut}: {e}"),
        };
        let v = view(&r);
        let bad = consistency(&r, &v);
        assert!(bad.is_empty(), "cut at {cut}: {bad:?}");
        assert!(
            states.contains(&v),
            "cut at {cut}: no whole write's store: {v:?}"
        );
    }
}

#[test]
fn the_log_is_rewritten_so_the_data_dir_stays_near_what_the_store_holds() {
    // A quiet mesh's log at the default snapshot interval: tiny entries,
    // each synced, a snapshot and compaction every 1,000.
    let d = tempfile::tempdir().unwrap();
    let s = SledStorage::open(d.path()).unwrap();
    let mut cs = ConfState::default();
    cs.voters = vec![1];
    let mut worst = 0f64;
    for i in 1..=5_000u64 {
        s.append(&[entry(i, 1)]).unwrap();
        s.set_hard_state(&hard_state(1, 1, i)).unwrap();
        s.sync().unwrap();
        if i % 1_000 == 0 {
            s.create_snapshot(i, &cs, vec![3u8; 20_000]).unwrap();
            s.compact(i).unwrap();
            s.sync().unwrap();
        }
        let used = disk_bytes(d.path()) as f64;
        let held = s.lock().image.bytes as f64;
        worst = worst.max(used / (2.0 * held + REWRITE_SLACK as f64 + 4096.0));
    }
    assert!(worst <= 1.0, "the data dir reached {worst:.2} of its bound");
    let before = contents(&s);
    drop(s);
    let s = reopen(d.path());
    assert_eq!(contents(&s), before);
    assert_eq!(s.last_index().unwrap(), 5_000);
}

/// Everything a store holds, as raft reads it.
fn contents(s: &SledStorage) -> (Vec<Entry>, Snapshot, HardState, ConfState, u64) {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    let st = s.initial_state().unwrap();
    (
        s.entries(first, last + 1, None, ctx()).unwrap(),
        s.last_snapshot().unwrap(),
        st.hard_state,
        st.conf_state,
        s.instance(),
    )
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let s = SledStorage::open(d.path()).unwrap();
    let err = SledStorage::open(d.path()).unwrap_err().to_string();
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(&d.path().display().to_string()), "{err}");
    drop(s);
    SledStorage::open(d.path()).unwrap();
}

#[test]
fn a_sled_database_that_is_not_ours_is_refused_and_left_as_it_was() {
    let d = tempfile::tempdir().unwrap();
    {
        let db = sled::Config::new().path(d.path()).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(K_FORMAT, b"faxi-watchdog raft log v9").unwrap();
        db.flush().unwrap();
    }
    let err = SledStorage::open(d.path()).unwrap_err().to_string();
    assert!(err.contains("not a faxi-watchdog data dir"), "{err}");
    // sled's own files are still there (sled itself may add a snapshot of
    // its page table when opened), and no log was made.
    assert!(d.path().join("conf").exists() && d.path().join("db").exists());
    assert!(!Wal::exists(d.path()).unwrap());
    let err = SledStorage::open(d.path()).unwrap_err().to_string();
    assert!(err.contains("not a faxi-watchdog data dir"), "{err}");
}
