//! `privacy-milter transit`: the transit messages the ledger follows, with their state (see
//! `crate::transit`), how long each was held and what the log said of each delivery attempt.
//! The JSON form is an interface: an array of objects with the fields of [`TransitView`].

use super::{CommandError, ListFormat};
use crate::{
    config::Config,
    event::stamp,
    store::{self, Lifecycle, TransitQuery},
    transit::{State, Status},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::{fmt::Write, time::Duration};

/// One transit message, as `transit` and the `ledger` commands show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransitView {
    pub queue_id: String,
    pub state: State,
    /// Until removal, or until now.
    pub held_for_seconds: u64,
    pub acknowledged_at: Option<String>,
    pub removed_at: Option<String>,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeliveryView {
    pub recipient_domain: Option<String>,
    pub status: Status,
    pub dsn: Option<String>,
    pub remote_queue_id: Option<String>,
    pub at: String,
}

impl TransitView {
    pub fn new(lifecycle: &Lifecycle, now: DateTime<Utc>) -> Self {
        let t = &lifecycle.transit;
        Self {
            queue_id: t.queue_id.clone(),
            state: t.state,
            held_for_seconds: t.held_for(now).as_secs(),
            acknowledged_at: t.acknowledged_at.map(stamp),
            removed_at: t.removed_at.map(stamp),
            deliveries: lifecycle
                .deliveries
                .iter()
                .map(|d| DeliveryView {
                    recipient_domain: d.recipient.domain.clone(),
                    status: d.status,
                    dsn: d.dsn.clone(),
                    remote_queue_id: d.remote_queue_id.clone(),
                    at: d.time.clone(),
                })
                .collect(),
        }
    }
}

/// Lists the transit messages in `states` (all when empty) held at least `held_longer_than`.
pub fn list(
    config: &Config,
    held_longer_than: Option<Duration>,
    states: &[State],
    format: ListFormat,
) -> Result<String, CommandError> {
    let now = Utc::now();
    let mut ledger = store::open_ledger(config)?;
    let since_before = held_longer_than
        .map(|d| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
    let found = ledger.transits(&TransitQuery {
        states: states.to_vec(),
        since_before,
        open_only: false,
    })?;
    let views: Vec<TransitView> = found
        .iter()
        .map(|l| TransitView::new(l, now))
        .filter(|v| held_longer_than.is_none_or(|d| v.held_for_seconds >= d.as_secs()))
        .collect();
    Ok(match format {
        ListFormat::Json => serde_json::to_string_pretty(&views).expect("views serialise") + "\n",
        ListFormat::Table => table(&views),
    })
}

fn table(views: &[TransitView]) -> String {
    let mut out = format!("{} transit messages\n", views.len());
    if views.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<16}  {:<12}  {:>10}  {:<24}  {:<24}  last attempt",
        "queue id", "state", "held", "acknowledged", "removed"
    );
    for v in views {
        let last = v.deliveries.last().map_or_else(
            || "-".to_string(),
            |d| {
                format!(
                    "{} {} {}",
                    d.status.as_str(),
                    d.dsn.as_deref().unwrap_or("-"),
                    d.recipient_domain.as_deref().unwrap_or("-")
                )
            },
        );
        let _ = writeln!(
            out,
            "{:<16}  {:<12}  {:>10}  {:<24}  {:<24}  {last}",
            v.queue_id,
            v.state.as_str(),
            crate::transit::human(Duration::from_secs(v.held_for_seconds)),
            v.acknowledged_at.as_deref().unwrap_or("-"),
            v.removed_at.as_deref().unwrap_or("-"),
        );
    }
    out
}
