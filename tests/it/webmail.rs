//! A webmail host (networks.webmail) names the browser's address in X-Originating-IP; the
//! value is validated and written afresh, and anything that is not one address is dropped.

use crate::common::*;

const CONFIG: &str = "webmail/privacy-milter.toml";

async fn via_webmail(value: &[u8]) -> (Vec<String>, serde_json::Value) {
    let milter = Milter::start(CONFIG).await;
    let mail = Mail::from_ip("10.9.9.9")
        .rcpt("bob@remote.example")
        .header("X-Originating-IP", value);
    let (actions, _) = mail.send(&milter).await;
    let events = milter.events();
    (edits(&actions), event_for(&events, "4TestQ1d").clone())
}

#[tokio::test]
async fn bare_value() {
    let (edits, event) = via_webmail(b" 198.51.100.23").await;
    assert_eq!(
        edits,
        [
            "-X-Originating-IP[1]",
            "+X-Originating-IP: [198.51.100.23]",
            OUTBOUND_TAG
        ]
    );
    assert_eq!(event["client"]["webmail"], true);
    assert!(actions_of(&event).contains(&"originating_ip.from_webmail".to_string()));
}

#[tokio::test]
async fn bracketed_ipv6_value() {
    let (edits, _) = via_webmail(b"[2001:DB8:0::42]").await;
    assert_eq!(edits[1], "+X-Originating-IP: [2001:db8::42]");
}

#[tokio::test]
async fn crlf_injection_dropped() {
    let (edits, event) = via_webmail(b"198.51.100.23\r\nBcc: victim@example.net").await;
    // The hostile copy goes; the webmail host's own address stands in.
    assert_eq!(
        edits,
        [
            "-X-Originating-IP[1]",
            "+X-Originating-IP: [10.9.9.9]",
            OUTBOUND_TAG
        ]
    );
    assert!(edits.iter().all(|e| !e.contains("victim")));
    assert!(actions_of(&event).contains(&"originating_ip.dropped_invalid".to_string()));
}

#[tokio::test]
async fn garbage_dropped() {
    let (edits, _) = via_webmail(b"<script>alert(1)</script>").await;
    assert_eq!(edits[1], "+X-Originating-IP: [10.9.9.9]");
}

#[tokio::test]
async fn very_long_value_dropped() {
    let long = format!("[198.51.100.23]{}", " ".repeat(100_000));
    let (edits, _) = via_webmail(long.as_bytes()).await;
    assert_eq!(edits[1], "+X-Originating-IP: [10.9.9.9]");
}

#[tokio::test]
async fn webmail_without_header_uses_its_client_address() {
    let milter = Milter::start(CONFIG).await;
    let (actions, _) = Mail::from_ip("10.9.9.9")
        .rcpt("bob@example.org")
        .send(&milter)
        .await;
    assert_eq!(edits(&actions), ["+X-Originating-IP: [10.9.9.9]"]);
}

#[tokio::test]
async fn non_webmail_client_cannot_supply_the_address() {
    // An authenticated client outside networks.webmail: its copy is a forgery.
    let milter = Milter::start(CONFIG).await;
    let mail = Mail::from_ip("203.0.113.9")
        .auth("mallory")
        .rcpt("bob@remote.example")
        .header("X-Originating-IP", "[198.51.100.23]");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(
        edits(&actions),
        [
            "-X-Originating-IP[1]",
            "+X-Originating-IP: [203.0.113.9]",
            OUTBOUND_TAG
        ]
    );
}
