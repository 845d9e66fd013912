//! With pseudonymisation on, no raw client IP and no address appears in any log line or
//! event: the real daemon's stderr and events file are searched byte for byte.

use crate::common::*;

const CLIENT: &str = "203.0.113.77";
const BROWSER: &str = "198.51.100.23";
const SECRETS: [&str; 5] = [CLIENT, BROWSER, "alice@", "bob@", "carol@"];

async fn send_personal_mail(daemon: &Daemon) {
    let submission = Mail::from_ip(CLIENT)
        .auth("alice")
        .sender("alice@example.org")
        .rcpt("bob@remote.example");
    let (actions, _) = submission.send_on(daemon.connect().await).await;
    // The header itself carries the full address: that is the policy for headers.
    assert!(edits(&actions).contains(&format!("+X-Originating-IP: [{CLIENT}]")));
    let webmail = Mail::from_ip("10.9.9.9")
        .sender("alice@example.org")
        .rcpt("carol@example.org")
        .header("X-Originating-IP", format!("[{BROWSER}]"))
        .queue_id("4Webmail");
    webmail.send_on(daemon.connect().await).await;
    let garbage = Mail::from_ip("10.9.9.9")
        .rcpt("carol@example.org")
        .header(
            "X-Originating-IP",
            format!("{BROWSER}\r\nBcc: bob@remote.example"),
        )
        .queue_id("4Hostile");
    garbage.send_on(daemon.connect().await).await;
    let mut aborted = daemon.connect().await;
    let m = Mail::from_ip(CLIENT)
        .sender("alice@example.org")
        .rcpt("bob@remote.example");
    m.connect(&mut aborted).await;
    m.envelope(&mut aborted).await;
    aborted.abort().await.unwrap();
    aborted.close().await.unwrap();
}

#[tokio::test]
async fn truncated_and_domain_only() {
    let mut daemon = Daemon::start("privacy/privacy-milter.toml");
    send_personal_mail(&daemon).await;
    assert!(daemon.stop().success());
    let log = daemon.log();
    let events = daemon.events_text();
    for secret in SECRETS {
        assert!(!log.contains(secret), "log carries {secret}:\n{log}");
        assert!(!events.contains(secret), "events carry {secret}:\n{events}");
    }
    // What is there instead, so this test fails if nothing was written at all.
    assert_eq!(events.lines().count(), 4, "{events}");
    assert!(events.contains("\"ip\":\"203.0.113.0/24\""), "{events}");
    assert!(events.contains("\"domain\":\"example.org\""));
    assert!(
        log.contains("203.0.113.0/24") && log.contains("queue_id"),
        "{log}"
    );
    assert!(
        log.contains("privacy_milter::event"),
        "the log sink wrote: {log}"
    );
    assert!(
        log.contains("dropped an unparsable X-Originating-IP"),
        "{log}"
    );
}

#[tokio::test]
async fn omitted() {
    let mut daemon = Daemon::start("privacy/omit.toml");
    send_personal_mail(&daemon).await;
    assert!(daemon.stop().success());
    let (log, events) = (daemon.log(), daemon.events_text());
    for secret in SECRETS
        .iter()
        .chain(&["203.0.113.", "example.org", "remote.example"])
    {
        assert!(!log.contains(secret), "log carries {secret}:\n{log}");
        assert!(!events.contains(secret), "events carry {secret}:\n{events}");
    }
    assert_eq!(events.lines().count(), 4, "{events}");
}

#[tokio::test]
async fn hmac() {
    let mut daemon = Daemon::start("privacy/hmac.toml");
    send_personal_mail(&daemon).await;
    assert!(daemon.stop().success());
    let (log, events) = (daemon.log(), daemon.events_text());
    for secret in SECRETS {
        assert!(!log.contains(secret), "log carries {secret}:\n{log}");
        assert!(!events.contains(secret), "events carry {secret}:\n{events}");
    }
    assert_eq!(events.lines().count(), 4, "{events}");
    assert!(
        events.contains("\"ip\":\"hmac:") && events.contains("\"address\":\"hmac:"),
        "{events}"
    );
    assert!(
        log.contains("client=hmac:") && log.contains("sender=hmac:"),
        "{log}"
    );
}
