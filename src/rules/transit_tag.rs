//! Rule `transit_tag` (design.md §4): mail we only pass on to another server carries the
//! transit header, whose value is the direction (`outbound` or `relay`).
//!
//! Copies from clients outside the trusted networks are deleted on every message, so nobody
//! outside can forge the tag. A copy from a trusted client (our own earlier pass: a content
//! filter re-injecting, a second hop) is kept and not doubled.

use super::Action;
use crate::{classify::Classification, config::TransitTag, facts::MessageFacts};

pub const ADDED: &str = "transit_tag.added";
pub const REMOVED_FORGED: &str = "transit_tag.removed_forged";

pub fn decide(msg: &MessageFacts, class: &Classification, cfg: &TransitTag) -> Vec<Action> {
    if !cfg.enabled {
        return Vec::new();
    }
    let name = cfg.header.as_str();
    let copies = msg.transit_tag.count;
    let mut actions = Vec::new();
    if !class.trusted {
        for index in (1..=copies).rev() {
            actions.push(Action::delete(REMOVED_FORGED, name, index));
        }
    }
    let already_tagged = class.trusted && copies > 0;
    if class.transit && !already_tagged {
        actions.push(Action::add(ADDED, name, class.direction.to_string()));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classify::Direction, facts::HeaderCopies, rules::Edit};

    fn class(trusted: bool, direction: Direction) -> Classification {
        let transit = matches!(direction, Direction::Outbound | Direction::Relay);
        Classification {
            ours: trusted,
            authenticated: false,
            trusted,
            webmail: false,
            local: vec![!transit],
            direction,
            transit,
        }
    }

    fn msg(copies: i32) -> MessageFacts {
        MessageFacts {
            transit_tag: HeaderCopies {
                count: copies,
                values: vec![b"relay".to_vec(); copies as usize],
            },
            ..Default::default()
        }
    }

    fn edits(actions: Vec<Action>) -> Vec<Edit> {
        actions.into_iter().filter_map(|a| a.edit).collect()
    }

    #[test]
    fn relay_from_outside_is_tagged_and_forgeries_go() {
        let e = edits(decide(
            &msg(2),
            &class(false, Direction::Relay),
            &TransitTag::default(),
        ));
        assert_eq!(
            e,
            [
                Edit::Delete {
                    name: "X-Transit".into(),
                    index: 2
                },
                Edit::Delete {
                    name: "X-Transit".into(),
                    index: 1
                },
                Edit::Add {
                    name: "X-Transit".into(),
                    value: "relay".into()
                },
            ]
        );
    }

    #[test]
    fn inbound_forgery_removed_without_tag() {
        let e = edits(decide(
            &msg(1),
            &class(false, Direction::Inbound),
            &TransitTag::default(),
        ));
        assert_eq!(
            e,
            [Edit::Delete {
                name: "X-Transit".into(),
                index: 1
            }]
        );
    }

    #[test]
    fn second_pass_is_not_tagged_twice() {
        assert!(decide(
            &msg(1),
            &class(true, Direction::Outbound),
            &TransitTag::default()
        )
        .is_empty());
        let e = edits(decide(
            &msg(0),
            &class(true, Direction::Outbound),
            &TransitTag::default(),
        ));
        assert_eq!(
            e,
            [Edit::Add {
                name: "X-Transit".into(),
                value: "outbound".into()
            }]
        );
    }

    #[test]
    fn disabled_does_nothing() {
        let cfg = TransitTag {
            enabled: false,
            ..Default::default()
        };
        assert!(decide(&msg(1), &class(false, Direction::Relay), &cfg).is_empty());
    }
}
