//! The ledger in PostgreSQL (sink `postgres`): [`PgLedger`], for the writer
//! ([`PgLedger::for_writer`]) or for the commands and the tracker ([`PgLedger::connect`]).
//! Its SQL is in files by what it holds: `schema` (the tables and their migrations),
//! `events`, `transit` (transit records and deliveries) and `counts` (for the report and the
//! audit); `pool` makes the connections (TLS included), and `spool` is what the writer keeps
//! beside the database for when it cannot take events.
//!
//! For the writer, events go into PostgreSQL one transaction per batch, or into the spool
//! while the database cannot take them. The `ledger` commands use the database alone: the
//! spool is the daemon's.

mod counts;
mod events;
mod pool;
mod schema;
mod spool;
mod transit;

use crate::{
    config::Config,
    event::Event,
    store::{
        DayCount, Filter, Flush, Ledger, Lifecycle, Overdue, Result, Sink, Stats, StoreError,
        TransitQuery, TransitTimes,
    },
    transit::{Delivery, Transit},
};
use chrono::{DateTime, Utc};
use pool::Pool;
use spool::{Local, Rejects, Spool};
use std::sync::Arc;

/// The log target of the sink's lines, as operators know it.
const TARGET: &str = "privacy_milter::sinks::postgres";

/// The ledger's database, and the writer's local files beside it.
pub struct PgLedger {
    pool: Pool,
    /// The writer's local files; the commands have none.
    local: Option<Local>,
}

impl PgLedger {
    /// For the writer: checks the URL and opens the spool. The database is first contacted
    /// by the first write (on the writer thread), which also replays what an earlier run
    /// spooled.
    pub fn for_writer(config: &Config) -> Result<Self> {
        let pg = &config.events.postgres;
        let pool = Pool::new(config)?;
        let spool = Spool::open(&pg.spool)
            .map_err(|e| StoreError::io(&pg.spool, e).opening("events.postgres.spool"))?;
        Ok(Self {
            pool,
            local: Some(Local::new(spool, Rejects { path: pg.rejects() })),
        })
    }

    /// For the commands and the tracker: connects (and migrates the schema) now, so a
    /// problem shows at once.
    pub fn connect(config: &Config) -> Result<Self> {
        let pool = Pool::new(config)?;
        pool.get()
            .map_err(|e| StoreError::Connect(format!("PostgreSQL at {}: {e}", pool.url())))?;
        Ok(Self { pool, local: None })
    }
}

impl Sink for PgLedger {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn write(&mut self, batch: &[Event]) -> Result<Option<Arc<dyn Flush>>> {
        let Some(local) = &mut self.local else {
            return events::insert(&mut *self.pool.get()?, batch).map(|_| None);
        };
        if local.attempt(&self.pool, batch) {
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
            if !local.attempt(&self.pool, &[]) {
                return Err(StoreError::Other(format!(
                    "PostgreSQL at {} is unreachable; purging later",
                    self.pool.url()
                )));
            }
        }
        let purged = events::purge_some(&mut *self.pool.get()?, now, limit)?;
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

    fn record_transit(&mut self, transits: &[Transit], deliveries: &[Delivery]) -> Result<()> {
        transit::record(&mut *self.pool.get()?, transits, deliveries)
    }

    /// The new pool and spool open before the old ones close (the writer writes to neither
    /// meanwhile): settings that cannot be used leave the running ones.
    fn reopen(self: Box<Self>, config: &Config) -> (Box<dyn Sink>, Option<StoreError>) {
        crate::store::reopen_beside(self, || {
            Ok(Box::new(Self::for_writer(config)?) as Box<dyn Sink>)
        })
    }
}

impl Ledger for PgLedger {
    fn find(&mut self, filter: &Filter) -> Result<Vec<Event>> {
        events::find(&mut *self.pool.get()?, filter)
    }

    fn erase(&mut self, filter: &Filter) -> Result<usize> {
        events::erase(&mut *self.pool.get()?, filter)
    }

    fn export(
        &mut self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>> {
        events::export(&mut *self.pool.get()?, since, until)
    }

    fn stats(&mut self) -> Result<Stats> {
        events::stats(&mut *self.pool.get()?)
    }

    fn transit(&mut self, queue_id: &str, hosts: &[String]) -> Result<Option<Transit>> {
        transit::by_queue_id(&mut *self.pool.get()?, queue_id, hosts)
    }

    fn transits(&mut self, query: &TransitQuery) -> Result<Vec<Lifecycle>> {
        transit::list(&mut *self.pool.get()?, query)
    }

    fn lifecycles(&mut self, events: &[Event]) -> Result<Vec<Lifecycle>> {
        transit::lifecycles(&mut *self.pool.get()?, events)
    }

    fn expiring_per_day(&mut self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        counts::expiring_per_day(&mut *self.pool.get()?, from)
    }

    fn recorded_per_day(&mut self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        counts::recorded_per_day(&mut *self.pool.get()?, from)
    }

    fn overdue(&mut self, before: DateTime<Utc>) -> Result<Overdue> {
        counts::overdue(&mut *self.pool.get()?, before)
    }

    fn transit_times(&mut self, since: DateTime<Utc>) -> Result<Vec<TransitTimes>> {
        counts::transit_times(&mut *self.pool.get()?, since)
    }
}
