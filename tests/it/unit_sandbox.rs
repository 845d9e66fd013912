//! The daemon under the shipped unit's system-call filter. systemd applies
//! `SystemCallFilter=` only when it is PID 1, which a CI container is not; a call the
//! filter forbids fails with EPERM there, deep in SQLite, the key ring or the notify
//! socket. `scripts/unit-sandbox` applies the same filter (python3-seccomp), and this test
//! runs every part of the daemon that makes system calls of its own underneath it.

use crate::common::*;
use indymilter_test::Status;
use nix::sys::signal::Signal;
use std::{path::Path, process::Command};

fn sandboxed(unit: &str) -> impl FnOnce(&str) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (wrapper, unit) = (root.join("scripts/unit-sandbox"), root.join(unit));
    move |binary| {
        let mut command = Command::new(wrapper);
        command.arg(unit).arg(binary);
        command
    }
}

/// Whether `scripts/unit-sandbox` can run here: it needs systemd-analyze and Debian's
/// python3-seccomp. Without them the test skips, unless `PRIVACY_MILTER_E2E=require` (as
/// `scripts/test` sets after installing them), which makes it fail.
fn sandbox_available() -> bool {
    let ready = Command::new("/usr/bin/python3")
        .args(["-c", "import seccomp"])
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    can_run(
        ready,
        "scripts/unit-sandbox needs systemd-analyze and python3-seccomp (scripts/setup-test-deps installs them)",
    )
}

/// A message from an external server to `rcpt`; the milter's answer at end of message.
async fn from_outside(daemon: &Daemon, rcpt: &str, queue_id: &str) -> Status {
    let (_, status) = Mail::from_ip("198.51.100.9")
        .sender("eve@remote.example")
        .rcpt(rcpt)
        .queue_id(queue_id)
        .send_on(daemon.connect().await)
        .await;
    status
}

#[tokio::test]
async fn daemon_runs_under_the_units_system_call_filter() {
    if !sandbox_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (notify_path, notify) = notify_socket(dir.path());
    let unit = "packaging/privacy-milter.service";
    let mut daemon = Daemon::start_with("unit_sandbox/privacy-milter.toml", dir, |binary| {
        let mut command = sandboxed(unit)(binary);
        command.env("NOTIFY_SOCKET", &notify_path);
        command
    });
    assert!(notified(&notify).starts_with("READY=1\n"));

    let (actions, status) = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .queue_id("4Outbound")
        .send_on(daemon.connect().await)
        .await;
    assert_eq!(status, Status::Continue);
    let edits = edits(&actions);
    assert!(
        edits
            .iter()
            .any(|e| e.starts_with("+X-Originating-IP: enc:")),
        "an encrypted token: {edits:?}"
    );
    assert_eq!(
        from_outside(&daemon, "carol@transit.example", "4Relay").await,
        Status::Continue
    );
    assert_eq!(
        from_outside(&daemon, "bob@example.org", "4Inbound").await,
        Status::Continue
    );
    // The relay event expires after a second; the next purge deletes it and truncates the WAL.
    daemon.wait_log("purged 1 expired events from the ledger sink");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("configuration reloaded");
    assert!(notified(&notify).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert!(notified(&notify).contains("configuration reloaded at"));
    assert_eq!(
        from_outside(&daemon, "bob@example.org", "4AfterReload").await,
        Status::Continue
    );

    let stopped = daemon.stop();
    assert!(notified(&notify).starts_with("STOPPING=1\n"));
    assert!(stopped.success(), "{stopped:?}\n{}", daemon.log());
    let log = daemon.log();
    for sign in ["not permitted", "EPERM", "os error 1)", "ERROR", "WARN"] {
        assert!(!log.contains(sign), "{sign} in the log:\n{log}");
    }

    // The timer's purge, under its own unit's filter.
    let purge =
        sandboxed("packaging/privacy-milter-purge.service")(env!("CARGO_BIN_EXE_privacy-milter"))
            .arg("--config")
            .arg(&daemon.config_path)
            .args(["ledger", "purge"])
            .output()
            .unwrap();
    assert!(
        purge.status.success(),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    let out = daemon.ledger(&["export"]);
    let held: Vec<&str> = ["4Outbound", "4Relay", "4Inbound", "4AfterReload"]
        .into_iter()
        .filter(|id| out.contains(id))
        .collect();
    assert_eq!(held, ["4Outbound", "4Inbound", "4AfterReload"], "{out}");
}
