//! A subject's lines in the pseudonymised copy of the MTA's log (`[mta_logs] copy`), for
//! `ledger query` and `ledger erase`. The copy writes an IP or an address as the events do, so
//! the forms the ledger is searched for are the ones searched for here, in every file of the
//! copy (the current one, the rotated and compressed ones).

use super::CommandError;
use crate::{audit::logs, config::Config, store::Filter, track::COPY_CURRENT};
use serde::Serialize;
use std::{io::BufRead, path::PathBuf};

/// One file of the copy with lines of the subject.
#[derive(Clone, Debug, Serialize)]
pub struct Held {
    pub file: PathBuf,
    pub lines: usize,
}

/// The copy's files holding lines of the subject, with how many; None without a copy.
pub fn find(config: &Config, filter: &Filter) -> Result<Option<Vec<Held>>, CommandError> {
    if !config.mta_logs.copies() {
        return Ok(None);
    }
    let refused = |e: std::io::Error| {
        CommandError::Refused(format!(
            "cannot read the MTA log copy {}: {e}; run as root or as the tracker's user",
            config.mta_logs.copy.display()
        ))
    };
    let needles = needles(filter);
    let mut held = Vec::new();
    let files =
        logs::scan_lines(&config.mta_logs.copy.join(COPY_CURRENT), |_| true).map_err(refused)?;
    for file in files {
        let mut lines = 0;
        for line in logs::open(&file.path).map_err(refused)?.split(b'\n') {
            let line = line.map_err(refused)?;
            let line = String::from_utf8_lossy(&line);
            if needles.iter().any(|n| mentions(&line, n)) {
                lines += 1;
            }
        }
        if lines > 0 {
            held.push(Held {
                file: file.path,
                lines,
            });
        }
    }
    Ok(Some(held))
}

/// What the copy writes for the subject: the events' forms; a domain as `@domain`.
fn needles(filter: &Filter) -> Vec<String> {
    match filter {
        Filter::Ip(v) | Filter::Address(v) => v.clone(),
        Filter::Domain(v) => v.iter().map(|d| format!("@{d}")).collect(),
    }
}

/// Whether `line` holds `needle` as a whole value: `192.0.2.9` is not in `192.0.2.91`, nor
/// `bob@example.org` in `jimbob@example.org`, nor `@example.org` in `@example.org.uk`.
fn mentions(line: &str, needle: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+');
    let starts_inside = needle.starts_with(|c: char| c.is_ascii_alphanumeric());
    line.match_indices(needle).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + needle.len()..].chars().next();
        let glued_before = starts_inside && before.is_some_and(part);
        !glued_before && !after.is_some_and(part)
    })
}

/// The table's lines about the copy.
pub fn describe(held: &[Held], config: &Config) -> String {
    let total: usize = held.iter().map(|h| h.lines).sum();
    let mut out = format!(
        "{total} lines held in the pseudonymised MTA log copy ({})\n",
        config.mta_logs.copy.display()
    );
    for h in held {
        out.push_str(&format!("  {}: {} lines\n", h.file.display(), h.lines));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn whole_values_only() {
        let line = "Nov 29 21:06:33 mx postfix/smtpd[9]: connect from *.example.org[192.0.2.9]";
        assert!(mentions(line, "192.0.2.9"));
        assert!(!mentions(line, "192.0.2.91"));
        assert!(!mentions(&line.replace("2.9]", "2.91]"), "192.0.2.9"));
        let line = "x: from=<jimbob@example.org>, size=1";
        assert!(!mentions(line, "bob@example.org"));
        assert!(mentions(line, "jimbob@example.org"));
        assert!(
            mentions(line, "@example.org"),
            "a domain after its local part"
        );
        let line = "x: to=<hmac:K1:ab12@example.org.uk>";
        assert!(!mentions(line, "@example.org"), "another domain");
        assert!(mentions(line, "hmac:K1:ab12"), "an HMAC before its domain");
        assert!(!mentions(line, "hmac:K1:ab1"));
        assert!(mentions(line, "@example.org.uk"));
    }
}
