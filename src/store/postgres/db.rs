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
    store::{Filter, Result, Stats, StoreError},
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

/// Each entry migrates the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &["
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
"];

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

/// An error with what caused it ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer"): the library's own message alone rarely says what to fix.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
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
        .map_err(|e| StoreError::Connect(with_causes(&e)))?;
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

    /// Stores a batch in one transaction; an event already stored (same id) is left as is.
    /// Returns how many were new.
    pub fn insert(&self, events: &[Event]) -> Result<usize> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        let event_stmt = tx.prepare(
            "INSERT INTO events (id, time, expires_at, class, direction, outcome, host,
                 client_ip, sender_address, sender_domain, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (id) DO NOTHING",
        )?;
        let rcpt_stmt =
            tx.prepare("INSERT INTO recipients (event_id, address, domain) VALUES ($1, $2, $3)")?;
        let mut new = 0;
        for e in events {
            let inserted = tx.execute(
                &event_stmt,
                &[
                    &e.id,
                    &instant(&e.time)?,
                    &instant(&e.retention.expires_at)?,
                    &e.retention.class,
                    &e.direction.as_str(),
                    &e.outcome.as_str(),
                    &e.host,
                    &e.client.ip,
                    &e.sender.address,
                    &e.sender.domain,
                    &e.to_json(),
                ],
            )?;
            if inserted == 1 {
                new += 1;
                for r in &e.recipients {
                    tx.execute(&rcpt_stmt, &[&e.id, &r.address.address, &r.address.domain])?;
                }
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Deletes at most `limit` expired events in one statement (well inside
    /// `statement_timeout` however large the backlog); returns how many.
    pub fn purge_some(&self, now: DateTime<Utc>, limit: usize) -> Result<usize> {
        let n = self.pool.get()?.execute(
            "DELETE FROM events WHERE id IN
                 (SELECT id FROM events WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
            &[&now, &(limit as i64)],
        )?;
        Ok(n as usize)
    }

    /// A subquery for the ids of the matching events (its one parameter: the values).
    fn matching_ids_sql(filter: &Filter) -> (&'static str, &Vec<String>) {
        match filter {
            Filter::Ip(v) => ("SELECT id FROM events WHERE client_ip = ANY($1)", v),
            Filter::Address(v) => (
                "SELECT id FROM events WHERE sender_address = ANY($1)
                 UNION SELECT event_id FROM recipients WHERE address = ANY($1)",
                v,
            ),
            Filter::Domain(v) => (
                "SELECT id FROM events WHERE sender_domain = ANY($1)
                 UNION SELECT event_id FROM recipients WHERE domain = ANY($1)",
                v,
            ),
        }
    }

    /// The events matching `filter`, oldest first.
    pub fn find(&self, filter: &Filter) -> Result<Vec<Event>> {
        let (ids, values) = Self::matching_ids_sql(filter);
        let sql = format!("SELECT body FROM events WHERE id IN ({ids}) ORDER BY time, id");
        self.bodies(&sql, &[values])
    }

    /// Deletes the events matching `filter`; returns how many.
    pub fn erase(&self, filter: &Filter) -> Result<usize> {
        let (ids, values) = Self::matching_ids_sql(filter);
        let n = self.pool.get()?.execute(
            format!("DELETE FROM events WHERE id IN ({ids})").as_str(),
            &[values],
        )?;
        Ok(n as usize)
    }

    /// Events with `since <= time < until`, oldest first.
    pub fn export(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>> {
        self.bodies(
            "SELECT body FROM events
             WHERE ($1::timestamptz IS NULL OR time >= $1)
               AND ($2::timestamptz IS NULL OR time < $2)
             ORDER BY time, id",
            &[&since, &until],
        )
    }

    fn bodies(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Event>> {
        let rows = self.pool.get()?.query(sql, params)?;
        rows.iter()
            .map(|r| {
                let body: &str = r.get(0);
                serde_json::from_str(body)
                    .map_err(|e| StoreError::Other(format!("an event in the ledger: {e}")))
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
