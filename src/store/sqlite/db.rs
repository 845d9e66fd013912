//! The ledger's SQLite database: schema, migrations and every query. Each event is kept
//! whole as JSON; the columns beside it exist for the indexes that expiry, export and
//! statistics need, and `subjects` holds, per event, the values an access or erasure request
//! looks it up by. The schema is versioned with `PRAGMA user_version` and migrated at open.

use crate::{
    config::Synchronous,
    event::{stamp, Event},
    store::{subjects, transit_of, Filter, Lifecycle, Result, Stats, StoreError, TransitQuery},
    transit::{Delivery, State, Transit},
};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use std::{
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

mod summary;

/// The first schema: the columns of each lookup, with an index each.
const V1: &str = "
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        time TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        class TEXT NOT NULL,
        direction TEXT NOT NULL,
        outcome TEXT NOT NULL,
        host TEXT NOT NULL,
        client_ip TEXT,
        sender_address TEXT,
        sender_domain TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX events_expires_at ON events (expires_at);
    CREATE INDEX events_time ON events (time);
    CREATE INDEX events_client_ip ON events (client_ip);
    CREATE INDEX events_sender_address ON events (sender_address);
    CREATE INDEX events_sender_domain ON events (sender_domain);
    CREATE TABLE recipients (
        event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
        address TEXT,
        domain TEXT
    );
    CREATE INDEX recipients_event ON recipients (event_id);
    CREATE INDEX recipients_address ON recipients (address);
    CREATE INDEX recipients_domain ON recipients (domain);
";

/// The second schema (tables; `migrate_v2` moves the events over). An event touches fewer
/// pages: its row in arrival order (`seq`; the id is in the body, no index needs it), the time
/// and expiry indexes, which grow at their end, and one `subjects` row per IP, address or
/// domain it holds, in one index instead of eight. A transit message gets one `transit` row,
/// filed by queue id (the tracker's lookup), and `transit_open` holds the messages still in
/// the queue; its delivery attempts go to `deliveries`.
const V2: &str = "
    CREATE TABLE events_v2 (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        class TEXT NOT NULL,
        direction TEXT NOT NULL,
        outcome TEXT NOT NULL,
        host TEXT NOT NULL,
        queue_id TEXT,
        body TEXT NOT NULL
    );
    CREATE TABLE subjects (
        value TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (value, seq)
    ) WITHOUT ROWID;
    CREATE TABLE transit (
        queue_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        host TEXT NOT NULL,
        state TEXT NOT NULL,
        since TEXT NOT NULL,
        acknowledged_at TEXT,
        removed_at TEXT,
        remote INTEGER NOT NULL,
        sent INTEGER NOT NULL,
        bounced INTEGER NOT NULL,
        alerts INTEGER NOT NULL,
        PRIMARY KEY (queue_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX transit_open ON transit (since)
        WHERE state IN ('pending', 'deferred', 'acknowledged');
    CREATE TABLE deliveries (
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        time TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (seq, id)
    ) WITHOUT ROWID;
";

/// After [`V2`]: the old tables go, the new events table takes their name.
const V2_FINISH: &str = "
    DROP TABLE recipients;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_expires_at ON events (expires_at);
    CREATE INDEX events_time ON events (time);
";

/// The schema's current version (`PRAGMA user_version`).
const VERSION: usize = 2;

const INSERT_EVENT: &str = "INSERT INTO events
    (time, expires_at, class, direction, outcome, host, queue_id, body)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const INSERT_SUBJECT: &str = "INSERT OR IGNORE INTO subjects (value, seq) VALUES (?1, ?2)";
const INSERT_TRANSIT: &str = "INSERT OR IGNORE INTO transit
    (queue_id, seq, event_id, host, state, since, acknowledged_at, removed_at, remote, sent,
     bounced, alerts)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// At most ?2 events expired by ?1, the oldest expiry first.
const EXPIRED_SQL: &str = "SELECT seq, queue_id, body FROM events
    WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2";

/// The events one of whose subjects is in (#), oldest first.
const MATCHING_SQL: &str = "SELECT seq, queue_id, body FROM events
    WHERE seq IN (SELECT seq FROM subjects WHERE value IN (#)) ORDER BY time, seq";

const DELETE_SUBJECT: &str = "DELETE FROM subjects WHERE value = ?1 AND seq = ?2";
/// Only where an event's body cannot be read: the subjects are then found by a scan.
const DELETE_SUBJECTS_BY_SCAN: &str = "DELETE FROM subjects WHERE seq = ?1";
const DELETE_DELIVERIES: &str = "DELETE FROM deliveries WHERE seq = ?1";
const DELETE_TRANSIT: &str = "DELETE FROM transit WHERE queue_id = ?1 AND seq = ?2";
const DELETE_EVENT: &str = "DELETE FROM events WHERE seq = ?1";

/// The events with ?1 <= time < ?2, oldest first.
const EXPORT_SQL: &str =
    "SELECT body FROM events WHERE time >= ?1 AND time < ?2 ORDER BY time, seq";

/// A transit record's columns.
const TRANSIT_COLUMNS: &str = "queue_id, host, state, since, acknowledged_at, removed_at,
    remote, sent, bounced, alerts, event_id, seq";

/// The transit record of queue id ?1: the latest still open, else the latest.
fn transit_by_queue_id_sql() -> String {
    format!(
        "SELECT {TRANSIT_COLUMNS} FROM transit WHERE queue_id = ?1
         ORDER BY state IN ('pending', 'deferred', 'acknowledged') DESC, seq DESC LIMIT 1"
    )
}

/// The messages still in the queue accepted before ?1, oldest first (`transit_open`).
fn open_transits_sql() -> String {
    format!(
        "SELECT {TRANSIT_COLUMNS} FROM transit
         WHERE state IN ('pending', 'deferred', 'acknowledged') AND since < ?1
         ORDER BY since, seq"
    )
}

/// Every transit record in the states (#) accepted before ?1, oldest first. Settled ones
/// have no index of their own: listing them reads the table (a command, never the mail's
/// path).
fn transits_sql() -> String {
    format!(
        "SELECT {TRANSIT_COLUMNS} FROM transit
         WHERE state IN (#) AND since < ?1 ORDER BY since, seq"
    )
}

/// The transit record of the event ?2 filed under queue id ?1.
fn transit_of_event_sql() -> String {
    format!("SELECT {TRANSIT_COLUMNS} FROM transit WHERE queue_id = ?1 AND event_id = ?2")
}

const UPDATE_TRANSIT: &str = "UPDATE transit SET queue_id = ?3, state = ?4,
    acknowledged_at = ?5, removed_at = ?6, sent = ?7, bounced = ?8, alerts = ?9
    WHERE queue_id = ?1 AND seq = ?2";
/// `postsuper -r` gave the message a new queue id: the event's row follows, so that purge and
/// erasure find its transit record.
const REQUEUED_EVENT: &str = "UPDATE events SET queue_id = ?2 WHERE seq = ?1";
const INSERT_DELIVERY: &str =
    "INSERT OR IGNORE INTO deliveries (seq, id, time, body) VALUES (?1, ?2, ?3, ?4)";
const DELIVERIES_SQL: &str = "SELECT body FROM deliveries WHERE seq = ?1 ORDER BY time, id";

/// How long a connection waits for another one's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to the ledger.
pub struct Db {
    conn: Connection,
    /// The ledger's file, named in every error.
    path: PathBuf,
}

/// Switches to WAL mode; returns the mode SQLite kept where WAL cannot work (no shared
/// memory, as on some network file systems): the daemon's syncs rely on the WAL.
fn use_wal(conn: &Connection) -> rusqlite::Result<std::result::Result<(), String>> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    Ok(if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(mode)
    })
}

impl Db {
    /// Opens (creating and migrating) the ledger with every commit fsynced.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Synchronous::Full)
    }

    pub fn open_with(path: &Path, synchronous: Synchronous) -> Result<Self> {
        // SQLite would create the file with the umask's mode (and its -wal and -shm files
        // with the same mode as the ledger): events are personal data, so start at 0640.
        // An existing ledger keeps the mode its operator gave it.
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(path)
        {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(StoreError::io(path, e));
            }
        }
        let failed = |e: rusqlite::Error| {
            match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ReadOnly) => StoreError::ReadOnly {
                path: path.to_path_buf(),
                source: e,
            },
            Some(rusqlite::ErrorCode::NotADatabase) => StoreError::Damaged {
                path: path.to_path_buf(),
                what: "it is no SQLite database (damaged, or another file); move it aside (a new one is started) or restore it from a backup".into(),
            },
            _ => StoreError::Sqlite {
                path: path.to_path_buf(),
                source: e,
            },
        }
        };
        let conn = Connection::open(path).map_err(failed)?;
        // WAL lets queries run beside the daemon.
        if let Err(mode) = use_wal(&conn).map_err(failed)? {
            return Err(StoreError::NoWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut db = Self {
            conn,
            path: path.to_path_buf(),
        };
        db.setup(synchronous).map_err(failed)?;
        Ok(db)
    }

    fn setup(&mut self, synchronous: Synchronous) -> rusqlite::Result<()> {
        self.conn
            .pragma_update(None, "synchronous", synchronous.as_str())?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        // What is deleted (purged, erased) is overwritten with zeros, not left in free space.
        self.conn.pragma_update(None, "secure_delete", "ON")?;
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        let version: usize = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for next in version + 1..=VERSION {
            let tx = self.conn.transaction()?;
            match next {
                1 => tx.execute_batch(V1)?,
                2 => migrate_v2(&tx)?,
                _ => unreachable!("no migration to version {next}"),
            }
            tx.pragma_update(None, "user_version", next)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// SQLite's quick check of the whole file: a damaged ledger is named, not written to.
    pub fn quick_check(&self) -> Result<()> {
        let result: String = self.sql(
            self.conn
                .query_row("PRAGMA quick_check(1)", [], |r| r.get(0)),
        )?;
        if result == "ok" {
            return Ok(());
        }
        Err(StoreError::Damaged {
            path: self.path.clone(),
            what: format!(
                "SQLite finds the ledger damaged ({result}); move it aside (a new one is started) or restore it from a backup"
            ),
        })
    }

    /// Refuses a ledger this connection may only read: SQLite opens a file it may not write
    /// read-only, without a word, and only the first write would tell.
    pub fn check_writable(&mut self) -> Result<()> {
        let read_only = self.sql(self.conn.is_readonly(rusqlite::MAIN_DB))?;
        if read_only {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                    Some("SQLite opened it read-only".into()),
                ),
            });
        }
        Ok(())
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names the ledger's file in an error of SQLite's.
    fn sql<T>(&self, result: rusqlite::Result<T>) -> Result<T> {
        result.map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Stores a batch in one transaction; an event already stored (same id) is left as is.
    pub fn insert(&mut self, events: &[Event]) -> Result<()> {
        self.insert_then(events, || ())
    }

    /// [`Db::insert`], calling `locked` before the commit, while this connection holds
    /// SQLite's write lock: no other connection appends to the WAL meanwhile.
    pub fn insert_then(&mut self, events: &[Event], locked: impl FnOnce()) -> Result<()> {
        let result = insert(&mut self.conn, events, locked);
        self.sql(result)
    }

    /// Calls `locked` while this connection holds SQLite's write lock (an empty write
    /// transaction).
    pub fn with_write_lock<T>(&mut self, locked: impl FnOnce() -> T) -> Result<T> {
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = locked();
            tx.commit()?;
            Ok(out)
        })();
        self.sql(result)
    }

    /// The size of the database's pages, and of the WAL's frames less their header.
    pub fn page_size(&self) -> Result<u64> {
        self.sql(
            self.conn
                .pragma_query_value(None, "page_size", |r| r.get(0)),
        )
    }

    /// Leaves checkpoints to [`Db::checkpoint`] calls: no commit then pays for one.
    pub fn disable_autocheckpoint(&self) -> Result<()> {
        self.sql(self.conn.pragma_update(None, "wal_autocheckpoint", 0))
    }

    /// Copies what the WAL holds into the database file without blocking the writer or
    /// readers (a passive checkpoint); returns the WAL's size in frames at the time.
    pub fn checkpoint(&self) -> Result<i64> {
        self.sql(
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)),
        )
    }

    /// Copies the whole WAL into the database file and truncates the WAL to nothing, waiting
    /// at most `patience` for other connections; false if they kept it busy. Until then the
    /// WAL holds the pages as they were before events were deleted (and as the WAL is
    /// reused, not rewritten, for as long as the ledger stays open).
    pub fn truncate_wal(&self, patience: Duration) -> Result<bool> {
        let result = (|| {
            self.conn.busy_timeout(patience)?;
            let busy = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                });
            self.conn.busy_timeout(BUSY_TIMEOUT)?;
            Ok(busy? == 0)
        })();
        self.sql(result)
    }

    /// Deletes at most `limit` expired events, oldest expiry first, with their subjects,
    /// transit records and deliveries, in one transaction; returns how many.
    pub fn purge_some(&mut self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let expired = rows(&tx, EXPIRED_SQL, params![stamp(now), limit as i64])?;
            delete(&tx, &expired)?;
            tx.commit()?;
            Ok(expired.len())
        })();
        self.sql(result)
    }

    /// [`MATCHING_SQL`] for `filter`, and its parameters.
    fn matching_sql(filter: &Filter) -> (String, Vec<String>) {
        let values = filter.subject_values();
        let marks = (1..=values.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        (MATCHING_SQL.replace('#', &marks), values)
    }

    /// The events matching `filter`, oldest first.
    pub fn find(&self, filter: &Filter) -> Result<Vec<Event>> {
        let (sql, values) = Self::matching_sql(filter);
        let result = rows(&self.conn, &sql, rusqlite::params_from_iter(values));
        let found = self.sql(result)?;
        found
            .into_iter()
            .map(|(_, _, body)| self.event(&body))
            .collect()
    }

    /// Deletes the events matching `filter`, with their transit records and deliveries
    /// (their rows zeroed by `secure_delete`); returns how many. Their old copies stay in the
    /// WAL until it is truncated.
    pub fn erase(&mut self, filter: &Filter) -> Result<usize> {
        let (sql, values) = Self::matching_sql(filter);
        let result = (|| {
            let found = rows(&self.conn, &sql, rusqlite::params_from_iter(values))?;
            // In short transactions: the daemon's commits wait for each.
            for chunk in found.chunks(crate::store::PURGE_CHUNK) {
                let tx = self
                    .conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                delete(&tx, chunk)?;
                tx.commit()?;
            }
            Ok(found.len())
        })();
        self.sql(result)
    }

    /// Events with `since <= time < until`, oldest first.
    pub fn export(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>> {
        let since = since.map(stamp).unwrap_or_default();
        let until = until.map(stamp).unwrap_or_else(|| "~".into());
        self.bodies(EXPORT_SQL, params![since, until])
    }

    fn event(&self, body: &str) -> Result<Event> {
        serde_json::from_str(body).map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                Box::new(e),
            ),
        })
    }

    /// The transit record of the message `queue_id` (see [`Store::transit`]).
    ///
    /// [`Store::transit`]: crate::store::Store::transit
    pub fn transit(&self, queue_id: &str) -> Result<Option<Transit>> {
        let result = self
            .conn
            .query_row(&transit_by_queue_id_sql(), [queue_id], transit_from_row)
            .optional();
        Ok(self.sql(result)?.map(|(transit, _)| transit))
    }

    /// Saves changed transit records and new deliveries in one transaction.
    pub fn record_transit(&mut self, transits: &[Transit], deliveries: &[Delivery]) -> Result<()> {
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut update = tx.prepare_cached(UPDATE_TRANSIT)?;
                for t in transits {
                    update.execute(params![
                        t.key.queue_id,
                        t.key.seq,
                        t.queue_id,
                        t.state.as_str(),
                        t.acknowledged_at.map(stamp),
                        t.removed_at.map(stamp),
                        t.sent,
                        t.bounced,
                        t.alerts,
                    ])?;
                    if t.queue_id != t.key.queue_id {
                        tx.execute(REQUEUED_EVENT, params![t.key.seq, t.queue_id])?;
                    }
                }
                let mut insert = tx.prepare_cached(INSERT_DELIVERY)?;
                for (d, seq) in deliveries.iter().filter_map(|d| {
                    let t = transits.iter().find(|t| t.event_id == d.event_id)?;
                    Some((d, t.key.seq))
                }) {
                    insert.execute(params![seq, d.id, d.time, d.to_json()])?;
                }
            }
            tx.commit()
        })();
        self.sql(result)
    }

    /// The transit messages `query` selects, oldest first, with their deliveries.
    pub fn transits(&self, query: &TransitQuery) -> Result<Vec<Lifecycle>> {
        let before = query.since_before.map(stamp).unwrap_or_else(|| "~".into());
        let only_open = query.open_only
            || (!query.states.is_empty() && query.states.iter().all(|s| s.is_open()));
        let (sql, mut values) = if only_open {
            (open_transits_sql(), vec![before])
        } else {
            let states: Vec<String> = State::ALL
                .iter()
                .filter(|s| query.states.is_empty() || query.states.contains(s))
                .map(|s| s.as_str().to_string())
                .collect();
            let marks = (2..states.len() + 2)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut values = vec![before];
            values.extend(states);
            (transits_sql().replace('#', &marks), values)
        };
        let wanted: Vec<State> = query.states.clone();
        let result = (|| {
            let mut stmt = self.conn.prepare(&sql)?;
            let found = stmt
                .query_map(
                    rusqlite::params_from_iter(values.drain(..)),
                    transit_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            found
                .into_iter()
                .filter(|(t, _)| wanted.is_empty() || wanted.contains(&t.state))
                .map(|(transit, seq)| self.lifecycle(transit, seq))
                .collect::<rusqlite::Result<Vec<_>>>()
        })();
        self.sql(result)
    }

    /// The lifecycles of those of `events` that are transit messages.
    pub fn lifecycles(&self, events: &[Event]) -> Result<Vec<Lifecycle>> {
        let result = (|| {
            let mut found = Vec::new();
            for e in events {
                let Some(queue_id) = e.queue_id.as_deref().filter(|_| e.transit) else {
                    continue;
                };
                let row = self
                    .conn
                    .query_row(
                        &transit_of_event_sql(),
                        params![queue_id, e.id.to_string()],
                        transit_from_row,
                    )
                    .optional()?;
                if let Some((transit, seq)) = row {
                    found.push(self.lifecycle(transit, seq)?);
                }
            }
            Ok(found)
        })();
        self.sql(result)
    }

    fn lifecycle(&self, transit: Transit, seq: i64) -> rusqlite::Result<Lifecycle> {
        let mut stmt = self.conn.prepare_cached(DELIVERIES_SQL)?;
        let deliveries = stmt
            .query_map([seq], |r| r.get::<_, String>(0))?
            .map(|body| {
                let body = body?;
                serde_json::from_str(&body).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })
            })
            .collect::<rusqlite::Result<Vec<Delivery>>>()?;
        Ok(Lifecycle {
            transit,
            deliveries,
        })
    }

    fn bodies(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Event>> {
        let result = (|| {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
            rows.map(|body| {
                let body = body?;
                serde_json::from_str(&body).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })
            })
            .collect()
        })();
        self.sql(result)
    }

    pub fn stats(&self) -> Result<Stats> {
        let result = (|| {
            let mut stmt = self.conn.prepare(
                "SELECT class, direction, COUNT(*) FROM events GROUP BY class, direction ORDER BY class, direction",
            )?;
            let counts = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let (total, oldest, next_expiry) = self
                .conn
                .query_row(
                    "SELECT COUNT(*), MIN(time), MIN(expires_at) FROM events",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
                )
                .optional()?
                .unwrap_or((0, None, None));
            Ok(Stats {
                counts,
                total,
                oldest,
                next_expiry,
            })
        })();
        self.sql(result)
    }
}

/// The events of a batch, their subjects and transit records, in one immediate transaction.
fn insert(conn: &mut Connection, events: &[Event], locked: impl FnOnce()) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut event_stmt = tx.prepare_cached(INSERT_EVENT)?;
        let mut subject_stmt = tx.prepare_cached(INSERT_SUBJECT)?;
        let mut transit_stmt = tx.prepare_cached(INSERT_TRANSIT)?;
        for e in events {
            event_stmt.execute(params![
                e.time,
                e.retention.expires_at,
                e.retention.class,
                e.direction.as_str(),
                e.outcome.as_str(),
                e.host,
                e.queue_id,
                e.to_json(),
            ])?;
            let seq = tx.last_insert_rowid();
            for value in subjects(e) {
                subject_stmt.execute(params![value, seq])?;
            }
            if let Some(t) = transit_of(e) {
                transit_stmt.execute(params![
                    t.queue_id,
                    seq,
                    t.event_id.to_string(),
                    t.host,
                    t.state.as_str(),
                    stamp(t.since),
                    t.acknowledged_at.map(stamp),
                    t.removed_at.map(stamp),
                    t.remote,
                    t.sent,
                    t.bounced,
                    t.alerts,
                ])?;
            }
        }
    }
    locked();
    tx.commit()
}

/// An event as deletion needs it: its row, the queue id its transit record is filed
/// under, and its body (for its subjects).
type Row = (i64, Option<String>, String);

/// The events a query of `(seq, queue_id, body)` finds.
fn rows(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare(sql)?;
    let found = stmt
        .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect();
    found
}

/// Deletes events and everything that hangs on them.
fn delete(tx: &rusqlite::Transaction<'_>, events: &[Row]) -> rusqlite::Result<()> {
    let mut subject = tx.prepare_cached(DELETE_SUBJECT)?;
    for (seq, queue_id, body) in events {
        match serde_json::from_str::<Event>(body) {
            Ok(event) => {
                for value in subjects(&event) {
                    subject.execute(params![value, seq])?;
                }
            }
            Err(_) => {
                tx.execute(DELETE_SUBJECTS_BY_SCAN, [seq])?;
            }
        }
        tx.execute(DELETE_DELIVERIES, [seq])?;
        if let Some(queue_id) = queue_id {
            tx.execute(DELETE_TRANSIT, params![queue_id, seq])?;
        }
        tx.execute(DELETE_EVENT, [seq])?;
    }
    Ok(())
}

/// A transit record and its event's `seq` from a row of [`TRANSIT_COLUMNS`].
fn transit_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Transit, i64)> {
    let time = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        let text: Option<String> = r.get(i)?;
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })
        })
        .transpose()
    };
    let state: String = r.get(2)?;
    let id: String = r.get(10)?;
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let queue_id: String = r.get(0)?;
    let seq: i64 = r.get(11)?;
    Ok((
        Transit {
            key: crate::transit::StoreKey {
                seq,
                queue_id: queue_id.clone(),
            },
            event_id: id
                .parse()
                .map_err(|e: uuid::Error| bad(10, e.to_string()))?,
            queue_id,
            host: r.get(1)?,
            state: state.parse().map_err(|e| bad(2, e))?,
            since: time(3)?.ok_or_else(|| bad(3, "no time".into()))?,
            acknowledged_at: time(4)?,
            removed_at: time(5)?,
            remote: r.get(6)?,
            sent: r.get(7)?,
            bounced: r.get(8)?,
            alerts: r.get(9)?,
        },
        seq,
    ))
}

/// Version 2: the new tables; every event moved over with its subjects computed from its body
/// exactly as a new event's are; the old tables dropped. No transit records are made for the
/// events of before: nothing tracked them.
fn migrate_v2(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(V2)?;
    tx.execute(
        "INSERT INTO events_v2 (time, expires_at, class, direction, outcome, host, queue_id, body)
         SELECT time, expires_at, class, direction, outcome, host,
                json_extract(body, '$.queue_id'), body
         FROM events ORDER BY time, id",
        [],
    )?;
    {
        let mut moved = tx.prepare("SELECT seq, body FROM events_v2")?;
        let mut subject = tx.prepare(INSERT_SUBJECT)?;
        let mut found = moved.query([])?;
        while let Some(row) = found.next()? {
            let seq: i64 = row.get(0)?;
            let body: String = row.get(1)?;
            if let Ok(event) = serde_json::from_str::<Event>(&body) {
                for value in subjects(&event) {
                    subject.execute(params![value, seq])?;
                }
            }
        }
    }
    tx.execute_batch(V2_FINISH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lookup of a person's data, every purge, erasure, export and transit lookup finds
    /// its rows through an index: the ledger may hold months of mail. (Only `stats` counts the
    /// whole table, and a body that cannot be read has its subjects found by a scan.)
    #[test]
    fn every_lookup_uses_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Db::open(&dir.path().join("ledger.sqlite")).unwrap();
        let two = vec!["a".to_string(), "b".to_string()];
        let filters = [
            Filter::Ip(two.clone()),
            Filter::Address(two.clone()),
            Filter::Domain(two),
        ];
        let mut statements: Vec<String> = [
            EXPIRED_SQL,
            EXPORT_SQL,
            DELETE_SUBJECT,
            DELETE_DELIVERIES,
            DELETE_TRANSIT,
            DELETE_EVENT,
            UPDATE_TRANSIT,
            REQUEUED_EVENT,
            DELIVERIES_SQL,
        ]
        .map(String::from)
        .to_vec();
        statements.push(transit_by_queue_id_sql());
        statements.push(transit_of_event_sql());
        statements.push(open_transits_sql());
        for filter in &filters {
            statements.push(Db::matching_sql(filter).0);
        }
        for sql in statements {
            assert_searches(&ledger.conn, &sql);
        }
    }

    /// Asserts that SQLite's plan for `sql` searches an index and scans no table.
    pub(super) fn assert_searches(conn: &Connection, sql: &str) {
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

    /// Without shared memory (here SQLite's `unix-none` VFS) SQLite silently keeps its
    /// rollback journal; the ledger refuses to open rather than run without its WAL.
    #[test]
    fn a_file_system_without_wal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_with_flags_and_vfs(
            dir.path().join("ledger.sqlite"),
            rusqlite::OpenFlags::default(),
            "unix-none",
        )
        .unwrap();
        assert_eq!(use_wal(&conn).unwrap(), Err("delete".to_string()));
        let ok = Connection::open(dir.path().join("other.sqlite")).unwrap();
        assert_eq!(use_wal(&ok).unwrap(), Ok(()));
    }

    /// A version 1 ledger, as the code of before wrote it, with `events`.
    fn v1_ledger(path: &Path, events: &[Event]) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for e in events {
            conn.execute(
                "INSERT INTO events (id, time, expires_at, class, direction, outcome, host,
                     client_ip, sender_address, sender_domain, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    e.id.to_string(),
                    e.time,
                    e.retention.expires_at,
                    e.retention.class,
                    e.direction.as_str(),
                    e.outcome.as_str(),
                    e.host,
                    e.client.ip,
                    e.sender.address,
                    e.sender.domain,
                    e.to_json()
                ],
            )
            .unwrap();
            for r in &e.recipients {
                conn.execute(
                    "INSERT INTO recipients (event_id, address, domain) VALUES (?1, ?2, ?3)",
                    params![e.id.to_string(), r.address.address, r.address.domain],
                )
                .unwrap();
            }
        }
    }

    /// An existing ledger moves to version 2 at open, every event findable as before.
    #[test]
    fn version_1_ledgers_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let mut old = crate::event::sample("4Old", "eve@remote.example");
        old.retention.expires_at = "2000-01-01T00:00:00.000Z".into();
        let kept = crate::event::sample("4Kept", "bob@other.example");
        v1_ledger(&path, &[old.clone(), kept.clone()]);

        let mut db = Db::open(&path).unwrap();
        let version: usize = db
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        let tables: Vec<String> = db
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(tables, ["deliveries", "events", "subjects", "transit"]);
        let found = |db: &Db, f: Filter| -> Vec<String> {
            db.find(&f)
                .unwrap()
                .into_iter()
                .map(|e| e.queue_id.unwrap())
                .collect()
        };
        assert_eq!(
            found(&db, Filter::Address(vec!["eve@remote.example".into()])),
            ["4Old"]
        );
        assert_eq!(
            found(&db, Filter::Domain(vec!["other.example".into()])),
            ["4Kept"]
        );
        assert_eq!(
            found(&db, Filter::Ip(vec!["198.51.100.0/24".into()])),
            ["4Old", "4Kept"]
        );
        assert_eq!(
            found(&db, Filter::Domain(vec!["example.org".into()])).len(),
            2,
            "recipients"
        );
        assert_eq!(db.export(None, None).unwrap(), [old, kept.clone()]);
        assert_eq!(db.purge_some(chrono::Utc::now(), 500).unwrap(), 1);
        let left: i64 = db
            .conn
            .query_row("SELECT count(*) FROM subjects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            left as usize,
            subjects(&kept).len(),
            "the purged event's subjects went"
        );
    }

    fn transit_event(queue_id: &str, remote: usize) -> Event {
        let mut e = crate::event::sample(queue_id, "alice@example.org");
        e.transit = true;
        e.direction = crate::classify::Direction::Outbound;
        let template = e.recipients[0].clone();
        e.recipients = (0..remote)
            .map(|_| crate::event::RecipientView {
                local: false,
                ..template.clone()
            })
            .collect();
        e
    }

    /// A transit message gets its record when its event is written; tracking changes it and
    /// adds deliveries; erasure and purge take them with the event.
    #[test]
    fn transit_records_live_and_die_with_their_event() {
        use crate::transit::{Status, Step};
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("ledger.sqlite")).unwrap();
        let local_only = crate::event::sample("4Local", "x@remote.example");
        let event = transit_event("4Out", 2);
        db.insert(&[local_only, event.clone()]).unwrap();
        assert_eq!(db.transit("4Local").unwrap(), None, "a local-only message");
        let mut t = db.transit("4Out").unwrap().unwrap();
        assert_eq!(
            (t.state, t.remote, t.event_id),
            (State::Pending, 2, event.id)
        );

        let now = chrono::Utc::now();
        t.apply(
            Step::Delivery {
                status: Status::Sent,
                at: now,
            },
            true,
        );
        let delivery = Delivery {
            schema: crate::transit::DELIVERY_SCHEMA.into(),
            id: "line-1".into(),
            time: stamp(now),
            host: event.host.clone(),
            queue_id: "4Out".into(),
            event_id: event.id,
            recipient: event.recipients[0].address.clone(),
            relay: Some("192.0.2.0/24".into()),
            status: Status::Sent,
            dsn: Some("2.0.0".into()),
            remote_queue_id: Some("4Next".into()),
            delay: Some(0.2),
        };
        // The same line recorded twice (a restart) is kept once.
        db.record_transit(std::slice::from_ref(&t), std::slice::from_ref(&delivery))
            .unwrap();
        db.record_transit(std::slice::from_ref(&t), std::slice::from_ref(&delivery))
            .unwrap();
        let listed = db
            .transits(&TransitQuery {
                states: vec![State::Pending],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].transit, t);
        assert_eq!(listed[0].deliveries, [delivery]);
        assert!(db
            .transits(&TransitQuery {
                states: vec![State::Removed],
                ..Default::default()
            })
            .unwrap()
            .is_empty());
        assert_eq!(
            db.lifecycles(std::slice::from_ref(&event)).unwrap().len(),
            1
        );

        let erased = db
            .erase(&Filter::Address(vec!["alice@example.org".into()]))
            .unwrap();
        assert_eq!(erased, 1);
        for (table, left) in [("transit", 0), ("deliveries", 0), ("events", 1)] {
            let n: i64 = db
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, left, "{table}");
        }
        assert!(db
            .find(&Filter::Address(vec!["alice@example.org".into()]))
            .unwrap()
            .is_empty());
    }
}
