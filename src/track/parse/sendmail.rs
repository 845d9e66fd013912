//! Sendmail's lines (8.17). The program is told by [`crate::maillog`] (`sendmail`, `sm-mta`,
//! the MSP queue runner's `sm-msp-queue`, ...). Queue ids are 8 to 24 letters and digits
//! (`x9EL4XLo001111`).
//! - `QID: to=<a@x>,<b@y>, [ctladdr=<c> (uid/gid),] delay=HH:MM:SS, xdelay=HH:MM:SS, mailer=M,
//!   pri=N, relay=host. [ip], dsn=X.Y.Z, stat=TEXT`: one [`Record::Delivery`] per recipient.
//!   The recipient list is split at commas outside quotes and brackets. `stat=` is the last field
//!   and takes the rest of the line. The status comes from the dsn class (2 sent, 4 deferred,
//!   5 bounced); without a dsn from the stat text (`Sent...`, `Deferred...`), and a line with
//!   neither (`stat=queued`, `stat=quarantined`: no delivery attempt) is Ignored. The reply is
//!   the text in `Sent (...)`, else the whole stat text (`Deferred: Connection refused by ...`,
//!   `User unknown`). Delays with days read `D+HH:MM:SS`.
//!   A `to=` line that cannot be read (cut, no `stat=`, a bad delay, no `mailer=`, a dsn of another
//!   class) is NotUnderstood.
//! - `QID: to=<a>,<b>, [more], delay=...`: Sendmail splits a long recipient list over several
//!   lines and repeats all fields on each, so each line gives its own recipients' Deliveries.
//! - `QID: NEWQID: DSN: text` (also `return to sender:`, `sender notify:`, `postmaster notify:`):
//!   [`Record::Notification`].
//! - `QID: done; delay=..., ntries=N` (only at LogLevel 10 and above): Sendmail logs it right
//!   after unlinking the queue files, so [`Record::Removed`].
//! - A list of fields with a `stat=` field that is no `to=` line (an outcome in a shape not
//!   known): NotUnderstood.
//! - Everything else (`from=`, `NOQUEUE:`, `STARTTLS=`, milter and ruleset lines, `clone:`) is
//!   Ignored.
//!
//! Relays: the host drops the trailing root dot and address-literal brackets, so
//! `mx.example. [192.0.2.1]` gives the host `mx.example` as Postfix's `mx.example[192.0.2.1]:25`
//! does.

use super::{
    other, parse_ip, records, reply::remote_queue_id, starts_with_key, strip_ipv6_tag,
    top_level_commas, Delivery, Malformed, Parsed, Record, Status,
};
use std::net::IpAddr;

/// Reads the message of a line of Sendmail's.
pub(super) fn parse(message: &str) -> Parsed {
    let Some((queue_id, rest)) = message.split_once(": ") else {
        return Parsed::Ignored;
    };
    if !is_queue_id(queue_id) {
        return Parsed::Ignored;
    }
    if let Some(after) = rest.strip_prefix("to=") {
        return match delivery(queue_id, after) {
            Ok(Some(deliveries)) => {
                Parsed::Records(deliveries.into_iter().map(Record::Delivery).collect())
            }
            Ok(None) => Parsed::Ignored,
            Err(Malformed) => Parsed::NotUnderstood,
        };
    }
    let queue_id = queue_id.to_string();
    if rest.starts_with("done; ") {
        return records(Record::Removed { queue_id });
    }
    if let Some((notice, text)) = rest.split_once(": ") {
        let kind = text.split_once(':').map_or(text, |(kind, _)| kind);
        let kinds = [
            "DSN",
            "return to sender",
            "sender notify",
            "postmaster notify",
        ];
        if is_queue_id(notice) && kinds.contains(&kind) {
            return records(Record::Notification {
                queue_id,
                notice: notice.to_string(),
            });
        }
    }
    other(rest, "stat=")
}

/// "x9EL4XLo001111": 14 characters with a 5-digit pid, longer with larger pids.
fn is_queue_id(s: &str) -> bool {
    (8..=24).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Reads a delivery line from just after "QID: to=". Ok(None) for lines that record no
/// delivery attempt.
fn delivery(queue_id: &str, after_to: &str) -> Result<Option<Vec<Delivery>>, Malformed> {
    let (list, mut rest) = split_to_list(after_to).ok_or(Malformed)?;
    if rest.is_empty() {
        // "to=<a>,<b>, [more]" alone: the old short-syslog-buffer format, fields on other lines.
        return Ok(None);
    }
    let (mut delay, mut mailer, mut relay, mut dsn) = (None, None, None, None);
    let stat = loop {
        rest = rest.strip_prefix(", ").ok_or(Malformed)?;
        if let Some(stat) = rest.strip_prefix("stat=") {
            break stat.trim_end();
        }
        let end = next_field(rest).unwrap_or(rest.len());
        let (key, value) = rest[..end].split_once('=').ok_or(Malformed)?;
        match key {
            "delay" => delay = Some(parse_sendmail_delay(value).ok_or(Malformed)?),
            "mailer" => mailer = Some(value),
            "relay" => relay = Some(value),
            "dsn" => dsn = Some(value),
            _ => {}
        }
        rest = &rest[end..];
    };
    if stat == "queued" {
        return Ok(None);
    }
    let status = match dsn.and_then(|d| d.bytes().next()) {
        Some(b'2') => Status::Sent,
        Some(b'4') => Status::Deferred,
        Some(b'5') => Status::Bounced,
        _ if stat.starts_with("Sent") => Status::Sent,
        _ if stat.starts_with("Deferred") => Status::Deferred,
        None => return Ok(None),
        Some(_) => return Err(Malformed),
    };
    let agent = mailer.ok_or(Malformed)?;
    let (reply, complete) = match stat.strip_prefix("Sent (") {
        Some(inner) => match inner.strip_suffix(')') {
            Some(inner) => (inner, true),
            None => (inner, false),
        },
        None => (stat, true),
    };
    let remote_queue_id = (status == Status::Sent && complete)
        .then(|| remote_queue_id(reply))
        .flatten();
    let (relay_host, relay_ip) = relay.map(relay_parts).unwrap_or_default();
    let deliveries: Vec<Delivery> = split_top_level(list)
        .into_iter()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|recipient| Delivery {
            queue_id: queue_id.to_string(),
            recipient: strip_angles(recipient).to_string(),
            original_recipient: None,
            agent: agent.to_string(),
            relay_host: relay_host.clone(),
            relay_ip,
            relay_port: None,
            delay,
            delays: None,
            dsn: dsn.map(str::to_string),
            status,
            reply: reply.to_string(),
            remote_queue_id: remote_queue_id.clone(),
        })
        .collect();
    if deliveries.is_empty() {
        return Err(Malformed);
    }
    Ok(Some(deliveries))
}

/// Splits "to=" content into the recipient list and the rest (which starts with ", key=").
/// A "[more]" marker after the list's trailing comma is dropped.
fn split_to_list(s: &str) -> Option<(&str, &str)> {
    for comma in top_level_commas(s) {
        let after = &s[comma + 1..];
        if let Some(rest) = after.strip_prefix(" [more]") {
            return Some((&s[..comma], rest));
        }
        if after.strip_prefix(' ').is_some_and(starts_with_key) {
            return Some((&s[..comma], &s[comma..]));
        }
    }
    None
}

/// Where the field at the start of `s` ends: the first top-level ", key=".
fn next_field(s: &str) -> Option<usize> {
    top_level_commas(s).into_iter().find(|&comma| {
        s[comma + 1..]
            .strip_prefix(' ')
            .is_some_and(starts_with_key)
    })
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for comma in top_level_commas(s) {
        parts.push(&s[start..comma]);
        start = comma + 1;
    }
    parts.push(&s[start..]);
    parts
}

/// "<a@x>" gives "a@x"; "Name <a@x>" gives "a@x"; a bare "user" or "\"|program\"" stays.
fn strip_angles(s: &str) -> &str {
    if let Some(inner) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        return inner;
    }
    match (s.rfind('<'), s.strip_suffix('>')) {
        (Some(open), Some(body)) => &body[open + 1..],
        _ => s,
    }
}

/// "00:00:05", "1+02:03:04" (days+hours:minutes:seconds).
fn parse_sendmail_delay(s: &str) -> Option<f64> {
    let (days, clock) = match s.split_once('+') {
        Some((days, clock)) => (digits(days)?, clock),
        None => (0, s),
    };
    let mut parts = clock.split(':');
    let hours = digits(parts.next()?)?;
    let minutes = digits(parts.next()?)?;
    let seconds = digits(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((days * 86_400 + hours * 3_600 + minutes * 60 + seconds) as f64)
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// "mx.example. [192.0.2.1]", "[127.0.0.1] [127.0.0.1]", "[IPv6:2001:db8::1] [IPv6:2001:db8::1]",
/// or a name alone (no connection made).
fn relay_parts(value: &str) -> (Option<String>, Option<IpAddr>) {
    let (name, addr) = match value.split_once(" [") {
        Some((name, rest)) => (name, rest.split_once(']').map(|(addr, _)| addr)),
        None => (value, None),
    };
    let name = name.trim();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .map_or(name, strip_ipv6_tag);
    let name = name.strip_suffix('.').unwrap_or(name);
    let host = (!name.is_empty()).then(|| name.to_string());
    (host, addr.and_then(parse_ip))
}

#[cfg(test)]
mod tests {
    use super::super::{testing::*, Mta};
    use super::*;

    #[test]
    fn sendmail_real_line() {
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sendmail[1131]: x9EL4XLo001111: to=<...>, ctladdr=<...> (960/100), delay=00:00:05, xdelay=00:00:01, mailer=esmtp, pri=402603, relay=mx.core.locaweb.com.br. [177.153.23.241], dsn=2.0.0, stat=Sent (Ok: queued as 46sWK42Z5gz1F)",
        );
        assert_eq!(
            d,
            Delivery {
                queue_id: "x9EL4XLo001111".into(),
                recipient: "...".into(),
                original_recipient: None,
                agent: "esmtp".into(),
                relay_host: Some("mx.core.locaweb.com.br".into()),
                relay_ip: ip("177.153.23.241"),
                relay_port: None,
                delay: Some(5.0),
                delays: None,
                dsn: Some("2.0.0".into()),
                status: Status::Sent,
                reply: "Ok: queued as 46sWK42Z5gz1F".into(),
                remote_queue_id: Some("46sWK42Z5gz1F".into()),
            }
        );
    }

    #[test]
    fn sendmail_several_recipients_and_sendmail_reply() {
        let ds = deliveries(
            Mta::Sendmail,
            r#"Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<a@example.org>,"Doe, J" <j@example.org>,<b@example.org>, ctladdr=<u@example.org> (1000/1000), delay=1+02:03:04, xdelay=00:00:01, mailer=esmtp, tls_verify=OK, pri=120, relay=mx.example.org. [198.51.100.3], dsn=2.0.0, stat=Sent (x9EL4XLp002222 Message accepted for delivery)"#,
        );
        let rcpts: Vec<_> = ds.iter().map(|d| d.recipient.as_str()).collect();
        assert_eq!(rcpts, ["a@example.org", "j@example.org", "b@example.org"]);
        for d in &ds {
            assert_eq!(d.agent, "esmtp");
            assert_eq!(d.delay, Some(93_784.0));
            assert_eq!(d.remote_queue_id.as_deref(), Some("x9EL4XLp002222"));
            assert_eq!(d.relay_ip, ip("198.51.100.3"));
        }
    }

    #[test]
    fn sendmail_deferral_and_bounces() {
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:10:00, xdelay=00:00:30, mailer=esmtp, pri=30, relay=mx.example.org., dsn=4.0.0, stat=Deferred: Connection refused by mx.example.org.",
        );
        assert_eq!(d.status, Status::Deferred);
        assert_eq!(d.reply, "Deferred: Connection refused by mx.example.org.");
        assert_eq!(d.relay_host.as_deref(), Some("mx.example.org"));
        assert_eq!(d.relay_ip, None);
        for stat in ["User unknown", "Service unavailable"] {
            let line = format!("Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30, relay=mx.example.org. [203.0.113.8], dsn=5.1.1, stat={stat}");
            let d = one_delivery(Mta::Sendmail, &line);
            assert_eq!(d.status, Status::Bounced);
            assert_eq!(d.reply, stat);
            assert_eq!(d.remote_queue_id, None);
        }
    }

    #[test]
    fn sendmail_local_and_loopback_relays() {
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sm-msp-queue[7]: x9EL4XLo001111: to=root, ctladdr=root (0/0), delay=00:00:00, xdelay=00:00:00, mailer=relay, pri=30, relay=[127.0.0.1] [127.0.0.1], dsn=2.0.0, stat=Sent (x9EL4XLo001112 Message accepted for delivery)",
        );
        assert_eq!(d.recipient, "root");
        assert_eq!(d.agent, "relay");
        assert_eq!(d.relay_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(d.relay_ip, ip("127.0.0.1"));
        assert_eq!(d.remote_queue_id.as_deref(), Some("x9EL4XLo001112"));
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30, relay=mx.example. [IPv6:2001:db8::1], dsn=2.0.0, stat=Sent (ok)",
        );
        assert_eq!(d.relay_ip, ip("2001:db8::1"));
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=u, delay=00:00:00, xdelay=00:00:00, mailer=local, pri=30, dsn=2.0.0, stat=Sent",
        );
        assert_eq!((d.agent.as_str(), d.reply.as_str()), ("local", "Sent"));
        assert_eq!(d.relay_host, None);
    }

    #[test]
    fn sendmail_more_continuation() {
        let fields = ", delay=00:00:02, xdelay=00:00:02, mailer=esmtp, pri=1, relay=mx.example.org. [192.0.2.3], dsn=2.0.0, stat=Sent (Ok: queued as 3B3AE9AC053)";
        let first = format!("Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<a@example.org>,<b@example.org>, [more]{fields}");
        let last =
            format!("Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<c@example.org>{fields}");
        let a: Vec<_> = deliveries(Mta::Sendmail, &first)
            .into_iter()
            .map(|d| (d.recipient, d.remote_queue_id))
            .collect();
        let id = Some("3B3AE9AC053".to_string());
        assert_eq!(
            a,
            [
                ("a@example.org".to_string(), id.clone()),
                ("b@example.org".to_string(), id.clone())
            ]
        );
        assert_eq!(
            deliveries(Mta::Sendmail, &last)[0].recipient,
            "c@example.org"
        );
        assert_eq!(
            run(Mta::Sendmail, "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>,<b@example.org>, [more]"),
            Parsed::Ignored
        );
    }

    #[test]
    fn sendmail_lines_without_a_delivery_attempt() {
        for line in [
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:00, mailer=esmtp, pri=30, stat=queued",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:00, mailer=esmtp, pri=30, dsn=4.0.0, stat=queued",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:00, mailer=esmtp, pri=30, quarantine=held, stat=quarantined",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: from=<a@example.org>, size=100, class=0, nrcpts=1, msgid=<1@example.org>, proto=ESMTP, daemon=MTA, relay=c.example.org [192.0.2.9]",
            "Nov 29 21:06:33 mx sendmail[7]: NOQUEUE: connect from c.example.org [192.0.2.9]",
            "Nov 29 21:06:33 mx sendmail[7]: STARTTLS=client, relay=mx.example.org., version=TLSv1.3, verify=OK",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: Milter: data, reject=550 5.7.1 no",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: x9EL4XLo001112: clone: owner=owner-list@example.org",
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (x)",
        ] {
            assert_eq!(run(Mta::Sendmail, line), Parsed::Ignored, "{line}");
        }
        // Without a dsn the stat text still tells a sent or deferred attempt.
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:09, mailer=esmtp, pri=30, relay=mx.example.org., stat=Deferred: Name server: mx.example.org.: host name lookup failure",
        );
        assert_eq!((d.status, d.dsn), (Status::Deferred, None));
    }

    #[test]
    fn sendmail_notifications_and_done() {
        for kind in [
            "DSN",
            "return to sender",
            "sender notify",
            "postmaster notify",
        ] {
            let line = format!("Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: x9EL4XLp002222: {kind}: Service unavailable");
            assert_eq!(
                one_record(Mta::Sendmail, &line),
                Record::Notification {
                    queue_id: "x9EL4XLo001111".into(),
                    notice: "x9EL4XLp002222".into()
                },
                "{kind}"
            );
        }
        assert_eq!(
            one_record(
                Mta::Sendmail,
                "Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: done; delay=00:05:00, ntries=3"
            ),
            Record::Removed {
                queue_id: "x9EL4XLo001111".into()
            }
        );
    }

    #[test]
    fn broken_sendmail_delivery_lines() {
        for line in [
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, mailer=esmtp, pri=30, rel",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=xx:00:01, mailer=esmtp, dsn=2.0.0, stat=Sent",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, dsn=2.0.0, stat=Sent",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, mailer=esmtp, dsn=3.0.0, stat=Odd",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=, , delay=00:00:01, mailer=esmtp, dsn=2.0.0, stat=Sent",
        ] {
            assert_eq!(run(Mta::Sendmail, line), Parsed::NotUnderstood, "{line}");
        }
    }

    #[test]
    fn every_sendmail_program_is_read() {
        for ident in [
            "sendmail",
            "sm-mta",
            "sm-msp-queue",
            "sm-cm",
            "sm-acceptingconnections",
        ] {
            let line = format!("Nov 29 21:06:33 mx {ident}[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30, relay=mx.example.org. [203.0.113.8], dsn=2.0.0, stat=Sent (ok)");
            assert_eq!(
                one_delivery(Mta::Sendmail, &line).status,
                Status::Sent,
                "{ident}"
            );
        }
    }

    /// A list of fields with a stat= field in a shape not known is counted; a line that only
    /// holds such words stays ignored.
    #[test]
    fn sendmail_outcomes_of_unknown_shape_are_not_understood() {
        for line in [
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: rcpt=<a@example.org>, delay=00:00:01, mailer=esmtp, pri=30, dsn=2.0.0, stat=Sent (ok)",
            "Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: mailer=esmtp, to=<a@example.org>, delay=00:00:01, dsn=2.0.0, stat=Sent (ok)",
        ] {
            assert_eq!(run(Mta::Sendmail, line), Parsed::NotUnderstood, "{line}");
        }
        assert_eq!(
            run(Mta::Sendmail, "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: Milter: data, reject=554 5.7.1 status=refused, stat=no"),
            Parsed::Ignored
        );
    }
}
