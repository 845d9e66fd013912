//! What each kind of personal field becomes in the copy, by `[privacy]`, remembered for the
//! values a log repeats (a client's IP is in its connect, client=, reject and disconnect lines).

use crate::{
    config::{AddressPrivacy, IpPrivacy},
    privacy::{hmac, Pseudonymiser},
};
use std::{collections::HashMap, net::IpAddr};

/// The kinds of personal field a line holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Ip = 0,
    Address,
    /// A client's or a peer's host name, a HELO name.
    Host,
    /// A value that names no one by its shape but may (a Dovecot session id, a bare local part
    /// in brackets): written as an HMAC or left out.
    Opaque,
    /// Text a `header_checks` or `body_checks` line quotes from the message.
    Text,
}

/// A cache entry per distinct value, emptied when full: a log's working set of clients and
/// addresses is small, and an HMAC costs far more than a lookup.
const CACHE_ENTRIES: usize = 1 << 16;

/// What a value becomes when the policy writes nothing of it.
pub const LEFT_OUT: &str = "-";
/// What quoted message text becomes.
pub const REDACTED: &str = "[redacted]";

pub struct Pseudonyms {
    privacy: Pseudonymiser,
    /// One map per kind of field, looked up without allocating.
    cache: [HashMap<Box<str>, Box<str>>; 5],
}

impl Pseudonyms {
    pub fn new(privacy: Pseudonymiser) -> Self {
        Self {
            privacy,
            cache: Default::default(),
        }
    }

    pub fn privacy(&self) -> &Pseudonymiser {
        &self.privacy
    }

    /// Appends `value` as the policy writes a field of `kind` to `out`; whether that differs
    /// from `value` (the field was raw). One lookup for a value seen before.
    pub fn write(&mut self, kind: Field, value: &str, out: &mut String) -> bool {
        let cache = &mut self.cache[kind as usize];
        if let Some(made) = cache.get(value) {
            out.push_str(made);
            return **made != *value;
        }
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        let made = Made(&self.privacy).field(kind, value);
        out.push_str(&made);
        let changed = made != value;
        cache.insert(value.into(), made.into_boxed_str());
        changed
    }
}

/// What a value becomes, made afresh (the cache's misses).
struct Made<'a>(&'a Pseudonymiser);

impl Made<'_> {
    fn field(&self, kind: Field, value: &str) -> String {
        match kind {
            Field::Ip => match value.parse::<IpAddr>() {
                Ok(ip) => self.ip(crate::ip::canonical(ip)),
                Err(_) => LEFT_OUT.into(),
            },
            Field::Address => self.address(value),
            Field::Host => self.host(value),
            Field::Opaque => self.opaque(value),
            Field::Text => REDACTED.into(),
        }
    }

    /// An IP as the ledger's events write it, so that the two join under `hmac`.
    fn ip(&self, ip: IpAddr) -> String {
        self.0.ip(ip).unwrap_or_else(|| LEFT_OUT.into())
    }

    /// An address as the events write it: the HMAC of the whole address or nothing, then the
    /// domain as the policy allows (an address literal's IP as `ip` says).
    fn address(&self, address: &str) -> String {
        let view = self.0.address(address);
        let domain = view.domain.map(|d| format!("@{d}"));
        match (self.0.policy.address, view.address, domain) {
            (AddressPrivacy::Full, Some(a), _) => a,
            (AddressPrivacy::Hmac, Some(a), Some(d)) => a + &d,
            (AddressPrivacy::Hmac, Some(a), None) => a,
            (AddressPrivacy::Domain, _, Some(d)) => d,
            _ => LEFT_OUT.into(),
        }
    }

    /// A host name, which names a client as its IP does (a PTR name often is the IP:
    /// `1-2-3-4.dialup.example.net`): written by the IP's policy. `truncated` keeps the last
    /// two labels, as the network is kept of an IP.
    fn host(&self, name: &str) -> String {
        let name = name.trim_end_matches('.');
        match self.0.policy.ip {
            IpPrivacy::Full => name.into(),
            IpPrivacy::Hmac => match &self.0.key {
                Some(key) => hmac(key, &name.to_ascii_lowercase()),
                None => LEFT_OUT.into(),
            },
            IpPrivacy::Truncated => {
                let labels: Vec<&str> = name.split('.').collect();
                match labels.len() {
                    0..=1 => LEFT_OUT.into(),
                    n => format!("*.{}", labels[n - 2..].join(".")),
                }
            }
            IpPrivacy::Omit => "unknown".into(),
        }
    }

    fn opaque(&self, value: &str) -> String {
        match (&self.0.policy.address, &self.0.key) {
            (AddressPrivacy::Full, _) => value.into(),
            (AddressPrivacy::Hmac, Some(key)) => hmac(key, value),
            _ => LEFT_OUT.into(),
        }
    }
}
