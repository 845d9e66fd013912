//! The ledger's SQLite database: schema, migrations and every query. Each event is kept
//! whole as JSON; the columns beside it exist for the indexes that expiry, search and
//! statistics need. The schema is versioned with `PRAGMA user_version` and migrated at open.

use crate::{
    config::Synchronous,
    event::{stamp, Event},
    store::{Filter, Result, Stats, StoreError},
};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use std::{
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

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
        let failed = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
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
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
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

    /// Deletes at most `limit` expired events, oldest expiry first, in one transaction;
    /// returns how many.
    pub fn purge_some(&mut self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        self.sql(
            self.conn
                .execute(PURGE_SQL, params![stamp(now), limit as i64]),
        )
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

    /// Deletes the events matching `filter` (their rows zeroed by `secure_delete`); returns
    /// how many. Their old copies stay in the WAL until it is truncated.
    pub fn erase(&mut self, filter: &Filter) -> Result<usize> {
        let (sql, values) = Self::erase_sql(filter);
        self.sql(self.conn.execute(&sql, rusqlite::params_from_iter(values)))
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

/// The events of a batch and their recipients, in one immediate transaction.
fn insert(conn: &mut Connection, events: &[Event], locked: impl FnOnce()) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
                e.outcome.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lookup of a person's data, every purge and export finds its rows through an index:
    /// the ledger may hold months of mail. (Only `stats` counts the whole table.)
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
        let mut statements: Vec<String> = vec![PURGE_SQL.into(), EXPORT_SQL.into()];
        for filter in &filters {
            statements.push(Db::find_sql(filter).0);
            statements.push(Db::erase_sql(filter).0);
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
                .collect::<rusqlite::Result<_>>()
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
        assert_eq!(use_wal(&conn).unwrap(), Err("delete".to_string()));
        let ok = Connection::open(dir.path().join("other.sqlite")).unwrap();
        assert_eq!(use_wal(&ok).unwrap(), Ok(()));
    }
}
