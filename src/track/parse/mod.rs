//! Reads what Postfix and Sendmail log about a queued message: when the next server
//! acknowledged it (and under which queue id, when it says), and when its queue file went.
//!
//! Pure code on the message of a line whose program is known (cut by [`crate::maillog`]):
//! [`parse`] hands it to [`postfix`] or [`sendmail`] by the MTA and its program, and [`reply`]
//! reads the next server's queue id out of a reply. Nothing here fails: a line that looks like
//! one we track but cannot be read is [`Parsed::NotUnderstood`] (the caller counts it), anything
//! else that is not ours is [`Parsed::Ignored`]. Lines are personal data; nothing here logs or
//! keeps them.
//!
//! Outcomes in a shape not known are not understood rather than ignored, so that a change of
//! the log's format shows in the count: a `QID: to=` line that cannot be read, a line of
//! `key=value` fields with a status field (`, status=` for Postfix, `, stat=` for Sendmail)
//! that is none of the known lines, and a line not syslog-shaped at all that holds such a field
//! ([`unsplit_outcome`]). Text that only quotes such words (a header check's warning, a rejected
//! client's reply) starts with no field and stays ignored.

mod postfix;
mod reply;
mod sendmail;

use crate::maillog::{self, Program};
use std::net::IpAddr;

/// Which MTA's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mta {
    Postfix,
    Sendmail,
}

/// What a line says about a queued message.
// Most records are deliveries and live only until they are stored: boxing them buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// One delivery attempt for one recipient.
    Delivery(Delivery),
    /// The queue file is gone: Postfix qmgr "QID: removed", postsuper "QID: removed" (and
    /// Sendmail "QID: done; ...", logged only at LogLevel 10+).
    Removed { queue_id: String },
    /// Postfix qmgr "QID: from=<...>, status=expired, returned to sender" (also "force-expired").
    Expired { queue_id: String },
    /// A notification about `queue_id` was queued as `notice` (Postfix bounce "sender non-delivery
    /// notification: NEWQID" / "sender delivery status notification: NEWQID"; Sendmail "QID: NEWQID: DSN: ...").
    Notification { queue_id: String, notice: String },
    /// Postfix pickup "NEWQID: uid=N from=<...> orig_id=OLDQID" (postsuper -r requeue): `queue_id`
    /// would now carry `original`. Believed only as `track::rekey` allows.
    Requeued {
        queue_id: String,
        original: String,
        /// The uid= of the line: the queue file's owner.
        uid: Option<u32>,
    },
    /// A message entered the queue under `queue_id`: Postfix smtpd "QID: client=...", cleanup
    /// "QID: message-id=...", pickup "QID: uid=N from=<...>" (no orig_id).
    Entered { queue_id: String },
    /// Postfix postsuper "QID: requeued" (postsuper -r QID, also logged for each message of
    /// postsuper -r ALL).
    PostsuperRequeued { queue_id: String },
    /// Postfix postsuper "Requeued: N messages" (once per postsuper -r run).
    PostsuperRequeuedCount { count: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub queue_id: String,
    /// The recipient as logged (to=), without angle brackets, Postfix's quoting of the local part kept.
    pub recipient: String,
    /// Postfix orig_to=, when logged.
    pub original_recipient: Option<String>,
    /// Who delivered: the Postfix service's last ident component ("smtp", "lmtp", "local", "virtual", "relay", "error", "retry", "discard") or the Sendmail mailer= ("esmtp", "smtp", "relay", "local", ...).
    pub agent: String,
    /// The next hop: host name and IP and port where logged (Postfix "relay=mx.example[192.0.2.1]:25",
    /// "relay=none", "relay=local"; Sendmail "relay=mx.example. [192.0.2.1]", "relay=[127.0.0.1] [127.0.0.1]").
    /// The host without Sendmail's trailing dot or address-literal brackets ("mx.example",
    /// "127.0.0.1"); None for "relay=none" and when no relay is logged.
    pub relay_host: Option<String>,
    pub relay_ip: Option<IpAddr>,
    pub relay_port: Option<u16>,
    /// Total delay in seconds (Postfix delay=, Sendmail delay=HH:MM:SS or D+HH:MM:SS).
    pub delay: Option<f64>,
    /// Postfix delays=a/b/c/d.
    pub delays: Option<[f64; 4]>,
    pub dsn: Option<String>,
    pub status: Status,
    /// The text in parentheses after the status (the next hop's reply, or Postfix's reason), or Sendmail's stat text.
    pub reply: String,
    /// The next server's queue id when its reply carries one: "queued as X" (also nested in content-filter
    /// replies: take the last), Exim "id=X", Sendmail-to-Sendmail "Sent (x9EL4XLo001111 Message accepted for delivery)". Heuristic; None when unsure.
    pub remote_queue_id: Option<String>,
}

/// What a line means for tracking.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// One or more records (Sendmail logs several recipients in one to= field: one Delivery each).
    Records(Vec<Record>),
    /// A line of a process or kind we do not track (connect, client=, cleanup message-id=, TLS lines, warnings, other programs): skip quietly.
    Ignored,
    /// A line that looks like one we track (e.g. a Postfix delivery agent line with "QID: to=" or a qmgr line with a queue id) but could not be parsed: the caller counts these ("lines not understood") and never fails on them.
    NotUnderstood,
}

/// Interprets the message of a line that `ident` logged, for `mta`. Lines of the other MTA's
/// programs and of other programs are Ignored.
pub fn parse(mta: Mta, ident: &str, message: &str) -> Parsed {
    match (mta, maillog::mta_program(ident)) {
        (Mta::Postfix, Some(Program::Postfix { service })) => postfix::parse(service, message),
        (Mta::Sendmail, Some(Program::Sendmail)) => sendmail::parse(message),
        _ => Parsed::Ignored,
    }
}

/// Whether a line that is not syslog-shaped (or whose time stamp names no time) holds an
/// outcome of `mta`'s anyway: true means a log format not known, to be counted.
pub fn unsplit_outcome(mta: Mta, line: &str) -> bool {
    match mta {
        Mta::Postfix => line.contains(", status="),
        Mta::Sendmail => line.contains(", stat="),
    }
}

/// A tracked line that could not be read.
struct Malformed;

fn records(record: Record) -> Parsed {
    Parsed::Records(vec![record])
}

/// What the rest of a line (after its queue id) that is none of the known ones means: a list
/// of fields holding a `status` field (`"status="`) is an outcome in a shape not known.
fn other(rest: &str, status: &str) -> Parsed {
    // Most lines hold no such text at all: looking for it is cheaper than cutting fields.
    if !starts_with_key(rest) || !rest.contains(status) {
        return Parsed::Ignored;
    }
    let mut fields = std::iter::once(0).chain(top_level_commas(rest).into_iter().map(|c| c + 1));
    if fields.any(|at| rest[at..].trim_start().starts_with(status)) {
        Parsed::NotUnderstood
    } else {
        Parsed::Ignored
    }
}

/// Whether `s` starts with a field's key and its `=` (lower-case letters and `_`).
fn starts_with_key(s: &str) -> bool {
    let n = s
        .bytes()
        .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
        .count();
    n > 0 && s.as_bytes().get(n) == Some(&b'=')
}

/// The comma positions of `s` outside quoted strings, angle brackets and parentheses: fields
/// are joined with commas, and an address, a reply or a comment may hold commas too.
fn top_level_commas(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped, mut depth) = (false, false, 0usize);
    for (i, c) in s.bytes().enumerate() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                quoted = false;
            }
            continue;
        }
        match c {
            b'"' => quoted = true,
            b'<' | b'(' => depth += 1,
            b'>' | b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => out.push(i),
            _ => {}
        }
    }
    out
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    strip_ipv6_tag(s).parse().ok()
}

/// Sendmail writes IPv6 addresses as "IPv6:2001:db8::1".
fn strip_ipv6_tag(s: &str) -> &str {
    match s.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => &s[5..],
        _ => s,
    }
}

/// What the tests of each MTA's lines share.
#[cfg(test)]
mod testing {
    use super::{parse, Delivery, Mta, Parsed, Record};
    use crate::maillog::SyslogLine;
    use std::net::IpAddr;

    pub fn run(mta: Mta, line: &str) -> Parsed {
        let split = SyslogLine::split(line).expect("syslog-shaped");
        parse(mta, split.ident, split.message)
    }

    pub fn one_delivery(mta: Mta, line: &str) -> Delivery {
        match run(mta, line) {
            Parsed::Records(r) if r.len() == 1 => match &r[0] {
                Record::Delivery(d) => d.clone(),
                other => panic!("not a delivery: {other:?}"),
            },
            other => panic!("not one record: {other:?}"),
        }
    }

    pub fn deliveries(mta: Mta, line: &str) -> Vec<Delivery> {
        match run(mta, line) {
            Parsed::Records(r) => r
                .into_iter()
                .map(|r| match r {
                    Record::Delivery(d) => d,
                    other => panic!("not a delivery: {other:?}"),
                })
                .collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    pub fn one_record(mta: Mta, line: &str) -> Record {
        match run(mta, line) {
            Parsed::Records(mut r) if r.len() == 1 => r.remove(0),
            other => panic!("not one record: {other:?}"),
        }
    }

    pub fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::maillog::SyslogLine;
    use chrono::{FixedOffset, TimeZone, Utc};

    /// A "now" in Berlin winter time, so classic stamps are read at +01:00.
    fn now() -> chrono::DateTime<FixedOffset> {
        FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
            .unwrap()
    }

    #[test]
    fn each_mta_reads_its_own_programs_only() {
        let postfix = "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: removed";
        let sendmail =
            "Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: done; delay=00:05:00, ntries=3";
        assert!(matches!(run(Mta::Postfix, postfix), Parsed::Records(_)));
        assert!(matches!(run(Mta::Sendmail, sendmail), Parsed::Records(_)));
        assert_eq!(run(Mta::Sendmail, postfix), Parsed::Ignored);
        assert_eq!(run(Mta::Postfix, sendmail), Parsed::Ignored);
        for other in [
            "Nov 29 21:06:33 mx postfix[1]: 3B3AE9AC053: removed",
            "Nov 29 21:06:33 mx sm-mtaa[1]: x9EL4XLo001111: done; delay=00:05:00, ntries=3",
        ] {
            for mta in [Mta::Postfix, Mta::Sendmail] {
                assert_eq!(run(mta, other), Parsed::Ignored, "{other}");
            }
        }
    }

    /// A log written in a format not known (here RFC 5424, as rsyslog's
    /// RSYSLOG_SyslogProtocol23Format writes it) cuts into no syslog line, yet its outcomes
    /// are told from other lines that do not cut.
    #[test]
    fn outcomes_in_lines_that_do_not_cut() {
        let postfix = "<22>1 2026-11-29T21:06:33.1+01:00 mx postfix/smtp 1 - - 3B3AE9AC053: to=<x@example.org>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (x)";
        let sendmail = "<22>1 2026-11-29T21:06:33.1+01:00 mx sm-mta 7 - - x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, mailer=esmtp, dsn=2.0.0, stat=Sent";
        for line in [postfix, sendmail] {
            assert_eq!(SyslogLine::split(line), None, "{line}");
        }
        assert!(unsplit_outcome(Mta::Postfix, postfix) && unsplit_outcome(Mta::Sendmail, sendmail));
        for line in [
            "<22>1 2026-11-29T21:06:33.1+01:00 mx postfix/smtpd 1 - - connect from c.example.org[192.0.2.9]",
            "-- MARK --",
            "",
        ] {
            assert!(!unsplit_outcome(Mta::Postfix, line) && !unsplit_outcome(Mta::Sendmail, line), "{line}");
        }
    }

    // ---- properties ----

    mod props {
        use super::*;
        use proptest::prelude::*;

        const REAL: [&str; 8] = [
            "Nov 29 21:06:33 mx postfix/smtp[24393]: 3B3AE9AC053: to=<b@remote.example>, relay=127.0.0.1[127.0.0.1]:25302, delay=0.01, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
            "Nov 29 21:06:33 mx postfix/qmgr[24385]: 3B3AE9AC053: removed",
            "Dec 26 18:46:01 mail postfix/smtp[12651]: B6CFE52606B3: to=<someoneelse@them.tld>, relay=asuperserver.tld[1.2.3.4]:25, delay=2, delays=0.24/0.04/0.35/1.4, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)",
            "Apr 10 14:50:16 mail postfix/qmgr[3663]: BACE842E72: from=<noreply@domain.com>, status=expired, returned to sender",
            "2026-01-05T13:54:43.262668+01:00 mx sendmail[1131]: x9EL4XLo001111: to=<...>, ctladdr=<...> (960/100), delay=00:00:05, xdelay=00:00:01, mailer=esmtp, pri=402603, relay=mx.core.locaweb.com.br. [177.153.23.241], dsn=2.0.0, stat=Sent (Ok: queued as 46sWK42Z5gz1F)",
            r#"Nov  3 01:02:03 mx postfix/smtp[1]: 3Pt2mN2VXxznjll: to=<"john doe"@example.org>, orig_to=<"doe, john>"@example.org>, relay=mx.example[2001:db8::1]:25, conn_use=2, delay=1.2, delays=0.1/0/0.5/0.6, dsn=5.1.1, status=bounced (host mx.example[2001:db8::1] said: 550 5.1.1 <x@y>: Recipient address rejected: User unknown (in reply to RCPT TO command))"#,
            r#"Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<a@example.org>,"Doe, J" <j@example.org>, [more], delay=1+02:03:04, mailer=esmtp, pri=1, relay=[127.0.0.1] [127.0.0.1], dsn=4.0.0, stat=Deferred: Connection refused by [127.0.0.1]"#,
            "Nov 29 21:06:33 mx postfix/bounce[5]: 3B3AE9AC053: sender non-delivery notification: 4T02Hr4S5hz9vf6k",
        ];

        /// Whatever a line gives must come from it: ids, recipients and replies are cut out of
        /// the message, never made up.
        fn check_parsed(ident: &str, message: &str) {
            for mta in [Mta::Postfix, Mta::Sendmail] {
                let Parsed::Records(records) = parse(mta, ident, message) else {
                    continue;
                };
                assert!(!records.is_empty());
                for r in records {
                    let ids = match &r {
                        Record::Delivery(d) => {
                            assert!(message.contains(&d.recipient), "{d:?}");
                            assert!(message.contains(&d.reply), "{d:?}");
                            vec![&d.queue_id]
                        }
                        Record::Removed { queue_id } | Record::Expired { queue_id } => {
                            vec![queue_id]
                        }
                        Record::Notification { queue_id, notice } => vec![queue_id, notice],
                        Record::Requeued {
                            queue_id, original, ..
                        } => vec![queue_id, original],
                        Record::Entered { queue_id } | Record::PostsuperRequeued { queue_id } => {
                            vec![queue_id]
                        }
                        Record::PostsuperRequeuedCount { .. } => vec![],
                    };
                    for id in ids {
                        assert!(!id.is_empty() && message.contains(id.as_str()), "{r:?}");
                    }
                }
            }
        }

        fn parse_all(line: &str) {
            if let Some(l) = SyslogLine::split(line) {
                assert!(line.contains(l.host) && line.contains(l.ident));
                assert!(line.contains(l.message));
                let _ = l.stamp.time(&now());
                let jan = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
                let _ = l.stamp.time(&jan);
                check_parsed(l.ident, l.message);
            }
            let _ = unsplit_outcome(Mta::Postfix, line) || unsplit_outcome(Mta::Sendmail, line);
        }

        #[derive(Debug, Clone)]
        enum Edit {
            Cut(usize),
            Insert(usize, char),
            Delete(usize, usize),
            Replace(usize, char),
        }

        fn edit() -> impl Strategy<Value = Edit> {
            let c = prop_oneof![
                proptest::char::range(' ', '~'),
                Just('<'),
                Just('>'),
                Just('('),
                Just(')'),
                Just('"'),
                Just('\\'),
                Just(','),
                Just(':'),
                Just('['),
                Just(']'),
                Just('é'),
                Just('\u{fffd}'),
            ];
            prop_oneof![
                any::<usize>().prop_map(Edit::Cut),
                (any::<usize>(), c.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
                (any::<usize>(), 0usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
                (any::<usize>(), c).prop_map(|(i, c)| Edit::Replace(i, c)),
            ]
        }

        fn apply(line: &str, edits: &[Edit]) -> String {
            let mut chars: Vec<char> = line.chars().collect();
            for e in edits {
                let n = chars.len();
                match *e {
                    Edit::Cut(i) => chars.truncate(i % (n + 1)),
                    Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
                    Edit::Delete(i, k) => {
                        let at = i % (n + 1);
                        chars.drain(at..(at + k).min(n));
                    }
                    Edit::Replace(i, c) => {
                        if n > 0 {
                            chars[i % n] = c;
                        }
                    }
                }
            }
            chars.into_iter().collect()
        }

        fn short_id() -> impl Strategy<Value = String> {
            "[0-9A-F]{6,12}"
        }

        fn long_id() -> impl Strategy<Value = String> {
            "[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{12,16}"
        }

        /// A recipient as Postfix logs it, plain or with a quoted local part.
        fn address() -> impl Strategy<Value = String> {
            let local = prop_oneof![
                "[a-z0-9._+-]{1,16}",
                r#""[a-z ,()<>@\[\]:;]{1,12}""#,
                r#""[a-z]{1,5}\\"[a-z, ]{0,5}""#,
            ];
            (
                local,
                "[a-z0-9-]{1,10}",
                prop_oneof![Just("org"), Just("example")],
            )
                .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
        }

        fn relay() -> impl Strategy<Value = (String, Option<String>, Option<IpAddr>, Option<u16>)> {
            prop_oneof![
                Just(("none".to_string(), None, None, None)),
                Just(("local".to_string(), Some("local".to_string()), None, None)),
                ("[a-z]{1,8}\\.example", any::<[u8; 4]>(), any::<u16>()).prop_map(|(h, a, p)| {
                    let ip = IpAddr::from(a);
                    (format!("{h}[{ip}]:{p}"), Some(h), Some(ip), Some(p))
                }),
                ("[a-z]{1,8}\\.example", any::<[u16; 8]>(), any::<u16>()).prop_map(|(h, a, p)| {
                    let ip = IpAddr::from(a);
                    (format!("{h}[{ip}]:{p}"), Some(h), Some(ip), Some(p))
                }),
            ]
        }

        /// Postfix prints small delays with two significant digits and large ones as integers.
        fn seconds() -> impl Strategy<Value = (String, f64)> {
            prop_oneof![
                (0u32..100).prop_map(|n| (format!("0.{n:02}"), f64::from(n) / 100.0)),
                (1u32..10, 0u32..10)
                    .prop_map(|(a, b)| (format!("{a}.{b}"), f64::from(a * 10 + b) / 10.0)),
                (0u32..10_000_000).prop_map(|n| (n.to_string(), f64::from(n))),
            ]
        }

        prop_compose! {
            fn status()(pick in 0..3usize) -> (&'static str, Status, &'static str) {
                [("sent", Status::Sent, "2.0.0"), ("deferred", Status::Deferred, "4.4.1"), ("bounced", Status::Bounced, "5.1.1")][pick]
            }
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(s in any::<String>(), t in "\\PC{0,200}") {
                parse_all(&s);
                parse_all(&t);
                for ident in ["postfix/smtp", "postfix/qmgr", "postfix/bounce", "postfix/pickup", "postfix/postsuper", "sendmail"] {
                    check_parsed(ident, &t);
                }
            }

            #[test]
            fn mutated_real_lines_never_panic(
                pick in 0..REAL.len(),
                edits in proptest::collection::vec(edit(), 1..6),
            ) {
                parse_all(&apply(REAL[pick], &edits));
            }

            #[test]
            fn mutated_messages_never_panic(
                pick in 0..REAL.len(),
                edits in proptest::collection::vec(edit(), 1..6),
            ) {
                let l = SyslogLine::split(REAL[pick]).unwrap();
                let message = apply(l.message, &edits);
                check_parsed(l.ident, &message);
            }

            #[test]
            fn generated_postfix_deliveries_read_back(
                queue_id in prop_oneof![short_id(), long_id()],
                agent in prop_oneof![Just("smtp"), Just("lmtp"), Just("relay"), Just("error")],
                recipient in address(),
                original in proptest::option::of(address()),
                (relay_text, relay_host, relay_ip, relay_port) in relay(),
                conn_use in proptest::option::of(2u32..100),
                (delay_text, delay) in seconds(),
                delays in proptest::array::uniform4(seconds()),
                (word, status, dsn) in status(),
                reply in "[a-zA-Z0-9 ,;:.<>@\\[\\]()=é-]{0,80}",
                remote in proptest::option::of(prop_oneof![short_id(), long_id()]),
            ) {
                prop_assume!(!reply.to_ascii_lowercase().contains("queued as"));
                prop_assume!(!reply.contains("id=") && !reply.contains("accepted"));
                let reply = match &remote {
                    Some(id) => format!("{reply} 250 2.0.0 Ok: queued as {id}"),
                    None => reply,
                };
                let mut line = format!("Nov 29 21:06:33 mx postfix-mx/{agent}[42]: {queue_id}: to=<{recipient}>");
                if let Some(o) = &original {
                    line += &format!(", orig_to=<{o}>");
                }
                line += &format!(", relay={relay_text}");
                if let Some(n) = conn_use {
                    line += &format!(", conn_use={n}");
                }
                let delays_text: Vec<&str> = delays.iter().map(|(t, _)| t.as_str()).collect();
                line += &format!(", delay={delay_text}, delays={}, dsn={dsn}, status={word} ({reply})", delays_text.join("/"));

                let expected = Delivery {
                    queue_id: queue_id.clone(),
                    recipient,
                    original_recipient: original,
                    agent: agent.to_string(),
                    relay_host,
                    relay_ip,
                    relay_port,
                    delay: Some(delay),
                    delays: Some([delays[0].1, delays[1].1, delays[2].1, delays[3].1]),
                    dsn: Some(dsn.to_string()),
                    status,
                    reply: reply.clone(),
                    remote_queue_id: if status == Status::Sent { remote } else { None },
                };
                prop_assert_eq!(run(Mta::Postfix, &line), Parsed::Records(vec![Record::Delivery(expected)]));
            }
        }
    }
}
