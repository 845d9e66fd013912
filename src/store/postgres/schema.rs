//! The PostgreSQL ledger's tables: the schema of the SQLite ledger (plus an arrival sequence),
//! in one database that several MTAs share, each event carrying its `host`.
//!
//! The schema is versioned in the table `schema_version` and migrated at the first
//! connection, under an advisory lock so that MTAs starting together do not race. Times are
//! `timestamptz`, so expiry and export compare instants, not strings under some collation.

use crate::store::Result;
use postgres::Client;

/// Each entry migrates the schema from version `index` to `index + 1`. Version 2 is the
/// SQLite ledger's version 2 (see `store::sqlite::schema`): one `subjects` index instead of one
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

/// Key of the advisory lock held while migrating (any constant; "pmledger").
const MIGRATION_LOCK: i64 = 0x706d_6c65_6467_6572;

/// Brings the schema to the last version, under an advisory lock.
pub(super) fn migrate(client: &mut Client) -> Result<()> {
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
