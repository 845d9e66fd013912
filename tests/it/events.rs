//! Events: exactly one per message, with the fields the README's "Events" lists.

use crate::common::*;

#[tokio::test]
async fn one_event_per_message_with_all_fields() {
    let milter = Milter::start("events/privacy-milter.toml").await;
    let mut conn = milter.connect().await;
    let first = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .queue_id("4One");
    first.connect(&mut conn).await;
    first.transaction(&mut conn).await;
    let second = first.clone().queue_id("4Two").rcpt("carol@example.org");
    second.transaction(&mut conn).await;
    conn.close().await.unwrap();

    let events = milter.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let e = event_for(&events, "4One");
    assert_eq!(e["schema"], "privacy-milter.message.v1");
    let id = e["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert_ne!(events[0]["id"], events[1]["id"]);
    let time = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(e["host"], "mx.test.example");
    assert_eq!(e["outcome"], "accepted");
    assert_eq!(e["direction"], "outbound");
    assert_eq!(e["transit"], true);
    assert_eq!(e["client"]["ip"], "203.0.113.7");
    assert_eq!(e["client"]["authenticated"], true);
    assert_eq!(e["client"]["webmail"], false);
    assert_eq!(e["sender"]["address"], "alice@example.org");
    assert_eq!(e["sender"]["domain"], "example.org");
    assert_eq!(e["recipients"][0]["address"], "bob@remote.example");
    assert_eq!(e["recipients"][0]["local"], false);
    // From, Subject and the body as the harness sends them.
    let expected_size = ("From".len() + "Alice <alice@example.org>".len() + 4)
        + ("Subject".len() + "test".len() + 4)
        + 2
        + "Hello.\r\n".len();
    assert_eq!(e["size"], expected_size as u64);
    assert_eq!(actions_of(e), ["originating_ip.added", "transit_tag.added"]);
    assert_eq!(e["retention"]["class"], "outbound");
    let expires =
        chrono::DateTime::parse_from_rfc3339(e["retention"]["expires_at"].as_str().unwrap())
            .unwrap();
    assert_eq!((expires - time).num_days(), 90);

    let e2 = event_for(&events, "4Two");
    assert_eq!(e2["recipients"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn events_can_be_turned_off() {
    let mut milter = Milter::start("events/disabled.toml").await;
    let (actions, _) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .send(&milter)
        .await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    milter.stop().await.unwrap();
}

#[tokio::test]
async fn nothing_is_written_when_disabled() {
    let mut milter = Milter::start("events/disabled.toml").await;
    Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .send(&milter)
        .await;
    let path = milter.events_path();
    milter.stop().await.unwrap();
    assert!(!path.exists());
}
