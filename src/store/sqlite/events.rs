//! The SQLite ledger's events: writing a batch, finding, exporting and counting events, and
//! deleting them (purge, erasure) with everything that hangs on them.

use super::transit;
use crate::{
    event::{stamp, Event},
    store::{subjects, transit_of, Filter, Stats},
};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

const INSERT_EVENT: &str = "INSERT INTO events
    (time, expires_at, class, direction, outcome, host, queue_id, body)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
pub(super) const INSERT_SUBJECT: &str =
    "INSERT OR IGNORE INTO subjects (value, seq) VALUES (?1, ?2)";

/// At most ?2 events expired by ?1, the oldest expiry first.
const EXPIRED_SQL: &str = "SELECT seq, queue_id, body FROM events
    WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2";

/// The events one of whose subjects is in (#), oldest first.
const MATCHING_SQL: &str = "SELECT seq, queue_id, body FROM events
    WHERE seq IN (SELECT seq FROM subjects WHERE value IN (#)) ORDER BY time, seq";

const DELETE_SUBJECT: &str = "DELETE FROM subjects WHERE value = ?1 AND seq = ?2";
/// Only where an event's body cannot be read: the subjects are then found by a scan.
const DELETE_SUBJECTS_BY_SCAN: &str = "DELETE FROM subjects WHERE seq = ?1";
const DELETE_EVENT: &str = "DELETE FROM events WHERE seq = ?1";

/// The events with ?1 <= time < ?2, oldest first.
const EXPORT_SQL: &str =
    "SELECT body FROM events WHERE time >= ?1 AND time < ?2 ORDER BY time, seq";

/// Stores a batch, with the events' subjects and transit records, in one immediate
/// transaction, calling `locked` before the commit, while this connection holds SQLite's
/// write lock (no other connection appends to the WAL meanwhile). Each event is a new row:
/// the writer hands every event over once.
pub(super) fn insert(
    conn: &mut Connection,
    events: &[Event],
    locked: impl FnOnce(),
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut event_stmt = tx.prepare_cached(INSERT_EVENT)?;
        let mut subject_stmt = tx.prepare_cached(INSERT_SUBJECT)?;
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
                transit::insert(&tx, seq, &t)?;
            }
        }
    }
    locked();
    tx.commit()
}

/// An event as deletion needs it: its row, the queue id its transit record is filed
/// under, and its body (for its subjects).
struct Row {
    seq: i64,
    queue_id: Option<String>,
    body: String,
}

/// The events a query of `seq, queue_id, body` finds.
fn rows(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare(sql)?;
    let found = stmt
        .query_map(params, |r| {
            Ok(Row {
                seq: r.get("seq")?,
                queue_id: r.get("queue_id")?,
                body: r.get("body")?,
            })
        })?
        .collect();
    found
}

/// Deletes events and everything that hangs on them.
fn delete(tx: &rusqlite::Transaction<'_>, events: &[Row]) -> rusqlite::Result<()> {
    let mut subject = tx.prepare_cached(DELETE_SUBJECT)?;
    for Row {
        seq,
        queue_id,
        body,
    } in events
    {
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
        transit::delete(tx, *seq, queue_id.as_deref())?;
        tx.execute(DELETE_EVENT, [seq])?;
    }
    Ok(())
}

/// Deletes at most `limit` expired events, oldest expiry first, with their subjects,
/// transit records and deliveries, in one transaction; returns how many.
pub(super) fn purge_some(
    conn: &mut Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let expired = rows(&tx, EXPIRED_SQL, params![stamp(now), limit as i64])?;
    delete(&tx, &expired)?;
    tx.commit()?;
    Ok(expired.len())
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
pub(super) fn find(conn: &Connection, filter: &Filter) -> rusqlite::Result<Vec<Event>> {
    let (sql, values) = matching_sql(filter);
    rows(conn, &sql, rusqlite::params_from_iter(values))?
        .iter()
        .map(|row| decode(&row.body))
        .collect()
}

/// Deletes the events matching `filter`, with their transit records and deliveries (their
/// rows zeroed by `secure_delete`); returns how many. Their old copies stay in the WAL until
/// it is truncated.
pub(super) fn erase(conn: &mut Connection, filter: &Filter) -> rusqlite::Result<usize> {
    let (sql, values) = matching_sql(filter);
    let found = rows(conn, &sql, rusqlite::params_from_iter(values))?;
    // In short transactions: the daemon's commits wait for each.
    for chunk in found.chunks(crate::store::PURGE_CHUNK) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        delete(&tx, chunk)?;
        tx.commit()?;
    }
    Ok(found.len())
}

/// Events with `since <= time < until`, oldest first.
pub(super) fn export(
    conn: &Connection,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> rusqlite::Result<Vec<Event>> {
    let since = since.map(stamp).unwrap_or_default();
    let until = until.map(stamp).unwrap_or_else(|| "~".into());
    let mut stmt = conn.prepare(EXPORT_SQL)?;
    let bodies = stmt.query_map(params![since, until], |r| r.get::<_, String>("body"))?;
    bodies.map(|body| decode(&body?)).collect()
}

/// An event from its body, or an error SQLite's way.
pub(super) fn decode<T: serde::de::DeserializeOwned>(body: &str) -> rusqlite::Result<T> {
    serde_json::from_str(body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn stats(conn: &Connection) -> rusqlite::Result<Stats> {
    let mut stmt = conn.prepare(
        "SELECT class, direction, COUNT(*) AS count FROM events
         GROUP BY class, direction ORDER BY class, direction",
    )?;
    let counts = stmt
        .query_map([], |r| {
            Ok((
                r.get("class")?,
                r.get("direction")?,
                r.get::<_, i64>("count")? as u64,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (total, oldest, next_expiry) = conn
        .query_row(
            "SELECT COUNT(*) AS total, MIN(time) AS oldest, MIN(expires_at) AS next_expiry
             FROM events",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>("total")? as u64,
                    r.get("oldest")?,
                    r.get("next_expiry")?,
                ))
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::{assert_searches, scratch};

    /// Every lookup of a person's data, every purge, erasure and export finds its rows
    /// through an index: the ledger may hold months of mail. (Only `stats` counts the whole
    /// table, and a body that cannot be read has its subjects found by a scan.)
    #[test]
    fn every_lookup_uses_an_index() {
        let (_dir, conn) = scratch();
        let two = vec!["a".to_string(), "b".to_string()];
        let mut statements: Vec<String> = [EXPIRED_SQL, EXPORT_SQL, DELETE_SUBJECT, DELETE_EVENT]
            .map(String::from)
            .to_vec();
        for filter in [
            Filter::Ip(two.clone()),
            Filter::Address(two.clone()),
            Filter::Domain(two),
        ] {
            statements.push(matching_sql(&filter).0);
        }
        for sql in statements {
            assert_searches(&conn, &sql);
        }
    }
}
