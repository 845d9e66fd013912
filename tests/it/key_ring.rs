//! The key ring as others may change it. A key file named with a future date would become the
//! current key and never be rotated or destroyed: it is refused, naming the file. A key or the
//! key directory deleted while the daemon runs would be replaced at the next housekeeping,
//! changing every HMAC without a word: the daemon says so at warning level, as it does for a
//! key that appears. Its own rotation and destruction say nothing of the kind.

use crate::common::*;
use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

const CHANGED: &str = "changed other than by rotation or destruction";

fn write_key(dir: &Path, id: &str) -> std::path::PathBuf {
    let path = dir.join(format!("hmac-{id}.key"));
    std::fs::write(&path, [7u8; 32]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn key_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The key id in an event's client IP pseudonym (`hmac:KEYID:HEX`).
fn key_of(event: &serde_json::Value) -> String {
    event["client"]["ip"]
        .as_str()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_string()
}

async fn send(daemon: &Daemon, queue_id: &str) {
    Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id(queue_id)
        .send_on(daemon.connect().await)
        .await;
}

#[test]
fn a_key_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    let future = write_key(&keys, "20990101T000000Z");
    let config = dir.path().join("privacy-milter.toml");
    std::fs::write(
        &config,
        case_config("key_ring/privacy-milter.toml", dir.path()),
    )
    .unwrap();
    for args in [&["check-config"][..], &["run"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} accepted it: {err}");
        assert!(
            err.contains(future.to_str().unwrap()) && err.contains("in the future"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn changes_by_others_are_logged_and_future_keys_refused() {
    let mut daemon = Daemon::start("key_ring/privacy-milter.toml");
    let keys = daemon.dir.path().join("keys");
    send(&daemon, "4First").await;
    let first = key_ids(&keys);
    assert_eq!(first.len(), 1, "{first:?}");

    // A key deleted by hand: the next housekeeping makes a new one, and says why.
    std::fs::remove_file(keys.join(&first[0])).unwrap();
    daemon.wait_log(CHANGED);
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains(CHANGED)).unwrap();
    assert!(
        line.contains(" WARN ") && line.contains(first[0].trim_end_matches(".key")),
        "{line}"
    );
    assert!(line.contains("gone"), "{line}");
    // Wait for the replacement, then the events show the new key.
    eventually(|| (key_ids(&keys).len() == 1).then_some(()))
        .await
        .unwrap();
    send(&daemon, "4Second").await;

    // The whole directory removed.
    std::fs::remove_dir_all(&keys).unwrap();
    eventually(|| (daemon.log().matches(CHANGED).count() >= 2).then_some(()))
        .await
        .unwrap_or_else(|| panic!("no second warning:\n{}", daemon.log()));
    let log = daemon.log();
    let line = log.lines().filter(|l| l.contains(CHANGED)).nth(1).unwrap();
    assert!(line.contains("directory"), "{line}");

    // A key that appears.
    eventually(|| (!key_ids(&keys).is_empty()).then_some(()))
        .await
        .unwrap();
    write_key(&keys, "20200101T000000Z");
    eventually(|| (daemon.log().matches(CHANGED).count() >= 3).then_some(()))
        .await
        .unwrap_or_else(|| panic!("no third warning:\n{}", daemon.log()));
    let log = daemon.log();
    let line = log.lines().filter(|l| l.contains(CHANGED)).nth(2).unwrap();
    assert!(
        line.contains("appeared") && line.contains("20200101T000000Z"),
        "{line}"
    );

    // A key from the future: refused, naming the file; the keys in use stay.
    let future = write_key(&keys, "20990101T000000Z");
    daemon.wait_log("in the future");
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("in the future")).unwrap();
    assert!(line.contains(future.to_str().unwrap()), "{line}");
    send(&daemon, "4Third").await;
    assert!(daemon.stop().success());

    let events = json_lines(&daemon.events_text());
    let (a, b, c) = (
        key_of(event_for(&events, "4First")),
        key_of(event_for(&events, "4Second")),
        key_of(event_for(&events, "4Third")),
    );
    assert_ne!(a, b, "a new key after the deletion");
    assert_ne!(c, "20990101T000000Z", "the future key is never used");
}

#[tokio::test]
async fn own_rotation_and_destruction_are_not_reported() {
    let mut daemon = Daemon::start("key_ring/rotating.toml");
    // Keys made every second and destroyed a second after their retirement.
    eventually(|| (daemon.log().matches("destroyed key").count() >= 3).then_some(()))
        .await
        .unwrap_or_else(|| panic!("no keys destroyed:\n{}", daemon.log()));
    // A purge by the command, beside the daemon, destroys by the same rule (whether it found
    // events to delete is not the point here).
    let _ = ledger_with(&daemon.config_path, &["purge"]);
    let seen = daemon.log().matches("destroyed key").count();
    eventually(|| (daemon.log().matches("destroyed key").count() >= seen + 2).then_some(()))
        .await
        .unwrap();
    assert!(daemon.stop().success());
    assert!(!daemon.log().contains(CHANGED), "{}", daemon.log());
}
