//! Pseudonymisation of personal fields by `[privacy]`: applied to every event and to every
//! log line that mentions a client or an address, so logs never say more than events.

use crate::{
    config::{AddressPrivacy, IpPrivacy, Privacy},
    facts::{domain_of, Escaped},
    keys::Key,
};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::{net::IpAddr, sync::Arc};

/// An address as the policy allows it to be written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// The policy together with the HMAC key in use.
#[derive(Clone, Debug, Default)]
pub struct Pseudonymiser {
    pub policy: Privacy,
    /// The current HMAC key; needed only by the `hmac` modes.
    pub key: Option<Arc<Key>>,
}

/// `hmac:KEYID:HEX`: HMAC-SHA256 of `value` under `key`, the first 128 bits in hex.
pub fn hmac(key: &Key, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.bytes).expect("any key length");
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("hmac:{}:{}", key.id, hex::encode(&digest[..16]))
}

impl Pseudonymiser {
    pub fn new(policy: Privacy, key: Option<Arc<Key>>) -> Self {
        Self { policy, key }
    }

    /// An IP address as the policy allows it to be written, or `None` when it is left out.
    pub fn ip(&self, addr: IpAddr) -> Option<String> {
        let p = &self.policy;
        match p.ip {
            IpPrivacy::Full => Some(addr.to_string()),
            IpPrivacy::Truncated => {
                Some(crate::ip::truncate(addr, p.ipv4_prefix, p.ipv6_prefix).to_string())
            }
            // Without a key nothing is written rather than the address.
            IpPrivacy::Hmac => self.key.as_ref().map(|k| hmac(k, &addr.to_string())),
            IpPrivacy::Omit => None,
        }
    }

    /// The domain of an address as the policy allows it. A name stays in clear. An address
    /// literal (`x@[203.0.113.77]`, `x@[IPv6:2001:db8::1]`, or a bare IP) has an IP for a
    /// domain, which is written as `ip` says, in brackets: `[203.0.113.0/24]`,
    /// `[hmac:KEYID:HEX]`, or nothing with `ip = "omit"`. A bracketed literal that is no IP
    /// (RFC 5321's general literal, `[tag:text]`) may hold anything and is left out.
    fn domain(&self, addr: &str) -> Option<String> {
        let domain = domain_of(addr)?;
        match crate::ip::parse_mta_addr(&domain) {
            Some(ip) => self.ip(ip).map(|ip| format!("[{ip}]")),
            None if domain.starts_with('[') => None,
            None => Some(domain),
        }
    }

    /// An e-mail address as the policy allows it to be written. With `hmac` the domain stays
    /// in clear (an address literal's as `ip` says) and the whole address (in lower case)
    /// becomes an HMAC; `full` writes the address as given, a literal's IP included.
    pub fn address(&self, addr: &str) -> AddressView {
        let domain = self.domain(addr);
        match self.policy.address {
            AddressPrivacy::Full => AddressView {
                address: Some(addr.to_string()),
                domain,
            },
            AddressPrivacy::Domain => AddressView {
                address: None,
                domain,
            },
            AddressPrivacy::Hmac => AddressView {
                address: self
                    .key
                    .as_ref()
                    .filter(|_| !addr.is_empty())
                    .map(|k| hmac(k, &addr.to_lowercase())),
                domain,
            },
            AddressPrivacy::Omit => AddressView::default(),
        }
    }

    /// A client address for a log line: what the policy allows, `-`, or `local`.
    pub fn ip_for_log(&self, addr: Option<IpAddr>) -> String {
        match addr {
            Some(a) => self.ip(a).unwrap_or_else(|| "-".into()),
            None => "local".into(),
        }
    }

    /// An e-mail address for a log line, its control characters escaped (it comes from the
    /// wire: a line break in it would forge a log line).
    pub fn address_for_log(&self, address: &str) -> String {
        if address.is_empty() {
            return "<>".into();
        }
        let view = self.address(address);
        let shown = view.address.or(view.domain).unwrap_or_else(|| "-".into());
        Escaped(&shown).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(ip: IpPrivacy, address: AddressPrivacy) -> Pseudonymiser {
        let key = Key {
            id: "20260101T000000Z".into(),
            created: chrono::Utc::now(),
            bytes: [7; 32],
        };
        Pseudonymiser::new(
            Privacy {
                ip,
                address,
                ..Default::default()
            },
            Some(Arc::new(key)),
        )
    }

    #[test]
    fn ips() {
        let t = with(IpPrivacy::Truncated, AddressPrivacy::Domain);
        assert_eq!(
            t.ip("203.0.113.77".parse().unwrap()).unwrap(),
            "203.0.113.0/24"
        );
        assert_eq!(
            t.ip("2001:db8:1:2::9".parse().unwrap()).unwrap(),
            "2001:db8:1::/48"
        );
        let f = with(IpPrivacy::Full, AddressPrivacy::Domain);
        assert_eq!(
            f.ip("203.0.113.77".parse().unwrap()).unwrap(),
            "203.0.113.77"
        );
        let o = with(IpPrivacy::Omit, AddressPrivacy::Domain);
        assert_eq!(o.ip("203.0.113.77".parse().unwrap()), None);
        assert_eq!(o.ip_for_log("203.0.113.77".parse().ok()), "-");
    }

    #[test]
    fn hmacs_are_keyed_and_stable() {
        let h = with(IpPrivacy::Hmac, AddressPrivacy::Hmac);
        let a = h.ip("203.0.113.77".parse().unwrap()).unwrap();
        assert!(
            a.starts_with("hmac:20260101T000000Z:")
                && a.len() == "hmac:20260101T000000Z:".len() + 32,
            "{a}"
        );
        assert_eq!(h.ip("203.0.113.77".parse().unwrap()).unwrap(), a);
        assert_ne!(h.ip("203.0.113.78".parse().unwrap()).unwrap(), a);
        let view = h.address("Alice@Example.org");
        assert_eq!(view.domain.as_deref(), Some("example.org"));
        assert_eq!(view.address, h.address("alice@example.org").address);
        assert!(!view.address.unwrap().contains("alice"));
        let mut other = h.clone();
        other.key = Some(Arc::new(Key {
            id: "20260201T000000Z".into(),
            created: chrono::Utc::now(),
            bytes: [8; 32],
        }));
        assert_ne!(
            other.ip("203.0.113.77".parse().unwrap()).unwrap()[22..],
            a[22..]
        );
    }

    #[test]
    fn addresses() {
        let d = with(IpPrivacy::Omit, AddressPrivacy::Domain);
        assert_eq!(
            d.address("Alice@Example.org"),
            AddressView {
                address: None,
                domain: Some("example.org".into())
            }
        );
        let f = with(IpPrivacy::Omit, AddressPrivacy::Full);
        assert_eq!(
            f.address("alice@example.org").address.as_deref(),
            Some("alice@example.org")
        );
        let o = with(IpPrivacy::Omit, AddressPrivacy::Omit);
        assert_eq!(o.address("alice@example.org"), AddressView::default());
        assert_eq!(o.address_for_log(""), "<>");
    }

    #[test]
    fn address_literals_are_ips() {
        let domain = |ip, address, addr: &str| with(ip, address).address(addr).domain;
        use AddressPrivacy as A;
        use IpPrivacy as I;
        for address in [A::Full, A::Domain, A::Hmac] {
            assert_eq!(
                domain(I::Truncated, address, "x@[203.0.113.77]").as_deref(),
                Some("[203.0.113.0/24]")
            );
            assert_eq!(
                domain(I::Truncated, address, "x@[IPv6:2001:DB8::1]").as_deref(),
                Some("[2001:db8::/48]")
            );
            assert_eq!(
                domain(I::Full, address, "x@203.0.113.77").as_deref(),
                Some("[203.0.113.77]")
            );
            assert_eq!(domain(I::Omit, address, "x@[203.0.113.77]"), None);
            assert_eq!(domain(I::Truncated, address, "x@[tag:secret]"), None);
            assert_eq!(
                domain(I::Omit, address, "x@Example.org").as_deref(),
                Some("example.org")
            );
        }
        let h = with(IpPrivacy::Hmac, AddressPrivacy::Hmac);
        let view = h.address("x@[203.0.113.77]");
        assert_eq!(
            view.domain,
            Some(format!(
                "[{}]",
                h.ip("203.0.113.77".parse().unwrap()).unwrap()
            ))
        );
        assert!(!view.address.unwrap().contains("203.0.113"));
        assert_eq!(
            with(IpPrivacy::Truncated, AddressPrivacy::Domain).address_for_log("x@[203.0.113.77]"),
            "[203.0.113.0/24]"
        );
    }
}
