//! Reload: a good file takes effect for new connections; a broken one keeps the running
//! configuration and says why; the events file is re-opened (logrotate).

use crate::common::*;

#[tokio::test]
async fn good_and_broken_reload() {
    let milter = Milter::start("reload/privacy-milter.toml").await;
    let relay = || Mail::from_ip("198.51.100.9").rcpt("carol@remote.example");
    assert_eq!(edits(&relay().send(&milter).await.0), [RELAY_TAG]);

    // A connection opened before the reload keeps the configuration it started with.
    let mut old = milter.connect().await;
    relay().connect(&mut old).await;

    milter
        .reload_with("reload/changed.toml")
        .await
        .expect("good file reloads");
    assert_eq!(
        edits(&relay().send(&milter).await.0),
        ["+X-Relayed@0: relay; by=mx.test.example; k=KEY; mac=MAC"]
    );
    assert_eq!(edits(&relay().transaction(&mut old).await.0), [RELAY_TAG]);
    old.close().await.unwrap();

    let err = milter.reload_with("reload/broken.toml").await.unwrap_err();
    assert!(
        err.contains("networks.trusted[0]") && err.contains("10.0.0.0/33"),
        "{err}"
    );
    assert!(err.contains("privacy-milter.toml"), "names the file: {err}");
    assert_eq!(
        edits(&relay().send(&milter).await.0),
        ["+X-Relayed@0: relay; by=mx.test.example; k=KEY; mac=MAC"]
    );
}

#[tokio::test]
async fn reload_reopens_the_events_file() {
    let milter = Milter::start("reload/privacy-milter.toml").await;
    Mail::from_ip("198.51.100.9")
        .rcpt("a@example.org")
        .queue_id("4Before")
        .send(&milter)
        .await;
    let rotated = milter.dir.path().join("events.jsonl.1");
    std::fs::rename(milter.events_path(), &rotated).unwrap();
    milter
        .reload_with("reload/privacy-milter.toml")
        .await
        .unwrap();
    Mail::from_ip("198.51.100.9")
        .rcpt("a@example.org")
        .queue_id("4After")
        .send(&milter)
        .await;

    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("4Before") && !old.contains("4After"));
    let events = milter.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["queue_id"], "4After");
}
