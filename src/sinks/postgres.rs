//! Sink `postgres`: events into the PostgreSQL ledger, one transaction per batch, with a
//! local spool for when the database cannot take them.
//!
//! While PostgreSQL is unreachable, or a write fails, the batch is appended to the spool
//! file (`events.postgres.spool`: one event as JSON per line, fsynced) and counts as
//! written: the event is durable there. Before every later write, and at every purge, the
//! spool is replayed into PostgreSQL in order, before anything newer; it is emptied only
//! once the replay has committed. Events are inserted by id with `ON CONFLICT DO NOTHING`,
//! so a replay cut short (a crash between commit and truncation) never duplicates anything.
//!
//! After a failure, the database is not tried again for a moment (longer when the failed
//! attempt was slow, e.g. a connect timeout), so an outage does not make every message wait.
//!
//! An event the database refuses for good (a value it does not take: see
//! [`refused_for_good`]) would otherwise block the spool forever. It is moved instead to the
//! rejects file beside the spool (`SPOOL.rejected`, same format), logged at error level, and
//! the others go on; the rejects file is purged of expired events like the ledger.

use super::{Flush, Sink};
use crate::{
    config::PostgresConfig,
    event::Event,
    ledger::postgres::{refused_for_good, PgLedger},
};
use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};
use tracing::{error, info, warn};

/// Most spooled events replayed in one transaction.
const REPLAY_CHUNK: usize = 500;

pub struct PostgresSink {
    ledger: PgLedger,
    spool: Spool,
    rejects: Rejects,
    /// A warning about the outage has been logged and no write has succeeded since.
    outage: bool,
    /// No attempt on the database before this.
    retry_at: Option<Instant>,
}

impl PostgresSink {
    /// Checks the URL and opens the spool. The database is first contacted by the first
    /// write (on the writer thread), which also replays what an earlier run spooled.
    pub fn open(config: &PostgresConfig) -> io::Result<Self> {
        let ledger = PgLedger::new(config).map_err(io::Error::other)?;
        let spool = Spool::open(&config.spool).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("events.postgres.spool {}: {e}", config.spool.display()),
            )
        })?;
        Ok(Self {
            ledger,
            spool,
            rejects: Rejects {
                path: config.rejects(),
            },
            outage: false,
            retry_at: None,
        })
    }

    fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Replays the spool (if anything is in it) and then `batch` into the database.
    fn try_write(&mut self, batch: &[Event]) -> Result<(), String> {
        if !self.spool.is_empty().map_err(|e| e.to_string())? {
            let (ledger, rejects) = (&self.ledger, &mut self.rejects);
            let replayed = self
                .spool
                .replay(|chunk| insert_or_reject(ledger, rejects, chunk))?;
            self.spool
                .clear()
                .map_err(|e| format!("cannot empty the spool: {e}"))?;
            info!(
                "replayed {replayed} spooled events from {} into PostgreSQL",
                self.spool.path.display()
            );
        }
        if !batch.is_empty() {
            insert_or_reject(&self.ledger, &mut self.rejects, batch)?;
        }
        Ok(())
    }

    /// Tries the database, unless it failed a moment ago; true when it took everything.
    fn attempt(&mut self, batch: &[Event]) -> bool {
        if !self.may_try() {
            return false;
        }
        let started = Instant::now();
        match self.try_write(batch) {
            Ok(()) => {
                if self.outage {
                    info!("PostgreSQL at {} takes events again", self.ledger.url());
                }
                self.outage = false;
                self.retry_at = None;
                true
            }
            Err(e) => {
                if !self.outage {
                    warn!(
                        "PostgreSQL at {} cannot take events ({e}); they go to the spool {} until it can",
                        self.ledger.url(),
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

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn write(&mut self, batch: &[Event]) -> io::Result<Option<Arc<dyn Flush>>> {
        if self.attempt(batch) {
            return Ok(None);
        }
        self.spool.append(batch).map(|()| None).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "PostgreSQL is unreachable and the spool {} cannot be written: {e}",
                    self.spool.path.display()
                ),
            )
        })
    }

    fn purge(&mut self, now: chrono::DateTime<chrono::Utc>, limit: usize) -> io::Result<usize> {
        // Also the periodic retry: whatever waits in the spool goes in first.
        if !self.attempt(&[]) {
            return Err(io::Error::other(format!(
                "PostgreSQL at {} is unreachable; purging later",
                self.ledger.url()
            )));
        }
        let purged = self
            .ledger
            .purge_some(now, limit)
            .map_err(io::Error::other)?;
        if purged < limit {
            // The last step of this purge: the rejects file too.
            self.rejects.purge(now).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", self.rejects.path.display()))
            })?;
        }
        Ok(purged)
    }
}

/// Inserts `events`. When the database refuses the batch for good, inserts them one by one
/// (in order) and moves those it refuses to the rejects file. Fails only for what may pass.
fn insert_or_reject(
    ledger: &PgLedger,
    rejects: &mut Rejects,
    events: &[Event],
) -> Result<(), String> {
    match ledger.insert(events) {
        Ok(_) => Ok(()),
        Err(e) if refused_for_good(&e) => {
            for event in events {
                match ledger.insert(std::slice::from_ref(event)) {
                    Ok(_) => {}
                    Err(e) if refused_for_good(&e) => {
                        rejects.add(event).map_err(|io| {
                            format!(
                                "PostgreSQL refuses event {} ({e}) and the rejects file {} cannot be written: {io}",
                                event.id,
                                rejects.path.display()
                            )
                        })?;
                        error!(
                            "PostgreSQL refuses event {} for good ({e}); it is kept in {}",
                            event.id,
                            rejects.path.display()
                        );
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Events the database refused for good: JSON lines like the spool's, appended and fsynced.
/// Fix the cause, then (with the daemon stopped) append the file to the spool to retry them.
struct Rejects {
    path: PathBuf,
}

impl Rejects {
    fn add(&mut self, event: &Event) -> io::Result<()> {
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
    fn purge(&mut self, now: chrono::DateTime<chrono::Utc>) -> io::Result<()> {
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
struct Spool {
    path: PathBuf,
    file: File,
}

impl Spool {
    fn open(path: &Path) -> io::Result<Self> {
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
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.file.metadata()?.len() == 0)
    }

    fn append(&mut self, batch: &[Event]) -> io::Result<()> {
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
        self.file.sync_data()
    }

    /// Hands every spooled event to `insert`, in order and in chunks; returns how many.
    /// A line that does not parse (cut short by a crash before its write was confirmed) is
    /// logged and skipped.
    fn replay(
        &self,
        mut insert: impl FnMut(&[Event]) -> Result<(), String>,
    ) -> Result<usize, String> {
        let reader = BufReader::new(
            File::open(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?,
        );
        let mut chunk = Vec::with_capacity(REPLAY_CHUNK);
        let mut total = 0;
        for line in reader.lines() {
            let line = line.map_err(|e| format!("{}: {e}", self.path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => chunk.push(event),
                Err(e) => error!(
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

    fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()
    }
}
