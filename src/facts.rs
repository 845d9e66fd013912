//! What the session learns about a connection and a message: plain data, filled in by
//! `session`, read by `classify`, `rules` and `event`.

use std::{fmt, net::IpAddr};

/// How many copies of a header of interest we keep the value of; further copies are only
/// counted (they are still deleted where a rule says so).
const MAX_KEPT_VALUES: usize = 16;
/// Longest header value we keep; a longer one can be neither an address nor our transit tag
/// and is kept truncated, which still fails to parse.
const MAX_KEPT_VALUE_LEN: usize = 512;
/// Longest Message-ID value we keep: more than a transit tag's MAC covers, with room for
/// folding white space.
const MAX_MESSAGE_ID_LEN: usize = 4096;

/// The names of the header fields the rules look at, compared without regard to case.
#[derive(Clone, Debug)]
pub struct WatchedHeaders {
    pub originating_ip: String,
    pub transit_tag: String,
}

/// Facts about the SMTP client, from the connect stage.
#[derive(Clone, Debug, Default)]
pub struct ConnectionFacts {
    /// The client's address; `None` for local submission (the `sendmail` command).
    pub client_ip: Option<IpAddr>,
    /// Our host name as the MTA names it (macro `j`).
    pub host: Option<String>,
    /// The MTA's daemon name (macro `{daemon_name}`), kept for logs.
    pub daemon_name: Option<String>,
}

/// Facts about one message, from MAIL FROM to end of message.
#[derive(Clone, Debug, Default)]
pub struct MessageFacts {
    /// The MTA's queue id (macro `i`), when known.
    pub queue_id: Option<String>,
    /// The envelope sender without angle brackets; empty for the null sender.
    pub sender: String,
    /// The session authenticated (`{auth_type}` or `{auth_authen}` set).
    pub authenticated: bool,
    pub recipients: Vec<Recipient>,
    pub originating_ip: HeaderCopies,
    pub transit_tag: HeaderCopies,
    /// The raw value of the first Message-ID field, which a transit tag is bound to.
    pub message_id: Option<Vec<u8>>,
    /// Bytes of header and body seen, as the message would be stored.
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address without angle brackets.
    pub address: String,
    /// The `{rcpt_mailer}` macro: the transport the MTA chose.
    pub mailer: Option<String>,
}

impl Recipient {
    /// The MTA refused this recipient (it reports refused recipients with mailer `error`).
    pub fn rejected(&self) -> bool {
        self.mailer.as_deref() == Some("error")
    }
}

/// The copies of one header field that a message arrived with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderCopies {
    /// How many there were; the milter protocol addresses copy `n` by index `n` (from 1).
    pub count: i32,
    /// The raw values of the first copies, in order.
    pub values: Vec<Vec<u8>>,
}

impl HeaderCopies {
    fn push(&mut self, value: &[u8]) {
        self.count = self.count.saturating_add(1);
        if self.values.len() < MAX_KEPT_VALUES {
            self.values
                .push(value[..value.len().min(MAX_KEPT_VALUE_LEN)].to_vec());
        }
    }
}

impl MessageFacts {
    /// Notes one header: its size, and its value if a rule looks at headers of that name.
    pub fn header(&mut self, name: &[u8], value: &[u8], watched: &WatchedHeaders) {
        // "Name: value\r\n"
        self.size += (name.len() + value.len() + 4) as u64;
        if name.eq_ignore_ascii_case(watched.originating_ip.as_bytes()) {
            self.originating_ip.push(value);
        } else if name.eq_ignore_ascii_case(watched.transit_tag.as_bytes()) {
            self.transit_tag.push(value);
        }
        if self.message_id.is_none() && name.eq_ignore_ascii_case(b"Message-ID") {
            self.message_id = Some(value[..value.len().min(MAX_MESSAGE_ID_LEN)].to_vec());
        }
    }

    /// The recipients the MTA accepted.
    pub fn accepted_recipients(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| !r.rejected())
    }
}

/// The domain of an address, in lower case; `None` for the null sender or a bare local part.
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.');
    if domain.is_empty() {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

/// A value from the wire (an address, a queue id, a macro) as a log line may show it: a line
/// break would forge a line of its own, and ESC or BEL would reach a terminal. Control
/// characters (C0, DEL, C1), the Unicode line and paragraph separators and the backslash are
/// written as escapes: `\n`, `\r`, `\t`, `\\`, `\x1b`, `\u{85}`, `\u{2028}`.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        // Plain runs are written whole; only what needs an escape is written char by char.
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found a char");
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\\' | '\u{2028}' | '\u{2029}')
}

/// Removes the angle brackets of an SMTP path: `<a@b>` becomes `a@b`.
pub fn unbracket(path: &str) -> &str {
    let path = path.trim();
    path.strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domains() {
        assert_eq!(domain_of("Alice@Example.ORG"), Some("example.org".into()));
        assert_eq!(domain_of("a@b@c.example."), Some("c.example".into()));
        assert_eq!(domain_of(""), None);
        assert_eq!(domain_of("postmaster"), None);
        assert_eq!(domain_of("x@"), None);
        assert_eq!(unbracket("<a@b>"), "a@b");
        assert_eq!(unbracket("<>"), "");
        assert_eq!(unbracket("a@b"), "a@b");
    }

    #[test]
    fn escapes() {
        let e = |s: &str| Escaped(s).to_string();
        assert_eq!(e("example.org"), "example.org");
        assert_eq!(e("a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(e("\x1b[2J\x07\x7f\0"), r"\x1b[2J\x07\x7f\x00");
        assert_eq!(e("\u{85}\u{2028}é"), r"\u{85}\u{2028}é");
        assert_eq!(e(r"a\nb"), r"a\\nb");
    }

    proptest! {
        #[test]
        fn escaped_values_hold_no_control_character(s in "\\PC*|[\\x00-\\x7f\u{80}-\u{9f}\u{2028}é]*") {
            let shown = Escaped(&s).to_string();
            prop_assert!(!shown.chars().any(needs_escape_but_backslash), "{:?}", shown);
            // Nothing is lost: the escapes read back.
            prop_assert_eq!(unescape(&shown), s);
        }

        #[test]
        fn domains_and_paths_never_panic(s in "\\PC*") {
            if let Some(d) = domain_of(&s) {
                prop_assert!(!d.is_empty() && !d.ends_with('.'));
                prop_assert_eq!(d.to_ascii_lowercase(), d);
            }
            let inner = unbracket(&s);
            prop_assert!(s.contains(inner));
        }
    }

    fn needs_escape_but_backslash(c: char) -> bool {
        c != '\\' && needs_escape(c)
    }

    /// Reads the escapes `Escaped` writes.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                }
                Some('u') => {
                    let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => panic!("unknown escape {other:?} in {s:?}"),
            }
        }
        out
    }

    #[test]
    fn header_copies_are_counted_and_bounded() {
        let watched = WatchedHeaders {
            originating_ip: "X-Originating-IP".into(),
            transit_tag: "X-Transit".into(),
        };
        let mut facts = MessageFacts::default();
        for _ in 0..100 {
            facts.header(b"x-originating-ip", &[b'1'; 10_000], &watched);
        }
        facts.header(b"X-Transit", b"relay", &watched);
        facts.header(b"Subject", b"hello", &watched);
        facts.header(b"message-id", b" <a@b>", &watched);
        facts.header(b"Message-ID", b"<second@b>", &watched);
        assert_eq!(facts.originating_ip.count, 100);
        assert_eq!(facts.originating_ip.values.len(), MAX_KEPT_VALUES);
        assert!(facts
            .originating_ip
            .values
            .iter()
            .all(|v| v.len() == MAX_KEPT_VALUE_LEN));
        assert_eq!(facts.transit_tag.count, 1);
        assert_eq!(
            facts.message_id.as_deref(),
            Some(b" <a@b>".as_slice()),
            "the first"
        );
        assert_eq!(
            facts.size,
            100 * (16 + 10_000 + 4) + (9 + 5 + 4) + (7 + 5 + 4) + (10 + 6 + 4) + (10 + 10 + 4)
        );
    }
}
