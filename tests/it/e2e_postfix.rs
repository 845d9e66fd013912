//! End to end behind a real Postfix (private instance per test, see tests/it/harness/e2e.rs):
//! every scenario runs with the milter on a unix socket and on TCP. Mail goes in by swaks
//! (XCLIENT, SMTP AUTH) or the `sendmail` command, and is asserted where it arrives (an
//! smtp-sink capture, parsed with mail-parser) and in the event that the milter recorded for it.
//!
//! Postfix setup: relay_domains = test.example transit.example, relayhost = the sink, so all
//! mail ends at the sink; the milter hosts test.example (domains.local), transit.example is a
//! domain we only relay for, remote.example is anywhere else. 10.9.9.0/24 is a trusted network
//! with the webmail host 10.9.9.9.

use crate::e2e::{self, assert_actions, assert_event, compose, new_message_id, PostfixLab, Socket};

const MILTER: &str = r#"
[networks]
trusted = ["127.0.0.0/8", "::1/128", "10.9.9.0/24"]
webmail = ["10.9.9.9/32"]

[domains]
local = ["test.example"]
"#;

const MAIN_CF: &str = "mynetworks = 127.0.0.0/8 10.9.9.0/24";

fn lab(test: &str, socket: Socket) -> Option<PostfixLab> {
    if !e2e::postfix_available(test) {
        return None;
    }
    Some(PostfixLab::start(socket, MILTER, MAIN_CF))
}

/// Runs a scenario once with the milter on a unix socket and once on TCP.
macro_rules! unix_and_tcp {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn unix() {
                super::$name(concat!(stringify!($name), "::unix"), super::Socket::Unix);
            }
            #[test]
            fn tcp() {
                super::$name(concat!(stringify!($name), "::tcp"), super::Socket::Tcp);
            }
        }
    )*};
}

unix_and_tcp!(
    xclient_login_ipv4,
    xclient_login_ipv6,
    milter_protocol_2,
    smtp_auth_sasldb,
    webmail_by_xclient,
    webmail_by_header,
    inbound_external,
    relay_external,
    local_and_remote_recipient,
    local_submission_sendmail,
    milter_down_tempfails,
    events_match_maillog,
);

/// Authenticated submission from an IPv4 client (XCLIENT LOGIN): our header with the client
/// address, the forged copy removed; the transit tag the client brought is kept (it vouches
/// for nothing) and ours goes above it.
fn xclient_login_ipv4(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    let mid = new_message_id("auth4");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "authenticated IPv4",
        &[("X-Originating-IP", "[192.0.2.66]"), ("X-Transit", "relay")],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=203.0.113.7 LOGIN=alice")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_header("X-Originating-IP", &["[203.0.113.7]"]);
    got[0].assert_transit_tags(&["ours:outbound", "relay"]);
    assert_event(&event, "outbound", true, "203.0.113.7", true, false);
    assert_actions(
        &event,
        &[
            "originating_ip.added",
            "originating_ip.removed_forged",
            "transit_tag.added",
            "transit_tag.foreign_kept",
        ],
        &[],
    );
    lab.assert_events_are(&[&qid]);
}

/// The same from an IPv6 client: the header carries the address without Postfix's "IPv6:".
fn xclient_login_ipv6(test: &str, socket: Socket) {
    if !e2e::postfix_available(test) {
        return;
    }
    // XCLIENT takes an IPv6 ADDR only when smtpd has IPv6 enabled.
    let lab = PostfixLab::start(
        socket,
        MILTER,
        &format!("{MAIN_CF}\ninet_protocols = ipv4, ipv6"),
    );
    let mid = new_message_id("auth6");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "authenticated IPv6",
        &[],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=IPv6:2001:db8::7 LOGIN=alice")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_header("X-Originating-IP", &["[2001:db8::7]"]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "2001:db8::7", true, false);
    assert_actions(
        &event,
        &["originating_ip.added", "transit_tag.added"],
        &["originating_ip.removed_forged"],
    );
    lab.assert_events_are(&[&qid]);
}

/// Postfix speaking milter protocol version 2 (`milter_protocol = 2`, as for old milters):
/// it still offers the header actions and the macro feature, so the message is edited as at
/// version 6, and Postfix takes the milter's reply without complaint.
fn milter_protocol_2(test: &str, socket: Socket) {
    if !e2e::postfix_available(test) {
        return;
    }
    let lab = PostfixLab::start(socket, MILTER, &format!("{MAIN_CF}\nmilter_protocol = 2"));
    let mid = new_message_id("proto2");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "milter protocol 2",
        &[("X-Originating-IP", "[192.0.2.66]")],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=203.0.113.7 LOGIN=alice")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_header("X-Originating-IP", &["[203.0.113.7]"]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "203.0.113.7", true, false);
    assert_actions(
        &event,
        &[
            "originating_ip.added",
            "originating_ip.removed_forged",
            "transit_tag.added",
        ],
        &[],
    );
    assert!(event.get("edits").is_none(), "{event}");
    let maillog = lab.postfix.maillog();
    assert!(
        !maillog.contains("warning: milter"),
        "Postfix complained about the milter:\n{maillog}"
    );
    lab.assert_events_are(&[&qid]);
}

/// Real SMTP AUTH (Cyrus sasldb, PLAIN) from a client whose address XCLIENT sets.
fn smtp_auth_sasldb(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    lab.postfix.add_sasl_user("alice", "test.example", "secret");
    let mid = new_message_id("sasl");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "SMTP AUTH",
        &[("X-Originating-IP", "[192.0.2.67]")],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=198.51.100.20")
        .auth("alice@test.example", "secret")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_header("X-Originating-IP", &["[198.51.100.20]"]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "198.51.100.20", true, false);
    assert_actions(
        &event,
        &["originating_ip.added", "originating_ip.removed_forged"],
        &[],
    );
    let log = lab.postfix.log_of(&qid).join("\n");
    assert!(
        log.contains("sasl_username=alice@test.example"),
        "maillog lacks the SASL login:\n{log}"
    );
    lab.assert_events_are(&[&qid]);
}

/// A webmail that hands Postfix the browser's address by XCLIENT (Roundcube
/// smtp_xclient_addr + smtp_xclient_login): the browser's address is the client address.
fn webmail_by_xclient(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    let mid = new_message_id("wm-xclient");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "webmail by XCLIENT",
        &[("X-Originating-IP", "[10.0.0.1]")],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=198.51.100.44 LOGIN=alice")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_header("X-Originating-IP", &["[198.51.100.44]"]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "198.51.100.44", true, false);
    lab.assert_events_are(&[&qid]);
}

/// A webmail host (networks.webmail, in a trusted network, no login) that names the browser's
/// address in the header: validated and written afresh. A value that is not one address is
/// dropped, never copied.
fn webmail_by_header(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    let good = new_message_id("wm-header");
    let msg = compose(
        &good,
        "alice@test.example",
        &["bob@remote.example"],
        "webmail by header",
        &[("X-Originating-IP", "198.51.100.45")],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=10.9.9.9")
        .send(lab.path());
    let (qid1, got, event) = lab.delivered(&good, 1);
    got[0].assert_header("X-Originating-IP", &["[198.51.100.45]"]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "10.9.9.9", false, true);
    assert_actions(&event, &["originating_ip.from_webmail"], &[]);

    let bad = new_message_id("wm-garbage");
    let msg = compose(
        &bad,
        "alice@test.example",
        &["bob@remote.example"],
        "webmail with a bad header",
        &[("X-Originating-IP", "198.51.100.46, 192.0.2.1")],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=10.9.9.9")
        .send(lab.path());
    let (qid2, got, event) = lab.delivered(&bad, 1);
    let values = got[0].header_values("X-Originating-IP");
    assert!(
        values.len() <= 1
            && values.iter().all(|v| {
                v.starts_with('[')
                    && v.ends_with(']')
                    && v[1..v.len() - 1].parse::<std::net::IpAddr>().is_ok()
                    && !v.contains("198.51.100.46")
            }),
        "a bad webmail value must be dropped, got {values:?}"
    );
    assert_event(&event, "outbound", true, "10.9.9.9", false, true);
    assert_actions(&event, &["originating_ip.dropped_invalid"], &[]);
    lab.assert_events_are(&[&qid1, &qid2]);
}

/// External sender to a local domain: a foreign transit tag and the sender's own
/// X-Originating-IP are kept as they are, nothing is added.
fn inbound_external(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    let mid = new_message_id("inbound");
    let msg = compose(
        &mid,
        "mallory@remote.example",
        &["bob@test.example"],
        "inbound",
        &[
            ("X-Transit", "outbound"),
            ("X-Originating-IP", "[192.0.2.99]"),
        ],
    );
    lab.swaks("mallory@remote.example", &["bob@test.example"], msg)
        .xclient("ADDR=198.51.100.77")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_transit_tags(&["outbound"]);
    got[0].assert_header("X-Originating-IP", &["[192.0.2.99]"]);
    assert_event(&event, "inbound", false, "198.51.100.77", false, false);
    assert_actions(
        &event,
        &["transit_tag.foreign_kept"],
        &[
            "originating_ip.added",
            "originating_ip.removed_forged",
            "transit_tag.added",
        ],
    );
    lab.assert_events_are(&[&qid]);
}

/// External sender to a domain we only relay for: tagged relay above the sender's copy,
/// direction relay.
fn relay_external(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    let mid = new_message_id("relay");
    let msg = compose(
        &mid,
        "someone@remote.example",
        &["carol@transit.example"],
        "relay",
        &[("X-Transit", "outbound")],
    );
    lab.swaks("someone@remote.example", &["carol@transit.example"], msg)
        .xclient("ADDR=198.51.100.78")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&mid, 1);
    got[0].assert_transit_tags(&["ours:relay", "outbound"]);
    got[0].assert_header("X-Originating-IP", &[]);
    assert_event(&event, "relay", true, "198.51.100.78", false, false);
    assert_actions(
        &event,
        &["transit_tag.added", "transit_tag.foreign_kept"],
        &["originating_ip.added"],
    );
    lab.assert_events_are(&[&qid]);
}

/// One message to a local and a remote recipient: transit, outbound, one event listing both.
fn local_and_remote_recipient(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    let mid = new_message_id("mixed");
    let to = ["bob@test.example", "dave@remote.example"];
    let msg = compose(&mid, "alice@test.example", &to, "mixed recipients", &[]);
    lab.swaks("alice@test.example", &to, msg)
        .xclient("ADDR=203.0.113.8 LOGIN=alice")
        .send(lab.path());
    // relay (test.example) and smtp (remote.example) are two transports: two deliveries.
    let (qid, got, event) = lab.delivered(&mid, 2);
    let mut rcpts = Vec::new();
    for copy in &got {
        copy.assert_header("X-Originating-IP", &["[203.0.113.8]"]);
        copy.assert_transit_tags(&["ours:outbound"]);
        // "<addr> ORCPT=..." : the address is the first word.
        rcpts.extend(
            copy.rcpt_args()
                .iter()
                .filter_map(|a| a.split_whitespace().next().map(str::to_string)),
        );
    }
    rcpts.sort();
    assert_eq!(rcpts, ["<bob@test.example>", "<dave@remote.example>"]);
    assert_event(&event, "outbound", true, "203.0.113.8", true, false);
    assert_eq!(
        e2e::event_recipients(&event),
        [
            ("bob@test.example".to_string(), true),
            ("dave@remote.example".to_string(), false)
        ]
    );
    lab.assert_events_are(&[&qid]);
}

/// The `sendmail` command (pickup, non_smtpd_milters): the milter sees 127.0.0.1, so the
/// sender is ours, loopback gets no header (skip_networks), remote mail is tagged; an own hop
/// keeps a header it already carries.
fn local_submission_sendmail(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    let out = new_message_id("pickup-out");
    let msg = compose(
        &out,
        "alice@test.example",
        &["dave@remote.example"],
        "pickup outbound",
        &[],
    );
    lab.postfix
        .sendmail("alice@test.example", &["dave@remote.example"], &msg);
    let (qid1, got, event) = lab.delivered(&out, 1);
    got[0].assert_header("X-Originating-IP", &[]);
    got[0].assert_transit_tags(&["ours:outbound"]);
    assert_event(&event, "outbound", true, "127.0.0.1", false, false);
    assert_actions(&event, &["transit_tag.added"], &["originating_ip.added"]);

    let internal = new_message_id("pickup-internal");
    let msg = compose(
        &internal,
        "alice@test.example",
        &["bob@test.example"],
        "pickup internal",
        &[("X-Originating-IP", "[192.0.2.55]")],
    );
    lab.postfix
        .sendmail("alice@test.example", &["bob@test.example"], &msg);
    let (qid2, got, event) = lab.delivered(&internal, 1);
    got[0].assert_header("X-Originating-IP", &["[192.0.2.55]"]);
    got[0].assert_transit_tags(&[]);
    assert_event(&event, "internal", false, "127.0.0.1", false, false);
    assert_actions(
        &event,
        &[],
        &[
            "originating_ip.added",
            "originating_ip.removed_forged",
            "transit_tag.added",
        ],
    );
    lab.assert_events_are(&[&qid1, &qid2]);
}

/// milter_default_action = tempfail: while the milter is down, SMTP clients get a 4xx and
/// nothing is queued; after a restart mail flows again.
fn milter_down_tempfails(test: &str, socket: Socket) {
    let Some(mut lab) = lab(test, socket) else {
        return;
    };
    lab.milter.stop();
    let down = new_message_id("down");
    let msg = compose(
        &down,
        "alice@test.example",
        &["bob@remote.example"],
        "while the milter is down",
        &[],
    );
    let (ok, transcript) = lab
        .swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=203.0.113.9 LOGIN=alice")
        .run(lab.path());
    assert!(!ok, "mail was accepted without the milter:\n{transcript}");
    assert!(
        transcript.contains("<** 451 4.7.1"),
        "expected a 451 4.7.1 tempfail:\n{transcript}"
    );
    assert!(
        lab.postfix.queue_id(&down).is_none(),
        "a message was queued while the milter was down:\n{}",
        lab.context()
    );
    // Postfix logs the reject at whichever command first met the missing milter: CONNECT,
    // EHLO, XCLIENT or MAIL, which varies with when its smtpd process started.
    let log = lab.postfix.maillog();
    assert!(
        log.contains(&format!(
            "connect to Milter service {}",
            lab.milter.postfix_spec
        )) && log
            .lines()
            .any(|l| l.contains("milter-reject: ") && l.contains("451 4.7.1")),
        "maillog does not mention the milter failure:\n{log}"
    );

    lab.milter.restart();
    let up = new_message_id("up-again");
    let msg = compose(
        &up,
        "alice@test.example",
        &["bob@remote.example"],
        "after restart",
        &[],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=203.0.113.9 LOGIN=alice")
        .send(lab.path());
    let (qid, got, event) = lab.delivered(&up, 1);
    got[0].assert_header("X-Originating-IP", &["[203.0.113.9]"]);
    assert_event(&event, "outbound", true, "203.0.113.9", true, false);
    assert!(lab.sink.with_message_id(&down).is_empty());
    lab.assert_events_are(&[&qid]);
}

/// Several kinds of mail through one instance: exactly one event per delivered message, each
/// with the queue id that Postfix logged (and wrote into its Received header).
fn events_match_maillog(test: &str, socket: Socket) {
    let Some(lab) = lab(test, socket) else { return };
    let mut qids = Vec::new();
    let cases: [(&str, &'static str, &'static str, Option<&str>); 4] = [
        (
            "m-auth",
            "alice@test.example",
            "bob@remote.example",
            Some("ADDR=203.0.113.10 LOGIN=alice"),
        ),
        (
            "m-inbound",
            "eve@remote.example",
            "bob@test.example",
            Some("ADDR=198.51.100.10"),
        ),
        (
            "m-relay",
            "eve@remote.example",
            "carol@transit.example",
            Some("ADDR=198.51.100.11"),
        ),
        (
            "m-pickup",
            "alice@test.example",
            "dave@remote.example",
            None,
        ),
    ];
    let mut mids = Vec::new();
    for (tag, from, to, xclient) in cases {
        let mid = new_message_id(tag);
        let msg = compose(&mid, from, &[to], tag, &[]);
        match xclient {
            Some(x) => {
                lab.swaks(from, &[to], msg).xclient(x).send(lab.path());
            }
            None => lab.postfix.sendmail(from, &[to], &msg),
        }
        mids.push(mid);
    }
    for mid in &mids {
        let (qid, _, event) = lab.delivered(mid, 1);
        assert_eq!(event["queue_id"], qid.as_str());
        qids.push(qid);
    }
    let refs: Vec<&str> = qids.iter().map(String::as_str).collect();
    lab.assert_events_are(&refs);
}
