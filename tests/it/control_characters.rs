//! Values from the wire (a sender's domain, a queue id, the MTA's daemon name) with a line
//! break, ESC or BEL in them neither forge a log line nor reach a terminal raw: the real
//! daemon's log has one line per line it wrote, each starting with its time stamp, and no
//! control byte but the line breaks between them. The values show escaped (`\n`, `\x1b`).

use crate::common::*;

/// What an MTA (or `sendmail -f` through Postfix) may hand over: a line break followed by
/// what looks like a log line of its own, a terminal escape that clears the screen, a bell.
const FORGED: &str = "\nFORGED  INFO privacy_milter: all clear\x1b[2J\x07\r";

async fn send_hostile(daemon: &Daemon) {
    let domain = format!("example.net{FORGED}");
    Mail::from_ip("198.51.100.9")
        .sender(&format!("alice{FORGED}@{domain}"))
        .rcpt("x@remote.example")
        .connect_macro("{daemon_name}", &format!("smtpd{FORGED}"))
        .queue_id(&format!("4Q{FORGED}"))
        .send_on(daemon.connect().await)
        .await;
    // A message given up after RCPT: its line and its event too.
    let mut conn = daemon.connect().await;
    let m = Mail::from_ip("198.51.100.9")
        .sender(&format!("bob@{domain}"))
        .rcpt("x@remote.example")
        .queue_id(&format!("4R{FORGED}"));
    m.connect(&mut conn).await;
    conn.macros(
        indymilter_test::MacroStage::Rcpt,
        [("i", format!("4R{FORGED}").as_str())],
    )
    .await
    .unwrap();
    m.envelope(&mut conn).await;
    conn.abort().await.unwrap();
    conn.close().await.unwrap();
}

fn assert_clean(log: &str) {
    assert!(log.lines().count() >= 4, "{log}");
    for line in log.lines() {
        let stamped =
            line.len() > 5 && line[..4].bytes().all(|b| b.is_ascii_digit()) && &line[4..5] == "-";
        assert!(stamped, "a line without a time stamp: {line:?} in\n{log}");
    }
    for (i, b) in log.bytes().enumerate() {
        assert!(
            b == b'\n' || !(b.is_ascii_control()),
            "control byte {b:#04x} at {i} in\n{log:?}"
        );
    }
}

#[tokio::test]
async fn wire_values_are_escaped_in_log_lines() {
    let mut daemon = Daemon::start("control_characters/privacy-milter.toml");
    send_hostile(&daemon).await;
    daemon.wait_log("message not completed");
    assert!(daemon.stop().success());
    let log = daemon.log();
    assert_clean(&log);
    // The values are there, escaped.
    assert!(log.contains(r"4Q\nFORGED"), "{log}");
    assert!(log.contains(r"example.net\nforged"), "{log}");
    assert!(log.contains(r"smtpd\nFORGED"), "{log}");
    assert!(log.contains(r"\x1b[2J\x07\r"), "{log}");
    // The events file keeps them as JSON does.
    let events = json_lines(&daemon.events_text());
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .any(|e| e["queue_id"] == format!("4Q{FORGED}")));
}

#[tokio::test]
async fn full_addresses_are_escaped_in_log_lines() {
    let mut daemon = Daemon::start("control_characters/full.toml");
    send_hostile(&daemon).await;
    daemon.wait_log("message not completed");
    assert!(daemon.stop().success());
    let log = daemon.log();
    assert_clean(&log);
    assert!(log.contains(r"alice\nFORGED"), "{log}");
}

/// Defence in depth at the log writers: an error that quotes a value without escaping it
/// (here a path from the configuration, in `check-config`'s error and in the daemon's reload
/// error) reaches stderr with its control characters escaped, its lines kept.
#[tokio::test]
async fn errors_quoting_a_path_are_escaped_at_the_writer() {
    let daemon = Daemon::start("control_characters/privacy-milter.toml");
    let text = case_config("control_characters/privacy-milter.toml", daemon.dir.path()).replace(
        "local = [\"example.org\"]",
        "local = [\"example.org\"]\nlocal_file = \"/nonexistent/\\u001b[2J\\u0007x\"",
    );
    std::fs::write(&daemon.config_path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(&daemon.config_path)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(r"/nonexistent/\x1b[2J\x07x"), "{err:?}");
    assert!(
        !err.bytes().any(|b| b != b'\n' && b.is_ascii_control()),
        "{err:?}"
    );
    assert!(
        err.lines().count() >= 2,
        "the error keeps its lines: {err:?}"
    );

    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_log("configuration not reloaded");
    daemon.wait_log("nonexistent");
    let log = daemon.log();
    assert!(log.contains(r"/nonexistent/\x1b[2J\x07x"), "{log:?}");
    assert!(
        !log.bytes().any(|b| b != b'\n' && b.is_ascii_control()),
        "{log:?}"
    );
}
