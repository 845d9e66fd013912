//! The PostgreSQL ledger's counts for the report and the audit, as in the SQLite ledger
//! (`store::sqlite::counts`): days in UTC, each a range on an indexed column.

use crate::{
    event::stamp,
    store::{DayCount, Overdue, Result, TransitTimes},
    transit::State,
};
use chrono::{DateTime, Utc};
use postgres::Client;

fn day_counts(client: &mut Client, column: &str, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
    let rows = client.query(
        format!(
            "SELECT to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, class, direction,
                    COUNT(*) AS count
             FROM events WHERE {column} >= $1 GROUP BY 1, 2, 3
             ORDER BY 1, class COLLATE \"C\", direction COLLATE \"C\""
        )
        .as_str(),
        &[&from],
    )?;
    rows.iter()
        .map(|r| {
            Ok(DayCount {
                day: r.try_get("day")?,
                class: r.try_get("class")?,
                direction: r.try_get("direction")?,
                count: r.try_get::<_, i64>("count")? as u64,
            })
        })
        .collect()
}

pub(super) fn expiring_per_day(client: &mut Client, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
    day_counts(client, "expires_at", from)
}

pub(super) fn recorded_per_day(client: &mut Client, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
    day_counts(client, "time", from)
}

pub(super) fn overdue(client: &mut Client, before: DateTime<Utc>) -> Result<Overdue> {
    let row = client.query_one(
        "SELECT COUNT(*) AS count, MIN(expires_at) AS oldest_expiry
         FROM events WHERE expires_at < $1",
        &[&before],
    )?;
    Ok(Overdue {
        count: row.try_get::<_, i64>("count")? as u64,
        oldest_expiry: row
            .try_get::<_, Option<DateTime<Utc>>>("oldest_expiry")?
            .map(stamp),
    })
}

/// Records whose state cannot be read are left out of the report.
pub(super) fn transit_times(
    client: &mut Client,
    since: DateTime<Utc>,
) -> Result<Vec<TransitTimes>> {
    let states: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
    let rows = client.query(
        "SELECT state, since, acknowledged_at FROM transit
         WHERE state = ANY($1) AND since >= $2",
        &[&states, &since],
    )?;
    let mut times = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Ok(state) = r.try_get::<_, String>("state")?.parse() {
            times.push(TransitTimes {
                state,
                since: r.try_get("since")?,
                acknowledged_at: r.try_get("acknowledged_at")?,
            });
        }
    }
    Ok(times)
}
