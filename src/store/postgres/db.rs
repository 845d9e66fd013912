//! The ledger's PostgreSQL database: the schema of the SQLite ledger (plus an arrival
//! sequence), in one database that several MTAs share, each event carrying its `host`.
//!
//! The schema is versioned in the table `schema_version` and migrated at the first
//! connection, under an advisory lock so that MTAs starting together do not race. Times are
//! `timestamptz`, so expiry and export compare instants, not strings under some collation.
//!
//! Connections come from a small pool (`events.postgres.pool_size`), made on demand with
//! `events.postgres.connect_timeout`; a connection found closed is dropped and replaced.
//!
//! TLS (rustls) when the URL says `sslmode=require`: the server's certificate must chain to
//! `events.postgres.ca_file`, or to the system's CA store, and name the host; there is no
//! unverified mode. Without `sslmode` the connection is plain, as it always was; with
//! `sslmode=prefer` TLS is used (and verified) when the server offers it.

use crate::{
    config::Config,
    event::{stamp, Event},
    store::{subjects, transit_of, Filter, Lifecycle, Result, Stats, StoreError, TransitQuery},
    transit::{Delivery, State, Transit},
};
use chrono::{DateTime, Utc};
use postgres::{config::SslMode, Client, NoTls};
use rustls::pki_types::CertificateDer;
use std::{
    ops::{Deref, DerefMut},
    sync::{
        atomic::{AtomicBool, Ordering},
        Condvar, Mutex,
    },
    time::Duration,
};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

mod summary;

/// Each entry migrates the schema from version `index` to `index + 1`. Version 2 is the
/// SQLite ledger's version 2 (see `store::sqlite::db`): one `subjects` index instead of one
/// per column, and the tables of transit tracking; no transit records are made for the
/// events of before, which nothing tracked.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE events (
        id UUID PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        time TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
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
    CREATE INDEX events_host ON events (host);
    CREATE INDEX events_client_ip ON events (client_ip);
    CREATE INDEX events_sender_address ON events (sender_address);
    CREATE INDEX events_sender_domain ON events (sender_domain);
    CREATE TABLE recipients (
        event_id UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
        address TEXT,
        domain TEXT
    );
    CREATE INDEX recipients_event ON recipients (event_id);
    CREATE INDEX recipients_address ON recipients (address);
    CREATE INDEX recipients_domain ON recipients (domain);
",
    "
    ALTER TABLE events ADD COLUMN queue_id TEXT;
    UPDATE events SET queue_id = body::jsonb ->> 'queue_id';
    CREATE UNIQUE INDEX events_seq ON events (seq);
    CREATE TABLE subjects (
        value TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (value, seq)
    );
    INSERT INTO subjects (value, seq)
    SELECT 'i:' || client_ip, seq FROM events WHERE client_ip IS NOT NULL
    UNION SELECT 'a:' || sender_address, seq FROM events WHERE sender_address IS NOT NULL
    UNION SELECT 'd:' || sender_domain, seq FROM events WHERE sender_domain IS NOT NULL
    UNION SELECT 'a:' || r.address, e.seq FROM recipients r JOIN events e ON e.id = r.event_id
        WHERE r.address IS NOT NULL
    UNION SELECT 'd:' || r.domain, e.seq FROM recipients r JOIN events e ON e.id = r.event_id
        WHERE r.domain IS NOT NULL;
    DROP TABLE recipients;
    ALTER TABLE events DROP COLUMN client_ip, DROP COLUMN sender_address,
        DROP COLUMN sender_domain;
    CREATE TABLE transit (
        seq BIGINT PRIMARY KEY,
        queue_id TEXT NOT NULL,
        host TEXT NOT NULL,
        state TEXT NOT NULL,
        since TIMESTAMPTZ NOT NULL,
        acknowledged_at TIMESTAMPTZ,
        removed_at TIMESTAMPTZ,
        remote INTEGER NOT NULL,
        sent INTEGER NOT NULL,
        bounced INTEGER NOT NULL,
        alerts INTEGER NOT NULL
    );
    CREATE INDEX transit_queue_id ON transit (queue_id, host);
    CREATE INDEX transit_state ON transit (state, since);
    CREATE TABLE deliveries (
        seq BIGINT NOT NULL,
        id TEXT NOT NULL,
        time TIMESTAMPTZ NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (seq, id)
    );
",
];

/// A transit record's columns, then its event's id and `seq`.
const TRANSIT_COLUMNS: &str = "t.queue_id, t.host, t.state, t.since, t.acknowledged_at,
    t.removed_at, t.remote, t.sent, t.bounced, t.alerts, e.id, t.seq";

/// Key of the advisory lock held while migrating (any constant; "pmledger").
const MIGRATION_LOCK: i64 = 0x706d_6c65_6467_6572;

fn instant(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::InvalidEvent(format!("invalid time {text:?} in an event: {e}")))
}

struct PoolState {
    idle: Vec<Client>,
    /// Connections handed out and not yet returned.
    busy: usize,
}

/// A TLS connector that verifies the server against `ca_roots` (`events.postgres.ca_file`),
/// or the system's CA store when there are none.
fn tls_connector(ca_roots: &[CertificateDer<'static>]) -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_roots.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A certificate of the store that rustls cannot use is no reason to fail.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(StoreError::Connect(format!(
                "events.postgres: sslmode asks for TLS but the system has no CA certificates ({:?}); set events.postgres.ca_file",
                found.errors
            )));
        }
    } else {
        for cert in ca_roots {
            roots
                .add(cert.clone())
                .map_err(|e| StoreError::Connect(format!("events.postgres.ca_file: {e}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Connect(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// At most `size` connections, made when needed and kept while they stay open.
struct Pool {
    config: postgres::Config,
    /// The TLS connector when the URL asks for TLS.
    tls: Option<MakeRustlsConnect>,
    size: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
    migrated: AtomicBool,
}

struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("held until drop")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("held until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
        state.busy -= 1;
        if let Some(client) = self.client.take().filter(|c| !c.is_closed()) {
            state.idle.push(client);
        }
        self.pool.returned.notify_one();
    }
}

impl Pool {
    fn get(&self) -> Result<Pooled<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            while let Some(client) = state.idle.pop() {
                if !client.is_closed() {
                    state.busy += 1;
                    return Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    });
                }
            }
            if state.busy < self.size {
                break;
            }
            state = self.returned.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.busy += 1;
        drop(state);
        // Counted as busy from here: a failed connection gives its place back on drop.
        let mut pooled = Pooled {
            pool: self,
            client: None,
        };
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
        .map_err(|e| StoreError::Connect(crate::logging::chain(&e)))?;
        if !self.migrated.load(Ordering::Acquire) {
            migrate(&mut client)?;
            self.migrated.store(true, Ordering::Release);
        }
        pooled.client = Some(client);
        Ok(pooled)
    }
}

fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // Not "relation already exists, skipping" at each start: the server's notices reach the
    // log at info level.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let version: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql)?;
        let next = i as i32 + 1;
        tx.execute("DELETE FROM schema_version", &[])?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&next])?;
    }
    tx.commit()?;
    Ok(())
}

/// The ledger's database. Safe to share between threads (the pool is).
pub struct Database {
    pool: Pool,
    url: String,
}

impl Database {
    /// Checks the URL and sets up the pool; no connection is made yet.
    pub fn new(config: &Config) -> Result<Self> {
        let roots = &config.postgres_roots;
        let config = &config.events.postgres;
        let mut pg: postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::Connect(format!("events.postgres.url: {e}")))?;
        pg.connect_timeout(config.connect_timeout.0)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            // A write into a dead connection fails after this instead of hanging.
            .tcp_user_timeout(config.connect_timeout.0.max(Duration::from_secs(10)) * 3);
        if pg.get_application_name().is_none() {
            pg.application_name("privacy-milter");
        }
        let timeout_ms = config.statement_timeout.0.as_millis();
        if timeout_ms > 0 {
            // Server-side, so that it also cancels a statement waiting for a lock.
            let options = match pg.get_options() {
                Some(given) => format!("{given} -c statement_timeout={timeout_ms}"),
                None => format!("-c statement_timeout={timeout_ms}"),
            };
            pg.options(&options);
        }
        let tls = if config.wants_tls() {
            Some(tls_connector(roots)?)
        } else {
            pg.ssl_mode(SslMode::Disable);
            None
        };
        Ok(Self {
            pool: Pool {
                config: pg,
                tls,
                size: config.pool_size.max(1),
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    busy: 0,
                }),
                returned: Condvar::new(),
                migrated: AtomicBool::new(false),
            },
            url: config.redacted_url(),
        })
    }

    /// Connects (and migrates the schema) now, so that a problem shows at once.
    pub fn connect(config: &Config) -> Result<Self> {
        let db = Self::new(config)?;
        db.pool
            .get()
            .map_err(|e| StoreError::Connect(format!("PostgreSQL at {}: {e}", db.url)))?;
        Ok(db)
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stores a batch in one transaction, with the events' subjects and transit records; an
    /// event already stored (same id) is left as is. Returns how many were new.
    pub fn insert(&self, events: &[Event]) -> Result<usize> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        let event_stmt = tx.prepare(
            "INSERT INTO events (id, time, expires_at, class, direction, outcome, host,
                 queue_id, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO NOTHING RETURNING seq",
        )?;
        let subject_stmt =
            tx.prepare("INSERT INTO subjects (value, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING")?;
        let transit_stmt = tx.prepare(
            "INSERT INTO transit (seq, queue_id, host, state, since, acknowledged_at,
                 removed_at, remote, sent, bounced, alerts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        )?;
        let mut new = 0;
        for e in events {
            let inserted = tx.query_opt(
                &event_stmt,
                &[
                    &e.id,
                    &instant(&e.time)?,
                    &instant(&e.retention.expires_at)?,
                    &e.retention.class,
                    &e.direction.as_str(),
                    &e.outcome.as_str(),
                    &e.host,
                    &e.queue_id,
                    &e.to_json(),
                ],
            )?;
            let Some(row) = inserted else {
                continue;
            };
            new += 1;
            let seq: i64 = row.get(0);
            for value in subjects(e) {
                tx.execute(&subject_stmt, &[&value, &seq])?;
            }
            if let Some(t) = transit_of(e) {
                let counts = [t.remote, t.sent, t.bounced, t.alerts].map(|n| n as i32);
                tx.execute(
                    &transit_stmt,
                    &[
                        &seq,
                        &t.queue_id,
                        &t.host,
                        &t.state.as_str(),
                        &t.since,
                        &t.acknowledged_at,
                        &t.removed_at,
                        &counts[0],
                        &counts[1],
                        &counts[2],
                        &counts[3],
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Deletes at most `limit` expired events (well inside `statement_timeout` however large
    /// the backlog) with everything that hangs on them; returns how many.
    pub fn purge_some(&self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        let rows = tx.query(
            "SELECT seq, body FROM events WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
            &[&now, &(limit as i64)],
        )?;
        let n = delete(&mut tx, &rows)?;
        tx.commit()?;
        Ok(n)
    }

    /// The events matching `filter`, oldest first.
    pub fn find(&self, filter: &Filter) -> Result<Vec<Event>> {
        let values = filter.subject_values();
        let rows = self.pool.get()?.query(MATCHING_SQL, &[&values])?;
        rows.iter().map(|r| event(r.get(1))).collect()
    }

    /// Deletes the events matching `filter`, with their transit records and deliveries;
    /// returns how many.
    pub fn erase(&self, filter: &Filter) -> Result<usize> {
        let values = filter.subject_values();
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        let rows = tx.query(MATCHING_SQL, &[&values])?;
        let n = delete(&mut tx, &rows)?;
        tx.commit()?;
        Ok(n)
    }

    /// Events with `since <= time < until`, oldest first.
    pub fn export(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>> {
        let rows = self.pool.get()?.query(
            "SELECT body FROM events
             WHERE ($1::timestamptz IS NULL OR time >= $1)
               AND ($2::timestamptz IS NULL OR time < $2)
             ORDER BY time, seq",
            &[&since, &until],
        )?;
        rows.iter().map(|r| event(r.get(0))).collect()
    }

    /// The transit record of the message `queue_id` accepted on one of `hosts` (any host
    /// when `hosts` is empty): the latest still open, else the latest.
    pub fn transit(&self, queue_id: &str, hosts: &[String]) -> Result<Option<Transit>> {
        let row = self.pool.get()?.query_opt(
            format!(
                "SELECT {TRANSIT_COLUMNS} FROM transit t JOIN events e ON e.seq = t.seq
                 WHERE t.queue_id = $1 AND (cardinality($2::text[]) = 0 OR t.host = ANY($2))
                 ORDER BY t.state IN ('pending', 'deferred', 'acknowledged') DESC, t.seq DESC
                 LIMIT 1"
            )
            .as_str(),
            &[&queue_id, &hosts],
        )?;
        row.map(|r| transit_from_row(&r).map(|(t, _)| t))
            .transpose()
    }

    /// Saves changed transit records and new deliveries in one transaction.
    pub fn record_transit(&self, transits: &[Transit], deliveries: &[Delivery]) -> Result<()> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        let update = tx.prepare(
            "UPDATE transit SET queue_id = $2, state = $3, acknowledged_at = $4,
                 removed_at = $5, sent = $6, bounced = $7, alerts = $8
             WHERE seq = $1",
        )?;
        for t in transits {
            let counts = [t.sent, t.bounced, t.alerts].map(|n| n as i32);
            tx.execute(
                &update,
                &[
                    &t.key.seq,
                    &t.queue_id,
                    &t.state.as_str(),
                    &t.acknowledged_at,
                    &t.removed_at,
                    &counts[0],
                    &counts[1],
                    &counts[2],
                ],
            )?;
        }
        let insert = tx.prepare(
            "INSERT INTO deliveries (seq, id, time, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )?;
        for d in deliveries {
            let Some(seq) = transits
                .iter()
                .find(|t| t.event_id == d.event_id)
                .map(|t| t.key.seq)
            else {
                continue;
            };
            tx.execute(&insert, &[&seq, &d.id, &instant(&d.time)?, &d.to_json()])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The transit messages `query` selects, oldest first, with their deliveries.
    pub fn transits(&self, query: &TransitQuery) -> Result<Vec<Lifecycle>> {
        let states: Vec<&str> = State::ALL
            .iter()
            .filter(|s| query.states.is_empty() || query.states.contains(s))
            .filter(|s| !query.open_only || s.is_open())
            .map(|s| s.as_str())
            .collect();
        let mut client = self.pool.get()?;
        let rows = client.query(
            format!(
                "SELECT {TRANSIT_COLUMNS} FROM transit t JOIN events e ON e.seq = t.seq
                 WHERE t.state = ANY($1) AND ($2::timestamptz IS NULL OR t.since < $2)
                 ORDER BY t.since, t.seq"
            )
            .as_str(),
            &[&states, &query.since_before],
        )?;
        rows.iter()
            .map(|r| {
                let (transit, seq) = transit_from_row(r)?;
                lifecycle(&mut client, transit, seq)
            })
            .collect()
    }

    /// The lifecycles of those of `events` that are transit messages.
    pub fn lifecycles(&self, events: &[Event]) -> Result<Vec<Lifecycle>> {
        let events: Vec<Uuid> = events.iter().filter(|e| e.transit).map(|e| e.id).collect();
        let mut client = self.pool.get()?;
        let rows = client.query(
            format!(
                "SELECT {TRANSIT_COLUMNS} FROM transit t JOIN events e ON e.seq = t.seq
                 WHERE e.id = ANY($1) ORDER BY t.since, t.seq"
            )
            .as_str(),
            &[&events],
        )?;
        rows.iter()
            .map(|r| {
                let (transit, seq) = transit_from_row(r)?;
                lifecycle(&mut client, transit, seq)
            })
            .collect()
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut client = self.pool.get()?;
        let counts = client
            .query(
                "SELECT class, direction, COUNT(*) FROM events GROUP BY class, direction
                 ORDER BY class COLLATE \"C\", direction COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
            .collect();
        let row = client.query_one(
            "SELECT COUNT(*), MIN(time), MIN(expires_at) FROM events",
            &[],
        )?;
        Ok(Stats {
            counts,
            total: row.get::<_, i64>(0) as u64,
            oldest: row.get::<_, Option<DateTime<Utc>>>(1).map(stamp),
            next_expiry: row.get::<_, Option<DateTime<Utc>>>(2).map(stamp),
        })
    }
}

/// The events one of whose subjects is in $1, oldest first.
const MATCHING_SQL: &str = "SELECT seq, body FROM events
    WHERE seq IN (SELECT seq FROM subjects WHERE value = ANY($1)) ORDER BY time, seq";

fn event(body: &str) -> Result<Event> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Other(format!("an event in the ledger: {e}")))
}

/// Deletes the events of `rows` (`seq`, `body`) and everything that hangs on them.
fn delete(tx: &mut postgres::Transaction<'_>, rows: &[postgres::Row]) -> Result<usize> {
    let mut seqs: Vec<i64> = Vec::with_capacity(rows.len());
    let (mut values, mut of): (Vec<String>, Vec<i64>) = (Vec::new(), Vec::new());
    for row in rows {
        let seq: i64 = row.get(0);
        seqs.push(seq);
        match serde_json::from_str::<Event>(row.get(1)) {
            Ok(event) => {
                for value in subjects(&event) {
                    values.push(value);
                    of.push(seq);
                }
            }
            // A body that cannot be read: its subjects are found by a scan.
            Err(_) => {
                tx.execute("DELETE FROM subjects WHERE seq = $1", &[&seq])?;
            }
        }
    }
    tx.execute(
        "DELETE FROM subjects WHERE (value, seq) IN
             (SELECT * FROM unnest($1::text[], $2::bigint[]))",
        &[&values, &of],
    )?;
    for table in ["deliveries", "transit"] {
        tx.execute(
            format!("DELETE FROM {table} WHERE seq = ANY($1)").as_str(),
            &[&seqs],
        )?;
    }
    let n = tx.execute("DELETE FROM events WHERE seq = ANY($1)", &[&seqs])?;
    Ok(n as usize)
}

/// A transit record and its event's `seq` from a row of [`TRANSIT_COLUMNS`].
fn transit_from_row(r: &postgres::Row) -> Result<(Transit, i64)> {
    let state: String = r.get(2);
    let count = |i: usize| r.get::<_, i32>(i).max(0) as u32;
    let seq: i64 = r.get(11);
    Ok((
        Transit {
            key: crate::transit::StoreKey {
                seq,
                queue_id: r.get(0),
            },
            queue_id: r.get(0),
            host: r.get(1),
            state: state.parse().map_err(StoreError::Other)?,
            since: r.get(3),
            acknowledged_at: r.get(4),
            removed_at: r.get(5),
            remote: count(6),
            sent: count(7),
            bounced: count(8),
            alerts: count(9),
            event_id: r.get(10),
        },
        seq,
    ))
}

fn lifecycle(client: &mut Client, transit: Transit, seq: i64) -> Result<Lifecycle> {
    let rows = client.query(
        "SELECT body FROM deliveries WHERE seq = $1 ORDER BY time, id",
        &[&seq],
    )?;
    let deliveries = rows
        .iter()
        .map(|r| {
            serde_json::from_str(r.get(0))
                .map_err(|e| StoreError::Other(format!("a delivery in the ledger: {e}")))
        })
        .collect::<Result<Vec<Delivery>>>()?;
    Ok(Lifecycle {
        transit,
        deliveries,
    })
}
