//! Reading IP addresses out of what MTAs and webmail hosts hand us.

use std::net::IpAddr;

/// The longest header value we try to read as an address; anything longer is not one.
const MAX_VALUE_LEN: usize = 100;

/// Parses an address as the MTA gives it in `{client_addr}` or a connect command:
/// Postfix and Sendmail may write IPv6 as `IPv6:2001:db8::1`, sometimes in brackets.
pub fn parse_mta_addr(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let text = strip_ipv6_tag(text);
    text.parse::<IpAddr>().ok().map(canonical)
}

/// Parses the value of an originating-IP header set by a webmail host: one address, bare or
/// in brackets, with surrounding white space (folding included). Anything else, such as a
/// second address, a comment, a CR or LF, or invalid UTF-8, is refused, so a hostile value is
/// never copied into a header.
pub fn parse_header_value(raw: &[u8]) -> Option<IpAddr> {
    if raw.len() > MAX_VALUE_LEN {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    // Folding white space is CRLF followed by a space or tab; a bare CR or LF is never valid.
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    if unfolded.contains(['\r', '\n']) {
        return None;
    }
    let inner = unfolded.trim_matches([' ', '\t']);
    let inner = match inner.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None => inner,
    };
    let inner = strip_ipv6_tag(inner);
    if inner.is_empty()
        || !inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
    {
        return None;
    }
    inner.parse::<IpAddr>().ok().map(canonical)
}

/// The header value we write: the address in brackets, as Exchange does.
pub fn header_value(ip: IpAddr) -> String {
    format!("[{ip}]")
}

/// The network of `ip` with the given prefix length, such as `203.0.113.0/24`. Prefix
/// lengths are validated at load; an out-of-range one yields the whole address space's
/// broadest network rather than a panic.
pub fn truncate(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> ipnet::IpNet {
    let prefix = match ip {
        IpAddr::V4(_) => ipv4_prefix.min(32),
        IpAddr::V6(_) => ipv6_prefix.min(128),
    };
    ipnet::IpNet::new(ip, prefix)
        .expect("prefix clamped")
        .trunc()
}

fn strip_ipv6_tag(text: &str) -> &str {
    match text.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => &text[5..],
        _ => text,
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, as dual-stack sockets report IPv4
/// clients) are the IPv4 address; networks and headers then match what the operator wrote.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An address written as webmail hosts and MTAs write it: bare or in brackets, IPv6
    /// perhaps tagged, with white space (folding included) around.
    fn written(ip: IpAddr, brackets: bool, tag: bool, space: &str) -> String {
        let inner = match ip {
            IpAddr::V6(_) if tag => format!("IPv6:{ip}"),
            _ => ip.to_string(),
        };
        let inner = if brackets {
            format!("[{inner}]")
        } else {
            inner
        };
        format!("{space}{inner}{}", space.replace("\r\n", ""))
    }

    proptest! {
        #[test]
        fn header_values_never_panic(raw in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Some(ip) = parse_header_value(&raw) {
                // What is written back is the address, canonical, and reads the same.
                prop_assert_eq!(parse_header_value(header_value(ip).as_bytes()), Some(ip));
                prop_assert_eq!(canonical(ip), ip);
            }
        }

        #[test]
        fn header_values_with_text_never_panic(s in "[\\[\\] \t\r\n0-9a-fA-FIPv:.,;()]{0,60}") {
            if let Some(ip) = parse_header_value(s.as_bytes()) {
                prop_assert_eq!(parse_header_value(header_value(ip).as_bytes()), Some(ip));
            }
        }

        #[test]
        fn written_addresses_are_read(
            ip in any::<IpAddr>(),
            brackets in any::<bool>(),
            tag in any::<bool>(),
            space in prop::sample::select(vec!["", " ", "\t", "\r\n ", "\r\n\t"]),
        ) {
            let text = written(ip, brackets, tag, space);
            prop_assert_eq!(parse_header_value(text.as_bytes()), Some(canonical(ip)), "{:?}", text);
            prop_assert_eq!(parse_mta_addr(&text), Some(canonical(ip)), "{:?}", text);
        }

        #[test]
        fn a_bare_line_break_or_a_second_value_is_refused(
            ip in any::<IpAddr>(),
            tail in prop::sample::select(vec!["\r\nBcc: x@example.org", "\n", "\r", ", 10.0.0.1", " (comment)", "]"]),
        ) {
            let text = format!("{ip}{tail}");
            prop_assert_eq!(parse_header_value(text.as_bytes()), None, "{:?}", text);
        }

        #[test]
        fn mta_addresses_never_panic(s in "\\PC{0,60}") {
            if let Some(ip) = parse_mta_addr(&s) {
                prop_assert_eq!(canonical(ip), ip);
            }
        }

        #[test]
        fn truncation_never_panics(ip in any::<IpAddr>(), v4 in any::<u8>(), v6 in any::<u8>()) {
            let net = truncate(ip, v4, v6);
            prop_assert!(net.contains(&ip));
        }
    }

    fn p(s: &str) -> Option<String> {
        parse_header_value(s.as_bytes()).map(|ip| ip.to_string())
    }

    #[test]
    fn header_values_accepted() {
        assert_eq!(p("198.51.100.23"), Some("198.51.100.23".into()));
        assert_eq!(p("[198.51.100.23]"), Some("198.51.100.23".into()));
        assert_eq!(p("  [198.51.100.23]  "), Some("198.51.100.23".into()));
        assert_eq!(p("\r\n [2001:DB8::7]"), Some("2001:db8::7".into()));
        assert_eq!(p("IPv6:2001:db8::7"), Some("2001:db8::7".into()));
        assert_eq!(p("[IPv6:2001:db8::7]"), Some("2001:db8::7".into()));
        assert_eq!(p("::ffff:192.0.2.9"), Some("192.0.2.9".into()));
    }

    #[test]
    fn header_values_refused() {
        for bad in [
            "",
            "[]",
            "garbage",
            "198.51.100.23\r\nBcc: victim@example.org",
            "198.51.100.23\nX-Evil: 1",
            "198.51.100.23\r",
            "198.51.100.23, 10.0.0.1",
            "[198.51.100.23",
            "198.51.100.23]",
            "198.51.100.256",
            "198.51.100.23 (comment)",
            "1.2.3.4.5",
            "[[198.51.100.23]]",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(parse_header_value(&[0xff, b'1']), None);
        let long = format!("[{}198.51.100.23]", " ".repeat(5000));
        assert_eq!(p(&long), None);
    }

    #[test]
    fn mta_addresses() {
        assert_eq!(
            parse_mta_addr("IPv6:2001:db8::1"),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(parse_mta_addr("[IPv6:::1]"), "::1".parse().ok());
        assert_eq!(parse_mta_addr("192.0.2.1"), "192.0.2.1".parse().ok());
        assert_eq!(parse_mta_addr("localhost"), None);
        assert_eq!(parse_mta_addr(""), None);
    }

    #[test]
    fn written_values() {
        assert_eq!(
            header_value("2001:db8::1".parse().unwrap()),
            "[2001:db8::1]"
        );
        assert_eq!(header_value("192.0.2.1".parse().unwrap()), "[192.0.2.1]");
        assert_eq!(
            truncate("192.0.2.77".parse().unwrap(), 24, 48).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            truncate("2001:db8:1:2::1".parse().unwrap(), 24, 48).to_string(),
            "2001:db8:1::/48"
        );
    }
}
