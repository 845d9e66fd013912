//! `privacy-milter ledger ...`: answering for what we hold.
//!
//! A person's address or IP is looked up in the form the ledger holds it, pseudonymised by
//! the same `[privacy]` policy that wrote it: with `ip = "truncated"` an IP finds the events
//! of its network; with `address = "domain"` an address finds the events of its domain, which
//! is all that is held that could concern it; with `hmac` the subject is looked up under
//! every key still in the ring.

use super::{log_copy, transit::TransitView, CommandError, ListFormat};
use crate::{
    config::{Config, SinkKind},
    event::Event,
    keys::{self, Key, Kind},
    privacy::Pseudonymiser,
    store::{self, Filter, Ledger},
    transit::{State, Status},
};
use chrono::{DateTime, NaiveDate, Utc};
use std::{collections::HashMap, fmt::Write, net::IpAddr, path::Path, sync::Arc};

/// Who a request is about.
#[derive(Clone, Debug)]
pub enum Subject {
    Address(String),
    Ip(IpAddr),
}

/// How `ledger export` writes the events: one JSON object per line, or CSV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// Where the ledger is, for `stats`.
fn location(config: &Config) -> String {
    if store::ledger_on_postgres(config) {
        format!("postgres {}", config.events.postgres.redacted_url())
    } else {
        config.events.ledger.path.display().to_string()
    }
}

/// The ledger these commands work on (see [`store::open_ledger`]); as root, only a SQLite
/// ledger root owns.
fn open(config: &Config) -> Result<Box<dyn Ledger>, CommandError> {
    if !store::ledger_on_postgres(config) {
        let path = &config.events.ledger.path;
        if path.exists() {
            not_root_on_anothers(path)?;
        }
    }
    Ok(store::open_ledger(config)?)
}

/// Refuses root on a ledger that belongs to another user (the daemon's). SQLite creates the
/// `-wal` and `-shm` files with the opener's owner: root's would lock the daemon out of its own
/// ledger once it restarts.
fn not_root_on_anothers(path: &Path) -> Result<(), CommandError> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let owner = std::fs::metadata(path)
        .map_err(|e| CommandError::Refused(format!("{}: {e}", path.display())))?
        .uid();
    if owner == 0 {
        return Ok(());
    }
    let name = nix::unistd::User::from_uid(owner.into())
        .ok()
        .flatten()
        .map_or_else(|| owner.to_string(), |user| user.name);
    let command: Vec<String> = std::env::args().collect();
    Err(CommandError::Refused(format!(
        "{} belongs to {name}: run the ledger commands as that user, e.g.\n    runuser -u {name} -- {}\n\
         (as root, SQLite would create the ledger's -wal and -shm files as root, and the daemon \
         could no longer open its ledger)",
        path.display(),
        command.join(" ")
    )))
}

/// The filter for `subject` as the policy stores it, or why nothing can be held. With HMACs
/// the subject is pseudonymised under every live key, since each key made some events.
pub fn filter(subject: &Subject, config: &Config) -> Result<Filter, CommandError> {
    let keys: Vec<Option<Arc<Key>>> = if config.privacy.uses_hmac() {
        let ring = keys::load(&config.privacy.keys, Kind::Hmac)?;
        ring.keys.into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    let forms = |f: &dyn Fn(&Pseudonymiser) -> Option<String>| -> Vec<String> {
        let mut values: Vec<String> = keys
            .iter()
            .filter_map(|k| f(&Pseudonymiser::new(config.privacy.clone(), k.clone())))
            .collect();
        values.dedup();
        values
    };
    match subject {
        Subject::Ip(ip) => match forms(&|p| p.ip(*ip)) {
            v if v.is_empty() => Err(CommandError::Refused(
                "[privacy] ip = \"omit\" (or no key left): no IP address is held in events".into(),
            )),
            v => Ok(Filter::Ip(v)),
        },
        Subject::Address(a) => {
            let addresses = forms(&|p| p.address(a).address);
            let domains = forms(&|p| p.address(a).domain);
            if !addresses.is_empty() {
                Ok(Filter::Address(addresses))
            } else if !domains.is_empty() {
                Ok(Filter::Domain(domains))
            } else {
                Err(CommandError::Refused(
                    "[privacy] address = \"omit\": no address is held in events".into(),
                ))
            }
        }
    }
}

pub fn query(
    config: &Config,
    subject: &Subject,
    format: ListFormat,
) -> Result<String, CommandError> {
    let filter = filter(subject, config)?;
    let mut ledger = open(config)?;
    let events = ledger.find(&filter)?;
    let lifecycles = tracked(ledger.as_mut(), &events)?;
    let copy = log_copy::find(config, &filter)?;
    Ok(match format {
        ListFormat::Json => {
            let values: Vec<serde_json::Value> = events
                .iter()
                .map(|e| with_lifecycle(e, &lifecycles))
                .collect();
            let answer = serde_json::json!({ "events": values, "log_copy": copy });
            serde_json::to_string_pretty(&answer).expect("events serialise") + "\n"
        }
        ListFormat::Table => {
            let mut out = table(&filter, &events, &lifecycles);
            if let Some(held) = &copy {
                out.push_str(&log_copy::describe(held, config));
            }
            out
        }
    })
}

/// What tracking recorded about these events' messages, by event id: only messages the
/// tracker has seen something of (a transit message it has not yet met shows nothing).
fn tracked(
    ledger: &mut dyn Ledger,
    events: &[Event],
) -> Result<HashMap<uuid::Uuid, TransitView>, CommandError> {
    if !events.iter().any(|e| e.transit) {
        return Ok(HashMap::new());
    }
    let now = Utc::now();
    Ok(ledger
        .lifecycles(events)?
        .iter()
        .filter(|l| l.transit.state != State::Pending || !l.deliveries.is_empty())
        .map(|l| (l.transit.event_id, TransitView::new(l, now)))
        .collect())
}

/// The event as JSON, with its message's `lifecycle` when tracking recorded one.
fn with_lifecycle(
    event: &Event,
    lifecycles: &HashMap<uuid::Uuid, TransitView>,
) -> serde_json::Value {
    let mut value = serde_json::to_value(event).expect("events serialise");
    if let (Some(view), Some(object)) = (lifecycles.get(&event.id), value.as_object_mut()) {
        object.insert(
            "lifecycle".into(),
            serde_json::to_value(view).expect("views serialise"),
        );
    }
    value
}

/// Deletes the subject's events and says how many; on SQLite, also that the write-ahead log
/// is truncated (every run, so a run again finishes what one beside a reader, or a killed
/// one, left; it fails while a reader keeps it busy); also says when some of them are still
/// on their way to PostgreSQL in this host's spool (or rejects file), out of its reach.
pub fn erase(config: &Config, subject: &Subject) -> Result<String, CommandError> {
    let filter = filter(subject, config)?;
    let erased = open(config)?.erase(&filter)?;
    let mut out = format!("erased {erased} events\n");
    if !store::ledger_on_postgres(config) {
        out.push_str(
            "the write-ahead log is truncated: no old copy of erased events is left in it\n",
        );
    }
    // The copy is the MTA's log, kept under the operator's legitimate interest (abuse,
    // delivery disputes) for retention.mta_logs and pseudonymised: erase leaves it, and says so.
    if let Some(held) = log_copy::find(config, &filter)? {
        let lines: usize = held.iter().map(|h| h.lines).sum();
        if lines > 0 {
            let _ = writeln!(
                out,
                "note: {lines} pseudonymised lines of this subject remain in the MTA log copy ({}); \
                 erase leaves the log, which is deleted with its files after retention.mta_logs",
                config.mta_logs.copy.display()
            );
        }
    }
    if config.events.sinks.contains(&SinkKind::Postgres) {
        let pg = &config.events.postgres;
        for (path, what) in [
            (pg.spool.clone(), "wait in the spool for PostgreSQL; run erase again once the daemon has replayed it (it is then empty)"),
            (pg.rejects(), "were refused by PostgreSQL and wait in this file; delete their lines by hand"),
        ] {
            let waiting = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str::<Event>(line).ok())
                .filter(|event| filter.matches(event))
                .count();
            if waiting > 0 {
                let _ = writeln!(
                    out,
                    "note: {waiting} more events of this subject {what}: {}",
                    path.display()
                );
            }
        }
    }
    Ok(out)
}

/// Deletes expired events, then the keys retired longer than the longest retention period
/// (the daemon's rule: [`keys::destroy_retired`]).
pub fn purge(config: &Config) -> Result<String, CommandError> {
    let now = Utc::now();
    let mut out = match store::purge_all(open(config)?.as_mut(), now) {
        Ok(purged) => format!("purged {purged} expired events\n"),
        // Done, but a reader (a backup, an export) kept the write-ahead log busy: what was
        // deleted is gone from the ledger, its old copies go when the log is next truncated.
        Err(store::StoreError::WalBusy { done, .. }) => format!(
            "{done}\nnote: a reader kept the write-ahead log busy; the old copies of purged events in it go at the daemon's next truncation, or run purge again once the reader is done\n"
        ),
        Err(e) => return Err(e.into()),
    };
    for id in keys::destroy_retired(&config.privacy.keys, config.retention.longest(), now)? {
        let _ = writeln!(
            out,
            "destroyed key {id}: every event made with it has expired"
        );
    }
    Ok(out)
}

pub fn export(
    config: &Config,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    format: ExportFormat,
) -> Result<String, CommandError> {
    let mut ledger = open(config)?;
    let events = ledger.export(since, until)?;
    let lifecycles = tracked(ledger.as_mut(), &events)?;
    Ok(match format {
        ExportFormat::Csv => csv(&events, &lifecycles),
        ExportFormat::Jsonl => events
            .iter()
            .map(|e| with_lifecycle(e, &lifecycles).to_string() + "\n")
            .collect(),
    })
}

pub fn stats(config: &Config) -> Result<String, CommandError> {
    let s = open(config)?.stats()?;
    let mut out = format!("ledger: {}\nevents: {}\n", location(config), s.total);
    for (class, direction, n) in &s.counts {
        let _ = writeln!(out, "  class {class:<9} direction {direction:<9} {n}");
    }
    let _ = writeln!(out, "oldest record: {}", s.oldest.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "next expiry: {}",
        s.next_expiry.as_deref().unwrap_or("-")
    );
    Ok(out)
}

/// A date (`2026-11-26`, midnight UTC) or an RFC 3339 time.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| format!("invalid time {text:?}: expected 2026-11-26 or 2026-11-26T18:00:00Z"))
}

fn table(
    filter: &Filter,
    events: &[Event],
    lifecycles: &HashMap<uuid::Uuid, TransitView>,
) -> String {
    let what = match filter {
        Filter::Ip(ip) => format!("client IP {}", ip.join(" or ")),
        Filter::Address(a) => format!("address {}", a.join(" or ")),
        Filter::Domain(d) => format!(
            "domain {} (addresses are held as domains only)",
            d.join(" or ")
        ),
    };
    let mut out = format!("{} events held for {what}\n", events.len());
    if events.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24}  {:<12}  {:<10}  {:<9}  {:<18}  {:<24}  {:<24}  transit",
        "time", "queue id", "outcome", "direction", "client", "sender", "expires"
    );
    for e in events {
        let sender = e
            .sender
            .address
            .as_deref()
            .or(e.sender.domain.as_deref())
            .unwrap_or("-");
        let transit = lifecycles.get(&e.id).map_or_else(
            || "-".to_string(),
            |v| {
                let sent = v
                    .deliveries
                    .iter()
                    .filter(|d| d.status == Status::Sent)
                    .count();
                format!("{} ({sent} sent)", v.state)
            },
        );
        let _ = writeln!(
            out,
            "{:<24}  {:<12}  {:<10}  {:<9}  {:<18}  {:<24}  {:<24}  {transit}",
            e.time,
            e.queue_id.as_deref().unwrap_or("-"),
            e.outcome.as_str(),
            e.direction,
            e.client.ip.as_deref().unwrap_or("-"),
            sender,
            e.retention.expires_at
        );
    }
    out
}

fn csv(events: &[Event], lifecycles: &HashMap<uuid::Uuid, TransitView>) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "id",
        "time",
        "host",
        "queue_id",
        "outcome",
        "direction",
        "transit",
        "client_ip",
        "authenticated",
        "webmail",
        "sender",
        "recipients",
        "size",
        "actions",
        "retention_class",
        "expires_at",
        "transit_state",
        "acknowledged_at",
        "removed_at",
    ];
    // Writing to memory cannot fail.
    w.write_record(header).expect("CSV into memory");
    for e in events {
        let lifecycle = lifecycles.get(&e.id);
        let recipients: Vec<String> = e
            .recipients
            .iter()
            .map(|r| {
                let who = r
                    .address
                    .address
                    .as_deref()
                    .or(r.address.domain.as_deref())
                    .unwrap_or("-");
                format!("{who}:{}", if r.local { "local" } else { "remote" })
            })
            .collect();
        w.write_record([
            e.id.to_string(),
            e.time.clone(),
            e.host.clone(),
            e.queue_id.clone().unwrap_or_default(),
            e.outcome.as_str().to_string(),
            e.direction.to_string(),
            e.transit.to_string(),
            e.client.ip.clone().unwrap_or_default(),
            e.client.authenticated.to_string(),
            e.client.webmail.to_string(),
            e.sender
                .address
                .clone()
                .or(e.sender.domain.clone())
                .unwrap_or_default(),
            recipients.join(" "),
            e.size.to_string(),
            e.actions.join(" "),
            e.retention.class.clone(),
            e.retention.expires_at.clone(),
            lifecycle.map(|v| v.state.to_string()).unwrap_or_default(),
            lifecycle
                .and_then(|v| v.acknowledged_at.clone())
                .unwrap_or_default(),
            lifecycle
                .and_then(|v| v.removed_at.clone())
                .unwrap_or_default(),
        ])
        .expect("CSV into memory");
    }
    let bytes = w.into_inner().expect("CSV into memory");
    String::from_utf8(bytes).expect("CSV of strings is UTF-8")
}
