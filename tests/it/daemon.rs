//! The real daemon: unix socket handling, SIGHUP reload, SIGTERM with open sessions.

use crate::common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

#[tokio::test]
async fn unix_socket_mode_and_removal() {
    let mut daemon = Daemon::start("daemon/privacy-milter.toml");
    let md = std::fs::metadata(daemon.socket()).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let (actions, _) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .send_on(daemon.connect().await)
        .await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    assert!(daemon.stop().success(), "{}", daemon.log());
    assert!(!daemon.socket().exists(), "socket file removed on exit");
    assert!(daemon.log().contains("stopped"));
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let first = Daemon::start("daemon/privacy-milter.toml");
    let socket = first.socket();
    // Kill without a chance to clean up: the socket file stays behind.
    let mut first = first;
    first.signal(Signal::SIGKILL);
    first.wait_exit();
    assert!(socket.exists());
    let config = first.config_path.clone();
    let log = std::fs::File::create(first.dir.path().join("second.log")).unwrap();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(&config)
        .stderr(log)
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let _ = second.kill();
    let _ = second.wait();
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(first.dir.path().join("second.log")).unwrap()
    );
}

#[tokio::test]
async fn sighup_reloads_and_broken_file_keeps_running_config() {
    let daemon = Daemon::start("daemon/privacy-milter.toml");
    let relay = || Mail::from_ip("198.51.100.9").rcpt("x@remote.example");
    std::fs::write(
        &daemon.config_path,
        case_config("daemon/changed.toml", daemon.dir.path()),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("configuration reloaded");
    let (actions, _) = relay().send_on(daemon.connect().await).await;
    assert_eq!(
        edits(&actions),
        ["+X-Relayed@0: relay; by=mx.test.example; k=KEY; mac=MAC"]
    );

    std::fs::write(
        &daemon.config_path,
        "[networks]\ntrusted = [\"10.0.0.0/33\"]\n",
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("configuration not reloaded");
    assert!(
        daemon.log().contains("networks.trusted[0]"),
        "{}",
        daemon.log()
    );
    let (actions, _) = relay().send_on(daemon.connect().await).await;
    assert_eq!(
        edits(&actions),
        ["+X-Relayed@0: relay; by=mx.test.example; k=KEY; mac=MAC"]
    );
}

/// Type=notify: readiness, reloads (each ending in READY=1, with a status line saying how it
/// went) and the stop, as systemd reads them from NOTIFY_SOCKET.
#[tokio::test]
async fn tells_systemd_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let (path, socket) = notify_socket(dir.path());
    let mut daemon = Daemon::start_with("daemon/privacy-milter.toml", dir, |binary| {
        let mut command = std::process::Command::new(binary);
        command.env("NOTIFY_SOCKET", &path);
        command
    });
    let listening = format!("listening on unix:{}", daemon.socket().display());
    assert_eq!(notified(&socket), format!("READY=1\nSTATUS={listening}"));

    daemon.signal(Signal::SIGHUP);
    let reloading = notified(&socket);
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|n| n > 0), "{reloading:?}");
    let ready = notified(&socket);
    assert!(
        ready.starts_with(&format!(
            "READY=1\nSTATUS={listening}; configuration reloaded at 20"
        )),
        "{ready:?}"
    );

    std::fs::write(&daemon.config_path, "socket = [").unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(notified(&socket).starts_with("RELOADING=1\n"));
    let ready = notified(&socket);
    assert!(
        ready.starts_with(&format!(
            "READY=1\nSTATUS={listening}; configuration not reloaded at 20"
        )) && ready.ends_with(&format!(
            ", the running one stays: {}: TOML parse error at line 1, column 11",
            daemon.config_path.display()
        )),
        "{ready:?}"
    );

    assert!(daemon.stop().success());
    assert_eq!(notified(&socket), "STOPPING=1\nSTATUS=stopping");
}

/// WatchdogSec=: systemd names the period and the process it watches (WATCHDOG_USEC,
/// WATCHDOG_PID); the daemon pings at half the period, and only then.
#[tokio::test]
async fn pings_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let (path, socket) = notify_socket(dir.path());
    let mut daemon = Daemon::start_with("daemon/privacy-milter.toml", dir, |binary| {
        // The shell's pid is the daemon's once it execs.
        let mut command = std::process::Command::new("sh");
        command
            .args(["-c", r#"WATCHDOG_PID=$$ exec "$0" "$@""#, binary])
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000");
        command
    });
    assert!(notified(&socket).starts_with("READY=1\n"));
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(notified(&socket), "WATCHDOG=1");
    }
    // 100 ms apart (the first at once): never sooner, whatever the load.
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(350), "{took:?}");
    assert!(daemon.stop().success());
}

#[tokio::test]
async fn sigterm_lets_open_sessions_finish() {
    let mut daemon = Daemon::start("daemon/privacy-milter.toml");
    let mut conn = daemon.connect().await;
    let mail = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("4Open");
    mail.connect(&mut conn).await;
    mail.envelope(&mut conn).await;

    daemon.signal(Signal::SIGTERM);
    daemon.wait_log("waiting up to 30s for 1 open sessions");
    // No new connections while stopping...
    assert!(std::os::unix::net::UnixStream::connect(daemon.socket()).is_err());
    // ...but the open one completes its message.
    let (actions, _) = mail.content(&mut conn).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    conn.close().await.unwrap();
    assert!(daemon.wait_exit().success(), "{}", daemon.log());
    assert!(daemon.events_text().contains("4Open"));
}

/// The socket is bound once: a reload that names another keeps the running one, and every
/// such reload says so (the running configuration keeps describing the real listener).
#[tokio::test]
async fn reload_keeps_the_socket_and_says_so_each_time() {
    let daemon = Daemon::start("daemon/privacy-milter.toml");
    std::fs::write(
        &daemon.config_path,
        case_config("daemon/other_socket.toml", daemon.dir.path()),
    )
    .unwrap();
    let warned = |log: &str| {
        log.matches("socket changed: this takes effect only after a restart")
            .count()
    };
    for reload in 1..=2 {
        daemon.signal(Signal::SIGHUP);
        for _ in 0..400 {
            if daemon.log().matches("configuration reloaded").count() >= reload {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let log = daemon.log();
        assert_eq!(warned(&log), reload, "reload {reload}:\n{log}");
        assert_eq!(
            log.matches("socket_mode changed: this takes effect only after a restart")
                .count(),
            reload,
            "{log}"
        );
    }
    assert!(!daemon.dir.path().join("other.sock").exists());
    let md = std::fs::metadata(daemon.socket()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let (actions, _) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .send_on(daemon.connect().await)
        .await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
}
