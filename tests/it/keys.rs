//! The key ring: HMAC pseudonyms in events and the ledger, rotation, destruction, modes
//! refused when loose, and encrypted X-Originating-IP tokens opened by `ip decrypt`.

use crate::common::*;
use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Output},
};

fn cli(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn hmac_events_hold_no_raw_ip_or_address_and_are_queryable() {
    let mut milter = Milter::start("keys/hmac.toml").await;
    Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .queue_id("4A")
        .send(&milter)
        .await;
    let keys = milter.dir.path().join("keys");
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let key_file = std::fs::read_dir(&keys)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("carol@example.org")
        .queue_id("4B")
        .send(&milter)
        .await;
    Mail::from_ip("198.51.100.9")
        .sender("eve@remote.example")
        .rcpt("carol@example.org")
        .queue_id("4C")
        .send(&milter)
        .await;

    let events = milter.events();
    let a = event_for(&events, "4A");
    let ip = a["client"]["ip"].as_str().unwrap();
    assert!(
        ip.starts_with("hmac:") && ip.split(':').count() == 3,
        "{ip}"
    );
    assert_eq!(
        event_for(&events, "4B")["client"]["ip"],
        ip,
        "same address, same key: same pseudonym"
    );
    assert_ne!(event_for(&events, "4C")["client"]["ip"], ip);
    assert_eq!(a["sender"]["domain"], "example.org");
    assert!(a["sender"]["address"]
        .as_str()
        .unwrap()
        .starts_with("hmac:"));

    let (out_ip, out_addr) = (
        cli(
            &milter.config_path,
            &["ledger", "query", "--ip", "203.0.113.7", "--format", "json"],
        ),
        cli(
            &milter.config_path,
            &["ledger", "query", "--address", "Carol@Example.org"],
        ),
    );
    let found: serde_json::Value = serde_json::from_slice(&out_ip.stdout).unwrap();
    assert_eq!(
        found["events"].as_array().unwrap().len(),
        2,
        "{}",
        text(&out_ip)
    );
    assert!(found["log_copy"].is_null(), "no copy configured: {found}");
    assert!(
        text(&out_addr).starts_with("2 events held for address hmac:"),
        "{}",
        text(&out_addr)
    );

    milter.stop().await.unwrap();
    let stored = all_bytes(milter.dir.path(), "ledger.sqlite")
        + &all_bytes(milter.dir.path(), "events.jsonl");
    assert!(stored.len() > 4096);
    for secret in [
        "203.0.113.7",
        "198.51.100.9",
        "alice@",
        "bob@",
        "carol@",
        "eve@",
    ] {
        assert!(!stored.contains(secret), "{secret} is stored");
    }
    assert!(stored.contains("example.org"), "domains stay in clear");
}

#[tokio::test]
async fn rotation_keeps_old_pseudonyms_findable() {
    let milter = Milter::start("keys/rotating.toml").await;
    Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@example.org")
        .queue_id("4Old")
        .send(&milter)
        .await;
    let keys = milter.dir.path().join("keys");
    // key_rotation = 1s and housekeeping every second: wait for the second key.
    eventually(|| (std::fs::read_dir(&keys).unwrap().count() >= 2).then_some(()))
        .await
        .expect("a new key was made");
    Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@example.org")
        .queue_id("4New")
        .send(&milter)
        .await;
    let events = milter.events();
    let (old, new) = (event_for(&events, "4Old"), event_for(&events, "4New"));
    assert_ne!(
        old["client"]["ip"], new["client"]["ip"],
        "different keys, different pseudonyms"
    );
    let out = cli(
        &milter.config_path,
        &["ledger", "query", "--ip", "203.0.113.7", "--format", "json"],
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        found["events"].as_array().unwrap().len(),
        2,
        "found under both keys: {}",
        text(&out)
    );
}

#[tokio::test]
async fn purge_destroys_keys_retired_longer_than_the_longest_retention() {
    let milter = Milter::start("keys/hmac.toml").await;
    Mail::from_ip("203.0.113.7")
        .rcpt("bob@example.org")
        .send(&milter)
        .await;
    let keys = milter.dir.path().join("keys");
    for id in ["20200101T000000Z", "20200201T000000Z"] {
        let path = keys.join(format!("hmac-{id}.key"));
        std::fs::write(&path, [9u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = cli(&milter.config_path, &["ledger", "purge"]);
    assert!(out.status.success(), "{}", text(&out));
    // 2020-01 was retired in 2020-02, long ago: destroyed. 2020-02 was retired only when
    // today's key was made: kept until the longest retention (90d) has passed.
    assert!(
        text(&out).contains("destroyed key 20200101T000000Z"),
        "{}",
        text(&out)
    );
    assert!(!keys.join("hmac-20200101T000000Z.key").exists());
    assert!(keys.join("hmac-20200201T000000Z.key").exists());
}

#[tokio::test]
async fn loose_key_modes_are_refused() {
    let milter = Milter::start("keys/hmac.toml").await;
    Mail::from_ip("203.0.113.7")
        .rcpt("bob@example.org")
        .send(&milter)
        .await;
    let keys = milter.dir.path().join("keys");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = cli(&milter.config_path, &["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("privacy.keys") && text(&out).contains("must be 0700"),
        "{}",
        text(&out)
    );
    // The daemon refuses to start too.
    let out = cli(
        &milter.config_path,
        &["--socket", "inet:0@127.0.0.1", "run"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("must be 0700"), "{}", text(&out));

    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = cli(&milter.config_path, &["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("must be 0600"), "{}", text(&out));
}

#[tokio::test]
async fn encrypted_header_round_trip() {
    let milter = Milter::start("keys/encrypted.toml").await;
    let send = |qid: &'static str| {
        Mail::from_ip("203.0.113.7")
            .auth("alice")
            .rcpt("bob@example.org")
            .queue_id(qid)
    };
    let (a, _) = send("4A").send(&milter).await;
    let (b, _) = send("4B").send(&milter).await;
    let value = |e: &indymilter_test::EomActions| {
        let edit = edits(e)
            .into_iter()
            .find(|e| e.starts_with("+X-Originating-IP: "))
            .unwrap();
        edit.trim_start_matches("+X-Originating-IP: ").to_string()
    };
    let (ta, tb) = (value(&a), value(&b));
    assert!(ta.starts_with("enc:") && !ta.contains("203.0.113"), "{ta}");
    assert_ne!(ta, tb, "a random nonce per message");

    let out = cli(&milter.config_path, &["ip", "decrypt", &ta]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("203.0.113.7 (key "),
        "{}",
        text(&out)
    );

    let mut tampered: Vec<char> = ta.chars().collect();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == 'x' { 'y' } else { 'x' };
    let tampered: String = tampered.into_iter().collect();
    let out = cli(&milter.config_path, &["ip", "decrypt", &tampered]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("invalid token"), "{}", text(&out));

    // Once the key is destroyed the token cannot be opened, and says why.
    for entry in std::fs::read_dir(milter.dir.path().join("keys")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let out = cli(&milter.config_path, &["ip", "decrypt", &tb]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("destroyed"), "{}", text(&out));
}
