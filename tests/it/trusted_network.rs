//! A client in networks.trusted is ours without authenticating.

use crate::common::*;

#[tokio::test]
async fn trusted_client_without_auth_gets_header() {
    let milter = Milter::start("trusted_network/privacy-milter.toml").await;
    let (actions, _) = Mail::from_ip("10.1.2.3")
        .rcpt("bob@remote.example")
        .send(&milter)
        .await;
    assert_eq!(
        edits(&actions),
        ["+X-Originating-IP: [10.1.2.3]", OUTBOUND_TAG]
    );
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["direction"], "outbound");
    assert_eq!(e["client"]["authenticated"], false);
}

#[tokio::test]
async fn untrusted_client_without_auth_is_external() {
    let milter = Milter::start("trusted_network/privacy-milter.toml").await;
    let (actions, _) = Mail::from_ip("11.1.2.3")
        .rcpt("bob@remote.example")
        .send(&milter)
        .await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
}
