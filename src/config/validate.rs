//! Checks of the settings alone: ranges, and keys that must agree with each other. No I/O:
//! what the settings name (files, groups, keys) is read by [`super::Config::resolve`].

use super::{KeyProblem, Settings, SinkKind};

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
                format!("is not a PostgreSQL connection URL: {e}"),
            ));
        }
        if pg.pool_size == 0 {
            return Err(("events.postgres.pool_size", "must be at least 1".into()));
        }
        if pg.connect_timeout.0.is_zero() {
            return Err((
                "events.postgres.connect_timeout",
                "must be longer than 0s".into(),
            ));
        }
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
    if s.retention.purge_interval.0.is_zero() {
        return Err(("retention.purge_interval", "must be longer than 0s".into()));
    }
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
