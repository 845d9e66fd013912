//! Findings about the milter's own setup: who the policy names, the key ring, and where the
//! events go.

use super::{span, Finding};
use crate::{
    config::{Config, LogDestination, SinkKind},
    keys,
};
use chrono::{DateTime, Utc};
use std::os::unix::fs::PermissionsExt;

pub fn policy_named(config: &Config) -> Vec<Finding> {
    const CHECK: &str = "policy.contact";
    let p = &config.policy;
    let missing: Vec<&str> = [("policy.name", &p.name), ("policy.contact", &p.contact)]
        .into_iter()
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(k, _)| k)
        .collect();
    if missing.is_empty() {
        vec![Finding::holds(
            CHECK,
            format!("the policy names {} and the contact {}", p.name, p.contact),
        )]
    } else {
        vec![Finding::fails(
            CHECK,
            format!(
                "{} empty: the policy names nobody to ask",
                missing.join(" and ")
            ),
            "set [policy] name and contact in the configuration",
        )]
    }
}

/// The key directory and files private; no retired key kept past the longest retention (and
/// the purge that destroys it).
pub fn keys(config: &Config, now: DateTime<Utc>) -> Vec<Finding> {
    let dir = &config.privacy.keys;
    if !config.needs_keys() && !dir.exists() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    let mut loose = Vec::new();
    match std::fs::metadata(dir) {
        Err(_) => {
            findings.push(Finding::holds(
                "keys.modes",
                format!("{}: no key ring yet (the daemon makes it)", dir.display()),
            ));
            return findings;
        }
        Ok(md) if md.permissions().mode() & 0o077 != 0 => loose.push(format!(
            "{} is {:04o}",
            dir.display(),
            md.permissions().mode() & 0o7777
        )),
        Ok(_) => {}
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(md) = entry.metadata() {
            if md.is_file() && md.permissions().mode() & 0o077 != 0 {
                loose.push(format!(
                    "{} is {:04o}",
                    entry.path().display(),
                    md.permissions().mode() & 0o7777
                ));
            }
        }
    }
    findings.push(if loose.is_empty() {
        Finding::holds(
            "keys.modes",
            format!(
                "{}: the directory is private (0700 or tighter) and so is every file in it",
                dir.display()
            ),
        )
    } else {
        Finding::fails(
            "keys.modes",
            format!("others may read the key ring: {}", loose.join(", ")),
            format!("chmod 0700 {0} && chmod 0600 {0}/*", dir.display()),
        )
    });
    if !loose.is_empty() {
        return findings;
    }
    // A retired key goes at the first purge after the longest retention has passed.
    let keep = config.retention.longest() + config.retention.purge_interval.0;
    let mut old = Vec::new();
    for kind in [keys::Kind::Hmac, keys::Kind::Aead] {
        let ring = match keys::load(dir, kind) {
            Ok(ring) => ring,
            Err(e) => {
                findings.push(Finding::fails(
                    "keys.retired",
                    e.to_string(),
                    "remove or repair the file",
                ));
                return findings;
            }
        };
        for pair in ring.keys.windows(2) {
            let retired = (now - pair[1].created).to_std().unwrap_or_default();
            if retired > keep {
                old.push(format!("{} (retired {} ago)", pair[0].id, span(retired)));
            }
        }
    }
    findings.push(if old.is_empty() {
        Finding::holds(
            "keys.retired",
            format!(
                "no retired key is older than the longest retention ({}) and a purge interval",
                span(config.retention.longest())
            ),
        )
    } else {
        Finding::fails(
            "keys.retired",
            format!(
                "retired keys kept past the longest retention ({}): {}; pseudonyms made with them can still be linked",
                span(config.retention.longest()),
                old.join(", ")
            ),
            "privacy-milter ledger purge destroys them; the daemon does so every retention.purge_interval: is it running?",
        )
    });
    findings
}

/// Every place events go: local files, the log, or a PostgreSQL host. Personal data stays on
/// the operator's hosts; it must not cross a network in clear.
pub fn destinations(config: &Config) -> Vec<Finding> {
    const CHECK: &str = "data.destinations";
    if !config.events.enabled {
        return vec![Finding::holds(
            CHECK,
            "events are off: none leave the milter",
        )];
    }
    let mut places = Vec::new();
    let mut clear = Vec::new();
    for sink in &config.events.sinks {
        match sink {
            SinkKind::Ledger => places.push(format!(
                "ledger: local file {}",
                config.events.ledger.path.display()
            )),
            SinkKind::Jsonl => places.push(format!(
                "jsonl: local file {}",
                config.events.jsonl.path.display()
            )),
            SinkKind::Log => places.push(match config.log.destination {
                LogDestination::Stderr => {
                    "log: the milter's standard error (under systemd, the journal)".to_string()
                }
                LogDestination::Journald => "log: the local journal".to_string(),
                LogDestination::Syslog => format!(
                    "log: the local syslog socket {}",
                    config.log.syslog_socket.display()
                ),
            }),
            SinkKind::Postgres => {
                let pg = &config.events.postgres;
                let hosts = pg_hosts(&pg.url);
                let local = hosts.iter().all(|(_, local)| *local);
                let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
                let tls = if pg.wants_tls() {
                    "TLS, certificate verified"
                } else {
                    "no TLS"
                };
                places.push(format!(
                    "postgres: {} ({tls}); spool: local file {}",
                    names.join(", "),
                    pg.spool.display()
                ));
                if !local && !pg.wants_tls() {
                    clear.push(names.join(", "));
                }
            }
        }
    }
    let detail = format!("events go to: {}", places.join("; "));
    if clear.is_empty() {
        vec![Finding::holds(CHECK, detail)]
    } else {
        vec![Finding::fails(
            CHECK,
            format!("{detail}; events cross the network in clear to {}", clear.join(", ")),
            "add sslmode=require to events.postgres.url (and events.postgres.ca_file for a private CA)",
        )]
    }
}

/// The hosts of a PostgreSQL URL, each with whether it is this machine.
fn pg_hosts(url: &str) -> Vec<(String, bool)> {
    use postgres::config::Host;
    let Ok(config) = url.parse::<postgres::Config>() else {
        return Vec::new();
    };
    let hosts: Vec<(String, bool)> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => {
                let local = name == "localhost"
                    || name
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                (format!("host {name}"), local)
            }
            Host::Unix(path) => (format!("local socket {}", path.display()), true),
        })
        .collect();
    if hosts.is_empty() {
        vec![("the default local socket".to_string(), true)]
    } else {
        hosts
    }
}
