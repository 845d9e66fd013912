//! The ledger in PostgreSQL (sink `postgres`): [`db`] holds the connection pool, TLS, the
//! schema and every query; [`spool`] the local files. [`PgStore`] puts them together.
//!
//! For the writer, events go into PostgreSQL one transaction per batch. While PostgreSQL is
//! unreachable, or a write fails, the batch is appended to the spool file
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
//!
//! The `ledger` commands use the database alone: the spool is the daemon's.

mod db;
mod spool;

use crate::{
    config::Config,
    event::Event,
    store::{
        DayCount, Filter, Flush, Lifecycle, Overdue, Result, Stats, Store, StoreError,
        TransitQuery, TransitTimes,
    },
    transit::{Delivery, Transit},
};
use chrono::{DateTime, Utc};
use db::Database;
use spool::{Rejects, Spool};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tracing::{error, info, warn};

/// The log target of the sink's lines, as operators know it.
const TARGET: &str = "privacy_milter::sinks::postgres";

pub struct PgStore {
    db: Database,
    /// The writer's local files; the commands have none.
    local: Option<Local>,
}

/// What the writer keeps beside the database.
struct Local {
    spool: Spool,
    rejects: Rejects,
    /// A warning about the outage has been logged and no write has succeeded since.
    outage: bool,
    /// No attempt on the database before this.
    retry_at: Option<Instant>,
}

impl PgStore {
    /// For the writer: checks the URL and opens the spool. The database is first contacted
    /// by the first write (on the writer thread), which also replays what an earlier run
    /// spooled.
    pub fn for_writer(config: &Config) -> Result<Self> {
        let pg = &config.events.postgres;
        let db = Database::new(config)?;
        let spool = Spool::open(&pg.spool)
            .map_err(|e| StoreError::io(&pg.spool, e).opening("events.postgres.spool"))?;
        Ok(Self {
            db,
            local: Some(Local {
                spool,
                rejects: Rejects { path: pg.rejects() },
                outage: false,
                retry_at: None,
            }),
        })
    }

    /// For the commands: connects (and migrates the schema) now, so a problem shows at once.
    pub fn connect(config: &Config) -> Result<Self> {
        Ok(Self {
            db: Database::connect(config)?,
            local: None,
        })
    }
}

impl Local {
    fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Replays the spool (if anything is in it) and then `batch` into the database.
    fn try_write(&mut self, db: &Database, batch: &[Event]) -> Result<()> {
        if !self
            .spool
            .is_empty()
            .map_err(|e| StoreError::io(&self.spool.path, e))?
        {
            let rejects = &mut self.rejects;
            let replayed = self
                .spool
                .replay(|chunk| insert_or_reject(db, rejects, chunk))?;
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
            insert_or_reject(db, &mut self.rejects, batch)?;
        }
        Ok(())
    }

    /// Tries the database, unless it failed a moment ago; true when it took everything.
    fn attempt(&mut self, db: &Database, batch: &[Event]) -> bool {
        if !self.may_try() {
            return false;
        }
        let started = Instant::now();
        match self.try_write(db, batch) {
            Ok(()) => {
                if self.outage {
                    info!(target: TARGET, "PostgreSQL at {} takes events again", db.url());
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
                        db.url(),
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

impl Store for PgStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn write(&mut self, batch: &[Event]) -> Result<Option<Arc<dyn Flush>>> {
        let Some(local) = &mut self.local else {
            return self.db.insert(batch).map(|_| None);
        };
        if local.attempt(&self.db, batch) {
            return Ok(None);
        }
        local.spool.append(batch).map(|()| None).map_err(|e| {
            StoreError::Other(format!(
                "PostgreSQL is unreachable and the spool {} cannot be written: {e}",
                local.spool.path.display()
            ))
        })
    }

    fn purge_some(&mut self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        if let Some(local) = &mut self.local {
            // Also the periodic retry: whatever waits in the spool goes in first.
            if !local.attempt(&self.db, &[]) {
                return Err(StoreError::Other(format!(
                    "PostgreSQL at {} is unreachable; purging later",
                    self.db.url()
                )));
            }
        }
        let purged = self.db.purge_some(now, limit)?;
        if purged < limit {
            if let Some(local) = &mut self.local {
                // The last step of this purge: the rejects file too.
                local
                    .rejects
                    .purge(now)
                    .map_err(|e| StoreError::io(&local.rejects.path, e))?;
            }
        }
        Ok(purged)
    }

    fn find(&mut self, filter: &Filter) -> Result<Vec<Event>> {
        self.db.find(filter)
    }

    fn erase(&mut self, filter: &Filter) -> Result<usize> {
        self.db.erase(filter)
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

    fn transit(&mut self, queue_id: &str, hosts: &[String]) -> Result<Option<Transit>> {
        self.db.transit(queue_id, hosts)
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

/// Inserts `events`. When the database refuses the batch for good, inserts them one by one
/// (in order) and moves those it refuses to the rejects file. Fails only for what may pass.
fn insert_or_reject(db: &Database, rejects: &mut Rejects, events: &[Event]) -> Result<()> {
    match db.insert(events) {
        Ok(_) => Ok(()),
        Err(e) if e.refused_for_good() => {
            for event in events {
                match db.insert(std::slice::from_ref(event)) {
                    Ok(_) => {}
                    Err(e) if e.refused_for_good() => {
                        rejects.add(event).map_err(|io| {
                            StoreError::Other(format!(
                                "PostgreSQL refuses event {} ({e}) and the rejects file {} cannot be written: {io}",
                                event.id,
                                rejects.path.display()
                            ))
                        })?;
                        crate::metrics::DAEMON.postgres_rejected.inc();
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
