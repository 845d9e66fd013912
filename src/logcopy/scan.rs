//! The scan of a log message: every personal field found by its key (`from=<>`, `helo=<>`,
//! `sasl_username=`, Dovecot's `user=<>` and `imap(USER)`), by its place (`NAME[IP]`, Sendmail's
//! `relay=NAME [IP]`, `hostname NAME`) or by its pattern (any IP, any address, a host name that
//! spells an IP), and written as [`Pseudonyms`] says. One pass, left to right; the text between
//! fields is copied as it is.
//!
//! What a pseudonym looks like is never taken for a field again (`hmac:KEYID:HEX`, `*.domain`,
//! `@domain`, a network `192.0.2.0/24`, `-`), so that a line scanned twice is the same line.

use super::pseudonym::{Field, Pseudonyms};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Keys whose value is an address or a login.
const ADDRESS_KEYS: &[&str] = &[
    "from",
    "to",
    "orig_to",
    "ctladdr",
    "user",
    "sasl_username",
    "sasl_sender",
    "authid",
    "sender",
    "recipient",
    "rcpt",
    "arg1",
    "login",
];

/// Dovecot's log prefixes `SERVICE(USER)` and its passdbs' `DB(USER,IP,<SESSION>)`.
const DOVECOT_PREFIXES: &[&str] = &[
    "imap",
    "pop3",
    "lmtp",
    "lda",
    "managesieve",
    "submission",
    "doveadm",
    "indexer-worker",
    "quota-status",
    "passwd-file",
    "passwd",
    "shadow",
    "pam",
    "sql",
    "ldap",
    "static",
    "checkpassword",
    "bsdauth",
    "oauth2",
];

/// The actions of Postfix's header and body checks, whose lines quote the message.
const CHECK_ACTIONS: &[&str] = &[
    "warning", "info", "reject", "hold", "discard", "filter", "redirect", "replace", "prepend",
    "bcc", "dunno", "ok", "ignore",
];

/// A bracketed value longer than this is not one value: scanned as text.
const MAX_BRACKETED: usize = 1024;

/// The letters of a run of text that may be a field: a host name, a key, an IPv4 address, an
/// address's local part.
fn in_run(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+')
}

/// RFC 5322's atext beyond the run's letters: kept inside a local part.
fn in_atext(b: u8) -> bool {
    in_run(b) || b"!#$%&'*/=?^`{|}~".contains(&b)
}

fn in_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

fn in_ipv6(b: u8) -> bool {
    b.is_ascii_hexdigit() || matches!(b, b':' | b'.')
}

/// Where a scanned field starts, when it is raw: what `raw_personal_data` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawField {
    pub kind: Field,
    /// Its byte offset in the line.
    pub at: usize,
}

/// One line's scan: the output, and the first field that was raw.
pub struct Scan<'a> {
    pub names: &'a mut Pseudonyms,
    pub out: &'a mut String,
    pub first_raw: Option<RawField>,
}

impl Scan<'_> {
    /// Writes `value` as a field of `kind`; `at`: its offset in the line.
    fn field(&mut self, kind: Field, value: &str, at: usize) {
        if self.names.write(kind, value, self.out) && self.first_raw.is_none() {
            self.first_raw = Some(RawField { kind, at });
        }
    }

    /// A log message; `base`: its offset in the line.
    pub fn message(&mut self, msg: &str, base: usize) {
        match quoted_text(msg) {
            Some((start, end)) => {
                self.text(&msg[..start], base);
                self.field(Field::Text, &msg[start..end], base + start);
                self.text(&msg[end..], base + end);
            }
            None => self.text(msg, base),
        }
    }

    /// Free text: every field in it.
    pub fn text(&mut self, s: &str, base: usize) {
        let b = s.as_bytes();
        let mut i = 0;
        // s[copied..i] is yet to be written as it is.
        let mut copied = 0;
        while i < b.len() {
            let c = b[i];
            if c == b'<' {
                if let Some(len) = b[i + 1..]
                    .iter()
                    .take(MAX_BRACKETED)
                    .position(|&x| x == b'>')
                {
                    let content = &s[i + 1..i + 1 + len];
                    let key = key_before(s, i);
                    if let Some(kind) = bracketed_kind(key, content) {
                        self.out.push_str(&s[copied..=i]);
                        match kind {
                            Bracketed::Field(kind) => self.field(kind, content, base + i + 1),
                            Bracketed::Helo => self.host_or_text(content, base + i + 1),
                        }
                        i += 1 + len;
                        copied = i;
                        continue;
                    }
                }
                i += 1;
                continue;
            }
            // After an `@` is a domain: an address's, taken with it, or a pseudonym's.
            let boundary = i == 0 || !(in_run(b[i - 1]) || matches!(b[i - 1], b':' | b'@'));
            if !boundary || !(c.is_ascii_alphanumeric() || c == b':') {
                i += 1;
                continue;
            }
            // A pseudonym passes as it is.
            if s[i..].starts_with("hmac:") {
                i += b[i..]
                    .iter()
                    .position(|&x| !(x.is_ascii_alphanumeric() || x == b':'))
                    .unwrap_or(b.len() - i);
                continue;
            }
            // "IPv6:" before an address (literals): the prefix stays.
            // Bytes, not `s[i..i + 5]`: the fifth may be inside a character beyond ASCII.
            let v6_from = if b.len() - i > 5 && b[i..i + 5].eq_ignore_ascii_case(b"ipv6:") {
                i + 5
            } else {
                i
            };
            if let Some(end) = ipv6_at(s, v6_from) {
                if is_network(&s[v6_from..end], &s[end..]) {
                    i = end;
                    continue;
                }
                self.out.push_str(&s[copied..v6_from]);
                self.ip(&s[v6_from..end], base + v6_from);
                i = end;
                copied = i;
                continue;
            }
            let j = i + b[i..]
                .iter()
                .position(|&x| !in_run(x))
                .unwrap_or(b.len() - i);
            if j == i {
                i += 1;
                continue;
            }
            let run = &s[i..j];
            let next = b.get(j).copied();
            match next {
                Some(b'=') if ADDRESS_KEYS.contains(&run) && b.get(j + 1) != Some(&b'<') => {
                    let value_end = j
                        + 1
                        + b[j + 1..]
                            .iter()
                            .position(|&x| x.is_ascii_whitespace() || x == b';')
                            .unwrap_or(b.len() - j - 1);
                    let value = s[j + 1..value_end].trim_end_matches(',');
                    self.out.push_str(&s[copied..=j]);
                    self.addresses(value, base + j + 1);
                    i = j + 1 + value.len();
                    copied = i;
                    continue;
                }
                Some(b'@') => {
                    if let Some(end) = domain_end(b, j + 1) {
                        // The local part may hold atext the run does not: take it back.
                        let mut start = i;
                        while start > copied && in_atext(b[start - 1]) {
                            start -= 1;
                        }
                        self.out.push_str(&s[copied..start]);
                        self.address(&s[start..end], base + start);
                        i = end;
                        copied = i;
                        continue;
                    }
                }
                Some(b'[') if bracket_holds_ip(&s[j..]) => {
                    self.out.push_str(&s[copied..i]);
                    self.host(run, base + i);
                    i = j;
                    copied = i;
                    continue;
                }
                Some(b' ')
                    if b.get(j + 1) == Some(&b'[')
                        && bracket_holds_ip(&s[j + 1..])
                        && (s[..i].ends_with("relay=") || looks_like_host(run)) =>
                {
                    self.out.push_str(&s[copied..i]);
                    self.host(run, base + i);
                    i = j;
                    copied = i;
                    continue;
                }
                Some(b'(') if DOVECOT_PREFIXES.contains(&run) => {
                    if let Some(len) = b[j + 1..]
                        .iter()
                        .take(MAX_BRACKETED)
                        .position(|&x| x == b')')
                    {
                        let args = &s[j + 1..j + 1 + len];
                        let (user, rest) = args.split_once(',').unwrap_or((args, ""));
                        self.out.push_str(&s[copied..=j]);
                        if user.bytes().all(|x| x.is_ascii_digit()) {
                            self.out.push_str(user);
                        } else {
                            self.address(user, base + j + 1);
                        }
                        if args.len() > user.len() {
                            self.out.push(',');
                            self.text(rest, base + j + 2 + user.len());
                        }
                        i = j + 1 + len;
                        copied = i;
                        continue;
                    }
                }
                _ => {}
            }
            let ip_text = run.trim_end_matches('.');
            if next.is_none_or(|x| !x.is_ascii_alphanumeric())
                && c.is_ascii_digit()
                && ip_text.parse::<Ipv4Addr>().is_ok()
            {
                if is_network(ip_text, &s[j..]) {
                    // What `truncated` writes, or a network named in a message.
                    i = j;
                    continue;
                }
                self.out.push_str(&s[copied..i]);
                self.ip(ip_text, base + i);
                i += ip_text.len();
                copied = i;
                continue;
            }
            // The cheap tests first: most runs are words.
            if (after_hostname_word(&s[..i]) && looks_like_host(run)) || spells_ip(run) {
                self.out.push_str(&s[copied..i]);
                self.host(run, base + i);
                i = j;
                copied = i;
                continue;
            }
            i = j;
        }
        self.out.push_str(&s[copied..]);
    }

    fn ip(&mut self, text: &str, at: usize) {
        match text.parse::<IpAddr>() {
            // Loopback names no one: kept, as the MTA's own hops read better with it.
            Ok(ip) if crate::ip::canonical(ip).is_loopback() || ip.is_unspecified() => {
                self.out.push_str(text)
            }
            _ => self.field(Field::Ip, text, at),
        }
    }

    fn host(&mut self, name: &str, at: usize) {
        let bare = name.trim_end_matches('.');
        if bare.parse::<IpAddr>().is_ok() {
            // An IP in a name's place (relay=127.0.0.1[127.0.0.1]) is scanned as an IP.
            self.ip(bare, at);
            self.out.push_str(&name[bare.len()..]);
        } else if is_pseudonym(name)
            || bare.eq_ignore_ascii_case("unknown")
            || bare.eq_ignore_ascii_case("localhost")
        {
            self.out.push_str(name);
        } else {
            self.field(Field::Host, name, at);
        }
    }

    /// A HELO name: a host name, or text (an address literal).
    fn host_or_text(&mut self, value: &str, at: usize) {
        if !value.is_empty() && value.bytes().all(in_run) {
            self.host(value, at)
        } else {
            self.text(value, at)
        }
    }

    fn address(&mut self, value: &str, at: usize) {
        if is_pseudonym(value) || value.starts_with('@') {
            self.out.push_str(value);
        } else {
            self.field(Field::Address, value, at);
        }
    }

    /// The value of an address key: one address, or Sendmail's list `a,b,<c>`.
    fn addresses(&mut self, value: &str, at: usize) {
        let mut offset = 0;
        for (n, part) in value.split(',').enumerate() {
            if n > 0 {
                self.out.push(',');
            }
            match part.strip_prefix('<').and_then(|p| p.strip_suffix('>')) {
                Some(inner) => {
                    self.out.push('<');
                    if !inner.is_empty() {
                        self.address(inner, at + offset + 1);
                    }
                    self.out.push('>');
                }
                None if part.is_empty() => {}
                None => self.address(part, at + offset),
            }
            offset += part.len() + 1;
        }
    }
}

enum Bracketed {
    Field(Field),
    Helo,
}

/// What a `<...>` holds, by the key before it (`from=<`) and its content; None: scan it as
/// text.
fn bracketed_kind(key: &str, content: &str) -> Option<Bracketed> {
    if content.is_empty() || is_pseudonym(content) || content.starts_with('@') {
        return None;
    }
    if content.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    if key == "helo" {
        return Some(Bracketed::Helo);
    }
    if key == "session" {
        return Some(Bracketed::Field(Field::Opaque));
    }
    if content.contains('@') || ADDRESS_KEYS.contains(&key) {
        return Some(Bracketed::Field(Field::Address));
    }
    // A pid, a placeholder (<CR>, <LF>), a bracketed IP or name: scanned as text. Anything
    // else (a Dovecot session id, Sendmail's `<bob>... User unknown`) may name someone.
    if content.bytes().all(|b| b.is_ascii_digit())
        || content.bytes().all(|b| b.is_ascii_uppercase())
        || content.contains(['.', ':', '['])
    {
        return None;
    }
    Some(Bracketed::Field(Field::Opaque))
}

/// The key of `key=<` ending at `at` (the `<`), or "".
fn key_before(s: &str, at: usize) -> &str {
    let Some(head) = s[..at].strip_suffix('=') else {
        return "";
    };
    let start = head
        .bytes()
        .rposition(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        .map_or(0, |p| p + 1);
    &head[start..]
}

/// The end of the domain of an address whose `@` is just before `from`: a name or an address
/// literal.
fn domain_end(b: &[u8], from: usize) -> Option<usize> {
    if b.get(from) == Some(&b'[') {
        let len = b[from..].iter().take(64).position(|&x| x == b']')?;
        return Some(from + len + 1);
    }
    let len = b[from..]
        .iter()
        .position(|&x| !in_domain(x))
        .unwrap_or(b.len() - from);
    let domain = &b[from..from + len];
    // A trailing dot ends a sentence, not the domain.
    let len = len - domain.iter().rev().take_while(|&&x| x == b'.').count();
    (len > 0 && b[from].is_ascii_alphanumeric()).then_some(from + len)
}

/// The end of an IPv6 address starting at `from` (two colons at least), if one does.
fn ipv6_at(s: &str, from: usize) -> Option<usize> {
    let b = s.as_bytes();
    let first = *b.get(from)?;
    if !(first.is_ascii_hexdigit() || first == b':') {
        return None;
    }
    let len = b[from..]
        .iter()
        .position(|&x| !in_ipv6(x))
        .unwrap_or(b.len() - from);
    let mut text = &s[from..from + len];
    if text.bytes().filter(|&x| x == b':').count() < 2 {
        return None;
    }
    // A sentence's dot, a "host:port" colon after a bracket are not the address's.
    while !text.is_empty() && text.parse::<Ipv6Addr>().is_err() {
        match text.as_bytes()[text.len() - 1] {
            b'.' | b':' => text = &text[..text.len() - 1],
            _ => return None,
        }
    }
    let end = from + text.len();
    let after = b.get(end).copied();
    (!text.is_empty()
        && after.is_none_or(|x| !(x.is_ascii_alphanumeric() || x == b'_' || x == b'-')))
    .then_some(end)
}

/// Whether `[` at the start of `rest` holds an IP: `[192.0.2.9]`, `[IPv6:2001:db8::1]`.
fn bracket_holds_ip(rest: &str) -> bool {
    let Some(inner) = rest.strip_prefix('[') else {
        return false;
    };
    let Some(end) = inner.find(']') else {
        return false;
    };
    let inner = &inner[..end];
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    let network = inner
        .split_once('/')
        .is_some_and(|(ip, len)| ip.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok());
    inner.parse::<IpAddr>().is_ok() || is_pseudonym(inner) || network
}

/// Whether an IP followed by `rest` is a network (`192.0.2.0/24`, `2001:db8::/48`): a
/// prefix shorter than the address, its host bits zero. One address as `/32` is an address.
fn is_network(ip: &str, rest: &str) -> bool {
    let Some(prefix) = rest.strip_prefix('/') else {
        return false;
    };
    let digits = prefix.bytes().take_while(u8::is_ascii_digit).count();
    let (Ok(ip), Ok(len)) = (ip.parse::<IpAddr>(), prefix[..digits].parse::<u8>()) else {
        return false;
    };
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    len < bits && ipnet::IpNet::new(ip, len).is_ok_and(|net| net.trunc().addr() == ip)
}

/// A name of two labels or more, the last a word: `mx.example.org`.
fn looks_like_host(run: &str) -> bool {
    let run = run.trim_end_matches('.');
    match run.rsplit_once('.') {
        Some((head, tld)) => {
            !head.is_empty()
                && tld.len() >= 2
                && tld.bytes().all(|b| b.is_ascii_alphabetic())
                && !run.contains("..")
        }
        None => false,
    }
}

/// A host name that spells an IP: four numbers of at most 255 or more among its labels
/// (`1-2-3-4.dialup.example.net`, `static.9.2.0.192.clients.example.de`).
fn spells_ip(run: &str) -> bool {
    if run.bytes().filter(u8::is_ascii_digit).count() < 4 || !looks_like_host(run) {
        return false;
    }
    run.split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty() && n.len() <= 3 && n.parse::<u16>().is_ok_and(|v| v <= 255))
        .count()
        >= 4
}

/// Whether the text before a name calls it a host: Postfix's "hostname NAME does not
/// resolve", "hostname NAME verification failed".
fn after_hostname_word(before: &str) -> bool {
    before.ends_with("hostname ") || before.ends_with("host ") || before.ends_with("name ")
}

/// What the copy writes in place of a field, which is never read as one.
pub fn is_pseudonym(value: &str) -> bool {
    value.starts_with("hmac:") || value.starts_with("*.") || value == "-"
}

/// The text a header or body check quotes: after `ACTION: header ` (or `body `) up to the
/// ` from CLIENT; from=<` Postfix appends, or to the end.
fn quoted_text(msg: &str) -> Option<(usize, usize)> {
    let b = msg.as_bytes();
    let mut from = 0;
    while let Some(p) = msg[from..].find(": ").map(|p| p + from) {
        from = p + 2;
        let rest = &msg[p + 2..];
        let start = if rest.starts_with("header ") {
            p + 2 + "header ".len()
        } else if rest.starts_with("body ") {
            p + 2 + "body ".len()
        } else {
            continue;
        };
        let word_start = b[..p]
            .iter()
            .rposition(|&x| !x.is_ascii_alphabetic())
            .map_or(0, |q| q + 1);
        if !CHECK_ACTIONS.contains(&&msg[word_start..p]) {
            continue;
        }
        let end = match msg[start..].rfind("; from=<") {
            Some(e) => {
                let e = start + e;
                msg[start..e].rfind(" from ").map_or(e, |f| start + f)
            }
            None => msg.len(),
        };
        return Some((start, end));
    }
    None
}
