//! More connections than the daemon has file descriptors: accept() then fails
//! with EMFILE. The daemon must back off, keep serving the sessions it has, say so once, and
//! accept again when descriptors free up, never exit.

use crate::common::*;
use std::{process::Command, time::Duration};

const CONFIG: &str = "connection_flood/privacy-milter.toml";
/// The daemon's descriptor limit (soft and hard, so it cannot raise it): about 20 go to the
/// runtime, the listener, the log and the events file, the rest to connections.
const NOFILE: u32 = 64;
/// Connections opened at once: three times what fits.
const FLOOD: usize = 200;

/// The daemon under `ulimit -n NOFILE`.
fn with_few_descriptors(binary: &str) -> Command {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        &format!(r#"ulimit -n {NOFILE} && exec "$0" "$@""#),
        binary,
    ]);
    command
}

#[tokio::test]
async fn running_out_of_descriptors_never_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_with(CONFIG, dir, with_few_descriptors);
    let still_running = |daemon: &mut Daemon| daemon.child.try_wait().unwrap().is_none();

    // A session under way before the flood, to be completed while accept() fails.
    let before = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("4Before");
    let mut open = daemon.connect().await;
    before.connect(&mut open).await;
    before.envelope(&mut open).await;

    // The flood: connections that say nothing. Those the daemon cannot accept wait in the
    // listener's backlog.
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let connect = tokio::net::UnixStream::connect(daemon.socket());
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(stream)) => flood.push(stream),
            other => panic!(
                "connection {} of the flood: {other:?}\n{}",
                flood.len() + 1,
                daemon.log()
            ),
        }
    }
    daemon.wait_log("cannot accept connections");
    // Give a daemon that would exit on it the time to do so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(still_running(&mut daemon), "{}", daemon.log());

    // The open session goes on while new connections cannot be accepted.
    let (actions, _) = before.content(&mut open).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    open.close().await.unwrap();

    // The flood ends; a new session is accepted and answered.
    drop(flood);
    let (actions, _) = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .queue_id("4After")
        .send_on(daemon.connect().await)
        .await;
    assert_eq!(
        edits(&actions),
        ["+X-Originating-IP: [203.0.113.7]", OUTBOUND_TAG]
    );
    assert!(still_running(&mut daemon), "{}", daemon.log());

    // Exactly one event per message; the silent connections left none.
    let events = json_lines(&daemon.events_text());
    event_for(&events, "4Before");
    event_for(&events, "4After");
    assert_eq!(events.len(), 2, "{events:#?}");

    // Said once for the whole episode, with its end; and the start named the limit.
    let log = daemon.log();
    assert_eq!(log.matches("cannot accept connections").count(), 1, "{log}");
    assert_eq!(
        log.matches("accepting connections again").count(),
        1,
        "{log}"
    );
    assert!(log.contains("max_connections = 1000 needs"), "{log}");
    assert!(daemon.stop().success(), "{}", daemon.log());
}

/// `max_connections`: a connection beyond it waits until one closes, and the log says when
/// every connection is in use.
#[tokio::test]
async fn connections_beyond_max_connections_wait_their_turn() {
    let daemon = Daemon::start("connection_flood/capped.toml");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(daemon.connect().await);
    }
    daemon.wait_log("all 3 connections in use (max_connections)");

    // A fourth is not negotiated while the three are open...
    let mail = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("4Fourth");
    let fourth = tokio::spawn({
        let socket = daemon.socket();
        let mail = mail.clone();
        async move {
            let conn = indymilter_test::TestConnection::configure()
                .open_unix(socket)
                .await
                .expect("accepted once a place is free");
            mail.send_on(conn).await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!fourth.is_finished(), "a fourth connection was served");

    // ...and is, once one of them closes.
    held.pop().unwrap().close().await.unwrap();
    let (actions, _) = tokio::time::timeout(Duration::from_secs(30), fourth)
        .await
        .expect("the fourth connection is served")
        .unwrap();
    assert_eq!(edits(&actions), [RELAY_TAG]);
    assert_eq!(
        daemon.log().matches("connections in use").count(),
        1,
        "{}",
        daemon.log()
    );
}

/// Below a hard limit high enough, the daemon raises its own soft limit to what
/// `max_connections` (1000) needs, 1000 + 64, and does not warn.
#[tokio::test]
async fn raises_its_soft_descriptor_limit_to_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_with(CONFIG, dir, |binary| {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            r#"ulimit -S -n 256 && ulimit -H -n 4096 && exec "$0" "$@""#,
            binary,
        ]);
        command
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(open_files[3..5], ["1064", "4096"], "{limits}");
    assert!(
        !daemon.log().contains("file descriptors"),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
}
