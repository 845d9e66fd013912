//! The retention ledger: events in SQLite, each with its retention class and expiry, purged
//! when they expire, and searchable for an access or erasure request.
//!
//! The full event is kept as JSON; the columns beside it exist for the indexes that expiry,
//! search and statistics need. The schema is versioned with `PRAGMA user_version` and
//! migrated at open.

use crate::{config::Synchronous, event::Event};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use std::{os::unix::fs::OpenOptionsExt, path::Path};

pub mod commands;
pub mod postgres;

pub type Result<T> = rusqlite::Result<T>;

/// An error of any ledger backend.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// What the `ledger` commands need of a backend: the SQLite [`Ledger`] or PostgreSQL's
/// [`postgres::PgLedger`].
pub trait Store {
    fn insert(&mut self, events: &[Event]) -> std::result::Result<(), StoreError>;
    fn purge(&mut self, now: DateTime<Utc>) -> std::result::Result<usize, StoreError>;
    fn find(&mut self, filter: &Filter) -> std::result::Result<Vec<Event>, StoreError>;
    fn erase(&mut self, filter: &Filter) -> std::result::Result<usize, StoreError>;
    fn export(
        &mut self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> std::result::Result<Vec<Event>, StoreError>;
    fn stats(&mut self) -> std::result::Result<Stats, StoreError>;
}

impl Store for Ledger {
    fn insert(&mut self, events: &[Event]) -> std::result::Result<(), StoreError> {
        Ok(Ledger::insert(self, events)?)
    }
    fn purge(&mut self, now: DateTime<Utc>) -> std::result::Result<usize, StoreError> {
        Ok(Ledger::purge(self, now)?)
    }
    fn find(&mut self, filter: &Filter) -> std::result::Result<Vec<Event>, StoreError> {
        Ok(Ledger::find(self, filter)?)
    }
    fn erase(&mut self, filter: &Filter) -> std::result::Result<usize, StoreError> {
        Ok(Ledger::erase(self, filter)?)
    }
    fn export(
        &mut self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> std::result::Result<Vec<Event>, StoreError> {
        Ok(Ledger::export(self, since, until)?)
    }
    fn stats(&mut self) -> std::result::Result<Stats, StoreError> {
        Ok(Ledger::stats(self)?)
    }
}

/// Each entry migrates the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &["
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
"];

/// At most ?2 events expired by ?1, the oldest expiry first.
const PURGE_SQL: &str = "DELETE FROM events WHERE id IN
    (SELECT id FROM events WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)";

/// The events with ?1 <= time < ?2, oldest first.
const EXPORT_SQL: &str = "SELECT body FROM events WHERE time >= ?1 AND time < ?2 ORDER BY time, id";

/// Most events deleted in one purge transaction.
pub const PURGE_CHUNK: usize = 500;

/// What to look for: values as the ledger holds them, already pseudonymised by policy
/// (several when HMACs were made under several keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    Ip(Vec<String>),
    Address(Vec<String>),
    Domain(Vec<String>),
}

impl Filter {
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

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// (class, direction, count), sorted.
    pub counts: Vec<(String, String, u64)>,
    pub total: u64,
    pub oldest: Option<String>,
    pub next_expiry: Option<String>,
}

pub struct Ledger {
    conn: Connection,
}

/// How long a connection waits for another one's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The error of a deletion whose WAL could not be truncated.
fn still_in_the_wal(done: String, command: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some(format!(
            "{done}, but the write-ahead log still holds copies of them: the ledger was too busy to truncate it; run {command} again"
        )),
    )
}

/// Switches to WAL mode. SQLite keeps the old mode where WAL cannot work (no shared memory,
/// as on some network file systems); the daemon's syncs rely on the WAL, so that is an error.
fn use_wal(conn: &Connection) -> Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
        Some(format!(
            "SQLite cannot keep a write-ahead log here (the journal mode stays {mode}); put the ledger on a local file system"
        )),
    ))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Ledger {
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
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(e.to_string()),
                ));
            }
        }
        let conn = Connection::open(path)?;
        // WAL lets queries run beside the daemon; FULL makes every commit durable.
        use_wal(&conn)?;
        conn.pragma_update(None, "synchronous", synchronous.as_str())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // What is deleted (purged, erased) is overwritten with zeros, not left in free space.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mut ledger = Self { conn };
        ledger.migrate()?;
        Ok(ledger)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: usize = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Stores a batch in one transaction; an event already stored (same id) is left as is.
    pub fn insert(&mut self, events: &[Event]) -> Result<()> {
        self.insert_then(events, || ())
    }

    /// [`Ledger::insert`], calling `locked` before the commit, while this connection holds
    /// SQLite's write lock: no other connection appends to the WAL meanwhile.
    pub fn insert_then(&mut self, events: &[Event], locked: impl FnOnce()) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut event_stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO events (id, time, expires_at, class, direction, outcome, host,
                     client_ip, sender_address, sender_domain, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut rcpt_stmt = tx.prepare_cached(
                "INSERT INTO recipients (event_id, address, domain) VALUES (?1, ?2, ?3)",
            )?;
            for e in events {
                let inserted = event_stmt.execute(params![
                    e.id.to_string(),
                    e.time,
                    e.retention.expires_at,
                    e.retention.class,
                    e.direction.as_str(),
                    serde_json::to_value(e.outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from)),
                    e.host,
                    e.client.ip,
                    e.sender.address,
                    e.sender.domain,
                    e.to_json(),
                ])?;
                if inserted == 1 {
                    for r in &e.recipients {
                        rcpt_stmt.execute(params![
                            e.id.to_string(),
                            r.address.address,
                            r.address.domain
                        ])?;
                    }
                }
            }
        }
        locked();
        tx.commit()
    }

    /// Calls `locked` while this connection holds SQLite's write lock (an empty write
    /// transaction).
    pub fn with_write_lock<T>(&mut self, locked: impl FnOnce() -> T) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = locked();
        tx.commit()?;
        Ok(out)
    }

    /// The size of the database's pages, and of the WAL's frames less their header.
    pub fn page_size(&self) -> Result<u64> {
        self.conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
    }

    /// Leaves checkpoints to [`Ledger::checkpoint`] calls: no commit then pays for one.
    pub fn disable_autocheckpoint(&self) -> Result<()> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)
    }

    /// Copies what the WAL holds into the database file without blocking the writer or
    /// readers (a passive checkpoint); returns the WAL's size in frames at the time.
    pub fn checkpoint(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
    }

    /// Copies the whole WAL into the database file and truncates the WAL to nothing. Until
    /// then it holds the pages as they were before events were deleted (and as the WAL is
    /// reused, not rewritten, for as long as the ledger stays open). Waits up to the busy
    /// timeout for other connections; false if they kept it busy.
    pub fn truncate_wal(&self) -> Result<bool> {
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        Ok(busy == 0)
    }

    /// [`Ledger::truncate_wal`], waiting at most `patience` for other connections.
    pub fn truncate_wal_within(&self, patience: std::time::Duration) -> Result<bool> {
        self.conn.busy_timeout(patience)?;
        let truncated = self.truncate_wal();
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        truncated
    }

    /// Deletes every event whose expiry has passed, and their old copies in the WAL;
    /// returns how many.
    pub fn purge(&mut self, now: DateTime<Utc>) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.purge_some(now, PURGE_CHUNK)?;
            total += n;
            if n < PURGE_CHUNK {
                break;
            }
        }
        if !self.truncate_wal()? {
            return Err(still_in_the_wal(
                format!("purged {total} expired events"),
                "purge",
            ));
        }
        Ok(total)
    }

    /// Deletes at most `limit` expired events, oldest expiry first, in one transaction;
    /// returns how many. The daemon purges in such steps so that a large backlog never
    /// holds up the events of messages waiting for their answer.
    pub fn purge_some(&mut self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        self.conn
            .execute(PURGE_SQL, params![stamp(now), limit as i64])
    }

    /// A subquery for the ids of the matching events, and its parameters.
    fn matching_ids_sql(filter: &Filter) -> (String, &[String]) {
        let (values, template) = match filter {
            Filter::Ip(v) => (v, "SELECT id FROM events WHERE client_ip IN (#)"),
            Filter::Address(v) => (
                v,
                "SELECT id FROM events WHERE sender_address IN (#)
                 UNION SELECT event_id FROM recipients WHERE address IN (#)",
            ),
            Filter::Domain(v) => (
                v,
                "SELECT id FROM events WHERE sender_domain IN (#)
                 UNION SELECT event_id FROM recipients WHERE domain IN (#)",
            ),
        };
        let marks = (1..=values.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        (template.replace('#', &marks), values.as_slice())
    }

    fn find_sql(filter: &Filter) -> (String, &[String]) {
        let (ids, values) = Self::matching_ids_sql(filter);
        let sql = format!("SELECT body FROM events WHERE id IN ({ids}) ORDER BY time, id");
        (sql, values)
    }

    fn erase_sql(filter: &Filter) -> (String, &[String]) {
        let (ids, values) = Self::matching_ids_sql(filter);
        (format!("DELETE FROM events WHERE id IN ({ids})"), values)
    }

    /// The events matching `filter`, oldest first.
    pub fn find(&self, filter: &Filter) -> Result<Vec<Event>> {
        let (sql, values) = Self::find_sql(filter);
        self.bodies(&sql, rusqlite::params_from_iter(values))
    }

    /// Deletes the events matching `filter`; returns how many.
    ///
    /// Erasure means the bytes go too: deleted rows are zeroed (`secure_delete`), and the WAL,
    /// which still holds the pages as they were, is copied into the database and truncated.
    pub fn erase(&mut self, filter: &Filter) -> Result<usize> {
        let (sql, values) = Self::erase_sql(filter);
        let erased = self
            .conn
            .execute(&sql, rusqlite::params_from_iter(values))?;
        // Waits (busy timeout) for the daemon's commit in progress, if any.
        if !self.truncate_wal()? {
            return Err(still_in_the_wal(format!("erased {erased} events"), "erase"));
        }
        Ok(erased)
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

    fn bodies(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Event>> {
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
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut stmt = self.conn.prepare(
            "SELECT class, direction, COUNT(*) FROM events GROUP BY class, direction ORDER BY class, direction",
        )?;
        let counts = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })?
            .collect::<Result<Vec<_>>>()?;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sample;

    fn file_bytes(dir: &Path) -> String {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Every lookup of a person's data, every purge and export finds its rows through an index:
    /// the ledger may hold months of mail. (Only `stats` counts the whole table.)
    #[test]
    fn every_lookup_uses_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        let two = vec!["a".to_string(), "b".to_string()];
        let filters = [
            Filter::Ip(two.clone()),
            Filter::Address(two.clone()),
            Filter::Domain(two),
        ];
        let mut statements: Vec<String> = vec![PURGE_SQL.into(), EXPORT_SQL.into()];
        for filter in &filters {
            statements.push(Ledger::find_sql(filter).0);
            statements.push(Ledger::erase_sql(filter).0);
        }
        for sql in statements {
            let mut stmt = ledger
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let plan: Vec<String> = stmt
                .query_map(
                    rusqlite::params_from_iter(std::iter::repeat_n("x", stmt.parameter_count())),
                    |r| r.get(3),
                )
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            assert!(
                plan.iter().any(|step| step.starts_with("SEARCH"))
                    && !plan.iter().any(|step| step.starts_with("SCAN")),
                "{sql}\n{plan:#?}"
            );
        }
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
        let error = use_wal(&conn).unwrap_err().to_string();
        assert!(error.contains("journal mode stays delete"), "{error}");
        let ok = Connection::open(dir.path().join("other.sqlite")).unwrap();
        use_wal(&ok).unwrap();
    }

    /// The WAL still holds the pages as they were before the erasure (no checkpoint has run
    /// yet here), and free pages what was deleted: erase must clear both.
    #[test]
    fn erase_leaves_no_bytes_of_the_subject() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        ledger
            .insert(&[
                sample("4Eve1", "eve@remote.example"),
                sample("4Bob", "bob@remote.example"),
                sample("4Eve2", "eve@remote.example"),
            ])
            .unwrap();
        assert!(file_bytes(dir.path()).contains("eve@remote.example"));
        let erased = ledger
            .erase(&Filter::Address(vec!["eve@remote.example".into()]))
            .unwrap();
        assert_eq!(erased, 2);
        let left = file_bytes(dir.path());
        for gone in ["eve@remote.example", "4Eve1", "4Eve2"] {
            assert!(!left.contains(gone), "the ledger files still hold {gone}");
        }
        assert!(left.contains("4Bob"));
    }
}
