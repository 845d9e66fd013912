//! Where a PostgreSQL connection string keeps its password, found by parsing it as libpq and
//! the `postgres` crate do, so that logs and summaries can show everything else.
//!
//! Two forms (PostgreSQL's "Connection Strings"):
//! - URI: `postgresql://[user[:password]@][host][:port][,...][/dbname][?param=value&...]`,
//!   percent-encoded, where the password may also be the query parameter `password`;
//! - keyword/value: `host=db password='a b'`, spaces allowed around `=`, a value bare or in
//!   single quotes, `\` escaping the next character in both.
//!
//! Parsers disagree at the edges: the `postgres` crate ends the user information at the first
//! `@` anywhere in the string, libpq at the first `@` before a `/`, a URL parser at the last `@`
//! of the authority; the `postgres` crate ends a bare value at any Unicode white space, libpq
//! at ASCII white space only. Every reading is applied and the union of their password spans
//! hidden, so no reading of the string can find a password in what is shown. (The `url` crate
//! does not fit: libpq's several-hosts form, `h1:5432,h2:5433`, is no URL it accepts.)

use std::ops::Range;

/// The byte ranges of `s` that hold a password (or may, in some parser's reading), sorted and
/// merged. Each range starts and ends on a character boundary.
pub(super) fn password_spans(s: &str) -> Vec<Range<usize>> {
    let mut spans = match uri_rest(s) {
        Some(start) => uri_spans(s, start),
        None => keyword_value_spans(s),
    };
    spans.retain(|r| !r.is_empty());
    spans.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

/// `s` with every password span replaced by `***`.
pub(super) fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for span in password_spans(s) {
        out.push_str(&s[at..span.start]);
        out.push_str("***");
        at = span.end;
    }
    out.push_str(&s[at..]);
    out
}

/// Why the `postgres` crate refused `conninfo`, without what it quotes of the string unless
/// the redacted string shows it too (an unknown option's name): its parser's messages quote
/// single characters and option names, which may be part of a mistyped password.
pub(super) fn parse_error(conninfo: &str, error: &dyn std::error::Error) -> String {
    let shown = redact(conninfo);
    // The crate's own text is only "invalid connection string"; the reason is its cause.
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('`');
    out.extend(parts.next());
    // Between each pair of backquotes: a quotation from the string.
    while let Some(quoted) = parts.next() {
        let Some(after) = parts.next() else {
            out.push('`');
            out.push_str(quoted);
            break;
        };
        // The parser's own expectation (`=`) is no quotation.
        if quoted == "=" || (quoted.chars().count() > 1 && shown.contains(quoted)) {
            out.push_str(&format!("`{quoted}`"));
        } else {
            out.push_str("(withheld)");
        }
        out.push_str(after);
    }
    out
}

/// Where the part after `postgresql://` or `postgres://` starts, if `s` is a URI.
fn uri_rest(s: &str) -> Option<usize> {
    ["postgresql://", "postgres://"].iter().find_map(|prefix| {
        s.get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .map(|_| prefix.len())
    })
}

/// Whether a parameter's (decoded) name names a password: `password`, and to be safe any
/// name with `password` in it (libpq's `sslpassword`), in any case.
fn is_password_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

/// Whether a value may itself be a connection string with a password in it (libpq expands a
/// `dbname` that is one): it says `password`, or it is a URI with a password.
fn holds_password(value: &str) -> bool {
    is_password_key(value)
        || uri_rest(value).is_some_and(|start| !uri_spans(value, start).is_empty())
}

fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn uri_spans(s: &str, start: usize) -> Vec<Range<usize>> {
    let rest = &s[start..];
    let mut spans = Vec::new();
    // The user information's password: what follows its first ':'.
    let mut userinfo = |end: usize| {
        if let Some(colon) = rest[..end].find(':') {
            spans.push(start + colon + 1..start + end);
        }
    };
    // The `postgres` crate's reading: up to the first '@' anywhere.
    let first_at = rest.find('@');
    if let Some(at) = first_at {
        userinfo(at);
    }
    // libpq's and a URL parser's: the authority ends at '/', '?' or '#'; its last '@'.
    let authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority].rfind('@') {
        userinfo(at);
    }
    // Query parameters, from the first '?' and from the first '?' after the user information.
    let mut queries = vec![rest.find('?')];
    if let Some(at) = first_at {
        queries.push(rest[at..].find('?').map(|q| at + q));
    }
    queries.sort_unstable();
    queries.dedup();
    for question in queries.into_iter().flatten() {
        let mut at = question + 1;
        for param in rest[at..].split('&') {
            if let Some((key, value)) = param.split_once('=') {
                let value_start = start + at + key.len() + 1;
                if is_password_key(&percent_decoded(key)) || holds_password(&percent_decoded(value))
                {
                    spans.push(value_start..value_start + value.len());
                }
            }
            at += param.len() + 1;
        }
    }
    spans
}

/// The keyword/value form, tokenized as the `postgres` crate does; where it gives up (an
/// unterminated quote, a missing `=`), everything from there on is hidden.
fn keyword_value_spans(s: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut at = 0;
    let skip_ws = |at: usize| {
        s[at..]
            .find(|c: char| !c.is_whitespace())
            .map_or(s.len(), |i| at + i)
    };
    loop {
        at = skip_ws(at);
        if at == s.len() {
            return spans;
        }
        let key_end = s[at..]
            .find(|c: char| c.is_whitespace() || c == '=')
            .map_or(s.len(), |i| at + i);
        let key = &s[at..key_end];
        let eq = skip_ws(key_end);
        if key.is_empty() || !s[eq..].starts_with('=') {
            spans.push(at..s.len());
            return spans;
        }
        let value_start = skip_ws(eq + 1);
        let Some((value_end, value)) = scan_value(s, value_start) else {
            spans.push(value_start..s.len());
            return spans;
        };
        if is_password_key(key) {
            // libpq ends a bare value at ASCII white space only: hide up to there.
            let libpq_end = if s[value_start..].starts_with('\'') {
                value_end
            } else {
                scan_bare(s, value_start, |c| c.is_ascii_whitespace()).0
            };
            spans.push(value_start..value_end.max(libpq_end));
        } else if holds_password(&value) {
            spans.push(value_start..value_end);
        }
        at = value_end;
    }
}

/// A value at `start`: quoted or bare. Its end and its text, or `None` where the `postgres`
/// crate would fail (an unterminated quote, nothing at all).
fn scan_value(s: &str, start: usize) -> Option<(usize, String)> {
    if s[start..].starts_with('\'') {
        let mut value = String::new();
        let mut chars = s[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => return Some((start + 1 + i + 1, value)),
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                c => value.push(c),
            }
        }
        None
    } else {
        let (end, value) = scan_bare(s, start, char::is_whitespace);
        (end > start).then_some((end, value))
    }
}

/// A bare value at `start`, ended by a character `ends` accepts; `\` escapes the next one.
fn scan_bare(s: &str, start: usize, ends: impl Fn(char) -> bool) -> (usize, String) {
    let mut value = String::new();
    let mut chars = s[start..].char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if ends(c) {
            return (start + i, value);
        }
        chars.next();
        match c {
            '\\' => value.extend(chars.next().map(|(_, c)| c)),
            c => value.push(c),
        }
    }
    (s.len(), value)
}

#[cfg(test)]
mod tests {
    use super::{parse_error, redact};
    use proptest::prelude::*;

    #[test]
    fn uri_forms() {
        for (url, shown) in [
            (
                "postgresql://pm:s3cret@db.example.org:5432/privacy",
                "postgresql://pm:***@db.example.org:5432/privacy",
            ),
            (
                "postgresql://pm@db.example.org/privacy",
                "postgresql://pm@db.example.org/privacy",
            ),
            (
                "postgresql://u@h/db?password=x&sslmode=require",
                "postgresql://u@h/db?password=***&sslmode=require",
            ),
            (
                "postgresql://u@h/db?sslmode=require&password=x",
                "postgresql://u@h/db?sslmode=require&password=***",
            ),
            (
                "postgres://u@h/db?pass%77ord=x%20y&sslmode=require",
                "postgres://u@h/db?pass%77ord=***&sslmode=require",
            ),
            (
                "POSTGRESQL://u:p%40ss@h1:5432,h2:5433/db",
                "POSTGRESQL://u:***@h1:5432,h2:5433/db",
            ),
            // A raw '@' in the password: every '@' up to the authority's end is hidden.
            ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
            // A raw '/' in the password: the `postgres` crate reads up to the first '@'.
            ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
            // A raw '@' in a query password: hidden to its end.
            (
                "postgresql://h/db?password=p@ss&sslmode=disable",
                "postgresql://h/db?password=***&sslmode=disable",
            ),
            (
                "postgresql:///db?host=/run/postgresql&sslpassword=k",
                "postgresql:///db?host=/run/postgresql&sslpassword=***",
            ),
            (
                "postgresql:///db?dbname=postgresql://u:pw@h/db",
                "postgresql:///db?dbname=***",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn keyword_value_forms() {
        for (conninfo, shown) in [
            (
                "host=db user=pm password=s3cret dbname=privacy",
                "host=db user=pm password=*** dbname=privacy",
            ),
            (
                "host=db password='a b' dbname=privacy",
                "host=db password=*** dbname=privacy",
            ),
            (
                r"host=db password = 'x\' y' dbname=privacy",
                "host=db password = *** dbname=privacy",
            ),
            (
                r"host=db password=a\ b dbname=privacy",
                "host=db password=*** dbname=privacy",
            ),
            // The `postgres` crate ends the value at U+00A0 (and then fails), libpq does not.
            ("password=a\u{a0}b host=db", "password=***"),
            ("PASSWORD=x host=db", "PASSWORD=*** host=db"),
            (
                "dbname='postgresql://u:pw@h/db' host=db",
                "dbname=*** host=db",
            ),
            // Where the tokenizer gives up, the rest is hidden.
            ("host=db password='unterminated", "host=db password=***"),
            ("host=db password secret", "host=db ***"),
            ("host=db =x password", "host=db ***"),
            ("", ""),
        ] {
            assert_eq!(redact(conninfo), shown, "{conninfo}");
        }
    }

    #[test]
    fn parse_errors_quote_no_password() {
        let error = |conninfo: &str| {
            let e = conninfo.parse::<postgres::Config>().unwrap_err();
            parse_error(conninfo, &e)
        };
        assert!(error("host=db sslmod=require").contains("`sslmod`"));
        let e = error("host=db password secret");
        assert!(!e.contains("`s`") && e.contains("(withheld)"), "{e}");
        let e = error("host=db password='se cret");
        assert!(!e.contains("se") && !e.contains("cret"), "{e}");
    }

    /// A password the parser must find, written into the string as `form` says.
    fn password() -> impl Strategy<Value = String> {
        // "ZQ" marks it: it appears nowhere else in the strings made here.
        "[ -~\u{a0}é]{0,16}".prop_map(|tail| format!("ZQ{tail}"))
    }

    fn percent_encoded(s: &str, all: bool) -> String {
        s.bytes()
            .map(|b| {
                if !all && b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn quoted(s: &str) -> String {
        format!("'{}'", s.replace('\\', r"\\").replace('\'', r"\'"))
    }

    /// The password as `postgres::Config` reads it from `conninfo`.
    fn parsed_password(conninfo: &str) -> Option<Vec<u8>> {
        conninfo
            .parse::<postgres::Config>()
            .ok()?
            .get_password()
            .map(<[u8]>::to_vec)
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = redact(&s);
        }

        #[test]
        fn never_panics_on_near_misses(s in "(postgres(ql)?://)?[ -~\u{a0}é]{0,40}") {
            let _ = redact(&s);
        }

        #[test]
        fn uri_passwords_are_hidden(
            pw in password(),
            all in any::<bool>(),
            in_query in any::<bool>(),
            key in prop::sample::select(vec!["password", "pass%77ord"]),
        ) {
            let encoded = percent_encoded(&pw, all);
            let url = if in_query {
                format!("postgresql://pm@db.example.org:5432/privacy?{key}={encoded}&sslmode=disable")
            } else {
                format!("postgresql://pm:{encoded}@db.example.org:5432/privacy?sslmode=disable")
            };
            prop_assert_eq!(parsed_password(&url), Some(pw.clone().into_bytes()));
            let shown = redact(&url);
            prop_assert!(!shown.contains("ZQ") && !shown.contains("%5A%51"), "{}", shown);
            prop_assert!(shown.contains("db.example.org:5432/privacy?") && shown.contains("sslmode=disable"), "{}", shown);
            prop_assert_eq!(parsed_password(&shown), Some(b"***".to_vec()));
        }

        #[test]
        fn keyword_value_passwords_are_hidden(
            pw in password(),
            spaces in "[ ]{0,2}",
            quote in any::<bool>(),
        ) {
            let value = if quote {
                quoted(&pw)
            } else {
                pw.chars().flat_map(|c| {
                    let escape = c.is_whitespace() || c == '\\' || c == '\'';
                    escape.then_some('\\').into_iter().chain([c])
                }).collect()
            };
            let conninfo = format!("host=db.example.org port=5432 password{spaces}={spaces}{value} dbname=privacy");
            prop_assert_eq!(parsed_password(&conninfo), Some(pw.clone().into_bytes()));
            let shown = redact(&conninfo);
            prop_assert!(!shown.contains("ZQ"), "{}", shown);
            prop_assert!(shown.starts_with("host=db.example.org port=5432 password") && shown.ends_with(" dbname=privacy"), "{}", shown);
            prop_assert_eq!(parsed_password(&shown), Some(b"***".to_vec()));
        }
    }
}
