//! How long journald keeps a line: `MaxRetentionSec` plus `MaxFileSec`, from journald.conf and
//! its drop-ins as systemd merges them. journald deletes only archived files, and archives a
//! file once its first entry is `MaxFileSec` old: a line can live that much longer than
//! `MaxRetentionSec`. Without `MaxRetentionSec` only disk space limits the journal.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

/// journald's default `MaxFileSec`: one month.
const MONTH: u64 = 2_629_800;

/// The settings in force, with where each was set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub storage: Option<(String, PathBuf)>,
    pub max_retention: Option<(Duration, PathBuf)>,
    pub max_file: Option<(Duration, PathBuf)>,
    /// Every file read, in the order applied.
    pub files: Vec<PathBuf>,
}

impl Settings {
    /// Whether the journal keeps nothing (`Storage=none`).
    pub fn stores_nothing(&self) -> bool {
        self.storage.as_ref().is_some_and(|(s, _)| s == "none")
    }

    /// The longest a line can live; None: no bound in time.
    pub fn lifetime(&self) -> Option<Duration> {
        let retention = self.max_retention.as_ref().map(|(d, _)| *d)?;
        let file = self
            .max_file
            .as_ref()
            .map_or(Duration::from_secs(MONTH), |(d, _)| *d);
        Some(
            retention
                + if file.is_zero() {
                    Duration::from_secs(MONTH)
                } else {
                    file
                },
        )
    }
}

/// Reads `main` and the `*.conf` files of `dropins` (lowest precedence first): a later
/// directory's file replaces one of the same name, and the files apply in name order.
pub fn read(main: &Path, dropins: &[PathBuf]) -> io::Result<Settings> {
    let mut settings = Settings::default();
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dropins {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") && path.is_file() {
                by_name.insert(name, path);
            }
        }
    }
    let files = std::iter::once(main.to_path_buf()).chain(by_name.into_values());
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
        };
        settings.files.push(file.clone());
        let mut in_journal = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_journal = line == "[Journal]";
                continue;
            }
            if !in_journal || line.starts_with(['#', ';']) {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "Storage" => settings.storage = Some((value.to_string(), file.clone())),
                // An empty value resets to the default.
                "MaxRetentionSec" => {
                    settings.max_retention = timespan(value)
                        .filter(|d| !d.is_zero())
                        .map(|d| (d, file.clone()))
                }
                "MaxFileSec" => settings.max_file = timespan(value).map(|d| (d, file.clone())),
                _ => {}
            }
        }
    }
    Ok(settings)
}

/// A systemd time span: "6day", "1d 12h", "3600" (seconds), "1month".
pub fn timespan(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "us" | "usec" => 1e-6,
            "ms" | "msec" => 1e-3,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 604_800.0,
            "M" | "month" | "months" => MONTH as f64,
            "y" | "year" | "years" => 31_557_600.0,
            _ => return None,
        };
        total += number * seconds;
    }
    Some(Duration::from_secs_f64(total))
}

/// A drop-in that keeps lines at most `limit`: files of at most a day (of half the limit when
/// it is shorter than two days), kept for the rest of it.
pub fn dropin_for(limit: Duration) -> String {
    let limit = limit.as_secs().max(2);
    let file = if limit >= 2 * 86400 { 86400 } else { limit / 2 };
    let span = |s: u64| {
        if s % 86400 == 0 {
            format!("{}day", s / 86400)
        } else if s % 3600 == 0 {
            format!("{}h", s / 3600)
        } else {
            format!("{s}s")
        }
    };
    format!(
        "[Journal]\nMaxRetentionSec={}\nMaxFileSec={}\n",
        span(limit - file),
        span(file)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        let s = |t: &str| timespan(t).map(|d| d.as_secs());
        assert_eq!(s("6day"), Some(6 * 86400));
        assert_eq!(s("1d 12h"), Some(36 * 3600));
        assert_eq!(s("3600"), Some(3600));
        assert_eq!(s("1month"), Some(MONTH));
        assert_eq!(s("2weeks"), Some(14 * 86400));
        assert_eq!(s("5x"), None);
        assert_eq!(s(""), None);
    }

    #[test]
    fn dropins_fit_the_limit() {
        assert_eq!(
            dropin_for(Duration::from_secs(7 * 86400)),
            "[Journal]\nMaxRetentionSec=6day\nMaxFileSec=1day\n"
        );
        assert_eq!(
            dropin_for(Duration::from_secs(86400)),
            "[Journal]\nMaxRetentionSec=12h\nMaxFileSec=12h\n"
        );
        // A window of minutes (docs/log-retention.md, "A window shorter than a day").
        assert_eq!(
            dropin_for(Duration::from_secs(1800)),
            "[Journal]\nMaxRetentionSec=900s\nMaxFileSec=900s\n"
        );
    }

    /// A later directory's file of the same name replaces an earlier one's; files apply in
    /// name order; `MaxRetentionSec=` resets.
    #[test]
    fn drop_ins_merge_as_in_systemd() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (usr, etc) = (d.join("usr"), d.join("etc"));
        std::fs::create_dir_all(&usr).unwrap();
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            d.join("journald.conf"),
            "[Journal]\n#MaxRetentionSec=\nMaxFileSec=1week\n",
        )
        .unwrap();
        std::fs::write(usr.join("10-a.conf"), "[Journal]\nMaxRetentionSec=1year\n").unwrap();
        std::fs::write(etc.join("10-a.conf"), "[Journal]\nMaxRetentionSec=5day\n").unwrap();
        std::fs::write(usr.join("20-b.conf"), "[Journal]\nMaxFileSec=1day\n").unwrap();
        let s = read(&d.join("journald.conf"), &[usr.clone(), etc.clone()]).unwrap();
        assert_eq!(s.lifetime(), Some(Duration::from_secs(6 * 86400)));
        assert_eq!(s.max_retention.unwrap().1, etc.join("10-a.conf"));
        std::fs::write(usr.join("30-c.conf"), "[Journal]\nMaxRetentionSec=\n").unwrap();
        let s = read(&d.join("journald.conf"), &[usr, etc]).unwrap();
        assert_eq!(s.lifetime(), None);
    }
}
