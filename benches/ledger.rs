//! Ledger writer benchmark: events per second through the writer thread with group commit,
//! at 1, 16 and 256 concurrent sessions, and how long a session waits for its event.
//!
//! Every figure is compared with two baselines measured in the same run, in alternation
//! with the ledger, because these machines are shared and their disks' speed drifts:
//!
//! - `handoff`: the same writer with no sink (channel and thread hand-off only), the
//!   ceiling set by the code around the sink;
//! - `append`: the same writer with the `jsonl` sink, one `write` and one `fdatasync` per
//!   batch: the least any durable group commit on this disk can cost, the floor for
//!   `events.durability = "sync"`.
//!
//! `journal+ledger` is a measured sketch of a design not built (docs/performance.md): the
//! reply waits only for the `append` of the event's line, and the ledger takes the same
//! events behind it, as `ledger async` does (batches grow with the backlog); its events/s
//! counts until the ledger has committed the last one too.
//!
//! `ledger sync` waits for each event to be committed, as end of message does with
//! `events.durability = "sync"` (every commit fsynced: `events.ledger.synchronous = "full"`);
//! `ledger normal` the same with `synchronous = "normal"` (commits reach the operating
//! system; the disk is synced in the background); `ledger async` only queues the event
//! (`durability = "async"`), and its events/s counts until the writer has committed the last.
//!
//! The sessions above hand over their next event as soon as the last is written: saturation,
//! where each waits for the others' batches too. A second table paces them as an MTA's
//! sessions are paced by SMTP: 16 sessions, each with one event every 5 ms (3 200 events/s
//! offered), so the wait is what one commit costs a message.
//!
//! Run: `cargo bench --bench ledger` (`-- --quick` for a short run, `-- --rounds N`,
//! `-- --sessions N` for one level of concurrency, `-- --paced` for the paced table only).
//! Under `cargo test` (which, unlike `cargo bench`, passes no `--bench`) it only checks that
//! every variant runs, on a few events.

mod common;
use common::{median, Args};

use privacy_milter::{
    internals::{
        AddressView, Client, Direction, Durability, Event, EventWriter, Outcome, RecipientView,
        Retention, Settings, SinkKind, Synchronous,
    },
    Config,
};
use std::{
    path::Path,
    time::{Duration, Instant},
};

fn event(n: u64) -> Event {
    Event {
        schema: privacy_milter::internals::SCHEMA.into(),
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
        skipped_actions: Vec::new(),
        edits: None,
        retention: Retention {
            class: "outbound".into(),
            expires_at: "2027-02-24T18:00:00.123Z".into(),
        },
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Handoff,
    Append,
    LedgerSync,
    /// The same without the group-commit window: every event written as it comes.
    LedgerSyncNoWindow,
    LedgerNormal,
    LedgerAsync,
    /// `Append` on the reply's path, the ledger fed behind it (`durability = "async"`).
    JournalLedger,
}

impl Variant {
    const ALL: [Variant; 7] = [
        Variant::Handoff,
        Variant::Append,
        Variant::LedgerSync,
        Variant::LedgerSyncNoWindow,
        Variant::LedgerNormal,
        Variant::LedgerAsync,
        Variant::JournalLedger,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Handoff => "handoff",
            Variant::Append => "append",
            Variant::LedgerSync => "ledger sync",
            Variant::LedgerSyncNoWindow => "sync, no window",
            Variant::LedgerNormal => "ledger normal",
            Variant::LedgerAsync => "ledger async",
            Variant::JournalLedger => "journal+ledger",
        }
    }

    fn writer(self, dir: &Path) -> EventWriter {
        let mut config = Settings::default();
        config.events.sinks = match self {
            Variant::Handoff => Vec::new(),
            Variant::Append | Variant::JournalLedger => vec![SinkKind::Jsonl],
            Variant::LedgerSync
            | Variant::LedgerSyncNoWindow
            | Variant::LedgerNormal
            | Variant::LedgerAsync => vec![SinkKind::Ledger],
        };
        config.events.enabled = !config.events.sinks.is_empty();
        config.events.ledger.path = dir.join("ledger.sqlite");
        config.events.jsonl.path = dir.join("events.jsonl");
        if self == Variant::LedgerNormal {
            config.events.ledger.synchronous = Synchronous::Normal;
        }
        config.events.durability = if self == Variant::LedgerAsync {
            Durability::Async
        } else {
            Durability::Sync
        };
        let config = Config::resolve(config).expect("a valid configuration");
        let window = if self == Variant::LedgerSyncNoWindow {
            std::time::Duration::ZERO
        } else {
            privacy_milter::internals::GROUP_COMMIT_WINDOW
        };
        EventWriter::start_with(&config, window).expect("writer starts")
    }

    /// The ledger behind the journal (`JournalLedger`): queued, not waited for.
    fn behind(self, dir: &Path) -> Option<EventWriter> {
        if self != Variant::JournalLedger {
            return None;
        }
        let mut config = Settings::default();
        config.events.sinks = vec![SinkKind::Ledger];
        config.events.ledger.path = dir.join("ledger.sqlite");
        config.events.durability = Durability::Async;
        // The journal holds the backlog; the queue only has to take a 50 ms batch.
        config.events.queue_size = 1_000_000;
        let config = Config::resolve(config).expect("a valid configuration");
        Some(EventWriter::start(&config).expect("writer starts"))
    }
}

/// One measurement: events per second, and the wait per event in µs (p50, p99).
#[derive(Clone, Copy, Default)]
struct Run {
    per_second: f64,
    p50: f64,
    p99: f64,
}

async fn run(variant: Variant, sessions: usize, total: usize, pace: Option<Duration>) -> Run {
    let dir = tempfile::tempdir().expect("temporary directory");
    let writer = variant.writer(dir.path());
    let behind = variant.behind(dir.path());
    // The ledger behind the journal takes its events every 50 ms, in batches of hundreds:
    // fewer pages and commits per event than one batch per flush.
    let (feed, mut fed) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let feeder = behind.clone().map(|behind| {
        tokio::spawn(async move {
            let mut open = true;
            while open {
                tokio::time::sleep(Duration::from_millis(50)).await;
                loop {
                    match fed.try_recv() {
                        Ok(e) => behind.enqueue(e).await,
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(_) => {
                            open = false;
                            break;
                        }
                    }
                }
            }
        })
    });
    let per_session = total / sessions;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let writer = writer.clone();
        let feed = behind.as_ref().map(|_| feed.clone());
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(per_session);
            let mut ticks = pace.map(|pace| {
                // Spread the sessions over the period, as independent clients would be.
                let start = tokio::time::Instant::now() + pace * s as u32 / sessions as u32;
                tokio::time::interval_at(start, pace)
            });
            for i in 0..per_session {
                if let Some(ticks) = ticks.as_mut() {
                    ticks.tick().await;
                }
                let e = event((s * per_session + i) as u64);
                let t = Instant::now();
                if variant == Variant::LedgerAsync {
                    writer.enqueue(e).await;
                } else if let Some(feed) = &feed {
                    let n = (s * per_session + i) as u64;
                    writer.commit(e).await.expect("written");
                    feed.send(event(n)).expect("feeder runs");
                } else {
                    writer.commit(e).await.expect("written");
                }
                waits.push(t.elapsed().as_secs_f64() * 1e6);
            }
            waits
        }));
    }
    let mut waits = Vec::new();
    for t in tasks {
        waits.extend(t.await.expect("session"));
    }
    if variant == Variant::LedgerAsync {
        // Queued events count once written: the writer takes events in order, so they are
        // once one more event, waited for, is.
        writer.commit(event(u64::MAX)).await.expect("written");
    }
    drop(feed);
    if let Some(feeder) = feeder {
        feeder.await.expect("feeder");
    }
    if let Some(behind) = &behind {
        // Counted once the ledger behind has the last event too.
        behind.commit(event(u64::MAX)).await.expect("written");
    }
    // Closing the sinks (a last checkpoint of the WAL) happens once per daemon, not per event.
    let elapsed = started.elapsed().as_secs_f64();
    writer.stop().await;
    if let Some(behind) = behind {
        behind.stop().await;
    }
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| waits[((waits.len() as f64 * p) as usize).min(waits.len() - 1)];
    Run {
        per_second: waits.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn main() {
    // The sessions run on one thread, as in the daemon; `--multi-thread` puts them on tokio's
    // multi-thread runtime (a worker per core) instead.
    let mut runtime = if Args::get().has("--multi-thread") {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    runtime
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench());
}

async fn bench() {
    let args = Args::get();
    let smoke = args.smoke();
    let quick = smoke || args.has("--quick");
    let rounds = args.rounds(if quick { 1 } else { 5 });
    let total = match (smoke, quick) {
        (true, _) => 512,
        (false, true) => 4_096,
        (false, false) => 16_384,
    };
    println!(
        "ledger writer: {total} events per run (1 session: {}), median of {rounds} alternating rounds",
        total / 8
    );
    println!(
        "{:>8}  {:<12}  {:>9}  {:>9}  {:>9}  {:>16}  {:>16}",
        "sessions", "variant", "events/s", "p50 µs", "p99 µs", "events/s÷append", "p99÷append p99"
    );
    // `--sessions N` measures one level of concurrency only.
    // `--paced` measures only the paced table.
    let levels = if args.has("--paced") {
        vec![]
    } else if args.has("--sessions") {
        vec![args.number("--sessions").expect("--sessions N")]
    } else {
        vec![1, 16, 256]
    };
    for sessions in levels {
        // Fewer events for one session: every event is its own fsync there.
        let n = if sessions == 1 { total / 8 } else { total };
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); Variant::ALL.len()];
        for _ in 0..rounds {
            for (i, variant) in Variant::ALL.into_iter().enumerate() {
                runs[i].push(run(variant, sessions, n, None).await);
            }
        }
        let medians: Vec<Run> = runs.iter().map(|r| medians_of(r)).collect();
        let append = medians[1];
        for (variant, m) in Variant::ALL.into_iter().zip(&medians) {
            println!(
                "{:>8}  {:<12}  {:>9.0}  {:>9.0}  {:>9.0}  {:>16.2}  {:>16.2}",
                sessions,
                variant.name(),
                m.per_second,
                m.p50,
                m.p99,
                m.per_second / append.per_second,
                m.p99 / append.p99
            );
        }
    }
    let paced = [
        Variant::Append,
        Variant::LedgerSync,
        Variant::LedgerSyncNoWindow,
        Variant::LedgerNormal,
        Variant::JournalLedger,
    ];
    let (sessions, pace) = (16, Duration::from_millis(5));
    let n = if smoke { 320 } else { 3_200 };
    println!(
        "\npaced: {sessions} sessions, one event every {} ms each, {n} events per run",
        pace.as_millis()
    );
    println!(
        "{:>8}  {:<12}  {:>9}  {:>9}  {:>9}  {:>16}",
        "sessions", "variant", "events/s", "p50 µs", "p99 µs", "p99÷append p99"
    );
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); paced.len()];
    for _ in 0..rounds {
        for (i, variant) in paced.into_iter().enumerate() {
            runs[i].push(run(variant, sessions, n, Some(pace)).await);
        }
    }
    let medians: Vec<Run> = runs.iter().map(|r| medians_of(r)).collect();
    for (variant, m) in paced.into_iter().zip(&medians) {
        println!(
            "{:>8}  {:<12}  {:>9.0}  {:>9.0}  {:>9.0}  {:>16.2}",
            sessions,
            variant.name(),
            m.per_second,
            m.p50,
            m.p99,
            m.p99 / medians[0].p99
        );
    }
}

/// The median of each figure over the rounds.
fn medians_of(runs: &[Run]) -> Run {
    Run {
        per_second: median(runs.iter().map(|x| x.per_second).collect()),
        p50: median(runs.iter().map(|x| x.p50).collect()),
        p99: median(runs.iter().map(|x| x.p99).collect()),
    }
}
