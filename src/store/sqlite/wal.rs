//! The writer's side of the SQLite ledger: how its commits are made durable and its WAL kept.
//!
//! Checkpoints (copying the WAL into the database file, with an fsync of each) would stall
//! the batch that triggers them by milliseconds, and with it every message waiting for its
//! event. So the writer's connection never checkpoints by itself: a background thread copies
//! the WAL every moment, and once the WAL has grown past [`RESTART_FRAMES`] the writer runs one
//! short checkpoint of what is left, so that SQLite starts the WAL over and it stays small.
//!
//! A WAL started over is overwritten, not emptied: it keeps old page images, purged events
//! among them. So the end of every purge that deleted anything truncates it (`super`).
//!
//! With `synchronous = "full"` a batch is durable once the WAL is fsynced after its commit.
//! SQLite would do that inside the commit; here the connection commits without it
//! (`PRAGMA synchronous = NORMAL`, under which SQLite still syncs around checkpoints) and
//! the writer hands an `fdatasync` of the WAL to the syncer thread, which answers the
//! batch's messages after it. Same guarantee; the next batch is written meanwhile. On a disk
//! the WAL is kept at its working size ahead of the commits ([`Runway`]), so that flush never
//! has to commit a new file size too.

use super::db::Db;
use crate::{
    config::Synchronous,
    event::Event,
    store::{Flush, Result, StoreError},
};
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
    /// opens the WAL that `db` (the writer's connection, open without autocheckpoints)
    /// created, and fills it to its working size.
    pub(super) fn start(db: &mut Db, synchronous: Synchronous) -> Result<Self> {
        let background = Db::open_with(db.path(), Synchronous::Normal)?;
        let (mut wal, mut runway) = (None, None);
        if synchronous == Synchronous::Full {
            // Opening the ledger created the WAL, and the writer's connection keeps it open,
            // so SQLite never deletes it while the sink lives (truncating keeps the file).
            let wal_path = wal_path(db.path());
            let named = |e: io::Error| StoreError::io(&wal_path, e);
            let file = File::options().write(true).open(&wal_path).map_err(named)?;
            runway = Runway::new(&file, db.page_size()?).map_err(named)?;
            let file = WalFile {
                file,
                path: wal_path.clone(),
            };
            db.with_write_lock(|| fill_runway(&mut runway, &file))?;
            wal = Some(Arc::new(file));
        }
        Ok(Self {
            checkpointer: Checkpointer::start(background)?,
            wal,
            runway,
        })
    }

    /// Commits a batch; returns the flush that makes it durable, with `synchronous = "full"`.
    pub(super) fn commit(
        &mut self,
        db: &mut Db,
        batch: &[Event],
    ) -> Result<Option<Arc<dyn Flush>>> {
        let (wal, runway) = (&self.wal, &mut self.runway);
        db.insert_then(batch, || {
            // Once after a purge truncated the WAL; otherwise one fstat.
            if let Some(wal) = wal {
                fill_runway(runway, wal);
            }
        })?;
        let shared = &self.checkpointer.shared;
        shared.dirty.store(true, Ordering::Relaxed);
        if shared.restart.swap(false, Ordering::Relaxed) {
            // The background has copied nearly all of the WAL: this copies the rest, and the
            // next commit starts the WAL over.
            if let Err(e) = db.checkpoint() {
                warn!(target: TARGET, "ledger checkpoint: {e}");
            }
        }
        Ok(self.wal.clone().map(|wal| wal as Arc<dyn Flush>))
    }
}

#[derive(Default)]
struct Shared {
    /// The writer committed since the last background checkpoint.
    dirty: AtomicBool,
    /// The WAL is large and copied up to its last moments: the writer should finish it.
    restart: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(db: Db) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let db_path = db.path().to_path_buf();
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
                match db.checkpoint() {
                    Ok(frames) if frames >= RESTART_FRAMES => {
                        // Once more, to copy what came in meanwhile; then the writer's own
                        // checkpoint has only a moment's frames left to copy.
                        let _ = db.checkpoint();
                        s.restart.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => warn!(target: TARGET, "ledger checkpoint: {e}"),
                }
            })
            .map_err(|e| StoreError::io(db_path, e))?;
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
