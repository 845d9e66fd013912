//! Messages that start but never reach end of message still leave one event: aborted after
//! RCPT, rejected when the MTA refused every recipient, and cut off by a lost connection.

use crate::common::*;
use indymilter_test::MacroStage;

#[tokio::test]
async fn abort_after_rcpt() {
    let milter = Milter::start("abort/privacy-milter.toml").await;
    let mut conn = milter.connect().await;
    let mail = Mail::from_ip("198.51.100.9").rcpt("bob@example.org");
    mail.connect(&mut conn).await;
    mail.envelope(&mut conn).await;
    conn.abort().await.unwrap();

    // The connection goes on: a second message after the abort is handled normally.
    let next = Mail::from_ip("198.51.100.9")
        .rcpt("carol@remote.example")
        .queue_id("4NextQ");
    let (actions, _) = next.transaction(&mut conn).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    conn.close().await.unwrap();

    let events = milter.wait_events(2).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let aborted = &events[0];
    assert_eq!(aborted["outcome"], "aborted");
    assert_eq!(aborted["retention"]["class"], "aborted");
    assert_eq!(aborted["recipients"][0]["domain"], "example.org");
    assert_eq!(aborted["actions"].as_array().unwrap().len(), 0);
    assert_eq!(event_for(&events, "4NextQ")["outcome"], "accepted");
}

#[tokio::test]
async fn all_recipients_refused_is_rejected() {
    let milter = Milter::start("abort/privacy-milter.toml").await;
    let mut conn = milter.connect().await;
    let mail = Mail::from_ip("198.51.100.9").rcpt_via("x@remote.example", "error");
    mail.connect(&mut conn).await;
    mail.envelope(&mut conn).await;
    conn.abort().await.unwrap();
    conn.close().await.unwrap();
    let events = milter.wait_events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["outcome"], "rejected");
    assert_eq!(events[0]["retention"]["class"], "rejected");
    // A refused recipient is not one the message has.
    assert_eq!(events[0]["recipients"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn lost_connection_mid_message() {
    let milter = Milter::start("abort/privacy-milter.toml").await;
    let mut conn = milter.connect().await;
    let mail = Mail::from_ip("198.51.100.9").rcpt("bob@example.org");
    mail.connect(&mut conn).await;
    mail.envelope(&mut conn).await;
    conn.macros(MacroStage::Data, [("i", "4LostQ")])
        .await
        .unwrap();
    conn.data().await.unwrap();
    drop(conn);
    let events = milter.wait_events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["outcome"], "aborted");
    assert_eq!(events[0]["queue_id"], "4LostQ");
}

#[tokio::test]
async fn abort_without_a_message_records_nothing() {
    let mut milter = Milter::start("abort/privacy-milter.toml").await;
    let mut conn = milter.connect().await;
    Mail::from_ip("198.51.100.9").connect(&mut conn).await;
    conn.abort().await.unwrap();
    let (actions, _) = Mail::from_ip("198.51.100.9")
        .rcpt("bob@example.org")
        .transaction(&mut conn)
        .await;
    assert!(actions.actions.is_empty());
    conn.close().await.unwrap();
    // Stopping flushes: exactly the one message's event, nothing for the bare abort.
    let path = milter.events_path();
    milter.stop().await.unwrap();
    let lines = std::fs::read_to_string(path).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
}
