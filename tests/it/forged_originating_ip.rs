//! Copies of X-Originating-IP brought by an authenticated client are deleted before ours is
//! added, so no sender can frame another address.

use crate::common::*;

#[tokio::test]
async fn forged_copies_replaced() {
    let milter = Milter::start("forged_originating_ip/privacy-milter.toml").await;
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .header("X-Originating-IP", "[192.0.2.66]")
        .header("x-originating-ip", "192.0.2.67");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(
        edits(&actions),
        [
            "-X-Originating-IP[2]",
            "-X-Originating-IP[1]",
            "+X-Originating-IP: [203.0.113.7]",
            OUTBOUND_TAG
        ]
    );
    let events = milter.events();
    assert_eq!(
        actions_of(event_for(&events, "4TestQ1d")),
        [
            "originating_ip.removed_forged",
            "originating_ip.added",
            "transit_tag.added"
        ]
    );
}
