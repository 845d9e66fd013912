//! The SQLite ledger: events land in it through the real protocol, and the `ledger`
//! commands of the real binary answer for them: query, erase, export, stats, purge.

use crate::common::*;
use std::process::Command;

#[tokio::test]
async fn query_erase_export_stats() {
    let milter = Milter::start("ledger/privacy-milter.toml").await;
    send_three(&milter).await;
    commands_answer_for_the_three(&milter);
}

/// What the `ledger` commands of the real binary answer after [`send_three`], the same on
/// every back end (what the ledgers themselves answer is the contract's, `ledger_contract`):
/// stats per class, the queries, an export as the events were written, a range, an erasure.
pub(crate) fn commands_answer_for_the_three(milter: &Milter) {
    let (ok, out, err) = ledger_cmd(milter, &["stats"]);
    assert!(ok, "{err}");
    assert!(out.contains("events: 3"), "{out}");
    assert!(
        out.contains("class inbound")
            && out.contains("class relay")
            && out.contains("class internal"),
        "{out}"
    );

    assert_queries_find_the_three(milter);
    let (ok, out, err) = ledger_cmd(milter, &["export"]);
    assert!(ok, "{err}");
    assert_eq!(
        json_lines(&out),
        milter.events(),
        "export gives back the events as written"
    );
    let (ok, out, _) = ledger_cmd(
        milter,
        &["export", "--since", "2000-01-01", "--until", "2000-01-02"],
    );
    assert!(ok);
    assert_eq!(out, "");

    let (ok, out, _) = ledger_cmd(milter, &["erase", "--address", "eve@remote.example"]);
    assert!(ok);
    assert!(out.starts_with("erased 2 events\n"), "{out}");
    let (_, out, _) = ledger_cmd(milter, &["export"]);
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("4Internal"));
    let (_, out, _) = ledger_cmd(milter, &["query", "--ip", "198.51.100.9"]);
    assert!(out.starts_with("0 events held"), "{out}");
}

/// Erased means gone from the files, not only from query results: no byte of the erased
/// subject's events is left in the ledger, its WAL or its free pages, while the daemon runs.
#[tokio::test]
async fn erased_events_leave_no_bytes_behind() {
    let milter = Milter::start("ledger/privacy-milter.toml").await;
    send_three(&milter).await;
    let before = all_bytes(milter.dir.path(), "ledger.sqlite");
    assert!(before.contains("eve@remote.example") && before.contains("198.51.100.9"));
    let (ok, out, err) = ledger_cmd(&milter, &["erase", "--address", "eve@remote.example"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("erased 2 events\n"), "{out}");
    let after = all_bytes(milter.dir.path(), "ledger.sqlite");
    for gone in ["eve@remote.example", "198.51.100.9", "4Inbound", "4Relay"] {
        assert!(!after.contains(gone), "the ledger files still hold {gone}");
    }
    assert!(after.contains("4Internal"), "the other event stays");
}

#[tokio::test]
async fn purge_removes_exactly_the_expired() {
    let milter = Milter::start("ledger/privacy-milter.toml").await;
    send_three(&milter).await;
    // The relay event is kept 1s; wait until that has passed.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (ok, out, err) = ledger_cmd(&milter, &["purge"]);
    assert!(ok, "{err}");
    assert_eq!(out, "purged 1 expired events\n");
    let (_, out, _) = ledger_cmd(&milter, &["export"]);
    assert!(
        !out.contains("4Relay") && out.contains("4Inbound") && out.contains("4Internal"),
        "{out}"
    );
    // Expired means gone from the files too, the write-ahead log included.
    let left = all_bytes(milter.dir.path(), "ledger.sqlite");
    assert!(
        !left.contains("4Relay"),
        "the ledger files still hold the expired event"
    );
    assert!(left.contains("4Inbound"));
}

#[tokio::test]
async fn daemon_purges_on_its_own() {
    let milter = Milter::start("ledger/auto_purge.toml").await;
    send_three(&milter).await;
    let purged = eventually(|| {
        let (_, out, _) = ledger_cmd(&milter, &["export"]);
        (!out.contains("4Relay")).then_some(out)
    })
    .await
    .expect("the expired relay event is purged");
    assert_eq!(
        purged.lines().count(),
        2,
        "only the expired event goes: {purged}"
    );
    // The daemon keeps the ledger open, and its write-ahead log with it: the purge must clear
    // the log's old copies of the event too (the jsonl log is the operator's to rotate).
    let left = eventually(|| {
        let left = all_bytes(milter.dir.path(), "ledger.sqlite");
        (!left.contains("4Relay")).then_some(left)
    })
    .await
    .expect("the ledger files no longer hold the expired event");
    assert!(left.contains("4Inbound"));
}

#[tokio::test]
async fn ledger_holds_no_raw_ip_or_address_when_pseudonymised() {
    let mut milter = Milter::start("ledger/pseudonymised.toml").await;
    send_three(&milter).await;
    let (_, out, _) = ledger_cmd(&milter, &["query", "--ip", "198.51.100.200"]);
    assert!(
        out.starts_with("2 events held for client IP 198.51.100.0/24"),
        "{out}"
    );
    milter.stop().await.unwrap();
    let text = all_bytes(milter.dir.path(), "ledger.sqlite");
    assert!(text.len() > 4096, "the ledger was written");
    for secret in [
        "203.0.113.7",
        "198.51.100.9",
        "alice@",
        "bob@",
        "eve@",
        "carol@",
    ] {
        assert!(!text.contains(secret), "the ledger holds {secret}");
    }
    assert!(text.contains("198.51.100.0/24"));
}

#[test]
fn missing_ledger_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .args([
            "--config",
            &format!("{}/conf/privacy-milter.toml", env!("CARGO_MANIFEST_DIR")),
        ])
        .args(["ledger", "stats"])
        .env(
            "PRIVACY_MILTER_EVENTS__LEDGER__PATH",
            "/nonexistent/ledger.sqlite",
        )
        .env("PRIVACY_MILTER_SOCKET_GROUP", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no ledger at /nonexistent/ledger.sqlite")
    );
}

#[tokio::test]
async fn a_new_ledger_is_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let milter = Milter::start("ledger/privacy-milter.toml").await;
    send_three(&milter).await;
    for name in ["ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"] {
        let mode = std::fs::metadata(milter.dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "{name} has mode {:o}", mode & 0o777);
    }
}

/// More expired events than one purge step deletes: the daemon goes on, step after step
/// (with the events of new messages written in between), until none is left.
#[tokio::test]
async fn daemon_purges_a_backlog_in_steps() {
    let daemon = Daemon::start("ledger/backlog.toml");
    let relayed = 1_100;
    assert!(relayed > 2 * privacy_milter::internals::PURGE_CHUNK);
    for n in 0..relayed {
        Mail::from_ip("198.51.100.9")
            .sender("eve@remote.example")
            .rcpt("carol@transit.example")
            .queue_id(&format!("4R{n:05}"))
            .send_on(daemon.connect().await)
            .await;
    }
    Mail::from_ip("198.51.100.9")
        .sender("eve@remote.example")
        .rcpt("bob@example.org")
        .queue_id("4Inbound")
        .send_on(daemon.connect().await)
        .await;
    // Relay events are kept 1s. The purge timer (1h) restarts on reload, and its first tick
    // purges at once: one purge, which must take the whole backlog.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_log(&format!(
        "purged {relayed} expired events from the ledger sink"
    ));
    let out = daemon.ledger(&["export"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("4Inbound"), "{out}");
}

/// Root running a ledger command on the daemon's ledger is sent to the daemon's user, and
/// leaves no file of its own behind. (Root only: the ledger is handed to `nobody`.)
#[tokio::test]
async fn root_is_sent_to_the_ledgers_owner() {
    use std::os::unix::fs::{chown, MetadataExt};
    if !can_run_as_root("handing a file to nobody needs root") {
        return;
    }
    let mut daemon = Daemon::start("ledger/owned.toml");
    let mail = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("4Owned");
    mail.send_on(daemon.connect().await).await;
    assert!(daemon.stop().success());
    let dir = daemon.dir.path();
    let ledger = dir.join("ledger.sqlite");
    assert!(
        !dir.join("ledger.sqlite-wal").exists(),
        "the daemon removed its WAL"
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    chown(&ledger, Some(nobody.uid.as_raw()), None).unwrap();

    let (ok, _, err) = ledger_with(&daemon.config_path, &["stats"]);
    assert!(!ok, "root was let in");
    assert!(
        err.contains("ledger.sqlite belongs to nobody")
            && err.contains("runuser -u nobody -- ")
            && err.contains(" ledger stats"),
        "{err}"
    );
    for name in ["ledger.sqlite-wal", "ledger.sqlite-shm"] {
        assert!(!dir.join(name).exists(), "{name} created by root");
    }
    assert_eq!(
        std::fs::metadata(&ledger).unwrap().uid(),
        nobody.uid.as_raw()
    );

    // Root's own ledger stays root's to query.
    chown(&ledger, Some(0), None).unwrap();
    let (ok, out, err) = ledger_with(&daemon.config_path, &["stats"]);
    assert!(ok, "{err}");
    assert!(out.contains("events: 1"), "{out}");
}
