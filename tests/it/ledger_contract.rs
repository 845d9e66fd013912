//! The ledger's contract: what every ledger back end (`store::Ledger`) answers, one set of
//! scenarios run against a real SQLite file and a real PostgreSQL server (a private cluster,
//! as in `postgres`). Events go in through the writer's sinks (`store::open_sinks`, as the
//! daemon writes them, which stay open meanwhile) and are asked for through
//! `store::open_ledger`, as the commands, the report and the audit ask.
//!
//! What only one back end does is tested beside it: SQLite's WAL and runway in
//! `src/store/sqlite/`, its file guard in `ledger_faults`, PostgreSQL's spool, outage, TLS
//! and shared hosts in `postgres`; the commands' output in `ledger` and `postgres`.

use crate::{common::all_bytes, postgres::Pg};
use chrono::{DateTime, Utc};
use privacy_milter::{
    internals::{
        store::{self, DayCount, Filter, Ledger, Lifecycle, Overdue, Sink, Stats, TransitQuery},
        transit::{Delivery, State, Status, Step, Transit},
        Event, PURGE_CHUNK, SCHEMA,
    },
    Config, Source,
};
use serde_json::json;
use std::path::Path;
use tempfile::TempDir;

/// A ledger back end under the contract.
trait Backend {
    /// The configuration of a new, empty ledger, `name` among this back end's.
    fn fresh(&self, name: &str) -> Config;

    /// Everything the ledger of `config` keeps, as text, to search for what must be gone:
    /// for SQLite the bytes of its files (free pages and the WAL included), for PostgreSQL
    /// every row of its tables.
    fn kept(&self, config: &Config) -> String;
}

struct Sqlite {
    dir: TempDir,
}

impl Backend for Sqlite {
    fn fresh(&self, name: &str) -> Config {
        // `normal`: the WAL's runway (some 80 MiB of zeros per ledger on a disk, with `full`)
        // is the writer's business, tested in `store::sqlite::wal`.
        config(
            self.dir.path(),
            name,
            &format!(
                "[events]\nsinks = [\"ledger\"]\n[events.ledger]\npath = \"{}\"\nsynchronous = \"normal\"\n",
                self.dir.path().join(format!("{name}.sqlite")).display()
            ),
        )
    }

    fn kept(&self, config: &Config) -> String {
        let path = &config.events.ledger.path;
        let name = path.file_name().unwrap().to_str().unwrap();
        all_bytes(path.parent().unwrap(), name)
    }
}

const TABLES: [&str; 4] = ["events", "subjects", "transit", "deliveries"];

struct Postgres {
    pg: Pg,
    dir: TempDir,
}

impl Backend for Postgres {
    /// The one database of the cluster, emptied: the ledger migrates it again at its first
    /// connection.
    fn fresh(&self, name: &str) -> Config {
        self.pg.query(&format!(
            "DROP TABLE IF EXISTS {}, schema_version",
            TABLES.join(", ")
        ));
        config(
            self.dir.path(),
            name,
            &format!(
                "[events]\nsinks = [\"postgres\"]\n[events.postgres]\nurl = \"{}\"\npool_size = 2\nconnect_timeout = \"5s\"\nspool = \"{}\"\n",
                self.pg.url,
                self.dir.path().join(format!("{name}.spool")).display()
            ),
        )
    }

    fn kept(&self, _config: &Config) -> String {
        TABLES
            .iter()
            .flat_map(|table| self.pg.query(&format!("SELECT t::text FROM {table} t")))
            .flatten()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The configuration `events` (TOML) describes, written to `dir` as `NAME.toml` and loaded
/// as the binary loads it.
fn config(dir: &Path, name: &str, events: &str) -> Config {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("socket_group = \"\"\n[privacy]\nip = \"full\"\naddress = \"full\"\n{events}"),
    )
    .unwrap();
    Source::file(path).load().expect("a valid configuration")
}

/// A ledger under test: the writer's sinks, open as the daemon keeps them, and the ledger as
/// the commands open it.
struct Subject {
    config: Config,
    writer: Vec<Box<dyn Sink>>,
    ledger: Box<dyn Ledger>,
}

impl Subject {
    fn new(backend: &dyn Backend, name: &str) -> Self {
        let config = backend.fresh(name);
        let writer = store::open_sinks(&config).unwrap();
        let ledger = store::open_ledger(&config).unwrap();
        Self {
            config,
            writer,
            ledger,
        }
    }

    /// Writes a batch as the writer does, durable when this returns.
    fn write(&mut self, batch: &[Event]) {
        for sink in &mut self.writer {
            if let Some(flush) = sink.write(batch).unwrap() {
                flush.flush().unwrap();
            }
        }
    }

    fn find(&mut self, filter: &Filter) -> Vec<Event> {
        self.ledger.find(filter).unwrap()
    }

    fn transits(&mut self, query: TransitQuery) -> Vec<Lifecycle> {
        self.ledger.transits(&query).unwrap()
    }
}

const HOST: &str = "mx.test.example";

fn at(time: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(time)
        .unwrap()
        .with_timezone(&Utc)
}

fn is_local(address: &str) -> bool {
    address.ends_with("@example.org")
}

/// An accepted message's event as the milter writes it: its direction (and retention class)
/// from who sends to whom, transit when a recipient is remote; kept until 2099.
fn event(queue_id: &str, time: &str, ip: &str, sender: &str, recipients: &[&str]) -> Event {
    let domain = |address: &str| address.rsplit('@').next().unwrap().to_string();
    let inbound = !is_local(sender);
    let all_local = recipients.iter().all(|r| is_local(r));
    let direction = match (inbound, all_local) {
        (true, true) => "inbound",
        (true, false) => "relay",
        (false, true) => "internal",
        (false, false) => "outbound",
    };
    let recipients: Vec<_> = recipients
        .iter()
        .map(|r| json!({"address": r, "domain": domain(r), "local": is_local(r)}))
        .collect();
    serde_json::from_value(json!({
        "schema": SCHEMA,
        "id": uuid::Uuid::now_v7(),
        "time": time,
        "host": HOST,
        "queue_id": queue_id,
        "outcome": "accepted",
        "direction": direction,
        "transit": !all_local,
        "client": {"ip": ip, "authenticated": !inbound, "webmail": false},
        "sender": {"address": sender, "domain": domain(sender)},
        "recipients": recipients,
        "size": 100,
        "actions": [],
        "retention": {"class": direction, "expires_at": "2099-01-01T00:00:00.000Z"}
    }))
    .unwrap()
}

fn expiring(mut event: Event, expires_at: &str) -> Event {
    event.retention.expires_at = expires_at.into();
    event
}

const T1: &str = "2026-11-01T10:00:00.000Z";
const T2: &str = "2026-11-01T23:00:00.000Z";
const T3: &str = "2026-11-02T01:00:00.000Z";

/// Eve's inbound and relayed mail from 198.51.100.9, and alice's internal mail, in that
/// order of time.
fn three() -> [Event; 3] {
    let eve = "eve@remote.example";
    [
        event("4Inbound", T1, "198.51.100.9", eve, &["bob@example.org"]),
        event(
            "4Relay",
            T2,
            "198.51.100.9",
            eve,
            &["carol@transit.example"],
        ),
        event(
            "4Internal",
            T3,
            "203.0.113.7",
            "alice@example.org",
            &["bob@example.org"],
        ),
    ]
}

/// A delivery outcome the tracker would record for `t`.
fn delivery(id: &str, t: &Transit, recipient: &str, status: Status, time: &str) -> Delivery {
    serde_json::from_value(json!({
        "schema": "privacy-milter.delivery.v1",
        "id": id,
        "time": time,
        "host": t.host,
        "queue_id": t.queue_id,
        "event_id": t.event_id,
        "recipient": {"address": recipient, "domain": recipient.rsplit('@').next()},
        "relay": "192.0.2.25",
        "status": status,
        "dsn": "2.0.0",
        "remote_queue_id": format!("4Next{id}"),
        "delay": 0.5
    }))
    .unwrap()
}

fn addresses(values: &[&str]) -> Filter {
    Filter::Address(values.iter().map(|v| v.to_string()).collect())
}

/// Each event is found by its IP, and by each address and domain it holds as sender or
/// recipient, oldest first whatever the order it came in; the values of one kind never find
/// another's; several values (one per HMAC key) find the events of each, once. The queries
/// find exactly what `Filter::matches` says (the erase command counts the spool's by it).
fn finds_by_ip_address_and_domain(backend: &dyn Backend) {
    let mut s = Subject::new(backend, "find");
    let [inbound, relay, internal] = three();
    s.write(&[relay.clone(), internal.clone()]);
    s.write(std::slice::from_ref(&inbound));
    let all = [inbound.clone(), relay.clone(), internal.clone()];
    let ip = |v: &str| Filter::Ip(vec![v.into()]);
    let domain = |v: &str| Filter::Domain(vec![v.into()]);
    for (filter, expected) in [
        (ip("198.51.100.9"), vec![&inbound, &relay]),
        (ip("203.0.113.7"), vec![&internal]),
        (addresses(&["eve@remote.example"]), vec![&inbound, &relay]),
        (addresses(&["bob@example.org"]), vec![&inbound, &internal]),
        (domain("transit.example"), vec![&relay]),
        (domain("example.org"), vec![&inbound, &internal]),
        (
            addresses(&["alice@example.org", "carol@transit.example"]),
            vec![&relay, &internal],
        ),
        (
            addresses(&["eve@remote.example", "bob@example.org"]),
            vec![&inbound, &relay, &internal],
        ),
        (ip("eve@remote.example"), vec![]),
        (domain("bob@example.org"), vec![]),
        (addresses(&["remote.example"]), vec![]),
        (ip("192.0.2.1"), vec![]),
    ] {
        let found = s.find(&filter);
        let expected: Vec<Event> = expected.into_iter().cloned().collect();
        assert_eq!(found, expected, "{filter:?}");
        let matching: Vec<Event> = all.iter().filter(|e| filter.matches(e)).cloned().collect();
        assert_eq!(found, matching, "{filter:?} as Filter::matches sees it");
    }
}

/// Export gives back the events as written, oldest first, `since` included and `until` not.
fn exports_a_range(backend: &dyn Backend) {
    let mut s = Subject::new(backend, "export");
    let [inbound, relay, internal] = three();
    s.write(&[internal.clone(), inbound.clone(), relay.clone()]);
    let mut export = |since: Option<&str>, until: Option<&str>| {
        s.ledger.export(since.map(at), until.map(at)).unwrap()
    };
    assert_eq!(
        export(None, None),
        [inbound.clone(), relay.clone(), internal.clone()]
    );
    assert_eq!(export(Some(T2), None), [relay.clone(), internal.clone()]);
    assert_eq!(export(None, Some(T2)), std::slice::from_ref(&inbound));
    assert_eq!(export(Some(T1), Some(T3)), [inbound, relay]);
    assert_eq!(
        export(Some("2000-01-01T00:00:00Z"), Some("2000-01-02T00:00:00Z")),
        []
    );
}

/// Stats count per class and direction, sorted, with the oldest event and the next expiry.
fn counts_in_stats(backend: &dyn Backend) {
    let mut s = Subject::new(backend, "stats");
    assert_eq!(s.ledger.stats().unwrap(), Stats::default());
    let [inbound, relay, internal] = three();
    let other = event(
        "4Inbound2",
        T3,
        "192.0.2.7",
        "dave@remote.example",
        &["bob@example.org"],
    );
    s.write(&[
        expiring(inbound, "2027-01-30T10:00:00.000Z"),
        expiring(relay, "2026-11-02T23:00:00.000Z"),
        internal,
        other,
    ]);
    let class = |class: &str, n: u64| (class.to_string(), class.to_string(), n);
    assert_eq!(
        s.ledger.stats().unwrap(),
        Stats {
            counts: vec![class("inbound", 2), class("internal", 1), class("relay", 1)],
            total: 4,
            oldest: Some(T1.into()),
            next_expiry: Some("2026-11-02T23:00:00.000Z".into()),
        }
    );
}

/// Erasure takes the subject's events whole: no query finds them, and nothing the ledger
/// keeps holds a byte of them, while the writer keeps the ledger open beside it.
fn erases_every_byte(backend: &dyn Backend) {
    let mut s = Subject::new(backend, "erase");
    let [inbound, relay, internal] = three();
    s.write(&[inbound.clone(), relay.clone(), internal.clone()]);
    let gone = [
        "eve@remote.example".to_string(),
        "remote.example".into(),
        "198.51.100.9".into(),
        "carol@transit.example".into(),
        "4Inbound".into(),
        "4Relay".into(),
        inbound.id.to_string(),
        relay.id.to_string(),
    ];
    let before = backend.kept(&s.config);
    for text in &gone {
        assert!(before.contains(text.as_str()), "{text} was never kept");
    }

    assert_eq!(
        s.ledger.erase(&addresses(&["eve@remote.example"])).unwrap(),
        2
    );
    assert!(s.find(&addresses(&["eve@remote.example"])).is_empty());
    assert!(s.find(&Filter::Ip(vec!["198.51.100.9".into()])).is_empty());
    assert_eq!(
        s.ledger.export(None, None).unwrap(),
        std::slice::from_ref(&internal)
    );
    let after = backend.kept(&s.config);
    for text in &gone {
        assert!(
            !after.contains(text.as_str()),
            "the ledger still keeps {text}"
        );
    }
    assert!(after.contains("4Internal") && after.contains(&internal.id.to_string()));
    assert_eq!(
        s.ledger.erase(&addresses(&["eve@remote.example"])).unwrap(),
        0
    );
}

/// Purge deletes exactly the events expired at its time (an expiry at that very time
/// included), with their transit records and deliveries, bytes included, however many
/// purge steps they take.
fn purges_exactly_the_expired(backend: &dyn Backend) {
    let mut s = Subject::new(backend, "purge");
    let now = at("2026-12-01T00:00:00.000Z");
    let [inbound, relay, internal] = three();
    let relay = expiring(relay, "2026-12-01T00:00:00.000Z");
    let inbound = expiring(inbound, "2026-12-01T00:00:00.001Z");
    // More than one purge step of other expired events.
    let backlog: Vec<Event> = (0..=PURGE_CHUNK)
        .map(|n| {
            expiring(
                event(
                    &format!("4Old{n:04}"),
                    T1,
                    "192.0.2.9",
                    "mallory@old.example",
                    &["bob@example.org"],
                ),
                "2026-11-05T00:00:00.000Z",
            )
        })
        .collect();
    s.write(&backlog);
    s.write(&[inbound.clone(), relay.clone(), internal.clone()]);
    let hosts = [HOST.to_string()];
    let t = s.ledger.transit("4Relay", &hosts).unwrap().unwrap();
    let d = delivery("line-r", &t, "carol@transit.example", Status::Sent, T2);
    s.ledger.record_transit(&[t], &[d]).unwrap();

    assert_eq!(
        store::purge_all(s.ledger.as_mut(), now).unwrap(),
        PURGE_CHUNK + 2
    );
    assert_eq!(s.ledger.export(None, None).unwrap(), [inbound, internal]);
    assert_eq!(s.ledger.transit("4Relay", &hosts).unwrap(), None);
    assert!(s.find(&addresses(&["mallory@old.example"])).is_empty());
    let kept = backend.kept(&s.config);
    for gone in [
        "4Relay",
        "carol@transit.example",
        "line-r",
        "mallory@old.example",
        "4Old0000",
        "4Old0500",
        &relay.id.to_string(),
    ] {
        assert!(!kept.contains(gone), "the ledger still keeps {gone}");
    }
    assert!(kept.contains("4Inbound"));
    assert_eq!(store::purge_all(s.ledger.as_mut(), now).unwrap(), 0);
}

/// A transit message gets its record when its event is written; tracking changes it and adds
/// deliveries (a line recorded twice is kept once); the record follows a new queue id; the
/// listings select by state and age; erasure takes the record and its deliveries.
fn keeps_transit_records_and_lifecycles(backend: &dyn Backend) {
    let mut s = Subject::new(backend, "transit");
    let alice = "alice@example.org";
    let out = event(
        "4Out",
        T1,
        "203.0.113.7",
        alice,
        &[
            "carol@transit.example",
            "dave@remote.example",
            "bob@example.org",
        ],
    );
    let local = event("4Local", T1, "203.0.113.7", alice, &["bob@example.org"]);
    s.write(&[local.clone(), out.clone()]);
    let hosts = [HOST.to_string()];
    assert_eq!(s.ledger.transit("4Local", &hosts).unwrap(), None);
    assert_eq!(s.ledger.transit("4Nowhere", &hosts).unwrap(), None);
    let mut t = s.ledger.transit("4Out", &hosts).unwrap().expect("a record");
    assert_eq!(
        (
            t.event_id,
            t.queue_id.as_str(),
            t.host.as_str(),
            t.state,
            t.since
        ),
        (out.id, "4Out", HOST, State::Pending, at(T1))
    );
    assert_eq!(
        (
            t.remote,
            t.sent,
            t.bounced,
            t.alerts,
            t.acknowledged_at,
            t.removed_at
        ),
        (2, 0, 0, 0, None, None)
    );
    assert_eq!(
        s.ledger.transit("4Out", &[]).unwrap().as_ref(),
        Some(&t),
        "any host"
    );
    assert_eq!(
        s.transits(TransitQuery::default()),
        [Lifecycle {
            transit: t.clone(),
            deliveries: vec![]
        }]
    );

    let sent = "2026-11-01T10:00:02.000Z";
    t.apply(
        Step::Delivery {
            status: Status::Sent,
            at: at(sent),
        },
        true,
    );
    let d1 = delivery("line-1", &t, "carol@transit.example", Status::Sent, sent);
    for _ in 0..2 {
        s.ledger
            .record_transit(std::slice::from_ref(&t), std::slice::from_ref(&d1))
            .unwrap();
    }
    let deferred = "2026-11-01T10:00:03.000Z";
    t.apply(
        Step::Delivery {
            status: Status::Deferred,
            at: at(deferred),
        },
        true,
    );
    let d2 = delivery(
        "line-2",
        &t,
        "dave@remote.example",
        Status::Deferred,
        deferred,
    );
    s.ledger
        .record_transit(std::slice::from_ref(&t), std::slice::from_ref(&d2))
        .unwrap();
    let lifecycle = Lifecycle {
        transit: t.clone(),
        deliveries: vec![d1.clone(), d2.clone()],
    };
    let states = |states: &[State]| TransitQuery {
        states: states.to_vec(),
        ..Default::default()
    };
    assert_eq!(
        s.transits(states(&[State::Deferred])),
        std::slice::from_ref(&lifecycle)
    );
    assert_eq!(
        s.transits(states(&[State::Deferred, State::Removed])),
        std::slice::from_ref(&lifecycle)
    );
    assert!(s.transits(states(&[State::Pending])).is_empty());
    assert!(s.transits(states(&[State::Removed])).is_empty());
    let open = TransitQuery {
        open_only: true,
        ..Default::default()
    };
    assert_eq!(s.transits(open.clone()), std::slice::from_ref(&lifecycle));
    let accepted_before = |time: &str| TransitQuery {
        since_before: Some(at(time)),
        ..Default::default()
    };
    assert!(
        s.transits(accepted_before(T1)).is_empty(),
        "strictly before"
    );
    assert_eq!(
        s.transits(accepted_before(T2)),
        std::slice::from_ref(&lifecycle)
    );
    assert_eq!(
        s.ledger.lifecycles(&[local.clone(), out.clone()]).unwrap(),
        [lifecycle]
    );

    // `postsuper -r`: the record follows the message's new queue id.
    t.queue_id = "4Requeued".into();
    s.ledger
        .record_transit(std::slice::from_ref(&t), &[])
        .unwrap();
    assert_eq!(s.ledger.transit("4Out", &hosts).unwrap(), None);
    let mut t = s.ledger.transit("4Requeued", &hosts).unwrap().unwrap();
    assert_eq!((t.event_id, t.state, t.sent), (out.id, State::Deferred, 1));

    let acknowledged = "2026-11-01T10:10:00.000Z";
    t.apply(
        Step::Delivery {
            status: Status::Sent,
            at: at(acknowledged),
        },
        true,
    );
    t.apply(
        Step::Removed {
            at: at("2026-11-01T10:10:01.000Z"),
        },
        true,
    );
    assert_eq!(t.state, State::Removed);
    let d3 = delivery(
        "line-3",
        &t,
        "dave@remote.example",
        Status::Sent,
        acknowledged,
    );
    s.ledger
        .record_transit(std::slice::from_ref(&t), std::slice::from_ref(&d3))
        .unwrap();
    assert!(s.transits(open).is_empty());
    assert_eq!(
        s.transits(states(&[State::Removed])),
        [Lifecycle {
            transit: t.clone(),
            deliveries: vec![d1, d2, d3],
        }]
    );

    let gone = ["line-1", "line-3", "4Nextline-2", "192.0.2.25", "4Requeued"];
    let before = backend.kept(&s.config);
    for text in gone {
        assert!(before.contains(text), "{text} was never kept");
    }
    assert_eq!(
        s.ledger
            .erase(&addresses(&["carol@transit.example"]))
            .unwrap(),
        1
    );
    assert_eq!(s.ledger.transit("4Requeued", &hosts).unwrap(), None);
    assert!(s.transits(TransitQuery::default()).is_empty());
    assert!(s.ledger.lifecycles(&[out]).unwrap().is_empty());
    assert_eq!(s.ledger.export(None, None).unwrap(), [local]);
    let after = backend.kept(&s.config);
    for text in gone {
        assert!(!after.contains(text), "the ledger still keeps {text}");
    }
}

/// The report's counts per day (UTC) of arrival and of expiry, the audit's events held past
/// their expiry, and the report's transit times: each from its bound on.
fn counts_for_the_report_and_the_audit(backend: &dyn Backend) {
    let mut s = Subject::new(backend, "counts");
    let eve = |queue_id: &str, time: &str, expires: &str| {
        let e = event(
            queue_id,
            time,
            "198.51.100.9",
            "eve@remote.example",
            &["bob@example.org"],
        );
        expiring(e, expires)
    };
    let relayed = "2026-11-02T02:00:00.000Z";
    s.write(&[
        eve("4A", T1, "2027-01-30T10:00:00.000Z"),
        eve("4B", T2, "2027-01-30T23:00:00.000Z"),
        eve("4C", T3, "2026-11-03T01:00:00.000Z"),
        expiring(
            event(
                "4R",
                relayed,
                "198.51.100.9",
                "eve@remote.example",
                &["carol@transit.example"],
            ),
            "2026-11-03T02:00:00.000Z",
        ),
    ]);
    let day = |day: &str, class: &str, count: u64| DayCount {
        day: day.into(),
        class: class.into(),
        direction: class.into(),
        count,
    };
    let from = |t: &str| at(t);
    assert_eq!(
        s.ledger
            .recorded_per_day(from("2026-11-01T00:00:00Z"))
            .unwrap(),
        [
            day("2026-11-01", "inbound", 2),
            day("2026-11-02", "inbound", 1),
            day("2026-11-02", "relay", 1)
        ]
    );
    assert_eq!(
        s.ledger.recorded_per_day(from(T2)).unwrap(),
        [
            day("2026-11-01", "inbound", 1),
            day("2026-11-02", "inbound", 1),
            day("2026-11-02", "relay", 1)
        ]
    );
    assert_eq!(
        s.ledger
            .expiring_per_day(from("2027-01-01T00:00:00Z"))
            .unwrap(),
        [day("2027-01-30", "inbound", 2)]
    );
    assert_eq!(
        s.ledger
            .expiring_per_day(from("2026-11-01T00:00:00Z"))
            .unwrap(),
        [
            day("2026-11-03", "inbound", 1),
            day("2026-11-03", "relay", 1),
            day("2027-01-30", "inbound", 2)
        ]
    );
    assert_eq!(
        s.ledger.overdue(from("2026-12-01T00:00:00Z")).unwrap(),
        Overdue {
            count: 2,
            oldest_expiry: Some("2026-11-03T01:00:00.000Z".into())
        }
    );
    assert_eq!(
        s.ledger.overdue(from("2026-11-03T01:00:00Z")).unwrap(),
        Overdue::default(),
        "strictly before"
    );

    let times =
        |s: &mut Subject, since: &str| -> Vec<(State, DateTime<Utc>, Option<DateTime<Utc>>)> {
            s.ledger
                .transit_times(from(since))
                .unwrap()
                .into_iter()
                .map(|t| (t.state, t.since, t.acknowledged_at))
                .collect()
        };
    assert_eq!(
        times(&mut s, "2026-01-01T00:00:00Z"),
        [(State::Pending, at(relayed), None)]
    );
    assert_eq!(
        times(&mut s, relayed),
        [(State::Pending, at(relayed), None)]
    );
    assert!(times(&mut s, "2026-11-02T02:00:00.001Z").is_empty());
    let mut t = s
        .ledger
        .transit("4R", &[HOST.to_string()])
        .unwrap()
        .unwrap();
    let acknowledged = "2026-11-02T02:00:05.000Z";
    t.apply(
        Step::Delivery {
            status: Status::Sent,
            at: at(acknowledged),
        },
        true,
    );
    s.ledger.record_transit(&[t], &[]).unwrap();
    assert_eq!(
        times(&mut s, "2026-01-01T00:00:00Z"),
        [(State::Acknowledged, at(relayed), Some(at(acknowledged)))]
    );
}

/// Every scenario, each on a new ledger.
fn keeps_the_contract(backend: &dyn Backend) {
    finds_by_ip_address_and_domain(backend);
    exports_a_range(backend);
    counts_in_stats(backend);
    erases_every_byte(backend);
    purges_exactly_the_expired(backend);
    keeps_transit_records_and_lifecycles(backend);
    counts_for_the_report_and_the_audit(backend);
}

#[test]
fn the_sqlite_ledger_keeps_the_contract() {
    keeps_the_contract(&Sqlite {
        dir: tempfile::tempdir().unwrap(),
    });
}

#[test]
fn the_postgres_ledger_keeps_the_contract() {
    let Some(pg) = Pg::start("the_postgres_ledger_keeps_the_contract") else {
        return;
    };
    keeps_the_contract(&Postgres {
        pg,
        dir: tempfile::tempdir().unwrap(),
    });
}
