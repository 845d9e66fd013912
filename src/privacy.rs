//! Pseudonymisation of personal fields by `[privacy]`: applied to every event and to every
//! log line that mentions a client or an address, so logs never say more than events.

use crate::{
    config::{AddressPrivacy, IpPrivacy, Privacy},
    facts::domain_of,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// An IP address as the policy allows it to be written, or `None` when it is left out.
pub fn ip(addr: IpAddr, policy: &Privacy) -> Option<String> {
    match policy.ip {
        IpPrivacy::Full => Some(addr.to_string()),
        IpPrivacy::Truncated => {
            Some(crate::ip::truncate(addr, policy.ipv4_prefix, policy.ipv6_prefix).to_string())
        }
        IpPrivacy::Omit => None,
    }
}

/// An address as the policy allows it to be written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

pub fn address(addr: &str, policy: &Privacy) -> AddressView {
    match policy.address {
        AddressPrivacy::Full => AddressView {
            address: Some(addr.to_string()),
            domain: domain_of(addr),
        },
        AddressPrivacy::Domain => AddressView {
            address: None,
            domain: domain_of(addr),
        },
        AddressPrivacy::Omit => AddressView::default(),
    }
}

/// A client address for a log line: what the policy allows, or `-`.
pub fn ip_for_log(addr: Option<IpAddr>, policy: &Privacy) -> String {
    match addr {
        Some(a) => ip(a, policy).unwrap_or_else(|| "-".into()),
        None => "local".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ip: IpPrivacy, address: AddressPrivacy) -> Privacy {
        Privacy {
            ip,
            address,
            ..Default::default()
        }
    }

    #[test]
    fn ips() {
        let t = policy(IpPrivacy::Truncated, AddressPrivacy::Domain);
        assert_eq!(
            ip("203.0.113.77".parse().unwrap(), &t).unwrap(),
            "203.0.113.0/24"
        );
        assert_eq!(
            ip("2001:db8:1:2::9".parse().unwrap(), &t).unwrap(),
            "2001:db8:1::/48"
        );
        let f = policy(IpPrivacy::Full, AddressPrivacy::Domain);
        assert_eq!(
            ip("203.0.113.77".parse().unwrap(), &f).unwrap(),
            "203.0.113.77"
        );
        let o = policy(IpPrivacy::Omit, AddressPrivacy::Domain);
        assert_eq!(ip("203.0.113.77".parse().unwrap(), &o), None);
        assert_eq!(ip_for_log("203.0.113.77".parse().ok(), &o), "-");
    }

    #[test]
    fn addresses() {
        let d = policy(IpPrivacy::Omit, AddressPrivacy::Domain);
        assert_eq!(
            address("Alice@Example.org", &d),
            AddressView {
                address: None,
                domain: Some("example.org".into())
            }
        );
        let f = policy(IpPrivacy::Omit, AddressPrivacy::Full);
        assert_eq!(
            address("alice@example.org", &f).address.as_deref(),
            Some("alice@example.org")
        );
        let o = policy(IpPrivacy::Omit, AddressPrivacy::Omit);
        assert_eq!(address("alice@example.org", &o), AddressView::default());
    }
}
