//! Reload: a good file takes effect for new connections; a broken one keeps the running
//! configuration and says why; the events file is re-opened (logrotate); each sink is
//! reopened on its own, and one that cannot be keeps running as it was (the real daemon).

use crate::{common::*, ledger_faults::queue_ids};
use indymilter_test::Status;
use nix::sys::signal::Signal;
use std::{os::unix::fs::PermissionsExt, path::Path};

#[tokio::test]
async fn good_and_broken_reload() {
    let milter = Milter::start("reload/privacy-milter.toml").await;
    let relay = || Mail::from_ip("198.51.100.9").rcpt("carol@remote.example");
    assert_eq!(edits(&relay().send(&milter).await.0), [RELAY_TAG]);

    // A connection opened before the reload keeps the configuration it started with.
    let mut old = milter.connect().await;
    relay().connect(&mut old).await;

    milter
        .reload_with("reload/changed.toml")
        .await
        .expect("good file reloads");
    assert_eq!(
        edits(&relay().send(&milter).await.0),
        ["+X-Relayed@0: relay; by=mx.test.example; k=KEY; mac=MAC"]
    );
    assert_eq!(edits(&relay().transaction(&mut old).await.0), [RELAY_TAG]);
    old.close().await.unwrap();

    let err = milter.reload_with("reload/broken.toml").await.unwrap_err();
    assert!(
        err.contains("networks.trusted[0]") && err.contains("10.0.0.0/33"),
        "{err}"
    );
    assert!(err.contains("privacy-milter.toml"), "names the file: {err}");
    assert_eq!(
        edits(&relay().send(&milter).await.0),
        ["+X-Relayed@0: relay; by=mx.test.example; k=KEY; mac=MAC"]
    );
}

#[tokio::test]
async fn reload_reopens_the_events_file() {
    let milter = Milter::start("reload/privacy-milter.toml").await;
    Mail::from_ip("198.51.100.9")
        .rcpt("a@example.org")
        .queue_id("4Before")
        .send(&milter)
        .await;
    let rotated = milter.dir.path().join("events.jsonl.1");
    std::fs::rename(milter.events_path(), &rotated).unwrap();
    milter
        .reload_with("reload/privacy-milter.toml")
        .await
        .unwrap();
    Mail::from_ip("198.51.100.9")
        .rcpt("a@example.org")
        .queue_id("4After")
        .send(&milter)
        .await;

    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("4Before") && !old.contains("4After"));
    let events = milter.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["queue_id"], "4After");
}

/// Messages sent after the reload in the tests below.
const AFTER: usize = 40;

/// The daemon with `reload/sinks.toml` (a ledger in `db/`, a jsonl file in `logs/`), as
/// `nobody` where `as_nobody` (for files that user may only read), with one message sent.
async fn two_sinks(as_nobody: bool) -> Daemon {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    for sub in ["", "db", "logs"] {
        let path = dir.path().join(sub);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let daemon = Daemon::start_with("reload/sinks.toml", dir, |binary| {
        let mut command = std::process::Command::new(binary);
        if as_nobody {
            command.uid(65534).gid(65534);
        }
        command
    });
    send(&daemon, "4HBefore").await;
    daemon
}

async fn send(daemon: &Daemon, queue_id: &str) {
    let (_, status) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id(queue_id)
        .send_on(daemon.connect().await)
        .await;
    assert_eq!(status, Status::Continue, "{queue_id}:\n{}", daemon.log());
}

/// SIGHUP, then [`AFTER`] messages once the reload is done; stops the daemon and returns
/// its log.
async fn reload_and_send(mut daemon: Daemon) -> (Daemon, String) {
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("reloaded");
    for n in 0..AFTER {
        send(&daemon, &format!("4HAfter{n:02}")).await;
    }
    assert!(daemon.stop().success(), "{}", daemon.log());
    let log = daemon.log();
    (daemon, log)
}

/// How many of the messages sent after the reload the events file at `path` holds.
fn after_in_jsonl(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    json_lines(&text)
        .iter()
        .filter(|e| e["queue_id"].as_str().unwrap().starts_with("4HAfter"))
        .count()
}

fn after_in_ledger(path: &Path) -> usize {
    queue_ids(path)
        .iter()
        .filter(|id| id.starts_with("4HAfter"))
        .count()
}

/// A reload that cannot open the ledger again (made read-only, its directory removed, the
/// file overwritten, moved aside with another file in its place) keeps every sink running:
/// the events file takes every message after it, and the ledger's file too where it can
/// still take them (the moved file included); the log names the ledger and why.
#[tokio::test]
async fn a_ledger_that_cannot_be_reopened_keeps_every_sink() {
    let as_root = can_run_as_root("the read-only ledger needs a daemon that is not root");
    for fault in [
        "read-only",
        "directory removed",
        "overwritten",
        "moved aside, another file in its place",
    ] {
        let read_only = fault == "read-only";
        if read_only && !as_root {
            continue;
        }
        let daemon = two_sinks(read_only).await;
        let db = daemon.dir.path().join("db");
        let ledger = db.join("ledger.sqlite");
        match fault {
            "read-only" => {
                std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o444)).unwrap()
            }
            "directory removed" => std::fs::remove_dir_all(&db).unwrap(),
            "moved aside, another file in its place" => {
                std::fs::rename(&ledger, db.join("moved.sqlite")).unwrap();
                std::fs::write(&ledger, "this is no ledger at all").unwrap();
            }
            _ => {
                use std::os::unix::fs::FileExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&ledger)
                    .unwrap()
                    .write_all_at(b"this is no ledger at all", 0)
                    .unwrap();
            }
        }
        let (daemon, log) = reload_and_send(daemon).await;
        let why = match fault {
            "read-only" => "read-only",
            "directory removed" => "No such file or directory",
            _ => "no SQLite database",
        };
        let moved = daemon.dir.path().join("db/moved.sqlite");
        assert!(
            log.contains("events.ledger.path") && log.contains(why),
            "{fault}: the log does not name the ledger and why:\n{log}"
        );
        let events = daemon.dir.path().join("logs/events.jsonl");
        assert_eq!(after_in_jsonl(&events), AFTER, "{fault}:\n{log}");
        if read_only {
            std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(after_in_ledger(&ledger), AFTER, "{fault}:\n{log}");
        }
        // The connection closed to open the path, and opened the moved file again.
        if moved.exists() {
            assert_eq!(after_in_ledger(&moved), AFTER, "{fault}:\n{log}");
        }
    }
}

/// A reload whose events file is in a directory the daemon may not write (the old one moved
/// away meanwhile): the events file keeps its open file (every message goes on into the moved
/// file), the ledger takes its new path and every message; the log names the events file.
#[tokio::test]
async fn an_events_file_that_cannot_be_reopened_keeps_every_sink() {
    if !can_run_as_root("the daemon runs as nobody, the events file's directory is root's") {
        return;
    }
    let daemon = two_sinks(true).await;
    let dir = daemon.dir.path();
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::rename(dir.join("logs"), dir.join("logs.old")).unwrap();
    std::fs::write(
        &daemon.config_path,
        case_config("reload/jsonl_unwritable.toml", dir),
    )
    .unwrap();
    let (daemon, log) = reload_and_send(daemon).await;
    let dir = daemon.dir.path();
    assert!(
        log.contains("events.jsonl.path") && log.contains("Permission denied"),
        "the log does not name the events file and why:\n{log}"
    );
    assert_eq!(after_in_ledger(&dir.join("db/new.sqlite")), AFTER, "{log}");
    assert_eq!(
        after_in_jsonl(&dir.join("logs.old/events.jsonl")),
        AFTER,
        "{log}"
    );
}
