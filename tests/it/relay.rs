//! External mail for a domain we do not host (we relay it) is tagged, direction relay.

use crate::common::*;

#[tokio::test]
async fn relay_is_tagged() {
    let milter = Milter::start("relay/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.77")
        .sender("someone@remote.example")
        .rcpt_via("carol@transit.example", "relay");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["direction"], "relay");
    assert_eq!(e["transit"], true);
    assert_eq!(e["recipients"][0]["local"], false);
    assert_eq!(e["retention"]["class"], "relay");
}
