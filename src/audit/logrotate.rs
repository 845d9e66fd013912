//! How long logrotate keeps the lines of a log file: the rule that names it, read from the main
//! configuration and the files it includes, with the global settings in force before the rule.
//!
//! A line lives in the current file for up to one interval, then in each of `rotate` rotated
//! files for one interval more; `maxage` deletes rotated files older than that many days when
//! the log is rotated. Rotation by `size` or `minsize` may wait for ever, and `rotate -1`
//! keeps every rotation: no bound in time then, whatever `maxage` says.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

const DAY: u64 = 86400;

/// The settings that decide how long a log's lines live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// hourly (as daily: Debian's logrotate.timer runs once a day), daily, weekly, monthly,
    /// yearly; None without one.
    pub interval: Option<(&'static str, Duration)>,
    /// logrotate's default is 0: the old file is deleted at rotation.
    pub rotate: i64,
    pub maxage: Option<u64>,
    /// `size` or `minsize`: rotation waits for the file to grow.
    pub by_size: bool,
}

/// The rule that names a log file: where it is, and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub file: PathBuf,
    pub line: usize,
    pub settings: Settings,
    /// Other rules that name the same file (logrotate refuses them: the first one counts).
    pub duplicates: Vec<String>,
}

impl Settings {
    /// The longest a line can live in the log and its rotations; None: no bound in time.
    pub fn lifetime(&self) -> Option<Duration> {
        if self.by_size {
            return None;
        }
        let (_, interval) = self.interval?;
        let by_count = (self.rotate >= 0).then(|| interval * (self.rotate as u32 + 1));
        let by_age = self
            .maxage
            .map(|days| Duration::from_secs(days * DAY) + interval);
        match (by_count, by_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// In logrotate's words: "weekly, rotate 4".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match (self.by_size, self.interval) {
            (true, _) => parts.push("rotated by size".to_string()),
            (false, Some((name, _))) => parts.push(name.to_string()),
            (false, None) => parts.push("no interval (rotated by size, 1 MB)".to_string()),
        }
        parts.push(format!("rotate {}", self.rotate));
        if let Some(days) = self.maxage {
            parts.push(format!("maxage {days}"));
        }
        parts.join(", ")
    }
}

/// Reads `conf` (following `include`) and returns the rule naming `log`, if any.
pub fn rule_for(conf: &Path, log: &Path) -> io::Result<Option<Rule>> {
    let mut reader = Reader {
        log: log.to_string_lossy().into_owned(),
        global: Settings::default(),
        found: None,
        depth: 0,
    };
    reader.file(conf)?;
    Ok(reader.found)
}

struct Reader {
    log: String,
    global: Settings,
    found: Option<Rule>,
    depth: usize,
}

/// What one directive does to the settings it is given.
fn apply(settings: &mut Settings, words: &[&str]) {
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<i64>().ok());
    match words.first().copied().unwrap_or_default() {
        "hourly" => settings.interval = Some(("hourly", Duration::from_secs(DAY))),
        "daily" => settings.interval = Some(("daily", Duration::from_secs(DAY))),
        "weekly" => settings.interval = Some(("weekly", Duration::from_secs(7 * DAY))),
        "monthly" => settings.interval = Some(("monthly", Duration::from_secs(31 * DAY))),
        "yearly" => settings.interval = Some(("yearly", Duration::from_secs(366 * DAY))),
        "rotate" => settings.rotate = number(1).unwrap_or(0),
        "maxage" => settings.maxage = number(1).and_then(|d| u64::try_from(d).ok()),
        "size" | "minsize" => settings.by_size = true,
        _ => {}
    }
}

/// Script blocks run shell code, not directives.
const SCRIPTS: &[&str] = &[
    "postrotate",
    "prerotate",
    "firstaction",
    "lastaction",
    "preremove",
];

impl Reader {
    fn file(&mut self, path: &Path) -> io::Result<()> {
        self.depth += 1;
        if self.depth > 8 {
            return Err(io::Error::other(format!(
                "{}: includes nested too deep",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut patterns: Vec<String> = Vec::new();
        let mut rule: Option<(Settings, usize, bool)> = None;
        let mut in_script = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if in_script {
                in_script = line != "endscript";
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((settings, start, names_log)) = &mut rule {
                if line.starts_with('}') {
                    if *names_log {
                        self.record(path, *start, settings.clone());
                    }
                    rule = None;
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                if SCRIPTS.contains(&words[0]) {
                    in_script = true;
                    continue;
                }
                apply(settings, &words);
                continue;
            }
            // Outside a rule: log names (paths, quoted or not) until "{", or a directive.
            let (names, opens) = match line.split_once('{') {
                Some((names, _)) => (names, true),
                None => (line, false),
            };
            let is_names = opens || names.starts_with(['/', '"', '\'', '~']);
            if !is_names {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words[0] == "include" {
                    if let Some(target) = words.get(1) {
                        self.include(Path::new(target.trim_matches('"')))?;
                    }
                } else {
                    apply(&mut self.global, &words);
                }
                continue;
            }
            patterns.extend(
                names
                    .split_whitespace()
                    .map(|p| p.trim_matches(['"', '\'']).to_string()),
            );
            if opens {
                let names_log = patterns.iter().any(|p| glob(p, &self.log));
                rule = Some((self.global.clone(), n + 1, names_log));
                patterns.clear();
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn record(&mut self, path: &Path, line: usize, settings: Settings) {
        match &mut self.found {
            Some(first) => first.duplicates.push(format!("{}:{line}", path.display())),
            None => {
                self.found = Some(Rule {
                    file: path.to_path_buf(),
                    line,
                    settings,
                    duplicates: Vec::new(),
                })
            }
        }
    }

    /// A file, or the files of a directory in the order of their names (without the backup
    /// and package-manager leftovers logrotate skips).
    fn include(&mut self, target: &Path) -> io::Result<()> {
        if !target.is_dir() {
            return match self.file(target) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(target)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                !name.starts_with('.')
                    && !name.ends_with('~')
                    && ![
                        ".dpkg-old",
                        ".dpkg-dist",
                        ".dpkg-new",
                        ".dpkg-bak",
                        ".ucf-old",
                        ".ucf-dist",
                        ".ucf-new",
                        ".disabled",
                        ".bak",
                        ".swp",
                        ".rpmsave",
                        ".rpmorig",
                        ".rpmnew",
                    ]
                    .iter()
                    .any(|taboo| name.ends_with(taboo))
            })
            .collect();
        files.sort();
        for file in files {
            self.file(&file)?;
        }
        Ok(())
    }
}

/// Shell-style matching of a whole path: `*` and `?` (not across `/`) and `[...]`.
fn glob(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && s[0] != b'/' && go(&p[1..], &s[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else {
                    return !s.is_empty() && s[0] == b'[' && go(&p[1..], &s[1..]);
                };
                let set = &p[1..end];
                let (negate, set) = match set.first() {
                    Some(b'!' | b'^') => (true, &set[1..]),
                    _ => (false, set),
                };
                let Some(&c) = s.first() else { return false };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == b'-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &s[1..])
            }
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("/var/log/mail.log", "/var/log/mail.log"));
        assert!(glob("/var/log/*.log", "/var/log/mail.log"));
        assert!(!glob("/var/log/*.log", "/var/log/x/mail.log"));
        assert!(glob("/var/log/mail.[lx]og", "/var/log/mail.log"));
        assert!(!glob("/var/log/mail.?", "/var/log/mail.log"));
    }

    #[test]
    fn lifetimes() {
        let s = |interval: u64, rotate: i64, maxage: Option<u64>, by_size: bool| Settings {
            interval: Some(("x", Duration::from_secs(interval * DAY))),
            rotate,
            maxage,
            by_size,
        };
        let days = |d: Option<Duration>| d.map(|d| d.as_secs() / DAY);
        assert_eq!(days(s(7, 4, None, false).lifetime()), Some(35));
        assert_eq!(days(s(1, 6, None, false).lifetime()), Some(7));
        assert_eq!(days(s(1, 30, Some(6), false).lifetime()), Some(7));
        assert_eq!(days(s(1, -1, None, false).lifetime()), None);
        assert_eq!(days(s(1, -1, Some(3), false).lifetime()), Some(4));
        assert_eq!(days(s(1, 0, None, false).lifetime()), Some(1));
        assert_eq!(days(s(1, 4, Some(2), true).lifetime()), None);
        assert_eq!(Settings::default().lifetime(), None);
    }

    /// Debian's layout: global settings, an include of a directory, a rule naming several
    /// logs on lines of their own, scripts skipped.
    #[test]
    fn debian_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("logrotate.d")).unwrap();
        std::fs::write(
            d.join("logrotate.conf"),
            format!(
                "# see man logrotate\nweekly\nrotate 4\ncreate\ninclude {}/logrotate.d\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("logrotate.d/rsyslog"),
            "/var/log/syslog\n/var/log/mail.log\n{\n\tmissingok\n\tpostrotate\n\t\trotate 99\n\tendscript\n}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("logrotate.d/other.dpkg-old"),
            "/var/log/mail.log {\n daily\n}\n",
        )
        .unwrap();
        let rule = rule_for(&d.join("logrotate.conf"), Path::new("/var/log/mail.log"))
            .unwrap()
            .unwrap();
        assert_eq!(rule.file, d.join("logrotate.d/rsyslog"));
        assert_eq!(rule.settings.describe(), "weekly, rotate 4");
        assert_eq!(
            rule.settings.lifetime(),
            Some(Duration::from_secs(35 * DAY))
        );
        assert!(rule.duplicates.is_empty());
        assert_eq!(
            rule_for(&d.join("logrotate.conf"), Path::new("/var/log/kern.log")).unwrap(),
            None
        );
    }
}
