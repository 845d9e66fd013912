//! Ledger writer benchmark: events per second through the writer thread with group commit,
//! at 1, 16 and 256 concurrent sessions, and the latency a session waits for its event in
//! sync mode. Each figure is also given as a ratio to a baseline measured in the same run:
//! the same writer with no sink (channel and thread hand-off only).
//!
//! Run: `cargo bench --bench ledger` (add `-- --quick` for a short run).

use privacy_milter::{
    classify::Direction,
    config::{Config, SinkKind},
    event::{Client, Event, Outcome, RecipientView, Retention},
    privacy::AddressView,
    sinks::EventWriter,
};
use std::{sync::Arc, time::Instant};

fn event(n: u64) -> Event {
    Event {
        schema: privacy_milter::event::SCHEMA.into(),
        id: uuid::Uuid::now_v7(),
        time: "2026-11-26T18:00:00.123Z".into(),
        host: "mx1.example.org".into(),
        queue_id: Some(format!("4B{n:08}")),
        outcome: Outcome::Accepted,
        direction: Direction::Outbound,
        transit: true,
        client: Client {
            ip: Some("203.0.113.0/24".into()),
            authenticated: true,
            webmail: false,
        },
        sender: AddressView {
            address: None,
            domain: Some("example.org".into()),
        },
        recipients: vec![RecipientView {
            address: AddressView {
                address: None,
                domain: Some("remote.example".into()),
            },
            local: false,
        }],
        size: 2048,
        actions: vec!["originating_ip.added".into(), "transit_tag.added".into()],
        dry_run: false,
        retention: Retention {
            class: "outbound".into(),
            expires_at: "2027-02-24T18:00:00.123Z".into(),
        },
    }
}

struct Run {
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn run(writer: &EventWriter, sessions: usize, total: usize) -> Run {
    let per_session = total / sessions;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(per_session);
            for i in 0..per_session {
                let e = event((s * per_session + i) as u64);
                let t = Instant::now();
                writer.commit(e).await.expect("written");
                waits.push(t.elapsed().as_secs_f64() * 1e6);
            }
            waits
        }));
    }
    let mut waits = Vec::new();
    for t in tasks {
        waits.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| waits[((waits.len() as f64 * p) as usize).min(waits.len() - 1)];
    Run {
        per_second: waits.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn writer(dir: &std::path::Path, sinks: Vec<SinkKind>) -> EventWriter {
    let mut config = Config::default();
    config.events.sinks = sinks;
    config.events.enabled = !config.events.sinks.is_empty();
    config.events.ledger.path = dir.join("ledger.sqlite");
    EventWriter::start(&config).expect("writer starts")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { 4_096 } else { 32_768 };
    println!("ledger writer, {total} events per run (SQLite WAL, synchronous=FULL, one transaction per batch)");
    println!(
        "{:>9}  {:>12}  {:>10}  {:>10}  {:>10}  {:>14}",
        "sessions", "events/s", "p50 µs", "p99 µs", "base ev/s", "ratio to base"
    );
    for sessions in [1, 16, 256] {
        // Fewer events for one session: every event is its own transaction there.
        let n = if sessions == 1 { total / 8 } else { total };
        let base_dir = tempfile::tempdir().unwrap();
        let base = run(&writer(base_dir.path(), Vec::new()), sessions, n).await;
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(writer(dir.path(), vec![SinkKind::Ledger]));
        let r = run(&ledger, sessions, n).await;
        ledger.stop().await;
        println!(
            "{:>9}  {:>12.0}  {:>10.0}  {:>10.0}  {:>10.0}  {:>14.3}",
            sessions,
            r.per_second,
            r.p50_us,
            r.p99_us,
            base.per_second,
            r.per_second / base.per_second
        );
    }
}
