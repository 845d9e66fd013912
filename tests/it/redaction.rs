//! A PostgreSQL password, in whatever form libpq takes it (the URL's user information or its
//! `password=` parameter, percent-encoded or not; the keyword/value form, quoted, with escapes,
//! with spaces around `=`), never appears in `check-config`'s summary, the daemon's log or a
//! `ledger` command's error, while the rest of the connection string stays readable.

use crate::common::*;
use std::{path::Path, process::Command};

const URL: &str = "PRIVACY_MILTER_EVENTS__POSTGRES__URL";

/// Each form holds the password `Sesame Ajar/x` (or a part of it) in some spelling; the
/// strings after it are what must stay readable.
const FORMS: &[(&str, &[&str])] = &[
    (
        "postgresql://pm@127.0.0.1:1/privacy?password=SesameAjar&sslmode=disable",
        &["postgresql://pm@127.0.0.1:1/privacy?", "sslmode=disable"],
    ),
    (
        "postgresql://pm:Sesame%20Ajar%2Fx@127.0.0.1:1/privacy?connect_timeout=2",
        &["postgresql://pm:", "@127.0.0.1:1/privacy?connect_timeout=2"],
    ),
    (
        "postgres://pm@127.0.0.1:1/privacy?application_name=pm&pass%77ord=Sesame%41jar",
        &["postgres://pm@127.0.0.1:1/privacy?application_name=pm&"],
    ),
    (
        "host=127.0.0.1 port=1 user=pm password='Sesame Ajar' dbname=privacy",
        &["host=127.0.0.1 port=1 user=pm ", " dbname=privacy"],
    ),
    (
        r"host=127.0.0.1 port=1 password = 'Sesame\' Ajar' dbname=privacy",
        &["host=127.0.0.1 port=1 ", " dbname=privacy"],
    ),
    (
        r"host=127.0.0.1 port=1 password=Sesame\ Ajar dbname=privacy user=pm",
        &["host=127.0.0.1 port=1 ", " dbname=privacy user=pm"],
    ),
];

/// No part of the password, in any spelling. The test's temporary directory is taken out of
/// the text first: its random name may hold `jar` by chance.
fn assert_no_password(text: &str, url: &str, dir: &Path) {
    let text = text.replace(dir.to_str().unwrap(), "TMPDIR");
    for part in ["Sesame", "Ajar", "jar", "%41", "%20", "%2F"] {
        assert!(!text.contains(part), "{part:?} of {url:?} is in:\n{text}");
    }
}

#[test]
fn check_config_shows_the_url_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("privacy-milter.toml");
    std::fs::write(
        &config,
        case_config("redaction/privacy-milter.toml", dir.path()),
    )
    .unwrap();
    for (url, readable) in FORMS {
        let out = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .env(URL, url)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{url}: {text}");
        assert_no_password(&text, url, dir.path());
        assert!(text.contains("***"), "{url}: {text}");
        for part in *readable {
            assert!(
                text.contains(part),
                "{part:?} of {url:?} is not in:\n{text}"
            );
        }
    }
}

/// The daemon's warning when the database cannot take events, and a `ledger` command's
/// error, name the database without its password.
#[tokio::test]
async fn daemon_warnings_and_ledger_errors_hold_no_password() {
    for (url, readable) in &FORMS[..4] {
        let mut daemon = Daemon::start_with(
            "redaction/privacy-milter.toml",
            tempfile::tempdir().unwrap(),
            |binary| {
                let mut command = Command::new(binary);
                command.env(URL, url);
                command
            },
        );
        Mail::from_ip("198.51.100.9")
            .rcpt("x@remote.example")
            .queue_id("4Spooled")
            .send_on(daemon.connect().await)
            .await;
        daemon.wait_log("cannot take events");
        assert!(daemon.stop().success());
        let log = daemon.log();
        let dir = daemon.config_path.parent().unwrap().to_path_buf();
        assert_no_password(&log, url, &dir);
        assert!(log.contains(readable[0]), "{url}: {log}");

        let out = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
            .arg("--config")
            .arg(&daemon.config_path)
            .args(["ledger", "stats"])
            .env(URL, url)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: the ledger answered");
        assert_no_password(&err, url, &dir);
        assert!(err.contains("***"), "{url}: {err}");
    }
}

/// A connection string the parser refuses: the error says why, quoting no part of it that
/// could be the password.
#[test]
fn a_refused_url_is_explained_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("privacy-milter.toml");
    std::fs::write(
        &config,
        case_config("redaction/privacy-milter.toml", dir.path()),
    )
    .unwrap();
    for (url, reason) in [
        ("host=db password SesameAjar", "expected `=`"),
        ("host=db password='Sesame Ajar", "unterminated quoted"),
        (
            "host=db sslmod=require password=SesameAjar",
            "unknown option `sslmod`",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .env(URL, url)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {err}");
        assert!(
            err.contains("key events.postgres.url: is not a PostgreSQL connection URL")
                && err.contains(reason),
            "{url}: {err}"
        );
        assert_no_password(&err, url, dir.path());
    }
}
