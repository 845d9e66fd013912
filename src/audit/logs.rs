//! The oldest MTA log line actually present: in log files (with their rotated and compressed
//! siblings) and in the journal. A line is the MTA's when its syslog identifier names one of
//! the MTA's programs ([`crate::maillog::is_mta`]: `postfix/smtpd`, `postfix-mx/qmgr`,
//! `sendmail`, `sm-mta`, `sm-msp-queue`, ...).

use crate::maillog::{is_mta, SyslogLine};
use chrono::{DateTime, Utc};
use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// One file of a log and the MTA lines it holds.
#[derive(Clone, Debug)]
pub struct LogFile {
    pub path: PathBuf,
    /// The time of its first MTA line; None when it holds none.
    pub oldest: Option<DateTime<Utc>>,
    /// When it was last written: no line in it is younger.
    pub modified: DateTime<Utc>,
}

/// `path` and its rotated siblings that exist (`mail.log.1`, `mail.log.2.gz`,
/// `mail.log-20261129`), each with its oldest MTA line.
pub fn scan(path: &Path) -> io::Result<Vec<LogFile>> {
    scan_lines(path, is_mta)
}

/// [`scan`], with the lines that count chosen by their syslog identifier.
pub fn scan_lines(path: &Path, counts: fn(&str) -> bool) -> io::Result<Vec<LogFile>> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_generation(base, name) || !entry.file_type()?.is_file() {
            continue;
        }
        let path = entry.path();
        let modified: DateTime<Utc> = entry.metadata()?.modified()?.into();
        let oldest = first_line(&path, modified, counts)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        found.push(LogFile {
            path,
            oldest,
            modified,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Whether `name` is the log `base` or one of its rotations: the name, then digits, `.`, `-`
/// or `_`, maybe `.gz`.
fn is_generation(base: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(base) else {
        return false;
    };
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    rest.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
}

/// A log file's bytes, decompressed when its name ends in `.gz`.
pub fn open(path: &Path) -> io::Result<BufReader<Box<dyn Read>>> {
    let file = File::open(path)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(BufReader::new(reader))
}

/// The time of the first line of a file that counts. Classic time stamps carry no year: it is
/// the one that puts the line before the file's last write.
fn first_line(
    path: &Path,
    modified: DateTime<Utc>,
    counts: fn(&str) -> bool,
) -> io::Result<Option<DateTime<Utc>>> {
    let mut reader = open(path)?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        let Some(l) = SyslogLine::split(&text).filter(|l| counts(l.ident)) else {
            continue;
        };
        if let Some(time) = l.stamp.time(&modified.with_timezone(&chrono::Local)) {
            return Ok(Some(time));
        }
    }
}

/// The time of the last line that counts in the last 256 KiB of a file (decompressed when its
/// name ends in `.gz`); None when there is none.
pub fn newest_line(path: &Path, counts: fn(&str) -> bool) -> io::Result<Option<DateTime<Utc>>> {
    const TAIL: usize = 256 * 1024;
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    let modified: DateTime<Utc> = meta.modified()?.into();
    let mut tail = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        open(path)?.read_to_end(&mut tail)?;
        tail.drain(..tail.len().saturating_sub(TAIL));
    } else {
        file.seek(SeekFrom::Start(meta.len().saturating_sub(TAIL as u64)))?;
        file.read_to_end(&mut tail)?;
    }
    let reference = modified.with_timezone(&chrono::Local);
    Ok(String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .filter_map(SyslogLine::split)
        .filter(|l| counts(l.ident))
        .find_map(|l| l.stamp.time(&reference)))
}

/// The oldest MTA entry of the journal (`journal`: a directory or a `.journal` file; empty
/// for the system's): its time and identifier. None when it holds none.
pub fn journal_oldest(journal: &Path) -> io::Result<Option<(DateTime<Utc>, String)>> {
    journal_end(journal, false)
}

/// The newest MTA entry of the journal, as [`journal_oldest`].
pub fn journal_newest(journal: &Path) -> io::Result<Option<(DateTime<Utc>, String)>> {
    journal_end(journal, true)
}

fn journal_end(journal: &Path, newest: bool) -> io::Result<Option<(DateTime<Utc>, String)>> {
    let mut cmd = Command::new("journalctl");
    cmd.args(["--output=json", "--no-pager", "--quiet"]);
    if newest {
        cmd.arg("--reverse");
    }
    if journal.is_dir() {
        cmd.arg(format!("--directory={}", journal.display()));
    } else if !journal.as_os_str().is_empty() {
        cmd.arg(format!("--file={}", journal.display()));
    }
    // The MTA logs with facility mail; the identifier decides among those.
    cmd.arg("SYSLOG_FACILITY=2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut found = None;
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line?;
        let Ok(entry) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        let ident = entry["SYSLOG_IDENTIFIER"].as_str().unwrap_or_default();
        let time = entry["__REALTIME_TIMESTAMP"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(DateTime::<Utc>::from_timestamp_micros);
        if let (true, Some(time)) = (is_mta(ident), time) {
            found = Some((time, ident.to_string()));
            break;
        }
    }
    // The entry sought comes first: the rest is not needed.
    let _ = child.kill();
    let output = child.wait_with_output()?;
    if found.is_none() && !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        // No journal at all holds no MTA line; anything else is a failure to read it.
        if !err.contains("No journal files were found") && !err.trim().is_empty() {
            return Err(io::Error::other(format!("journalctl: {}", err.trim())));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};

    #[test]
    fn generations() {
        for name in [
            "mail.log",
            "mail.log.1",
            "mail.log.2.gz",
            "mail.log-20261129",
            "mail.log-20261129.gz",
        ] {
            assert!(is_generation("mail.log", name), "{name}");
        }
        for name in ["mail.logger", "mail.err", "mail.log.bak", "xmail.log"] {
            assert!(!is_generation("mail.log", name), "{name}");
        }
    }

    /// Sendmail's queue runner and daemon log under names of their own; their lines are the
    /// MTA's as much as `sm-mta`'s.
    #[test]
    fn the_oldest_line_may_be_any_sendmail_program() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.log");
        let modified = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        for (ident, day) in [("sm-msp-queue", 27), ("sm-acceptingconnections", 28)] {
            std::fs::write(
                &path,
                format!(
                    "Nov 20 10:00:00 mx cron[1]: session opened\n\
                     Nov {day} 10:00:00 mx {ident}[7]: x9EL4XLo001111: to=root, stat=Sent\n\
                     Nov 29 10:00:00 mx sm-mta[8]: starting daemon\n"
                ),
            )
            .unwrap();
            let oldest = first_line(&path, modified, is_mta).unwrap().unwrap();
            assert_eq!(oldest.with_timezone(&chrono::Local).day(), day, "{ident}");
        }
    }
}
