//! Authenticated submission from IPv4 and IPv6 clients gets `X-Originating-IP: [address]`.

use crate::common::*;
use indymilter_test::{SocketInfo, Status};

const CONFIG: &str = "authenticated_submission/privacy-milter.toml";

#[tokio::test]
async fn ipv4_client_gets_header_and_tag() {
    let milter = Milter::start(CONFIG).await;
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example");
    let (actions, status) = mail.send(&milter).await;
    assert_eq!(status, Status::Continue);
    assert_eq!(
        edits(&actions),
        ["+X-Originating-IP: [203.0.113.7]", OUTBOUND_TAG]
    );

    let events = milter.events();
    let event = event_for(&events, "4TestQ1d");
    assert_eq!(event["direction"], "outbound");
    assert_eq!(event["client"]["ip"], "203.0.113.7");
    assert_eq!(event["client"]["authenticated"], true);
    assert_eq!(
        actions_of(event),
        ["originating_ip.added", "transit_tag.added"]
    );
}

#[tokio::test]
async fn ipv6_client_is_written_without_prefix() {
    let milter = Milter::start(CONFIG).await;
    let mail = Mail::from_ip("2001:db8::7")
        .auth("alice")
        .rcpt("bob@remote.example");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(
        edits(&actions),
        ["+X-Originating-IP: [2001:db8::7]", OUTBOUND_TAG]
    );
}

#[tokio::test]
async fn postfix_ipv6_macro_is_normalised() {
    // No address with the connect command: the {client_addr} macro, in Postfix's IPv6: form.
    let milter = Milter::start(CONFIG).await;
    let mail = Mail::with_socket(SocketInfo::Unknown)
        .connect_macro("{client_addr}", "IPv6:2001:DB8::9")
        .auth("alice")
        .rcpt("bob@remote.example");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions)[0], "+X-Originating-IP: [2001:db8::9]");
}

#[tokio::test]
async fn auth_type_alone_counts_as_authenticated() {
    let milter = Milter::start(CONFIG).await;
    let mut conn = milter.connect().await;
    let mail = Mail::from_ip("198.51.100.50").rcpt("bob@remote.example");
    mail.connect(&mut conn).await;
    conn.macros(
        indymilter_test::MacroStage::Mail,
        [("{auth_type}", "XCLIENT")],
    )
    .await
    .unwrap();
    conn.mail(["<alice@example.org>"]).await.unwrap();
    conn.rcpt(["<bob@remote.example>"]).await.unwrap();
    let (actions, _) = mail.content(&mut conn).await;
    assert_eq!(
        edits(&actions),
        ["+X-Originating-IP: [198.51.100.50]", OUTBOUND_TAG]
    );
}

#[tokio::test]
async fn truncated_mode_writes_the_network() {
    let milter = Milter::start("authenticated_submission/truncated.toml").await;
    let (actions, _) = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@example.org")
        .send(&milter)
        .await;
    assert_eq!(edits(&actions), ["+X-Originating-IP: [203.0.113.0/24]"]);
    let (actions, _) = Mail::from_ip("2001:db8:77:1::9")
        .auth("alice")
        .rcpt("bob@example.org")
        .send(&milter)
        .await;
    assert_eq!(edits(&actions), ["+X-Originating-IP: [2001:db8::/32]"]);
}
