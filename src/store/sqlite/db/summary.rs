//! The ledger's counts for the report and the audit: events per day of expiry and of arrival,
//! events held past their expiry, the times of transit messages. Each reads a range through
//! an index (checked below with `EXPLAIN QUERY PLAN`), so a report on months of mail does not
//! read every row.

use super::Db;
use crate::{
    event::stamp,
    store::{DayCount, Overdue, Result, TransitTimes},
};
use chrono::{DateTime, Utc};
use rusqlite::params_from_iter;

const EXPIRING_SQL: &str = "SELECT substr(expires_at, 1, 10), class, direction, COUNT(*)
    FROM events WHERE expires_at >= ?1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";
const RECORDED_SQL: &str = "SELECT substr(time, 1, 10), class, direction, COUNT(*)
    FROM events WHERE time >= ?1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";
const OVERDUE_SQL: &str = "SELECT COUNT(*), MIN(expires_at) FROM events WHERE expires_at < ?1";
/// The transit messages among the events since ?1: the events' time index serves the range,
/// each transit row is found by its key.
const TRANSIT_TIMES_SQL: &str = "SELECT t.state, t.since, t.acknowledged_at
    FROM events e JOIN transit t ON t.queue_id = e.queue_id AND t.seq = e.seq
    WHERE e.time >= ?1";

impl Db {
    fn day_counts(&self, sql: &str, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        let result = (|| {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([stamp(from)], |r| {
                Ok(DayCount {
                    day: r.get(0)?,
                    class: r.get(1)?,
                    direction: r.get(2)?,
                    count: r.get::<_, i64>(3)? as u64,
                })
            })?;
            rows.collect()
        })();
        self.sql(result)
    }

    pub fn expiring_per_day(&self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        self.day_counts(EXPIRING_SQL, from)
    }

    pub fn recorded_per_day(&self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        self.day_counts(RECORDED_SQL, from)
    }

    pub fn overdue(&self, before: DateTime<Utc>) -> Result<Overdue> {
        let result = self.conn.query_row(OVERDUE_SQL, [stamp(before)], |r| {
            Ok(Overdue {
                count: r.get::<_, i64>(0)? as u64,
                oldest_expiry: r.get(1)?,
            })
        });
        self.sql(result)
    }

    pub fn transit_times(&self, since: DateTime<Utc>) -> Result<Vec<TransitTimes>> {
        let values = vec![stamp(since)];
        let time = |text: Option<String>| {
            text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let result = (|| {
            let mut stmt = self.conn.prepare(TRANSIT_TIMES_SQL)?;
            let rows = stmt.query_map(params_from_iter(values), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        Ok(self
            .sql(result)?
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each count reads its range through an index (the same check as
    /// `every_lookup_uses_an_index` for the lookups).
    #[test]
    fn every_count_uses_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Db::open(&dir.path().join("ledger.sqlite")).unwrap();
        for sql in [EXPIRING_SQL, RECORDED_SQL, OVERDUE_SQL, TRANSIT_TIMES_SQL] {
            super::super::tests::assert_searches(&ledger.conn, sql);
        }
    }

    /// Counts per day, by class and direction; overdue events; transit times.
    #[test]
    fn counts_per_day() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("ledger.sqlite")).unwrap();
        let at = |queue_id: &str, time: &str, expires: &str| {
            let mut e = crate::event::sample(queue_id, "eve@remote.example");
            e.time = time.into();
            e.retention.expires_at = expires.into();
            e
        };
        db.insert(&[
            at("4A", "2026-11-01T10:00:00.000Z", "2027-01-30T10:00:00.000Z"),
            at("4B", "2026-11-01T23:00:00.000Z", "2027-01-30T23:00:00.000Z"),
            at("4C", "2026-11-02T01:00:00.000Z", "2026-11-03T01:00:00.000Z"),
        ])
        .unwrap();
        let from = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let recorded = db.recorded_per_day(from("2026-11-01T00:00:00Z")).unwrap();
        let days: Vec<(&str, u64)> = recorded.iter().map(|d| (d.day.as_str(), d.count)).collect();
        assert_eq!(days, [("2026-11-01", 2), ("2026-11-02", 1)]);
        let expiring = db.expiring_per_day(from("2027-01-01T00:00:00Z")).unwrap();
        assert_eq!(expiring.len(), 1);
        assert_eq!(
            (expiring[0].day.as_str(), expiring[0].count),
            ("2027-01-30", 2)
        );
        let overdue = db.overdue(from("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!(overdue.count, 1);
        assert_eq!(
            overdue.oldest_expiry.as_deref(),
            Some("2026-11-03T01:00:00.000Z")
        );
        assert!(db
            .transit_times(from("2026-01-01T00:00:00Z"))
            .unwrap()
            .is_empty());
    }
}
