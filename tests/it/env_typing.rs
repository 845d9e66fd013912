//! Environment overrides are read as their key's type, not guessed from how the value looks:
//! a mode is a string of octal digits (`0660` was read as the integer 660 and refused), a
//! path, a group or a header name is a string even when it is all digits, integers and
//! booleans parse as such, and a list is a TOML array or comma-separated entries (a domain
//! starting with `true` or `false` broke the guess). Errors name the variable and the key.

use crate::common::*;
use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Output},
};

fn check(env: &[(&str, &str)]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("privacy-milter.toml");
    std::fs::write(
        &config,
        case_config("env_typing/privacy-milter.toml", dir.path()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn passes(env: &[(&str, &str)], says: &[&str]) {
    let (out, text) = check(env);
    assert!(out.status.success(), "{env:?}: {text}");
    for part in says {
        assert!(text.contains(part), "{env:?}: {part:?} is not in:\n{text}");
    }
}

fn refused(env: &[(&str, &str)], says: &[&str]) {
    let (out, text) = check(env);
    assert_eq!(out.status.code(), Some(1), "{env:?} was accepted: {text}");
    for part in says {
        assert!(text.contains(part), "{env:?}: {part:?} is not in:\n{text}");
    }
}

/// The real daemon, its socket mode (octal with a leading zero), a prefix length with a
/// leading zero (decimal), the sinks and the trusted networks (lists), all from the
/// environment; the socket and an event show each took effect.
#[tokio::test]
async fn the_daemon_takes_each_kind_from_the_environment() {
    let mut daemon = Daemon::start_with(
        "env_typing/privacy-milter.toml",
        tempfile::tempdir().unwrap(),
        |binary| {
            let mut command = Command::new(binary);
            command.envs([
                ("PRIVACY_MILTER_SOCKET_MODE", "0600"),
                ("PRIVACY_MILTER_PRIVACY__IPV4_PREFIX", "016"),
                ("PRIVACY_MILTER_EVENTS__SINKS", "jsonl, log"),
                (
                    "PRIVACY_MILTER_NETWORKS__TRUSTED",
                    r#"["127.0.0.0/8", "198.51.0.0/16"]"#,
                ),
                ("PRIVACY_MILTER_DRY_RUN", "true"),
                ("PRIVACY_MILTER_RULES__TRANSIT_TAG__HEADER", "1234"),
            ]);
            command
        },
    );
    let mode = std::fs::metadata(daemon.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("4Env")
        .send_on(daemon.connect().await)
        .await;
    assert!(daemon.stop().success(), "{}", daemon.log());
    let events = json_lines(&daemon.events_text());
    let event = event_for(&events, "4Env");
    assert_eq!(event["client"]["ip"], "198.51.0.0/16", "{event}");
    // A trusted client: ours, so outbound; a dry run lists the header it would add.
    assert_eq!(event["direction"], "outbound", "{event}");
    assert_eq!(event["dry_run"], true, "{event}");
    assert!(
        daemon.log().contains("privacy_milter::event"),
        "the log sink"
    );
}

#[test]
fn strings_stay_strings() {
    // A mode: octal digits, leading zero kept.
    passes(&[("PRIVACY_MILTER_SOCKET_MODE", "0660")], &[]);
    refused(
        &[("PRIVACY_MILTER_SOCKET_MODE", "0990")],
        &[
            "environment variable PRIVACY_MILTER_SOCKET_MODE: key socket_mode",
            "invalid mode \"0990\"",
        ],
    );
    // A path, a header name: all digits.
    passes(
        &[
            ("PRIVACY_MILTER_EVENTS__LEDGER__PATH", "0640"),
            ("PRIVACY_MILTER_RULES__TRANSIT_TAG__HEADER", "1234"),
        ],
        &["ledger (0640)", "rule transit_tag: on, header 1234"],
    );
    // A group named by digits is looked up by that name, not refused as a number.
    refused(
        &[
            ("PRIVACY_MILTER_SOCKET", "unix:/run/x.sock"),
            ("PRIVACY_MILTER_SOCKET_GROUP", "4242"),
        ],
        &["key socket_group", "group \"4242\" does not exist"],
    );
    // A string with what looks like TOML in it stays as written.
    passes(
        &[("PRIVACY_MILTER_EVENTS__LEDGER__PATH", "[\"a\", 1]")],
        &["ledger ([\"a\", 1])"],
    );
}

#[test]
fn booleans_and_integers_parse() {
    passes(&[("PRIVACY_MILTER_DRY_RUN", "true")], &["dry run: on"]);
    passes(&[("PRIVACY_MILTER_DRY_RUN", "false")], &["dry run: off"]);
    refused(
        &[("PRIVACY_MILTER_DRY_RUN", "yes")],
        &[
            "environment variable PRIVACY_MILTER_DRY_RUN: key dry_run",
            "expected true or false",
        ],
    );
    passes(&[("PRIVACY_MILTER_EVENTS__QUEUE_SIZE", "0100")], &[]);
    refused(
        &[("PRIVACY_MILTER_EVENTS__QUEUE_SIZE", "ten")],
        &[
            "environment variable PRIVACY_MILTER_EVENTS__QUEUE_SIZE: key events.queue_size",
            "expected a whole number",
        ],
    );
    refused(
        &[("PRIVACY_MILTER_PRIVACY__IPV4_PREFIX", "300")],
        &["key privacy.ipv4_prefix"],
    );
}

#[test]
fn lists_are_toml_arrays_or_comma_separated() {
    for value in [
        "true.example, false.example",
        r#"["true.example", "false.example"]"#,
        "true.example,false.example",
    ] {
        passes(
            &[("PRIVACY_MILTER_DOMAINS__LOCAL", value)],
            &["local domains: false.example, true.example"],
        );
    }
    passes(
        &[("PRIVACY_MILTER_NETWORKS__TRUSTED", "")],
        &["trusted networks: none"],
    );
    passes(
        &[("PRIVACY_MILTER_NETWORKS__TRUSTED", "[]")],
        &["trusted networks: none"],
    );
    refused(
        &[("PRIVACY_MILTER_NETWORKS__TRUSTED", "10.0.0.0/8,10.0.0.0/33")],
        &[
            "environment variable PRIVACY_MILTER_NETWORKS__TRUSTED: key networks.trusted[1]",
            "10.0.0.0/33",
        ],
    );
    refused(
        &[(
            "PRIVACY_MILTER_NETWORKS__TRUSTED",
            "10.0.0.0/8,,192.0.2.0/24",
        )],
        &["PRIVACY_MILTER_NETWORKS__TRUSTED", "entry 2 is empty"],
    );
    refused(
        &[("PRIVACY_MILTER_DOMAINS__LOCAL", "[\"a.example\", 1]")],
        &["PRIVACY_MILTER_DOMAINS__LOCAL", "a TOML array of strings"],
    );
}

#[test]
fn tables_and_unknown_keys_are_named() {
    refused(
        &[("PRIVACY_MILTER_EVENTS", "jsonl")],
        &[
            "environment variable PRIVACY_MILTER_EVENTS: key events",
            "a table",
            "PRIVACY_MILTER_EVENTS__",
        ],
    );
    refused(
        &[("PRIVACY_MILTER_SOCKET__PATH", "/x")],
        &["PRIVACY_MILTER_SOCKET__PATH", "socket"],
    );
    refused(
        &[("PRIVACY_MILTER_EVENTS__JSONL__PAHT", "/x")],
        &[
            "environment variable PRIVACY_MILTER_EVENTS__JSONL__PAHT",
            "events.jsonl.paht",
            "unknown key",
        ],
    );
}
