//! The writer's side of the SQLite ledger: how its commits are made durable and its WAL kept.
//!
//! Checkpoints (copying the WAL into the database file, with an fsync of each) would stall
//! the batch that triggers them by milliseconds, and with it every message waiting for its
//! event. So the writer's connection never checkpoints by itself: a background thread copies
//! the WAL every moment, and once the WAL has grown past [`RESTART_FRAMES`] the writer runs one
//! short checkpoint of what is left, so that SQLite starts the WAL over and it stays small.
//!
//! A WAL started over is overwritten, not emptied: it keeps old page images, purged events
//! among them. So the end of every purge that deleted anything truncates it (`super`), with
//! the background held back: SQLite refuses, without waiting, a checkpoint while another
//! connection runs one.
//!
//! With `synchronous = "full"` a batch is durable once the WAL is fsynced after its commit.
//! SQLite would do that inside the commit; here the connection commits without it
//! (`PRAGMA synchronous = NORMAL`, under which SQLite still syncs around checkpoints) and
//! the writer hands an `fdatasync` of the WAL to the syncer thread, which answers the
//! batch's messages after it. Same guarantee; the next batch is written meanwhile. On a disk
//! the WAL is kept at its working size ahead of the commits ([`Runway`]), so that flush never
//! has to commit a new file size too.

use super::{events, named, schema};
use crate::{
    config::Synchronous,
    event::Event,
    store::{Flush, Result, StoreError},
};
use rusqlite::Connection;
use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};
use tracing::warn;

/// The log target of the ledger's lines, as operators know it.
const TARGET: &str = "privacy_milter::sinks::ledger";

/// WAL size (in pages) beyond which the writer lets SQLite start the WAL over.
pub(super) const RESTART_FRAMES: i64 = 16_384;

/// How often the background thread copies the WAL while events come in.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// What the writer's connection needs beside it: the background checkpointer and, with
/// `synchronous = "full"`, the WAL it flushes after each commit.
pub(super) struct WalKeeper {
    // Declared first, so dropped first: the checkpointer's connection closes before the
    // writer's, which (the last one) checkpoints everything and removes the WAL.
    checkpointer: Checkpointer,
    /// With `synchronous = "full"`: the WAL, fsynced after each commit.
    pub(super) wal: Option<Arc<WalFile>>,
    /// With `synchronous = "full"` on a disk: the WAL's working size, reached ahead of the
    /// commits (see [`Runway`]).
    pub(super) runway: Option<Runway>,
}

/// Where SQLite keeps the WAL of the ledger at `path`.
pub(super) fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// The WAL file, fsynced by the syncer thread: that makes every commit before durable.
pub(super) struct WalFile {
    pub(super) file: File,
    pub(super) path: PathBuf,
}

impl Flush for WalFile {
    fn flush(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(&self.path, e))
    }
}

/// Keeps the WAL at its working size, written with zeros past what SQLite wrote, so that
/// commits write over it and never extend it.
///
/// An fdatasync after a write that extends a file also commits the file's new size and blocks
/// to the file system's journal; after a write over blocks already written, it flushes the
/// data alone, in about 0.6 of the time on ext4 here (`cargo bench --bench flush`). SQLite
/// reuses the WAL from its start once a checkpoint has copied all of it, so at its working
/// size no commit extends it; zeros past what SQLite wrote are never taken for frames (each
/// frame carries the WAL's salt and a checksum). `fallocate` would not do: its blocks are
/// marked unwritten, and the first write over them is a change to the journal too.
///
/// The WAL is filled when the sink opens and again at the first commit after a purge has
/// truncated it: about 80 MiB written and synced, a tenth of a second on a disk.
pub(super) struct Runway {
    /// Where SQLite starts the WAL over ([`RESTART_FRAMES`], and the commits meanwhile).
    pub(super) working_size: u64,
}

impl Runway {
    /// None where the WAL's flush costs nothing to save (tmpfs).
    fn new(wal: &File, page_size: u64) -> io::Result<Option<Self>> {
        let fs = nix::sys::statfs::fstatfs(wal)?;
        if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            return Ok(None);
        }
        let frames = RESTART_FRAMES as u64 + RESTART_FRAMES as u64 / 4;
        Ok(Some(Self {
            working_size: 32 + frames * (24 + page_size),
        }))
    }

    /// Whether a WAL of `len` bytes may be filled up to the working size on a file system
    /// with `free` bytes available: only if at least the working size would remain free (the
    /// room is the events', not the runway's).
    pub(super) fn room_for(&self, len: u64, free: u64) -> bool {
        free >= self.working_size.saturating_sub(len) + self.working_size
    }

    /// Fills the WAL with zeros up to the working size, and syncs them. Only while the
    /// caller holds SQLite's write lock: nothing appends frames meanwhile, so the zeros go
    /// past everything written.
    fn fill(&self, wal: &File) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = wal.metadata()?.len();
        if len >= self.working_size {
            return Ok(());
        }
        let vfs = nix::sys::statvfs::fstatvfs(wal)?;
        let free = vfs.blocks_available() as u64 * vfs.fragment_size() as u64;
        if !self.room_for(len, free) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "{} MiB free, {} MiB wanted",
                    free >> 20,
                    (self.working_size.saturating_sub(len) + self.working_size) >> 20
                ),
            ));
        }
        let zeros = vec![0; 1 << 20];
        let mut at = len;
        let written = loop {
            if at >= self.working_size {
                break wal.sync_data();
            }
            let n = zeros.len().min((self.working_size - at) as usize);
            if let Err(e) = wal.write_all_at(&zeros[..n], at) {
                break Err(e);
            }
            at += n as u64;
        };
        written.inspect_err(|_| {
            // Not even part of the zeros left behind.
            let _ = wal.set_len(len);
        })
    }
}

/// Fills the runway (see [`Runway`]); on failure, gives it up until the sink is opened
/// again (a reload), with a warning: the commits then extend the WAL as SQLite writes it.
fn fill_runway(runway: &mut Option<Runway>, wal: &WalFile) {
    if let Some(Err(e)) = runway.as_ref().map(|r| r.fill(&wal.file)) {
        warn!(
            target: TARGET,
            "ledger: {}: the write-ahead log is not kept at its working size ({e}); commits extend it, and wait longer for their flush",
            wal.path.display()
        );
        *runway = None;
    }
}

impl WalKeeper {
    /// Starts the checkpointer on a connection of its own and, with `synchronous = "full"`,
    /// opens the WAL that `conn` (the writer's connection, open without autocheckpoints)
    /// created, and fills it to its working size.
    pub(super) fn start(
        conn: &mut Connection,
        path: &Path,
        synchronous: Synchronous,
    ) -> Result<Self> {
        let background = schema::open(path, Synchronous::Normal)?;
        let (mut wal, mut runway) = (None, None);
        if synchronous == Synchronous::Full {
            // Opening the ledger created the WAL, and the writer's connection keeps it open,
            // so SQLite never deletes it while the sink lives (truncating keeps the file).
            let wal_path = wal_path(path);
            let io = |e: io::Error| StoreError::io(&wal_path, e);
            let file = File::options().write(true).open(&wal_path).map_err(io)?;
            let page_size = named(path, page_size(conn))?;
            runway = Runway::new(&file, page_size).map_err(io)?;
            let file = WalFile {
                file,
                path: wal_path.clone(),
            };
            named(
                path,
                with_write_lock(conn, || fill_runway(&mut runway, &file)),
            )?;
            wal = Some(Arc::new(file));
        }
        Ok(Self {
            checkpointer: Checkpointer::start(background, path)?,
            wal,
            runway,
        })
    }

    /// [`truncate`] on the writer's connection, with the background held back meanwhile (it
    /// finishes the checkpoint it may be running first).
    pub(super) fn truncate(&self, conn: &Connection, patience: Duration) -> rusqlite::Result<bool> {
        let _paused = self
            .checkpointer
            .shared
            .checkpointing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        truncate(conn, patience)
    }

    /// Commits a batch; returns the flush that makes it durable, with `synchronous = "full"`.
    pub(super) fn commit(
        &mut self,
        conn: &mut Connection,
        path: &Path,
        batch: &[Event],
    ) -> Result<Option<Arc<dyn Flush>>> {
        let (wal, runway) = (&self.wal, &mut self.runway);
        let inserted = events::insert(conn, batch, || {
            // Once after a purge truncated the WAL; otherwise one fstat.
            if let Some(wal) = wal {
                fill_runway(runway, wal);
            }
        });
        named(path, inserted)?;
        let shared = &self.checkpointer.shared;
        shared.dirty.store(true, Ordering::Relaxed);
        if shared.restart.swap(false, Ordering::Relaxed) {
            // The background has copied nearly all of the WAL: this copies the rest, and the
            // next commit starts the WAL over.
            if let Err(e) = checkpoint(conn) {
                warn!(target: TARGET, "ledger checkpoint: {}: {e}", path.display());
            }
        }
        Ok(self.wal.clone().map(|wal| wal as Arc<dyn Flush>))
    }
}

/// The size of the database's pages, and of the WAL's frames less their header.
fn page_size(conn: &Connection) -> rusqlite::Result<u64> {
    conn.pragma_query_value(None, "page_size", |r| r.get(0))
}

/// Calls `locked` while this connection holds SQLite's write lock (an empty write
/// transaction).
fn with_write_lock<T>(conn: &mut Connection, locked: impl FnOnce() -> T) -> rusqlite::Result<T> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = locked();
    tx.commit()?;
    Ok(out)
}

/// Leaves checkpoints to [`checkpoint`] calls: no commit then pays for one.
pub(super) fn disable_autocheckpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)
}

/// Copies what the WAL holds into the database file without blocking the writer or readers
/// (a passive checkpoint); returns the WAL's size in frames at the time.
fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

/// Copies the whole WAL into the database file and truncates the WAL to nothing, waiting at
/// most `patience` for other connections; false if they kept it busy (a reader, or another
/// connection's checkpoint: SQLite does not wait for that one). Until then the WAL
/// holds the pages as they were before events were deleted (and as the WAL is reused, not
/// rewritten, for as long as the ledger stays open).
pub(super) fn truncate(conn: &Connection, patience: Duration) -> rusqlite::Result<bool> {
    conn.busy_timeout(patience)?;
    let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    conn.busy_timeout(schema::BUSY_TIMEOUT)?;
    Ok(busy? == 0)
}

#[derive(Default)]
struct Shared {
    /// The writer committed since the last background checkpoint.
    dirty: AtomicBool,
    /// The WAL is large and copied up to its last moments: the writer should finish it.
    restart: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Held by the background while it checkpoints, and by the writer while it truncates
    /// the WAL: SQLite refuses a checkpoint at once, without waiting, while another
    /// connection runs one, so the background must stand aside.
    checkpointing: Mutex<()>,
}

struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(conn: Connection, path: &Path) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let ledger = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || loop {
                let stop = s.stop.lock().unwrap_or_else(|e| e.into_inner());
                let (stop, _) = s
                    .wake
                    .wait_timeout_while(stop, CHECKPOINT_EVERY, |stop| !*stop)
                    .unwrap_or_else(|e| e.into_inner());
                if *stop {
                    return;
                }
                drop(stop);
                if !s.dirty.swap(false, Ordering::Relaxed) {
                    continue;
                }
                let _checkpointing = s.checkpointing.lock().unwrap_or_else(|e| e.into_inner());
                match checkpoint(&conn) {
                    Ok(frames) if frames >= RESTART_FRAMES => {
                        // Once more, to copy what came in meanwhile; then the writer's own
                        // checkpoint has only a moment's frames left to copy.
                        let _ = checkpoint(&conn);
                        s.restart.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => warn!(target: TARGET, "ledger checkpoint: {}: {e}", ledger.display()),
                }
            })
            .map_err(|e| StoreError::io(path, e))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::LedgerConfig,
        store::{sqlite::SqliteLedger, Sink},
    };

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
            let mut sink = SqliteLedger::for_writer(&config).unwrap();
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
        let conn = schema::open(path, Synchronous::Full).unwrap();
        events::stats(&conn).unwrap().total
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
        let mut sink = SqliteLedger::for_writer(&config).unwrap();
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
        let mut sink = SqliteLedger::for_writer(&config).unwrap();
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
        let mut sink = SqliteLedger::for_writer(&config).unwrap();
        // As a purge leaves it.
        assert!(truncate(&sink.conn, schema::BUSY_TIMEOUT).unwrap());
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
        let mut sink = SqliteLedger::for_writer(&config).unwrap();
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
        let mut sink = SqliteLedger::for_writer(&config).unwrap();
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

    /// How many times `needle` is in the files of the ledger at `path` (it, `-wal`, `-shm`).
    fn copies_in(path: &Path, needle: &str) -> usize {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                let bytes = std::fs::read(name).unwrap_or_default();
                bytes
                    .windows(needle.len())
                    .filter(|w| *w == needle.as_bytes())
                    .count()
            })
            .sum()
    }

    /// Events expired among others, their subjects spread over the index as real addresses
    /// are, purged while more come in (the background copies the WAL meanwhile): each purge
    /// truncates the WAL, and none of their bytes is left in any of the ledger's files.
    #[test]
    fn a_purge_among_live_events_leaves_no_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Normal);
        let mut sink = SqliteLedger::for_writer(&config).unwrap();
        let scattered = |n: u32| format!("{:08x}", n.wrapping_mul(2_654_435_761));
        let mut n = 0u32;
        for round in 0..10 {
            for _ in 0..400 {
                n += 1;
                let event = if n % 20 == 0 {
                    let mut e = expired(&format!("4E{n:05}"));
                    e.sender.address = Some(format!("{}@purged.example", scattered(n + (1 << 20))));
                    e.client.ip = Some(format!("192.0.2.{}", n % 250));
                    e
                } else {
                    let mut e = event(n as usize);
                    e.sender.address = Some(format!("{}@remote.example", scattered(n)));
                    e
                };
                sink.write(&[event]).unwrap();
            }
            assert_eq!(sink.purge_some(chrono::Utc::now(), 500).unwrap(), 20);
            assert_eq!(
                sink.deleted_in_wal, 0,
                "round {round}: the WAL was not truncated"
            );
            for needle in ["@purged.example", "192.0.2."] {
                assert_eq!(
                    copies_in(&config.path, needle),
                    0,
                    "round {round}: {needle}"
                );
            }
        }
    }

    /// The writer never checkpoints on its own, yet the WAL does not grow without end: the
    /// background copies it, and the writer lets SQLite start it over.
    #[test]
    fn wal_is_started_over_while_events_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Normal);
        let mut sink = SqliteLedger::for_writer(&config).unwrap();
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

    /// SQLite leaves the WAL at the old path when the ledger was moved aside while open (and
    /// a new ledger there would read it as its own): the writer's store copies it into the
    /// moved file before closing.
    #[test]
    fn a_moved_ledger_gets_every_event_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Full);
        let mut sink = SqliteLedger::for_writer(&config).unwrap();
        let write = |sink: &mut SqliteLedger, n: usize| {
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
