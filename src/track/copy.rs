//! The pseudonymised copy of the MTA's log (`[mta_logs] copy`): every line the tracker reads,
//! from the log file or the journal (one reader of the log, two outputs), Postfix's, Sendmail's,
//! Dovecot's and any other, rewritten by [`Rewriter`] under `[privacy]` with the tracker's
//! pseudonymiser (under `hmac` the events' pseudonyms, so the copy and the ledger join). A
//! journal entry is first written as the syslog line rsyslog would have made of it: an RFC 3339
//! time stamp in local time, the host, `IDENT[PID]:`, the message (control characters as
//! rsyslog escapes them, `#012`).
//!
//! # Layout
//! - `DIR/mail.log`: the current day's lines. The day is the local one, as the lines' own time
//!   stamps write it. A line of a later day (or, when the tracker has caught up, the clock
//!   passing midnight) renames the file to `DIR/mail.log-YYYYMMDD` (the day it holds; `.1`,
//!   `.2`... if that name is taken) and starts a new one. A line of an earlier day (lines out of
//!   order) stays in the current file; a line without a time stamp too.
//! - Once the state that follows the rotation is saved, a rotated file is compressed to
//!   `mail.log-YYYYMMDD.gz` (written to a `.tmp`, synced, renamed), then the plain one removed.
//! - A rotated file is deleted once its day began more than `retention.mta_logs` ago: no line
//!   of the copy is older than that (checked after each save and once a minute).
//! - The directory is created 0750 if missing; files are 0640.
//!
//! # Exactly once
//! The copy is written and synced before the tracker saves its place; the copy's place (its
//! current file, inode and length, the day) is saved with it, in the same write. At start,
//! and after a failed write, the copy goes back to the saved place: the saved file is found by
//! its inode (still `mail.log`, or a rotated file if a rotation came after the save, which is
//! then undone: what was written after the save is removed), and cut back to the saved length.
//! The lines after it are read again from the log and written again. Without a saved place
//! (an earlier version's state, the copy turned on) the copy goes on at the end of the file
//! there.

use super::{journal::JournalEntry, state::CopyPlace, Read, TrackError, TARGET};
use crate::{logcopy::Rewriter, maillog::SyslogLine, privacy::Pseudonymiser};
use chrono::{DateTime, Local, NaiveDate, TimeZone};
use std::{
    fmt::Write as _,
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};
use tracing::{error, info, warn};

/// The current file's name.
pub const CURRENT: &str = "mail.log";
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
/// How often expired files are looked for while no line comes.
const EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// The copy, or nothing when `mta_logs.copy` is empty: every call is then a no-op.
pub struct LogCopy(Option<Writer>);

struct Writer {
    dir: PathBuf,
    path: PathBuf,
    retention: Duration,
    rewriter: Rewriter,
    /// The host name for journal entries without `_HOSTNAME`.
    host: String,
    file: File,
    /// `(dev, ino)` of the current file.
    id: (u64, u64),
    /// Bytes in the current file.
    length: u64,
    /// The day of the lines in the current file; None while it holds none with a time.
    day: Option<NaiveDate>,
    /// As last saved with the tracker's place (or found at start): where a failed write goes
    /// back to.
    saved: Option<CopyPlace>,
    next_expiry: Instant,
}

/// The current file as [`recover`] finds it.
struct Found {
    file: File,
    id: (u64, u64),
    length: u64,
    day: Option<NaiveDate>,
}

/// A batch's lines for one file of the copy.
struct Segment {
    /// Written to a new file: the lines before were of an earlier day.
    rotate: bool,
    day: Option<NaiveDate>,
    text: String,
}

/// A rotated file of the copy, from its name.
struct Rotated {
    path: PathBuf,
    day: NaiveDate,
    gz: bool,
}

impl LogCopy {
    /// Opens the copy of `dir` (None: no copy) at the `saved` place, cut back to it.
    pub fn open(
        dir: Option<&Path>,
        retention: Duration,
        saved: Option<&CopyPlace>,
        privacy: Pseudonymiser,
    ) -> Result<Self, TrackError> {
        let Some(dir) = dir else {
            return Ok(LogCopy(None));
        };
        let path = dir.join(CURRENT);
        let error = |source| TrackError::Copy {
            path: dir.to_path_buf(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(error)?;
        let saved = saved.filter(|s| {
            let ours = s.path == path;
            if !ours {
                warn!(target: TARGET, "the saved place of the copy is in {}, not {}: the copy starts anew here", s.path.display(), path.display());
            }
            ours
        });
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let Found {
            file,
            id,
            length,
            day,
        } = recover(dir, &path, saved).map_err(error)?;
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            path,
            retention,
            rewriter: Rewriter::new(privacy),
            host,
            file,
            id,
            length,
            day,
            saved: None,
            next_expiry: Instant::now(),
        };
        writer.saved = Some(writer.place());
        info!(target: TARGET, "writing the pseudonymised copy of the log to {} (at byte {})", writer.path.display(), writer.length);
        writer.housekeeping(Local::now());
        Ok(LogCopy(Some(writer)))
    }

    /// Writes `lines` to the copy and syncs it; a failure is retried (from the saved place)
    /// until it succeeds or `stop` is set.
    pub fn write(&mut self, lines: &[Read], stop: &AtomicBool) -> Result<(), TrackError> {
        let Some(w) = &mut self.0 else {
            return Ok(());
        };
        let segments = w.segments(lines, Local::now());
        w.retrying(stop, |w| w.apply(&segments))
    }

    /// What to save beside the tracker's place.
    pub fn place(&self) -> Option<CopyPlace> {
        self.0.as_ref().map(Writer::place)
    }

    /// After the place was saved: compresses the files rotated before it, deletes expired
    /// ones. Failures are logged and tried again after the next save.
    pub fn saved(&mut self) {
        if let Some(w) = &mut self.0 {
            w.saved = Some(w.place());
            w.housekeeping(Local::now());
        }
    }

    /// When the tracker has caught up: starts a new file if the clock has passed midnight
    /// since the current one's day, and deletes expired files once a minute. True when the
    /// place is to be saved (then call [`LogCopy::saved`]).
    pub fn tick(&mut self, stop: &AtomicBool) -> Result<bool, TrackError> {
        let Some(w) = &mut self.0 else {
            return Ok(false);
        };
        let now = Local::now();
        let today = now.date_naive();
        let mut rotated = false;
        if w.day.is_some_and(|d| d < today) {
            if w.length == 0 {
                w.day = None;
            } else {
                w.retrying(stop, |w| w.rotate(Some(today)))?;
                rotated = true;
            }
        }
        if !rotated && Instant::now() >= w.next_expiry {
            w.housekeeping(now);
        }
        Ok(rotated)
    }

    /// Writes with this pseudonymiser from now on, if its key is another.
    pub fn set_privacy(&mut self, privacy: &Pseudonymiser) {
        if let Some(w) = &mut self.0 {
            let id = |p: &Pseudonymiser| p.key.as_ref().map(|k| k.id.clone());
            if id(w.rewriter.privacy()) != id(privacy) {
                w.rewriter = Rewriter::new(privacy.clone());
            }
        }
    }
}

impl Writer {
    fn place(&self) -> CopyPlace {
        CopyPlace {
            path: self.path.clone(),
            length: self.length,
            dev: self.id.0,
            ino: self.id.1,
            day: self.day.map(|d| d.format("%Y%m%d").to_string()),
        }
    }

    /// The copy's text of `lines`, cut where a line's day is later than the one before.
    fn segments(&mut self, lines: &[Read], now: DateTime<Local>) -> Vec<Segment> {
        let mut day = self.day;
        let mut segments = vec![Segment {
            rotate: false,
            day,
            text: String::new(),
        }];
        let mut raw = String::new();
        for line in lines {
            let (text, time) = match &line.entry {
                Some(entry) => {
                    raw.clear();
                    syslog_line(entry, &self.host, &mut raw);
                    (raw.as_str(), Some(entry.time))
                }
                None => (
                    line.text.as_str(),
                    SyslogLine::split(&line.text).and_then(|l| l.stamp.time(&now)),
                ),
            };
            if let Some(d) = time.map(|t| t.with_timezone(&Local).date_naive()) {
                match day {
                    None => {
                        day = Some(d);
                        segments.last_mut().expect("one at least").day = day;
                    }
                    Some(current) if d > current => {
                        day = Some(d);
                        segments.push(Segment {
                            rotate: true,
                            day,
                            text: String::new(),
                        });
                    }
                    Some(_) => {}
                }
            }
            let segment = segments.last_mut().expect("one at least");
            self.rewriter.line_into(text, &mut segment.text);
            segment.text.push('\n');
        }
        segments
    }

    fn apply(&mut self, segments: &[Segment]) -> io::Result<()> {
        for segment in segments {
            if segment.rotate {
                self.rotate(segment.day)?;
            } else {
                self.day = segment.day;
            }
            self.file.write_all(segment.text.as_bytes())?;
            self.length += segment.text.len() as u64;
        }
        self.file.sync_data()
    }

    /// Runs `change` until it succeeds, going back to the saved place after each failure, or
    /// until asked to stop.
    fn retrying(
        &mut self,
        stop: &AtomicBool,
        mut change: impl FnMut(&mut Self) -> io::Result<()>,
    ) -> Result<(), TrackError> {
        let mut pause = Duration::from_secs(1);
        loop {
            let Err(e) = change(self) else {
                return Ok(());
            };
            if stop.load(Ordering::Relaxed) {
                return Err(TrackError::Copy {
                    path: self.path.clone(),
                    source: e,
                });
            }
            error!(target: TARGET, "cannot write the copy of the log, {} ({e}); trying again in {}s", self.path.display(), pause.as_secs());
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(60));
            match recover(&self.dir, &self.path, self.saved.as_ref()) {
                Ok(found) => {
                    (self.file, self.id, self.length, self.day) =
                        (found.file, found.id, found.length, found.day);
                }
                Err(e) => {
                    error!(target: TARGET, "cannot go back to the saved place of the copy, {} ({e})", self.path.display())
                }
            }
        }
    }

    /// Renames the current file after its day and starts a new one for `day`.
    fn rotate(&mut self, day: Option<NaiveDate>) -> io::Result<()> {
        if let (true, Some(old)) = (self.length > 0, self.day) {
            self.file.sync_data()?;
            let target = free_name(&self.dir, old);
            fs::rename(&self.path, &target)?;
            let (file, id) = create(&self.path)?;
            sync_dir(&self.dir)?;
            (self.file, self.id, self.length) = (file, id, 0);
        }
        self.day = day;
        Ok(())
    }

    /// Compresses the rotated files of days before the current one, and deletes expired ones.
    fn housekeeping(&mut self, now: DateTime<Local>) {
        self.next_expiry = Instant::now() + EXPIRY_CHECK;
        let files = match rotated(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                warn!(target: TARGET, "cannot list {} ({e}); its old files are looked at later", self.dir.display());
                return;
            }
        };
        for file in files {
            if expired(file.day, self.retention, now) {
                match fs::remove_file(&file.path) {
                    Ok(()) => {
                        info!(target: TARGET, "{} deleted: its day began more than retention.mta_logs ago", file.path.display())
                    }
                    Err(e) => warn!(target: TARGET, "cannot delete {} ({e})", file.path.display()),
                }
            } else if !file.gz && self.day.is_none_or(|d| file.day < d) {
                if let Err(e) = compress(&file.path) {
                    warn!(target: TARGET, "cannot compress {} ({e}); tried again later", file.path.display());
                }
            }
        }
    }
}

/// Whether the day that began `day` is more than `retention` ago.
fn expired(day: NaiveDate, retention: Duration, now: DateTime<Local>) -> bool {
    let start = Local
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .earliest();
    let retention = chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
    start.is_some_and(|start| now - start > retention)
}

/// The copy's current file at the saved place: the file found by its inode (a rotation after
/// the save undone), cut back to the saved length. Without a saved place, the file as it is.
fn recover(dir: &Path, path: &Path, saved: Option<&CopyPlace>) -> io::Result<Found> {
    let Some(saved) = saved else {
        let (file, id) = open(path)?;
        let meta = file.metadata()?;
        // Lines already there are of the day the file was last written.
        let day = (meta.len() > 0)
            .then(|| meta.modified().ok())
            .flatten()
            .map(|t| DateTime::<Local>::from(t).date_naive());
        if meta.len() > 0 {
            warn!(target: TARGET, "no saved place for the copy: it goes on at the end of {}", path.display());
        }
        let length = meta.len();
        return Ok(Found {
            file,
            id,
            length,
            day,
        });
    };
    let day = saved
        .day
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok());
    let same =
        |p: &Path| fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (saved.dev, saved.ino));
    if !same(path) {
        let files = rotated(dir)?;
        if let Some(found) = files.iter().find(|f| !f.gz && same(&f.path)) {
            // Rotated after the save: what came after it is to be written again.
            for later in files.iter().filter(|f| !f.gz && f.day > found.day) {
                fs::remove_file(&later.path)?;
            }
            fs::rename(&found.path, path)?;
            sync_dir(dir)?;
            info!(target: TARGET, "{}: the rotation after the last saved place undone", found.path.display());
        } else if saved.length > 0 {
            warn!(target: TARGET, "{} is not the file whose place was saved (it was removed or replaced): the copy goes on in it", path.display());
        }
    }
    let (file, id) = open(path)?;
    let length = file.metadata()?.len();
    if id != (saved.dev, saved.ino) {
        let day = if length > 0 { day } else { None };
        return Ok(Found {
            file,
            id,
            length,
            day,
        });
    }
    if length > saved.length {
        file.set_len(saved.length)?;
        file.sync_data()?;
    } else if length < saved.length {
        warn!(target: TARGET, "{} is shorter ({length} bytes) than when its place was saved ({}): lines were lost from it", path.display(), saved.length);
    }
    Ok(Found {
        file,
        id,
        length: length.min(saved.length),
        day,
    })
}

/// Opens (or creates) a file of the copy for appending.
fn open(path: &Path) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

/// A new, empty current file.
fn create(path: &Path) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_len(0)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `mail.log-YYYYMMDD`, or with `.1`, `.2`... if that is taken (plain or compressed).
fn free_name(dir: &Path, day: NaiveDate) -> PathBuf {
    let base = format!("{CURRENT}-{}", day.format("%Y%m%d"));
    let taken = |name: &str| {
        dir.join(name).symlink_metadata().is_ok()
            || dir.join(format!("{name}.gz")).symlink_metadata().is_ok()
    };
    let mut name = base.clone();
    let mut n = 0;
    while taken(&name) {
        n += 1;
        name = format!("{base}.{n}");
    }
    dir.join(name)
}

/// The rotated files of the copy: `mail.log-YYYYMMDD[.N][.gz]`.
fn rotated(dir: &Path) -> io::Result<Vec<Rotated>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(CURRENT).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let (rest, gz) = match rest.strip_suffix(".gz") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let (date, suffix) = rest.split_at(rest.len().min(8));
        let suffix_ok = suffix.is_empty()
            || suffix
                .strip_prefix('.')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let Ok(day) = NaiveDate::parse_from_str(date, "%Y%m%d") else {
            continue;
        };
        if suffix_ok && date.len() == 8 {
            out.push(Rotated {
                path: entry.path(),
                day,
                gz,
            });
        }
    }
    Ok(out)
}

/// `path` compressed to `path.gz` (a `.tmp` synced, then renamed), then removed. A `.gz`
/// already there is the finished one (rotated names are never reused): the plain file is a
/// leftover.
fn compress(path: &Path) -> io::Result<()> {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let gz = PathBuf::from(gz);
    if !gz.exists() {
        let mut tmp = gz.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        out.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut File::open(path)?, &mut encoder)?;
        encoder.finish()?.sync_all()?;
        fs::rename(&tmp, &gz)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    fs::remove_file(path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// A journal entry as rsyslog writes it to a file: RFC 3339 local time with microseconds, the
/// host, `IDENT[PID]: `, the message with control characters escaped (`#012` for a newline).
fn syslog_line(entry: &JournalEntry, host: &str, out: &mut String) {
    let time = entry.time.with_timezone(&Local);
    let _ = write!(
        out,
        "{} {} {}",
        time.format("%Y-%m-%dT%H:%M:%S%.6f%:z"),
        entry
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(host),
        entry.ident
    );
    if let Some(pid) = entry.pid {
        let _ = write!(out, "[{pid}]");
    }
    out.push_str(": ");
    for c in entry.message.chars() {
        if c.is_ascii_control() && c != '\t' {
            let _ = write!(out, "#{:03o}", c as u32);
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{AddressPrivacy, IpPrivacy, Privacy},
        track::{follow::Position, state::Place},
    };

    fn privacy() -> Pseudonymiser {
        Pseudonymiser::new(
            Privacy {
                ip: IpPrivacy::Truncated,
                address: AddressPrivacy::Domain,
                ..Privacy::default()
            },
            None,
        )
    }

    fn read(text: &str) -> Read {
        Read {
            text: text.into(),
            entry: None,
            key: String::new(),
            after: Place::File {
                path: PathBuf::new(),
                position: Position {
                    dev: 0,
                    ino: 0,
                    offset: 0,
                    head: None,
                },
            },
        }
    }

    fn line(day: NaiveDate, n: usize) -> String {
        format!(
            "{}T12:00:00+00:00 mx postfix/smtpd[1]: {n:011X}: client=c.example.net[192.0.2.{}]",
            day.format("%Y-%m-%d"),
            n % 250
        )
    }

    fn days_ago(n: i64) -> NaiveDate {
        Local::now().date_naive() - chrono::TimeDelta::days(n)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn text_of(dir: &Path) -> String {
        let mut files: Vec<_> = rotated(dir).unwrap();
        files.sort_by_key(|f| f.path.clone());
        let mut all = String::new();
        for f in files {
            let bytes = fs::read(&f.path).unwrap();
            if f.gz {
                io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut all)
                    .unwrap();
            } else {
                all.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
        all + &fs::read_to_string(dir.join(CURRENT)).unwrap_or_default()
    }

    const WEEK: Duration = Duration::from_secs(7 * 86400);

    /// A crash after lines were written, and after a rotation, before the place was saved:
    /// the copy goes back to the saved place, and writing the lines again gives each once.
    #[test]
    fn a_rotation_after_the_saved_place_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("mta");
        let stop = AtomicBool::new(false);
        let mut copy = LogCopy::open(Some(&d), WEEK, None, privacy()).unwrap();
        let first: Vec<Read> = (0..3).map(|n| read(&line(days_ago(3), n))).collect();
        copy.write(&first, &stop).unwrap();
        let saved = copy.place().unwrap();
        copy.saved();
        let later: Vec<Read> = (3..6)
            .map(|n| read(&line(days_ago(6 - n as i64), n)))
            .collect();
        copy.write(&later, &stop).unwrap();
        assert_eq!(
            names(&d),
            [
                "mail.log".to_string(),
                format!("mail.log-{}", days_ago(3).format("%Y%m%d")),
                format!("mail.log-{}", days_ago(2).format("%Y%m%d")),
            ]
        );
        drop(copy);
        // The restart: back to the saved place, the later lines read again.
        let mut copy = LogCopy::open(Some(&d), WEEK, Some(&saved), privacy()).unwrap();
        assert_eq!(names(&d), ["mail.log"]);
        copy.write(&later, &stop).unwrap();
        copy.saved();
        let text = text_of(&d);
        for n in 0..6 {
            assert_eq!(text.matches(&format!(" {n:011X}: ")).count(), 1, "{text}");
        }
        assert!(!text.contains("192.0.2.1]"), "{text}");
        // The earlier days compressed, the plain files gone.
        let mut expected = vec!["mail.log".to_string()];
        for n in [3, 2] {
            expected.push(format!("mail.log-{}.gz", days_ago(n).format("%Y%m%d")));
        }
        expected.sort();
        assert_eq!(names(&d), expected);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o750);
        for name in names(&d) {
            assert_eq!(mode(&d.join(&name)), 0o640, "{name}");
        }
    }

    /// Lines written after the saved place, no rotation: cut back.
    #[test]
    fn lines_after_the_saved_place_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let mut copy = LogCopy::open(Some(dir.path()), WEEK, None, privacy()).unwrap();
        copy.write(&[read(&line(days_ago(0), 1))], &stop).unwrap();
        let saved = copy.place().unwrap();
        copy.write(&[read(&line(days_ago(0), 2))], &stop).unwrap();
        drop(copy);
        let _copy = LogCopy::open(Some(dir.path()), WEEK, Some(&saved), privacy()).unwrap();
        let text = fs::read_to_string(dir.path().join(CURRENT)).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(text.len() as u64, saved.length);
    }

    #[test]
    fn expired_days_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let mut copy = LogCopy::open(Some(dir.path()), WEEK, None, privacy()).unwrap();
        let lines: Vec<Read> = [9, 8, 7, 6, 1, 0]
            .iter()
            .enumerate()
            .map(|(n, ago)| read(&line(days_ago(*ago), n)))
            .collect();
        copy.write(&lines, &stop).unwrap();
        copy.saved();
        let mut expected: Vec<String> = [6, 1]
            .iter()
            .map(|n| format!("mail.log-{}.gz", days_ago(*n).format("%Y%m%d")))
            .collect();
        expected.push("mail.log".into());
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    #[test]
    fn journal_entries_become_syslog_lines() {
        let entry = JournalEntry {
            cursor: "s=1".into(),
            time: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
            host: Some("mx".into()),
            ident: "dovecot".into(),
            pid: Some(42),
            message: "imap-login: Login: user=<alice@example.org>,\nrip=192.0.2.9".into(),
        };
        let mut out = String::new();
        syslog_line(&entry, "other", &mut out);
        let line = SyslogLine::split(&out).unwrap();
        assert_eq!(
            (line.host, line.ident, line.pid),
            ("mx", "dovecot", Some(42))
        );
        assert_eq!(line.stamp.time(&Local::now()).unwrap(), entry.time, "{out}");
        assert!(
            out.ends_with("user=<alice@example.org>,#012rip=192.0.2.9"),
            "{out}"
        );
    }
}
