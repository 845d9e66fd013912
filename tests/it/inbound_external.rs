//! External mail to a local domain keeps the X-Originating-IP that the remote system wrote.

use crate::common::*;

#[tokio::test]
async fn remote_originating_ip_is_kept() {
    let milter = Milter::start("inbound_external/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.77")
        .sender("someone@remote.example")
        .rcpt("bob@example.org")
        .header("X-Originating-IP", "[192.0.2.200]");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), Vec::<String>::new());
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["direction"], "inbound");
    assert_eq!(e["transit"], false);
    assert_eq!(e["recipients"][0]["local"], true);
    assert_eq!(e["retention"]["class"], "inbound");
}
