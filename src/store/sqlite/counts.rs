//! The SQLite ledger's counts for the report and the audit: events per day of expiry and of
//! arrival, events held past their expiry, the times of transit messages. Each reads a range
//! through an index (checked below with `EXPLAIN QUERY PLAN`), so a report on months of mail
//! does not read every row.

use crate::{
    event::stamp,
    store::{DayCount, Overdue, TransitTimes},
};
use chrono::{DateTime, Utc};
use rusqlite::Connection;

const EXPIRING_SQL: &str = "SELECT substr(expires_at, 1, 10) AS day, class, direction,
        COUNT(*) AS count
    FROM events WHERE expires_at >= ?1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";
const RECORDED_SQL: &str = "SELECT substr(time, 1, 10) AS day, class, direction,
        COUNT(*) AS count
    FROM events WHERE time >= ?1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";
const OVERDUE_SQL: &str = "SELECT COUNT(*) AS count, MIN(expires_at) AS oldest_expiry
    FROM events WHERE expires_at < ?1";
/// The transit messages among the events since ?1: the events' time index serves the range,
/// each transit row is found by its key.
const TRANSIT_TIMES_SQL: &str =
    "SELECT t.state AS state, t.since AS since, t.acknowledged_at AS acknowledged_at
    FROM events e JOIN transit t ON t.queue_id = e.queue_id AND t.seq = e.seq
    WHERE e.time >= ?1";

fn day_counts(
    conn: &Connection,
    sql: &str,
    from: DateTime<Utc>,
) -> rusqlite::Result<Vec<DayCount>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([stamp(from)], |r| {
        Ok(DayCount {
            day: r.get("day")?,
            class: r.get("class")?,
            direction: r.get("direction")?,
            count: r.get::<_, i64>("count")? as u64,
        })
    })?;
    rows.collect()
}

pub(super) fn expiring_per_day(
    conn: &Connection,
    from: DateTime<Utc>,
) -> rusqlite::Result<Vec<DayCount>> {
    day_counts(conn, EXPIRING_SQL, from)
}

pub(super) fn recorded_per_day(
    conn: &Connection,
    from: DateTime<Utc>,
) -> rusqlite::Result<Vec<DayCount>> {
    day_counts(conn, RECORDED_SQL, from)
}

pub(super) fn overdue(conn: &Connection, before: DateTime<Utc>) -> rusqlite::Result<Overdue> {
    conn.query_row(OVERDUE_SQL, [stamp(before)], |r| {
        Ok(Overdue {
            count: r.get::<_, i64>("count")? as u64,
            oldest_expiry: r.get("oldest_expiry")?,
        })
    })
}

/// Records whose state or times cannot be read are left out of the report.
pub(super) fn transit_times(
    conn: &Connection,
    since: DateTime<Utc>,
) -> rusqlite::Result<Vec<TransitTimes>> {
    let time = |text: Option<String>| {
        text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let mut stmt = conn.prepare(TRANSIT_TIMES_SQL)?;
    let rows = stmt.query_map([stamp(since)], |r| {
        Ok((
            r.get::<_, String>("state")?,
            r.get::<_, String>("since")?,
            r.get::<_, Option<String>>("acknowledged_at")?,
        ))
    })?;
    let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(state, since, acknowledged)| {
            Some(TransitTimes {
                state: state.parse().ok()?,
                since: time(Some(since))?,
                acknowledged_at: time(acknowledged),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::{assert_searches, scratch};

    /// Each count reads its range through an index (the same check as the lookups').
    #[test]
    fn every_count_uses_an_index() {
        let (_dir, conn) = scratch();
        for sql in [EXPIRING_SQL, RECORDED_SQL, OVERDUE_SQL, TRANSIT_TIMES_SQL] {
            assert_searches(&conn, sql);
        }
    }
}
