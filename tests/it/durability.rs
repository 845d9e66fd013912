//! Durability: with `sync` every message the MTA was told to accept has its event, even when
//! the daemon is killed mid-flow; with `async` the answer does not wait, the queue is bounded,
//! and a full queue slows the MTA down rather than dropping events.

use crate::common::*;
use indymilter_test::Status;
use nix::sys::signal::Signal;
use std::{collections::HashMap, io::Read, os::unix::fs::OpenOptionsExt, time::Duration};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_accepted_message() {
    kill_mid_flow("durability/kill.toml").await;
}

/// With `events.ledger.synchronous = "normal"` a commit reaches the operating system, not
/// the disk: a kill of the milter (not a power loss) still loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_accepted_message_with_synchronous_normal() {
    kill_mid_flow("durability/kill_normal.toml").await;
}

async fn kill_mid_flow(case: &str) {
    let mut daemon = Daemon::start(case);
    let socket = daemon.socket();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut senders = Vec::new();
    for worker in 0..8 {
        let (socket, tx) = (socket.clone(), tx.clone());
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                let Ok(Ok(conn)) = tokio::time::timeout(
                    Duration::from_secs(5),
                    indymilter_test::TestConnection::configure().open_unix(&socket),
                )
                .await
                else {
                    return;
                };
                let qid = format!("4W{worker}N{n}");
                let mail = Mail::from_ip("203.0.113.7")
                    .auth("alice")
                    .rcpt("bob@remote.example")
                    .queue_id(&qid);
                // Any protocol failure means the daemon is gone: stop this worker.
                let result = tokio::spawn(async move { mail.send_on(conn).await });
                match tokio::time::timeout(Duration::from_secs(5), result).await {
                    Ok(Ok((_, Status::Continue))) => {
                        let _ = tx.send(qid);
                    }
                    _ => return,
                }
            }
        }));
    }
    drop(tx);
    // Let messages flow, then kill without warning.
    let mut accepted = Vec::new();
    while accepted.len() < 150 {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(qid)) => accepted.push(qid),
            _ => panic!("messages stopped flowing:\n{}", daemon.log()),
        }
    }
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit();
    for s in senders {
        let _ = s.await;
    }
    while let Ok(qid) = rx.try_recv() {
        accepted.push(qid);
    }

    // Restarting reads the ledger as it was left.
    let mut count: HashMap<String, usize> = HashMap::new();
    for line in daemon.ledger(&["export"]).lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        *count
            .entry(event["queue_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for qid in &accepted {
        assert_eq!(
            count.get(qid),
            Some(&1),
            "accepted message {qid} must have exactly one event"
        );
    }
    assert!(count.values().all(|n| *n == 1), "no event twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_queue_is_bounded_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("events.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Open the reading end without blocking, and read nothing yet: the writer will stall.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let milter = Milter::start_in("durability/async.toml", dir).await;

    let mut sent = 0;
    let mut blocked = None;
    for n in 0..400 {
        let mail = Mail::from_ip("198.51.100.9")
            .rcpt("x@remote.example")
            .queue_id(&format!("4Q{n}"));
        let conn = milter.connect().await;
        let mut send = tokio::spawn(async move { mail.send_on(conn).await });
        match tokio::time::timeout(Duration::from_secs(3), &mut send).await {
            Ok(result) => {
                assert_eq!(result.unwrap().1, Status::Continue);
                sent += 1;
            }
            Err(_) => {
                blocked = Some(send);
                break;
            }
        }
    }
    // A pipe holds at most 64 KiB (about a hundred events) plus the queue of 3: the answers
    // must have stopped coming before 400 messages.
    let blocked = blocked.expect("a full queue holds up end of message");
    assert!(
        sent >= 3,
        "async answers without waiting for the write: {sent}"
    );

    // What is in the pipe now is every event written so far: fewer than were answered, since
    // the answers did not wait (with "sync" every answered event would be in the pipe).
    let mut first = vec![0u8; 1 << 20];
    let n = reader.read(&mut first).unwrap();
    let written = first[..n].iter().filter(|b| **b == b'\n').count();
    assert!(
        sent > written,
        "answered {sent}, written {written}: the answers waited for the writes"
    );

    // Drain the pipe: the held-up message completes, and every event arrives once.
    let head = first[..n].to_vec();
    let drain = std::thread::spawn(move || {
        let mut all = head;
        let mut buf = [0u8; 65536];
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break, // the writer closed: the milter stopped
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "events never came");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
        String::from_utf8(all).unwrap()
    });
    assert_eq!(blocked.await.unwrap().1, Status::Continue);
    sent += 1;
    let mut milter = milter;
    milter.stop().await.unwrap();
    let text = drain.join().unwrap();
    let mut ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["queue_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), sent, "every answered message has its event");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), sent, "and only once");
}
