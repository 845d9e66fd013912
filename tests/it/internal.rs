//! Our sender to local recipients only: internal, no transit tag.

use crate::common::*;

#[tokio::test]
async fn internal_mail() {
    let milter = Milter::start("internal/privacy-milter.toml").await;
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@example.org")
        .rcpt("carol@EXAMPLE.ORG");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), ["+X-Originating-IP: [203.0.113.7]"]);
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["direction"], "internal");
    assert_eq!(e["transit"], false);
    assert_eq!(e["retention"]["class"], "internal");
}
