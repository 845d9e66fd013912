//! Sink `ledger`: events into the SQLite ledger, one transaction per batch.
//!
//! Checkpoints (copying the WAL into the database file, with an fsync of each) would stall
//! the batch that triggers them by milliseconds, and with it every message waiting for its
//! event. So the writer's connection never checkpoints by itself: a background thread copies
//! the WAL every moment, and once the WAL has grown past [`RESTART_FRAMES`] the writer runs one
//! short checkpoint of what is left, so that SQLite starts the WAL over and it stays small.
//!
//! A WAL started over is overwritten, not emptied: it keeps old page images, purged events
//! among them. So the end of every purge that deleted anything truncates it.
//!
//! With `synchronous = "full"` a batch is durable once the WAL is fsynced after its commit.
//! SQLite would do that inside the commit; here the connection commits without it
//! (`PRAGMA synchronous = NORMAL`, under which SQLite still syncs around checkpoints) and
//! the writer hands an `fdatasync` of the WAL to the syncer thread, which answers the
//! batch's messages after it. Same guarantee; the next batch is written meanwhile.

use super::{Flush, Sink};
use crate::{
    config::{LedgerConfig, Synchronous},
    event::Event,
    ledger::Ledger,
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

/// WAL size (in pages) beyond which the writer lets SQLite start the WAL over.
const RESTART_FRAMES: i64 = 16_384;

/// How long the end of a purge waits for readers before it leaves the WAL to the next one.
const TRUNCATE_PATIENCE: Duration = Duration::from_millis(200);

/// How often the background thread copies the WAL while events come in.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

pub struct LedgerSink {
    // Declared first, so dropped first: the checkpointer's connection closes before the
    // writer's, which (the last one) checkpoints everything and removes the WAL.
    checkpointer: Checkpointer,
    ledger: Ledger,
    /// `events.ledger.path`, for the errors.
    path: PathBuf,
    /// Events were purged since the WAL was last truncated.
    purged_copies_in_wal: bool,
    /// With `synchronous = "full"`: the WAL, to be fsynced after each commit (opened once
    /// the first commit has made sure it exists).
    wal: Option<Wal>,
}

/// Where SQLite keeps the WAL of the ledger at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

enum Wal {
    Unopened(PathBuf),
    Open(Arc<WalFile>),
}

/// The WAL file, fsynced by the syncer thread: that makes every commit before durable.
struct WalFile {
    file: File,
    path: PathBuf,
}

impl Flush for WalFile {
    fn flush(&self) -> io::Result<()> {
        self.file
            .sync_data()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

impl LedgerSink {
    pub fn open(config: &LedgerConfig) -> io::Result<Self> {
        let path = &config.path;
        let failed = |e: rusqlite::Error| {
            io::Error::other(format!("events.ledger.path {}: {e}", path.display()))
        };
        // Commits are not fsynced by SQLite (see the module's comment).
        let ledger = Ledger::open_with(path, Synchronous::Normal).map_err(failed)?;
        ledger.disable_autocheckpoint().map_err(failed)?;
        let background = Ledger::open_with(path, Synchronous::Normal).map_err(failed)?;
        let wal = (config.synchronous == Synchronous::Full).then(|| Wal::Unopened(wal_path(path)));
        Ok(Self {
            checkpointer: Checkpointer::start(background)?,
            ledger,
            path: path.clone(),
            purged_copies_in_wal: false,
            wal,
        })
    }

    /// The flush that makes the commits so far durable, if the config asks for one.
    fn flush(&mut self) -> io::Result<Option<Arc<dyn Flush>>> {
        let wal = match &self.wal {
            None => return Ok(None),
            Some(Wal::Open(wal)) => Arc::clone(wal),
            Some(Wal::Unopened(path)) => {
                // The writer's connection keeps the WAL open, so SQLite never deletes it while
                // the sink lives (truncating keeps the same file).
                let file = File::open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                let wal = Arc::new(WalFile {
                    file,
                    path: path.clone(),
                });
                self.wal = Some(Wal::Open(Arc::clone(&wal)));
                wal
            }
        };
        Ok(Some(wal))
    }
}

impl Sink for LedgerSink {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn write(&mut self, batch: &[Event]) -> io::Result<Option<Arc<dyn Flush>>> {
        self.ledger
            .insert(batch)
            .map_err(|e| io::Error::other(format!("{}: {e}", self.path.display())))?;
        self.checkpointer
            .shared
            .dirty
            .store(true, Ordering::Relaxed);
        if self
            .checkpointer
            .shared
            .restart
            .swap(false, Ordering::Relaxed)
        {
            // The background has copied nearly all of the WAL: this copies the rest, and the
            // next commit starts the WAL over.
            if let Err(e) = self.ledger.checkpoint() {
                warn!("ledger checkpoint: {e}");
            }
        }
        self.flush()
    }

    fn purge(&mut self, now: chrono::DateTime<chrono::Utc>, limit: usize) -> io::Result<usize> {
        let n = self
            .ledger
            .purge_some(now, limit)
            .map_err(io::Error::other)?;
        self.purged_copies_in_wal |= n > 0;
        if n < limit && self.purged_copies_in_wal {
            // The last step: the WAL, reused while the daemon runs, still holds the deleted
            // events as they were. Messages wait meanwhile, so wait little for readers.
            match self.ledger.truncate_wal_within(TRUNCATE_PATIENCE) {
                Ok(true) => self.purged_copies_in_wal = false,
                Ok(false) => warn!(
                    "ledger: readers kept the write-ahead log busy; the old copies of purged events in it go at the next purge"
                ),
                Err(e) => warn!("ledger checkpoint: {e}"),
            }
        }
        Ok(n)
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
    fn start(ledger: Ledger) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
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
                match ledger.checkpoint() {
                    Ok(frames) if frames >= RESTART_FRAMES => {
                        // Once more, to copy what came in meanwhile; then the writer's own
                        // checkpoint has only a moment's frames left to copy.
                        let _ = ledger.checkpoint();
                        s.restart.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => warn!("ledger checkpoint: {e}"),
                }
            })?;
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
    use crate::config::Synchronous;

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
            let mut sink = LedgerSink::open(&config).unwrap();
            for n in 0..2 {
                let flush = sink
                    .write(&[crate::event::sample(&format!("4Q{n}"), "a@remote.example")])
                    .unwrap();
                assert_eq!(flush.is_some(), flushed, "{synchronous:?}");
                if let Some(flush) = flush {
                    flush.flush().unwrap();
                }
            }
            if let Some(Wal::Open(wal)) = &sink.wal {
                let on_disk = std::fs::metadata(wal_path(&config.path)).unwrap();
                let held = wal.file.metadata().unwrap();
                assert_eq!((held.dev(), held.ino()), (on_disk.dev(), on_disk.ino()));
                assert!(held.len() > 0, "the commits went to this file");
            } else {
                assert!(!flushed, "the WAL was never opened");
            }
        }
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
        let mut sink = LedgerSink::open(&config).unwrap();
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
        assert_eq!(sink.purge(now, 500).unwrap(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the purge waited"
        );
        assert!(sink.purged_copies_in_wal, "the WAL could not be truncated");
        assert!(wal_len(&config) > 0);

        reader.execute_batch("COMMIT").unwrap();
        assert_eq!(sink.purge(now, 500).unwrap(), 0);
        assert!(!sink.purged_copies_in_wal);
        assert_eq!(wal_len(&config), 0, "the next purge truncated the WAL");
    }

    /// The writer never checkpoints on its own, yet the WAL does not grow without end: the
    /// background copies it, and the writer lets SQLite start it over.
    #[test]
    fn wal_is_started_over_while_events_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "ledger.sqlite", Synchronous::Normal);
        let mut sink = LedgerSink::open(&config).unwrap();
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
        let ledger = Ledger::open(&config.path).unwrap();
        assert_eq!(ledger.stats().unwrap().total, 6000);
    }
}
