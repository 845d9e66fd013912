//! The ledger in SQLite (sink `ledger`, the default): [`db`] holds the schema and every
//! query; [`wal`] what the writer's connection needs beside it (the background checkpointer,
//! the WAL flush and its runway). [`SqliteStore`] puts them together, for the writer
//! ([`SqliteStore::for_writer`]) or for the `ledger` commands ([`SqliteStore::for_commands`]).
//!
//! Erasure and purge remove the bytes too: deleted rows are zeroed (`secure_delete`), and the
//! WAL, which still holds the pages as they were, is truncated at the end of each purge that
//! deleted something and after each erasure.

mod db;
mod wal;

use crate::{
    config::{LedgerConfig, Synchronous},
    event::Event,
    store::{
        DayCount, Filter, Flush, Lifecycle, Overdue, Result, Stats, Store, StoreError,
        TransitQuery, TransitTimes,
    },
    transit::{Delivery, Transit},
};
use chrono::{DateTime, Utc};
use db::Db;
use std::{
    fs::File,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tracing::{error, warn};
use wal::WalKeeper;

/// How long one attempt to truncate the WAL waits for readers. Meanwhile no other connection
/// may write (SQLite holds back writers while a truncating checkpoint waits), so the daemon's
/// messages wait too: a moment only.
const TRUNCATE_PATIENCE: Duration = Duration::from_millis(50);

/// The commands try again this often, with a pause between in which the daemon writes, before
/// they leave the WAL to a later purge (or ask for erase to be run again).
const TRUNCATE_ATTEMPTS: u32 = 40;
const TRUNCATE_PAUSE: Duration = Duration::from_millis(100);

pub struct SqliteStore {
    // Declared first, so dropped first (see `WalKeeper`).
    keeper: Option<WalKeeper>,
    db: Db,
    /// The file the writer opened, watched before each batch.
    guard: Option<FileGuard>,
    /// Events deleted since the WAL was last truncated: their old copies are still in it.
    deleted_in_wal: usize,
    /// How long truncating the WAL waits for other connections.
    patience: Duration,
}

impl SqliteStore {
    /// The ledger as the event writer keeps it: commits without SQLite's own fsync and
    /// without checkpoints, which the [`wal`] machinery does beside it.
    pub fn for_writer(config: &LedgerConfig) -> Result<Self> {
        let open = || {
            let mut db = Db::open_with(&config.path, Synchronous::Normal)?;
            // A damaged or read-only ledger is refused now, not found out message by message.
            db.quick_check()?;
            db.check_writable()?;
            let guard = FileGuard::new(&config.path)?;
            db.disable_autocheckpoint()?;
            let keeper = WalKeeper::start(&mut db, config.synchronous)?;
            Ok(Self {
                keeper: Some(keeper),
                db,
                guard: Some(guard),
                deleted_in_wal: 0,
                patience: TRUNCATE_PATIENCE,
            })
        };
        open().map_err(|e: StoreError| e.opening("events.ledger.path"))
    }

    /// The ledger for the `ledger` commands: an existing file, every commit fsynced.
    pub fn for_commands(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(StoreError::NoLedger(path.to_path_buf()));
        }
        Ok(Self {
            keeper: None,
            db: Db::open(path)?,
            guard: None,
            deleted_in_wal: 0,
            patience: TRUNCATE_PATIENCE,
        })
    }

    /// The ledger for `privacy-milter track`: created if the daemon has not yet, every commit
    /// fsynced (the tracker's commits are few).
    pub fn for_tracker(path: &Path) -> Result<Self> {
        Ok(Self {
            keeper: None,
            db: Db::open(path).map_err(|e| e.opening("events.ledger.path"))?,
            guard: None,
            deleted_in_wal: 0,
            patience: TRUNCATE_PATIENCE,
        })
    }

    /// Truncates the WAL if deletions left copies in it; false if readers kept it busy. The
    /// daemon tries once (its next purge tries again); a command a few times, giving way to
    /// the daemon's commits between attempts.
    fn truncate_wal(&mut self) -> Result<bool> {
        if self.deleted_in_wal == 0 {
            return Ok(true);
        }
        let attempts = if self.keeper.is_some() {
            1
        } else {
            TRUNCATE_ATTEMPTS
        };
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(TRUNCATE_PAUSE);
            }
            if self.db.truncate_wal(self.patience)? {
                self.deleted_in_wal = 0;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Drop for SqliteStore {
    /// The writer's connection copies the whole WAL into the database and empties it before
    /// it closes. SQLite would do so at close, but not for a file moved aside while open
    /// (it leaves the WAL at the old path, where a new ledger would read it as its own).
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            drop(keeper);
            match self.db.truncate_wal(db::BUSY_TIMEOUT) {
                Ok(true) => {}
                Ok(false) => warn!(
                    target: "privacy_milter::sinks::ledger",
                    "ledger {}: readers kept the write-ahead log busy at close; SQLite copies it at the next open",
                    self.db.path().display()
                ),
                Err(e) => {
                    error!(target: "privacy_milter::sinks::ledger", "ledger checkpoint at close: {e}")
                }
            }
        }
    }
}

/// Watches the ledger's file under the daemon: deleted, truncated or overwritten by something
/// else, it must not go on taking events that nobody will find (SQLite would write on into an
/// unlinked inode, or a file it no longer understands). A file moved aside (renamed, still
/// linked) keeps taking events, which stay in it, until a reload opens the one at the path.
struct FileGuard {
    path: PathBuf,
    /// The file as opened, for its identity, size and header.
    file: File,
    /// Its largest size seen: a ledger's file never shrinks (no VACUUM, no auto_vacuum).
    largest: u64,
    /// The move has been reported.
    moved: bool,
}

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

impl FileGuard {
    fn new(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let mut guard = Self {
            path: path.to_path_buf(),
            file,
            largest: 0,
            moved: false,
        };
        guard.check()?;
        Ok(guard)
    }

    /// Three system calls per batch: the path's identity, the file's size, its magic.
    fn check(&mut self) -> Result<()> {
        let broken = |what: &str| {
            error!(
                target: "privacy_milter::sinks::ledger",
                "ledger {}: {what}; no event is written to it until it is restored (or moved aside) and the daemon reloaded",
                self.path.display()
            );
            StoreError::Damaged {
                path: self.path.clone(),
                what: what.to_string(),
            }
        };
        let held = self
            .file
            .metadata()
            .map_err(|e| StoreError::io(&self.path, e))?;
        if held.nlink() == 0 {
            return Err(broken("the file was deleted while the daemon was running"));
        }
        let here = match std::fs::metadata(&self.path) {
            Ok(now) => (now.dev(), now.ino()) == (held.dev(), held.ino()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::io(&self.path, e)),
        };
        if !here && !self.moved {
            warn!(
                target: "privacy_milter::sinks::ledger",
                "ledger {}: the file was moved away (or another put in its place); events go on into the moved file until a reload (SIGHUP) opens the one at this path",
                self.path.display()
            );
        }
        self.moved = !here;
        if held.len() < self.largest {
            return Err(broken(
                "the file was truncated while the daemon was running",
            ));
        }
        self.largest = held.len();
        if held.len() >= SQLITE_MAGIC.len() as u64 {
            let mut magic = [0u8; 16];
            self.file
                .read_exact_at(&mut magic, 0)
                .map_err(|e| StoreError::io(&self.path, e))?;
            if &magic != SQLITE_MAGIC {
                return Err(broken(
                    "the file was overwritten: it is no SQLite database any more",
                ));
            }
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn write(&mut self, batch: &[Event]) -> Result<Option<Arc<dyn Flush>>> {
        if let Some(guard) = &mut self.guard {
            guard.check()?;
        }
        match &mut self.keeper {
            Some(keeper) => keeper.commit(&mut self.db, batch),
            None => self.db.insert(batch).map(|()| None),
        }
    }

    fn purge_some(&mut self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        let n = self.db.purge_some(now, limit)?;
        self.deleted_in_wal += n;
        if n < limit && !self.truncate_wal()? {
            let done = format!("purged {} expired events", self.deleted_in_wal);
            if self.keeper.is_none() {
                return Err(StoreError::WalBusy {
                    done,
                    command: "purge",
                });
            }
            // The daemon does not hold up mail for readers: the next purge truncates it.
            warn!(
                target: "privacy_milter::sinks::ledger",
                "ledger: readers kept the write-ahead log busy; the old copies of purged events in it go at the next purge"
            );
        }
        Ok(n)
    }

    fn find(&mut self, filter: &Filter) -> Result<Vec<Event>> {
        self.db.find(filter)
    }

    /// Waits (busy timeout) for the daemon's commit in progress, if any, to truncate the WAL.
    fn erase(&mut self, filter: &Filter) -> Result<usize> {
        let erased = self.db.erase(filter)?;
        self.deleted_in_wal += erased;
        if !self.truncate_wal()? {
            return Err(StoreError::WalBusy {
                done: format!("erased {erased} events"),
                command: "erase",
            });
        }
        Ok(erased)
    }

    fn export(
        &mut self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>> {
        self.db.export(since, until)
    }

    fn stats(&mut self) -> Result<Stats> {
        self.db.stats()
    }

    /// The ledger on SQLite belongs to one host: the queue id alone finds the message.
    fn transit(&mut self, queue_id: &str, _hosts: &[String]) -> Result<Option<Transit>> {
        self.db.transit(queue_id)
    }

    fn record_transit(&mut self, transits: &[Transit], deliveries: &[Delivery]) -> Result<()> {
        self.db.record_transit(transits, deliveries)
    }

    fn transits(&mut self, query: &TransitQuery) -> Result<Vec<Lifecycle>> {
        self.db.transits(query)
    }

    fn lifecycles(&mut self, events: &[Event]) -> Result<Vec<Lifecycle>> {
        self.db.lifecycles(events)
    }

    fn expiring_per_day(&mut self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        self.db.expiring_per_day(from)
    }

    fn recorded_per_day(&mut self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        self.db.recorded_per_day(from)
    }

    fn overdue(&mut self, before: DateTime<Utc>) -> Result<Overdue> {
        self.db.overdue(before)
    }

    fn transit_times(&mut self, since: DateTime<Utc>) -> Result<Vec<TransitTimes>> {
        self.db.transit_times(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use db::BUSY_TIMEOUT;
    use std::fs::File;
    use wal::{wal_path, Runway, WalFile, RESTART_FRAMES};

    /// A ledger named `name` in `dir`.
    fn config_in(dir: &Path, name: &str, synchronous: Synchronous) -> LedgerConfig {
        LedgerConfig {
            path: dir.join(name),
            synchronous,
        }
    }

    fn wal_len(config: &LedgerConfig) -> u64 {
        std::fs::metadata(wal_path(&config.path)).map_or(0, |m| m.len())
    }

    /// With `full`, every write hands back a flush of the WAL itself (the file SQLite
    /// appends the commit to); with `normal`, none.
    #[test]
    fn full_hands_the_wal_to_the_syncer() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        for (synchronous, flushed) in [(Synchronous::Full, true), (Synchronous::Normal, false)] {
            let config = config_in(dir.path(), &format!("{synchronous:?}.sqlite"), synchronous);
            let mut sink = SqliteStore::for_writer(&config).unwrap();
            for n in 0..2 {
                let flush = sink
                    .write(&[crate::event::sample(&format!("4Q{n}"), "a@remote.example")])
                    .unwrap();
                assert_eq!(flush.is_some(), flushed, "{synchronous:?}");
                if let Some(flush) = flush {
                    flush.flush().unwrap();
                }
            }
            if let Some(wal) = &sink.keeper.as_ref().unwrap().wal {
                let on_disk = std::fs::metadata(wal_path(&config.path)).unwrap();
                let held = wal.file.metadata().unwrap();
                assert_eq!((held.dev(), held.ino()), (on_disk.dev(), on_disk.ino()));
                assert!(held.len() > 0, "the commits went to this file");
            } else {
                assert!(!flushed, "the WAL was never opened");
            }
        }
    }

    /// A temporary directory on a disk (the runway is only kept there), in the target
    /// directory: /tmp may be a tmpfs.
    fn disk_tempdir() -> tempfile::TempDir {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).unwrap();
        let dir = tempfile::tempdir_in(target).unwrap();
        let fs = nix::sys::statfs::statfs(dir.path()).unwrap();
        assert_ne!(
            fs.filesystem_type(),
            nix::sys::statfs::TMPFS_MAGIC,
            "the target directory is on a tmpfs"
        );
        dir
    }

    /// How many events the ledger at `path` holds, through a connection of its own.
    fn events_in(path: &Path) -> u64 {
        Db::open(path).unwrap().stats().unwrap().total
    }

    fn event(n: usize) -> Event {
        crate::event::sample(&format!("4R{n:04}"), "a@remote.example")
    }

    /// The WAL is at its working size from the start: the commits write over zeros and
    /// never extend the file. SQLite takes the zeros for no frame, in the daemon and in a
    /// copy of the files as a crash would leave them.
    #[test]
    fn commits_write_over_the_runway() {
        let dir = disk_tempdir();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Full);
        let mut sink = SqliteStore::for_writer(&config).unwrap();
        let working_size = sink
            .keeper
            .as_ref()
            .unwrap()
            .runway
            .as_ref()
            .expect("a runway on a disk")
            .working_size;
        assert!(working_size > 64 << 20, "{working_size}");
        assert_eq!(wal_len(&config), working_size, "filled at open");
        for n in 1..=20 {
            sink.write(&[event(n)]).unwrap().unwrap().flush().unwrap();
        }
        assert_eq!(wal_len(&config), working_size, "a commit extended the WAL");
        let crashed = dir.path().join("crashed");
        std::fs::create_dir(&crashed).unwrap();
        for suffix in ["", "-wal"] {
            let name = format!("ledger.sqlite{suffix}");
            std::fs::copy(dir.path().join(&name), crashed.join(&name)).unwrap();
        }
        assert_eq!(
            events_in(&crashed.join("ledger.sqlite")),
            20,
            "recovered from the WAL alone"
        );
        assert_eq!(events_in(&config.path), 20);
        drop(sink);
        assert!(
            !wal_path(&config.path).exists(),
            "the last connection removed the WAL"
        );
        // Opened again, without a WAL on disk: SQLite makes a new one, and it is filled.
        let mut sink = SqliteStore::for_writer(&config).unwrap();
        assert_eq!(wal_len(&config), working_size);
        sink.write(&[event(21)]).unwrap().unwrap().flush().unwrap();
        drop(sink);
        assert_eq!(events_in(&config.path), 21);
    }

    /// A runway that cannot be written (here: the WAL open read-only) is given up, with a
    /// warning; the commit goes on, and the WAL grows as SQLite writes it.
    #[test]
    fn a_failing_runway_does_not_fail_the_commit() {
        let dir = disk_tempdir();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Full);
        let mut sink = SqliteStore::for_writer(&config).unwrap();
        // As a purge leaves it.
        assert!(sink.db.truncate_wal(BUSY_TIMEOUT).unwrap());
        assert_eq!(wal_len(&config), 0);
        let path = wal_path(&config.path);
        sink.keeper.as_mut().unwrap().wal = Some(Arc::new(WalFile {
            file: File::open(&path).unwrap(),
            path: path.clone(),
        }));
        sink.write(&[event(1)]).unwrap().unwrap().flush().unwrap();
        assert!(
            sink.keeper.as_ref().unwrap().runway.is_none(),
            "the runway was not given up"
        );
        let after = wal_len(&config);
        assert!(after > 0 && after < 1 << 20, "{after}");
        drop(sink);
        assert_eq!(events_in(&config.path), 1);
    }

    /// Filled only where at least the working size stays free.
    #[test]
    fn the_runway_leaves_room_for_the_events() {
        let mib = 1 << 20;
        let runway = Runway {
            working_size: 10 * mib,
        };
        assert!(runway.room_for(0, 20 * mib));
        assert!(!runway.room_for(0, 20 * mib - 1));
        assert!(runway.room_for(4 * mib, 16 * mib));
        assert!(!runway.room_for(4 * mib, 16 * mib - 1));
        assert!(runway.room_for(10 * mib, 10 * mib));
        assert!(runway.room_for(20 * mib, 10 * mib));
    }

    /// On a tmpfs a flush costs nothing: no runway.
    #[test]
    fn no_runway_on_tmpfs() {
        let shm = Path::new("/dev/shm");
        let on_tmpfs = nix::sys::statfs::statfs(shm)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        if !on_tmpfs {
            eprintln!("skipped: /dev/shm is not a tmpfs here");
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Full);
        let mut sink = SqliteStore::for_writer(&config).unwrap();
        assert!(sink.keeper.as_ref().unwrap().runway.is_none());
        sink.write(&[event(1)]).unwrap().unwrap().flush().unwrap();
        assert!(wal_len(&config) < 1 << 20, "{}", wal_len(&config));
    }

    fn expired(queue_id: &str) -> Event {
        let mut event = crate::event::sample(queue_id, "eve@remote.example");
        event.retention.expires_at = "2000-01-01T00:00:00.000Z".into();
        event
    }

    /// A reader in the middle of a transaction keeps the WAL from being truncated at the end
    /// of a purge; the purge does not wait for it, and the next purge truncates it.
    #[test]
    fn purged_copies_left_by_a_busy_wal_go_at_the_next_purge() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Full);
        let mut sink = SqliteStore::for_writer(&config).unwrap();
        sink.write(&[
            expired("4Expired"),
            crate::event::sample("4Kept", "a@b.example"),
        ])
        .unwrap();
        let reader = rusqlite::Connection::open(&config.path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let held: i64 = reader
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(held, 2);
        let now = chrono::Utc::now();
        let started = std::time::Instant::now();
        assert_eq!(sink.purge_some(now, 500).unwrap(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the purge waited"
        );
        assert!(sink.deleted_in_wal > 0, "the WAL could not be truncated");
        assert!(wal_len(&config) > 0);

        reader.execute_batch("COMMIT").unwrap();
        assert_eq!(sink.purge_some(now, 500).unwrap(), 0);
        assert_eq!(sink.deleted_in_wal, 0);
        assert_eq!(wal_len(&config), 0, "the next purge truncated the WAL");
        // The WAL of a ledger on a disk is filled again at the next commit.
        if let Some(runway) = &sink.keeper.as_ref().unwrap().runway {
            let working_size = runway.working_size;
            sink.write(&[event(1)]).unwrap();
            assert_eq!(wal_len(&config), working_size);
        }
    }

    /// The writer never checkpoints on its own, yet the WAL does not grow without end: the
    /// background copies it, and the writer lets SQLite start it over.
    #[test]
    fn wal_is_started_over_while_events_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Normal);
        let mut sink = SqliteStore::for_writer(&config).unwrap();
        // One event per commit, back to back: about ten WAL pages each, so 6000 commits would
        // make a WAL of some 300 MB if it were never started over.
        let mut largest = 0;
        for n in 0..6000 {
            sink.write(&[crate::event::sample(
                &format!("4Q{n:05}"),
                "eve@remote.example",
            )])
            .unwrap();
            largest = largest.max(wal_len(&config));
        }
        let page = 4096;
        assert!(
            largest < 2 * RESTART_FRAMES as u64 * (page + 24),
            "the WAL grew to {largest} bytes"
        );
        assert!(
            std::fs::metadata(&config.path).unwrap().len() > 1 << 20,
            "checkpoints copied events into the database file"
        );
        drop(sink);
        assert_eq!(events_in(&config.path), 6000);
    }

    fn file_bytes(dir: &Path) -> String {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The WAL still holds the pages as they were before the erasure (no checkpoint has run
    /// yet here), and free pages what was deleted: erase must clear both.
    #[test]
    fn erase_leaves_no_bytes_of_the_subject() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        Db::open(&path)
            .unwrap()
            .insert(&[
                crate::event::sample("4Eve1", "eve@remote.example"),
                crate::event::sample("4Bob", "bob@remote.example"),
                crate::event::sample("4Eve2", "eve@remote.example"),
            ])
            .unwrap();
        let mut store = SqliteStore::for_commands(&path).unwrap();
        assert!(file_bytes(dir.path()).contains("eve@remote.example"));
        let erased = store
            .erase(&Filter::Address(vec!["eve@remote.example".into()]))
            .unwrap();
        assert_eq!(erased, 2);
        let left = file_bytes(dir.path());
        for gone in ["eve@remote.example", "4Eve1", "4Eve2"] {
            assert!(!left.contains(gone), "the ledger files still hold {gone}");
        }
        assert!(left.contains("4Bob"));
    }

    /// SQLite leaves the WAL at the old path when the ledger was moved aside while open (and
    /// a new ledger there would read it as its own): the writer's store copies it into the
    /// moved file before closing.
    #[test]
    fn a_moved_ledger_gets_every_event_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Full);
        let mut sink = SqliteStore::for_writer(&config).unwrap();
        let write = |sink: &mut SqliteStore, n: usize| {
            if let Some(flush) = sink.write(&[event(n)]).unwrap() {
                flush.flush().unwrap();
            }
        };
        for n in 0..10 {
            write(&mut sink, n);
        }
        let moved = dir.path().join("moved.sqlite");
        std::fs::rename(&config.path, &moved).unwrap();
        for n in 10..20 {
            write(&mut sink, n);
        }
        drop(sink);
        assert_eq!(events_in(&moved), 20);
        let wal = wal_path(&config.path);
        assert!(
            std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
            "frames left at the old path"
        );
    }
}
