//! Log destinations: RFC 5424 messages on a syslog socket, and systemd's journal native
//! protocol, each received here on a socket of the test's own.

use crate::common::*;
use std::{os::unix::net::UnixDatagram, time::Duration};

/// Receives messages until one contains every one of `until`.
fn receive_all(socket: &UnixDatagram, until: &[&str]) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !got
        .iter()
        .any(|m: &String| until.iter().all(|u| m.contains(u)))
    {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no more messages ({e}); got {got:#?}"));
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

#[tokio::test]
async fn syslog_rfc5424() {
    let dir = tempfile::tempdir().unwrap();
    let socket = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
    let mut daemon = Daemon::start_in("logging/syslog.toml", dir);
    let mail = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("4Syslog");
    mail.send_on(daemon.connect().await).await;
    let got = receive_all(&socket, &["privacy_milter::event", "4Syslog"]);
    // <22> is facility mail (2) and severity info (6); "1" is the RFC 5424 version.
    let line = got
        .iter()
        .find(|m| m.contains("4Syslog") && m.contains("message"))
        .unwrap();
    assert!(line.starts_with("<22>1 "), "{line}");
    assert!(line.contains(" privacy-milter "), "{line}");
    assert!(daemon.stop().success());
    assert_eq!(daemon.log(), "", "nothing went to stderr");
}

#[tokio::test]
async fn syslog_unreachable_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, case_config("logging/syslog.toml", dir.path())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log.syslog_socket") && err.contains("cannot reach"),
        "{err}"
    );
}

#[tokio::test]
async fn journald_native_protocol() {
    let path = std::path::Path::new("/run/systemd/journal/socket");
    if path.exists() {
        eprintln!("a journal runs here: not replacing its socket, skipping");
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let socket = UnixDatagram::bind(path).unwrap();
    struct Remove<'a>(&'a std::path::Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _cleanup = Remove(path);
    let mut daemon = Daemon::start("logging/journald.toml");
    let mail = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("4Journal");
    mail.send_on(daemon.connect().await).await;
    // Fields are written as NAME, newline, a 64-bit length, the value (journal native protocol).
    let got = receive_all(&socket, &["\nQUEUE_ID\n", "4Journal", "\nDIRECTION\n"]);
    let entry = got.last().unwrap();
    assert!(entry.contains("PRIORITY"), "{entry}");
    assert!(
        entry.contains("SYSLOG_IDENTIFIER\n") && entry.contains("privacy-milter"),
        "{entry}"
    );
    assert!(entry.contains("relay"), "{entry}");
    assert!(daemon.stop().success());
}

/// The daemon with its stderr in `stderr.log` and `JOURNAL_STREAM` set as systemd sets it, to
/// that file's device and inode, or (`matching = false`) to another stream's, as after a
/// shell's redirection. A mail, then a reload with a broken file, then a stop; the log.
async fn log_with_journal_stream(matching: bool) -> String {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut daemon = Daemon::start_with("logging/stderr.toml", dir, |binary| {
        let meta = std::fs::metadata(&log).unwrap();
        let ino = if matching { meta.ino() } else { meta.ino() + 1 };
        let mut command = std::process::Command::new(binary);
        command.env("JOURNAL_STREAM", format!("{}:{ino}", meta.dev()));
        command
    });
    let mail = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("4Stream");
    mail.send_on(daemon.connect().await).await;
    daemon.wait_log("4Stream");
    std::fs::write(&daemon.config_path, "socket = [").unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_log("configuration not reloaded");
    assert!(daemon.stop().success());
    daemon.log()
}

#[tokio::test]
async fn stderr_into_the_journal_gives_each_line_its_priority() {
    let log = log_with_journal_stream(true).await;
    let lines: Vec<&str> = log.lines().collect();
    for line in &lines {
        // The journal stamps lines itself: no time of our own after the priority.
        assert!(
            line.len() > 3 && line.starts_with('<') && &line[2..3] == ">",
            "no priority: {line:?} in\n{log}"
        );
        assert!(!line[3..].starts_with("20"), "a timestamp: {line:?}");
    }
    let line = |text: &str| {
        *lines
            .iter()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in\n{log}"))
    };
    assert!(line("listening on").starts_with("<6> INFO "), "{log}");
    assert!(line("4Stream").starts_with("<6>"), "{log}");
    // The reload error spans several lines, each an entry at priority err.
    let error_at = lines
        .iter()
        .position(|l| l.contains("configuration not reloaded"))
        .unwrap();
    assert!(lines[error_at].starts_with("<3>ERROR "), "{log}");
    assert!(lines.len() > error_at + 1, "{log}");
    assert!(lines[error_at + 1].starts_with("<3>"), "{log}");
    assert!(lines[error_at + 1].contains("privacy-milter.toml"), "{log}");
}

#[tokio::test]
async fn stderr_redirected_elsewhere_stays_plain() {
    let log = log_with_journal_stream(false).await;
    let listening = log.lines().find(|l| l.contains("listening on")).unwrap();
    assert!(listening.starts_with("20"), "a timestamp first: {log}");
    assert!(!log.contains("<6>") && !log.contains("<3>"), "{log}");
}

/// A command's error (here: a configuration that does not load) written to the journal's
/// stream: every line at priority err, so that `journalctl -p err` shows why a unit failed.
#[test]
fn command_errors_into_the_journal_are_at_priority_err() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(&config, "[networks]\ntrusted = [\"10.0.0.0/33\"]\n").unwrap();
    let run = |journal: bool| {
        let path = dir.path().join(format!("stderr-{journal}.log"));
        let stderr = std::fs::File::create(&path).unwrap();
        let meta = stderr.metadata().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"));
        command.arg("--config").arg(&config).arg("check-config");
        if journal {
            command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        let status = command.stderr(stderr).status().unwrap();
        assert_eq!(status.code(), Some(1));
        std::fs::read_to_string(path).unwrap()
    };
    let plain = run(false);
    assert!(
        plain.starts_with("privacy-milter: configuration error\n"),
        "{plain}"
    );
    assert!(plain.contains("networks.trusted[0]"), "{plain}");
    let journal = run(true);
    assert!(journal.lines().count() > 1, "{journal}");
    for line in journal.lines() {
        assert!(line.starts_with("<3>"), "{line:?} in\n{journal}");
    }
    let stripped: Vec<&str> = journal.lines().map(|l| &l[3..]).collect();
    let expected: Vec<&str> = plain.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(stripped, expected, "the same text, prefixed");
}
