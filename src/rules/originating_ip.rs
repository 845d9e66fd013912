//! Rule `originating_ip`: mail from our own senders carries
//! `X-Originating-IP: [address]`, the address of the client or, for webmail, of the browser.
//!
//! - External senders: nothing changes; their header is the remote system's statement.
//! - Authenticated clients: copies they brought are deleted (no one can frame another
//!   address), then the header is added.
//! - Webmail hosts (`networks.webmail`): their header names the browser; a value that parses
//!   as one address is normalised, anything else is dropped.
//! - Our own hops that did not authenticate (trusted networks, local submission, a message
//!   passing a second time): a header already present is kept, since the first pass vouched
//!   for it; otherwise the header is added.
//!
//! Addresses in `skip_networks` (loopback by default) get no header. Mode `truncated` writes
//! the network (`[203.0.113.0/24]`); mode `encrypted` an opaque token (`enc:...`) that only
//! the operator's key opens; mode `off` adds nothing but still deletes what our
//! senders brought.

use super::Action;
use crate::{
    classify::Classification,
    config::{in_networks, OriginatingIp, OriginatingIpMode},
    facts::{ConnectionFacts, MessageFacts},
    ip,
    keys::Key,
    token,
};

pub const ADDED: &str = "originating_ip.added";
pub const REMOVED_FORGED: &str = "originating_ip.removed_forged";
pub const FROM_WEBMAIL: &str = "originating_ip.from_webmail";
pub const DROPPED_INVALID: &str = "originating_ip.dropped_invalid";

pub fn decide(
    conn: &ConnectionFacts,
    msg: &MessageFacts,
    class: &Classification,
    cfg: &OriginatingIp,
    sealing_key: Option<&Key>,
) -> Vec<Action> {
    if !cfg.enabled || !class.ours {
        return Vec::new();
    }
    let name = cfg.header.as_str();
    let copies = &msg.originating_ip;
    let own_hop = !class.authenticated && !class.webmail;
    if own_hop && copies.count > 0 {
        return Vec::new();
    }

    let mut actions = Vec::new();
    let mut source = conn.client_ip;
    if class.webmail {
        let mut browser = None;
        for value in &copies.values {
            match ip::parse_header_value(value) {
                Some(addr) if browser.is_none() => browser = Some(addr),
                Some(_) => {}
                None => actions.push(Action::note(DROPPED_INVALID)),
            }
        }
        // Copies past those we kept are too many to be one browser's address.
        if copies.count as usize > copies.values.len() {
            actions.push(Action::note(DROPPED_INVALID));
        }
        if let Some(addr) = browser {
            actions.push(Action::note(FROM_WEBMAIL));
            source = Some(addr);
        }
    }
    // The header is written afresh in our format, so every copy that arrived goes.
    let label = if class.webmail {
        FROM_WEBMAIL
    } else {
        REMOVED_FORGED
    };
    for index in (1..=copies.count).rev() {
        actions.push(Action::delete(label, name, index));
    }

    let Some(addr) = source.filter(|a| !in_networks(&cfg.skip_networks, a)) else {
        return actions;
    };
    let value = match cfg.mode {
        OriginatingIpMode::Full => ip::header_value(addr),
        OriginatingIpMode::Truncated => {
            format!("[{}]", ip::truncate(addr, cfg.ipv4_prefix, cfg.ipv6_prefix))
        }
        // Without a key (never, once the key ring is loaded) nothing rather than the address.
        OriginatingIpMode::Encrypted => match sealing_key {
            Some(key) => format!("enc:{}", token::seal(key, addr)),
            None => return actions,
        },
        OriginatingIpMode::Off => return actions,
    };
    actions.push(Action::add(ADDED, name, value));
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classify::Direction, facts::HeaderCopies, rules::Edit};

    fn class(authenticated: bool, trusted: bool, webmail: bool) -> Classification {
        Classification {
            ours: authenticated || trusted,
            authenticated,
            trusted,
            webmail,
            local: vec![false],
            direction: Direction::Outbound,
            transit: true,
        }
    }

    fn conn(ip: &str) -> ConnectionFacts {
        ConnectionFacts {
            client_ip: ip.parse().ok(),
            ..Default::default()
        }
    }

    fn msg(values: &[&str]) -> MessageFacts {
        MessageFacts {
            originating_ip: HeaderCopies {
                count: values.len() as i32,
                values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
            },
            ..Default::default()
        }
    }

    fn edits(actions: &[Action]) -> Vec<Edit> {
        actions.iter().filter_map(|a| a.edit.clone()).collect()
    }

    fn add(value: &str) -> Edit {
        Edit::Add {
            name: "X-Originating-IP".into(),
            value: value.into(),
        }
    }

    fn del(index: i32) -> Edit {
        Edit::Delete {
            name: "X-Originating-IP".into(),
            index,
        }
    }

    #[test]
    fn authenticated_client_gets_header_and_loses_forgeries() {
        let cfg = OriginatingIp::default();
        let a = decide(
            &conn("2001:db8::5"),
            &msg(&["[1.2.3.4]", "5.6.7.8"]),
            &class(true, false, false),
            &cfg,
            None,
        );
        assert_eq!(edits(&a), [del(2), del(1), add("[2001:db8::5]")]);
        assert_eq!(a[0].label, REMOVED_FORGED);
    }

    #[test]
    fn external_mail_is_left_alone() {
        let cfg = OriginatingIp::default();
        assert!(decide(
            &conn("198.51.100.1"),
            &msg(&["[1.2.3.4]"]),
            &class(false, false, false),
            &cfg,
            None,
        )
        .is_empty());
    }

    #[test]
    fn own_hop_keeps_existing_and_skips_loopback() {
        let cfg = OriginatingIp::default();
        assert!(decide(
            &conn("10.0.0.1"),
            &msg(&["[1.2.3.4]"]),
            &class(false, true, false),
            &cfg,
            None,
        )
        .is_empty());
        assert_eq!(
            edits(&decide(
                &conn("10.0.0.1"),
                &msg(&[]),
                &class(false, true, false),
                &cfg,
                None,
            )),
            [add("[10.0.0.1]")]
        );
        assert!(decide(
            &conn("127.0.0.1"),
            &msg(&[]),
            &class(false, true, false),
            &cfg,
            None,
        )
        .is_empty());
        assert!(decide(&conn(""), &msg(&[]), &class(false, true, false), &cfg, None).is_empty());
    }

    #[test]
    fn webmail_value_is_validated() {
        let cfg = OriginatingIp::default();
        let a = decide(
            &conn("10.9.9.9"),
            &msg(&[" 198.51.100.23 "]),
            &class(false, true, true),
            &cfg,
            None,
        );
        assert_eq!(edits(&a), [del(1), add("[198.51.100.23]")]);
        let a = decide(
            &conn("10.9.9.9"),
            &msg(&["1.2.3.4\r\nBcc: x@y"]),
            &class(false, true, true),
            &cfg,
            None,
        );
        assert_eq!(edits(&a), [del(1), add("[10.9.9.9]")]);
        assert!(a.iter().any(|a| a.label == DROPPED_INVALID));
    }

    #[test]
    fn mode_truncated() {
        let cfg = OriginatingIp {
            mode: OriginatingIpMode::Truncated,
            ipv4_prefix: 16,
            ..Default::default()
        };
        let a = decide(
            &conn("192.0.2.1"),
            &msg(&[]),
            &class(true, false, false),
            &cfg,
            None,
        );
        assert_eq!(edits(&a), [add("[192.0.0.0/16]")]);
        let a = decide(
            &conn("2001:db8:aa:bb::1"),
            &msg(&[]),
            &class(true, false, false),
            &cfg,
            None,
        );
        assert_eq!(edits(&a), [add("[2001:db8:aa::/48]")]);
    }

    #[test]
    fn mode_encrypted() {
        let cfg = OriginatingIp {
            mode: OriginatingIpMode::Encrypted,
            ..Default::default()
        };
        let key = Key {
            id: "20261126T180000Z".into(),
            created: chrono::Utc::now(),
            bytes: [1; 32],
        };
        let a = decide(
            &conn("192.0.2.1"),
            &msg(&[]),
            &class(true, false, false),
            &cfg,
            Some(&key),
        );
        let Some(Edit::Add { value, .. }) = &a[0].edit else {
            panic!("{a:?}")
        };
        let ring = crate::keys::Ring {
            keys: vec![std::sync::Arc::new(key.clone())],
        };
        assert_eq!(
            token::open(&ring, value).unwrap().0,
            "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
        );
        assert!(decide(
            &conn("192.0.2.1"),
            &msg(&[]),
            &class(true, false, false),
            &cfg,
            None
        )
        .is_empty());
    }

    #[test]
    fn mode_off_and_disabled() {
        let mut cfg = OriginatingIp {
            mode: OriginatingIpMode::Off,
            ..Default::default()
        };
        let a = decide(
            &conn("192.0.2.1"),
            &msg(&["x"]),
            &class(true, false, false),
            &cfg,
            None,
        );
        assert_eq!(edits(&a), [del(1)]);
        cfg.enabled = false;
        assert!(decide(
            &conn("192.0.2.1"),
            &msg(&["x"]),
            &class(true, false, false),
            &cfg,
            None,
        )
        .is_empty());
    }
}
