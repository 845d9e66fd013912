//! Local submission (the `sendmail` command): loopback or no client address. Ours, but the
//! loopback source gets no X-Originating-IP.

use crate::common::*;

#[tokio::test]
async fn loopback_client() {
    let milter = Milter::start("local_submission/privacy-milter.toml").await;
    let (actions, _) = Mail::from_ip("127.0.0.1")
        .rcpt("bob@remote.example")
        .send(&milter)
        .await;
    assert_eq!(edits(&actions), [OUTBOUND_TAG]);
    let events = milter.events();
    assert_eq!(event_for(&events, "4TestQ1d")["direction"], "outbound");
}

#[tokio::test]
async fn missing_client_address() {
    let milter = Milter::start("local_submission/privacy-milter.toml").await;
    let (actions, _) = Mail::local().rcpt("bob@remote.example").send(&milter).await;
    assert_eq!(edits(&actions), [OUTBOUND_TAG]);
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["direction"], "outbound");
    assert!(e["client"].get("ip").is_none(), "{e}");
}

#[tokio::test]
async fn ipv6_loopback_to_local_is_internal() {
    let milter = Milter::start("local_submission/privacy-milter.toml").await;
    let (actions, _) = Mail::from_ip("::1")
        .rcpt("bob@example.org")
        .send(&milter)
        .await;
    assert_eq!(edits(&actions), Vec::<String>::new());
    let events = milter.events();
    assert_eq!(event_for(&events, "4TestQ1d")["direction"], "internal");
}
