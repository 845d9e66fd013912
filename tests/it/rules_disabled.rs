//! With every rule disabled nothing in the message changes, and events are still written.

use crate::common::*;

#[tokio::test]
async fn nothing_changes() {
    let milter = Milter::start("rules_disabled/privacy-milter.toml").await;
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .header("X-Originating-IP", "[192.0.2.1]")
        .header("X-Transit", "forged");
    let (actions, _) = mail.send(&milter).await;
    assert!(actions.actions.is_empty(), "{:?}", actions.actions);
    let (actions, _) = Mail::from_ip("198.51.100.1")
        .rcpt("x@remote.example")
        .header("X-Transit", "x")
        .queue_id("4B")
        .send(&milter)
        .await;
    assert!(actions.actions.is_empty());
    let events = milter.events();
    assert_eq!(events.len(), 2);
    assert_eq!(event_for(&events, "4TestQ1d")["direction"], "outbound");
    assert_eq!(actions_of(event_for(&events, "4B")), Vec::<String>::new());
}
