//! The pseudonymised copy of the MTA's log: each line of Postfix, Sendmail and Dovecot in its
//! own shape (time stamp, host, program, queue id, the rest), its personal fields written as
//! `[privacy]` says, so that an operator and tools like pflogsumm still read it while it names
//! no one. Pure: a line in, a line out.
//!
//! - IPs, in every form the MTAs write them (`host[ip]`, `[ip]:port`, `IPv6:`, `rip=`,
//!   `addr 1.2.3.4 listed by`, anywhere else), as the events write a client's IP: under `hmac`
//!   the same `hmac:KEYID:HEX` as that message's event, so the copy and the ledger join (and
//!   stop joining once the key is destroyed). Loopback stays: it names no one.
//! - Addresses (`from=<>`, `to=<>`, `orig_to=<>`, `sasl_username=`, Dovecot's `user=<>` and
//!   `imap(USER)`, address literals, any `x@y`) as the events write them: `hmac:KEYID:HEX@domain`,
//!   `@domain`, or `-`.
//! - Host names of clients and peers (`NAME[ip]`, Sendmail's `relay=NAME [ip]`, a name that
//!   spells an IP, `hostname NAME`) and HELO names, by the IP's policy: `hmac` of the name, the
//!   last two labels under `truncated` (`*.example.net`), `unknown` under `omit`.
//! - Text that a header or body check quotes: `[redacted]`, whatever the policy.
//! - Dovecot session ids and bare bracketed names (`<bob>... User unknown`): `hmac` or `-`.
//!
//! A line of unknown shape gets the same scan: any IP and any address in it is found by its
//! pattern. A copied line copied again is the same line, which is also how
//! [`Rewriter::raw_personal_data`] tells that a line of the copy still holds a raw field.

mod pseudonym;
mod scan;

pub use pseudonym::{Field, LEFT_OUT, REDACTED};
pub use scan::RawField;

use crate::{maillog::SyslogLine, privacy::Pseudonymiser};
use pseudonym::Pseudonyms;
use scan::Scan;

/// Rewrites log lines for the copy. Keeps a cache of the pseudonyms it made (in memory only).
pub struct Rewriter {
    names: Pseudonyms,
}

impl Rewriter {
    pub fn new(privacy: Pseudonymiser) -> Self {
        Self {
            names: Pseudonyms::new(privacy),
        }
    }

    /// The pseudonymiser lines are written with.
    pub fn privacy(&self) -> &Pseudonymiser {
        self.names.privacy()
    }

    /// `raw` (one line; a line break at its end is dropped) as the copy holds it.
    pub fn line(&mut self, raw: &str) -> String {
        let mut out = String::with_capacity(raw.len() + 64);
        self.line_into(raw, &mut out);
        out
    }

    /// [`Rewriter::line`] appended to `out`; returns the first field that was raw.
    pub fn line_into(&mut self, raw: &str, out: &mut String) -> Option<RawField> {
        let raw = raw.trim_end_matches(['\n', '\r']);
        let mut scan = Scan {
            names: &mut self.names,
            out,
            first_raw: None,
        };
        match SyslogLine::split(raw) {
            // The stamp, the MTA's own host name and the program stay as they are.
            Some(line) => {
                let at = line.message.as_ptr() as usize - raw.as_ptr() as usize;
                scan.out.push_str(&raw[..at]);
                scan.message(line.message, at);
            }
            None => scan.text(raw, 0),
        }
        scan.first_raw
    }

    /// The first personal field a line of the copy still holds raw (an IP, an address, a host
    /// name, quoted text that is not `[redacted]`): what rewriting it again would change.
    pub fn raw_personal_data(&mut self, line: &str) -> Option<RawField> {
        let mut scratch = String::with_capacity(line.len() + 64);
        self.line_into(line, &mut scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{AddressPrivacy, IpPrivacy, Privacy},
        keys::Key,
    };
    use std::sync::Arc;

    fn key() -> Arc<Key> {
        Arc::new(Key {
            id: "20260101T000000Z".into(),
            created: chrono::Utc::now(),
            bytes: [7; 32],
        })
    }

    fn rewriter(ip: IpPrivacy, address: AddressPrivacy) -> Rewriter {
        Rewriter::new(Pseudonymiser::new(
            Privacy {
                ip,
                address,
                ..Privacy::default()
            },
            Some(key()),
        ))
    }

    fn hmac_of(value: &str) -> String {
        crate::privacy::hmac(&key(), value)
    }

    /// Every line of the copy: none of the raw values in it, the same line when copied again.
    fn check(r: &mut Rewriter, raw: &str, absent: &[&str]) -> String {
        let copy = r.line(raw);
        for value in absent {
            assert!(
                !copy.contains(value),
                "{value:?} left in {copy:?} (from {raw:?})"
            );
        }
        assert_eq!(r.line(&copy), copy, "not idempotent: {raw:?}");
        assert_eq!(r.raw_personal_data(&copy), None, "{copy:?}");
        copy
    }

    const POSTFIX: &[(&str, &[&str])] = &[
        ("Nov 29 21:06:33 mx postfix/smtpd[9601]: connect from client.example.org[192.0.2.9]", &["192.0.2.9", "client.example"]),
        ("Nov 29 21:06:33 mx postfix/smtpd[9601]: 3B3AE9AC053: client=1-2-3-4.dialup.example.net[198.51.100.4], sasl_method=PLAIN, sasl_username=alice", &["198.51.100.4", "1-2-3-4", "alice"]),
        ("Nov 29 21:06:33 mx postfix/qmgr[9595]: 3B3AE9AC053: from=<Alice@Example.org>, size=2549, nrcpt=1 (queue active)", &["Alice@", "alice@"]),
        ("Nov 29 21:06:34 mx postfix/smtp[9627]: 3B3AE9AC053: to=<carol@remote.example>, orig_to=<c@remote.example>, relay=mx.remote.example[198.51.100.25]:25, delay=0.41, delays=0.06/0.01/0.2/0.14, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)", &["carol@", "c@", "198.51.100.25", "mx.remote"]),
        ("Nov 29 21:06:34 mx postfix/smtpd[9601]: NOQUEUE: reject: RCPT from unknown[2001:db8::9]: 554 5.7.1 <bob@remote.example>: Relay access denied; from=<alice@example.org> to=<bob@remote.example> proto=ESMTP helo=<pc17.home.example>", &["2001:db8::9", "bob@", "alice@", "pc17"]),
        ("Nov 29 21:06:34 mx postfix/cleanup[9626]: 3B3AE9AC053: warning: header Subject: Your invoice for Mr Smith from client.example.org[192.0.2.9]; from=<alice@example.org> to=<bob@remote.example> proto=ESMTP helo=<client.example.org>: flagged", &["Smith", "invoice", "192.0.2.9", "alice@", "client.example"]),
        ("Nov 29 21:06:34 mx postfix/cleanup[9626]: 3B3AE9AC053: info: body call me on 555 1234", &["555 1234"]),
        ("Nov 29 21:06:34 mx postfix/postscreen[9600]: CONNECT from [192.0.2.9]:51234 to [192.0.2.1]:25", &["192.0.2.9", "192.0.2.1"]),
        ("Nov 29 21:06:34 mx postfix/dnsblog[9602]: addr 192.0.2.9 listed by domain zen.spamhaus.org as 127.0.0.2", &["192.0.2.9"]),
        ("Nov 29 21:06:34 mx postfix/smtpd[9601]: warning: hostname c-73-15-1-2.hsd1.ca.comcast.net does not resolve to address 73.15.1.2: Name or service not known", &["73-15-1-2", "73.15.1.2"]),
        ("Nov 29 21:06:34 mx postfix/smtpd[9601]: warning: 192.0.2.9: hostname pc.example.net verification failed: Name or service not known", &["192.0.2.9", "pc.example.net"]),
        ("Nov 29 21:06:34 mx postfix/smtpd[9601]: NOQUEUE: reject: RCPT from x[IPv6:2001:db8::7]: 550 <bob@[IPv6:2001:db8::8]>: nope; from=<a@[192.0.2.10]>", &["2001:db8::7", "2001:db8::8", "192.0.2.10", "bob@", "a@"]),
        ("2026-01-05T13:54:43.262668+01:00 mx postfix/smtpd[9601]: disconnect from pc.example.net[::ffff:192.0.2.11] ehlo=1 quit=1 commands=2", &["192.0.2.11", "pc.example.net"]),
    ];

    const SENDMAIL: &[(&str, &[&str])] = &[
        ("Nov 29 21:06:33 mx sm-mta[11251]: 6B7GXxO0000001: from=<alice@example.org>, size=2549, class=0, nrcpts=1, msgid=<20261129.5@client.example.org>, proto=ESMTPA, daemon=MTA, relay=client.example.org [192.0.2.9]", &["alice@", "192.0.2.9", "client.example.org ["]),
        ("Nov 29 21:06:34 mx sm-mta[11258]: 6B7GXxO0000001: to=<carol@remote.example>,<dave@remote.example>, ctladdr=<alice@example.org> (1000/1000), delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=32549, relay=mx.remote.example. [198.51.100.25], dsn=2.0.0, stat=Sent (6B7GXxO0099999 Message accepted for delivery)", &["carol@", "dave@", "alice@", "198.51.100.25", "mx.remote"]),
        ("Nov 29 21:06:34 mx sm-mta[11258]: 6B7GXxO0000002: to=alice,bob@example.org, delay=00:00:00, mailer=local, stat=Sent", &["alice", "bob@"]),
        ("Nov 29 21:06:34 mx sm-mta[11258]: AUTH=server, relay=client.example.org [192.0.2.9], authid=alice, mech=PLAIN, bits=0", &["alice", "192.0.2.9"]),
        ("Nov 29 21:06:34 mx sm-mta[11258]: 6B7GXxO0000003: <bob>... User unknown", &["bob"]),
        ("Nov 29 21:06:34 mx sm-mta[11258]: 6B7GXxO0000003: ruleset=check_rcpt, arg1=<bob@remote.example>, relay=[192.0.2.9], reject=550 5.7.1 <bob@remote.example>... Relaying denied", &["bob@", "192.0.2.9"]),
        ("Nov 29 21:06:34 mx sm-mta[11258]: 6B7GXxO0000004: Milter insert (1): header: X-Originating-IP: [192.0.2.9]", &["192.0.2.9"]),
    ];

    const DOVECOT: &[(&str, &[&str])] = &[
        ("Nov 29 21:06:35 mx dovecot: imap-login: Login: user=<alice@example.org>, method=PLAIN, rip=192.0.2.9, lip=192.0.2.1, mpid=12345, TLS, session=<nJi6BuQ4xMDAAgkk>", &["alice@", "192.0.2.9", "192.0.2.1", "nJi6BuQ4xMDAAgkk"]),
        ("Nov 29 21:06:36 mx dovecot: imap(alice@example.org)<12345><nJi6BuQ4xMDAAgkk>: Logged out in=10 out=500 deleted=0 expunged=0", &["alice@", "nJi6BuQ4xMDAAgkk"]),
        ("Nov 29 21:06:36 mx dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=2001:db8::9, lip=::1, session=<a+b/cDEF0123>", &["bob", "2001:db8::9", "a+b/cDEF0123"]),
        ("Nov 29 21:06:36 mx dovecot: auth: passwd-file(carol,192.0.2.9,<AbCd0123>): unknown user", &["carol", "192.0.2.9", "AbCd0123"]),
        ("Nov 29 21:06:36 mx dovecot: lmtp(alice)<12345><xYz0123abc>: msgid=<x.1@client.example.org>: saved mail to INBOX", &["(alice)", "xYz0123abc", "x.1@"]),
    ];

    /// Lines no parser knows: found by pattern.
    const UNKNOWN: &[(&str, &[&str])] = &[
        ("Nov 29 21:06:36 mx opendkim[77]: 3B3AE9AC053: s=sel d=example.org SSL from 192.0.2.77 for eve@example.org", &["192.0.2.77", "eve@"]),
        ("not a syslog line at all: 203.0.113.5 and mallory+tag@evil.example and fe80::1%eth0", &["203.0.113.5", "mallory", "fe80::1"]),
        ("Nov 29 21:06:36 mx postfix/smtpd[1]: weird o'brien@example.org [203.0.113.6]:999", &["o'brien", "brien@", "203.0.113.6"]),
    ];

    #[test]
    fn every_mode_leaves_nothing_raw() {
        for (ip, address) in [
            (IpPrivacy::Hmac, AddressPrivacy::Hmac),
            (IpPrivacy::Truncated, AddressPrivacy::Domain),
            (IpPrivacy::Omit, AddressPrivacy::Omit),
        ] {
            let mut r = rewriter(ip, address);
            for (raw, absent) in POSTFIX.iter().chain(SENDMAIL).chain(DOVECOT).chain(UNKNOWN) {
                let copy = check(&mut r, raw, absent);
                // The shape stays: the stamp, host and program, the queue id.
                let line = SyslogLine::split(raw);
                if let Some(line) = line {
                    let head = &raw[..raw.len() - line.message.len()];
                    assert!(copy.starts_with(head), "{copy:?}");
                }
            }
        }
    }

    #[test]
    fn hmac_pseudonyms_are_the_events() {
        let mut r = rewriter(IpPrivacy::Hmac, AddressPrivacy::Hmac);
        let copy = r.line(POSTFIX[1].0);
        assert!(
            copy.contains(&format!("[{}]", hmac_of("198.51.100.4"))),
            "{copy}"
        );
        assert!(
            copy.contains(&format!("sasl_username={}", hmac_of("alice"))),
            "{copy}"
        );
        // Addresses in lower case, as the events write them; the domain in clear.
        let copy = r.line(POSTFIX[2].0);
        assert!(
            copy.contains(&format!(
                "from=<{}@example.org>",
                hmac_of("alice@example.org")
            )),
            "{copy}"
        );
        // An IPv4-mapped IPv6 address is its IPv4 address, as in the events.
        let copy = r.line(POSTFIX[12].0);
        assert!(copy.contains(&hmac_of("192.0.2.11")), "{copy}");
    }

    #[test]
    fn truncated_keeps_the_shape_pflogsumm_reads() {
        let mut r = rewriter(IpPrivacy::Truncated, AddressPrivacy::Domain);
        assert_eq!(
            r.line(POSTFIX[0].0),
            "Nov 29 21:06:33 mx postfix/smtpd[9601]: connect from *.example.org[192.0.2.0/24]"
        );
        assert_eq!(
            r.line(POSTFIX[3].0),
            "Nov 29 21:06:34 mx postfix/smtp[9627]: 3B3AE9AC053: to=<@remote.example>, orig_to=<@remote.example>, relay=*.remote.example[198.51.100.0/24]:25, delay=0.41, delays=0.06/0.01/0.2/0.14, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)"
        );
        assert_eq!(
            r.line(POSTFIX[5].0),
            "Nov 29 21:06:34 mx postfix/cleanup[9626]: 3B3AE9AC053: warning: header [redacted] from *.example.org[192.0.2.0/24]; from=<@example.org> to=<@remote.example> proto=ESMTP helo=<*.example.org>: flagged"
        );
        assert_eq!(
            r.line(SENDMAIL[1].0),
            "Nov 29 21:06:34 mx sm-mta[11258]: 6B7GXxO0000001: to=<@remote.example>,<@remote.example>, ctladdr=<@example.org> (1000/1000), delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=32549, relay=*.remote.example [198.51.100.0/24], dsn=2.0.0, stat=Sent (6B7GXxO0099999 Message accepted for delivery)"
        );
    }

    #[test]
    fn loopback_and_lines_without_personal_data_stay() {
        let mut r = rewriter(IpPrivacy::Hmac, AddressPrivacy::Hmac);
        for line in [
            "Nov 29 21:06:34 mx postfix/smtp[1]: 3B3AE9AC053: to=<>, relay=127.0.0.1[127.0.0.1]:10024, delay=0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)",
            "Nov 29 21:06:34 mx postfix/qmgr[9595]: 3B3AE9AC053: removed",
            "Nov 29 21:06:34 mx postfix/master[1]: daemon started -- version 3.7.11, configuration /etc/postfix",
            "Nov 29 21:06:34 mx postfix/local[1]: 3B3AE9AC053: to=<>, relay=local, delay=0.1, status=sent (delivered to mailbox)",
            "Nov 29 21:06:34 mx dovecot: lmtp(12345): Connect from local",
            "Nov 29 21:06:34 mx postfix/smtpd[1]: lost connection after DATA (0 bytes) from localhost[::1]",
            "Nov 29 21:06:34 mx postfix/cleanup[1]: bare <LF> received",
        ] {
            assert_eq!(r.line(line), line);
            assert_eq!(r.raw_personal_data(line), None);
        }
    }

    /// Text beyond ASCII (a mailbox's name, a unit, a name in a reason) is copied as it is,
    /// wherever a word's first bytes fall against its characters.
    #[test]
    fn non_ascii_text_is_copied() {
        let mut r = rewriter(IpPrivacy::Hmac, AddressPrivacy::Hmac);
        let line = "Nov 29 21:06:36 mx dovecot: imap(alice)<1><nJi6>: Disconnected: IDLE for 100 µs, Entwürfe moved";
        let copy = check(&mut r, line, &["alice", "nJi6"]);
        assert!(
            copy.ends_with(": Disconnected: IDLE for 100 µs, Entwürfe moved"),
            "{copy}"
        );
        for word in [
            "1", "12", "123", "1234", "a", "ab", "abc", "abcd", "a:b", "ipv6",
        ] {
            for after in ["µ", "€", "😀", " µ", " €"] {
                let text = format!("{word}{after}x");
                let line = format!("Nov 29 21:06:36 mx postfix/smtpd[1]: {text}");
                assert_eq!(r.line(&line), line);
                assert_eq!(r.line(&text), text);
            }
        }
    }

    #[test]
    fn raw_fields_are_reported_where_they_are() {
        let mut r = rewriter(IpPrivacy::Hmac, AddressPrivacy::Hmac);
        let line = POSTFIX[0].0;
        let raw = r.raw_personal_data(line).unwrap();
        assert_eq!(raw.kind, Field::Host);
        assert!(line[raw.at..].starts_with("client.example.org["));
        let line = "Nov 29 21:06:33 mx postfix/smtpd[9601]: connect from unknown[192.0.2.9]";
        let raw = r.raw_personal_data(line).unwrap();
        assert_eq!(
            (raw.kind, &line[raw.at..raw.at + 9]),
            (Field::Ip, "192.0.2.9")
        );
    }
}
