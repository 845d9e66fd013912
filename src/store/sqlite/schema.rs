//! The SQLite ledger's tables, and how a connection is opened onto them. Each event is kept
//! whole as JSON; the columns beside it exist for the indexes that expiry, export and
//! statistics need, and `subjects` holds, per event, the values an access or erasure request
//! looks it up by. The schema is versioned with `PRAGMA user_version` and migrated at open.

use super::named;
use crate::{
    config::Synchronous,
    event::Event,
    store::{subjects, Result, StoreError},
};
use rusqlite::{params, Connection};
use std::{os::unix::fs::OpenOptionsExt, path::Path, time::Duration};

/// The first schema: the columns of each lookup, with an index each.
pub(super) const V1: &str = "
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
pub(super) const VERSION: usize = 2;

/// How long a connection waits for another one's lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Opens (creating and migrating) the ledger at `path`.
pub(super) fn open(path: &Path, synchronous: Synchronous) -> Result<Connection> {
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
    let mut conn = Connection::open(path).map_err(failed)?;
    // WAL lets queries run beside the daemon.
    if let Err(mode) = use_wal(&conn).map_err(failed)? {
        return Err(StoreError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    setup(&mut conn, synchronous).map_err(failed)?;
    Ok(conn)
}

fn setup(conn: &mut Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", synchronous.as_str())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // What is deleted (purged, erased) is overwritten with zeros, not left in free space.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for next in version + 1..=VERSION {
        let tx = conn.transaction()?;
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
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let result: String = named(
        path,
        conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)),
    )?;
    if result == "ok" {
        return Ok(());
    }
    Err(StoreError::Damaged {
        path: path.to_path_buf(),
        what: format!(
            "SQLite finds the ledger damaged ({result}); move it aside (a new one is started) or restore it from a backup"
        ),
    })
}

/// Refuses a ledger this connection may only read: SQLite opens a file it may not write
/// read-only, without a word, and only the first write would tell. The file's own permissions
/// are asked too: a connection in a process that already has the file open may reuse a
/// descriptor opened for writing before the file was made read-only, and the next (the
/// checkpointer's) would not.
pub(super) fn check_writable(conn: &Connection, path: &Path) -> Result<()> {
    let read_only = |why: String| StoreError::ReadOnly {
        path: path.to_path_buf(),
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            Some(why),
        ),
    };
    if named(path, conn.is_readonly(rusqlite::MAIN_DB))? {
        return Err(read_only("SQLite opened it read-only".into()));
    }
    match nix::unistd::eaccess(path, nix::unistd::AccessFlags::W_OK) {
        Err(e @ (nix::errno::Errno::EACCES | nix::errno::Errno::EROFS)) => {
            Err(read_only(format!("the file is not writable: {}", e.desc())))
        }
        _ => Ok(()),
    }
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
        let mut subject = tx.prepare(super::events::INSERT_SUBJECT)?;
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
    use crate::store::{sqlite::SqliteLedger, Filter, Ledger, Sink};

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

        let mut ledger = SqliteLedger::for_commands(&path).unwrap();
        let version: usize = ledger
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        let tables: Vec<String> = ledger
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(tables, ["deliveries", "events", "subjects", "transit"]);
        let mut found = |f: Filter| -> Vec<String> {
            ledger
                .find(&f)
                .unwrap()
                .into_iter()
                .map(|e| e.queue_id.unwrap())
                .collect()
        };
        assert_eq!(
            found(Filter::Address(vec!["eve@remote.example".into()])),
            ["4Old"]
        );
        assert_eq!(
            found(Filter::Domain(vec!["other.example".into()])),
            ["4Kept"]
        );
        assert_eq!(
            found(Filter::Ip(vec!["198.51.100.0/24".into()])),
            ["4Old", "4Kept"]
        );
        assert_eq!(
            found(Filter::Domain(vec!["example.org".into()])).len(),
            2,
            "recipients"
        );
        assert_eq!(ledger.export(None, None).unwrap(), [old, kept.clone()]);
        assert_eq!(ledger.purge_some(chrono::Utc::now(), 500).unwrap(), 1);
        let left: i64 = ledger
            .conn
            .query_row("SELECT count(*) FROM subjects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            left as usize,
            subjects(&kept).len(),
            "the purged event's subjects went"
        );
    }
}
