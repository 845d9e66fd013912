//! The transit lifecycle of a message we only pass on: from its event (end of message) to the
//! moment its queue file is gone. Pure: what the MTA's log and queue say goes in as a
//! [`Step`], the message's [`Transit`] record comes out changed. `crate::track` reads the log
//! and the queue; the stores keep the records.
//!
//! States, in the order a message normally passes them:
//!
//! - `pending`: recorded, no delivery attempt logged yet;
//! - `deferred`: the last attempt for some remote recipient failed temporarily;
//! - `acknowledged`: every remote recipient was accepted by the next server, the queue file
//!   is not yet removed;
//! - `removed`: acknowledged and the queue file removed: the policy's promise kept;
//! - `bounced`: a remote recipient was refused for good (a bounce went to the sender);
//! - `expired`: the MTA gave up after its maximal queue lifetime (returned to sender);
//! - `gone`: the message left the queue without a logged outcome for every recipient (deleted
//!   by the administrator, or log lines lost): not silently counted as `removed`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr, time::Duration};
use uuid::Uuid;

/// The schema of a delivery outcome in the stream sinks (`jsonl`, `log`).
pub const DELIVERY_SCHEMA: &str = "privacy-milter.delivery.v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Deferred,
    Acknowledged,
    Removed,
    Bounced,
    Expired,
    Gone,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Deferred,
        State::Acknowledged,
        State::Removed,
        State::Bounced,
        State::Expired,
        State::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Deferred => "deferred",
            Self::Acknowledged => "acknowledged",
            Self::Removed => "removed",
            Self::Bounced => "bounced",
            Self::Expired => "expired",
            Self::Gone => "gone",
        }
    }

    /// Whether the message may still be in the queue.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Deferred | Self::Acknowledged)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?}; expected one of: {}", names.join(", "))
            })
    }
}

/// A delivery attempt's outcome for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Deferred => "deferred",
            Self::Bounced => "bounced",
        }
    }
}

/// Where a store keeps a transit record: its event's row, and the queue id it is filed
/// under (which `postsuper -r` may change). Set by the store; opaque to everyone else.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StoreKey {
    pub seq: i64,
    pub queue_id: String,
}

/// One transit message as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transit {
    pub key: StoreKey,
    /// The message's event.
    pub event_id: Uuid,
    pub host: String,
    pub queue_id: String,
    pub state: State,
    /// When the message was accepted (its event's time): held from then.
    pub since: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    /// Remote recipients the message was accepted for.
    pub remote: u32,
    /// Remote recipients the next server accepted, and those refused for good.
    pub sent: u32,
    pub bounced: u32,
    /// How many times it was reported as held too long.
    pub alerts: u32,
}

/// What the log or the queue says about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A delivery attempt for one remote recipient.
    Delivery { status: Status, at: DateTime<Utc> },
    /// The queue file was removed.
    Removed { at: DateTime<Utc> },
    /// The MTA gave up on it (maximal queue lifetime) and returned it to the sender.
    Expired { at: DateTime<Utc> },
    /// The queue no longer holds it, and the log said nothing of its removal.
    LeftQueue { at: DateTime<Utc> },
}

impl Transit {
    /// A message just accepted, with `remote` remote recipients.
    pub fn new(
        event_id: Uuid,
        host: &str,
        queue_id: &str,
        since: DateTime<Utc>,
        remote: u32,
    ) -> Self {
        Self {
            key: StoreKey::default(),
            event_id,
            host: host.to_string(),
            queue_id: queue_id.to_string(),
            state: State::Pending,
            since,
            acknowledged_at: None,
            removed_at: None,
            remote,
            sent: 0,
            bounced: 0,
            alerts: 0,
        }
    }

    /// Every remote recipient has a final outcome.
    fn all_final(&self) -> bool {
        self.sent + self.bounced >= self.remote.max(1)
    }

    /// Applies what the log or the queue says. `removal_logged` is false for an MTA that logs
    /// no removal (Sendmail at its default log level): there the message counts as removed
    /// once every recipient reached a final status.
    pub fn apply(&mut self, step: Step, removal_logged: bool) {
        match step {
            Step::Delivery { status, at } => {
                if !self.state.is_open() {
                    // Only a late line of a message already settled (e.g. a bounce's own
                    // deliveries are not ours): nothing changes.
                    return;
                }
                match status {
                    Status::Sent => self.sent += 1,
                    Status::Bounced => self.bounced += 1,
                    Status::Deferred => {}
                }
                self.state = if self.bounced > 0 && self.all_final() {
                    State::Bounced
                } else if self.all_final() {
                    self.acknowledged_at.get_or_insert(at);
                    State::Acknowledged
                } else if status == Status::Deferred {
                    State::Deferred
                } else {
                    self.state
                };
                if !removal_logged && self.all_final() {
                    // Sendmail: nothing more will be logged; every recipient is final.
                    if self.state == State::Acknowledged {
                        self.state = State::Removed;
                    }
                    self.removed_at.get_or_insert(at);
                }
            }
            Step::Removed { at } => {
                self.removed_at.get_or_insert(at);
                self.state = match self.state {
                    State::Acknowledged | State::Removed => State::Removed,
                    State::Bounced | State::Expired => self.state,
                    // Removed with recipients still without an outcome: deleted by hand.
                    State::Pending | State::Deferred | State::Gone => State::Gone,
                };
            }
            // Postfix logs the removal of an expired message after it, as for any other.
            Step::Expired { .. } => {
                if self.state.is_open() {
                    self.state = State::Expired;
                }
            }
            Step::LeftQueue { at } => match self.state {
                // Every outcome is in the log; only the removal line is missing.
                State::Acknowledged => {
                    self.state = State::Removed;
                    self.removed_at.get_or_insert(at);
                }
                State::Pending | State::Deferred => {
                    self.state = State::Gone;
                    self.removed_at.get_or_insert(at);
                }
                _ => {
                    self.removed_at.get_or_insert(at);
                }
            },
        }
    }

    /// How long the message has been held: until its removal, or until `now`.
    pub fn held_for(&self, now: DateTime<Utc>) -> Duration {
        let until = self.removed_at.unwrap_or(now);
        (until - self.since).to_std().unwrap_or_default()
    }

    /// Whether the message, still queued at `now`, is due to be reported as held too long:
    /// first after `alert_after`, then again each time the time held doubles.
    pub fn alert_due(&self, now: DateTime<Utc>, alert_after: Duration) -> bool {
        if !self.state.is_open() || self.removed_at.is_some() {
            return false;
        }
        let threshold = alert_after.saturating_mul(1u32 << self.alerts.min(30));
        self.held_for(now) >= threshold
    }
}

/// One delivery outcome as it is recorded: pseudonymised, joined to its message's event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub schema: String,
    /// Unique per log line: the same line read twice is recorded once.
    pub id: String,
    pub time: String,
    pub host: String,
    pub queue_id: String,
    pub event_id: Uuid,
    /// The recipient as `[privacy] address` allows it.
    pub recipient: crate::privacy::AddressView,
    /// The next hop's IP as `[privacy] ip` allows it; `none` when no connection was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsn: Option<String>,
    /// The next server's own queue id, when its reply named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_queue_id: Option<String>,
    /// Seconds from arrival to this attempt, as the MTA logged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<f64>,
}

impl Delivery {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("deliveries always serialise")
    }
}

/// A duration in words, for log lines and tables: `1h 5m`, `3d 2h`, `42s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86400 => format!("{}d {}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + i64::from(s), 0).unwrap()
    }

    fn message(remote: u32) -> Transit {
        Transit::new(Uuid::nil(), "mx", "4QID", at(0), remote)
    }

    fn delivery(status: Status, s: u32) -> Step {
        Step::Delivery { status, at: at(s) }
    }

    #[test]
    fn sent_then_removed() {
        let mut t = message(2);
        t.apply(delivery(Status::Deferred, 1), true);
        assert_eq!(t.state, State::Deferred);
        t.apply(delivery(Status::Sent, 2), true);
        assert_eq!(t.state, State::Deferred, "one of two is still deferred");
        t.apply(delivery(Status::Sent, 3), true);
        assert_eq!(t.state, State::Acknowledged);
        assert_eq!(t.acknowledged_at, Some(at(3)));
        t.apply(Step::Removed { at: at(4) }, true);
        assert_eq!((t.state, t.removed_at), (State::Removed, Some(at(4))));
        assert_eq!(t.held_for(at(100)), Duration::from_secs(4));
    }

    #[test]
    fn a_bounce_is_final_and_a_removal_without_outcome_is_gone() {
        let mut t = message(1);
        t.apply(delivery(Status::Bounced, 1), true);
        t.apply(Step::Removed { at: at(2) }, true);
        assert_eq!(t.state, State::Bounced);
        assert_eq!(t.removed_at, Some(at(2)));

        let mut t = message(1);
        t.apply(delivery(Status::Deferred, 1), true);
        t.apply(Step::Removed { at: at(2) }, true);
        assert_eq!(t.state, State::Gone);

        let mut t = message(1);
        t.apply(Step::Expired { at: at(5) }, true);
        assert_eq!(t.state, State::Expired);
    }

    #[test]
    fn sendmail_counts_every_final_recipient_as_removed() {
        let mut t = message(2);
        t.apply(delivery(Status::Sent, 1), false);
        assert_eq!(t.state, State::Pending);
        t.apply(delivery(Status::Sent, 2), false);
        assert_eq!(t.state, State::Removed);
        assert_eq!(
            (t.acknowledged_at, t.removed_at),
            (Some(at(2)), Some(at(2)))
        );
    }

    #[test]
    fn the_queue_repairs_lost_lines() {
        let mut t = message(1);
        t.apply(Step::LeftQueue { at: at(9) }, true);
        assert_eq!(t.state, State::Gone);
        let mut t = message(1);
        t.apply(delivery(Status::Sent, 1), true);
        t.apply(Step::LeftQueue { at: at(9) }, true);
        assert_eq!((t.state, t.removed_at), (State::Removed, Some(at(9))));
    }

    #[test]
    fn alerts_double() {
        let hour = Duration::from_secs(3600);
        let mut t = message(1);
        assert!(!t.alert_due(at(3599), hour));
        assert!(t.alert_due(at(3600), hour));
        t.alerts = 1;
        assert!(!t.alert_due(at(7199), hour));
        assert!(t.alert_due(at(7200), hour));
        t.apply(delivery(Status::Sent, 7300), true);
        assert!(
            t.alert_due(at(14400), hour),
            "acknowledged but still queued"
        );
        t.apply(Step::Removed { at: at(14500) }, true);
        assert!(!t.alert_due(at(20000), hour), "removed mail is not held");
    }

    #[test]
    fn states_parse_back() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert!("held".parse::<State>().unwrap_err().contains("pending"));
    }
}
