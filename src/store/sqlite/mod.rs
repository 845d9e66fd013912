//! The ledger in SQLite (sink `ledger`, the default): [`SqliteLedger`], for the writer
//! ([`SqliteLedger::for_writer`]), the `ledger` commands ([`SqliteLedger::for_commands`]) or
//! the tracker ([`SqliteLedger::for_tracker`]). Its SQL is in files by what it holds:
//! `schema` (the tables, their migrations, opening a connection), `events`, `transit`
//! (transit records and deliveries) and `counts` (for the report and the audit); `wal` is
//! what the writer's connection needs beside it (the background checkpointer, the WAL flush
//! and its runway), and `guard` its watch on the file.
//!
//! Erasure and purge remove the bytes too: deleted rows are zeroed (`secure_delete`), and the
//! WAL, which still holds the pages as they were, is truncated at the end of each purge of the
//! daemon's that deleted something (again between batches until readers let it), and at the
//! end of every purge and erasure of the commands.

mod counts;
mod events;
mod guard;
mod schema;
mod transit;
mod wal;

use crate::{
    config::{LedgerConfig, Synchronous},
    event::Event,
    store::{
        DayCount, Filter, Flush, Ledger, Lifecycle, Overdue, Result, Sink, Stats, StoreError,
        TransitQuery, TransitTimes,
    },
    transit::{Delivery, Transit},
};
use chrono::{DateTime, Utc};
use guard::FileGuard;
use rusqlite::Connection;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};
use tracing::{error, info, warn};
use wal::WalKeeper;

/// How long one attempt to truncate the WAL waits for readers. Meanwhile no other connection
/// may write (SQLite holds back writers while a truncating checkpoint waits), so the daemon's
/// messages wait too: a moment only.
const TRUNCATE_PATIENCE: Duration = Duration::from_millis(50);

/// The commands try again this often, with a pause between in which the daemon writes and
/// checkpoints, before they give up (and say so).
const TRUNCATE_ATTEMPTS: u32 = 100;
const TRUNCATE_PAUSE: Duration = Duration::from_millis(50);

/// How often the daemon tries again to truncate a WAL that readers kept busy.
const TRUNCATE_RETRY: Duration = Duration::from_secs(1);

/// Names the ledger's file in an error of SQLite's.
fn named<T>(path: &Path, result: rusqlite::Result<T>) -> Result<T> {
    result.map_err(|source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    })
}

/// One connection to the ledger, with what its opener needs beside it.
pub struct SqliteLedger {
    // Declared first, so dropped first (see `WalKeeper`).
    keeper: Option<WalKeeper>,
    conn: Connection,
    /// The ledger's file, named in every error.
    path: PathBuf,
    /// The file the writer opened, watched before each batch.
    guard: Option<FileGuard>,
    /// Events deleted since the WAL was last truncated: their old copies are still in it.
    deleted_in_wal: usize,
    /// How long truncating the WAL waits for other connections.
    patience: Duration,
    /// How its commits are made durable (`events.ledger.synchronous`).
    synchronous: Synchronous,
    /// When truncating the WAL last failed, if it has not succeeded since.
    truncation_failed: Option<Instant>,
}

impl SqliteLedger {
    /// A connection with every commit fsynced, and nothing beside it.
    fn plain(path: &Path) -> Result<Self> {
        Ok(Self {
            keeper: None,
            conn: schema::open(path, Synchronous::Full)?,
            path: path.to_path_buf(),
            guard: None,
            deleted_in_wal: 0,
            patience: TRUNCATE_PATIENCE,
            synchronous: Synchronous::Full,
            truncation_failed: None,
        })
    }

    /// The ledger as the event writer keeps it: commits without SQLite's own fsync and
    /// without checkpoints, which the [`wal`] machinery does beside it.
    pub fn for_writer(config: &LedgerConfig) -> Result<Self> {
        let open = || {
            let path = &config.path;
            let mut conn = schema::open(path, Synchronous::Normal)?;
            // A damaged or read-only ledger is refused now, not found out message by message.
            schema::quick_check(&conn, path)?;
            schema::check_writable(&conn, path)?;
            let guard = FileGuard::new(path)?;
            named(path, wal::disable_autocheckpoint(&conn))?;
            let keeper = WalKeeper::start(&mut conn, path, config.synchronous)?;
            Ok(Self {
                keeper: Some(keeper),
                conn,
                path: path.clone(),
                guard: Some(guard),
                deleted_in_wal: 0,
                patience: TRUNCATE_PATIENCE,
                synchronous: config.synchronous,
                truncation_failed: None,
            })
        };
        open().map_err(|e: StoreError| e.opening("events.ledger.path"))
    }

    /// The ledger for the `ledger` commands: an existing file, every commit fsynced.
    pub fn for_commands(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(StoreError::NoLedger(path.to_path_buf()));
        }
        Self::plain(path)
    }

    /// The ledger for `privacy-milter track`: created if the daemon has not yet, every commit
    /// fsynced (the tracker's commits are few).
    pub fn for_tracker(path: &Path) -> Result<Self> {
        Self::plain(path).map_err(|e| e.opening("events.ledger.path"))
    }

    /// Names the ledger's file in an error of SQLite's.
    fn sql<T>(&self, result: rusqlite::Result<T>) -> Result<T> {
        named(&self.path, result)
    }

    /// Truncates the WAL, so that no old copy of what was deleted stays in it; false if
    /// readers kept it busy. The daemon tries once, its own checkpointer held back (and again
    /// after later batches: [`Self::retry_truncation`]); a command, beside a daemon whose
    /// checkpoints SQLite does not wait for, tries again and again for a few seconds, giving
    /// way to the daemon between attempts.
    fn truncate_wal(&mut self) -> Result<bool> {
        let attempts = if self.keeper.is_some() {
            1
        } else {
            TRUNCATE_ATTEMPTS
        };
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(TRUNCATE_PAUSE);
            }
            let truncated = match &self.keeper {
                Some(keeper) => keeper.truncate(&self.conn, self.patience),
                None => wal::truncate(&self.conn, self.patience),
            };
            if self.sql(truncated)? {
                self.deleted_in_wal = 0;
                self.truncation_failed = None;
                return Ok(true);
            }
        }
        self.truncation_failed = Some(Instant::now());
        Ok(false)
    }

    /// The daemon: once a purge had to leave old copies in the WAL (readers kept it busy),
    /// tries again every [`TRUNCATE_RETRY`], before a batch, until it is done.
    fn retry_truncation(&mut self) -> Result<()> {
        let due = self
            .truncation_failed
            .is_some_and(|at| at.elapsed() >= TRUNCATE_RETRY);
        if due && self.deleted_in_wal > 0 && self.truncate_wal()? {
            info!(
                target: "privacy_milter::sinks::ledger",
                "ledger: the write-ahead log is truncated: no old copy of the purged events is left in it"
            );
        }
        Ok(())
    }
}

impl Drop for SqliteLedger {
    /// The writer's connection copies the whole WAL into the database and empties it before
    /// it closes. SQLite would do so at close, but not for a file moved aside while open
    /// (it leaves the WAL at the old path, where a new ledger would read it as its own).
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            drop(keeper);
            match self.sql(wal::truncate(&self.conn, schema::BUSY_TIMEOUT)) {
                Ok(true) => {}
                Ok(false) => warn!(
                    target: "privacy_milter::sinks::ledger",
                    "ledger {}: readers kept the write-ahead log busy at close; SQLite copies it at the next open",
                    self.path.display()
                ),
                Err(e) => {
                    error!(target: "privacy_milter::sinks::ledger", "ledger checkpoint at close: {e}")
                }
            }
        }
    }
}

impl Sink for SqliteLedger {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn write(&mut self, batch: &[Event]) -> Result<Option<Arc<dyn Flush>>> {
        if let Some(guard) = &mut self.guard {
            guard.check()?;
        }
        self.retry_truncation()?;
        match &mut self.keeper {
            Some(keeper) => keeper.commit(&mut self.conn, &self.path, batch),
            None => named(&self.path, events::insert(&mut self.conn, batch, || ())).map(|()| None),
        }
    }

    fn purge_some(&mut self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        let n = named(&self.path, events::purge_some(&mut self.conn, now, limit))?;
        self.deleted_in_wal += n;
        // A command's purge always ends with the WAL truncated: one run before may have left
        // old copies in it (a reader kept it busy).
        let copies = self.deleted_in_wal > 0 || self.keeper.is_none();
        if n < limit && copies && !self.truncate_wal()? {
            let done = format!("purged {} expired events", self.deleted_in_wal);
            if self.keeper.is_none() {
                return Err(StoreError::WalBusy {
                    done,
                    command: "purge",
                });
            }
            // The daemon does not hold up mail for readers: it tries again between batches.
            warn!(
                target: "privacy_milter::sinks::ledger",
                "ledger: readers kept the write-ahead log busy; the old copies of purged events in it go as soon as they let it be truncated (tried again every second while events come in)"
            );
        }
        Ok(n)
    }

    fn record_transit(&mut self, transits: &[Transit], deliveries: &[Delivery]) -> Result<()> {
        named(
            &self.path,
            transit::record(&mut self.conn, transits, deliveries),
        )
    }

    /// Two connections may be open at once only on the same file: one to a file moved aside
    /// and one to a new file at its path would share the `-wal` and `-shm` names there and
    /// corrupt each other. So while the file opened is still at the path (or the path
    /// changes) the new connection opens first, and one that cannot open leaves this one as
    /// it is (a file made read-only or damaged in place: this connection's own guard still
    /// refuses what its file cannot take). Otherwise this connection closes first (it copies
    /// its WAL into its file); if the new one cannot open, the events go on into the file
    /// moved aside, as before the reload, or, with that file deleted, nowhere (each batch
    /// refused, and logged in full) until a reload opens the ledger.
    fn reopen(
        self: Box<Self>,
        config: &crate::config::Config,
    ) -> (Box<dyn Sink>, Option<StoreError>) {
        let new = &config.events.ledger;
        let beside = new.path != self.path || self.guard.as_ref().is_some_and(FileGuard::at_path);
        let open = |config: &LedgerConfig| Ok(Box::new(Self::for_writer(config)?) as Box<dyn Sink>);
        if beside {
            return crate::store::reopen_beside(self, || open(new));
        }
        let moved_to = self.guard.as_ref().and_then(FileGuard::moved_to);
        let synchronous = self.synchronous;
        drop(self);
        let error = match open(new) {
            Ok(sink) => return (sink, None),
            Err(e) => e,
        };
        let kept = moved_to.map(|path| open(&LedgerConfig { path, synchronous }));
        match kept {
            Some(Ok(sink)) => (sink, Some(error)),
            _ => {
                let why = format!(
                    "the ledger sink could not be opened again (its file is no longer at its path): {error}"
                );
                let sink = crate::store::Unavailable {
                    kind: crate::config::SinkKind::Ledger,
                    why,
                };
                (Box::new(sink), Some(error))
            }
        }
    }
}

impl Ledger for SqliteLedger {
    fn find(&mut self, filter: &Filter) -> Result<Vec<Event>> {
        self.sql(events::find(&self.conn, filter))
    }

    /// Ends with the WAL truncated, every time, even with nothing found to erase: a run again
    /// finishes what a run beside a reader, or a killed run, left in it.
    fn erase(&mut self, filter: &Filter) -> Result<usize> {
        let erased = named(&self.path, events::erase(&mut self.conn, filter))?;
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
        self.sql(events::export(&self.conn, since, until))
    }

    fn stats(&mut self) -> Result<Stats> {
        self.sql(events::stats(&self.conn))
    }

    /// The ledger on SQLite belongs to one host: the queue id alone finds the message.
    fn transit(&mut self, queue_id: &str, _hosts: &[String]) -> Result<Option<Transit>> {
        self.sql(transit::by_queue_id(&self.conn, queue_id))
    }

    fn transits(&mut self, query: &TransitQuery) -> Result<Vec<Lifecycle>> {
        self.sql(transit::list(&self.conn, query))
    }

    fn lifecycles(&mut self, events: &[Event]) -> Result<Vec<Lifecycle>> {
        self.sql(transit::lifecycles(&self.conn, events))
    }

    fn expiring_per_day(&mut self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        self.sql(counts::expiring_per_day(&self.conn, from))
    }

    fn recorded_per_day(&mut self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        self.sql(counts::recorded_per_day(&self.conn, from))
    }

    fn overdue(&mut self, before: DateTime<Utc>) -> Result<Overdue> {
        self.sql(counts::overdue(&self.conn, before))
    }

    fn transit_times(&mut self, since: DateTime<Utc>) -> Result<Vec<TransitTimes>> {
        self.sql(counts::transit_times(&self.conn, since))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A new, empty ledger in a directory of its own, as one connection.
    pub(in crate::store::sqlite) fn scratch() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = schema::open(&dir.path().join("ledger.sqlite"), Synchronous::Full).unwrap();
        (dir, conn)
    }

    /// Asserts that SQLite's plan for `sql` searches an index and scans no table.
    pub(in crate::store::sqlite) fn assert_searches(conn: &Connection, sql: &str) {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(
                rusqlite::params_from_iter(std::iter::repeat_n("x", stmt.parameter_count())),
                |r| r.get(3),
            )
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.starts_with("SEARCH"))
                && !plan.iter().any(|step| step.starts_with("SCAN")),
            "{sql}\n{plan:#?}"
        );
    }
}
