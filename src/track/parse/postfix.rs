//! Postfix's lines (3.7). The program is told by [`crate::maillog`]; its service (the
//! identifier's last component) decides what a line may say. Queue ids are short upper-case hex
//! (`3B3AE9AC053`, 6+ chars) or long (`3Pt2mN2VXxznjll`, 12+ letters and digits); `NOQUEUE` and
//! lines without a queue id are ignored.
//! - `QID: to=<r>[, orig_to=<o>], relay=R[, conn_use=N], delay=D, delays=a/b/c/d, dsn=X.Y.Z,
//!   status=S (reason)` from any service (smtp, lmtp, local, virtual, relay, error, retry,
//!   discard, pipe, and qmgr, which logs its own deferrals for dead destinations): one
//!   [`Record::Delivery`]. Fields before `status=` are read by key, in any order, unknown ones
//!   skipped (newer Postfix adds `tls=`). The reason is everything after `status=S (` up to the
//!   final `)`: replies hold commas and parentheses. Addresses are taken quote-aware, since
//!   Postfix 3.5+ quotes local parts (`to=<"john doe"@example.org>`) that may hold `>` or `, `.
//!   - `sent`, `deferred`, `bounced` map to [`Status`]; `SOFTBOUNCE` (`soft_bounce = yes`: the
//!     bounce became a deferral, the dsn is 4.x.x and the message stays queued) is
//!     [`Status::Deferred`].
//!   - `deliverable`, `undeliverable`, `undeliverable-but-not-cached` come from address
//!     verification probes and `sendmail -bv`: no message is delivered, so Ignored.
//!   - Any other status word is NotUnderstood, and so is a `to=` not followed by `<`.
//!   - A line cut inside the reason (no closing parenthesis; Postfix cuts lines at about 2000
//!     bytes) still gives its Delivery, the reply as far as it goes and no remote queue id. A line
//!     cut before `status=S (` is NotUnderstood.
//! - qmgr `QID: removed`, postsuper `QID: removed` (postsuper -d): [`Record::Removed`].
//! - qmgr `QID: from=<s>, status=expired, returned to sender` and `status=force-expired`
//!   (postsuper -e, Postfix 3.5+): [`Record::Expired`]. Other qmgr lines with a queue id
//!   (`from=..., size=..., nrcpt=... (queue active)`, `skipped, still being delivered`) are
//!   Ignored, unless they hold another `status=`; a qmgr line with a queue id and unknown text is
//!   NotUnderstood.
//! - bounce `QID: sender non-delivery notification: NEWQID`, and likewise `sender delivery status`
//!   (DSN SUCCESS), `sender delay`, `postmaster non-delivery` and `postmaster delay` notifications:
//!   [`Record::Notification`]. Other bounce lines with a queue id are NotUnderstood.
//! - pickup `NEWQID: uid=N from=<s> orig_id=OLDQID` (mail requeued with postsuper -r):
//!   [`Record::Requeued`]; without `orig_id=` it is new mail, [`Record::Entered`]; other pickup
//!   lines with a queue id are NotUnderstood.
//! - smtpd `QID: client=...` and cleanup `QID: message-id=...`: [`Record::Entered`] (the
//!   message is in our queue; a content filter's hop is known by it).
//! - postsuper `QID: requeued` and `Requeued: N messages`: [`Record::PostsuperRequeued`] and
//!   [`Record::PostsuperRequeuedCount`]; `placed on hold`, `released from hold`, `expired`:
//!   Ignored (the outcome follows in other lines); other postsuper lines with a queue id are
//!   NotUnderstood.
//! - Any other line with a queue id: NotUnderstood when it is a list of fields with a
//!   `status=` field (an outcome in a shape not known: `relay=..., to=<...>, status=sent`),
//!   else Ignored.
//!
//! Relays: `mx.example[192.0.2.1]:25` gives the host, IP and port; `host[private/dovecot-lmtp]`
//! (LMTP over a socket) the host alone, `none` nothing.

use super::{
    other, parse_ip, records, reply::remote_queue_id, Delivery, Malformed, Parsed, Record, Status,
};
use std::net::IpAddr;

/// Reads the message of a line of the Postfix service `service`.
pub(super) fn parse(service: &str, message: &str) -> Parsed {
    if service == "postsuper" {
        if let Some(count) = requeued_count(message) {
            return records(Record::PostsuperRequeuedCount { count });
        }
    }
    let Some((queue_id, rest)) = message.split_once(": ") else {
        return Parsed::Ignored;
    };
    if !is_queue_id(queue_id) {
        return Parsed::Ignored;
    }
    if let Some(after) = rest.strip_prefix("to=") {
        return match delivery(queue_id, service, after) {
            Ok(Some(delivery)) => Parsed::Records(vec![Record::Delivery(delivery)]),
            Ok(None) => Parsed::Ignored,
            Err(Malformed) => Parsed::NotUnderstood,
        };
    }
    let queue_id = queue_id.to_string();
    match service {
        "qmgr" | "nqmgr" | "oqmgr" => {
            if rest == "removed" {
                return records(Record::Removed { queue_id });
            }
            if rest.starts_with("from=<") {
                let expired = [
                    ", status=expired, returned to sender",
                    ", status=force-expired, returned to sender",
                ];
                if expired.iter().any(|e| rest.ends_with(e)) {
                    return records(Record::Expired { queue_id });
                }
                return other(rest, "status=");
            }
            if rest == "skipped, still being delivered" {
                return Parsed::Ignored;
            }
            Parsed::NotUnderstood
        }
        "postsuper" => match rest {
            "removed" => records(Record::Removed { queue_id }),
            "requeued" => records(Record::PostsuperRequeued { queue_id }),
            "placed on hold" | "released from hold" | "expired" => Parsed::Ignored,
            _ => Parsed::NotUnderstood,
        },
        "bounce" => {
            const KINDS: [&str; 5] = [
                "sender non-delivery notification: ",
                "sender delivery status notification: ",
                "sender delay notification: ",
                "postmaster non-delivery notification: ",
                "postmaster delay notification: ",
            ];
            match KINDS.iter().find_map(|k| rest.strip_prefix(k)) {
                Some(notice) if is_queue_id(notice) => records(Record::Notification {
                    queue_id,
                    notice: notice.to_string(),
                }),
                _ => Parsed::NotUnderstood,
            }
        }
        "pickup" => {
            if !rest.starts_with("uid=") {
                return Parsed::NotUnderstood;
            }
            let uid = rest["uid=".len()..]
                .split(' ')
                .next()
                .and_then(|u| u.parse().ok());
            match rest.rsplit_once(" orig_id=") {
                Some((_, original)) if is_queue_id(original) => records(Record::Requeued {
                    queue_id,
                    original: original.to_string(),
                    uid,
                }),
                Some(_) => Parsed::NotUnderstood,
                None => records(Record::Entered { queue_id }),
            }
        }
        "smtpd" if rest.starts_with("client=") => records(Record::Entered { queue_id }),
        "cleanup" if rest.starts_with("message-id=") => records(Record::Entered { queue_id }),
        _ => other(rest, "status="),
    }
}

/// postsuper's "Requeued: N message" / "Requeued: N messages".
fn requeued_count(message: &str) -> Option<u32> {
    let rest = message.strip_prefix("Requeued: ")?;
    let (n, word) = rest.split_once(' ')?;
    matches!(word, "message" | "messages").then(|| n.parse().ok())?
}

/// Short ids are upper-case hex; long ones (`enable_long_queue_ids`) letters and digits.
pub(super) fn is_queue_id(s: &str) -> bool {
    let short = s.len() >= 6
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    let long = s.len() >= 12 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    s.len() <= 32 && (short || long)
}

/// Reads a delivery line from just after "QID: to=". Ok(None) for statuses that are no
/// delivery (address verification).
fn delivery(queue_id: &str, agent: &str, after_to: &str) -> Result<Option<Delivery>, Malformed> {
    let after_to = after_to.strip_prefix('<').ok_or(Malformed)?;
    let (recipient, mut rest) =
        angle_addr(after_to, &[", orig_to=<", ", relay="]).ok_or(Malformed)?;
    let mut original_recipient = None;
    if let Some(after) = rest.strip_prefix(", orig_to=<") {
        let (original, after) = angle_addr(after, &[", relay="]).ok_or(Malformed)?;
        original_recipient = Some(original.to_string());
        rest = after;
    }
    let (mut relay, mut delay, mut delays, mut dsn) = (None, None, None, None);
    let status_text = loop {
        rest = rest.strip_prefix(", ").ok_or(Malformed)?;
        if let Some(status) = rest.strip_prefix("status=") {
            break status;
        }
        // No value before status= holds ", " (relay names, numbers, dsn, tls= summaries).
        let end = rest.find(", ").unwrap_or(rest.len());
        let (key, value) = rest[..end].split_once('=').ok_or(Malformed)?;
        match key {
            "relay" => relay = Some(value),
            "delay" => delay = Some(parse_seconds(value).ok_or(Malformed)?),
            "delays" => delays = Some(parse_delays(value).ok_or(Malformed)?),
            "dsn" => dsn = Some(value.to_string()),
            _ => {}
        }
        rest = &rest[end..];
    };
    // "sent (reply)": the opening parenthesis proves the status word is whole.
    let (word, reason) = status_text.split_once(" (").ok_or(Malformed)?;
    let status = match word {
        "sent" => Status::Sent,
        "deferred" | "SOFTBOUNCE" => Status::Deferred,
        "bounced" => Status::Bounced,
        "deliverable" | "undeliverable" | "undeliverable-but-not-cached" => return Ok(None),
        _ => return Err(Malformed),
    };
    let reason = reason.trim_end();
    let (reply, complete) = match reason.strip_suffix(')') {
        Some(reply) => (reply, true),
        None => (reason, false),
    };
    let (relay_host, relay_ip, relay_port) = relay.map(relay_parts).unwrap_or_default();
    Ok(Some(Delivery {
        queue_id: queue_id.to_string(),
        recipient: recipient.to_string(),
        original_recipient,
        agent: agent.to_string(),
        relay_host,
        relay_ip,
        relay_port,
        delay,
        delays,
        dsn,
        status,
        reply: reply.to_string(),
        remote_queue_id: (status == Status::Sent && complete)
            .then(|| remote_queue_id(reply))
            .flatten(),
    }))
}

/// Takes an address from just after its '<': returns it and the text after its '>', which must
/// start with one of `followers`.
fn angle_addr<'a>(s: &'a str, followers: &[&str]) -> Option<(&'a str, &'a str)> {
    let b = s.as_bytes();
    // A quoted local part may hold '>' and ", ": skip it before looking for the end.
    let from = skip_quoted(b).unwrap_or(0);
    if let Some(end) = b[from..].iter().position(|&c| c == b'>').map(|p| p + from) {
        let rest = &s[end + 1..];
        if followers.iter().any(|f| rest.starts_with(f)) {
            return Some((&s[..end], rest));
        }
    }
    // Unquoted logging (Postfix < 3.5, info_log_address_format = internal) may leave a '>' in the
    // local part: take the first '>' that the next field follows.
    followers
        .iter()
        .filter_map(|f| s.find(&format!(">{f}")))
        .min()
        .map(|end| (&s[..end], &s[end + 1..]))
}

/// The length of the quoted string at the start of `b` (RFC 5322, backslash escapes), if any.
fn skip_quoted(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Postfix writes delays as plain decimals ("0.01", "2", "142488").
fn parse_seconds(s: &str) -> Option<f64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    s.parse().ok()
}

fn parse_delays(s: &str) -> Option<[f64; 4]> {
    let mut parts = s.split('/');
    let mut out = [0.0; 4];
    for slot in &mut out {
        *slot = parse_seconds(parts.next()?)?;
    }
    parts.next().is_none().then_some(out)
}

/// "mx.example[192.0.2.1]:25", "mx.example[2001:db8::1]:25", "host[private/dovecot-lmtp]"
/// (LMTP over a socket), "none", "local", "dovecot" (pipe).
fn relay_parts(value: &str) -> (Option<String>, Option<IpAddr>, Option<u16>) {
    if value == "none" || value.is_empty() {
        return (None, None, None);
    }
    let Some((host, inside, after)) = value.split_once('[').and_then(|(host, rest)| {
        rest.split_once(']')
            .map(|(inside, after)| (host, inside, after))
    }) else {
        return (Some(value.to_string()), None, None);
    };
    let ip = parse_ip(inside);
    let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
    let host = if host.is_empty() {
        ip.map(|ip| ip.to_string())
    } else {
        Some(host.to_string())
    };
    (host, ip, port)
}

#[cfg(test)]
mod tests {
    use super::super::{testing::*, Mta, Parsed, Record};
    use super::*;

    // ---- deliveries ----

    #[test]
    fn postfix_sent_real_line() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[24393]: 3B3AE9AC053: to=<b@remote.example>, relay=127.0.0.1[127.0.0.1]:25302, delay=0.01, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        );
        assert_eq!(
            d,
            Delivery {
                queue_id: "3B3AE9AC053".into(),
                recipient: "b@remote.example".into(),
                original_recipient: None,
                agent: "smtp".into(),
                relay_host: Some("127.0.0.1".into()),
                relay_ip: ip("127.0.0.1"),
                relay_port: Some(25302),
                delay: Some(0.01),
                delays: Some([0.01, 0.01, 0.0, 0.0]),
                dsn: Some("2.0.0".into()),
                status: Status::Sent,
                reply: "250 2.0.0 Ok".into(),
                remote_queue_id: None,
            }
        );
    }

    #[test]
    fn postfix_queued_as_long_id_real_line() {
        let d = one_delivery(
            Mta::Postfix,
            "Dec 26 18:46:01 mail postfix/smtp[12651]: B6CFE52606B3: to=<someoneelse@them.tld>, relay=asuperserver.tld[1.2.3.4]:25, delay=2, delays=0.24/0.04/0.35/1.4, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)",
        );
        assert_eq!(d.queue_id, "B6CFE52606B3");
        assert_eq!(d.relay_host.as_deref(), Some("asuperserver.tld"));
        assert_eq!(d.relay_ip, ip("1.2.3.4"));
        assert_eq!(d.delay, Some(2.0));
        assert_eq!(d.delays, Some([0.24, 0.04, 0.35, 1.4]));
        assert_eq!(d.remote_queue_id.as_deref(), Some("4T02Hr4S5hz9vf6k"));
    }

    #[test]
    fn postfix_quoted_local_part_and_orig_to() {
        let d = one_delivery(
            Mta::Postfix,
            r#"Nov 29 21:06:33 mx postfix/smtp[1]: 3Pt2mN2VXxznjll: to=<"john doe"@example.org>, orig_to=<"doe, john>"@example.org>, relay=mx.example.org[192.0.2.10]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 3B3AE9AC099)"#,
        );
        assert_eq!(d.queue_id, "3Pt2mN2VXxznjll");
        assert_eq!(d.recipient, r#""john doe"@example.org"#);
        assert_eq!(
            d.original_recipient.as_deref(),
            Some(r#""doe, john>"@example.org"#)
        );
        assert_eq!(d.relay_host.as_deref(), Some("mx.example.org"));
        assert_eq!(d.remote_queue_id.as_deref(), Some("3B3AE9AC099"));
    }

    #[test]
    fn a_quoted_local_part_cannot_forge_fields() {
        let d = one_delivery(
            Mta::Postfix,
            r#"Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<"x>, relay=evil[192.0.2.66]:25, status=sent (\" y"@example.org>, relay=mx.example.org[192.0.2.10]:25, delay=1, delays=0/0/0/1, dsn=4.2.0, status=deferred (450 try later)"#,
        );
        assert_eq!(
            d.recipient,
            r#""x>, relay=evil[192.0.2.66]:25, status=sent (\" y"@example.org"#
        );
        assert_eq!(d.relay_ip, ip("192.0.2.10"));
        assert_eq!(d.status, Status::Deferred);
    }

    #[test]
    fn postfix_unquoted_local_part_with_angle_bracket() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<a>b@example.org>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (x)",
        );
        assert_eq!(d.recipient, "a>b@example.org");
        assert_eq!(d.status, Status::Deferred);
    }

    #[test]
    fn postfix_bounce_reply_with_commas_and_nested_parentheses() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[203.0.113.5]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=5.1.1, status=bounced (host mx.example.org[203.0.113.5] said: 550 5.1.1 <x@example.org>: Recipient address rejected: User unknown, sorry (in reply to RCPT TO command))",
        );
        assert_eq!(d.status, Status::Bounced);
        assert_eq!(d.dsn.as_deref(), Some("5.1.1"));
        assert_eq!(
            d.reply,
            "host mx.example.org[203.0.113.5] said: 550 5.1.1 <x@example.org>: Recipient address rejected: User unknown, sorry (in reply to RCPT TO command)"
        );
        assert_eq!(d.remote_queue_id, None);
    }

    #[test]
    fn postfix_relay_none_deferral_with_address_in_reply() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/error[7]: 3B3AE9AC053: to=<x@example.org>, relay=none, delay=3600, delays=3599/1/0/0, dsn=4.4.1, status=deferred (delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: Connection refused)",
        );
        assert_eq!(d.agent, "error");
        assert_eq!(d.relay_host, None);
        assert_eq!(d.relay_ip, None);
        assert_eq!(d.relay_port, None);
        assert_eq!(d.status, Status::Deferred);
        assert_eq!(
            d.reply,
            "delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: Connection refused"
        );
    }

    #[test]
    fn postfix_ipv6_relay_and_conn_use() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example[2001:db8::1]:25, conn_use=3, delay=0.3, delays=0/0/0/0.3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 3B3AE9AC0AA)",
        );
        assert_eq!(d.relay_host.as_deref(), Some("mx.example"));
        assert_eq!(d.relay_ip, ip("2001:db8::1"));
        assert_eq!(d.relay_port, Some(25));
        assert_eq!(d.delay, Some(0.3));
        assert_eq!(d.remote_queue_id.as_deref(), Some("3B3AE9AC0AA"));
    }

    #[test]
    fn postfix_local_lmtp_and_unknown_fields() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/local[1]: 3B3AE9AC053: to=<u@example.org>, orig_to=<alias@example.org>, relay=local, delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, status=sent (delivered to mailbox)",
        );
        assert_eq!(d.agent, "local");
        assert_eq!(d.relay_host.as_deref(), Some("local"));
        assert_eq!(d.original_recipient.as_deref(), Some("alias@example.org"));
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/lmtp[1]: 3B3AE9AC053: to=<u@example.org>, relay=mail.example.org[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, tls=!REQUIRETLS, dsn=2.0.0, status=sent (250 2.0.0 <u@example.org> 8Kq0Ku5RZ2W3XgAAq4jfBQ Saved)",
        );
        assert_eq!(d.agent, "lmtp");
        assert_eq!(d.relay_host.as_deref(), Some("mail.example.org"));
        assert_eq!(d.relay_ip, None);
        assert_eq!(d.dsn.as_deref(), Some("2.0.0"));
        assert_eq!(d.remote_queue_id, None);
    }

    #[test]
    fn postfix_softbounce_is_a_deferral_and_probes_are_ignored() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=4.1.1, status=SOFTBOUNCE (host mx.example.org[192.0.2.1] said: 550 5.1.1 unknown (in reply to RCPT TO command))",
        );
        assert_eq!(d.status, Status::Deferred);
        for word in [
            "deliverable",
            "undeliverable",
            "undeliverable-but-not-cached",
        ] {
            let line = format!("Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.1.5, status={word} (250 2.1.5 Ok)");
            assert_eq!(run(Mta::Postfix, &line), Parsed::Ignored, "{word}");
        }
        let odd = "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=none, delay=1, delays=0/0/0/1, dsn=2.0.0, status=teleported (x)";
        assert_eq!(run(Mta::Postfix, odd), Parsed::NotUnderstood);
    }

    #[test]
    fn truncated_postfix_lines() {
        let full = "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)";
        for cut in [60, 80, 100, 140, full.find("status=sent").unwrap() + 9] {
            assert_eq!(
                run(Mta::Postfix, &full[..cut]),
                Parsed::NotUnderstood,
                "{}",
                &full[..cut]
            );
        }
        // Cut inside the reply: the delivery stands, but a cut id is no id.
        let d = one_delivery(Mta::Postfix, &full[..full.len() - 5]);
        assert_eq!(d.status, Status::Sent);
        assert_eq!(d.reply, "250 2.0.0 Ok: queued as 4T02Hr4S5hz9");
        assert_eq!(d.remote_queue_id, None);
        let bad_delay = full.replace("delay=1,", "delay=inf,");
        assert_eq!(run(Mta::Postfix, &bad_delay), Parsed::NotUnderstood);
    }

    #[test]
    fn non_ascii_text_is_kept() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<jörg@exämple.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.example.org[192.0.2.1] said: 550 5.7.1 Zurückgewiesen \u{fffd}\u{fffd} (in reply to end of DATA command))",
        );
        assert_eq!(d.recipient, "jörg@exämple.org");
        assert!(d.reply.contains("Zurückgewiesen \u{fffd}\u{fffd}"));
        let lossy = String::from_utf8_lossy(
            b"Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<\xff\xfe@x>, relay=n\xc3",
        );
        assert_eq!(run(Mta::Postfix, &lossy), Parsed::NotUnderstood);
    }

    #[test]
    fn postfix_syslog_name_variants() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix-mx/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        );
        assert_eq!(d.agent, "smtp");
        let l = crate::maillog::SyslogLine::split(
            "Nov 29 21:06:33 mx postfix/submission/smtpd[2]: 3B3AE9AC053: client=c.example.org[192.0.2.9]",
        )
        .unwrap();
        assert_eq!(l.ident, "postfix/submission/smtpd");
        assert_eq!(
            super::super::parse(Mta::Postfix, l.ident, l.message),
            Parsed::Records(vec![Record::Entered {
                queue_id: "3B3AE9AC053".into()
            }])
        );
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix-mx/qmgr[2]: 3B3AE9AC053: removed"
            ),
            Parsed::Records(vec![Record::Removed {
                queue_id: "3B3AE9AC053".into()
            }])
        );
    }

    // ---- queue events ----

    #[test]
    fn postfix_removed_by_qmgr_and_postsuper() {
        for line in [
            "Nov 29 21:06:33 mx postfix/qmgr[24385]: 3B3AE9AC053: removed",
            "Nov 29 21:06:33 mx postfix/postsuper[9]: 3B3AE9AC053: removed",
            "Nov 29 21:06:33 mx postfix/oqmgr[24385]: 3B3AE9AC053: removed",
        ] {
            assert_eq!(
                one_record(Mta::Postfix, line),
                Record::Removed {
                    queue_id: "3B3AE9AC053".into()
                }
            );
        }
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/postsuper[9]: 3B3AE9AC053: requeued"
            ),
            Record::PostsuperRequeued {
                queue_id: "3B3AE9AC053".into()
            }
        );
        for (line, count) in [("Requeued: 1 message", 1), ("Requeued: 12 messages", 12)] {
            let line = format!("Nov 29 21:06:33 mx postfix/postsuper[9]: {line}");
            assert_eq!(
                one_record(Mta::Postfix, &line),
                Record::PostsuperRequeuedCount { count }
            );
        }
        for other in ["placed on hold", "released from hold", "expired"] {
            let line = format!("Nov 29 21:06:33 mx postfix/postsuper[9]: 3B3AE9AC053: {other}");
            assert_eq!(run(Mta::Postfix, &line), Parsed::Ignored, "{other}");
        }
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/postsuper[9]: Deleted: 3 messages"
            ),
            Parsed::Ignored
        );
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/postsuper[9]: 3B3AE9AC053: vanished"
            ),
            Parsed::NotUnderstood
        );
    }

    #[test]
    fn postfix_expired_real_line_and_force_expired() {
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Apr 10 14:50:16 mail postfix/qmgr[3663]: BACE842E72: from=<noreply@domain.com>, status=expired, returned to sender"
            ),
            Record::Expired {
                queue_id: "BACE842E72".into()
            }
        );
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Apr 10 14:50:16 mail postfix/qmgr[3663]: 3Pt2mN2VXxznjll: from=<>, status=force-expired, returned to sender"
            ),
            Record::Expired {
                queue_id: "3Pt2mN2VXxznjll".into()
            }
        );
    }

    #[test]
    fn other_qmgr_lines() {
        assert_eq!(
            run(Mta::Postfix, "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: from=<a@example.org>, size=1234, nrcpt=1 (queue active)"),
            Parsed::Ignored
        );
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: skipped, still being delivered"
            ),
            Parsed::Ignored
        );
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: teleported"
            ),
            Parsed::NotUnderstood
        );
        // qmgr's own deferral for a dead destination is a delivery record.
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: to=<x@example.org>, relay=none, delay=12, delays=12/0/0/0, dsn=4.4.1, status=deferred (delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: Connection timed out)",
        );
        assert_eq!(d.agent, "qmgr");
    }

    #[test]
    fn postfix_bounce_notifications() {
        for kind in [
            "sender non-delivery",
            "sender delivery status",
            "sender delay",
            "postmaster non-delivery",
        ] {
            let line = format!(
                "Nov 29 21:06:33 mx postfix/bounce[5]: 3B3AE9AC053: {kind} notification: 4T02Hr4S5hz9vf6k"
            );
            assert_eq!(
                one_record(Mta::Postfix, &line),
                Record::Notification {
                    queue_id: "3B3AE9AC053".into(),
                    notice: "4T02Hr4S5hz9vf6k".into()
                },
                "{kind}"
            );
        }
        assert_eq!(
            run(Mta::Postfix, "Nov 29 21:06:33 mx postfix/bounce[5]: 3B3AE9AC053: sender non-delivery notification: ?"),
            Parsed::NotUnderstood
        );
    }

    #[test]
    fn postfix_pickup_requeue() {
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/pickup[8]: 4T02Hr4S5hz9vf6k: uid=0 from=<a@example.org> orig_id=3B3AE9AC053"
            ),
            Record::Requeued {
                queue_id: "4T02Hr4S5hz9vf6k".into(),
                original: "3B3AE9AC053".into(),
                uid: Some(0),
            }
        );
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/pickup[8]: 3B3AE9AC053: uid=1000 from=<a@example.org>"
            ),
            Record::Entered {
                queue_id: "3B3AE9AC053".into()
            }
        );
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/cleanup[3]: 3B3AE9AC053: message-id=<1@example.org>"
            ),
            Record::Entered {
                queue_id: "3B3AE9AC053".into()
            }
        );
    }

    #[test]
    fn postfix_lines_we_do_not_track() {
        for line in [
            "Nov 29 21:06:33 mx postfix/smtpd[2]: NOQUEUE: reject: RCPT from c.example.org[192.0.2.9]: 554 5.7.1 <x@example.org>: Relay access denied; from=<a@example.org> to=<x@example.org> proto=ESMTP helo=<c>",
            "Nov 29 21:06:33 mx postfix/smtpd[2]: connect from c.example.org[192.0.2.9]",
            "Nov 29 21:06:33 mx postfix/smtp[1]: warning: 3B3AE9AC053: something",
            "Nov 29 21:06:33 mx postfix/smtp[1]: Trusted TLS connection established to mx.example.org[192.0.2.1]:25: TLSv1.3",
            "Nov 29 21:06:33 mx postfixadmin[1]: 3B3AE9AC053: removed",
            "Nov 29 21:06:33 mx dovecot: imap-login: Login: user=<u@example.org>",
            "Nov 29 21:06:33 mx CRON[77]: (root) CMD (true)",
            "Nov 29 21:06:33 mx sendmail[1]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, mailer=esmtp, pri=1, dsn=2.0.0, stat=Sent",
        ] {
            assert_eq!(run(Mta::Postfix, line), Parsed::Ignored, "{line}");
        }
    }

    /// A line that reads like an outcome but in a shape not known is counted, so that a change
    /// of the log's format shows; lines that only quote such text stay ignored.
    #[test]
    fn outcomes_of_unknown_shape_are_not_understood() {
        for line in [
            // No angle brackets around the recipient.
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=x@example.org, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (x)",
            // The fields in another order.
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: relay=mx.example.org[192.0.2.1]:25, to=<x@example.org>, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
            "Nov 29 21:06:33 mx postfix/lmtp[1]: 3B3AE9AC053: orig_to=<x@example.org>, status=sent (250 2.0.0 Ok)",
            // A qmgr status other than expiry.
            "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: from=<a@example.org>, status=returned, sent back to sender",
            "Nov 29 21:06:33 mx postfix-mx/qmgr[1]: 3B3AE9AC053: from=<a@example.org>, size=1234, nrcpt=1, status=discarded",
        ] {
            assert_eq!(run(Mta::Postfix, line), Parsed::NotUnderstood, "{line}");
        }
        // Text of the message or of a reply that happens to hold such words.
        for line in [
            "Nov 29 21:06:33 mx postfix/cleanup[3]: 3B3AE9AC053: warning: header Subject: to=<x>, status=sent (ok) from c.example.org[192.0.2.9]; from=<a@example.org> to=<x@example.org> proto=ESMTP helo=<c>",
            "Nov 29 21:06:33 mx postfix/smtpd[2]: 3B3AE9AC053: reject: RCPT from c.example.org[192.0.2.9]: 450 4.7.1 <x@example.org>: go away, status=busy; from=<a@example.org> to=<x@example.org> proto=ESMTP helo=<c>",
            "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: from=<a@example.org>, size=1234, nrcpt=1 (queue active)",
        ] {
            assert_eq!(run(Mta::Postfix, line), Parsed::Ignored, "{line}");
        }
    }
}
