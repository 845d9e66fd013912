//! `privacy-milter report --output FILE.html`: one static page to look at rather than read:
//! what the ledger holds per retention class and direction, when it expires, events per day
//! over the retention window, transit mail by state and its time to acknowledgement (when
//! tracking is enabled), the MTA's logs (the raw window, the pseudonymised copy's files), the
//! audit's findings and the policy text. Self-contained: inline SVG
//! (`super::charts`), no script, a Content-Security-Policy that forbids loading anything.
//!
//! Only counts are read from the ledger (each a range through an index), never an event; a
//! line on standard error says what is being read once that takes more than a moment.

use super::{charts, CommandError};
use crate::{
    audit,
    config::{Config, Period},
    policy,
    store::{self, DayCount},
    transit::State,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use minijinja::{context, value::Serde, AutoEscape, Environment};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    sync::{Arc, Mutex},
};

const TEMPLATE: &str = include_str!("../templates/report.html.j2");

/// After this long without finishing, the report says on stderr what it is reading.
const MOMENT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Serialize)]
struct Held {
    class: String,
    direction: String,
    count: u64,
    kept: String,
}

#[derive(Serialize)]
struct StateCount {
    state: State,
    count: usize,
}

#[derive(Serialize)]
struct TransitPart {
    states: Vec<StateCount>,
    acknowledged: usize,
    chart: String,
}

/// The MTA's logs under `[mta_logs]`: how long raw lines and the copy live, the copy's files.
#[derive(Serialize)]
struct MtaLogs {
    copy: Option<String>,
    raw_window: String,
    retention: String,
    files: Vec<CopyFile>,
}

#[derive(Serialize)]
struct CopyFile {
    name: String,
    oldest: String,
    bytes: u64,
}

fn mta_logs(config: &Config) -> MtaLogs {
    let m = &config.mta_logs;
    let files = if m.copies() {
        // What cannot be read is the audit's to report (mta_logs.copy): none listed here.
        audit::logs::scan_lines(&m.copy.join(crate::track::COPY_CURRENT), |_| true)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    MtaLogs {
        copy: m.copies().then(|| m.copy.display().to_string()),
        raw_window: audit::span(m.raw_window.0),
        retention: audit::span(config.retention.mta_logs.0),
        files: files
            .into_iter()
            .map(|f| CopyFile {
                name: f
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                oldest: f.oldest.map_or_else(
                    || "-".into(),
                    |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
                ),
                bytes: std::fs::metadata(&f.path).map_or(0, |m| m.len()),
            })
            .collect(),
    }
}

/// Writes the report to `output`; returns what to print.
pub fn report(config: &Config, output: &Path) -> Result<String, CommandError> {
    report_with(
        config,
        output,
        Utc::now(),
        Progress::new(MOMENT, std::io::stderr()),
    )
}

fn report_with(
    config: &Config,
    output: &Path,
    now: DateTime<Utc>,
    progress: Progress,
) -> Result<String, CommandError> {
    let horizon = config.retention.longest().as_secs().div_ceil(86400).max(1) as i64;
    let today = now.date_naive();
    let tracking = config.tracking.enabled;
    progress.step("counting the events per class and direction");
    let (stats, expiring, recorded, transit) = audit::as_ledger_owner(config, |ledger| {
        let stats = ledger.stats()?;
        progress.step("counting the events per day of expiry");
        let expiring = ledger.expiring_per_day(now)?;
        progress.step("counting the events per day recorded");
        let recorded = ledger.recorded_per_day(now - Duration::days(horizon))?;
        progress.step("reading the transit messages");
        let transit = if tracking {
            Some(ledger.transit_times(now - Duration::days(horizon))?)
        } else {
            None
        };
        Ok((stats, expiring, recorded, transit))
    })?;
    progress.step("drawing the charts");
    let days_ahead: Vec<NaiveDate> = (0..=horizon).map(|d| today + Duration::days(d)).collect();
    let days_back: Vec<NaiveDate> = (0..=horizon)
        .rev()
        .map(|d| today - Duration::days(d))
        .collect();
    let chart_err = |e: String| CommandError::Refused(e);
    let expiry_chart =
        per_day_chart("Events expiring per day", &days_ahead, &expiring).map_err(chart_err)?;
    let recorded_chart =
        per_day_chart("Events recorded per day", &days_back, &recorded).map_err(chart_err)?;
    let transit = transit
        .map(|times| transit_part(&times))
        .transpose()
        .map_err(chart_err)?;
    progress.step("auditing the host");
    let findings = audit::run(config, now);
    let policy = policy::render(config, policy::Format::Html)?;
    let counts: Vec<Held> = stats
        .counts
        .iter()
        .map(|(class, direction, count)| Held {
            class: class.clone(),
            direction: direction.clone(),
            count: *count,
            kept: kept_for(config, class),
        })
        .collect();
    let failed = findings.iter().filter(|f| !f.ok).count();
    let total_findings = findings.len();
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.add_template("report.html", TEMPLATE)
        .map_err(policy::PolicyError::from)?;
    let html = env
        .get_template("report.html")
        .and_then(|t| {
            t.render(context! {
                host,
                generated => now.format("%Y-%m-%d %H:%M UTC").to_string(),
                ledger => ledger_name(config),
                total => stats.total,
                oldest => stats.oldest,
                next_expiry => stats.next_expiry,
                counts => Serde(counts),
                horizon,
                expiry_chart,
                recorded_chart,
                transit => Serde(transit),
                mta_logs => Serde(mta_logs(config)),
                failed => failed,
                findings => Serde(findings),
                policy,
            })
        })
        .map_err(policy::PolicyError::from)?;
    progress.step("writing the page");
    std::fs::write(output, html)
        .map_err(|e| CommandError::Refused(format!("cannot write {}: {e}", output.display())))?;
    drop(progress);
    Ok(format!(
        "report written to {} ({} events, {} findings)\n",
        output.display(),
        stats.total,
        total_findings
    ))
}

/// The retention period of a class, in the configuration's words.
fn kept_for(config: &Config, class: &str) -> String {
    let r = &config.retention;
    let period: Option<Period> = match class {
        "inbound" => Some(r.inbound),
        "outbound" => Some(r.outbound),
        "internal" => Some(r.internal),
        "relay" => Some(r.relay),
        "rejected" => Some(r.rejected),
        "aborted" => Some(r.aborted),
        _ => None,
    };
    period.map_or_else(|| "-".into(), |p| audit::span(p.0))
}

fn ledger_name(config: &Config) -> String {
    if store::ledger_on_postgres(config) {
        format!("PostgreSQL, {}", config.events.postgres.redacted_url())
    } else {
        format!("SQLite, {}", config.events.ledger.path.display())
    }
}

/// A bar per day of `days` with the events counted on it.
fn per_day_chart(title: &str, days: &[NaiveDate], counts: &[DayCount]) -> Result<String, String> {
    let mut per_day: BTreeMap<String, u64> = BTreeMap::new();
    for c in counts {
        *per_day.entry(c.day.clone()).or_default() += c.count;
    }
    let labels: Vec<String> = days.iter().map(|d| d.format("%m-%d").to_string()).collect();
    let values: Vec<u64> = days
        .iter()
        .map(|d| per_day.get(&d.to_string()).copied().unwrap_or(0))
        .collect();
    charts::bars(title, "events", &labels, &values)
}

/// Transit messages per state, and how long the acknowledged ones waited for it.
fn transit_part(times: &[store::TransitTimes]) -> Result<TransitPart, String> {
    let states = State::ALL
        .iter()
        .map(|s| StateCount {
            state: *s,
            count: times.iter().filter(|t| t.state == *s).count(),
        })
        .collect();
    const BUCKETS: [(&str, i64); 7] = [
        ("< 1 min", 60),
        ("1-5 min", 300),
        ("5-15 min", 900),
        ("15-60 min", 3600),
        ("1-6 h", 6 * 3600),
        ("6-24 h", 86400),
        ("> 1 day", i64::MAX),
    ];
    let mut values = [0u64; BUCKETS.len()];
    let mut acknowledged = 0;
    for t in times {
        if let Some(at) = t.acknowledged_at {
            let waited = (at - t.since).num_seconds();
            let bucket = BUCKETS
                .iter()
                .position(|(_, upto)| waited < *upto)
                .unwrap_or(0);
            values[bucket] += 1;
            acknowledged += 1;
        }
    }
    let labels: Vec<String> = BUCKETS.iter().map(|(l, _)| l.to_string()).collect();
    Ok(TransitPart {
        states,
        acknowledged,
        chart: charts::bars("Time to acknowledgement", "messages", &labels, &values)?,
    })
}

/// Says on a writer (stderr) which step runs, once the report has taken longer than a
/// moment, and then every moment.
pub(crate) struct Progress {
    current: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn new(moment: std::time::Duration, mut out: impl Write + Send + 'static) -> Self {
        let current: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(Some(String::new())));
        let shared = Arc::clone(&current);
        let started = std::time::Instant::now();
        let thread = std::thread::spawn(move || loop {
            std::thread::park_timeout(moment);
            let step = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(step) = step else { return };
            if started.elapsed() >= moment && !step.is_empty() {
                let _ = writeln!(
                    out,
                    "privacy-milter report: {step} ({}s)",
                    started.elapsed().as_secs()
                );
            }
        });
        Self {
            current,
            thread: Some(thread),
        }
    }

    pub(crate) fn step(&self, what: &str) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(what.to_string());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Past the moment, the step being run is named; before it, nothing is said.
    #[test]
    fn progress_names_the_step() {
        let out = Shared::default();
        let progress = Progress::new(std::time::Duration::from_millis(10), out.clone());
        progress.step("counting the events per day of expiry");
        let said = (0..500).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            (!text.is_empty()).then_some(text)
        });
        drop(progress);
        let said = said.expect("a progress line");
        assert!(
            said.starts_with("privacy-milter report: counting the events per day of expiry ("),
            "{said}"
        );

        let quiet = Shared::default();
        let progress = Progress::new(std::time::Duration::from_secs(3600), quiet.clone());
        progress.step("a quick step");
        drop(progress);
        assert!(quiet.0.lock().unwrap().is_empty());
    }
}
