//! The ledger's file system fills up while mail flows (a real one: a small tmpfs). With
//! `events.on_error = "tempfail"` every message whose event cannot be committed is tempfailed,
//! so the client tries again later; every message answered with continue has its event; once
//! there is room again the ledger goes on without a restart, and its file is sound.
//!
//! Mounting needs root: without it the test skips, unless `PRIVACY_MILTER_E2E=require`.

use crate::common::*;
use indymilter_test::Status;
use std::{io::Write, path::Path, process::Command};

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// Fills the file system of `dir` to the last byte; the file that does it.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    path
}

async fn send(daemon: &Daemon, n: usize) -> Status {
    let (_, status) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id(&format!("4Full{n:04}"))
        .send_on(daemon.connect().await)
        .await;
    status
}

#[tokio::test]
async fn a_full_disk_tempfails_and_loses_nothing() {
    if !can_run_as_root("mounting a tmpfs needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t tmpfs");
    let _unmount = Mounted(&small);

    let mut daemon = Daemon::start_in("disk_full/privacy-milter.toml", dir);
    let mut accepted = 0;
    let mut n = 0;
    assert_eq!(send(&daemon, n).await, Status::Continue, "{}", daemon.log());
    accepted += 1;

    // Full: the next commits that need a block fail. (One may still fit in room SQLite had
    // already allocated, as when the WAL starts over; that one is written and accepted.)
    let filler = fill(&small);
    let mut tempfailed = 0;
    while tempfailed < 3 {
        n += 1;
        assert!(
            n < 200,
            "no message was tempfailed on a full disk:\n{}",
            daemon.log()
        );
        match send(&daemon, n).await {
            Status::Continue => accepted += 1,
            Status::Tempfail { .. } => tempfailed += 1,
            other => panic!("message {n}: {other:?}"),
        }
    }
    let log = daemon.log();
    assert!(
        log.contains("cannot write events to the ledger sink")
            && log.contains("ledger.sqlite: database or disk is full"),
        "the log says what failed, and where:\n{log}"
    );
    assert!(
        log.contains("event not recorded, the MTA is told to try again later"),
        "the log says what the MTA was told:\n{log}"
    );
    assert!(
        log.contains("event not written") && log.contains(&format!("4Full{n:04}")),
        "the lost batches are logged in full:\n{log}"
    );

    // Room again: the same daemon records the next messages.
    std::fs::remove_file(filler).unwrap();
    for _ in 0..5 {
        n += 1;
        assert_eq!(send(&daemon, n).await, Status::Continue, "{}", daemon.log());
        accepted += 1;
    }
    assert!(daemon.stop().success(), "{}", daemon.log());

    // Every message answered with continue has exactly one event, no tempfailed one has.
    let conn = rusqlite::Connection::open(small.join("ledger.sqlite")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let held: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(held as usize, accepted, "events against accepted messages");
    let queue_ids: i64 = conn
        .query_row(
            "SELECT COUNT(DISTINCT json_extract(body, '$.queue_id')) FROM events",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(queue_ids, held, "one event per message");
}
