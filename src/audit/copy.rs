//! The pseudonymised copy of the MTA's log (`[mta_logs] copy`, written by `privacy-milter
//! track`): its files kept no longer than `retention.mta_logs`, not behind the log it copies,
//! and no raw personal field in its newest lines.

use super::{journal_name, logs, span, Finding};
use crate::{
    config::{Config, LogSource, MtaLogs},
    logcopy::Rewriter,
    maillog::is_mta,
    privacy::Pseudonymiser,
    track::{self, COPY_CURRENT as CURRENT},
};
use chrono::{DateTime, Utc};
use std::{
    io::{self, BufRead},
    path::Path,
};

/// How many of the copy's newest lines are searched for raw fields.
const SAMPLE: usize = 1000;

/// Every line counts in the copy: Dovecot's and the rest as well as the MTA's.
fn any(_: &str) -> bool {
    true
}

pub fn findings(config: &Config, now: DateTime<Utc>) -> Vec<Finding> {
    if !config.mta_logs.copies() {
        return Vec::new();
    }
    let current = config.mta_logs.copy.join(CURRENT);
    let files = match logs::scan_lines(&current, any) {
        Ok(files) => files,
        Err(e) => {
            return vec![Finding::fails(
                "mta_logs.copy",
                format!(
                    "cannot read the copy {}: {e}",
                    config.mta_logs.copy.display()
                ),
                "run the audit as root, or as a member of the tracker's group",
            )]
        }
    };
    // Newest first: the current file, then the rotations by name (`mail.log-YYYYMMDD` sorts
    // by day).
    let mut newest_first: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    newest_first.sort_by_key(|p| {
        (
            p.file_name().is_some_and(|n| n != CURRENT),
            std::cmp::Reverse(*p),
        )
    });
    vec![
        age(config, &files, now),
        lag(config, &current, &newest_first),
        raw_fields(config, &newest_first),
    ]
}

/// The copy's oldest line against `retention.mta_logs`.
fn age(config: &Config, files: &[logs::LogFile], now: DateTime<Utc>) -> Finding {
    let limit = config.retention.mta_logs.0;
    let dir = config.mta_logs.copy.display();
    let Some(oldest) = files
        .iter()
        .filter(|f| f.oldest.is_some())
        .min_by_key(|f| f.oldest)
    else {
        return if files.is_empty() {
            Finding::fails(
                "mta_logs.copy",
                format!("{dir}: no copy written yet"),
                "start privacy-milter-track.service (privacy-milter track writes the copy)",
            )
        } else {
            Finding::holds("mta_logs.copy", format!("{dir}: no line in the copy yet"))
        };
    };
    let time = oldest.oldest.expect("filtered");
    let age = (now - time).to_std().unwrap_or_default();
    let detail = format!(
        "{dir}: the copy's oldest line, of {}, is {} old, in {}; retention.mta_logs is {}",
        time.format("%Y-%m-%d %H:%M UTC"),
        span(age),
        oldest.path.display(),
        span(limit)
    );
    if age <= limit {
        return Finding::holds("mta_logs.copy", detail);
    }
    let stale: Vec<String> = files
        .iter()
        .filter(|f| (now - f.modified).to_std().unwrap_or_default() > limit)
        .map(|f| f.path.display().to_string())
        .collect();
    let mut fix = String::from(
        "the tracker deletes the copy's files past retention.mta_logs: is privacy-milter-track.service running with this configuration?",
    );
    if !stale.is_empty() {
        fix.push_str(&format!(
            " Delete what holds only older lines: rm {}",
            stale.join(" ")
        ));
    }
    Finding::fails("mta_logs.copy", detail, fix)
}

/// The copy's newest line against the newest MTA line of the log the tracker reads.
fn lag(config: &Config, current: &Path, newest_first: &[&Path]) -> Finding {
    const CHECK: &str = "mta_logs.copy_lag";
    let (source, newest) = match config.tracking.source {
        LogSource::File => (
            config.tracking.path.display().to_string(),
            logs::newest_line(&config.tracking.path, is_mta),
        ),
        LogSource::Journald => {
            // The journal the tracker reads: tracking.path when it names one, as `track` takes it.
            let journal = if track::names_journal(&config.tracking.path) {
                &config.tracking.path
            } else {
                &config.audit.journal
            };
            (
                journal_name(journal),
                logs::journal_newest(journal).map(|e| e.map(|(time, _)| time)),
            )
        }
    };
    let newest =
        match newest {
            Ok(Some(time)) => time,
            Ok(None) => return Finding::holds(CHECK, format!("{source}: no MTA line to copy")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Finding::holds(CHECK, format!("{source}: absent, nothing to copy"))
            }
            Err(e) => return Finding::fails(
                CHECK,
                format!("cannot read {source}: {e}"),
                "run the audit as root, or as a member of the group that may read the logs (adm)",
            ),
        };
    // The current file is empty just after the day turned: then the newest rotation counts.
    let mut copied = None;
    for path in newest_first {
        match logs::newest_line(path, any) {
            Ok(None) => continue,
            Ok(found) => {
                copied = found;
                break;
            }
            Err(e) => {
                return Finding::fails(
                    CHECK,
                    format!("cannot read {}: {e}", path.display()),
                    "run the audit as root, or as a member of the tracker's group",
                )
            }
        }
    }
    let fix = "start privacy-milter-track.service, and see its log (journalctl -u privacy-milter-track) for why it stopped";
    match copied {
        None => Finding::fails(
            CHECK,
            format!(
                "{source} has MTA lines up to {}; the copy {} has none",
                newest.format("%Y-%m-%d %H:%M:%S UTC"),
                current.display()
            ),
            fix,
        ),
        Some(copied) => {
            let behind = (newest - copied).to_std().unwrap_or_default();
            let detail = format!(
                "the copy's newest line is {} behind the newest MTA line of {source} (allowed: {})",
                span(behind),
                span(MtaLogs::COPY_LAG)
            );
            if behind <= MtaLogs::COPY_LAG {
                Finding::holds(CHECK, detail)
            } else {
                Finding::fails(CHECK, detail, fix)
            }
        }
    }
}

/// The copy's newest lines searched for a field still raw: an IP, an address, a host name.
/// The finding names the file, the line and the kind of field, never the value.
fn raw_fields(config: &Config, newest_first: &[&Path]) -> Finding {
    const CHECK: &str = "mta_logs.copy_raw";
    // Pseudonyms are recognised by their shape: no key is needed to tell them from raw values.
    let mut rewriter = Rewriter::new(Pseudonymiser::new(config.privacy.clone(), None));
    let mut sampled = 0;
    for path in newest_first {
        let lines = match last_lines(path, SAMPLE - sampled) {
            Ok(lines) => lines,
            Err(e) => {
                return Finding::fails(
                    CHECK,
                    format!("cannot read {}: {e}", path.display()),
                    "run the audit as root, or as a member of the tracker's group",
                )
            }
        };
        for (number, line) in &lines {
            if let Some(raw) = rewriter.raw_personal_data(line) {
                return Finding::fails(
                    CHECK,
                    format!(
                        "{} line {number} holds a raw {:?} field (at byte {})",
                        path.display(),
                        raw.kind,
                        raw.at
                    ),
                    "report this as a bug in privacy-milter (with the line's shape, not its values); delete the line",
                );
            }
        }
        sampled += lines.len();
        if sampled >= SAMPLE {
            break;
        }
    }
    Finding::holds(
        CHECK,
        format!("no raw IP, address or host name in the copy's newest {sampled} lines"),
    )
}

/// The last `n` lines of a file (decompressed), with their line numbers.
fn last_lines(path: &Path, n: usize) -> io::Result<Vec<(usize, String)>> {
    let mut ring = std::collections::VecDeque::with_capacity(n.min(SAMPLE));
    if n == 0 {
        return Ok(Vec::new());
    }
    for (i, line) in logs::open(path)?.split(b'\n').enumerate() {
        if ring.len() == n {
            ring.pop_front();
        }
        ring.push_back((i + 1, String::from_utf8_lossy(&line?).into_owned()));
    }
    Ok(ring.into())
}
