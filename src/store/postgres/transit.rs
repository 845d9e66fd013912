//! The PostgreSQL ledger's transit records (one per transit message, made with its event and
//! changed by tracking) and the delivery attempts logged for them.

use super::events::{decode, instant};
use crate::{
    event::Event,
    store::{Lifecycle, Result, StoreError, TransitQuery},
    transit::{Delivery, State, StoreKey, Transit},
};
use postgres::{Client, Row, Transaction};
use uuid::Uuid;

/// A transit record's columns and its event's id, as [`from_row`] reads them by name, from
/// `transit t JOIN events e`.
const TRANSIT_COLUMNS: &str = "t.seq, t.queue_id, t.host, t.state, t.since, t.acknowledged_at,
    t.removed_at, t.remote, t.sent, t.bounced, t.alerts, e.id AS event_id";

/// The record a new transit message starts with, beside its event (row `seq`).
pub(super) fn insert(tx: &mut Transaction<'_>, seq: i64, t: &Transit) -> Result<()> {
    let counts = [t.remote, t.sent, t.bounced, t.alerts].map(|n| n as i32);
    tx.execute(
        "INSERT INTO transit (seq, queue_id, host, state, since, acknowledged_at,
             removed_at, remote, sent, bounced, alerts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
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
    Ok(())
}

/// Deletes the transit records and deliveries of the events in rows `seqs`.
pub(super) fn delete(tx: &mut Transaction<'_>, seqs: &[i64]) -> Result<()> {
    for table in ["deliveries", "transit"] {
        tx.execute(
            format!("DELETE FROM {table} WHERE seq = ANY($1)").as_str(),
            &[&seqs],
        )?;
    }
    Ok(())
}

/// A transit record from a row of [`TRANSIT_COLUMNS`].
fn from_row(r: &Row) -> Result<Transit> {
    let state: String = r.try_get("state")?;
    let count = |column: &str| -> Result<u32> { Ok(r.try_get::<_, i32>(column)?.max(0) as u32) };
    let queue_id: String = r.try_get("queue_id")?;
    Ok(Transit {
        key: StoreKey {
            seq: r.try_get("seq")?,
            queue_id: queue_id.clone(),
        },
        queue_id,
        host: r.try_get("host")?,
        state: state.parse().map_err(StoreError::Other)?,
        since: r.try_get("since")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        removed_at: r.try_get("removed_at")?,
        remote: count("remote")?,
        sent: count("sent")?,
        bounced: count("bounced")?,
        alerts: count("alerts")?,
        event_id: r.try_get("event_id")?,
    })
}

/// The transit record of the message `queue_id` accepted on one of `hosts` (any host when
/// `hosts` is empty): the latest still open, else the latest.
pub(super) fn by_queue_id(
    client: &mut Client,
    queue_id: &str,
    hosts: &[String],
) -> Result<Option<Transit>> {
    let row = client.query_opt(
        format!(
            "SELECT {TRANSIT_COLUMNS} FROM transit t JOIN events e ON e.seq = t.seq
             WHERE t.queue_id = $1 AND (cardinality($2::text[]) = 0 OR t.host = ANY($2))
             ORDER BY t.state IN ('pending', 'deferred', 'acknowledged') DESC, t.seq DESC
             LIMIT 1"
        )
        .as_str(),
        &[&queue_id, &hosts],
    )?;
    row.map(|r| from_row(&r)).transpose()
}

/// Saves changed transit records and new deliveries in one transaction.
pub(super) fn record(
    client: &mut Client,
    transits: &[Transit],
    deliveries: &[Delivery],
) -> Result<()> {
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
pub(super) fn list(client: &mut Client, query: &TransitQuery) -> Result<Vec<Lifecycle>> {
    let states: Vec<&str> = State::ALL
        .iter()
        .filter(|s| query.states.is_empty() || query.states.contains(s))
        .filter(|s| !query.open_only || s.is_open())
        .map(|s| s.as_str())
        .collect();
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
        .map(|r| lifecycle(client, from_row(r)?))
        .collect()
}

/// The lifecycles of those of `events` that are transit messages.
pub(super) fn lifecycles(client: &mut Client, events: &[Event]) -> Result<Vec<Lifecycle>> {
    let events: Vec<Uuid> = events.iter().filter(|e| e.transit).map(|e| e.id).collect();
    let rows = client.query(
        format!(
            "SELECT {TRANSIT_COLUMNS} FROM transit t JOIN events e ON e.seq = t.seq
             WHERE e.id = ANY($1) ORDER BY t.since, t.seq"
        )
        .as_str(),
        &[&events],
    )?;
    rows.iter()
        .map(|r| lifecycle(client, from_row(r)?))
        .collect()
}

fn lifecycle(client: &mut Client, transit: Transit) -> Result<Lifecycle> {
    let rows = client.query(
        "SELECT body FROM deliveries WHERE seq = $1 ORDER BY time, id",
        &[&transit.key.seq],
    )?;
    let deliveries = rows
        .iter()
        .map(|r| decode("a delivery", r.try_get("body")?))
        .collect::<Result<Vec<Delivery>>>()?;
    Ok(Lifecycle {
        transit,
        deliveries,
    })
}
