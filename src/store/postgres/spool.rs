//! What the writer keeps beside the PostgreSQL ledger: the spool, where events wait while
//! the database cannot take them, and the rejects file, where events it refused for good
//! wait for the operator (both JSON lines, appended and fsynced), and when to try the
//! database again.
//!
//! While PostgreSQL is unreachable, or a write fails, the batch is appended to the spool file
//! (`events.postgres.spool`: one event as JSON per line, fsynced) and counts as written: the
//! event is durable there. Before every later write, and at every purge, the spool is
//! replayed into PostgreSQL in order, before anything newer; it is emptied only once the
//! replay has committed. Events are inserted by id with `ON CONFLICT DO NOTHING`, so a replay
//! cut short (a crash between commit and truncation) never duplicates anything.
//!
//! After a failure, the database is not tried again for a moment (longer when the failed
//! attempt was slow, e.g. a connect timeout), so an outage does not make every message wait.
//!
//! An event the database refuses for good (a value it does not take: see
//! [`StoreError::refused_for_good`]) would otherwise block the spool forever. It is moved
//! instead to the rejects file beside the spool (`SPOOL.rejected`, same format), logged at
//! error level, and the others go on; the rejects file is purged of expired events like the
//! ledger.

use super::{events, pool::Pool, TARGET};
use crate::{
    event::Event,
    metrics::DAEMON,
    store::{Result, StoreError},
};
use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tracing::{error, info, warn};

/// Most spooled events replayed in one transaction.
const REPLAY_CHUNK: usize = 500;

/// Events the database refused for good: JSON lines like the spool's, appended and fsynced.
/// Fix the cause, then (with the daemon stopped) append the file to the spool to retry them.
pub(super) struct Rejects {
    pub(super) path: PathBuf,
}

impl Rejects {
    pub(super) fn add(&mut self, event: &Event) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        file.write_all(format!("{}\n", event.to_json()).as_bytes())?;
        file.sync_data()
    }

    /// Drops the events that have expired; personal data is not kept here longer than in
    /// the ledger.
    pub(super) fn purge(&mut self, now: chrono::DateTime<chrono::Utc>) -> io::Result<()> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let expired = |line: &str| {
            serde_json::from_str::<Event>(line).is_ok_and(|e| {
                chrono::DateTime::parse_from_rfc3339(&e.retention.expires_at)
                    .is_ok_and(|t| t <= now)
            })
        };
        let kept: String = text
            .lines()
            .filter(|line| !expired(line))
            .map(|line| format!("{line}\n"))
            .collect();
        if kept.len() == text.len() {
            return Ok(());
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(kept.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Events waiting for the database: JSON lines, appended and fsynced.
pub(super) struct Spool {
    pub(super) path: PathBuf,
    file: File,
    /// Events in it (lines), for the metrics.
    held: usize,
}

impl Spool {
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        if !existed {
            // Make the new file's name durable too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        let held = BufReader::new(File::open(path)?).lines().count();
        DAEMON.postgres_spooled.set(held as i64);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            held,
        })
    }

    pub(super) fn is_empty(&self) -> io::Result<bool> {
        Ok(self.file.metadata()?.len() == 0)
    }

    pub(super) fn append(&mut self, batch: &[Event]) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        let mut text = String::new();
        if len > 0 {
            // A line cut short by a crash must not swallow the next event.
            let mut last = [0u8];
            self.file.read_exact_at(&mut last, len - 1)?;
            if last[0] != b'\n' {
                text.push('\n');
            }
        }
        for event in batch {
            text.push_str(&event.to_json());
            text.push('\n');
        }
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()?;
        self.held += batch.len();
        DAEMON.postgres_spooled.set(self.held as i64);
        Ok(())
    }

    /// Hands every spooled event to `insert`, in order and in chunks; returns how many.
    /// A line that does not parse (cut short by a crash before its write was confirmed) is
    /// logged and skipped.
    pub(super) fn replay(&self, mut insert: impl FnMut(&[Event]) -> Result<()>) -> Result<usize> {
        let named = |e| StoreError::io(&self.path, e);
        let reader = BufReader::new(File::open(&self.path).map_err(named)?);
        let mut chunk = Vec::with_capacity(REPLAY_CHUNK);
        let mut total = 0;
        for line in reader.lines() {
            let line = line.map_err(named)?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => chunk.push(event),
                Err(e) => error!(
                    target: TARGET,
                    "skipping a damaged line of the spool {}: {e}: {line}",
                    self.path.display()
                ),
            }
            if chunk.len() == REPLAY_CHUNK {
                insert(&chunk)?;
                total += chunk.len();
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            insert(&chunk)?;
            total += chunk.len();
        }
        Ok(total)
    }

    pub(super) fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.held = 0;
        DAEMON.postgres_spooled.set(0);
        Ok(())
    }
}

/// What the writer keeps beside the database.
pub(super) struct Local {
    pub(super) spool: Spool,
    pub(super) rejects: Rejects,
    /// A warning about the outage has been logged and no write has succeeded since.
    outage: bool,
    /// No attempt on the database before this.
    retry_at: Option<Instant>,
}

impl Local {
    pub(super) fn new(spool: Spool, rejects: Rejects) -> Self {
        Self {
            spool,
            rejects,
            outage: false,
            retry_at: None,
        }
    }

    fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Replays the spool (if anything is in it) and then `batch` into the database.
    fn try_write(&mut self, pool: &Pool, batch: &[Event]) -> Result<()> {
        if !self
            .spool
            .is_empty()
            .map_err(|e| StoreError::io(&self.spool.path, e))?
        {
            let rejects = &mut self.rejects;
            let replayed = self
                .spool
                .replay(|chunk| insert_or_reject(pool, rejects, chunk))?;
            self.spool.clear().map_err(|e| {
                StoreError::Other(format!(
                    "cannot empty the spool {}: {e}",
                    self.spool.path.display()
                ))
            })?;
            info!(
                target: TARGET,
                "replayed {replayed} spooled events from {} into PostgreSQL",
                self.spool.path.display()
            );
        }
        if !batch.is_empty() {
            insert_or_reject(pool, &mut self.rejects, batch)?;
        }
        Ok(())
    }

    /// Tries the database, unless it failed a moment ago; true when it took everything.
    pub(super) fn attempt(&mut self, pool: &Pool, batch: &[Event]) -> bool {
        if !self.may_try() {
            return false;
        }
        let started = Instant::now();
        match self.try_write(pool, batch) {
            Ok(()) => {
                if self.outage {
                    info!(target: TARGET, "PostgreSQL at {} takes events again", pool.url());
                }
                self.outage = false;
                self.retry_at = None;
                true
            }
            Err(e) => {
                if !self.outage {
                    warn!(
                        target: TARGET,
                        "PostgreSQL at {} cannot take events ({e}); they go to the spool {} until it can",
                        pool.url(),
                        self.spool.path.display()
                    );
                    self.outage = true;
                }
                let pause =
                    (started.elapsed() * 6).clamp(Duration::from_secs(1), Duration::from_secs(60));
                self.retry_at = Some(Instant::now() + pause);
                false
            }
        }
    }
}

/// Inserts `events`. When the database refuses the batch for good, inserts them one by one
/// (in order) and moves those it refuses to the rejects file. Fails only for what may pass.
fn insert_or_reject(pool: &Pool, rejects: &mut Rejects, events: &[Event]) -> Result<()> {
    // Each insert gives its connection back before the next takes one (with a pool of one,
    // a connection held across the match would wait for itself).
    let insert = |batch: &[Event]| events::insert(&mut *pool.get()?, batch);
    match insert(events) {
        Ok(_) => Ok(()),
        Err(e) if e.refused_for_good() => {
            for event in events {
                match insert(std::slice::from_ref(event)) {
                    Ok(_) => {}
                    Err(e) if e.refused_for_good() => {
                        rejects.add(event).map_err(|io| {
                            StoreError::Other(format!(
                                "PostgreSQL refuses event {} ({e}) and the rejects file {} cannot be written: {io}",
                                event.id,
                                rejects.path.display()
                            ))
                        })?;
                        DAEMON.postgres_rejected.inc();
                        error!(
                            target: TARGET,
                            "PostgreSQL refuses event {} for good ({e}); it is kept in {}",
                            event.id,
                            rejects.path.display()
                        );
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
