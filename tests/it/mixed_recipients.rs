//! One message with a local and a remote recipient: each is classified, the message is
//! transit (outbound) and tagged.

use crate::common::*;

#[tokio::test]
async fn local_and_remote() {
    let milter = Milter::start("mixed_recipients/privacy-milter.toml").await;
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@example.org")
        .rcpt("dave@remote.example");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(
        edits(&actions),
        ["+X-Originating-IP: [203.0.113.7]", OUTBOUND_TAG]
    );
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["direction"], "outbound");
    assert_eq!(e["transit"], true);
    let r = e["recipients"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0]["domain"].as_str(), r[0]["local"].as_bool()),
        (Some("example.org"), Some(true))
    );
    assert_eq!(
        (r[1]["domain"].as_str(), r[1]["local"].as_bool()),
        (Some("remote.example"), Some(false))
    );
}

#[tokio::test]
async fn external_sender_mixed_is_relay() {
    let milter = Milter::start("mixed_recipients/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.9")
        .rcpt("bob@example.org")
        .rcpt("dave@remote.example");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
}
