//! The ledger's findings: nothing held past its expiry by more than `purge_interval`, and no
//! transit mail held longer than `tracking.alert_after` (when tracking is enabled).

use super::{span, Finding};
use crate::{
    config::{Config, SinkKind},
    store::{self, Ledger, StoreError, TransitQuery},
};
use chrono::{DateTime, Utc};
use std::path::Path;

/// Runs `f` with the ledger. As root, on a SQLite ledger that belongs to another user (the
/// daemon's), under that user's ids: SQLite may create the `-wal` and `-shm` files, which must
/// stay the daemon's.
pub fn as_ledger_owner<T>(
    config: &Config,
    f: impl FnOnce(&mut dyn Ledger) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    use nix::unistd::{getegid, geteuid, setegid, seteuid, Gid, Uid};
    use std::os::unix::fs::MetadataExt;
    let path = &config.events.ledger.path;
    let owner = (!store::ledger_on_postgres(config) && geteuid().is_root())
        .then(|| std::fs::metadata(path).ok())
        .flatten()
        .filter(|md| md.uid() != 0)
        .map(|md| (Uid::from_raw(md.uid()), Gid::from_raw(md.gid())));
    let Some((uid, gid)) = owner else {
        return f(store::open_ledger(config)?.as_mut());
    };
    let switch = |uid: Uid, gid: Gid| -> Result<(), StoreError> {
        setegid(gid)
            .and_then(|()| seteuid(uid))
            .map_err(|e| StoreError::io(path, std::io::Error::from(e)))
    };
    let (root_uid, root_gid) = (geteuid(), getegid());
    switch(uid, gid)?;
    let result = store::open_ledger(config).and_then(|mut ledger| f(ledger.as_mut()));
    // Back to root: uid first, then the group (only root may change it).
    seteuid(root_uid)
        .and_then(|()| setegid(root_gid))
        .map_err(|e| StoreError::io(path, std::io::Error::from(e)))?;
    result
}

/// Whether events are kept in a ledger at all.
pub(super) fn has_ledger(config: &Config) -> bool {
    let sinks = &config.events.sinks;
    config.events.enabled
        && (sinks.contains(&SinkKind::Ledger) || sinks.contains(&SinkKind::Postgres))
}

pub fn expiry(config: &Config, now: DateTime<Utc>) -> Vec<Finding> {
    const CHECK: &str = "ledger.expiry";
    if !has_ledger(config) {
        return vec![Finding::holds(
            CHECK,
            "no ledger: events are kept in no sink that holds them",
        )];
    }
    let grace = config.retention.purge_interval;
    let before = now - chrono::Duration::from_std(grace.0).unwrap_or_default();
    let overdue = match as_ledger_owner(config, |ledger| ledger.overdue(before)) {
        Ok(overdue) => overdue,
        Err(StoreError::NoLedger(path)) if !Path::new(&path).exists() => {
            return vec![Finding::holds(
                CHECK,
                format!("no ledger yet at {} (events.ledger.path)", path.display()),
            )]
        }
        Err(e) => {
            return vec![Finding::fails(
                CHECK,
                format!("cannot read the ledger: {e}"),
                "check events.ledger.path or events.postgres.url",
            )]
        }
    };
    if overdue.count == 0 {
        return vec![Finding::holds(
            CHECK,
            format!(
                "no event is held more than retention.purge_interval ({}) past its expiry",
                span(grace.0)
            ),
        )];
    }
    let purger = if store::ledger_on_postgres(config) {
        "no daemon purges a PostgreSQL ledger it does not write to: enable privacy-milter-purge.timer on one host"
    } else {
        "the daemon purges every retention.purge_interval: is it running?"
    };
    vec![Finding::fails(
        CHECK,
        format!(
            "{} events are held more than retention.purge_interval ({}) past their expiry; the first expired at {}",
            overdue.count,
            span(grace.0),
            overdue.oldest_expiry.as_deref().unwrap_or("-")
        ),
        format!("privacy-milter ledger purge deletes them now; {purger}"),
    )]
}

pub fn transit(config: &Config, now: DateTime<Utc>) -> Vec<Finding> {
    const CHECK: &str = "transit.held";
    let t = &config.tracking;
    if !t.enabled {
        return vec![Finding::holds(
            CHECK,
            "tracking.enabled is false: the policy claims no record of transit mail",
        )];
    }
    if !t.state.exists() {
        return vec![Finding::fails(
            CHECK,
            format!(
                "tracking.enabled is true but the tracker has never run: no {} (tracking.state)",
                t.state.display()
            ),
            "systemctl enable --now privacy-milter-track.service (docs/transit.md)",
        )];
    }
    let before = now - chrono::Duration::from_std(t.alert_after.0).unwrap_or_default();
    let query = TransitQuery {
        states: Vec::new(),
        since_before: Some(before),
        open_only: true,
    };
    match as_ledger_owner(config, |ledger| ledger.transits(&query)) {
        Err(e) => vec![Finding::fails(
            CHECK,
            format!("cannot read the ledger: {e}"),
            "check events.ledger.path or events.postgres.url",
        )],
        Ok(held) if held.is_empty() => vec![Finding::holds(
            CHECK,
            format!(
                "no transit mail is held longer than tracking.alert_after ({})",
                span(t.alert_after.0)
            ),
        )],
        Ok(held) => {
            let ids: Vec<String> = held
                .iter()
                .take(10)
                .map(|l| format!("{} ({})", l.transit.queue_id, l.transit.state))
                .collect();
            vec![Finding::fails(
                CHECK,
                format!(
                    "{} transit messages are held longer than tracking.alert_after ({}): {}{}",
                    held.len(),
                    span(t.alert_after.0),
                    ids.join(", "),
                    if held.len() > ids.len() { ", ..." } else { "" }
                ),
                format!(
                    "see privacy-milter transit --held-longer-than {} and the MTA's queue (postqueue -p); a message the tracker missed leaves this list at its next queue check",
                    t.alert_after
                ),
            )]
        }
    }
}
