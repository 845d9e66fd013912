//! Hostile input never crashes the milter, never corrupts a header and never loses an event:
//! invalid UTF-8, huge lines, bogus addresses, and malformed protocol data.

use crate::common::*;
use indymilter_test::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = "hostile_input/privacy-milter.toml";

#[tokio::test]
async fn invalid_utf8_and_huge_headers() {
    let milter = Milter::start(CONFIG).await;
    // The milter protocol carries at most 64 KiB per command; a header close to that.
    let huge = vec![b'a'; 60_000];
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .header("X-Originating-IP", [0xff, 0xfe, b'1', b'.', b'2'])
        .header("Subject", [0xc3, 0x28, 0xa0, 0xa1])
        .header("X-Huge", &huge)
        .header("X-Originating-IP", &huge);
    let (actions, status) = mail.send(&milter).await;
    assert_eq!(status, Status::Continue);
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
    assert!(event_for(&events, "4TestQ1d")["size"].as_u64().unwrap() > 120_000);
}

#[tokio::test]
async fn bogus_addresses() {
    let milter = Milter::start(CONFIG).await;
    let long = format!("{}@{}", "x".repeat(10_000), "y".repeat(10_000));
    let mut mail = Mail::from_ip("198.51.100.9");
    mail.from = "<not an address>".into();
    mail.rcpts = vec![
        ("<>".into(), None),
        ("<@@@>".into(), None),
        (format!("<{long}>"), None),
        ("<bob@example.org>".into(), Some("smtp".into())),
        ("<\"quoted@local\"@example.org>".into(), None),
    ];
    let (_, status) = mail.send(&milter).await;
    assert_eq!(status, Status::Continue);
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["recipients"].as_array().unwrap().len(), 5);
    assert_eq!(e["direction"], "relay");
    assert!(e["sender"].get("domain").is_none());
    assert_eq!(e["recipients"][4]["local"], true);
}

#[tokio::test]
async fn null_sender_and_unicode_domains() {
    let milter = Milter::start(CONFIG).await;
    let mut mail = Mail::from_ip("198.51.100.9").rcpt("bob@EXAMPLE.org.");
    mail.from = "<>".into();
    mail.rcpts.push(("<ü@bücher.example>".into(), None));
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["recipients"][0]["local"], true);
    assert_eq!(e["recipients"][1]["domain"], "bücher.example");
}

#[tokio::test]
async fn malformed_protocol_data_closes_only_that_connection() {
    let milter = Milter::start(CONFIG).await;
    for garbage in [
        &b"\xff\xff\xff\xffO"[..],         // absurd length
        &b"\x00\x00\x00\x01Z"[..],         // unknown command before negotiation
        &b"\x00\x00\x00\x05O\x00\x00"[..], // truncated negotiation, then EOF
    ] {
        let mut raw = tokio::net::TcpStream::connect(milter.addr).await.unwrap();
        raw.write_all(garbage).await.unwrap();
        let _ = raw.shutdown().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            raw.read_to_end(&mut rest),
        )
        .await;
        assert!(
            read.is_ok(),
            "the milter closes a connection that sent {garbage:?}"
        );
    }
    let (actions, status) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .send(&milter)
        .await;
    assert_eq!(status, Status::Continue);
    assert_eq!(edits(&actions), [RELAY_TAG]);
}
