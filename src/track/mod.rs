//! `privacy-milter track`: follows the MTA's log and queue after the milter's view ends, and
//! records per transit message when the next server acknowledged it and when its queue file
//! went (`crate::transit`), in the same stores as the events.
//!
//! - [`follow`] and [`journal`] read the log (a file across rotation, or the journal), each
//!   line with the place after it; [`state`] keeps that place across restarts.
//! - [`copy`] writes every line read, pseudonymised, to `[mta_logs] copy`; its place is saved
//!   with the log's.
//! - [`crate::maillog`] cuts a file's line into its parts; [`parse`] turns the message into
//!   what it says about a queued message.
//! - [`queue`] asks Postfix what is still queued (`postqueue -j`): it reports mail held too
//!   long, and notices a message that left without its removal in the log.
//!
//! Exactly once: a batch of lines is recorded (deliveries by a key of their line, so a line
//! read twice is stored once) before its place is saved.

mod bounds;
mod copy;
pub mod follow;
pub mod journal;
pub mod parse;
mod queue;
mod rekey;
mod state;

/// The name of the pseudonymised copy's current file (rotations: `mail.log-YYYYMMDD.gz`).
pub use copy::CURRENT as COPY_CURRENT;

use crate::{
    config::{Config, LogSource, Mta},
    event::stamp,
    keys,
    maillog::SyslogLine,
    metrics::{label, TRACKER},
    privacy::Pseudonymiser,
    store::{self, Ledger, Sink, StoreError, TransitQuery},
    transit::{self, Delivery, Step, Transit, DELIVERY_SCHEMA},
};
use chrono::{DateTime, Utc};
use follow::FileFollower;
use journal::JournalReader;
use parse::{Parsed, Record};
use sha2::{Digest, Sha256};
use state::Place;
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tracing::{debug, error, info, warn};

/// The log target of the tracker's lines.
const TARGET: &str = "privacy_milter::track";

/// Most log lines recorded in one transaction.
const BATCH: usize = 500;

/// How long a message must have been accepted before its absence from the queue counts: the
/// log may not have said yet what happened to it.
const QUEUE_GRACE: Duration = Duration::from_secs(60);

/// Why tracking cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("tracking needs a ledger to join the log to the events: events.sinks has neither \"ledger\" nor \"postgres\"")]
    NoLedger,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tracking.state {}: {source}", path.display())]
    State {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the log: {0}")]
    Log(#[source] std::io::Error),
    #[error("mta_logs.copy {}: {source}", path.display())]
    Copy {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What tracking has counted since it started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub lines: u64,
    pub not_understood: u64,
    pub deliveries: u64,
    /// Lines about messages with no transit record (local mail, mail from before the milter).
    pub unmatched: u64,
    /// Times lines may have been missed (a rotated file no longer found) or journal lines
    /// could not be read.
    pub gaps: u64,
}

/// One line of the log with its key and the place after it.
struct Read {
    text: String,
    /// From the journal: the line already cut into its parts.
    entry: Option<journal::JournalEntry>,
    key: String,
    after: Place,
}

/// Where the lines come from.
// One per tracker, never moved: boxing the follower buys nothing.
#[allow(clippy::large_enum_variant)]
enum Source {
    File(FileFollower),
    Journal(JournalReader),
}

impl Source {
    fn open(config: &Config, saved: Option<Place>, follow: bool) -> Self {
        let t = &config.tracking;
        match t.source {
            LogSource::File => {
                let position = match saved {
                    Some(Place::File { position, path }) if path == t.path => Some(position),
                    Some(_) => {
                        warn!(target: TARGET, "{}: the saved place is for another log; starting at its beginning", t.state.display());
                        None
                    }
                    None => None,
                };
                Source::File(FileFollower::new(
                    t.path.clone(),
                    position,
                    follow::Start::Beginning,
                ))
            }
            LogSource::Journald => {
                let cursor = match saved {
                    Some(Place::Journal { cursor }) => Some(cursor),
                    Some(_) => {
                        warn!(target: TARGET, "{}: the saved place is for a log file; reading the journal from its start", t.state.display());
                        None
                    }
                    None => None,
                };
                Source::Journal(
                    JournalReader::new(cursor, follow, journal_args(&t.path))
                        .all_mail(config.mta_logs.copies()),
                )
            }
        }
    }

    /// Where a file's reading starts, before any line is read (None for the journal, whose
    /// start has no cursor, and while the file is missing).
    fn start(&self, config: &Config) -> Option<Place> {
        match self {
            Source::File(f) => Some(Place::File {
                path: config.tracking.path.clone(),
                position: f.position()?,
            }),
            Source::Journal(_) => None,
        }
    }

    fn poll(&mut self, timeout: Duration) -> std::io::Result<Vec<Read>> {
        match self {
            Source::File(f) => Ok(f
                .poll(BATCH)?
                .into_iter()
                .map(|line| {
                    let key = file_line_key(&line.after);
                    Read {
                        text: line.text,
                        entry: None,
                        key,
                        after: Place::File {
                            path: Default::default(),
                            position: line.after,
                        },
                    }
                })
                .collect()),
            Source::Journal(j) => Ok(j
                .poll(BATCH, timeout)?
                .into_iter()
                .map(|entry| Read {
                    text: String::new(),
                    key: line_key(&entry.cursor),
                    after: Place::Journal {
                        cursor: entry.cursor.clone(),
                    },
                    entry: Some(entry),
                })
                .collect()),
        }
    }

    /// Whether the last poll left lines to read now (a file read a slice per poll).
    fn more(&self) -> bool {
        match self {
            Source::File(f) => f.more(),
            Source::Journal(_) => false,
        }
    }

    /// Lines possibly missed so far.
    fn gaps(&self) -> u64 {
        match self {
            Source::File(f) => f.gaps(),
            Source::Journal(j) => j.skipped(),
        }
    }

    fn wait(&mut self, timeout: Duration) {
        if let Source::File(f) = self {
            f.wait(timeout);
        }
        // The journal reader waits inside `poll`.
    }
}

/// Whether `tracking.path` names a journal (a directory, or a `.journal` file) for
/// `source = "journald"`; otherwise the tracker reads the system journal.
pub fn names_journal(path: &Path) -> bool {
    path.is_dir() || path.extension().is_some_and(|e| e == "journal")
}

/// `journalctl` reads the system journal, unless `tracking.path` names a journal file or
/// directory (a container's, say).
fn journal_args(path: &Path) -> Vec<String> {
    if path.is_dir() {
        vec![format!("--directory={}", path.display())]
    } else if names_journal(path) {
        vec![format!("--file={}", path.display())]
    } else {
        match journal::machine_match() {
            Some(m) => vec![m],
            None => {
                warn!(target: TARGET, "/etc/machine-id unreadable: lines of other machines' journals kept on this host may be read too");
                Vec::new()
            }
        }
    }
}

/// A key for a log line that says nothing of its content: the same line read again (after a
/// restart) gets the same key, and is recorded once.
fn line_key(place: &str) -> String {
    hex::encode(&Sha256::digest(place.as_bytes())[..16])
}

/// The key of a file's line: the file's head and the offset after the line, not its inode, so
/// that a line read again from a rotated copy (copytruncate: another inode, the same head) is
/// the line already recorded.
fn file_line_key(after: &follow::Position) -> String {
    line_key(&format!(
        "{}:{}",
        after.head.as_deref().unwrap_or(""),
        after.offset
    ))
}

/// Who wrote a line: its program, and its process id when it has one.
#[derive(Clone, Copy)]
struct Writer<'l> {
    ident: &'l str,
    pid: Option<u32>,
}

/// The tracker's working state.
struct Tracker<'a> {
    config: &'a Config,
    mta: parse::Mta,
    /// The ledger that answers the lookups.
    ledger: Box<dyn Ledger>,
    /// The other sinks, which record what tracking learns too.
    others: Vec<Box<dyn Sink>>,
    pseudonymiser: Pseudonymiser,
    /// Names this host's events carry (the PostgreSQL ledger is shared by several hosts).
    hosts: Vec<String>,
    counts: Counts,
    /// Open transit messages absent from the queue at the last check.
    missing: HashSet<String>,
    /// Delivery agents that deliver locally: not the next hop.
    local_agents: Vec<String>,
    /// The state of each record this batch looked up, as it was, for the metrics.
    before: HashMap<transit::StoreKey, transit::State>,
    /// Causes of refused lines already warned about (once per run each).
    refused: HashSet<bounds::Implausible>,
    /// What moves of a record onto another queue id depend on.
    rekeys: rekey::Rekeys,
    /// Causes of moves not believed, already warned about.
    not_believed_causes: HashSet<&'static str>,
}

/// Runs `record` until the sink (named `sink`) takes it, pausing longer after each failure,
/// or until asked to stop.
fn retrying(
    sink: &str,
    stop: &AtomicBool,
    mut record: impl FnMut() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut pause = Duration::from_secs(1);
    loop {
        match record() {
            Ok(()) => return Ok(()),
            Err(e) if !stop.load(Ordering::Relaxed) => {
                error!(target: TARGET, "cannot record deliveries in the {sink} sink ({e}); trying again in {}s", pause.as_secs());
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(60));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Counts a record's move into a settled state, and the time to acknowledgement.
fn count_change(before: transit::State, after: &Transit) {
    if before == after.state {
        return;
    }
    if !after.state.is_open() {
        TRACKER
            .transit_settled
            .get_or_create(&label("state", after.state.as_str()))
            .inc();
    }
    let acknowledged_now = !matches!(
        before,
        transit::State::Acknowledged | transit::State::Removed
    ) && matches!(
        after.state,
        transit::State::Acknowledged | transit::State::Removed
    );
    if let (true, Some(at)) = (acknowledged_now, after.acknowledged_at) {
        TRACKER
            .acknowledged_seconds
            .observe((at - after.since).num_milliseconds().max(0) as f64 / 1000.0);
    }
}

/// Starts the tracker's metrics endpoint (`metrics.track_listen`), if one is configured, on
/// the current tokio runtime.
pub async fn serve_metrics(
    config: &Config,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    let addr = &config.metrics.track_listen;
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics.track_listen {addr}: {e}")))?;
    info!(target: TARGET, "metrics at http://{addr}/metrics");
    Ok(Some(tokio::spawn(crate::metrics::http::serve(
        listener,
        crate::metrics::render_tracker,
    ))))
}

/// Runs tracking until `stop` is set; with `once`, reads what the log holds now, checks the
/// queue once and returns.
pub fn run(config: &Config, once: bool, stop: Arc<AtomicBool>) -> Result<Counts, TrackError> {
    let t = &config.tracking;
    let Some(sinks) = store::open_for_tracker(config)? else {
        return Err(TrackError::NoLedger);
    };
    let saved = state::load(&t.state).map_err(|source| TrackError::State {
        path: t.state.clone(),
        source,
    })?;
    let (mut place, saved_copy) = match saved {
        Some(s) => (Some(s.place), s.copy),
        None => (None, None),
    };
    let mut copy = copy::LogCopy::open(
        config
            .mta_logs
            .copies()
            .then_some(config.mta_logs.copy.as_path()),
        config.retention.mta_logs.0,
        saved_copy.as_ref(),
        pseudonymiser(config),
    )?;
    let mut source = Source::open(config, place.clone(), !once);
    // A first run with the copy saves where it starts before it copies a line: killed before
    // its first batch is saved, it then starts again there, its copy cut back to what it held
    // at the start. Without a saved place it would go on at the copy's end and read the log
    // from its beginning again: the lines of that batch twice, or, the log rotated meanwhile,
    // the rotated lines not at all.
    if place.is_none() && config.mta_logs.copies() {
        place = source.start(config);
        save_state(config, place.as_ref(), &mut copy)?;
    }
    let mut tracker = Tracker {
        config,
        mta: match t.mta {
            Mta::Postfix => parse::Mta::Postfix,
            Mta::Sendmail => parse::Mta::Sendmail,
        },
        ledger: sinks.ledger,
        others: sinks.others,
        pseudonymiser: pseudonymiser(config),
        hosts: host_names(config),
        counts: Counts::default(),
        missing: HashSet::new(),
        local_agents: config.domains.local_mailers.clone(),
        before: HashMap::new(),
        refused: HashSet::new(),
        rekeys: rekey::Rekeys::new(mail_owner(config)),
        not_believed_causes: HashSet::new(),
    };
    info!(
        target: TARGET,
        "tracking {} mail from {}{}, for the events of {}",
        crate::config::name(&t.mta),
        match t.source {
            LogSource::File => t.path.display().to_string(),
            LogSource::Journald => "the journal".to_string(),
        },
        if once { " (once)" } else { "" },
        tracker.hosts.join(", ")
    );
    let mut next_queue_check = Instant::now();
    loop {
        let lines = source
            .poll(Duration::from_millis(500))
            .map_err(TrackError::Log)?;
        let read = lines.len();
        if let Some(last) = lines.last().map(|l| l.after.clone()) {
            copy.write(&lines, &stop)?;
            tracker.record_lines(lines, &stop)?;
            place = Some(match (last, t.source) {
                (Place::File { position, .. }, LogSource::File) => Place::File {
                    path: t.path.clone(),
                    position,
                },
                (place, _) => place,
            });
            save_state(config, place.as_ref(), &mut copy)?;
        }
        let caught_up = read < BATCH && !source.more();
        if caught_up && copy.tick(&stop)? {
            save_state(config, place.as_ref(), &mut copy)?;
        }
        if caught_up && (once || Instant::now() >= next_queue_check) {
            tracker.pseudonymiser = pseudonymiser(config);
            copy.set_privacy(&tracker.pseudonymiser);
            tracker.check_queue(once)?;
            next_queue_check = Instant::now() + t.queue_interval.0;
        }
        if stop.load(Ordering::Relaxed) || once && caught_up {
            tracker.counts.gaps = source.gaps();
            return Ok(tracker.counts);
        }
        if caught_up {
            source.wait(Duration::from_millis(500).min(t.queue_interval.0));
        }
    }
}

/// Saves the place in the log with the copy's, then lets the copy tidy up what the save
/// settled (rotated files compressed, expired ones deleted).
fn save_state(
    config: &Config,
    place: Option<&Place>,
    copy: &mut copy::LogCopy,
) -> Result<(), TrackError> {
    let Some(place) = place else {
        return Ok(());
    };
    let saved = state::Saved {
        place: place.clone(),
        copy: copy.place(),
    };
    state::save(&config.tracking.state, &saved).map_err(|source| TrackError::State {
        path: config.tracking.state.clone(),
        source,
    })?;
    copy.saved();
    Ok(())
}

/// The pseudonymiser of the events, with the current HMAC key (the daemon rotates keys; the
/// tracker only reads the ring).
fn pseudonymiser(config: &Config) -> Pseudonymiser {
    let key = if config.privacy.uses_hmac() {
        match keys::load(&config.privacy.keys, keys::Kind::Hmac) {
            Ok(ring) => ring.current().cloned(),
            Err(e) => {
                error!(target: TARGET, "{e}; recipients are recorded without their address");
                None
            }
        }
    } else {
        None
    };
    Pseudonymiser::new(config.privacy.clone(), key)
}

/// Postfix's `mail_owner` uid: the owner of the queue files a requeue's pickup line names.
fn mail_owner(config: &Config) -> Option<u32> {
    if config.tracking.mta != Mta::Postfix {
        return None;
    }
    let name = queue::postconf(config, "mail_owner")?;
    let user = nix::unistd::User::from_name(&name).ok().flatten();
    if user.is_none() {
        warn!(target: TARGET, "Postfix's mail_owner {name} is no user here: requeue lines are believed whatever their uid");
    }
    user.map(|u| u.uid.as_raw())
}

/// The names this host's events carry: the host name, and Postfix's `myhostname`.
fn host_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .into_iter()
        .collect();
    if config.tracking.mta == Mta::Postfix {
        match queue::postconf(config, "myhostname") {
            Some(name) => names.push(name),
            None => warn!(
                target: TARGET,
                "postconf -h myhostname gave no answer: events whose host is Postfix's myhostname may not be found"
            ),
        }
    }
    names.sort();
    names.dedup();
    names
}

impl Tracker<'_> {
    /// The transit record of `queue_id`, from this batch's changes or the ledger.
    fn transit<'t>(
        &mut self,
        changed: &'t mut HashMap<String, Transit>,
        queue_id: &str,
    ) -> Result<Option<&'t mut Transit>, StoreError> {
        if !changed.contains_key(queue_id) {
            if self.rekeys.has_moved(queue_id) {
                // Moved onto another queue id in this batch; the ledger still files it here.
                return Ok(None);
            }
            let hosts = self.hosts.clone();
            match self.ledger.transit(queue_id, &hosts)? {
                Some(t) => {
                    self.before.insert(t.key.clone(), t.state);
                    changed.insert(queue_id.to_string(), t);
                }
                None => return Ok(None),
            }
        }
        Ok(changed.get_mut(queue_id))
    }

    /// Records what a batch of lines says, retrying a store that fails until it takes it
    /// (the place is saved only after), or until asked to stop.
    fn record_lines(&mut self, lines: Vec<Read>, stop: &AtomicBool) -> Result<(), TrackError> {
        let now = chrono::Local::now();
        let mut changed: HashMap<String, Transit> = HashMap::new();
        let mut deliveries = Vec::new();
        let mut latest = None;
        for line in &lines {
            self.counts.lines += 1;
            TRACKER.log_lines.inc();
            let cut = match &line.entry {
                Some(e) => Some((e.time, e.ident.as_str(), e.pid, e.message.as_str())),
                None => SyslogLine::split(&line.text)
                    .and_then(|l| Some((l.stamp.time(&now)?, l.ident, l.pid, l.message))),
            };
            let Some((time, ident, pid, message)) = cut else {
                // Not syslog's shape, yet an outcome: a log format not known, to be noticed.
                if parse::unsplit_outcome(self.mta, &line.text) {
                    self.not_understood(None);
                }
                continue;
            };
            let records = match parse::parse(self.mta, ident, message) {
                Parsed::Records(records) => records,
                Parsed::Ignored => continue,
                Parsed::NotUnderstood => {
                    self.not_understood(Some(ident));
                    continue;
                }
            };
            if let Err(why) = bounds::line(&records, time, now.with_timezone(&Utc)) {
                self.refused(ident, why);
                continue;
            }
            latest = latest.max(Some(time));
            for (n, record) in records.into_iter().enumerate() {
                let key = format!("{}{n}", line.key);
                let from = Writer { ident, pid };
                if let Some(d) = self.step(&mut changed, record, time, from, &key)? {
                    deliveries.push(d);
                }
            }
        }
        let transits: Vec<Transit> = changed.into_values().collect();
        let before = std::mem::take(&mut self.before);
        let ledger = &mut self.ledger;
        retrying(ledger.name(), stop, || {
            ledger.record_transit(&transits, &deliveries)
        })?;
        for sink in &mut self.others {
            retrying(sink.name(), stop, || {
                sink.record_transit(&transits, &deliveries)
            })?;
        }
        if let Some(latest) = latest {
            self.rekeys.batch_done(latest);
        }
        self.counts.deliveries += deliveries.len() as u64;
        for d in &deliveries {
            TRACKER
                .deliveries
                .get_or_create(&label("status", d.status.as_str()))
                .inc();
        }
        for t in &transits {
            if let Some(before) = before.get(&t.key) {
                count_change(*before, t);
            }
        }
        Ok(())
    }

    /// Counts a line that reads like one tracked but was not understood (`ident`: its program,
    /// None for a line not syslog-shaped). The first of a run is a warning: many of them mean
    /// the MTA logs in a format the parser does not know.
    fn not_understood(&mut self, ident: Option<&str>) {
        self.counts.not_understood += 1;
        TRACKER.log_lines_not_understood.inc();
        let what = match ident {
            Some(ident) => format!("a line of {ident}"),
            None => "a line not syslog-shaped that holds an outcome".to_string(),
        };
        if self.counts.not_understood == 1 {
            warn!(target: TARGET, "{what} not understood (counted in privacy_milter_track_log_lines_not_understood); if more follow, the log is in a format the tracker does not read");
        } else {
            debug!(target: TARGET, "{what} not understood");
        }
    }

    /// Counts a line refused as implausible (see [`bounds`]) as not understood; the first of
    /// each cause is a warning, naming the program and the cause, nothing of the line.
    fn refused(&mut self, ident: &str, why: bounds::Implausible) {
        self.counts.not_understood += 1;
        TRACKER.log_lines_not_understood.inc();
        if self.refused.insert(why) {
            warn!(target: TARGET, "a line of {ident} refused: {}; counted as not understood, changing nothing", why.as_str());
        } else {
            debug!(target: TARGET, "a line of {ident} refused: {}", why.as_str());
        }
    }

    /// Files the record of `from` (looked up in this batch) under `to`.
    fn move_record(&mut self, changed: &mut HashMap<String, Transit>, from: &str, to: &str) {
        if let Some(mut t) = changed.remove(from) {
            t.queue_id = to.to_string();
            changed.insert(to.to_string(), t);
            self.rekeys.moved_away(from);
        }
    }

    /// A line that would move `original`'s record onto `queue_id`, not believed: the first of
    /// each cause is a warning (queue ids are no personal data).
    fn not_believed(&mut self, ident: &str, queue_id: &str, original: &str, why: &'static str) {
        let first = self.not_believed_causes.insert(why);
        if first {
            warn!(target: TARGET, "a line of {ident} requeuing {original} as {queue_id} not believed: {why}; nothing moved (docs/transit.md, \"What a log line is trusted with\")");
        } else {
            debug!(target: TARGET, "a line of {ident} requeuing {original} as {queue_id} not believed: {why}");
        }
    }

    /// Applies one record; returns the delivery to record, if it is one of a transit message.
    fn step(
        &mut self,
        changed: &mut HashMap<String, Transit>,
        record: Record,
        at: DateTime<Utc>,
        from: Writer<'_>,
        key: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        let removal_logged = self.mta == parse::Mta::Postfix;
        let ident = from.ident;
        match record {
            Record::Delivery(d) => {
                // As the milter classified recipients: by mailer or by domain.
                let local = self
                    .local_agents
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&d.agent))
                    || crate::facts::domain_of(&d.recipient)
                        .is_some_and(|domain| self.config.is_local_domain(&domain));
                if local {
                    return Ok(None);
                }
                if d.status == parse::Status::Sent {
                    let hop = self
                        .rekeys
                        .filter_hop(&d.queue_id, d.remote_queue_id.as_deref(), ident, at)
                        .map(str::to_string);
                    if let Some(new) = hop {
                        // A content filter (amavis, a loopback smtpd) queued it again here:
                        // the next server is still to come, under the new queue id.
                        if self.transit(changed, &new)?.is_none()
                            && self
                                .transit(changed, &d.queue_id)?
                                .is_some_and(|t| t.state.is_open())
                        {
                            info!(target: TARGET, queue_id = d.queue_id.as_str(), "{} passed a content filter and is queued again as {new}: followed", d.queue_id);
                            self.move_record(changed, &d.queue_id, &new);
                            return Ok(None);
                        }
                    }
                }
                let pseudonymiser = self.pseudonymiser.clone();
                let Some(t) = self.transit(changed, &d.queue_id)? else {
                    self.counts.unmatched += 1;
                    return Ok(None);
                };
                if let Err(why) = bounds::on_message(t, at, true) {
                    self.refused(ident, why);
                    return Ok(None);
                }
                let status = match d.status {
                    parse::Status::Sent => transit::Status::Sent,
                    parse::Status::Deferred => transit::Status::Deferred,
                    parse::Status::Bounced => transit::Status::Bounced,
                };
                t.apply(Step::Delivery { status, at }, removal_logged);
                Ok(Some(Delivery {
                    schema: DELIVERY_SCHEMA.into(),
                    id: key.to_string(),
                    time: stamp(at),
                    host: t.host.clone(),
                    queue_id: t.queue_id.clone(),
                    event_id: t.event_id,
                    recipient: pseudonymiser.address(&d.recipient),
                    relay: d.relay_ip.and_then(|ip| pseudonymiser.ip(ip)),
                    status,
                    dsn: d.dsn,
                    remote_queue_id: d.remote_queue_id,
                    delay: d.delay,
                }))
            }
            Record::Removed { queue_id } => {
                if let Some(t) = self.transit(changed, &queue_id)? {
                    match bounds::on_message(t, at, false) {
                        Ok(()) => t.apply(Step::Removed { at }, removal_logged),
                        Err(why) => self.refused(ident, why),
                    }
                }
                Ok(None)
            }
            Record::Expired { queue_id } => {
                if let Some(t) = self.transit(changed, &queue_id)? {
                    match bounds::on_message(t, at, false) {
                        Ok(()) => t.apply(Step::Expired { at }, removal_logged),
                        Err(why) => self.refused(ident, why),
                    }
                }
                Ok(None)
            }
            // `postsuper -r`: the message goes on under a new queue id, if the log makes that
            // plausible (see `rekey`).
            Record::Requeued {
                queue_id,
                original,
                uid,
            } => {
                let refused = self
                    .rekeys
                    .requeue_refused(&queue_id, &original, from.pid, uid, at)
                    .map(rekey::Refused::as_str);
                let refused = match refused {
                    Some(why) => Some(why),
                    None if self.transit(changed, &queue_id)?.is_some() => {
                        Some("its new queue id has a record of its own")
                    }
                    None => None,
                };
                if let Some(why) = refused {
                    self.not_believed(ident, &queue_id, &original, why);
                    return Ok(None);
                }
                if self
                    .transit(changed, &original)?
                    .is_some_and(|t| t.state.is_open())
                {
                    self.rekeys.requeue_used(&original, &queue_id, ident, at);
                    self.move_record(changed, &original, &queue_id);
                }
                Ok(None)
            }
            Record::Entered { queue_id } => {
                self.rekeys.entered(&queue_id, ident, at);
                Ok(None)
            }
            Record::PostsuperRequeued { queue_id } => {
                self.rekeys.postsuper_requeued(&queue_id, from.pid, at);
                Ok(None)
            }
            Record::PostsuperRequeuedCount { count } => {
                self.rekeys.postsuper_count(count, from.pid, at);
                Ok(None)
            }
            Record::Notification { .. } => Ok(None),
        }
    }

    /// Compares the open transit messages with what the queue holds: reports those held too
    /// long, and settles those that left without their removal in the log.
    fn check_queue(&mut self, once: bool) -> Result<(), TrackError> {
        let now = Utc::now();
        let queued = match self.config.tracking.mta {
            Mta::Postfix => match queue::postfix_queue(self.config) {
                Ok(ids) => Some(ids),
                Err(e) => {
                    warn!(target: TARGET, "cannot list the queue ({e}); held mail is judged from the log alone");
                    None
                }
            },
            // Sendmail's queue is not read: the log alone says what is held.
            Mta::Sendmail => None,
        };
        let open = self.ledger.transits(&TransitQuery {
            open_only: true,
            ..Default::default()
        })?;
        let alert_after = self.config.tracking.alert_after.0;
        let mut changed = Vec::new();
        let mut missing = HashSet::new();
        let mut open_states: HashMap<&'static str, i64> = HashMap::new();
        let mut held_too_long = 0;
        for lifecycle in &open {
            *open_states
                .entry(lifecycle.transit.state.as_str())
                .or_default() += 1;
            if lifecycle.transit.held_for(now) >= alert_after {
                held_too_long += 1;
            }
        }
        for state in ["pending", "deferred", "acknowledged"] {
            TRACKER
                .transit_open
                .get_or_create(&label("state", state))
                .set(open_states.get(state).copied().unwrap_or(0));
        }
        TRACKER.held_too_long.set(held_too_long);
        for mut lifecycle in open {
            let t = &mut lifecycle.transit;
            let old_enough = (now - t.since).to_std().unwrap_or_default() >= QUEUE_GRACE;
            if let Some(queued) = &queued {
                if !queued.contains(&t.queue_id) && old_enough {
                    if once || self.missing.contains(&t.queue_id) {
                        let before = t.state;
                        t.apply(Step::LeftQueue { at: now }, true);
                        count_change(before, t);
                        info!(
                            target: TARGET,
                            queue_id = t.queue_id.as_str(),
                            "{} left the queue without its removal in the log: now {}",
                            t.queue_id,
                            t.state
                        );
                        changed.push(t.clone());
                    } else {
                        missing.insert(t.queue_id.clone());
                    }
                    continue;
                }
            }
            if t.alert_due(now, alert_after) {
                warn!(
                    target: TARGET,
                    queue_id = t.queue_id.as_str(),
                    state = t.state.as_str(),
                    "transit message {} held for {} (state {}), longer than tracking.alert_after ({})",
                    t.queue_id,
                    transit::human(t.held_for(now)),
                    t.state,
                    self.config.tracking.alert_after
                );
                t.alerts += 1;
                changed.push(t.clone());
            }
        }
        self.missing = missing;
        if !changed.is_empty() {
            self.ledger.record_transit(&changed, &[])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_read_again_from_a_copy_keeps_its_key() {
        let at = |dev, ino, offset| follow::Position {
            dev,
            ino,
            offset,
            head: Some("ab".repeat(32)),
        };
        // copytruncate: the same bytes under another inode (and device).
        assert_eq!(file_line_key(&at(1, 2, 100)), file_line_key(&at(3, 4, 100)));
        assert_ne!(file_line_key(&at(1, 2, 100)), file_line_key(&at(1, 2, 101)));
        let other_file = follow::Position {
            head: Some("cd".repeat(32)),
            ..at(1, 2, 100)
        };
        assert_ne!(file_line_key(&at(1, 2, 100)), file_line_key(&other_file));
    }
}
