//! Prometheus metrics: the figures each process keeps ([`DAEMON`] for the milter, [`TRACKER`]
//! for `privacy-milter track`) and the endpoint that serves them ([`http`]). A leaf: every
//! layer may count, nothing here knows about mail. No label carries personal data: labels are
//! directions, outcomes, rule action names, sink names, states and statuses, never an address,
//! an IP, a domain or a queue id.

pub mod http;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::sync::LazyLock;

/// A metric's labels: fixed names, values from a closed set.
pub type Labels = Vec<(&'static str, String)>;

/// One label.
pub fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

/// Latencies of a message's end of message or an event's commit: 100 µs to 10 s.
fn latency() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        10.0,
    ])
}

/// The milter daemon's figures.
pub struct Daemon {
    registry: Registry,
    /// Messages by direction and outcome (accepted, tempfailed, rejected, aborted).
    pub messages: Family<Labels, Counter>,
    /// Rule actions by label (`originating_ip.added`, ...).
    pub rule_actions: Family<Labels, Counter>,
    /// Events written and not written, by sink.
    pub events_written: Family<Labels, Counter>,
    pub events_failed: Family<Labels, Counter>,
    /// Events waiting in the PostgreSQL spool, and those PostgreSQL refused for good.
    pub postgres_spooled: Gauge,
    pub postgres_rejected: Counter,
    /// Records the ledger holds, by retention class (refreshed at each purge).
    pub ledger_records: Family<Labels, Gauge>,
    pub sessions_open: Gauge,
    /// From end of message to the MTA's answer.
    pub eom_seconds: Histogram,
    /// From an event's hand-over to the writer until it is durable.
    pub commit_seconds: Histogram,
    /// Configuration reloads by result (ok, failed).
    pub reloads: Family<Labels, Counter>,
    /// Age of the key in use, by kind (hmac, aead).
    pub key_age_seconds: Family<Labels, Gauge>,
}

/// `privacy-milter track`'s figures.
pub struct Tracker {
    registry: Registry,
    /// Delivery outcomes recorded, by status (sent, deferred, bounced).
    pub deliveries: Family<Labels, Counter>,
    /// Transit messages still in the queue, by state (pending, deferred, acknowledged), at the
    /// last queue check.
    pub transit_open: Family<Labels, Gauge>,
    /// Transit messages that reached a settled state (removed, bounced, expired, gone).
    pub transit_settled: Family<Labels, Counter>,
    /// Transit messages held longer than `tracking.alert_after` at the last queue check.
    pub held_too_long: Gauge,
    /// From acceptance to the next server's acknowledgement.
    pub acknowledged_seconds: Histogram,
    pub log_lines: Counter,
    pub log_lines_not_understood: Counter,
}

fn build_info(registry: &mut Registry) {
    let info: Family<Labels, Gauge> = Family::default();
    info.get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
        .set(1);
    registry.register("privacy_milter_build_info", "The running version", info);
}

impl Daemon {
    fn new() -> Self {
        let mut registry = Registry::default();
        build_info(&mut registry);
        let d = Self {
            messages: Family::default(),
            rule_actions: Family::default(),
            events_written: Family::default(),
            events_failed: Family::default(),
            postgres_spooled: Gauge::default(),
            postgres_rejected: Counter::default(),
            ledger_records: Family::default(),
            sessions_open: Gauge::default(),
            eom_seconds: latency(),
            commit_seconds: latency(),
            reloads: Family::default(),
            key_age_seconds: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "privacy_milter_messages",
            "Messages by direction and outcome",
            d.messages.clone(),
        );
        r.register(
            "privacy_milter_rule_actions",
            "Rule actions taken, by action",
            d.rule_actions.clone(),
        );
        r.register(
            "privacy_milter_events_written",
            "Events written, by sink",
            d.events_written.clone(),
        );
        r.register(
            "privacy_milter_events_failed",
            "Events a sink could not write, by sink",
            d.events_failed.clone(),
        );
        r.register(
            "privacy_milter_postgres_spooled_events",
            "Events waiting in the PostgreSQL spool",
            d.postgres_spooled.clone(),
        );
        r.register(
            "privacy_milter_postgres_rejected_events",
            "Events PostgreSQL refused for good (kept in the rejects file)",
            d.postgres_rejected.clone(),
        );
        r.register(
            "privacy_milter_ledger_records",
            "Events the ledger holds, by retention class (at the last purge)",
            d.ledger_records.clone(),
        );
        r.register(
            "privacy_milter_sessions_open",
            "Open milter sessions",
            d.sessions_open.clone(),
        );
        r.register(
            "privacy_milter_end_of_message_seconds",
            "From end of message to the answer",
            d.eom_seconds.clone(),
        );
        r.register(
            "privacy_milter_event_commit_seconds",
            "From an event's hand-over until it is durable",
            d.commit_seconds.clone(),
        );
        r.register(
            "privacy_milter_config_reloads",
            "Configuration reloads, by result",
            d.reloads.clone(),
        );
        r.register(
            "privacy_milter_key_age_seconds",
            "Age of the key in use, by kind",
            d.key_age_seconds.clone(),
        );
        Self { registry, ..d }
    }
}

impl Tracker {
    fn new() -> Self {
        let mut registry = Registry::default();
        build_info(&mut registry);
        let t = Self {
            deliveries: Family::default(),
            transit_open: Family::default(),
            transit_settled: Family::default(),
            held_too_long: Gauge::default(),
            acknowledged_seconds: Histogram::new([
                1.0,
                5.0,
                15.0,
                60.0,
                300.0,
                900.0,
                3600.0,
                4.0 * 3600.0,
                86400.0,
                5.0 * 86400.0,
            ]),
            log_lines: Counter::default(),
            log_lines_not_understood: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "privacy_milter_track_deliveries",
            "Delivery outcomes recorded, by status",
            t.deliveries.clone(),
        );
        r.register(
            "privacy_milter_track_transit_open",
            "Transit messages still queued, by state (last queue check)",
            t.transit_open.clone(),
        );
        r.register(
            "privacy_milter_track_transit_settled",
            "Transit messages that reached a settled state, by state",
            t.transit_settled.clone(),
        );
        r.register(
            "privacy_milter_track_held_too_long",
            "Transit messages held longer than tracking.alert_after (last queue check)",
            t.held_too_long.clone(),
        );
        r.register(
            "privacy_milter_track_acknowledged_seconds",
            "From acceptance to the next server's acknowledgement",
            t.acknowledged_seconds.clone(),
        );
        r.register(
            "privacy_milter_track_log_lines",
            "Log lines read",
            t.log_lines.clone(),
        );
        r.register(
            "privacy_milter_track_log_lines_not_understood",
            "Log lines that looked like ours but could not be read",
            t.log_lines_not_understood.clone(),
        );
        Self { registry, ..t }
    }
}

pub static DAEMON: LazyLock<Daemon> = LazyLock::new(Daemon::new);
pub static TRACKER: LazyLock<Tracker> = LazyLock::new(Tracker::new);

/// The daemon's figures in the text exposition format (OpenMetrics).
pub fn render_daemon() -> String {
    render(&DAEMON.registry)
}

/// The tracker's figures.
pub fn render_tracker() -> String {
    render(&TRACKER.registry)
}

fn render(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("encoding into a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_named_and_counted() {
        DAEMON
            .messages
            .get_or_create(&vec![
                ("direction", "inbound".to_string()),
                ("outcome", "accepted".to_string()),
            ])
            .inc();
        let text = render_daemon();
        assert!(
            text.contains(
                r#"privacy_milter_messages_total{direction="inbound",outcome="accepted"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("privacy_milter_build_info"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!render_tracker().contains("privacy_milter_messages"));
    }
}
