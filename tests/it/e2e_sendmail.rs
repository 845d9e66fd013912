//! End to end behind a real Sendmail (unpacked from the Debian debs by scripts/setup-test-deps,
//! private daemon per test, see tests/it/harness/e2e.rs), with the milter attached by
//! INPUT_MAIL_FILTER over TCP (and, in one test, a unix socket). Sendmail relays everything
//! to the smtp-sink (SMART_HOST), so every recipient's `{rcpt_mailer}` is `relay`; locality
//! comes from domains.local. It offers SMTP AUTH against the lab's own sasldb.
//!
//! Sendmail has no XCLIENT: every client is 127.0.0.1. With the default networks it is a
//! trusted (own) client; configuring loopback as external gives inbound and relay mail.

use crate::e2e::{
    self, assert_actions, assert_event, compose, new_message_id, SendmailLab, Socket,
};

fn lab(test: &str, milter_toml: &str) -> Option<SendmailLab> {
    lab_on(test, Socket::Tcp, milter_toml)
}

fn lab_on(test: &str, socket: Socket, milter_toml: &str) -> Option<SendmailLab> {
    if !e2e::sendmail_available(test) {
        return None;
    }
    Some(SendmailLab::start_on(socket, milter_toml))
}

/// Loopback trusted (the default), skip_networks default: ours, no X-Originating-IP for a
/// loopback source, tagged outbound.
#[test]
fn trusted_local_submission_to_remote() {
    let Some(lab) = lab(
        "trusted_local_submission_to_remote",
        "[domains]\nlocal = [\"test.example\"]\n",
    ) else {
        return;
    };
    let mid = new_message_id("sm-trusted");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "sendmail trusted",
        &[],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_header("X-Originating-IP", &[]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "127.0.0.1", false, false);
    assert_actions(&event, &["transit_tag.added"], &["originating_ip.added"]);
    assert_eq!(event["queue_id"], qid.as_str());
    assert_eq!(lab.milter.events().len(), 1);
}

/// Loopback trusted with skip_networks emptied: the origin header names 127.0.0.1.
#[test]
fn trusted_local_submission_without_skip() {
    without_skip("trusted_local_submission_without_skip", Socket::Tcp);
}

/// The same with the milter on a unix socket (`S=local:/path`), as a packaged Sendmail would
/// attach it.
#[test]
fn trusted_local_submission_over_a_unix_socket() {
    without_skip("trusted_local_submission_over_a_unix_socket", Socket::Unix);
}

fn without_skip(test: &str, socket: Socket) {
    let Some(lab) = lab_on(
        test,
        socket,
        "[domains]\nlocal = [\"test.example\"]\n\n[rules.originating_ip]\nskip_networks = []\n",
    ) else {
        return;
    };
    let mid = new_message_id("sm-noskip");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "sendmail trusted, no skip",
        &[],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_header("X-Originating-IP", &["[127.0.0.1]"]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "127.0.0.1", false, false);
    assert_actions(&event, &["originating_ip.added", "transit_tag.added"], &[]);
    assert_eq!(event["queue_id"], qid.as_str());
    assert_eq!(lab.milter.events().len(), 1);
}

const EXTERNAL: &str = r#"
[networks]
trusted = []

[domains]
local = ["test.example"]

[rules.originating_ip]
skip_networks = []
"#;

/// Loopback external: inbound mail to a local domain keeps a foreign transit tag and the
/// sender's X-Originating-IP as they are; relay mail is tagged relay above the sender's copy. One event per delivered message,
/// with Sendmail's queue id.
#[test]
fn external_inbound_and_relay() {
    let Some(lab) = lab("external_inbound_and_relay", EXTERNAL) else {
        return;
    };
    let inbound = new_message_id("sm-inbound");
    let msg = compose(
        &inbound,
        "mallory@remote.example",
        &["bob@test.example"],
        "sendmail inbound",
        &[
            ("X-Transit", "outbound"),
            ("X-Originating-IP", "[192.0.2.99]"),
        ],
    );
    lab.swaks("mallory@remote.example", &["bob@test.example"], msg)
        .send(lab.path());
    let (qid1, got, event) = lab.delivered(&inbound, 1);
    got[0].assert_transit_tags(&["outbound"]);
    got[0].assert_header("X-Originating-IP", &["[192.0.2.99]"]);
    assert_event(&event, "inbound", false, "127.0.0.1", false, false);
    assert_actions(
        &event,
        &["transit_tag.foreign_kept"],
        &["originating_ip.added", "transit_tag.added"],
    );

    let relay = new_message_id("sm-relay");
    let msg = compose(
        &relay,
        "someone@remote.example",
        &["carol@transit.example"],
        "sendmail relay",
        &[("X-Transit", "outbound")],
    );
    lab.swaks("someone@remote.example", &["carol@transit.example"], msg)
        .send(lab.path());
    let (qid2, got, event) = lab.delivered(&relay, 1);
    got[0].assert_transit_tags(&["ours:relay", "outbound"]);
    got[0].assert_header("X-Originating-IP", &[]);
    assert_event(&event, "relay", true, "127.0.0.1", false, false);
    assert_actions(
        &event,
        &["transit_tag.added", "transit_tag.foreign_kept"],
        &["originating_ip.added"],
    );

    let mut got: Vec<String> = lab
        .milter
        .events()
        .iter()
        .map(|e| e["queue_id"].as_str().unwrap_or_default().to_string())
        .collect();
    got.sort();
    let mut want = vec![qid1, qid2];
    want.sort();
    assert_eq!(got, want, "one event per delivered message");
}

/// The `{rcpt_mailer}` macro arrives from Sendmail: with no local domains but `relay` in
/// local_mailers, a recipient that Sendmail hands to its relay mailer counts as local.
#[test]
fn rcpt_mailer_from_sendmail() {
    let toml = "[networks]\ntrusted = []\n\n[domains]\nlocal = []\nlocal_mailers = [\"relay\"]\n";
    let Some(lab) = lab("rcpt_mailer_from_sendmail", toml) else {
        return;
    };
    let mid = new_message_id("sm-mailer");
    let msg = compose(
        &mid,
        "someone@remote.example",
        &["carol@transit.example"],
        "sendmail rcpt_mailer",
        &[],
    );
    lab.swaks("someone@remote.example", &["carol@transit.example"], msg)
        .send(lab.path());
    let (_, got, event) = lab.delivered(&mid, 1);
    got[0].assert_transit_tags(&[]);
    assert_event(&event, "inbound", false, "127.0.0.1", false, false);
}

/// SMTP AUTH through Sendmail (Cyrus sasldb): with loopback outside the trusted networks, the
/// login alone makes the sender ours, so the message gets the origin header and the tag, a
/// forged origin header is replaced, and the event says authenticated.
#[test]
fn smtp_auth_makes_the_sender_ours() {
    let Some(lab) = lab("smtp_auth_makes_the_sender_ours", EXTERNAL) else {
        return;
    };
    lab.add_sasl_user("alice", "test.example", "secret");
    let mid = new_message_id("sm-auth");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "sendmail SMTP AUTH",
        &[("X-Originating-IP", "[192.0.2.67]")],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .auth("alice@test.example", "secret")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_header("X-Originating-IP", &["[127.0.0.1]"]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "127.0.0.1", true, false);
    assert_actions(
        &event,
        &["originating_ip.added", "originating_ip.removed_forged"],
        &[],
    );
    assert_eq!(event["queue_id"], qid.as_str());
}
