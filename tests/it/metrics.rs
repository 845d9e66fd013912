//! The Prometheus endpoint of the real daemon: messages of known directions, then a scrape
//! whose counters equal what was sent; a failing sink, a reload; no personal data in the
//! scrape; slow and malformed HTTP clients while mail flows.

use crate::{common::*, e2e::free_port};
use indymilter_test::Status;
use nix::sys::signal::Signal;
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

/// The daemon of `tests/metrics/privacy-milter.toml` with its endpoint on a free port.
fn daemon() -> (Daemon, u16) {
    let port = free_port();
    let daemon = Daemon::start_with(
        "metrics/privacy-milter.toml",
        tempfile::tempdir().unwrap(),
        |binary| {
            let mut command = std::process::Command::new(binary);
            command.env(
                "PRIVACY_MILTER_METRICS__LISTEN",
                format!("127.0.0.1:{port}"),
            );
            command
        },
    );
    // The milter's socket is bound before the daemon's run starts; the endpoint a moment later,
    // once the key ring is read.
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (daemon, port)
}

/// `GET path` on the endpoint: the status line and the body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the series `name{labels}` in a scrape (0 when absent).
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn scrape(port: u16) -> String {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

#[tokio::test]
async fn the_daemon_counts_what_it_does() {
    let (daemon, port) = daemon();
    let inbound = |n: usize| {
        Mail::from_ip("198.51.100.9")
            .rcpt("bob@example.org")
            .queue_id(&format!("4In{n}"))
    };
    let relay = |n: usize| {
        Mail::from_ip("198.51.100.9")
            .rcpt("x@remote.example")
            .queue_id(&format!("4Re{n}"))
    };
    for n in 0..3 {
        assert_eq!(
            inbound(n).send_on(daemon.connect().await).await.1,
            Status::Continue
        );
    }
    for n in 0..2 {
        assert_eq!(
            relay(n).send_on(daemon.connect().await).await.1,
            Status::Continue
        );
    }
    let outbound = Mail::from_ip("10.1.2.3").rcpt("carol@remote.example");
    assert_eq!(
        outbound.send_on(daemon.connect().await).await.1,
        Status::Continue
    );
    // One given up after RCPT.
    let mut conn = daemon.connect().await;
    let aborted = relay(9);
    aborted.connect(&mut conn).await;
    aborted.envelope(&mut conn).await;
    conn.close().await.unwrap();

    let text = eventually(|| {
        let text = scrape(port);
        (value(
            &text,
            r#"privacy_milter_events_written_total{sink="ledger"}"#,
        ) >= 7.0)
            .then_some(text)
    })
    .await
    .unwrap_or_else(|| scrape(port));
    let count = |series: &str| value(&text, series);
    assert_eq!(
        count(r#"privacy_milter_messages_total{direction="inbound",outcome="accepted"}"#),
        3.0,
        "{text}"
    );
    assert_eq!(
        count(r#"privacy_milter_messages_total{direction="relay",outcome="accepted"}"#),
        2.0
    );
    assert_eq!(
        count(r#"privacy_milter_messages_total{direction="outbound",outcome="accepted"}"#),
        1.0
    );
    assert_eq!(
        count(r#"privacy_milter_messages_total{direction="relay",outcome="aborted"}"#),
        1.0
    );
    assert_eq!(
        count(r#"privacy_milter_rule_actions_total{action="transit_tag.added"}"#),
        3.0
    );
    assert_eq!(
        count(r#"privacy_milter_rule_actions_total{action="originating_ip.added"}"#),
        1.0
    );
    assert_eq!(
        count(r#"privacy_milter_events_written_total{sink="ledger"}"#),
        7.0
    );
    assert_eq!(count("privacy_milter_end_of_message_seconds_count"), 6.0);
    assert_eq!(count("privacy_milter_event_commit_seconds_count"), 6.0);
    assert_eq!(count("privacy_milter_sessions_open"), 0.0);
    assert!(
        text.contains(r#"privacy_milter_build_info{version=""#),
        "{text}"
    );
    // At start the daemon purged and counted the (then empty) ledger.
    assert!(
        text.contains(r#"privacy_milter_ledger_records{class="inbound"}"#),
        "{text}"
    );
    // No personal data in any label or value.
    for raw in [
        "198.51.100",
        "10.1.2.3",
        "example.org",
        "remote.example",
        "4In0",
    ] {
        assert!(!text.contains(raw), "{raw} in the scrape");
    }

    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("configuration reloaded");
    let text = scrape(port);
    assert_eq!(
        value(&text, r#"privacy_milter_config_reloads_total{result="ok"}"#),
        1.0,
        "{text}"
    );
    assert!(value(&text, r#"privacy_milter_ledger_records{class="inbound"}"#) >= 0.0);

    // The ledger deleted: the next event fails, and the failure is counted.
    std::fs::remove_file(daemon.dir.path().join("ledger.sqlite")).unwrap();
    let (_, status) = relay(5).send_on(daemon.connect().await).await;
    assert!(matches!(status, Status::Tempfail { .. }), "{status:?}");
    let text = scrape(port);
    assert_eq!(
        value(
            &text,
            r#"privacy_milter_events_failed_total{sink="ledger"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"privacy_milter_messages_total{direction="relay",outcome="tempfailed"}"#
        ),
        1.0
    );
}

/// Unknown paths get 404 and what is not HTTP 400; silent and slow clients hold no mail up,
/// and once they are gone the endpoint answers again.
#[tokio::test]
async fn slow_and_malformed_clients_never_hold_up_mail() {
    let (daemon, port) = daemon();
    assert_eq!(get(port, "/").0, "HTTP/1.1 404 Not Found");
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = garbage.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // More silent clients than the endpoint serves at once, one sending a byte a second.
    let silent: Vec<TcpStream> = (0..24)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for n in 0..10 {
        let _ = trickle.write_all(b"G");
        let (_, status) = Mail::from_ip("198.51.100.9")
            .rcpt("x@remote.example")
            .queue_id(&format!("4Slow{n}"))
            .send_on(daemon.connect().await)
            .await;
        assert_eq!(
            status,
            Status::Continue,
            "message {n} while clients stall the endpoint"
        );
    }
    drop(silent);
    drop(trickle);
    let text = eventually(|| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.starts_with("HTTP/1.1 200").then_some(text)
    })
    .await
    .expect("the endpoint answers again");
    assert_eq!(
        value(
            &text,
            r#"privacy_milter_messages_total{direction="relay",outcome="accepted"}"#
        ),
        10.0,
        "{text}"
    );
}
