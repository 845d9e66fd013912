//! Follows an MTA log file (`/var/log/mail.log`, Postfix's `maillog_file`) line by line so that
//! every line is handed out exactly once across restarts and log rotation.
//!
//! Each [`Line`] carries the [`Position`] just after it; a caller that records the line and then
//! saves that position resumes exactly there after a restart ([`FileFollower::new`] with
//! `saved`).
//!
//! What it handles:
//! - **rename + create** (logrotate's default, `postfix logrotate`): the old file stays open. Once
//!   the path names another inode *and that file is not empty* (so the writer has moved on), the
//!   old file is read to its end, its unterminated last line included, then the new file from 0.
//!   While the new file is still empty or missing the old one keeps being followed, because the
//!   writer may not have reopened yet.
//! - **copytruncate**: the open file became shorter than what was read, or its first bytes
//!   changed (truncated and refilled before we looked). The unread rest is looked for in the
//!   rotated copy (a sibling whose first line hashes to ours, at least as long as our offset) and
//!   read from our offset; then the file is read again from 0. Without such a copy reading
//!   restarts at 0 and a gap is reported. The first bytes are checked
//!   again after every read, so a truncate-and-refill racing a read never yields a line made of
//!   the new content at the old offset.
//!   The copytruncate race: lines written after logrotate's copy and before its truncate are in
//!   neither file; no reader can see them (logrotate documents this loss). Lines written before
//!   the copy that we had not read yet are in the copy, and are read from there.
//! - **restart**: a saved position on the same inode (same head, size >= offset) resumes at its
//!   offset. Otherwise the saved file is looked for among the rotated siblings (same directory,
//!   name = base name + a suffix of digits and `.`, `-`, `_`, as in `mail.log.1`,
//!   `mail.log-20261129`, `maillog.20261129-093000`, each maybe with `.gz`) by inode and
//!   head, then as a copy by head; it is finished from the saved offset and the path read from 0.
//!   If it is not found, the path is read from 0 and a gap is reported.
//! - **compressed**: a `.gz` sibling is judged by its decompressed head and read from the
//!   saved offset of its decompressed stream (positions count decompressed bytes, so a line
//!   keeps its head and offset, and its key). Plain copies are preferred; one shorter than the
//!   saved offset does not match; one damaged later ends there, with a gap.
//! - **two rotations unseen** (the follower stopped for a whole rotation period): only the
//!   generation holding the saved position and the current file are read; the generation in
//!   between is not (its order among siblings cannot be known for sure). A non-empty sibling
//!   modified after the finished file is reported as a gap.
//! - A missing file is no error: nothing is returned until it appears (then read from 0).
//! - Lines: split on `\n`; one trailing `\r` is stripped (CRLF files), offsets count it. Bytes
//!   that are not UTF-8 are replaced (lossy). Lines longer than [`MAX_LINE`] bytes are cut to
//!   that length (the rest is skipped, the position still lands after the whole line).
//!
//! - Only regular files are read, judged on the opened descriptor ([`NotRegular`] otherwise):
//!   a FIFO would block, a device never ends. A poll reads at most [`POLL_BUDGET`] bytes
//!   ([`FileFollower::more`] then says more is there).
//!
//! A "gap" is logged with `tracing::warn!` (at most once a minute per cause) and counted in
//! [`FileFollower::gaps`]. Not detected:
//! a file truncated and refilled past our offset with the same first [`HEAD_MAX`] bytes (log
//! lines start with a timestamp, so in practice it does not happen).
//!
//! An I/O error after some lines were read returns those lines (they are consumed); the error
//! comes back from the next `poll`. The follower never reads a file twice to recover from one.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The first line is hashed up to this many bytes (the `head` of a [`Position`]).
pub const HEAD_MAX: usize = 4096;
/// Longer lines are cut to this many bytes (Postfix cuts its own at about 2000).
pub const MAX_LINE: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;
/// Most bytes one `poll` reads: a huge file (or one line without end) is read a slice per
/// poll, so that the caller can stop between them.
pub const POLL_BUDGET: u64 = 64 << 20;
/// A warning of one cause is logged at most this often; the ones left out are counted.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Where the follower is: enough to resume exactly after a restart and to notice a replaced file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    /// Bytes of the file consumed (always at a line boundary).
    pub offset: u64,
    /// SHA-256 (hex) of the file's first line (with its newline), or of its first [`HEAD_MAX`]
    /// bytes if the first line is longer; None while the file holds no complete first line.
    pub head: Option<String>,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Lossy UTF-8, without the newline (and without a trailing `\r`).
    pub text: String,
    /// The position just after this line: save it once the line is recorded.
    pub after: Position,
}

/// Where to start when there is no saved position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))] // `End`: for tests and later callers
pub enum Start {
    /// From the first byte of the file.
    Beginning,
    /// After the last complete line present now (a partial last line is returned once complete).
    /// A file that does not exist yet is read from its beginning once it appears.
    End,
}

enum Init {
    Saved(Position),
    Start(Start),
}

/// Follows one log path across rotation; see the module docs.
pub struct FileFollower {
    path: PathBuf,
    /// Resolution of `saved`/`start` that failed with an I/O error, retried by `poll`.
    pending: Option<Init>,
    cur: Option<Tracked>,
    /// Where a saved position pointed while nothing is open yet.
    last: Option<Position>,
    gaps: u64,
    watch: Option<Watch>,
    /// Bytes the current poll may still read.
    budget: u64,
    /// The last poll stopped at its budget: more is there to read now.
    more: bool,
    warnings: WarnLimit,
}

impl FileFollower {
    /// Starts following `path` from `saved` (a position handed out earlier, e.g. loaded from the
    /// state file) or, without one, from `start` (Start::Beginning or Start::End).
    pub fn new(path: PathBuf, saved: Option<Position>, start: Start) -> Self {
        let mut follower = FileFollower {
            path,
            pending: None,
            cur: None,
            last: saved.clone(),
            gaps: 0,
            watch: None,
            budget: POLL_BUDGET,
            more: false,
            warnings: WarnLimit::default(),
        };
        let init = match saved {
            Some(p) => Init::Saved(p),
            None => Init::Start(start),
        };
        if let Err(e) = follower.resolve(&init) {
            // Not fatal here (new cannot fail); poll retries and returns the error.
            if let Some(left_out) = follower.warnings.allow("open") {
                tracing::warn!(path = %follower.path.display(), error = %e, "cannot open log yet{}", left_out);
            }
            follower.pending = Some(init);
        }
        follower.watch = Watch::new(&follower.path);
        follower
    }

    /// The complete lines available now, at most `max` of them, in order, across rotation. Never
    /// returns a partial last line of the current file (it waits for its newline) — but when a
    /// file has been rotated away and is finished, its unterminated last line is returned as a
    /// line.
    pub fn poll(&mut self, max: usize) -> io::Result<Vec<Line>> {
        let mut out = Vec::new();
        self.budget = POLL_BUDGET;
        self.more = false;
        let result = self.poll_into(&mut out, max);
        if let Some(cur) = &self.cur {
            self.last = Some(cur.position());
        }
        match result {
            Ok(()) => Ok(out),
            Err(e) if out.is_empty() => Err(e),
            Err(e) => {
                // These lines are consumed: hand them out; the error comes back next time.
                if let Some(left_out) = self.warnings.allow("read") {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not read the log{left_out}");
                }
                Ok(out)
            }
        }
    }

    /// What the end of a read means for the poll: the file was replaced (start over), the
    /// budget is spent (return, more to come), or the file's end (read on if there is room).
    fn after_read(&mut self, stop: Stop, room: bool) -> io::Result<Flow> {
        Ok(match stop {
            Stop::Replaced => {
                self.on_replaced()?;
                Flow::Again
            }
            Stop::Budget => {
                self.more = true;
                Flow::Return
            }
            Stop::End if room => Flow::On,
            Stop::End => Flow::Return,
        })
    }

    fn poll_into(&mut self, out: &mut Vec<Line>, max: usize) -> io::Result<()> {
        if let Some(init) = self.pending.take() {
            if let Err(e) = self.resolve(&init) {
                self.pending = Some(init);
                return Err(e);
            }
        }
        while out.len() < max {
            let Some(cur) = self.cur.as_mut() else {
                match open_log(&self.path) {
                    Ok(f) => {
                        self.cur = Some(Tracked::open(f, 0, &self.path)?);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                }
            };
            if cur.content_replaced()? {
                self.on_replaced()?;
                continue;
            }
            let stop = cur.read_lines(out, max, &mut self.budget)?;
            match self.after_read(stop, out.len() < max)? {
                Flow::Again => continue,
                Flow::Return => break,
                Flow::On => {}
            }
            // All complete lines read: has the log moved on to another file?
            let Some((next, meta)) = self.moved_on()? else {
                break;
            };
            let cur = self.cur.as_mut().expect("checked above");
            // Writes that landed between our read and the writer's switch.
            let stop = cur.read_lines(out, max, &mut self.budget)?;
            match self.after_read(stop, out.len() < max)? {
                Flow::Again => continue,
                Flow::Return => break,
                Flow::On => {}
            }
            let cur = self.cur.as_mut().expect("checked above");
            if let Some(line) = cur.take_partial() {
                out.push(line);
            }
            let next = Tracked::open(next, 0, &self.path)?;
            let finished = self.cur.replace(next).expect("checked above");
            if let Some(why) = &finished.damaged {
                self.gap(
                    "damaged compressed copy",
                    format!(
                        "{} could not be read to its end ({why})",
                        finished.name.display()
                    ),
                );
            }
            self.report_unseen_generations(&finished, &meta);
        }
        Ok(())
    }

    /// The position after the last line returned (once a rotated file is finished: the start of
    /// the next one, which is equivalent).
    pub fn position(&self) -> Option<Position> {
        match &self.cur {
            Some(cur) => Some(cur.position()),
            None => self.last.clone(),
        }
    }

    /// How many times lines may have been missed (saved file gone, truncated file without its
    /// copy, rotated generations skipped). Each is also logged with `tracing::warn!`, at most
    /// once a minute per cause.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Whether the last poll stopped at [`POLL_BUDGET`] with more to read now: poll again
    /// rather than wait.
    pub fn more(&self) -> bool {
        self.more
    }

    /// Blocks until the file may have changed or `timeout` passed. Uses inotify (the `notify`
    /// crate) on the directory and the file; without a watcher it just sleeps `timeout`.
    pub fn wait(&mut self, timeout: Duration) {
        if self.watch.is_none() {
            self.watch = Watch::new(&self.path);
            if self.watch.is_some() {
                // A change may have come before the watcher existed: let the caller look.
                return;
            }
            std::thread::sleep(timeout);
            return;
        }
        let deadline = Instant::now() + timeout;
        let base = self.path.file_name().map(|n| n.as_bytes().to_vec());
        let watch = self.watch.as_ref().expect("checked above");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match watch.rx.recv_timeout(left) {
                Ok(event) => {
                    if relevant(&event, base.as_deref()) {
                        while watch.rx.try_recv().is_ok() {}
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.watch = None;
                    std::thread::sleep(left);
                    return;
                }
            }
        }
    }

    fn resolve(&mut self, init: &Init) -> io::Result<()> {
        match init {
            Init::Start(start) => match open_log(&self.path) {
                Ok(f) => {
                    let offset = match start {
                        Start::Beginning => 0,
                        Start::End => last_line_end(&f)?,
                    };
                    self.cur = Some(Tracked::open(f, offset, &self.path)?);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
            Init::Saved(saved) => self.resume(saved),
        }
    }

    fn resume(&mut self, saved: &Position) -> io::Result<()> {
        let current = match open_log(&self.path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(f) = current {
            let meta = f.metadata()?;
            if (meta.dev(), meta.ino()) == (saved.dev, saved.ino) {
                let t = Tracked::open(f, 0, &self.path)?;
                if t.size()? >= saved.offset && heads_match(saved, &t.head) {
                    self.cur = Some(Tracked::reopen_at(t, saved.offset)?);
                    return Ok(());
                }
                // Truncated (and maybe refilled) while we were away.
            }
        }
        if let Some(t) = self.find_rotated(saved, true)? {
            self.cur = Some(t);
            return Ok(());
        }
        if saved.offset > 0 {
            self.gap(
                "saved place not found",
                format!(
                    "saved log position (inode {}, offset {}) not found; reading {} from its start",
                    saved.ino,
                    saved.offset,
                    self.path.display()
                ),
            );
        }
        self.cur = match open_log(&self.path) {
            Ok(f) => Some(Tracked::open(f, 0, &self.path)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(())
    }

    /// The current file lost what we were reading (copytruncate): continue in its copy, if any,
    /// else read the path from 0.
    fn on_replaced(&mut self) -> io::Result<()> {
        let cur = self.cur.as_ref().expect("called with a current file");
        let saved = cur.position();
        let unread = cur.read_pos > cur.offset || cur.size_seen > cur.offset;
        if saved.head.is_some() {
            if let Some(t) = self.find_rotated(&saved, false)? {
                self.cur = Some(t);
                return Ok(());
            }
        }
        // Opened before the old one is let go: an error leaves the state as it was.
        let next = match open_log(&self.path) {
            Ok(f) => Some(Tracked::open(f, 0, &self.path)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if saved.head.is_some() {
            // Even with nothing unread seen, lines written after our last read and before the
            // copy were only in the copy, which is gone (compressed, say).
            self.gap(
                "truncated without a copy",
                format!(
                    "{} was truncated and no rotated copy of it was found ({})",
                    self.path.display(),
                    if unread {
                        "it had unread data"
                    } else {
                        "lines written since the last read are lost"
                    }
                ),
            );
        }
        self.cur = next;
        Ok(())
    }

    /// A rotated sibling holding `saved`: by inode (`by_inode`) or else as a copy with the same
    /// head, at least `saved.offset` long. Opened at `saved.offset`. A compressed sibling
    /// (`.gz`) is judged and read by its decompressed bytes; a plain copy is preferred.
    fn find_rotated(&self, saved: &Position, by_inode: bool) -> io::Result<Option<Tracked>> {
        let Some(head) = &saved.head else {
            return Ok(None);
        };
        let mut best: Option<(u64, PathBuf)> = None;
        let mut compressed = Vec::new();
        for (name, meta) in rotated_siblings(&self.path) {
            let same_inode = (meta.dev(), meta.ino()) == (saved.dev, saved.ino);
            if !by_inode && same_inode {
                continue;
            }
            if is_gzip(&name) {
                compressed.push((name, same_inode));
                continue;
            }
            if meta.len() < saved.offset {
                continue;
            }
            let Ok(f) = open_log(&name) else { continue };
            let Ok(prefix) = read_prefix(&f) else {
                continue;
            };
            if head_of(&prefix).as_deref() != Some(head.as_str()) {
                continue;
            }
            if by_inode && same_inode {
                let t = Tracked::open(f, saved.offset, &name)?;
                return Ok(Some(t));
            }
            // Several copies with our head: the longest holds the most.
            if best.as_ref().is_none_or(|(len, _)| meta.len() > *len) {
                best = Some((meta.len(), name));
            }
        }
        if let Some((_, name)) = best {
            let f = open_log(&name)?;
            tracing::info!(copy = %name.display(), offset = saved.offset, "finishing rotated copy of the log");
            return Ok(Some(Tracked::open(f, saved.offset, &name)?));
        }
        // The one we were reading first (a restart in the middle of it), then the others.
        compressed.sort_by_key(|(_, same_inode)| !same_inode);
        for (name, _) in compressed {
            let Ok(f) = open_log(&name) else { continue };
            let prefix = match gzip_prefix(&f) {
                Ok(prefix) if head_of(&prefix).as_deref() == Some(head.as_str()) => prefix,
                _ => continue,
            };
            // Shorter than the saved place, or damaged before it: not the file we read.
            let Ok(t) = Tracked::open_gzip(f, prefix, saved.offset, &name) else {
                continue;
            };
            tracing::info!(copy = %name.display(), offset = saved.offset, "finishing compressed rotated copy of the log");
            return Ok(Some(t));
        }
        Ok(None)
    }

    /// After reading `cur` to its end: the path's file if it is another, non-empty one (the
    /// writer has switched to it, so `cur` gets no more lines).
    fn moved_on(&self) -> io::Result<Option<(File, Metadata)>> {
        let cur = self.cur.as_ref().expect("called with a current file");
        // stat, not open: opening would wake our own inotify watch.
        match fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == (cur.dev, cur.ino) || m.len() == 0 => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let f = match open_log(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        if (m.dev(), m.ino()) == (cur.dev, cur.ino) || m.len() == 0 {
            return Ok(None);
        }
        Ok(Some((f, m)))
    }

    /// Rotated generations newer than the one just finished were never read.
    fn report_unseen_generations(&mut self, finished: &Tracked, next: &Metadata) {
        let Ok(done) = finished.file.metadata() else {
            return;
        };
        let done_mtime = (done.mtime(), done.mtime_nsec());
        let unseen: Vec<String> = rotated_siblings(&self.path)
            .into_iter()
            .filter(|(_, m)| {
                let id = (m.dev(), m.ino());
                id != (finished.dev, finished.ino)
                    && id != (next.dev(), next.ino())
                    && m.len() > 0
                    && (m.mtime(), m.mtime_nsec()) > done_mtime
            })
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !unseen.is_empty() {
            self.gap(
                "generations unread",
                format!(
                    "rotated log file(s) newer than the one finished were not read: {}",
                    unseen.join(", ")
                ),
            );
        }
    }

    /// Counts a gap of `cause`, and says so unless that cause was said less than a minute ago.
    fn gap(&mut self, cause: &'static str, what: String) {
        self.gaps += 1;
        if let Some(left_out) = self.warnings.allow(cause) {
            tracing::warn!(path = %self.path.display(), "log lines may have been missed: {what}{left_out}");
        }
    }
}

enum Next {
    Line(Line),
    End,
    Replaced,
    /// The poll's budget is spent.
    Budget,
}

/// What a poll does next, after a read.
enum Flow {
    On,
    Again,
    Return,
}

/// Why [`Tracked::read_lines`] stopped.
enum Stop {
    /// `max` lines, or no more in the file now.
    End,
    /// The file turned out to be replaced: nothing read since the last line is used.
    Replaced,
    Budget,
}

/// One open file and the bytes of it not yet handed out.
struct Tracked {
    file: File,
    name: PathBuf,
    dev: u64,
    ino: u64,
    /// Start of the line being assembled: everything before was handed out.
    offset: u64,
    /// Where the next read starts.
    read_pos: u64,
    /// The largest size seen by `content_replaced`.
    size_seen: u64,
    /// The file's first bytes as we know them (up to HEAD_MAX): a change means it was replaced.
    prefix: Vec<u8>,
    head: Option<String>,
    /// Bytes read but not yet split into lines, from `start`.
    buf: Vec<u8>,
    start: usize,
    /// The line being assembled (at most MAX_LINE bytes kept) and its full length so far.
    line: Vec<u8>,
    line_len: u64,
    warnings: WarnLimit,
    /// A compressed rotated copy: read through this, never written to again.
    gzip: Option<flate2::read::MultiGzDecoder<ReadAt>>,
    /// Why a compressed copy could not be read to its end.
    damaged: Option<String>,
    /// Opened in the middle of a line: the rest of it is skipped, not handed out.
    mid_line: bool,
}

impl Tracked {
    fn open(mut file: File, offset: u64, name: &Path) -> io::Result<Tracked> {
        let meta = file.metadata()?;
        let prefix = read_prefix(&file)?;
        let head = head_of(&prefix);
        file.seek(SeekFrom::Start(offset))?;
        Ok(Tracked {
            file,
            name: name.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            read_pos: offset,
            size_seen: meta.len(),
            prefix,
            head,
            buf: Vec::new(),
            start: 0,
            line: Vec::new(),
            line_len: 0,
            warnings: WarnLimit::default(),
            gzip: None,
            damaged: None,
            mid_line: false,
        })
        .and_then(Tracked::check_line_start)
    }

    /// A gzip-compressed rotated copy whose decompressed first bytes are `prefix`, positioned
    /// at `offset` of its decompressed stream; an error if the stream is shorter than that.
    fn open_gzip(file: File, prefix: Vec<u8>, offset: u64, name: &Path) -> io::Result<Tracked> {
        let meta = file.metadata()?;
        let mut gzip = flate2::read::MultiGzDecoder::new(ReadAt {
            file: file.try_clone()?,
            at: 0,
        });
        let before = offset.saturating_sub(1);
        let skipped = io::copy(&mut (&mut gzip).take(before), &mut io::sink())?;
        let mut last = [b'\n'];
        if skipped < before || (offset > 0 && gzip.read(&mut last)? == 0) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than the saved place", name.display()),
            ));
        }
        let head = head_of(&prefix);
        let t = Tracked {
            file,
            name: name.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            read_pos: offset,
            size_seen: offset,
            prefix,
            head,
            buf: Vec::new(),
            start: 0,
            line: Vec::new(),
            line_len: 0,
            warnings: WarnLimit::default(),
            gzip: Some(gzip),
            damaged: None,
            mid_line: last[0] != b'\n',
        };
        Ok(t.said_mid_line())
    }

    /// Notes whether the offset is not at a line's start (the byte before it no newline).
    fn check_line_start(mut self) -> io::Result<Tracked> {
        let mut before = [b'\n'];
        if self.offset > 0 {
            self.file.read_exact_at(&mut before, self.offset - 1)?;
        }
        self.mid_line = before[0] != b'\n';
        Ok(self.said_mid_line())
    }

    fn said_mid_line(self) -> Tracked {
        if self.mid_line {
            tracing::warn!(file = %self.name.display(), offset = self.offset, "the saved place is not at the start of a line: resuming at the next whole line");
        }
        self
    }

    fn reopen_at(mut t: Tracked, offset: u64) -> io::Result<Tracked> {
        t.file.seek(SeekFrom::Start(offset))?;
        t.offset = offset;
        t.read_pos = offset;
        t.check_line_start()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn position(&self) -> Position {
        Position {
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
            head: self.head.clone(),
        }
    }

    /// Truncated below what we read, or its first bytes are no longer what they were.
    fn content_replaced(&mut self) -> io::Result<bool> {
        if self.gzip.is_some() {
            // A compressed copy is rotated: nobody writes to it, and its size is not ours.
            return Ok(false);
        }
        let size = self.size()?;
        if size < self.read_pos {
            return Ok(true);
        }
        self.size_seen = self.size_seen.max(size);
        // Read again: the first line as it is *now*, not as cached.
        let now = read_prefix(&self.file)?;
        if !now.starts_with(&self.prefix) {
            return Ok(true);
        }
        if now.len() > self.prefix.len() {
            self.prefix = now;
            if self.head.is_none() {
                self.head = head_of(&self.prefix);
            }
        }
        Ok(false)
    }

    /// Appends complete lines to `out` until it holds `max`, the file has no more, or `budget`
    /// bytes were read (what is read counts against it).
    fn read_lines(
        &mut self,
        out: &mut Vec<Line>,
        max: usize,
        budget: &mut u64,
    ) -> io::Result<Stop> {
        while out.len() < max {
            match self.next_line(budget)? {
                Next::Line(line) => out.push(line),
                Next::End => return Ok(Stop::End),
                Next::Replaced => return Ok(Stop::Replaced),
                Next::Budget => return Ok(Stop::Budget),
            }
        }
        Ok(Stop::End)
    }

    fn next_line(&mut self, budget: &mut u64) -> io::Result<Next> {
        loop {
            let rest = &self.buf[self.start..];
            if let Some(i) = rest.iter().position(|&b| b == b'\n') {
                let seg = &rest[..i];
                append_capped(&mut self.line, seg);
                self.line_len += i as u64;
                self.start += i + 1;
                let consumed = self.line_len + 1;
                if std::mem::take(&mut self.mid_line) {
                    // The end of a line whose start was before the saved place.
                    self.line.clear();
                    self.line_len = 0;
                    self.offset += consumed;
                    continue;
                }
                return Ok(Next::Line(self.emit(consumed)));
            }
            append_capped(&mut self.line, rest);
            self.line_len += rest.len() as u64;
            self.buf.clear();
            self.start = 0;
            if *budget == 0 {
                return Ok(Next::Budget);
            }
            self.buf.resize(CHUNK, 0);
            let n = loop {
                let read = match &mut self.gzip {
                    Some(gzip) => gzip.read(&mut self.buf),
                    None => self.file.read(&mut self.buf),
                };
                match read {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if self.gzip.is_some() => {
                        // A damaged copy ends here; the follower moves on and says so.
                        self.damaged = Some(e.to_string());
                        self.buf.clear();
                        return Ok(Next::End);
                    }
                    Err(e) => {
                        self.buf.clear();
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(n);
            if n == 0 {
                return Ok(Next::End);
            }
            *budget = budget.saturating_sub(n as u64);
            // Keep the known prefix growing while reading the file's start.
            let (pos, have) = (self.read_pos, self.prefix.len() as u64);
            if pos < have && self.buf[..n.min((have - pos) as usize)] != self.prefix[pos as usize..]
            {
                return Ok(Next::Replaced);
            }
            if have < HEAD_MAX as u64 && pos <= have && have < pos + n as u64 {
                let from = (have - pos) as usize;
                let to = ((HEAD_MAX as u64 - pos) as usize).min(n);
                self.prefix.extend_from_slice(&self.buf[from..to]);
                if self.head.is_none() {
                    self.head = head_of(&self.prefix);
                }
            }
            self.read_pos += n as u64;
            // Truncated and refilled between the check in poll and this read: the bytes just
            // read may belong to the new content. Checked after the read, so that is noticed.
            if self.content_replaced()? {
                return Ok(Next::Replaced);
            }
        }
    }

    /// The unterminated last line of a finished file, if any.
    fn take_partial(&mut self) -> Option<Line> {
        if self.line_len == 0 || self.mid_line {
            return None;
        }
        let consumed = self.line_len;
        Some(self.emit(consumed))
    }

    fn emit(&mut self, consumed: u64) -> Line {
        if self.line_len > MAX_LINE as u64 {
            if let Some(left_out) = self.warnings.allow("long line") {
                tracing::warn!(
                    file = %self.name.display(),
                    offset = self.offset,
                    length = self.line_len,
                    "log line longer than {MAX_LINE} bytes cut{left_out}"
                );
            }
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.line_len = 0;
        self.offset += consumed;
        if self.head.is_none() && self.gzip.is_none() {
            // The first line is complete now, so the prefix can give the head.
            if let Ok(p) = read_prefix(&self.file) {
                if p.starts_with(&self.prefix) {
                    self.prefix = p;
                }
            }
            self.head = head_of(&self.prefix);
        }
        Line {
            text,
            after: self.position(),
        }
    }
}

fn append_capped(line: &mut Vec<u8>, seg: &[u8]) {
    let room = MAX_LINE.saturating_sub(line.len());
    line.extend_from_slice(&seg[..seg.len().min(room)]);
}

/// Why a path cannot be followed as a log: it is no regular file (a FIFO would block the
/// reader, a device never ends, a directory holds no lines).
#[derive(Debug, thiserror::Error)]
#[error("{} is {kind}, not a regular file: the tracker reads only regular log files", path.display())]
pub struct NotRegular {
    pub path: PathBuf,
    pub kind: &'static str,
}

/// Opens `path` for reading if it is a regular file, judged on the opened descriptor (fstat),
/// so that what is read is what was checked. Opened non-blocking: opening a FIFO without a
/// writer would otherwise wait for one (regular files ignore the flag).
fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let kind = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "of another kind"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        NotRegular {
            path: path.to_path_buf(),
            kind,
        },
    ))
}

/// Lets a warning of each cause through at most once per [`WARN_EVERY`], and says how many of
/// that cause were left out since the last one.
#[derive(Default)]
pub(super) struct WarnLimit {
    last: std::collections::HashMap<&'static str, (Instant, u64)>,
}

impl WarnLimit {
    /// Some(suffix for the warning) when a warning of `cause` may be logged now.
    pub(super) fn allow(&mut self, cause: &'static str) -> Option<String> {
        self.allow_at(cause, Instant::now())
    }

    fn allow_at(&mut self, cause: &'static str, now: Instant) -> Option<String> {
        match self.last.get_mut(cause) {
            Some((at, left_out)) if now.duration_since(*at) < WARN_EVERY => {
                *left_out += 1;
                None
            }
            Some((at, left_out)) => {
                let said = match std::mem::take(left_out) {
                    0 => String::new(),
                    n => format!(
                        " ({n} more of these in the last {}s)",
                        now.duration_since(*at).as_secs()
                    ),
                };
                *at = now;
                Some(said)
            }
            None => {
                self.last.insert(cause, (now, 0));
                Some(String::new())
            }
        }
    }
}

fn heads_match(saved: &Position, now: &Option<String>) -> bool {
    // No saved head: nothing was consumed from a complete first line, nothing to compare.
    saved.head.is_none() || saved.head == *now
}

/// The first HEAD_MAX bytes (fewer if the file is shorter), read at absolute offsets.
fn read_prefix(f: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; HEAD_MAX];
    let mut got = 0;
    while got < HEAD_MAX {
        match f.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The first HEAD_MAX decompressed bytes of a gzip file (fewer if it is shorter).
fn gzip_prefix(f: &File) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(HEAD_MAX);
    flate2::read::MultiGzDecoder::new(ReadAt {
        file: f.try_clone()?,
        at: 0,
    })
    .take(HEAD_MAX as u64)
    .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads a file by absolute offsets, leaving the descriptor's own offset alone.
struct ReadAt {
    file: File,
    at: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// A compressed rotated copy (`mail.log.1.gz`, `maillog.20261208-013500.gz`).
fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// SHA-256 of the first line with its newline, or of HEAD_MAX bytes when the first line is
/// longer; None while neither is there yet.
fn head_of(prefix: &[u8]) -> Option<String> {
    let end = match prefix.iter().position(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if prefix.len() >= HEAD_MAX => HEAD_MAX,
        None => return None,
    };
    Some(hex::encode(Sha256::digest(&prefix[..end])))
}

/// The offset just after the last newline (0 if none).
fn last_line_end(f: &File) -> io::Result<u64> {
    let mut end = f.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    while end > 0 {
        let from = end.saturating_sub(CHUNK as u64);
        let want = (end - from) as usize;
        f.read_exact_at(&mut buf[..want], from)?;
        if let Some(i) = buf[..want].iter().rposition(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        end = from;
    }
    Ok(0)
}

/// Regular files next to `path` named base + a rotation suffix: `.1`, `-20261129`,
/// `.20261129-093000`, each also compressed (`.2.gz`, see [`is_gzip`]).
fn rotated_siblings(path: &Path) -> Vec<(PathBuf, Metadata)> {
    let Some(base) = path.file_name() else {
        return Vec::new();
    };
    let base = base.as_bytes();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.as_bytes();
        let Some(rest) = name.strip_prefix(base) else {
            continue;
        };
        // A copy compressed by logrotate or `postfix logrotate` keeps the suffix before `.gz`.
        let rest = rest.strip_suffix(b".gz").unwrap_or(rest);
        let suffix_ok = matches!(rest.first(), Some(b'.' | b'-' | b'_'))
            && rest.iter().any(u8::is_ascii_digit)
            && rest
                .iter()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
        if !suffix_ok {
            continue;
        }
        let p = entry.path();
        if let Ok(m) = fs::metadata(&p) {
            if m.is_file() {
                found.push((p, m));
            }
        }
    }
    found
}

struct Watch {
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
}

impl Watch {
    /// None when the directory is missing or inotify fails: `wait` then just sleeps.
    fn new(path: &Path) -> Option<Watch> {
        use notify::Watcher;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).ok()?;
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .ok()?;
        // Also the file itself: its inode's events follow it out of the directory.
        let _ = watcher.watch(path, notify::RecursiveMode::NonRecursive);
        Some(Watch {
            _watcher: watcher,
            rx,
        })
    }
}

/// Whether an event may mean new lines or a rotation: not our own opens and reads, and only
/// files named like the log (a busy /var/log has many others).
fn relevant(event: &notify::Result<notify::Event>, base: Option<&[u8]>) -> bool {
    let Ok(event) = event else {
        return true;
    };
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    let Some(base) = base else {
        return true;
    };
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(base))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn append(path: &Path, s: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.text.clone()).collect()
    }

    /// A temporary directory and the path of a log in it, not created yet.
    fn mail_log() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.log");
        (dir, path)
    }

    /// A follower of `path` from its first line, with nothing saved.
    fn follow(path: &Path) -> FileFollower {
        FileFollower::new(path.to_path_buf(), None, Start::Beginning)
    }

    /// The texts of the lines a poll returns.
    fn read(f: &mut FileFollower) -> Vec<String> {
        texts(&f.poll(100).unwrap())
    }

    fn truncate(path: &Path) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap();
    }

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    fn sibling(path: &Path, suffix: &str) -> PathBuf {
        let mut s = path.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// logrotate's numbering: .N -> .N+1 from the oldest, the oldest beyond `keep` deleted.
    fn shift(path: &Path, keep: u32) {
        let _ = fs::remove_file(sibling(path, &format!(".{keep}")));
        for n in (1..keep).rev() {
            let from = sibling(path, &format!(".{n}"));
            if from.exists() {
                fs::rename(&from, sibling(path, &format!(".{}", n + 1))).unwrap();
            }
        }
    }

    fn copytruncate(path: &Path) {
        fs::copy(path, sibling(path, ".1")).unwrap();
        truncate(path);
    }

    fn numbered(from: u32, to: u32) -> String {
        (from..to).map(|i| format!("line {i}\n")).collect()
    }

    fn names(from: u32, to: u32) -> Vec<String> {
        (from..to).map(|i| format!("line {i}")).collect()
    }

    #[test]
    fn complete_lines_only_and_positions() {
        let (_dir, path) = mail_log();
        append(&path, "a\nbb\npart");
        let mut f = follow(&path);
        let got = f.poll(100).unwrap();
        assert_eq!(texts(&got), ["a", "bb"]);
        assert_eq!(got[0].after.offset, 2);
        assert_eq!(got[1].after.offset, 5);
        assert_eq!(got[1].after.ino, ino(&path));
        let head = hex::encode(Sha256::digest(b"a\n"));
        assert_eq!(got[0].after.head.as_deref(), Some(head.as_str()));
        assert!(f.poll(100).unwrap().is_empty());
        append(&path, "ial\n");
        let got = f.poll(100).unwrap();
        assert_eq!(texts(&got), ["partial"]);
        assert_eq!(got[0].after.offset, 13);
        assert_eq!(f.position(), Some(got[0].after.clone()));
    }

    #[test]
    fn max_limits_and_keeps_the_rest() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 10));
        let mut f = follow(&path);
        assert_eq!(texts(&f.poll(3).unwrap()), names(0, 3));
        assert_eq!(texts(&f.poll(4).unwrap()), names(3, 7));
        assert_eq!(read(&mut f), names(7, 10));
        assert!(f.poll(0).unwrap().is_empty());
    }

    #[test]
    fn start_end_skips_what_is_there() {
        let (dir, path) = mail_log();
        append(&path, "old1\nold2\npar");
        let mut f = FileFollower::new(path.clone(), None, Start::End);
        assert!(f.poll(100).unwrap().is_empty());
        assert_eq!(f.position().unwrap().offset, 10);
        append(&path, "t\nnew\n");
        assert_eq!(read(&mut f), ["part", "new"]);

        // A file that does not exist yet is read from its start once it appears.
        let later = dir.path().join("later.log");
        let mut f = FileFollower::new(later.clone(), None, Start::End);
        assert!(f.poll(100).unwrap().is_empty());
        assert_eq!(f.position(), None);
        append(&later, "first\n");
        assert_eq!(read(&mut f), ["first"]);
    }

    #[test]
    fn missing_file_and_directory_are_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("mail.log");
        let mut f = follow(&path);
        assert!(f.poll(100).unwrap().is_empty());
        // No directory to watch: wait falls back to sleeping the timeout.
        let t = Instant::now();
        f.wait(Duration::from_millis(200));
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(f.poll(100).unwrap().is_empty());
        append(&path, "x\n");
        assert_eq!(read(&mut f), ["x"]);
    }

    #[test]
    fn rename_create_finishes_the_old_file_first() {
        let (_dir, path) = mail_log();
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(b"l1\nl2\n").unwrap();
        let mut f = follow(&path);
        assert_eq!(read(&mut f), ["l1", "l2"]);
        let old_ino = ino(&path);
        fs::rename(&path, sibling(&path, ".1")).unwrap();
        // The writer has not reopened yet: it still writes to the renamed file.
        w.write_all(b"l3\n").unwrap();
        assert_eq!(read(&mut f), ["l3"]);
        // logrotate `create`: an empty new file; the writer still on the old one.
        File::create(&path).unwrap();
        w.write_all(b"l4\n").unwrap();
        let got = f.poll(100).unwrap();
        assert_eq!(texts(&got), ["l4"]);
        assert_eq!(got[0].after.ino, old_ino);
        // The writer reopens; its last write to the old file had no newline.
        w.write_all(b"l5\nl6 unterminated").unwrap();
        drop(w);
        append(&path, "n1\n");
        let got = f.poll(100).unwrap();
        assert_eq!(texts(&got), ["l5", "l6 unterminated", "n1"]);
        assert_eq!(got[1].after.ino, old_ino);
        assert_eq!(
            got[1].after.offset,
            fs::metadata(sibling(&path, ".1")).unwrap().len()
        );
        assert_eq!(got[2].after.ino, ino(&path));
        assert_eq!(got[2].after.offset, 3);
        append(&path, "n2\n");
        assert_eq!(read(&mut f), ["n2"]);
        assert_eq!(f.gaps(), 0);
    }

    #[test]
    fn rename_with_max_one_keeps_order() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 3));
        let mut f = follow(&path);
        assert_eq!(texts(&f.poll(1).unwrap()), names(0, 1));
        fs::rename(&path, sibling(&path, ".1")).unwrap();
        append(&path, &numbered(3, 6));
        let mut all = Vec::new();
        for _ in 0..10 {
            all.extend(texts(&f.poll(1).unwrap()));
        }
        assert_eq!(all, names(1, 6));
    }

    #[test]
    fn copytruncate_reads_unread_rest_from_the_copy() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 5));
        let mut f = follow(&path);
        assert_eq!(texts(&f.poll(3).unwrap()), names(0, 3));
        append(&path, &numbered(5, 6));
        copytruncate(&path);
        append(&path, &numbered(6, 7));
        let got = f.poll(100).unwrap();
        assert_eq!(texts(&got), names(3, 7));
        assert_eq!(got[2].after.ino, ino(&sibling(&path, ".1")));
        assert_eq!(got[3].after.ino, ino(&path));
        assert_eq!(got[3].after.offset, "line 6\n".len() as u64);
        let head = hex::encode(Sha256::digest(b"line 6\n"));
        assert_eq!(got[3].after.head.as_deref(), Some(head.as_str()));
        assert_eq!(f.gaps(), 0);
    }

    #[test]
    fn copytruncate_refilled_past_offset_is_noticed_by_head() {
        let (_dir, path) = mail_log();
        append(&path, "a1\na2\na3\n");
        let mut f = follow(&path);
        assert_eq!(read(&mut f), ["a1", "a2", "a3"]);
        append(&path, "a4\n");
        copytruncate(&path);
        // Refilled beyond our offset before we look: only the head tells.
        append(&path, "b1 longer\nb2 longer\nb3 longer\n");
        let got = f.poll(100).unwrap();
        assert_eq!(texts(&got), ["a4", "b1 longer", "b2 longer", "b3 longer"]);
        assert_eq!(f.gaps(), 0);
    }

    #[test]
    fn truncation_without_copy_restarts_at_zero_and_reports() {
        let (_dir, path) = mail_log();
        append(&path, "a1\na2\n");
        let mut f = follow(&path);
        assert_eq!(f.poll(100).unwrap().len(), 2);
        truncate(&path);
        append(&path, "b\n");
        assert_eq!(read(&mut f), ["b"]);
        assert_eq!(f.gaps(), 1);
    }

    /// logrotate copies, then truncates: a line written in between is in neither file. Lines
    /// written before the copy and not read yet are read from the copy.
    #[test]
    fn copytruncate_race_loses_only_lines_between_copy_and_truncate() {
        let (_dir, path) = mail_log();
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(numbered(0, 3).as_bytes()).unwrap();
        let mut f = follow(&path);
        assert_eq!(read(&mut f), names(0, 3));
        w.write_all(b"line 3\n").unwrap();
        fs::copy(&path, sibling(&path, ".1")).unwrap();
        w.write_all(b"line 4\n").unwrap();
        truncate(&path);
        w.write_all(b"line 5\n").unwrap();
        assert_eq!(read(&mut f), ["line 3", "line 5"]);
        let both =
            fs::read_to_string(&path).unwrap() + &fs::read_to_string(sibling(&path, ".1")).unwrap();
        assert!(!both.contains("line 4"), "{both}");
    }

    #[test]
    fn restart_on_the_same_file_resumes_at_the_offset() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 5));
        let mut f = follow(&path);
        let got = f.poll(2).unwrap();
        let saved = got[1].after.clone();
        drop(f);
        // Through the state file's format.
        let saved: Position =
            serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        let mut f = FileFollower::new(path.clone(), Some(saved), Start::End);
        assert_eq!(read(&mut f), names(2, 5));
        assert_eq!(f.gaps(), 0);
    }

    /// A saved place in the middle of a line (a state file edited, or a file rewritten with
    /// the same first line) resumes at the next whole line, never with half a line.
    #[test]
    fn a_saved_place_in_the_middle_of_a_line_resumes_at_the_next_line() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 5));
        let mut f = follow(&path);
        let mut saved = f.poll(2).unwrap()[1].after.clone();
        drop(f);
        saved.offset += 3;
        let mut f = FileFollower::new(path.clone(), Some(saved.clone()), Start::End);
        let got = f.poll(100).unwrap();
        assert_eq!(texts(&got), names(3, 5));
        assert_eq!(
            got[0].after.offset,
            "line 0\nline 1\nline 2\nline 3\n".len() as u64
        );
        // The same from a rotated copy, plain or compressed.
        fs::rename(&path, sibling(&path, ".1")).unwrap();
        append(&path, "n1\n");
        let mut f = FileFollower::new(path.clone(), Some(saved.clone()), Start::End);
        assert_eq!(read(&mut f), ["line 3", "line 4", "n1"]);
        gzip(&sibling(&path, ".1"), &sibling(&path, ".1.gz"));
        let mut f = FileFollower::new(path.clone(), Some(saved), Start::End);
        assert_eq!(read(&mut f), ["line 3", "line 4", "n1"]);
    }

    #[test]
    fn restart_after_copytruncate_finishes_the_copy() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 5));
        let mut f = follow(&path);
        let saved = f.poll(2).unwrap()[1].after.clone();
        drop(f);
        copytruncate(&path);
        append(
            &path,
            "new 0 is longer than before\nnew 1\nnew 2\nnew 3\nnew 4\n",
        );
        let mut f = FileFollower::new(path.clone(), Some(saved.clone()), Start::End);
        let mut want = names(2, 5);
        want.extend((0..5).map(|i| format!("new {i}")));
        want[3] = "new 0 is longer than before".into();
        assert_eq!(read(&mut f), want);
        assert_eq!(f.gaps(), 0);

        // Without the copy (compressed away): from 0, and a gap.
        fs::remove_file(sibling(&path, ".1")).unwrap();
        let mut f = FileFollower::new(path.clone(), Some(saved), Start::End);
        assert_eq!(f.poll(100).unwrap().len(), 5);
        assert_eq!(f.gaps(), 1);
    }

    #[test]
    fn restart_finds_the_renamed_file_among_siblings() {
        for suffix in [".1", "-20261129", ".20261129-093000"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("mail.log");
            // Distractors: an older generation, a compressed one, an unrelated name.
            append(&sibling(&path, ".2"), "older\n");
            append(&sibling(&path, ".2.gz"), "line 0\nline 1\nline 2\n");
            append(&sibling(&path, ".pos"), "line 0\nline 1\nline 2\n");
            append(&path, &numbered(0, 5));
            let mut f = follow(&path);
            let saved = f.poll(2).unwrap()[1].after.clone();
            drop(f);
            fs::rename(&path, sibling(&path, suffix)).unwrap();
            append(&path, "n1\nn2\n");
            let mut f = FileFollower::new(path.clone(), Some(saved), Start::End);
            let mut want = names(2, 5);
            want.extend(["n1".to_string(), "n2".to_string()]);
            assert_eq!(read(&mut f), want, "{suffix}");
            assert_eq!(f.gaps(), 0, "{suffix}");
        }
    }

    #[test]
    fn restart_with_new_file_still_empty_keeps_following_the_old_one() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 3));
        let mut f = follow(&path);
        let saved = f.poll(100).unwrap()[2].after.clone();
        drop(f);
        fs::rename(&path, sibling(&path, ".1")).unwrap();
        File::create(&path).unwrap();
        let mut f = FileFollower::new(path.clone(), Some(saved), Start::Beginning);
        assert!(f.poll(100).unwrap().is_empty());
        // The writer had not reopened yet.
        append(&sibling(&path, ".1"), "line 3\n");
        assert_eq!(read(&mut f), ["line 3"]);
        append(&path, "line 4\n");
        assert_eq!(read(&mut f), ["line 4"]);
        assert_eq!(f.gaps(), 0);
    }

    #[test]
    fn restart_with_saved_file_gone_reads_from_zero_and_reports() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 3));
        let mut f = follow(&path);
        let saved = f.poll(100).unwrap()[2].after.clone();
        drop(f);
        fs::rename(&path, sibling(&path, ".1.gz")).unwrap();
        append(&path, "n1\n");
        let mut f = FileFollower::new(path.clone(), Some(saved), Start::End);
        assert_eq!(read(&mut f), ["n1"]);
        assert_eq!(f.gaps(), 1);
    }

    /// Compresses `from` into `to` (gzip) and removes it, as logrotate's `compress` does.
    fn gzip(from: &Path, to: &Path) {
        let mut enc = flate2::write::GzEncoder::new(
            File::create(to).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&fs::read(from).unwrap()).unwrap();
        enc.finish().unwrap();
        fs::remove_file(from).unwrap();
    }

    /// Rotated and compressed at once while the follower was down (`postfix logrotate`,
    /// logrotate without `delaycompress`): the compressed copy is found by its head and
    /// finished from the saved offset, also after a restart in the middle of it.
    #[test]
    fn restart_finishes_a_copy_compressed_at_once() {
        for suffix in [".1.gz", ".20261208-013500.gz"] {
            let (_dir, path) = mail_log();
            append(&path, &numbered(0, 6));
            let mut f = follow(&path);
            let saved = f.poll(2).unwrap()[1].after.clone();
            drop(f);
            fs::rename(&path, sibling(&path, ".1")).unwrap();
            gzip(&sibling(&path, ".1"), &sibling(&path, suffix));
            append(&path, "n1\nn2\n");
            let mut f = FileFollower::new(path.clone(), Some(saved.clone()), Start::End);
            let first = f.poll(1).unwrap();
            assert_eq!(texts(&first), ["line 2"], "{suffix}");
            // The same key as from the file before it was compressed: its head and offset.
            assert_eq!(first[0].after.head, saved.head);
            assert_eq!(
                first[0].after.offset,
                saved.offset + "line 2\n".len() as u64
            );
            // Stopped in the middle of the compressed copy, and started again.
            let mut f = FileFollower::new(path.clone(), Some(first[0].after.clone()), Start::End);
            let mut want = names(3, 6);
            want.extend(["n1".to_string(), "n2".to_string()]);
            assert_eq!(read(&mut f), want, "{suffix}");
            assert_eq!(f.gaps(), 0, "{suffix}");
            append(&path, "n3\n");
            assert_eq!(read(&mut f), ["n3"]);
        }
    }

    /// A compressed sibling that is not gzip, damaged, or shorter than the saved place is not
    /// the saved file: a gap, never an error.
    #[test]
    fn a_damaged_compressed_copy_is_a_gap() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 6));
        let mut f = follow(&path);
        let saved = f.poll(2).unwrap()[1].after.clone();
        drop(f);
        fs::rename(&path, sibling(&path, ".1")).unwrap();
        gzip(&sibling(&path, ".1"), &sibling(&path, ".1.gz"));
        let mut bytes = fs::read(sibling(&path, ".1.gz")).unwrap();
        let keep = bytes.len() - 12;
        bytes.truncate(keep);
        fs::write(sibling(&path, ".1.gz"), bytes).unwrap();
        append(&path, "n1\n");
        let mut f = FileFollower::new(path.clone(), Some(saved), Start::End);
        let got = read(&mut f);
        assert_eq!(got.last().map(String::as_str), Some("n1"), "{got:?}");
        assert!(f.gaps() >= 1);
    }

    /// copytruncate with the copy compressed before the follower looked: the unread rest is
    /// read from the compressed copy.
    #[test]
    fn copytruncate_with_the_copy_compressed_reads_the_rest_from_it() {
        let (_dir, path) = mail_log();
        append(&path, &numbered(0, 5));
        let mut f = follow(&path);
        assert_eq!(texts(&f.poll(3).unwrap()), names(0, 3));
        copytruncate(&path);
        gzip(&sibling(&path, ".1"), &sibling(&path, ".1.gz"));
        append(&path, "new 0\n");
        assert_eq!(read(&mut f), ["line 3", "line 4", "new 0"]);
        assert_eq!(f.gaps(), 0);
    }

    #[test]
    fn two_unseen_rotations_skip_the_middle_generation_and_report() {
        let (_dir, path) = mail_log();
        append(&path, "a1\n");
        let mut f = follow(&path);
        assert_eq!(read(&mut f), ["a1"]);
        append(&path, "a2\n");
        fs::rename(&path, sibling(&path, ".1")).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        append(&path, "b1\n");
        shift(&path, 5);
        fs::rename(&path, sibling(&path, ".1")).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        append(&path, "c1\n");
        assert_eq!(read(&mut f), ["a2", "c1"]);
        assert_eq!(f.gaps(), 1);
    }

    #[test]
    fn long_lines_crlf_and_invalid_utf8() {
        let (_dir, path) = mail_log();
        let big = "x".repeat(300 * 1024);
        let huge = "y".repeat(3 * MAX_LINE);
        let mut data = Vec::new();
        data.extend_from_slice(format!("{big}\n{huge}\ncrlf\r\n").as_bytes());
        data.extend_from_slice(b"bad \xff\xfe end\nlast\n");
        fs::write(&path, &data).unwrap();
        let mut f = follow(&path);
        let got = f.poll(100).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].text, big);
        assert_eq!(got[1].text.len(), MAX_LINE);
        assert!(got[1].text.bytes().all(|b| b == b'y'));
        assert_eq!(got[1].after.offset, (big.len() + huge.len() + 2) as u64);
        assert_eq!(got[2].text, "crlf");
        assert_eq!(got[2].after.offset, (big.len() + huge.len() + 8) as u64);
        assert_eq!(got[3].text, "bad \u{fffd}\u{fffd} end");
        assert_eq!(got[4].after.offset, data.len() as u64);
        // The first line is longer than HEAD_MAX: its first HEAD_MAX bytes are the head.
        let head = hex::encode(Sha256::digest(&big.as_bytes()[..HEAD_MAX]));
        assert_eq!(got[0].after.head.as_deref(), Some(head.as_str()));
    }

    /// A file bigger than one poll's budget is read a budget per poll, `more` saying so, and
    /// every line still comes once.
    #[test]
    fn a_poll_reads_at_most_its_budget() {
        let (_dir, path) = mail_log();
        let long = "z".repeat((POLL_BUDGET + POLL_BUDGET / 2) as usize);
        fs::write(&path, format!("a\n{long}\nb\n")).unwrap();
        let mut f = follow(&path);
        let got = f.poll(100).unwrap();
        assert_eq!(texts(&got), ["a"]);
        assert!(f.more());
        let got = f.poll(100).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].text.len(), MAX_LINE);
        assert_eq!(got[1].text, "b");
        assert!(!f.more());
        assert!(f.poll(100).unwrap().is_empty());
        assert!(!f.more());
    }

    #[test]
    fn fifos_and_devices_are_refused_by_the_opened_descriptor() {
        let (dir, path) = mail_log();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut f = follow(&path);
        let e = f.poll(100).unwrap_err().to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = follow(&zero).poll(100).unwrap_err().to_string();
        assert!(e.contains("is a character device"), "{e}");
        // A link to a regular file is read.
        let real = dir.path().join("real.log");
        append(&real, "x\n");
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read(&mut follow(&link)), ["x"]);
    }

    #[test]
    fn a_warning_of_one_cause_once_a_minute() {
        let mut w = WarnLimit::default();
        let t = Instant::now();
        assert_eq!(w.allow_at("gap", t).as_deref(), Some(""));
        assert_eq!(w.allow_at("gap", t + Duration::from_secs(1)), None);
        assert_eq!(w.allow_at("gap", t + Duration::from_secs(59)), None);
        assert_eq!(
            w.allow_at("other", t + Duration::from_secs(2)).as_deref(),
            Some("")
        );
        let again = w.allow_at("gap", t + WARN_EVERY).unwrap();
        assert!(again.contains("2 more of these"), "{again}");
        assert_eq!(
            w.allow_at("gap", t + WARN_EVERY + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn file_without_newline_yet() {
        let (_dir, path) = mail_log();
        append(&path, "no newline yet");
        let mut f = follow(&path);
        assert!(f.poll(100).unwrap().is_empty());
        let p = f.position().unwrap();
        assert_eq!((p.offset, p.head.clone()), (0, None));
        // Restarting there is fine too.
        let mut f = FileFollower::new(path.clone(), Some(p), Start::End);
        assert!(f.poll(100).unwrap().is_empty());
        append(&path, "\n");
        assert_eq!(read(&mut f), ["no newline yet"]);
    }

    #[test]
    fn wait_wakes_on_append_and_times_out() {
        let (_dir, path) = mail_log();
        append(&path, "a\n");
        let mut f = follow(&path);
        assert_eq!(f.poll(100).unwrap().len(), 1);
        // Our own reads must not wake it.
        let t = Instant::now();
        f.wait(Duration::from_millis(300));
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        let p = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            append(&p, "b\n");
        });
        let t = Instant::now();
        f.wait(Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        writer.join().unwrap();
        assert_eq!(read(&mut f), ["b"]);
    }

    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// A writer with an fd it keeps across a rename until it "reopens" (HUP), a follower that is
    /// restarted from saved positions, both rotation kinds: every line exactly once.
    struct Sim {
        path: PathBuf,
        rng: Lcg,
        writer: File,
        writer_stale: bool,
        next: u32,
        follower: FileFollower,
        saved: Option<Position>,
        seen: Vec<u32>,
        gaps: u64,
        restarts: u32,
        rotations: u32,
    }

    impl Sim {
        fn open_writer(path: &Path) -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap()
        }

        fn write(&mut self) {
            if self.writer_stale && self.rng.below(3) == 0 {
                self.reopen();
            }
            let line = format!(
                "line {} {}\n",
                self.next,
                "z".repeat(self.rng.below(40) as usize)
            );
            self.next += 1;
            if self.rng.below(10) == 0 {
                // A line written in two pieces with a poll in between.
                let (a, b) = line.split_at(line.len() / 2);
                self.writer.write_all(a.as_bytes()).unwrap();
                self.poll();
                self.writer.write_all(b.as_bytes()).unwrap();
            } else {
                self.writer.write_all(line.as_bytes()).unwrap();
            }
        }

        fn reopen(&mut self) {
            self.writer = Self::open_writer(&self.path);
            self.writer_stale = false;
        }

        fn poll(&mut self) {
            let max = 1 + self.rng.below(20) as usize;
            for line in self.follower.poll(max).unwrap() {
                let n: u32 = line.text.split(' ').nth(1).unwrap().parse().unwrap();
                self.seen[n as usize] += 1;
                self.saved = Some(line.after);
            }
        }

        fn restart(&mut self) {
            self.gaps += self.follower.gaps();
            // Either the last line's position or the follower's own (maybe a file further on).
            let from = if self.rng.below(2) == 0 {
                self.saved.clone()
            } else {
                self.follower.position()
            };
            self.follower = FileFollower::new(self.path.clone(), from, Start::Beginning);
            self.restarts += 1;
        }

        /// The follower has seen the last rotation (runs within a rotation period).
        fn catch_up(&mut self) {
            if self.writer_stale {
                self.reopen();
            }
            self.write();
            for _ in 0..1000 {
                self.poll();
                let p = self.follower.position().unwrap();
                let f = File::open(&self.path).unwrap();
                let now = head_of(&read_prefix(&f).unwrap());
                if p.ino == f.metadata().unwrap().ino() && now.is_some() && p.head == now {
                    return;
                }
            }
            panic!("follower does not catch up");
        }

        fn step(&mut self) {
            match self.rng.below(100) {
                0..=69 => self.write(),
                70..=84 => self.poll(),
                85..=89 => self.restart(),
                90..=94 => {
                    self.catch_up();
                    shift(&self.path, 5);
                    fs::rename(&self.path, sibling(&self.path, ".1")).unwrap();
                    self.writer_stale = true;
                    if self.rng.below(2) == 0 {
                        File::create(&self.path).unwrap();
                    }
                    self.rotations += 1;
                }
                _ => {
                    self.catch_up();
                    shift(&self.path, 5);
                    copytruncate(&self.path);
                    self.rotations += 1;
                }
            }
        }
    }

    /// The same with a writer thread racing the follower (which waits with inotify): rotations
    /// happen while the follower reads, between its read to the end and its look at the path.
    #[test]
    fn exactly_once_with_a_concurrent_writer() {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use std::sync::Arc;
        const LINES: u32 = 30000;
        let (_dir, path) = mail_log();
        File::create(&path).unwrap();
        let seen_upto = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (path, seen_upto, done) = (path.clone(), seen_upto.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rng = Lcg(7);
                let mut w = Sim::open_writer(&path);
                let mut gen_first = 0;
                let mut rotations = 0;
                let mut n = 0;
                while n < LINES {
                    let line = format!("line {n} {}\n", "q".repeat(rng.below(60) as usize));
                    let (a, b) = line.split_at(rng.below(line.len() as u64) as usize);
                    w.write_all(a.as_bytes()).unwrap();
                    w.write_all(b.as_bytes()).unwrap();
                    n += 1;
                    if n % 1000 != 0 || n == LINES {
                        continue;
                    }
                    // The follower runs within a rotation period: it is in this generation.
                    let t = Instant::now();
                    while seen_upto.load(Ordering::SeqCst) <= gen_first {
                        assert!(t.elapsed() < Duration::from_secs(60), "follower stalled");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    shift(&path, 5);
                    if rng.below(2) == 0 {
                        fs::rename(&path, sibling(&path, ".1")).unwrap();
                        // Lines still going to the renamed file until the writer reopens.
                        for _ in 0..rng.below(20) {
                            w.write_all(format!("line {n}\n").as_bytes()).unwrap();
                            n += 1;
                        }
                        w = Sim::open_writer(&path);
                    } else {
                        copytruncate(&path);
                    }
                    gen_first = n;
                    rotations += 1;
                }
                done.store(true, Ordering::SeqCst);
                rotations
            })
        };
        let mut rng = Lcg(11);
        let mut seen = vec![0u32; LINES as usize + 100];
        let mut f = follow(&path);
        let mut saved = None;
        let mut gaps = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut idle = 0;
        while idle < 3 {
            assert!(Instant::now() < deadline, "timed out");
            let lines = f.poll(1 + rng.below(50) as usize).unwrap();
            if lines.is_empty() {
                if done.load(Ordering::SeqCst) {
                    idle += 1;
                }
                f.wait(Duration::from_millis(20));
                continue;
            }
            idle = 0;
            for line in lines {
                let n: usize = line
                    .text
                    .split(' ')
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("not a whole line: {:?} {:?}", line.text, line.after)
                    });
                seen[n] += 1;
                seen_upto.fetch_max(n as u32 + 1, Ordering::SeqCst);
                saved = Some(line.after);
            }
            if rng.below(40) == 0 {
                gaps += f.gaps();
                f = FileFollower::new(path.clone(), saved.clone(), Start::Beginning);
            }
        }
        let rotations = writer.join().unwrap();
        let wrong: Vec<(usize, u32)> = seen[..LINES as usize]
            .iter()
            .enumerate()
            .filter(|(_, &c)| c != 1)
            .map(|(i, &c)| (i, c))
            .collect();
        assert!(wrong.is_empty(), "(line, times seen) {wrong:?}");
        assert_eq!(gaps + f.gaps(), 0);
        assert!(rotations >= 20, "{rotations}");
    }

    #[test]
    fn exactly_once_across_rotations_and_restarts() {
        const LINES: u32 = 2000;
        for seed in 1..=6u64 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("mail.log");
            let writer = Sim::open_writer(&path);
            let mut sim = Sim {
                follower: follow(&path),
                path,
                rng: Lcg(seed),
                writer,
                writer_stale: false,
                next: 0,
                saved: None,
                seen: vec![0; LINES as usize + 100],
                gaps: 0,
                restarts: 0,
                rotations: 0,
            };
            while sim.next < LINES {
                sim.step();
            }
            sim.catch_up();
            for _ in 0..5 {
                sim.poll();
            }
            let total = sim.next as usize;
            let wrong: Vec<(usize, u32)> = sim.seen[..total]
                .iter()
                .enumerate()
                .filter(|(_, &c)| c != 1)
                .map(|(i, &c)| (i, c))
                .collect();
            assert!(
                wrong.is_empty(),
                "seed {seed}: (line, times seen) {wrong:?}"
            );
            assert_eq!(sim.gaps + sim.follower.gaps(), 0, "seed {seed}");
            assert!(sim.rotations > 20 && sim.restarts > 20, "seed {seed}");
        }
    }
}
