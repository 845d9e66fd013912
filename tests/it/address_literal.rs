//! An address literal (`x@[203.0.113.77]`, `y@[IPv6:2001:db8::1]`) has an IP for a domain:
//! where `[privacy] address` keeps the domain, that domain is written as `[privacy] ip` says,
//! so the IP reaches neither the ledger, nor the events file, nor the log, nor an export.

use crate::common::*;

/// The IPs of the literals, as they could be written (searched in lower case).
const IPS: [&str; 4] = ["203.0.113.77", "2001:db8::1", "2001:0db8", "203.0.113.77]"];

async fn send_literals(daemon: &Daemon) {
    Mail::from_ip("198.51.100.9")
        .sender("alice@[203.0.113.77]")
        .rcpt("x@[203.0.113.77]")
        .rcpt("y@[IPv6:2001:db8::1]")
        .rcpt("z@remote.example")
        .queue_id("4Literal")
        .send_on(daemon.connect().await)
        .await;
    // A message given up after RCPT is recorded too.
    let mut conn = daemon.connect().await;
    let m = Mail::from_ip("198.51.100.9")
        .sender("bob@[IPv6:2001:db8::1]")
        .rcpt("x@[203.0.113.77]");
    m.connect(&mut conn).await;
    m.envelope(&mut conn).await;
    conn.abort().await.unwrap();
    conn.close().await.unwrap();
}

/// Everything the daemon stored or logged, and what `ledger export` says, in lower case.
fn everything(daemon: &Daemon) -> String {
    let dir = daemon.dir.path();
    let export = daemon.ledger(&["export"]);
    [
        all_bytes(dir, "ledger.sqlite"),
        daemon.events_text(),
        daemon.log(),
        export,
    ]
    .join("\n")
    .to_lowercase()
}

#[tokio::test]
async fn hmac_addresses_keep_no_literal_ip() {
    let mut daemon = Daemon::start("address_literal/hmac.toml");
    send_literals(&daemon).await;
    assert!(daemon.stop().success(), "{}", daemon.log());
    let stored = everything(&daemon);
    for ip in IPS {
        assert!(!stored.contains(ip), "{ip} is stored or logged:\n{stored}");
    }
    let events = json_lines(&daemon.events_text());
    assert_eq!(events.len(), 2, "{events:?}");
    let event = event_for(&events, "4Literal");
    let domains: Vec<&str> = event["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["domain"].as_str().unwrap_or("-"))
        .collect();
    // The literals' domains are HMACs of their IPs; a name stays in clear.
    assert!(domains[0].starts_with("[hmac:"), "{domains:?}");
    assert!(domains[1].starts_with("[hmac:"), "{domains:?}");
    assert_eq!(domains[2], "remote.example");
    assert_eq!(event["recipients"][0]["domain"], event["sender"]["domain"]);
}

#[tokio::test]
async fn domain_only_addresses_truncate_a_literal() {
    let mut daemon = Daemon::start("address_literal/domain.toml");
    send_literals(&daemon).await;
    assert!(daemon.stop().success(), "{}", daemon.log());
    let stored = everything(&daemon);
    for ip in IPS {
        assert!(!stored.contains(ip), "{ip} is stored or logged:\n{stored}");
    }
    let events = json_lines(&daemon.events_text());
    let event = event_for(&events, "4Literal");
    assert_eq!(event["sender"]["domain"], "[203.0.113.0/24]", "{event}");
    assert_eq!(
        event["recipients"][1]["domain"], "[2001:db8::/48]",
        "{event}"
    );
    // The log line names the sender's domain as the event does.
    assert!(
        daemon.log().contains("sender=[203.0.113.0/24]"),
        "{}",
        daemon.log()
    );
}
