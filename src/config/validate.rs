//! Checks of the settings alone: ranges, and keys that must agree with each other. No I/O:
//! what the settings name (files, groups, keys) is read by [`super::Config::resolve`].

use super::{KeyProblem, Settings, SinkKind};

pub(super) fn check(s: &Settings) -> Result<(), KeyProblem> {
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
                format!(
                    "is not a PostgreSQL connection URL: {}",
                    super::conninfo::parse_error(&pg.url, &e)
                ),
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
    if s.needs_keys() && s.privacy.key_rotation.0.is_zero() {
        return Err(("privacy.key_rotation", "must be longer than 0s".into()));
    }
    Ok(())
}
