//! Where events are kept. Every sink of `events.sinks` is a [`Sink`]: it writes batches,
//! purges what expired and records what tracking learnt. The two that keep events to answer
//! for are [`Ledger`]s too:
//!
//! - [`sqlite`]: the ledger in SQLite (sink `ledger`, the default), with the WAL handling
//!   that makes the writer's group commits cheap and durable;
//! - [`postgres`]: the ledger in PostgreSQL (sink `postgres`), shared by several MTAs, with
//!   its local spool for when the database cannot take events;
//! - `jsonl` and `log`: streams that write and keep nothing to ask.
//!
//! The event writer (`crate::writer`) writes to the sinks [`open_sinks`] opens; the commands,
//! the report and the audit ask the ledger [`open_ledger`] opens; `privacy-milter track` asks
//! one ledger and records in every sink ([`open_for_tracker`]). Every ledger answers the same
//! (`tests/it/ledger_contract.rs` holds them to it).

mod jsonl;
mod log;
mod postgres;
mod sqlite;

use self::{postgres::PgLedger, sqlite::SqliteLedger};
use crate::{
    config::{Config, SinkKind},
    event::Event,
    transit::{Delivery, State, Transit},
};
use chrono::{DateTime, Utc};
use std::{io, path::PathBuf, sync::Arc};

/// Most events deleted in one purge step: the daemon purges in such steps, between batches,
/// so that a large backlog never holds up the events of messages waiting for their answer.
pub const PURGE_CHUNK: usize = 500;

/// What went wrong in a store. The writer and the commands decide from it: whether the
/// database refused an event for good, or readers kept a deletion's old copies in the WAL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: SQLite cannot keep a write-ahead log here (the journal mode stays {mode}); put the ledger on a local file system", path.display())]
    NoWal { path: PathBuf, mode: String },
    #[error("{done}, but the write-ahead log may still hold old copies of deleted events: a reader (a backup, an export, a sqlite3 shell) kept it busy, so it could not be truncated; run {command} again once the reader is done")]
    WalBusy { done: String, command: &'static str },
    /// A store that cannot be opened, named by its configuration key.
    #[error("{key} {source}")]
    Open {
        key: &'static str,
        #[source]
        source: Box<StoreError>,
    },
    /// The ledger's file was deleted, replaced, truncated or overwritten under the daemon, or
    /// fails SQLite's check.
    #[error("{}: {what}", path.display())]
    Damaged { path: PathBuf, what: String },
    /// The ledger can only be read (file or directory permissions).
    #[error("{}: the ledger is read-only for this user ({source}); events could not be written", path.display())]
    ReadOnly {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no ledger at {} (events.ledger.path)", .0.display())]
    NoLedger(PathBuf),
    #[error("{0}")]
    Postgres(#[from] ::postgres::Error),
    /// A connection that could not be made, with every cause.
    #[error("{0}")]
    Connect(String),
    /// An event that cannot be stored as it is.
    #[error("{0}")]
    InvalidEvent(String),
    /// Written only as text: a message of an earlier error, e.g. one kept for a batch.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// This error, as the failure to open the store that `key` configures.
    pub(crate) fn opening(self, key: &'static str) -> Self {
        Self::Open {
            key,
            source: Box::new(self),
        }
    }

    /// Whether the database refused what it was given for good (a value it does not take, as
    /// opposed to a lost connection, a timeout or a lock, which pass): SQLSTATE classes 22
    /// (data exception), 23 (integrity constraint) and 54 (program limit, e.g. an index row
    /// too large).
    pub fn refused_for_good(&self) -> bool {
        match self {
            Self::InvalidEvent(_) => true,
            Self::Postgres(e) => e
                .code()
                .is_some_and(|state| matches!(&state.code()[..2], "22" | "23" | "54")),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The last step that makes a store's written batches durable, run on the writer's syncer
/// thread. It covers every batch the store wrote before it runs.
pub trait Flush: Send + Sync {
    fn flush(&self) -> Result<()>;
}

/// Where the writer puts events: each of `events.sinks`. The streams (`jsonl`, `log`) are
/// sinks only; the ledgers are [`Ledger`]s too.
pub trait Sink: Send {
    /// The sink's name in `events.sinks`.
    fn name(&self) -> &'static str;

    /// Writes a batch. It is durable when this returns, or once the returned [`Flush`] has
    /// run.
    fn write(&mut self, batch: &[Event]) -> Result<Option<Arc<dyn Flush>>>;

    /// Deletes at most `limit` of the events expired at `now`, oldest expiry first; returns
    /// how many went. Fewer than `limit` means the purge is done.
    fn purge_some(&mut self, now: DateTime<Utc>, limit: usize) -> Result<usize>;

    /// Records what tracking learnt, in one transaction: changed transit records and new
    /// delivery outcomes (one already recorded, by its id, is left as is). Streams write each
    /// delivery as a line (schema `privacy-milter.delivery.v1`) and keep no records.
    fn record_transit(&mut self, transits: &[Transit], deliveries: &[Delivery]) -> Result<()>;

    /// This sink opened again with `config`'s settings (a reload: a rotated file, a new path),
    /// for the writer. When that fails, the sink as it runs (its open file, its connection)
    /// and why: a reload never closes a sink that works.
    fn reopen(self: Box<Self>, config: &Config) -> (Box<dyn Sink>, Option<StoreError>);
}

/// Opens a sink anew while the running one stays open, and closes the running one only once
/// the new one works: for the sinks whose two instances may be open at once.
pub(crate) fn reopen_beside(
    running: Box<dyn Sink>,
    open: impl FnOnce() -> Result<Box<dyn Sink>>,
) -> (Box<dyn Sink>, Option<StoreError>) {
    match open() {
        Ok(new) => (new, None),
        Err(e) => (running, Some(e)),
    }
}

/// A sink that keeps the events and answers for them (SQLite, PostgreSQL): the `ledger`,
/// `transit` and `report` commands, the audit and the tracker ask it.
pub trait Ledger: Sink {
    /// The events matching `filter`, oldest first.
    fn find(&mut self, filter: &Filter) -> Result<Vec<Event>>;

    /// Deletes the events matching `filter`, bytes included, with their transit records and
    /// deliveries; returns how many.
    fn erase(&mut self, filter: &Filter) -> Result<usize>;

    /// Events with `since <= time < until`, oldest first.
    fn export(
        &mut self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>>;

    fn stats(&mut self) -> Result<Stats>;

    /// The transit record of the message `queue_id` accepted on one of `hosts` (the latest
    /// still open, else the latest); None when no transit event has that queue id.
    fn transit(&mut self, queue_id: &str, hosts: &[String]) -> Result<Option<Transit>>;

    /// The transit messages `query` selects, oldest first, with their deliveries.
    fn transits(&mut self, query: &TransitQuery) -> Result<Vec<Lifecycle>>;

    /// The lifecycles of these events (those that are transit messages), for `ledger query`
    /// and `export`.
    fn lifecycles(&mut self, events: &[Event]) -> Result<Vec<Lifecycle>>;

    /// For the report: events expiring at `from` or later, counted per day of expiry (UTC).
    fn expiring_per_day(&mut self, from: DateTime<Utc>) -> Result<Vec<DayCount>>;

    /// For the report: events recorded at `from` or later, counted per day of their time (UTC).
    fn recorded_per_day(&mut self, from: DateTime<Utc>) -> Result<Vec<DayCount>>;

    /// For the audit: the events that expired before `before` and are still held.
    fn overdue(&mut self, before: DateTime<Utc>) -> Result<Overdue>;

    /// For the report: the state and times of the transit messages accepted at `since` or
    /// later.
    fn transit_times(&mut self, since: DateTime<Utc>) -> Result<Vec<TransitTimes>>;
}

/// How many events of a retention class and direction fall on a day (UTC, `2026-11-26`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayCount {
    pub day: String,
    pub class: String,
    pub direction: String,
    pub count: u64,
}

/// Events still held after their expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overdue {
    pub count: u64,
    /// The earliest `expires_at` among them.
    pub oldest_expiry: Option<String>,
}

/// A transit message's state and the times that tell how long it was held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitTimes {
    pub state: State,
    pub since: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// Deletes every event expired at `now`, a chunk at a time; returns how many.
pub fn purge_all(ledger: &mut dyn Ledger, now: DateTime<Utc>) -> Result<usize> {
    let mut total = 0;
    loop {
        let n = ledger.purge_some(now, PURGE_CHUNK)?;
        total += n;
        if n < PURGE_CHUNK {
            return Ok(total);
        }
    }
}

/// What to look for: values as the ledger holds them, already pseudonymised by policy
/// (several when HMACs were made under several keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    Ip(Vec<String>),
    Address(Vec<String>),
    Domain(Vec<String>),
}

/// The values under which the ledger finds an event: each IP, address and domain it holds,
/// tagged with its kind (`i:`, `a:`, `d:`) so that values of different kinds never meet.
pub(crate) fn subjects(event: &Event) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut add = |kind: &str, value: &Option<String>| {
        if let Some(v) = value {
            out.insert(format!("{kind}{v}"));
        }
    };
    add("i:", &event.client.ip);
    add("a:", &event.sender.address);
    add("d:", &event.sender.domain);
    for r in &event.recipients {
        add("a:", &r.address.address);
        add("d:", &r.address.domain);
    }
    out
}

/// The transit record a new event starts, if it is a transit message the MTA accepted
/// under a queue id.
pub(crate) fn transit_of(event: &Event) -> Option<Transit> {
    if !event.transit || event.outcome != crate::event::Outcome::Accepted {
        return None;
    }
    let queue_id = event.queue_id.as_deref()?;
    let since = DateTime::parse_from_rfc3339(&event.time)
        .ok()?
        .with_timezone(&Utc);
    let remote = event.recipients.iter().filter(|r| !r.local).count();
    Some(Transit::new(
        event.id,
        &event.host,
        queue_id,
        since,
        u32::try_from(remote).unwrap_or(u32::MAX),
    ))
}

impl Filter {
    /// The subject values to look up (see [`subjects`]).
    pub(crate) fn subject_values(&self) -> Vec<String> {
        let (kind, values) = match self {
            Filter::Ip(v) => ("i:", v),
            Filter::Address(v) => ("a:", v),
            Filter::Domain(v) => ("d:", v),
        };
        values.iter().map(|v| format!("{kind}{v}")).collect()
    }

    /// Whether `event` holds one of the values (as the ledger's queries would find it).
    pub fn matches(&self, event: &Event) -> bool {
        let any = |values: &[String], found: &Option<String>| {
            found.as_ref().is_some_and(|v| values.contains(v))
        };
        match self {
            Filter::Ip(v) => any(v, &event.client.ip),
            Filter::Address(v) => {
                any(v, &event.sender.address)
                    || event.recipients.iter().any(|r| any(v, &r.address.address))
            }
            Filter::Domain(v) => {
                any(v, &event.sender.domain)
                    || event.recipients.iter().any(|r| any(v, &r.address.domain))
            }
        }
    }
}

/// What the ledger knows of a transit message after its event: its [`Transit`] record and
/// the delivery attempts logged for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Lifecycle {
    pub transit: Transit,
    pub deliveries: Vec<Delivery>,
}

/// Which transit messages `transit` lists.
#[derive(Clone, Debug, Default)]
pub struct TransitQuery {
    /// Only these states (all when empty).
    pub states: Vec<State>,
    /// Only messages accepted before this (held longer than a given time).
    pub since_before: Option<DateTime<Utc>>,
    /// Only messages that may still be queued.
    pub open_only: bool,
}

/// What `ledger stats` reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// (class, direction, count), sorted.
    pub counts: Vec<(String, String, u64)>,
    pub total: u64,
    pub oldest: Option<String>,
    pub next_expiry: Option<String>,
}

/// Whether the sink keeps events to answer for: a [`Ledger`].
fn is_ledger(kind: SinkKind) -> bool {
    matches!(kind, SinkKind::Ledger | SinkKind::Postgres)
}

/// Who opens a sink: the writer (ledgers with their writer's machinery: WAL keeper, spool)
/// or `privacy-milter track` (ledgers as the commands open them; the daemon's are the
/// writer's).
#[derive(Clone, Copy)]
enum Opener {
    Writer,
    Tracker,
}

fn open_sink(config: &Config, kind: SinkKind, by: Opener) -> Result<Box<dyn Sink>> {
    let ledger = &config.events.ledger;
    Ok(match (kind, by) {
        (SinkKind::Ledger, Opener::Writer) => Box::new(SqliteLedger::for_writer(ledger)?),
        (SinkKind::Ledger, Opener::Tracker) => Box::new(SqliteLedger::for_tracker(&ledger.path)?),
        (SinkKind::Postgres, Opener::Writer) => Box::new(PgLedger::for_writer(config)?),
        (SinkKind::Postgres, Opener::Tracker) => Box::new(PgLedger::connect(config)?),
        (SinkKind::Jsonl, _) => Box::new(jsonl::JsonlSink::open(&config.events.jsonl.path)?),
        (SinkKind::Log, _) => Box::new(log::LogSink),
    })
}

/// The sinks the writer keeps under `config`, in order.
fn configured(config: &Config) -> &[SinkKind] {
    if config.events.enabled {
        &config.events.sinks
    } else {
        &[]
    }
}

/// Opens the sinks `events.sinks` names, for the writer; fails at once if one cannot be
/// opened.
pub fn open_sinks(config: &Config) -> Result<Vec<Box<dyn Sink>>> {
    configured(config)
        .iter()
        .map(|kind| open_sink(config, *kind, Opener::Writer))
        .collect()
}

/// A sink a reload could not open, and why.
#[derive(Debug)]
pub struct NotReopened {
    pub kind: SinkKind,
    /// Whether it runs on as it was (else it was not running, and is not now).
    pub kept: bool,
    pub error: StoreError,
}

/// The writer's sinks after a reload to `config`: each running sink opened again on its own
/// ([`Sink::reopen`]: one that cannot be runs on as it was), new ones opened, those no longer
/// configured closed. Returns them in `config`'s order, with the sinks that could not be
/// opened.
pub fn reopen_sinks(
    running: Vec<Box<dyn Sink>>,
    config: &Config,
) -> (Vec<Box<dyn Sink>>, Vec<NotReopened>) {
    let mut running: Vec<Option<Box<dyn Sink>>> = running.into_iter().map(Some).collect();
    let (mut sinks, mut failed) = (Vec::new(), Vec::new());
    // Those no longer configured close first: a ledger's file may be opened again below.
    for slot in &mut running {
        if slot
            .as_ref()
            .is_some_and(|sink| !configured(config).iter().any(|k| k.name() == sink.name()))
        {
            *slot = None;
        }
    }
    for &kind in configured(config) {
        let old = running
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|sink| sink.name() == kind.name()))
            .and_then(Option::take);
        match old {
            Some(old) => {
                let (sink, error) = old.reopen(config);
                sinks.push(sink);
                if let Some(error) = error {
                    failed.push(NotReopened {
                        kind,
                        kept: true,
                        error,
                    });
                }
            }
            None => match open_sink(config, kind, Opener::Writer) {
                Ok(sink) => sinks.push(sink),
                Err(error) => failed.push(NotReopened {
                    kind,
                    kept: false,
                    error,
                }),
            },
        }
    }
    (sinks, failed)
}

/// A sink that a reload had to close and could not open again, with nothing left to write
/// to (the SQLite ledger's file deleted or replaced under it): it refuses every batch with
/// why, so that each event is logged in full and `events.on_error` applies, and the next
/// reload tries to open it again.
pub(crate) struct Unavailable {
    pub(crate) kind: SinkKind,
    pub(crate) why: String,
}

impl Sink for Unavailable {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn write(&mut self, _batch: &[Event]) -> Result<Option<Arc<dyn Flush>>> {
        Err(StoreError::Other(self.why.clone()))
    }

    fn purge_some(&mut self, _now: DateTime<Utc>, _limit: usize) -> Result<usize> {
        Ok(0)
    }

    fn record_transit(&mut self, _transits: &[Transit], _deliveries: &[Delivery]) -> Result<()> {
        Err(StoreError::Other(self.why.clone()))
    }

    fn reopen(self: Box<Self>, config: &Config) -> (Box<dyn Sink>, Option<StoreError>) {
        match open_sink(config, self.kind, Opener::Writer) {
            Ok(sink) => (sink, None),
            Err(e) => {
                let why = format!("the {} sink cannot be opened: {e}", self.kind.name());
                (Box::new(Self { why, ..*self }), Some(e))
            }
        }
    }
}

/// What `privacy-milter track` records in: the ledger that answers its lookups (the first
/// ledger in `events.sinks`), and the other sinks, which record what it learns too, in the
/// same order (ledgers first).
pub struct TrackerSinks {
    pub ledger: Box<dyn Ledger>,
    pub others: Vec<Box<dyn Sink>>,
}

/// Opens the sinks `events.sinks` names, in order, for `privacy-milter track`; None when
/// none of them is a ledger.
pub fn open_for_tracker(config: &Config) -> Result<Option<TrackerSinks>> {
    let sinks = &config.events.sinks;
    if !sinks.iter().copied().any(is_ledger) {
        return Ok(None);
    }
    let (mut ledger, mut others) = (None, Vec::new());
    for &kind in sinks {
        if ledger.is_none() && is_ledger(kind) {
            ledger = Some(if kind == SinkKind::Ledger {
                Box::new(SqliteLedger::for_tracker(&config.events.ledger.path)?) as Box<dyn Ledger>
            } else {
                Box::new(PgLedger::connect(config)?)
            });
        } else {
            others.push((kind, open_sink(config, kind, Opener::Tracker)?));
        }
    }
    // A second ledger records before the streams, as the first does.
    others.sort_by_key(|(kind, _)| !is_ledger(*kind));
    Ok(ledger.map(|ledger| TrackerSinks {
        ledger,
        others: others.into_iter().map(|(_, sink)| sink).collect(),
    }))
}

/// Whether the ledger is the PostgreSQL one: sink `postgres` without sink `ledger`.
pub fn ledger_on_postgres(config: &Config) -> bool {
    let sinks = &config.events.sinks;
    sinks.contains(&SinkKind::Postgres) && !sinks.contains(&SinkKind::Ledger)
}

/// Opens the ledger for the commands: PostgreSQL when events go there rather than to the
/// SQLite ledger, otherwise SQLite.
pub fn open_ledger(config: &Config) -> Result<Box<dyn Ledger>> {
    if ledger_on_postgres(config) {
        return Ok(Box::new(PgLedger::connect(config)?));
    }
    Ok(Box::new(SqliteLedger::for_commands(
        &config.events.ledger.path,
    )?))
}
