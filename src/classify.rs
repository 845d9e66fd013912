//! Classification (the README's "Classification"): who sent the message, where each recipient lives, and
//! so the message's direction and whether we only pass it on (transit).

use crate::{
    config::{in_networks, Config},
    facts::{domain_of, ConnectionFacts, MessageFacts},
};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// External sender, every recipient local.
    Inbound,
    /// Our sender, at least one remote recipient.
    Outbound,
    /// Our sender, every recipient local.
    Internal,
    /// External sender, at least one remote recipient.
    Relay,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Internal => "internal",
            Self::Relay => "relay",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The sender side is ours: authenticated, from a trusted network, or local submission.
    pub ours: bool,
    pub authenticated: bool,
    /// The client is in `networks.trusted`, or local submission with no client address.
    pub trusted: bool,
    /// The client is a webmail host (`networks.webmail`).
    pub webmail: bool,
    /// For each accepted recipient, in order: whether it is local.
    pub local: Vec<bool>,
    pub direction: Direction,
    /// At least one recipient is remote: we only hold the message until the next server has it.
    pub transit: bool,
}

pub fn classify(conn: &ConnectionFacts, msg: &MessageFacts, config: &Config) -> Classification {
    let (trusted, webmail) = match &conn.client_ip {
        Some(ip) => (
            in_networks(&config.networks.trusted, ip),
            in_networks(&config.networks.webmail, ip),
        ),
        None => (true, false),
    };
    let ours = msg.authenticated || trusted;
    let local: Vec<bool> = msg
        .accepted_recipients()
        .map(|r| {
            let by_mailer = r.mailer.as_deref().is_some_and(|m| {
                config
                    .domains
                    .local_mailers
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(m))
            });
            by_mailer || domain_of(&r.address).is_some_and(|d| config.is_local_domain(&d))
        })
        .collect();
    let transit = local.iter().any(|l| !l);
    let direction = match (ours, transit) {
        (false, false) => Direction::Inbound,
        (true, false) => Direction::Internal,
        (true, true) => Direction::Outbound,
        (false, true) => Direction::Relay,
    };
    Classification {
        ours,
        authenticated: msg.authenticated,
        trusted,
        webmail,
        local,
        direction,
        transit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Domain, Network, Settings},
        facts::Recipient,
    };

    fn config() -> Config {
        let mut s = Settings::default();
        s.domains.local = vec![Domain::try_from("example.org".to_string()).unwrap()];
        s.networks
            .trusted
            .push(Network::try_from("10.0.0.0/8".to_string()).unwrap());
        s.networks
            .webmail
            .push(Network::try_from("10.9.9.9".to_string()).unwrap());
        Config::resolve(s).unwrap()
    }

    fn msg(auth: bool, rcpts: &[(&str, Option<&str>)]) -> MessageFacts {
        MessageFacts {
            authenticated: auth,
            recipients: rcpts
                .iter()
                .map(|(a, m)| Recipient {
                    address: a.to_string(),
                    mailer: m.map(String::from),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn from(ip: &str) -> ConnectionFacts {
        ConnectionFacts {
            client_ip: Some(ip.parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn four_directions() {
        let c = config();
        let external = from("198.51.100.7");
        let local = [("bob@example.org", Some("smtp"))];
        let remote = [("carol@remote.example", Some("smtp"))];
        assert_eq!(
            classify(&external, &msg(false, &local), &c).direction,
            Direction::Inbound
        );
        assert_eq!(
            classify(&external, &msg(false, &remote), &c).direction,
            Direction::Relay
        );
        assert_eq!(
            classify(&external, &msg(true, &local), &c).direction,
            Direction::Internal
        );
        assert_eq!(
            classify(&external, &msg(true, &remote), &c).direction,
            Direction::Outbound
        );
        let lan = from("10.1.2.3");
        let k = classify(&lan, &msg(false, &remote), &c);
        assert!(k.ours && k.trusted && !k.authenticated && k.transit);
        assert_eq!(k.direction, Direction::Outbound);
    }

    #[test]
    fn mixed_recipients_are_each_classified() {
        let c = config();
        let k = classify(
            &from("198.51.100.7"),
            &msg(
                false,
                &[
                    ("a@EXAMPLE.org", None),
                    ("b@remote.example", None),
                    ("c@example.org.", None),
                ],
            ),
            &c,
        );
        assert_eq!(k.local, vec![true, false, true]);
        assert!(k.transit);
        assert_eq!(k.direction, Direction::Relay);
    }

    #[test]
    fn mailer_decides_locality() {
        let c = config();
        let m = msg(
            false,
            &[
                ("x@elsewhere.example", Some("virtual")),
                ("y@elsewhere.example", Some("LMTP")),
            ],
        );
        let k = classify(&from("198.51.100.7"), &m, &c);
        assert_eq!(k.local, vec![true, true]);
        assert_eq!(k.direction, Direction::Inbound);
        let m = msg(false, &[("x@elsewhere.example", Some("esmtp"))]);
        assert_eq!(classify(&from("198.51.100.7"), &m, &c).local, vec![false]);
    }

    #[test]
    fn rejected_recipients_do_not_count() {
        let c = config();
        let m = msg(
            false,
            &[
                ("bob@example.org", None),
                ("x@remote.example", Some("error")),
            ],
        );
        let k = classify(&from("198.51.100.7"), &m, &c);
        assert_eq!(k.local, vec![true]);
        assert_eq!(k.direction, Direction::Inbound);
    }

    #[test]
    fn local_submission_and_webmail() {
        let c = config();
        let none = ConnectionFacts::default();
        let k = classify(&none, &msg(false, &[("x@remote.example", None)]), &c);
        assert!(k.ours && k.trusted && !k.webmail);
        let k = classify(&from("10.9.9.9"), &msg(false, &[]), &c);
        assert!(k.webmail && k.ours);
        assert_eq!(k.direction, Direction::Internal);
        let k = classify(&from("::1"), &msg(false, &[]), &c);
        assert!(k.trusted);
    }
}
