//! The ledger's counts for the report and the audit, as in the SQLite ledger
//! (`store::sqlite::db::summary`): days in UTC, each a range on an indexed column.

use super::Database;
use crate::{
    event::stamp,
    store::{DayCount, Overdue, Result, TransitTimes},
    transit::State,
};
use chrono::{DateTime, Utc};

impl Database {
    fn day_counts(&self, column: &str, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        let rows = self.pool.get()?.query(
            format!(
                "SELECT to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD'), class, direction,
                        COUNT(*)
                 FROM events WHERE {column} >= $1 GROUP BY 1, 2, 3
                 ORDER BY 1, class COLLATE \"C\", direction COLLATE \"C\""
            )
            .as_str(),
            &[&from],
        )?;
        Ok(rows
            .iter()
            .map(|r| DayCount {
                day: r.get(0),
                class: r.get(1),
                direction: r.get(2),
                count: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    pub fn expiring_per_day(&self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        self.day_counts("expires_at", from)
    }

    pub fn recorded_per_day(&self, from: DateTime<Utc>) -> Result<Vec<DayCount>> {
        self.day_counts("time", from)
    }

    pub fn overdue(&self, before: DateTime<Utc>) -> Result<Overdue> {
        let row = self.pool.get()?.query_one(
            "SELECT COUNT(*), MIN(expires_at) FROM events WHERE expires_at < $1",
            &[&before],
        )?;
        Ok(Overdue {
            count: row.get::<_, i64>(0) as u64,
            oldest_expiry: row.get::<_, Option<DateTime<Utc>>>(1).map(stamp),
        })
    }

    pub fn transit_times(&self, since: DateTime<Utc>) -> Result<Vec<TransitTimes>> {
        let states: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        let rows = self.pool.get()?.query(
            "SELECT state, since, acknowledged_at FROM transit
             WHERE state = ANY($1) AND since >= $2",
            &[&states, &since],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(TransitTimes {
                    state: r.get::<_, String>(0).parse().ok()?,
                    since: r.get(1),
                    acknowledged_at: r.get(2),
                })
            })
            .collect())
    }
}
