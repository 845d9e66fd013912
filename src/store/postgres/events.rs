//! The PostgreSQL ledger's events: writing a batch, finding, exporting and counting events,
//! and deleting them (purge, erasure) with everything that hangs on them.

use super::transit;
use crate::{
    event::{stamp, Event},
    store::{subjects, transit_of, Filter, Result, Stats, StoreError},
};
use chrono::{DateTime, Utc};
use postgres::{Client, Row};

/// The events one of whose subjects is in $1, oldest first.
const MATCHING_SQL: &str = "SELECT seq, body FROM events
    WHERE seq IN (SELECT seq FROM subjects WHERE value = ANY($1)) ORDER BY time, seq";

/// An event's time as the database takes it.
pub(super) fn instant(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::InvalidEvent(format!("invalid time {text:?} in an event: {e}")))
}

/// Stores a batch in one transaction, with the events' subjects and transit records; an
/// event already stored (same id: a spool replayed again) is left as is. Returns how many
/// were new.
pub(super) fn insert(client: &mut Client, events: &[Event]) -> Result<usize> {
    let mut tx = client.transaction()?;
    let event_stmt = tx.prepare(
        "INSERT INTO events (id, time, expires_at, class, direction, outcome, host,
             queue_id, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING RETURNING seq",
    )?;
    let subject_stmt =
        tx.prepare("INSERT INTO subjects (value, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING")?;
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
        let seq: i64 = row.try_get("seq")?;
        for value in subjects(e) {
            tx.execute(&subject_stmt, &[&value, &seq])?;
        }
        if let Some(t) = transit_of(e) {
            transit::insert(&mut tx, seq, &t)?;
        }
    }
    tx.commit()?;
    Ok(new)
}

/// Deletes at most `limit` expired events (well inside `statement_timeout` however large
/// the backlog) with everything that hangs on them; returns how many.
pub(super) fn purge_some(client: &mut Client, now: DateTime<Utc>, limit: usize) -> Result<usize> {
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
pub(super) fn find(client: &mut Client, filter: &Filter) -> Result<Vec<Event>> {
    let values = filter.subject_values();
    let rows = client.query(MATCHING_SQL, &[&values])?;
    rows.iter()
        .map(|r| decode("an event", r.try_get("body")?))
        .collect()
}

/// Deletes the events matching `filter`, with their transit records and deliveries;
/// returns how many.
pub(super) fn erase(client: &mut Client, filter: &Filter) -> Result<usize> {
    let values = filter.subject_values();
    let mut tx = client.transaction()?;
    let rows = tx.query(MATCHING_SQL, &[&values])?;
    let n = delete(&mut tx, &rows)?;
    tx.commit()?;
    Ok(n)
}

/// Events with `since <= time < until`, oldest first.
pub(super) fn export(
    client: &mut Client,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<Event>> {
    let rows = client.query(
        "SELECT body FROM events
         WHERE ($1::timestamptz IS NULL OR time >= $1)
           AND ($2::timestamptz IS NULL OR time < $2)
         ORDER BY time, seq",
        &[&since, &until],
    )?;
    rows.iter()
        .map(|r| decode("an event", r.try_get("body")?))
        .collect()
}

pub(super) fn stats(client: &mut Client) -> Result<Stats> {
    let counts = client
        .query(
            "SELECT class, direction, COUNT(*) AS count FROM events GROUP BY class, direction
             ORDER BY class COLLATE \"C\", direction COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("class")?,
                r.try_get("direction")?,
                r.try_get::<_, i64>("count")? as u64,
            ))
        })
        .collect::<Result<_>>()?;
    let row = client.query_one(
        "SELECT COUNT(*) AS total, MIN(time) AS oldest, MIN(expires_at) AS next_expiry
         FROM events",
        &[],
    )?;
    Ok(Stats {
        counts,
        total: row.try_get::<_, i64>("total")? as u64,
        oldest: row
            .try_get::<_, Option<DateTime<Utc>>>("oldest")?
            .map(stamp),
        next_expiry: row
            .try_get::<_, Option<DateTime<Utc>>>("next_expiry")?
            .map(stamp),
    })
}

/// An event (or, `what` says, a delivery) from its body.
pub(super) fn decode<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| StoreError::Other(format!("{what} in the ledger: {e}")))
}

/// Deletes the events of `rows` (`seq`, `body`) and everything that hangs on them.
fn delete(tx: &mut postgres::Transaction<'_>, rows: &[Row]) -> Result<usize> {
    let mut seqs: Vec<i64> = Vec::with_capacity(rows.len());
    let (mut values, mut of): (Vec<String>, Vec<i64>) = (Vec::new(), Vec::new());
    for row in rows {
        let seq: i64 = row.try_get("seq")?;
        seqs.push(seq);
        match serde_json::from_str::<Event>(row.try_get("body")?) {
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
    transit::delete(tx, &seqs)?;
    let n = tx.execute("DELETE FROM events WHERE seq = ANY($1)", &[&seqs])?;
    Ok(n as usize)
}
