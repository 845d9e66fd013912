//! Validated value types for the configuration file.
//!
//! Each type parses from the string an operator writes and rejects anything else with a message
//! that quotes the value; figment adds the key and the file, so an error reads like
//! `privacy-milter.toml: key networks.trusted: invalid network "10.0.0.0/33": ...`.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

/// Where the milter listens: `unix:/path` (or `local:/path`), `inet:PORT@HOST`,
/// `inet6:PORT@[HOST]`. As in OpenDKIM, a missing `@HOST` means every address.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum SocketSpec {
    Unix(PathBuf),
    Inet(SocketAddr),
}

impl FromStr for SocketSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid socket {s:?}: {why} (expected unix:/PATH, inet:PORT@HOST or inet6:PORT@[HOST])"
            )
        };
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad("no socket type"))?;
        match kind {
            "unix" | "local" => {
                let path = PathBuf::from(rest);
                if !path.is_absolute() {
                    return Err(bad("the path must be absolute"));
                }
                Ok(Self::Unix(path))
            }
            "inet" | "inet6" => {
                let (port, host) = match rest.split_once('@') {
                    Some((port, host)) => (port, Some(host)),
                    None => (rest, None),
                };
                let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
                let v6 = kind == "inet6";
                let ip = match host {
                    None if v6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    Some("localhost") if v6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    Some(host) => {
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        host.parse()
                            .map_err(|_| bad("the host must be an IP address or localhost"))?
                    }
                };
                if v6 != ip.is_ipv6() {
                    return Err(bad("inet takes an IPv4 address, inet6 an IPv6 address"));
                }
                Ok(Self::Inet(SocketAddr::new(ip, port)))
            }
            _ => Err(bad(&format!("unknown socket type {kind:?}"))),
        }
    }
}

impl TryFrom<String> for SocketSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<SocketSpec> for String {
    fn from(spec: SocketSpec) -> String {
        spec.to_string()
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Inet(SocketAddr::V4(a)) => write!(f, "inet:{}@{}", a.port(), a.ip()),
            Self::Inet(SocketAddr::V6(a)) => write!(f, "inet6:{}@[{}]", a.port(), a.ip()),
        }
    }
}

/// An IP network such as `192.0.2.0/24`; a bare address means that one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network(pub IpNet);

impl Network {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let text = s.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self(IpNet::from(ip)));
        }
        let bad = |why: String| format!("invalid network {s:?}: {why}");
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS or ADDRESS/PREFIX".into()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("{addr:?} is not an IP address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
            bad(format!(
                "the prefix length must be a number from 0 to {max}"
            ))
        })?;
        Ok(Self(IpNet::new(addr, prefix).expect("prefix checked")))
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        n.0.to_string()
    }
}

/// Whether `ip` falls in any of `networks`.
pub fn in_networks(networks: &[Network], ip: &IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
}

/// A header field name: RFC 5322 printable characters except the colon, at most 64 of them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderName(String);

impl HeaderName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Header names compare without regard to case (RFC 5322 section 1.2.2).
    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl TryFrom<String> for HeaderName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!(
                "invalid header name {s:?}: it must have 1 to 64 characters"
            ));
        }
        if let Some(c) = s.chars().find(|c| !matches!(c, '!'..='9' | ';'..='~')) {
            return Err(format!(
                "invalid header name {s:?}: {c:?} is not allowed (RFC 5322 field names are printable ASCII without ':' or spaces)"
            ));
        }
        Ok(Self(s))
    }
}

impl From<HeaderName> for String {
    fn from(h: HeaderName) -> String {
        h.0
    }
}

/// A duration written with a unit: `30s`, `15m`, `12h`, `90d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period(pub Duration);

impl TryFrom<String> for Period {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = || {
            format!("invalid duration {s:?}: expected a whole number and a unit s, m, h or d, such as \"90d\"")
        };
        let text = s.trim();
        let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(unit_at);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(bad()),
        };
        let total = number
            .checked_mul(seconds)
            .filter(|t| *t <= 100 * 365 * 86400)
            .ok_or_else(|| format!("invalid duration {s:?}: longer than 100 years"))?;
        Ok(Self(Duration::from_secs(total)))
    }
}

impl From<Period> for String {
    fn from(p: Period) -> String {
        let secs = p.0.as_secs();
        match secs {
            s if s % 86400 == 0 && s > 0 => format!("{}d", s / 86400),
            s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(*self))
    }
}

/// A file mode written in octal, such as `"0660"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileMode(pub u32);

impl TryFrom<String> for FileMode {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        u32::from_str_radix(s.trim(), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(Self)
            .ok_or_else(|| format!("invalid mode {s:?}: expected octal digits such as \"0660\""))
    }
}

impl From<FileMode> for String {
    fn from(m: FileMode) -> String {
        format!("{:04o}", m.0)
    }
}

/// A domain name, kept in lower case without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Domain {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let name = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "invalid domain {s:?}: expected a name such as \"example.org\" (letters, digits, '-' and '.')"
            ));
        }
        Ok(Self(name))
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What an operator could write: any text, and text close to each syntax.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC*",
            "(unix|local|inet|inet6|tcp):[0-9a-z:/@.\\[\\]]{0,30}",
            "[0-9a-f:./]{0,45}",
            "[0-9]{0,25}[smhdx]?",
            "[ -~]{0,70}",
        ]
    }

    proptest! {
        #[test]
        fn sockets_never_panic_and_round_trip(s in text()) {
            if let Ok(spec) = s.parse::<SocketSpec>() {
                prop_assert_eq!(spec.to_string().parse::<SocketSpec>(), Ok(spec));
            }
        }

        #[test]
        fn written_sockets_parse(
            path in "/[a-z0-9._/-]{0,30}",
            v4 in any::<Ipv4Addr>(),
            v6 in any::<Ipv6Addr>(),
            port in any::<u16>(),
        ) {
            for written in [
                format!("unix:{path}"),
                format!("local:{path}"),
                format!("inet:{port}@{v4}"),
                format!("inet6:{port}@[{v6}]"),
            ] {
                let spec = written.parse::<SocketSpec>();
                prop_assert!(spec.is_ok(), "{}: {:?}", written, spec);
            }
            // The wrong family is refused.
            let (wrong4, wrong6) = (format!("inet:{port}@{v6}"), format!("inet6:{port}@[{v4}]"));
            prop_assert!(wrong4.parse::<SocketSpec>().is_err());
            prop_assert!(wrong6.parse::<SocketSpec>().is_err());
        }

        #[test]
        fn networks_never_panic_and_round_trip(s in text()) {
            if let Ok(net) = Network::try_from(s) {
                prop_assert_eq!(Network::try_from(String::from(net)), Ok(net));
            }
        }

        #[test]
        fn prefixes_beyond_the_address_are_refused(ip in any::<IpAddr>(), prefix in 0u16..300) {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let parsed = Network::try_from(format!("{ip}/{prefix}"));
            prop_assert_eq!(parsed.is_ok(), prefix <= max, "{:?}", parsed);
        }

        #[test]
        fn header_names_are_printable_ascii_without_colon(s in text()) {
            let valid = (1..=64).contains(&s.len())
                && s.chars().all(|c| c.is_ascii_graphic() && c != ':');
            let parsed = HeaderName::try_from(s.clone());
            prop_assert_eq!(parsed.is_ok(), valid, "{:?}: {:?}", s, parsed);
            if let Ok(h) = parsed {
                prop_assert_eq!(String::from(h), s);
            }
        }

        #[test]
        fn periods_never_panic_and_round_trip(s in text()) {
            if let Ok(p) = Period::try_from(s) {
                prop_assert!(p.0.as_secs() <= 100 * 365 * 86400);
                prop_assert_eq!(Period::try_from(p.to_string()), Ok(p));
            }
        }

        #[test]
        fn periods_are_a_number_and_a_unit(n in 0u64..100_000_000, unit in "[smhd]") {
            let seconds = match unit.as_str() { "s" => 1, "m" => 60, "h" => 3600, _ => 86400 };
            let parsed = Period::try_from(format!("{n}{unit}")).map(|p| p.0.as_secs());
            if n * seconds <= 100 * 365 * 86400 {
                prop_assert_eq!(parsed, Ok(n * seconds));
            } else {
                prop_assert!(parsed.is_err());
            }
        }

        #[test]
        fn modes_are_octal_up_to_0777(s in prop_oneof!["[0-9]{1,5}".boxed(), text().boxed()]) {
            let expected = u32::from_str_radix(s.trim(), 8).ok().filter(|m| *m <= 0o777);
            let parsed = FileMode::try_from(s.clone());
            prop_assert_eq!(parsed.as_ref().ok().map(|m| m.0), expected, "{:?}", s);
            if let Ok(m) = parsed {
                prop_assert_eq!(FileMode::try_from(String::from(m)), Ok(m));
            }
        }

        #[test]
        fn domains_never_panic_and_round_trip(s in text()) {
            if let Ok(d) = Domain::try_from(s) {
                prop_assert!(!d.as_str().is_empty() && d.as_str().len() <= 253);
                prop_assert_eq!(d.as_str(), d.as_str().to_ascii_lowercase());
                prop_assert_eq!(Domain::try_from(String::from(d.clone())), Ok(d));
            }
        }

        #[test]
        fn domain_names_are_accepted(labels in prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", 1..5)) {
            let name = labels.join(".");
            let parsed = Domain::try_from(format!("{name}."));
            prop_assert_eq!(parsed.map(String::from), Ok(name.to_ascii_lowercase()));
        }
    }

    #[test]
    fn sockets() {
        assert_eq!(
            "unix:/run/x.sock".parse::<SocketSpec>().unwrap(),
            SocketSpec::Unix("/run/x.sock".into())
        );
        assert_eq!(
            "inet:8894@127.0.0.1"
                .parse::<SocketSpec>()
                .unwrap()
                .to_string(),
            "inet:8894@127.0.0.1"
        );
        assert_eq!(
            "inet6:8894@[::1]"
                .parse::<SocketSpec>()
                .unwrap()
                .to_string(),
            "inet6:8894@[::1]"
        );
        assert_eq!(
            "inet:25".parse::<SocketSpec>().unwrap().to_string(),
            "inet:25@0.0.0.0"
        );
        for bad in [
            "unix:relative",
            "inet:x@1.2.3.4",
            "inet6:1@1.2.3.4",
            "tcp:1",
            "inet:1@host",
        ] {
            assert!(bad.parse::<SocketSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn networks() {
        assert!(Network::try_from("10.0.0.0/8".to_string()).is_ok());
        assert!(Network::try_from("2001:db8::/32".to_string()).is_ok());
        assert_eq!(
            Network::try_from("192.0.2.1".to_string())
                .unwrap()
                .0
                .prefix_len(),
            32
        );
        let e = Network::try_from("10.0.0.0/33".to_string()).unwrap_err();
        assert!(e.contains("10.0.0.0/33") && e.contains("0 to 32"), "{e}");
        assert!(Network::try_from("example.org/8".to_string()).is_err());
    }

    #[test]
    fn header_names() {
        assert!(HeaderName::try_from("X-Originating-IP".to_string()).is_ok());
        for bad in ["", "X Originating", "X:Y", "X-Ü", "X-\r\nY"] {
            assert!(HeaderName::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn periods() {
        let p = |s: &str| Period::try_from(s.to_string()).map(|p| p.0.as_secs());
        assert_eq!(p("90d"), Ok(90 * 86400));
        assert_eq!(p("1h"), Ok(3600));
        assert_eq!(p("15m"), Ok(900));
        assert_eq!(p("2s"), Ok(2));
        for bad in ["", "d", "90", "9x", "-1d", "1.5h", "99999999999999d"] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_and_modes() {
        assert_eq!(
            Domain::try_from("Example.ORG.".to_string())
                .unwrap()
                .as_str(),
            "example.org"
        );
        assert!(Domain::try_from("exa mple.org".to_string()).is_err());
        assert_eq!(FileMode::try_from("0660".to_string()).unwrap().0, 0o660);
        assert!(FileMode::try_from("0999".to_string()).is_err());
    }
}
