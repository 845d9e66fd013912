//! `privacy-milter audit`: this host checked against the policy the configuration states,
//! finding by finding, each with what holds or not and how to fix it. One file per kind of
//! check: the MTA's logs ([`logs`], [`logrotate`], [`journald`]), the ledger and transit mail
//! ([`ledger`]), connections on which the MTA did not allow header edits ([`milter`]), the MTA
//! and its socket ([`mta`]), the key ring, where data goes and who answers ([`host`]).
//!
//! The findings are an interface: `check` names are stable, and the JSON form is
//! `{"findings": [{"check", "ok", "detail", "fix"}]}` (`fix` empty when `ok`).

mod copy;
mod host;
pub mod journald;
mod ledger;
pub mod logrotate;
pub mod logs;
mod milter;
mod mta;

use crate::config::Config;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

pub use ledger::as_ledger_owner;

/// One thing checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was checked, e.g. `mta_logs.logrotate` (several findings may share one).
    pub check: String,
    pub ok: bool,
    /// What was found, naming the file, setting or value.
    pub detail: String,
    /// What to do about it; empty when it holds.
    pub fix: String,
}

impl Finding {
    pub fn holds(check: &str, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: String::new(),
        }
    }

    pub fn fails(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// Every finding for this host at `now`.
pub fn run(config: &Config, now: DateTime<Utc>) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(host::policy_named(config));
    findings.extend(mta_logs(config, now));
    findings.extend(copy::findings(config, now));
    findings.extend(ledger::expiry(config, now));
    findings.extend(host::keys(config, now));
    findings.extend(ledger::transit(config, now));
    findings.extend(milter::edits(config, now));
    findings.extend(mta::postfix(config));
    findings.extend(mta::socket(config));
    findings.extend(host::destinations(config));
    findings
}

/// How long the MTA's raw lines may live, and the setting that says so: the raw window when
/// the tracker keeps a pseudonymised copy, the whole retention otherwise.
fn raw_limit(config: &Config) -> (Duration, &'static str) {
    if config.mta_logs.copies() {
        (config.mta_logs.raw_window.0, "mta_logs.raw_window")
    } else {
        (config.retention.mta_logs.0, "retention.mta_logs")
    }
}

/// The MTA's log lines: the oldest present in each log file and in the journal, and the
/// logrotate and journald settings that decide how long they live.
fn mta_logs(config: &Config, now: DateTime<Utc>) -> Vec<Finding> {
    let (limit, setting) = raw_limit(config);
    let mut findings = Vec::new();
    for path in &config.audit.log_files {
        let files = match logs::scan(path) {
            Ok(files) => files,
            Err(e) => {
                findings.push(Finding::fails(
                    "mta_logs.files",
                    format!("cannot read {}: {e}", path.display()),
                    "run the audit as root, or as a member of the group that may read the logs (adm)",
                ));
                continue;
            }
        };
        let held: Vec<&logs::LogFile> = files.iter().filter(|f| f.oldest.is_some()).collect();
        let Some(oldest) = held.iter().min_by_key(|f| f.oldest) else {
            let what = if files.is_empty() {
                "absent"
            } else {
                "no MTA line in it or its rotations"
            };
            findings.push(Finding::holds(
                "mta_logs.files",
                format!("{}: {what}", path.display()),
            ));
            continue;
        };
        let time = oldest.oldest.expect("held");
        let age = (now - time).to_std().unwrap_or_default();
        let detail = format!(
            "{} ({} with MTA lines): the oldest MTA line, of {}, is {} old, in {}; {setting} is {}",
            path.display(),
            count(held.len(), "file"),
            time.format("%Y-%m-%d %H:%M UTC"),
            span(age),
            oldest.path.display(),
            span(limit)
        );
        if age <= limit {
            findings.push(Finding::holds("mta_logs.files", detail));
        } else {
            let stale: Vec<String> = held
                .iter()
                .filter(|f| (now - f.modified).to_std().unwrap_or_default() > limit)
                .map(|f| f.path.display().to_string())
                .collect();
            let mut fix = String::new();
            if !stale.is_empty() {
                fix.push_str(&format!(
                    "delete what holds only older lines: rm {}; ",
                    stale.join(" ")
                ));
            }
            fix.push_str("make logrotate keep less (see the mta_logs.logrotate finding and docs/log-retention.md)");
            if !path.to_string_lossy().contains("mail") {
                fix.push_str(&format!(
                    "; or keep mail out of {} with the rsyslog drop-in of docs/log-retention.md",
                    path.display()
                ));
            }
            findings.push(Finding::fails("mta_logs.files", detail, fix));
        }
        findings.push(logrotate_finding(config, path));
    }
    findings.extend(journal_findings(config, now));
    findings
}

/// Whether logrotate keeps the lines of `log` no longer than the raw limit.
fn logrotate_finding(config: &Config, log: &std::path::Path) -> Finding {
    let (limit, setting) = raw_limit(config);
    let conf = &config.audit.logrotate_conf;
    let days = (limit.as_secs() / 86400).max(1);
    let dropin = format!(
        "{} {{\n    daily\n    rotate {}\n    maxage {}\n    missingok\n    notifempty\n    compress\n}}",
        log.display(),
        days - 1,
        days - 1
    );
    let rule = match logrotate::rule_for(conf, log) {
        Ok(rule) => rule,
        Err(e) => {
            return Finding::fails(
                "mta_logs.logrotate",
                format!("cannot read logrotate's configuration: {e}"),
                format!("check audit.logrotate_conf ({})", conf.display()),
            )
        }
    };
    let Some(rule) = rule else {
        return Finding::fails(
            "mta_logs.logrotate",
            format!(
                "no logrotate rule names {} ({} and what it includes): its lines are never deleted",
                log.display(),
                conf.display()
            ),
            format!(
                "add a rule, e.g. /etc/logrotate.d/mail-privacy (docs/log-retention.md):\n{dropin}"
            ),
        );
    };
    let mut detail = format!(
        "{} is rotated by {}:{} ({})",
        log.display(),
        rule.file.display(),
        rule.line,
        rule.settings.describe()
    );
    if !rule.duplicates.is_empty() {
        detail.push_str(&format!(
            "; logrotate refuses the other rules naming it ({})",
            rule.duplicates.join(", ")
        ));
    }
    let fix = format!(
        "in {}:{}, rotate daily and keep {} days at most; or remove {} from that rule and give it its own (docs/log-retention.md):\n{dropin}",
        rule.file.display(),
        rule.line,
        days - 1,
        log.display()
    );
    if !rule.duplicates.is_empty() {
        return Finding::fails(
            "mta_logs.logrotate",
            detail,
            format!(
                "name {} in one rule only (logrotate reports the others as errors)",
                log.display()
            ),
        );
    }
    match rule.settings.lifetime() {
        Some(life) if life <= limit => Finding::holds(
            "mta_logs.logrotate",
            format!(
                "{detail}: lines live up to {}; {setting} is {}",
                span(life),
                span(limit)
            ),
        ),
        Some(life) => Finding::fails(
            "mta_logs.logrotate",
            format!(
                "{detail}: lines live up to {}, longer than {setting} ({})",
                span(life),
                span(limit)
            ),
            fix,
        ),
        None => Finding::fails(
            "mta_logs.logrotate",
            format!("{detail}: nothing bounds how long its lines live"),
            fix,
        ),
    }
}

/// The oldest MTA entry in the journal, and journald's settings.
fn journal_findings(config: &Config, now: DateTime<Utc>) -> Vec<Finding> {
    let (limit, setting) = raw_limit(config);
    let audit = &config.audit;
    let mut findings = Vec::new();
    let journal_name = journal_name(&audit.journal);
    let held = match logs::journal_oldest(&audit.journal) {
        Ok(held) => held,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            findings.push(Finding::holds(
                "mta_logs.journal",
                "journalctl is not installed: no journal to read",
            ));
            None
        }
        Err(e) => {
            findings.push(Finding::fails(
                "mta_logs.journal",
                format!("cannot read {journal_name}: {e}"),
                "run the audit as root, or as a member of the group systemd-journal",
            ));
            None
        }
    };
    if let Some((time, ident)) = &held {
        let age = (now - *time).to_std().unwrap_or_default();
        let detail = format!(
            "{journal_name}: the oldest MTA entry ({ident}), of {}, is {} old; {setting} is {}",
            time.format("%Y-%m-%d %H:%M UTC"),
            span(age),
            span(limit)
        );
        findings.push(if age <= limit {
            Finding::holds("mta_logs.journal", detail)
        } else {
            Finding::fails(
                "mta_logs.journal",
                detail,
                format!(
                    "make journald keep less (the mta_logs.journald finding), then drop what is older now: journalctl --rotate && journalctl --vacuum-time={}s",
                    limit.as_secs()
                ),
            )
        });
    } else if findings.is_empty() {
        findings.push(Finding::holds(
            "mta_logs.journal",
            format!("{journal_name}: no MTA entry"),
        ));
    }
    let settings = match journald::read(&audit.journald_conf, &audit.journald_dropins) {
        Ok(settings) => settings,
        Err(e) => {
            findings.push(Finding::fails(
                "mta_logs.journald",
                format!("cannot read journald's configuration: {e}"),
                "check audit.journald_conf and audit.journald_dropins",
            ));
            return findings;
        }
    };
    // Without journald's configuration and without MTA entries, journald is not in the way.
    if settings.files.is_empty() && held.is_none() {
        return findings;
    }
    let fix = format!(
        "add the drop-in /etc/systemd/journald.conf.d/privacy-milter.conf (docs/log-retention.md), then systemctl restart systemd-journald:\n{}",
        journald::dropin_for(limit).trim_end()
    );
    let from = |p: &Option<(Duration, std::path::PathBuf)>| {
        p.as_ref().map_or("default".to_string(), |(d, f)| {
            format!("{} in {}", span(*d), f.display())
        })
    };
    let detail = format!(
        "journald: MaxRetentionSec {}, MaxFileSec {}",
        from(&settings.max_retention),
        from(&settings.max_file)
    );
    findings.push(if settings.stores_nothing() {
        Finding::holds("mta_logs.journald", "journald: Storage=none, the journal keeps nothing")
    } else {
        match settings.lifetime() {
            Some(life) if life <= limit => Finding::holds(
                "mta_logs.journald",
                format!("{detail}: lines live up to {} (journald deletes only archived files); {setting} is {}", span(life), span(limit)),
            ),
            Some(life) => Finding::fails(
                "mta_logs.journald",
                format!("{detail}: lines live up to {} (journald deletes only archived files), longer than {setting} ({})", span(life), span(limit)),
                fix,
            ),
            None => Finding::fails(
                "mta_logs.journald",
                format!("{detail}: no MaxRetentionSec, so only disk space limits how long lines live"),
                fix,
            ),
        }
    });
    findings
}

/// A journal as findings name it: its directory or file, or "the system journal" for "".
fn journal_name(journal: &std::path::Path) -> String {
    if journal.as_os_str().is_empty() {
        "the system journal".to_string()
    } else {
        journal.display().to_string()
    }
}

/// "3 days 4 hours", "2 hours 5 minutes", "40 seconds".
pub(crate) fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => count(s as usize, "second"),
        (0, 0, m) => count(m as usize, "minute"),
        (0, h, 0) => count(h as usize, "hour"),
        (0, h, m) => format!(
            "{} {}",
            count(h as usize, "hour"),
            count(m as usize, "minute")
        ),
        (d, 0, _) => count(d as usize, "day"),
        (d, h, _) => format!("{} {}", count(d as usize, "day"), count(h as usize, "hour")),
    }
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The findings as text: failures first, each with its fix.
pub fn text(findings: &[Finding]) -> String {
    let failed = findings.iter().filter(|f| !f.ok).count();
    let mut out = if failed == 0 {
        format!("all {} findings hold\n", findings.len())
    } else {
        format!("{failed} of {} findings fail\n", findings.len())
    };
    for f in findings
        .iter()
        .filter(|f| !f.ok)
        .chain(findings.iter().filter(|f| f.ok))
    {
        out.push_str(&format!(
            "{} {}: {}\n",
            if f.ok { "ok  " } else { "FAIL" },
            f.check,
            f.detail
        ));
        for (i, line) in f.fix.lines().enumerate() {
            let lead = if i == 0 { "fix:" } else { "    " };
            out.push_str(&format!("     {lead} {line}\n"));
        }
    }
    out
}

/// The findings as JSON: `{"findings": [...]}`.
pub fn json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({ "findings": findings }))
        .expect("findings serialise")
        + "\n"
}
