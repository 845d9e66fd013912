//! Checks of the settings alone: ranges, and keys that must agree with each other. No I/O:
//! what the settings name (files, groups, keys) is read by [`super::Config::resolve`].

use super::{values::Period, KeyProblem, Settings, SinkKind};
use std::time::Duration;

/// Most events that may wait in the async queue. Each holds its memory while it waits, and
/// tokio's semaphore, which counts the places, holds at most 2^61 of them (it panics beyond).
pub const MAX_QUEUE_SIZE: usize = 1_000_000;
/// Most PostgreSQL connections: the writer uses few at once, and PostgreSQL's own default
/// `max_connections` is 100.
pub const MAX_POOL_SIZE: usize = 100;
/// Longest connection attempt: mail waits for the writer while it connects, and the kernel's
/// TCP_USER_TIMEOUT, set to three times this, takes at most 2^31-1 ms (24.8 days).
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest statement_timeout: PostgreSQL takes at most 2^31-1 ms (24.8 days), and refuses
/// every connection that asks for more.
pub const MAX_STATEMENT_TIMEOUT: Duration = Duration::from_secs(24 * 86400);
/// Longest purge interval: an expired event outlives its retention by up to this much.
pub const MAX_PURGE_INTERVAL: Duration = Duration::from_secs(86400);

/// `period` is at most `max`, or says so.
fn at_most(key: &'static str, period: Period, max: Duration) -> Result<(), KeyProblem> {
    if period.0 > max {
        return Err((
            key,
            format!("{period} is too long: at most {}", Period(max)),
        ));
    }
    Ok(())
}

/// The most descriptors a Linux process can have by default (`fs.nr_open`): more connections
/// could never be open at once.
const MAX_CONNECTIONS: usize = 1 << 20;

pub(super) fn check(s: &Settings) -> Result<(), KeyProblem> {
    if !(1..=MAX_CONNECTIONS).contains(&s.max_connections) {
        return Err((
            "max_connections",
            format!("must be from 1 to {MAX_CONNECTIONS}"),
        ));
    }
    if s.session_timeout.0.is_zero() {
        return Err(("session_timeout", "must be longer than 0s".into()));
    }
    let oip = &s.rules.originating_ip;
    if oip.ipv4_prefix > 32 {
        return Err((
            "rules.originating_ip.ipv4_prefix",
            "must be at most 32".into(),
        ));
    }
    if oip.ipv6_prefix > 128 {
        return Err((
            "rules.originating_ip.ipv6_prefix",
            "must be at most 128".into(),
        ));
    }
    if s.privacy.ipv4_prefix > 32 {
        return Err(("privacy.ipv4_prefix", "must be at most 32".into()));
    }
    if s.privacy.ipv6_prefix > 128 {
        return Err(("privacy.ipv6_prefix", "must be at most 128".into()));
    }
    if oip.header.matches(s.rules.transit_tag.header.as_str()) {
        return Err((
            "rules.transit_tag.header",
            "must differ from rules.originating_ip.header".into(),
        ));
    }
    if s.domains.local_mailers.iter().any(|m| m.trim().is_empty()) {
        return Err((
            "domains.local_mailers",
            "contains an empty mailer name".into(),
        ));
    }
    let sinks = &s.events.sinks;
    // Each sink would get every event once per mention.
    for (i, sink) in sinks.iter().enumerate() {
        if sinks[..i].contains(sink) {
            return Err((
                "events.sinks",
                format!(
                    "\"{}\" is named twice; name each sink once",
                    super::name(sink)
                ),
            ));
        }
    }
    if s.events.enabled && sinks.is_empty() {
        return Err((
            "events.sinks",
            "is empty while events.enabled is true; name a sink or set events.enabled = false"
                .into(),
        ));
    }
    if sinks.contains(&SinkKind::Jsonl) && s.events.jsonl.path.as_os_str().is_empty() {
        return Err((
            "events.jsonl.path",
            "is empty but the jsonl sink is enabled".into(),
        ));
    }
    if sinks.contains(&SinkKind::Ledger) && s.events.ledger.path.as_os_str().is_empty() {
        return Err((
            "events.ledger.path",
            "is empty but the ledger sink is enabled".into(),
        ));
    }
    if sinks.contains(&SinkKind::Postgres) {
        let pg = &s.events.postgres;
        if pg.url.trim().is_empty() {
            return Err((
                "events.postgres.url",
                "is empty but the postgres sink is enabled".into(),
            ));
        }
        if let Err(e) = pg.url.parse::<postgres::Config>() {
            return Err((
                "events.postgres.url",
                format!(
                    "is not a PostgreSQL connection URL: {}",
                    super::conninfo::parse_error(&pg.url, &e)
                ),
            ));
        }
        if pg.pool_size == 0 {
            return Err(("events.postgres.pool_size", "must be at least 1".into()));
        }
        if pg.pool_size > MAX_POOL_SIZE {
            return Err((
                "events.postgres.pool_size",
                format!("{} is too many: at most {MAX_POOL_SIZE}", pg.pool_size),
            ));
        }
        if pg.connect_timeout.0.is_zero() {
            return Err((
                "events.postgres.connect_timeout",
                "must be longer than 0s".into(),
            ));
        }
        at_most(
            "events.postgres.connect_timeout",
            pg.connect_timeout,
            MAX_CONNECT_TIMEOUT,
        )?;
        at_most(
            "events.postgres.statement_timeout",
            pg.statement_timeout,
            MAX_STATEMENT_TIMEOUT,
        )?;
        if pg.spool.as_os_str().is_empty() {
            return Err((
                "events.postgres.spool",
                "is empty but the postgres sink is enabled".into(),
            ));
        }
    }
    if s.events.queue_size == 0 {
        return Err(("events.queue_size", "must be at least 1".into()));
    }
    if s.events.queue_size > MAX_QUEUE_SIZE {
        return Err((
            "events.queue_size",
            format!(
                "{} is too many: at most {MAX_QUEUE_SIZE}",
                s.events.queue_size
            ),
        ));
    }
    if s.retention.purge_interval.0.is_zero() {
        return Err(("retention.purge_interval", "must be longer than 0s".into()));
    }
    at_most(
        "retention.purge_interval",
        s.retention.purge_interval,
        MAX_PURGE_INTERVAL,
    )?;
    for (key, value) in [
        ("metrics.listen", &s.metrics.listen),
        ("metrics.track_listen", &s.metrics.track_listen),
    ] {
        if !value.is_empty() && value.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                key,
                format!("{value:?} is not ADDRESS:PORT (e.g. \"127.0.0.1:9465\", \"[::1]:9465\")"),
            ));
        }
    }
    if !s.metrics.listen.is_empty() && s.metrics.listen == s.metrics.track_listen {
        return Err((
            "metrics.track_listen",
            "must differ from metrics.listen: the daemon and the tracker each serve their own"
                .into(),
        ));
    }
    if s.retention.mta_logs.0.is_zero() {
        return Err(("retention.mta_logs", "must be longer than 0s".into()));
    }
    check_mta_logs(s)?;
    let t = &s.tracking;
    if t.queue_interval.0.is_zero() {
        return Err(("tracking.queue_interval", "must be longer than 0s".into()));
    }
    if t.alert_after.0.is_zero() {
        return Err(("tracking.alert_after", "must be longer than 0s".into()));
    }
    if t.source == super::LogSource::File && t.path.as_os_str().is_empty() {
        return Err((
            "tracking.path",
            "is empty but tracking.source is \"file\"".into(),
        ));
    }
    if t.state.as_os_str().is_empty() {
        return Err(("tracking.state", "must name a file".into()));
    }
    if s.needs_keys() && s.privacy.key_rotation.0.is_zero() {
        return Err(("privacy.key_rotation", "must be longer than 0s".into()));
    }
    Ok(())
}

/// `[mta_logs]`, with a copy (without one the raw window means nothing: the raw log is kept
/// `retention.mta_logs`): the raw window within the period logs are kept at all, and a copy
/// that can neither overwrite the log nor pass for one of its rotations.
fn check_mta_logs(s: &Settings) -> Result<(), KeyProblem> {
    let m = &s.mta_logs;
    if !m.copies() {
        return Ok(());
    }
    // The copy is kept in a file per day, deleted whole: shorter periods cannot be kept.
    if s.retention.mta_logs.0 < DAY {
        return Err((
            "retention.mta_logs",
            format!(
                "{} is shorter than a day, the unit the copy in mta_logs.copy is kept and deleted in",
                s.retention.mta_logs
            ),
        ));
    }
    // Every MTA line is written raw before anything reads it: "none kept raw" cannot be made
    // true, and a window shorter than the copy's lag could lose lines from the copy.
    if m.raw_window.0 < super::MtaLogs::COPY_LAG {
        return Err((
            "mta_logs.raw_window",
            format!(
                "{} is shorter than {}, the time the copy may lag behind the log: the MTA writes every line raw before the tracker reads it, and a shorter window could delete lines before they are copied (docs/log-retention.md, \"A window shorter than a day\")",
                m.raw_window,
                super::Period(super::MtaLogs::COPY_LAG)
            ),
        ));
    }
    if m.raw_window.0 > s.retention.mta_logs.0 {
        return Err((
            "mta_logs.raw_window",
            format!(
                "{} is longer than retention.mta_logs ({}): raw lines cannot be kept longer than the log at all",
                m.raw_window, s.retention.mta_logs
            ),
        ));
    }
    if m.copy.is_relative() {
        return Err((
            "mta_logs.copy",
            format!("{} is not an absolute path", m.copy.display()),
        ));
    }
    let t = &s.tracking;
    let log_dir = t.path.parent().filter(|d| !d.as_os_str().is_empty());
    if t.source == super::LogSource::File && log_dir.is_some_and(|d| same_path(d, &m.copy)) {
        return Err((
            "mta_logs.copy",
            format!(
                "{} is the directory of tracking.path: the copy's files would be taken for the log's own rotations",
                m.copy.display()
            ),
        ));
    }
    Ok(())
}

const DAY: Duration = Duration::from_secs(86400);

/// The same path, but for trailing slashes and `.` components.
fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    a.components().eq(b.components())
}
