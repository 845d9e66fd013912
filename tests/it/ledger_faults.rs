//! The SQLite ledger under faults, with the real daemon: moved aside and reopened by SIGHUP,
//! deleted, truncated or overwritten while running, damaged at start, read-only on reload, and
//! the `ledger` commands beside an open reader. Each says what the MTA is told.

use crate::common::*;
use indymilter_test::Status;
use nix::sys::signal::Signal;
use rusqlite::Connection;
use std::{collections::HashMap, path::Path};

fn relay(n: usize) -> Mail {
    Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id(&format!("4F{n:04}"))
}

/// Queue ids of the events in the ledger at `path`, through a connection of our own.
pub(crate) fn queue_ids(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", path.display());
    let mut stmt = conn
        .prepare("SELECT json_extract(body, '$.queue_id') FROM events")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Moved aside while mail flows, then SIGHUP: the moved file keeps what went to it (intact),
/// the new one what came after; every accepted message has exactly one event.
#[tokio::test]
async fn a_ledger_moved_aside_and_reopened_keeps_every_event() {
    let daemon = Daemon::start("ledger_faults/privacy-milter.toml");
    let ledger = daemon.dir.path().join("ledger.sqlite");
    let moved = daemon.dir.path().join("moved.sqlite");
    let mut accepted = Vec::new();
    for n in 0..300 {
        if n == 100 {
            std::fs::rename(&ledger, &moved).unwrap();
        }
        if n == 150 {
            daemon.signal(Signal::SIGHUP);
        }
        let (_, status) = relay(n).send_on(daemon.connect().await).await;
        assert_eq!(status, Status::Continue, "message {n}:\n{}", daemon.log());
        accepted.push(format!("4F{n:04}"));
    }
    daemon.wait_log("configuration reloaded");
    let mut daemon = daemon;
    assert!(daemon.stop().success(), "{}", daemon.log());
    assert!(
        daemon.log().contains("the file was moved away"),
        "{}",
        daemon.log()
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    let (old, new) = (queue_ids(&moved), queue_ids(&ledger));
    assert!(
        old.len() >= 100 && !new.is_empty(),
        "{} / {}",
        old.len(),
        new.len()
    );
    for id in old.into_iter().chain(new) {
        *counts.entry(id).or_default() += 1;
    }
    for id in &accepted {
        assert_eq!(counts.get(id), Some(&1), "{id}: {counts:?}");
    }
    assert_eq!(counts.len(), accepted.len());
}

/// Deleted, truncated or overwritten under the daemon: the next message is told to try again
/// later (`events.on_error = "tempfail"`), the log says what happened, and nothing goes into a
/// file nobody will read.
#[tokio::test]
async fn a_ledger_deleted_truncated_or_overwritten_is_noticed() {
    for (what, damage) in [("deleted", 0), ("truncated", 1), ("overwritten", 2)] {
        let daemon = Daemon::start("ledger_faults/privacy-milter.toml");
        let ledger = daemon.dir.path().join("ledger.sqlite");
        let (_, status) = relay(0).send_on(daemon.connect().await).await;
        assert_eq!(status, Status::Continue);
        match damage {
            0 => std::fs::remove_file(&ledger).unwrap(),
            1 => std::fs::OpenOptions::new()
                .write(true)
                .open(&ledger)
                .unwrap()
                .set_len(0)
                .unwrap(),
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
        let (_, status) = relay(1).send_on(daemon.connect().await).await;
        assert!(
            matches!(status, Status::Tempfail { .. }),
            "{what}: {status:?}\n{}",
            daemon.log()
        );
        let log = daemon.log();
        assert!(
            log.contains(&format!("the file was {what}")),
            "{what}:\n{log}"
        );
        assert!(
            log.contains("event not recorded, the MTA is told to try again later"),
            "{log}"
        );
    }
}

/// A damaged ledger at start: the daemon refuses to start, and says what to do.
#[tokio::test]
async fn a_damaged_ledger_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    {
        let conn = Connection::open(&ledger).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 1024; CREATE TABLE filler (x); \
             INSERT INTO filler VALUES (randomblob(20000));",
        )
        .unwrap();
    }
    // A page in the middle goes bad: the file still opens, SQLite's check fails.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&ledger)
            .unwrap();
        file.write_all_at(&[0xff; 1024], 2048).unwrap();
    }
    let config = dir.path().join("privacy-milter.toml");
    std::fs::write(
        &config,
        case_config("ledger_faults/privacy-milter.toml", dir.path()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("ledger.sqlite") && (err.contains("damaged") || err.contains("malformed")),
        "{err}"
    );
    assert!(err.contains("move it aside"), "{err}");
}

/// A reload whose ledger this user can only read (SQLite opens such a file read-only without
/// a word) keeps the running ledger, and says why.
#[tokio::test]
async fn a_read_only_ledger_on_reload_keeps_the_running_one() {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    if !can_run_as_root("the daemon runs as nobody, the other ledger belongs to root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let daemon = Daemon::start_with("ledger_faults/privacy-milter.toml", dir, |binary| {
        let mut command = std::process::Command::new(binary);
        command.uid(65534).gid(65534);
        command
    });
    let (_, status) = relay(1).send_on(daemon.connect().await).await;
    assert_eq!(status, Status::Continue, "{}", daemon.log());
    // A ledger of the current schema, in WAL mode, that only root may write.
    let ro = daemon.dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o777)).unwrap();
    let other = ro.join("ledger.sqlite");
    Connection::open(daemon.dir.path().join("ledger.sqlite"))
        .unwrap()
        .execute("VACUUM INTO ?1", [other.to_str().unwrap()])
        .unwrap();
    Connection::open(&other)
        .unwrap()
        .pragma_update(None, "journal_mode", "WAL")
        .unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::write(
        &daemon.config_path,
        case_config("ledger_faults/read_only.toml", daemon.dir.path()),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("configuration reloaded but for sinks that could not be opened");
    assert!(
        daemon.log().contains("the ledger sink runs on as it was")
            && daemon.log().contains("read-only"),
        "{}",
        daemon.log()
    );
    let (_, status) = relay(7).send_on(daemon.connect().await).await;
    assert_eq!(status, Status::Continue, "{}", daemon.log());
    let ids = queue_ids(&daemon.dir.path().join("ledger.sqlite"));
    assert!(ids.contains(&"4F0007".to_string()), "{ids:?}");
}

/// `ledger purge` beside a reader that holds the write-ahead log (a backup, an export, a
/// `sqlite3` shell): it finishes and exits 0, and mail meanwhile keeps every event.
#[tokio::test]
async fn purge_beside_a_reader_costs_no_event() {
    let daemon = Daemon::start("ledger_faults/privacy-milter.toml");
    let ledger = daemon.dir.path().join("ledger.sqlite");
    for n in 0..50 {
        relay(n).send_on(daemon.connect().await).await;
    }
    // Relay events are kept 1 s.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let reader = Connection::open(&ledger).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let held: i64 = reader
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert!(held >= 50);
    let config = daemon.config_path.clone();
    let purge = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
            .arg("--config")
            .arg(&config)
            .args(["ledger", "purge"])
            .output()
            .unwrap()
    });
    let mut statuses = Vec::new();
    for n in 50..70 {
        statuses.push(relay(n).send_on(daemon.connect().await).await.1);
    }
    let out = purge.join().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("purged"), "{said}");
    reader.execute_batch("COMMIT").unwrap();
    assert!(
        statuses.iter().all(|s| *s == Status::Continue),
        "{statuses:?}"
    );
    // A commit that failed would have been tempfailed and logged.
    assert!(
        !daemon.log().contains("event not recorded"),
        "{}",
        daemon.log()
    );
    // Nothing to delete, a reader open: exit 0.
    let reader = Connection::open(&ledger).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM events;")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(&daemon.config_path)
        .args(["ledger", "purge"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the IPs and addresses of the messages whose events the purge tests expire have in
/// common; no other message holds it (with `ip` and `address` = "full", as stored).
const PURGED_IP: &str = "198.51.100.";
const PURGED_SENDER: &str = "@purged.example";

/// A local part that sorts anywhere: the events' subjects spread over the whole index, among
/// the others', as real addresses do.
fn scattered(n: usize) -> String {
    format!("{:08x}", (n as u32).wrapping_mul(2_654_435_761))
}

/// `n` relay messages (kept 1 s) from [`PURGED_IP`] and [`PURGED_SENDER`].
async fn send_to_be_purged(daemon: &Daemon, n: usize) {
    for i in 0..n {
        let (_, status) = Mail::from_ip(&format!("{PURGED_IP}{}", 1 + i % 250))
            .sender(&format!("{}{PURGED_SENDER}", scattered(i + 1_000_000)))
            .rcpt("x@remote.example")
            .queue_id(&format!("4P{i:04}"))
            .send_on(daemon.connect().await)
            .await;
        assert_eq!(status, Status::Continue, "{}", daemon.log());
    }
}

/// Mail through the daemon until the flag is set, from other senders and IPs (inbound:
/// kept 90 days); returns how many messages went through.
fn live_traffic(
    daemon: &Daemon,
) -> (
    tokio::task::JoinHandle<usize>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::{atomic::Ordering, Arc};
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let socket = daemon.socket();
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) {
            let conn = indymilter_test::TestConnection::configure()
                .open_unix(&socket)
                .await
                .expect("daemon accepts");
            let (_, status) = Mail::from_ip(&format!("203.0.113.{}", 1 + n % 200))
                .sender(&format!("{}@remote.example", scattered(n)))
                .rcpt("bob@example.org")
                .queue_id(&format!("4L{n:05}"))
                .send_on(conn)
                .await;
            assert_eq!(status, Status::Continue);
            n += 1;
        }
        n
    });
    (task, stop)
}

/// Which of the purged events' values the ledger's files (`ledger.sqlite`, `-wal`, `-shm`)
/// still hold, by file.
fn purged_bytes_left(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("ledger.sqlite{suffix}");
        let bytes = std::fs::read(dir.join(&name)).unwrap_or_default();
        for value in [PURGED_IP, PURGED_SENDER] {
            let found = bytes
                .windows(value.len())
                .filter(|w| *w == value.as_bytes())
                .count();
            if found > 0 {
                left.push(format!("{name}: {found} copies of {value}"));
            }
        }
    }
    left
}

/// `ledger purge` while mail flows: once it says it is done, none of the purged events'
/// bytes is left in the ledger's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_beside_live_traffic_leaves_no_bytes() {
    let daemon = Daemon::start("ledger_faults/privacy-milter.toml");
    let (traffic, stop) = live_traffic(&daemon);
    send_to_be_purged(&daemon, 200).await;
    // Expired, and more mail meanwhile (its subjects among theirs).
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let config = daemon.config_path.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || ledger_with(&config, &["purge"]))
        .await
        .unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("purged 200 expired events"), "{out}");
    let left = purged_bytes_left(daemon.dir.path());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = traffic.await.unwrap();
    assert!(sent > 10, "only {sent} messages went through meanwhile");
    assert!(left.is_empty(), "after `{}`: {left:?}", out.trim());
}

/// The daemon's own purge while mail flows: once it says it purged them, none of the purged
/// events' bytes is left in the ledger's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_purge_beside_live_traffic_leaves_no_bytes() {
    let daemon = Daemon::start("ledger_faults/timed_purge.toml");
    let (traffic, stop) = live_traffic(&daemon);
    send_to_be_purged(&daemon, 200).await;
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let purged = |log: &str| -> usize {
        log.lines()
            .filter_map(|l| l.split("purged ").nth(1))
            .filter_map(|rest| rest.strip_suffix(" expired events from the ledger sink"))
            .filter_map(|n| n.parse::<usize>().ok())
            .sum()
    };
    let done = eventually(|| (purged(&daemon.log()) >= 200).then_some(())).await;
    assert!(done.is_some(), "{}", daemon.log());
    let left = purged_bytes_left(daemon.dir.path());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = traffic.await.unwrap();
    assert!(sent > 10, "only {sent} messages went through meanwhile");
    assert!(left.is_empty(), "{left:?}\n{}", daemon.log());
}

/// The subject the erase tests erase: the sender and IP of its messages, which no other
/// message holds.
const ERASED_IP: &str = "198.51.100.66";
const ERASED_SENDER: &str = "erase-me@gone.example";

/// The daemon with 30 of the subject's messages in its ledger (and 30 others), and a reader
/// that holds the write-ahead log (a backup, an export, a `sqlite3` shell).
async fn with_subject_and_reader() -> (Daemon, Connection) {
    let daemon = Daemon::start("ledger_faults/privacy-milter.toml");
    for n in 0..60 {
        let mail = if n % 2 == 0 {
            Mail::from_ip(ERASED_IP).sender(ERASED_SENDER)
        } else {
            Mail::from_ip("203.0.113.5").sender(&format!("kept{n}@remote.example"))
        };
        let (_, status) = mail
            .rcpt("bob@example.org")
            .queue_id(&format!("4X{n:04}"))
            .send_on(daemon.connect().await)
            .await;
        assert_eq!(status, Status::Continue, "{}", daemon.log());
    }
    let reader = Connection::open(daemon.dir.path().join("ledger.sqlite")).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM events;")
        .unwrap();
    (daemon, reader)
}

fn erase_subject(daemon: &Daemon) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"));
    command.arg("--config").arg(&daemon.config_path).args([
        "ledger",
        "erase",
        "--address",
        ERASED_SENDER,
    ]);
    command
}

/// After the reader is gone, `erase` again: it exits 0, says the write-ahead log is clean,
/// and no byte of the subject is left in the ledger's files (the daemon still running).
fn rerun_finishes_the_erasure(daemon: &Daemon) {
    let out = erase_subject(daemon).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.starts_with("erased 0 events\n"), "{said}");
    assert!(said.contains("write-ahead log is truncated"), "{said}");
    let left = all_bytes(daemon.dir.path(), "ledger.sqlite");
    for gone in [ERASED_IP, ERASED_SENDER] {
        assert!(!left.contains(gone), "the ledger's files still hold {gone}");
    }
    assert!(left.contains("kept1@remote.example"), "the others stay");
}

/// `erase` beside a reader exits 1, saying the write-ahead log still holds copies; run again
/// once the reader is gone, it finishes the job though there is nothing left to erase.
#[tokio::test]
async fn erase_again_after_a_reader_finishes_the_job() {
    let (daemon, reader) = with_subject_and_reader().await;
    let out = erase_subject(&daemon).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("erased 30 events") && err.contains("write-ahead log"),
        "{err}"
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    rerun_finishes_the_erasure(&daemon);
}

/// An `erase` killed (SIGKILL) while it waits for a reader, then run again once the reader is
/// gone: the same.
#[tokio::test]
async fn erase_again_after_a_killed_erase_finishes_the_job() {
    let (daemon, reader) = with_subject_and_reader().await;
    let mut erase = erase_subject(&daemon)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its deletions are committed at once; then it waits for the reader.
    let erased = eventually(|| {
        let conn = Connection::open(daemon.dir.path().join("ledger.sqlite")).ok()?;
        let held: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .ok()?;
        (held == 30).then_some(())
    })
    .await;
    assert!(erased.is_some(), "the erasure did not begin");
    erase.kill().unwrap();
    erase.wait().unwrap();
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    rerun_finishes_the_erasure(&daemon);
}
