//! A transit tag arriving from outside the trusted networks is deleted on every message.

use crate::common::*;

#[tokio::test]
async fn forged_tag_removed_from_inbound() {
    let milter = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.77")
        .rcpt("bob@example.org")
        .header("X-Transit", "relay")
        .header("X-TRANSIT", "outbound");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), ["-X-Transit[2]", "-X-Transit[1]"]);
    let events = milter.events();
    assert_eq!(
        actions_of(event_for(&events, "4TestQ1d")),
        ["transit_tag.removed_forged"]
    );
}

#[tokio::test]
async fn forged_tag_replaced_on_relay() {
    let milter = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.77")
        .rcpt("carol@transit.example")
        .header("X-Transit", "internal");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), ["-X-Transit[1]", "+X-Transit: relay"]);
}

#[tokio::test]
async fn authenticated_client_outside_trusted_networks_cannot_plant_a_tag() {
    let milter = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let mail = Mail::from_ip("203.0.113.5")
        .auth("alice")
        .rcpt("bob@example.org")
        .header("X-Transit", "relay");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(
        edits(&actions),
        ["-X-Transit[1]", "+X-Originating-IP: [203.0.113.5]"]
    );
}
