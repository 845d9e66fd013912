//! The event (schema `privacy-milter.message.v1`, its fields in the README's "Events"): one per message that
//! reached end of message, or was aborted, rejected or tempfailed after MAIL FROM.
//! Personal fields are pseudonymised here, before any sink sees them.

use crate::{
    classify::{Classification, Direction},
    config::Config,
    facts::{ConnectionFacts, MessageFacts},
    privacy::{AddressView, Pseudonymiser},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const SCHEMA: &str = "privacy-milter.message.v1";

/// A time as events write it: RFC 3339 in UTC, to the millisecond (`2026-11-26T18:00:00.123Z`).
/// Such strings sort in time order, which the SQLite ledger's indexes rely on.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accepted,
    Rejected,
    Tempfailed,
    Discarded,
    Aborted,
}

impl Outcome {
    /// The outcome's name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Tempfailed => "tempfailed",
            Self::Discarded => "discarded",
            Self::Aborted => "aborted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: String,
    pub id: Uuid,
    pub time: String,
    pub host: String,
    pub queue_id: Option<String>,
    pub outcome: Outcome,
    pub direction: Direction,
    pub transit: bool,
    pub client: Client,
    pub sender: AddressView,
    pub recipients: Vec<RecipientView>,
    pub size: u64,
    /// What the rules did to the message (in a dry run: what they would have done).
    pub actions: Vec<String>,
    /// Present and true when the actions were decided but not applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// What the rules decided but could not do: the MTA did not allow header edits (see
    /// `edits`), or sending them failed (the message was then tempfailed). Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_actions: Vec<String>,
    /// Present when the message's milter connection could not edit headers at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edits: Option<Edits>,
    pub retention: Retention,
}

/// Why no header of a message could be edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edits {
    /// The MTA did not offer the add-header and change-header actions on the connection.
    Unavailable,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub authenticated: bool,
    pub webmail: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientView {
    #[serde(flatten)]
    pub address: AddressView,
    pub local: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub class: String,
    pub expires_at: String,
}

/// Everything an event is made of.
pub struct Parts<'a> {
    pub conn: &'a ConnectionFacts,
    pub msg: &'a MessageFacts,
    pub class: &'a Classification,
    pub outcome: Outcome,
    /// What was done, and what was decided but not done.
    pub actions: Vec<String>,
    pub skipped_actions: Vec<String>,
    /// Whether the connection let the milter edit headers.
    pub can_edit: bool,
    pub host: &'a str,
    pub config: &'a Config,
    pub pseudonymiser: &'a Pseudonymiser,
}

impl Event {
    pub fn build(parts: Parts<'_>, now: DateTime<Utc>) -> Self {
        let Parts {
            conn,
            msg,
            class,
            outcome,
            actions,
            skipped_actions,
            can_edit,
            host,
            config,
            pseudonymiser: pseudo,
        } = parts;
        let retention_class = match outcome {
            Outcome::Rejected | Outcome::Tempfailed => "rejected",
            Outcome::Aborted => "aborted",
            Outcome::Accepted | Outcome::Discarded => class.direction.as_str(),
        };
        let r = &config.retention;
        let keep = match retention_class {
            "inbound" => r.inbound,
            "outbound" => r.outbound,
            "internal" => r.internal,
            "relay" => r.relay,
            "rejected" => r.rejected,
            _ => r.aborted,
        };
        let expires = now + chrono::Duration::from_std(keep.0).unwrap_or(chrono::Duration::MAX);
        let recipients = msg
            .accepted_recipients()
            .zip(class.local.iter())
            .map(|(r, local)| RecipientView {
                address: pseudo.address(&r.address),
                local: *local,
            })
            .collect();
        Event {
            schema: SCHEMA.to_string(),
            id: Uuid::now_v7(),
            time: stamp(now),
            host: host.to_string(),
            queue_id: msg.queue_id.clone(),
            outcome,
            direction: class.direction,
            transit: class.transit,
            client: Client {
                ip: conn.client_ip.and_then(|ip| pseudo.ip(ip)),
                authenticated: class.authenticated,
                webmail: class.webmail,
            },
            sender: pseudo.address(&msg.sender),
            recipients,
            size: msg.size,
            actions,
            dry_run: config.dry_run,
            skipped_actions,
            edits: (!can_edit).then_some(Edits::Unavailable),
            retention: Retention {
                class: retention_class.to_string(),
                expires_at: stamp(expires),
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events always serialise")
    }
}

/// An inbound event as the milter writes it, for unit tests.
#[cfg(test)]
pub(crate) fn sample(queue_id: &str, sender: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "schema": SCHEMA,
        "id": Uuid::now_v7(),
        "time": "2026-11-26T18:00:00.000Z",
        "host": "mx.test.example",
        "queue_id": queue_id,
        "outcome": "accepted",
        "direction": "inbound",
        "transit": false,
        "client": {"ip": "198.51.100.0/24", "authenticated": false, "webmail": false},
        "sender": {"address": sender, "domain": sender.rsplit('@').next()},
        "recipients": [{"domain": "example.org", "local": true}],
        "size": 100,
        "actions": [],
        "retention": {"class": "inbound", "expires_at": "2099-01-01T00:00:00.000Z"}
    }))
    .expect("a valid event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_are_the_serialised_ones() {
        for outcome in [
            Outcome::Accepted,
            Outcome::Rejected,
            Outcome::Tempfailed,
            Outcome::Discarded,
            Outcome::Aborted,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                serde_json::json!(outcome.as_str())
            );
        }
    }
}
