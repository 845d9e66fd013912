//! The SQLite ledger's transit records (one per transit message, made with its event and
//! changed by tracking) and the delivery attempts logged for them.

use super::events::decode;
use crate::{
    event::{stamp, Event},
    store::{Lifecycle, TransitQuery},
    transit::{Delivery, State, StoreKey, Transit},
};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

const INSERT_TRANSIT: &str = "INSERT OR IGNORE INTO transit
    (queue_id, seq, event_id, host, state, since, acknowledged_at, removed_at, remote, sent,
     bounced, alerts)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// A transit record's columns, as [`from_row`] reads them by name.
const TRANSIT_COLUMNS: &str = "queue_id, seq, event_id, host, state, since, acknowledged_at,
    removed_at, remote, sent, bounced, alerts";

/// The transit record of queue id ?1: the latest still open, else the latest.
fn by_queue_id_sql() -> String {
    format!(
        "SELECT {TRANSIT_COLUMNS} FROM transit WHERE queue_id = ?1
         ORDER BY state IN ('pending', 'deferred', 'acknowledged') DESC, seq DESC LIMIT 1"
    )
}

/// The messages still in the queue accepted before ?1, oldest first (`transit_open`).
fn open_sql() -> String {
    format!(
        "SELECT {TRANSIT_COLUMNS} FROM transit
         WHERE state IN ('pending', 'deferred', 'acknowledged') AND since < ?1
         ORDER BY since, seq"
    )
}

/// Every transit record in the states (#) accepted before ?1, oldest first. Settled ones
/// have no index of their own: listing them reads the table (a command, never the mail's
/// path).
fn in_states_sql() -> String {
    format!(
        "SELECT {TRANSIT_COLUMNS} FROM transit
         WHERE state IN (#) AND since < ?1 ORDER BY since, seq"
    )
}

/// The transit record of the event ?2 filed under queue id ?1.
fn of_event_sql() -> String {
    format!("SELECT {TRANSIT_COLUMNS} FROM transit WHERE queue_id = ?1 AND event_id = ?2")
}

/// The transit record of the event ?1 under whatever queue id: one that moved (`postsuper -r`,
/// a content filter) is filed under a queue id its event's body does not name. No index has
/// the event id: this reads the table, and is asked only when the first lookup finds nothing.
fn of_moved_event_sql() -> String {
    format!("SELECT {TRANSIT_COLUMNS} FROM transit WHERE event_id = ?1")
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
const DELETE_DELIVERIES: &str = "DELETE FROM deliveries WHERE seq = ?1";
const DELETE_TRANSIT: &str = "DELETE FROM transit WHERE queue_id = ?1 AND seq = ?2";

/// The record a new transit message starts with, beside its event (row `seq`).
pub(super) fn insert(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    t: &Transit,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(INSERT_TRANSIT)?;
    stmt.execute(params![
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
    Ok(())
}

/// Deletes the transit record and deliveries of the event in row `seq`, filed under
/// `queue_id` (none: it is no transit message).
pub(super) fn delete(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    queue_id: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(DELETE_DELIVERIES, [seq])?;
    if let Some(queue_id) = queue_id {
        tx.execute(DELETE_TRANSIT, params![queue_id, seq])?;
    }
    Ok(())
}

/// A transit record from a row of [`TRANSIT_COLUMNS`].
fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Transit> {
    let bad = |column: &str, e: Box<dyn std::error::Error + Send + Sync>| {
        let index = r.as_ref().column_index(column).unwrap_or(0);
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e)
    };
    let time = |column: &str| -> rusqlite::Result<Option<DateTime<Utc>>> {
        let text: Option<String> = r.get(column)?;
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| bad(column, Box::new(e)))
        })
        .transpose()
    };
    let state: String = r.get("state")?;
    let event_id: String = r.get("event_id")?;
    let queue_id: String = r.get("queue_id")?;
    Ok(Transit {
        key: StoreKey {
            seq: r.get("seq")?,
            queue_id: queue_id.clone(),
        },
        event_id: event_id.parse().map_err(|e| bad("event_id", Box::new(e)))?,
        queue_id,
        host: r.get("host")?,
        state: state.parse().map_err(|e: String| bad("state", e.into()))?,
        since: time("since")?.ok_or_else(|| bad("since", "no time".into()))?,
        acknowledged_at: time("acknowledged_at")?,
        removed_at: time("removed_at")?,
        remote: r.get("remote")?,
        sent: r.get("sent")?,
        bounced: r.get("bounced")?,
        alerts: r.get("alerts")?,
    })
}

/// The transit record of the message `queue_id`: the ledger on SQLite belongs to one host,
/// so the queue id alone finds it.
pub(super) fn by_queue_id(conn: &Connection, queue_id: &str) -> rusqlite::Result<Option<Transit>> {
    conn.query_row(&by_queue_id_sql(), [queue_id], from_row)
        .optional()
}

/// Saves changed transit records and new deliveries in one transaction.
pub(super) fn record(
    conn: &mut Connection,
    transits: &[Transit],
    deliveries: &[Delivery],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
}

/// The transit messages `query` selects, oldest first, with their deliveries.
pub(super) fn list(conn: &Connection, query: &TransitQuery) -> rusqlite::Result<Vec<Lifecycle>> {
    let before = query.since_before.map(stamp).unwrap_or_else(|| "~".into());
    let only_open =
        query.open_only || (!query.states.is_empty() && query.states.iter().all(|s| s.is_open()));
    let (sql, values) = if only_open {
        (open_sql(), vec![before])
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
        (in_states_sql().replace('#', &marks), values)
    };
    let mut stmt = conn.prepare(&sql)?;
    let found = stmt
        .query_map(rusqlite::params_from_iter(values), from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    found
        .into_iter()
        .filter(|t| query.states.is_empty() || query.states.contains(&t.state))
        .map(|transit| lifecycle(conn, transit))
        .collect()
}

/// The lifecycles of those of `events` that are transit messages.
pub(super) fn lifecycles(conn: &Connection, events: &[Event]) -> rusqlite::Result<Vec<Lifecycle>> {
    let mut found = Vec::new();
    for e in events {
        let Some(queue_id) = e.queue_id.as_deref().filter(|_| e.transit) else {
            continue;
        };
        let id = e.id.to_string();
        let mut row = conn
            .query_row(&of_event_sql(), params![queue_id, id], from_row)
            .optional()?;
        if row.is_none() {
            row = conn
                .query_row(&of_moved_event_sql(), params![id], from_row)
                .optional()?;
        }
        if let Some(transit) = row {
            found.push(lifecycle(conn, transit)?);
        }
    }
    Ok(found)
}

fn lifecycle(conn: &Connection, transit: Transit) -> rusqlite::Result<Lifecycle> {
    let mut stmt = conn.prepare_cached(DELIVERIES_SQL)?;
    let deliveries = stmt
        .query_map([transit.key.seq], |r| r.get::<_, String>("body"))?
        .map(|body| decode::<Delivery>(&body?))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Lifecycle {
        transit,
        deliveries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::{assert_searches, scratch};

    /// Every transit lookup of the tracker and the commands, every change and deletion,
    /// finds its rows through an index. (Listing settled records reads the table: a command.)
    #[test]
    fn every_transit_lookup_uses_an_index() {
        let (_dir, conn) = scratch();
        for sql in [
            by_queue_id_sql(),
            of_event_sql(),
            open_sql(),
            UPDATE_TRANSIT.into(),
            REQUEUED_EVENT.into(),
            DELIVERIES_SQL.into(),
            DELETE_DELIVERIES.into(),
            DELETE_TRANSIT.into(),
        ] {
            assert_searches(&conn, &sql);
        }
    }
}
