//! The rules: pure functions from the facts and the classification to header edits.
//!
//! Each rule lives in its own file and sees only its own configuration. A rule returns
//! [`Action`]s; the session applies the edits (unless in dry run) and records the labels in
//! the event.

pub mod originating_ip;
pub mod transit_tag;

use crate::{
    classify::Classification,
    config::Config,
    facts::{ConnectionFacts, MessageFacts},
    keys::Secrets,
};

/// A change to the message's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Delete copy `index` (from 1) of the header `name`.
    Delete { name: String, index: i32 },
    /// Append the header `name: value`.
    Add { name: String, value: String },
    /// Insert the header `name: value` at the top of the header.
    Prepend { name: String, value: String },
}

/// What a rule decided: a label for the event and the log, and the edit it takes, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub label: &'static str,
    pub edit: Option<Edit>,
}

impl Action {
    pub fn delete(label: &'static str, name: &str, index: i32) -> Self {
        Self {
            label,
            edit: Some(Edit::Delete {
                name: name.to_string(),
                index,
            }),
        }
    }

    pub fn add(label: &'static str, name: &str, value: String) -> Self {
        Self {
            label,
            edit: Some(Edit::Add {
                name: name.to_string(),
                value,
            }),
        }
    }

    pub fn prepend(label: &'static str, name: &str, value: String) -> Self {
        Self {
            label,
            edit: Some(Edit::Prepend {
                name: name.to_string(),
                value,
            }),
        }
    }

    pub fn note(label: &'static str) -> Self {
        Self { label, edit: None }
    }
}

/// Runs every enabled rule. `secrets` seal the tokens of `originating_ip` mode `encrypted`
/// and make and verify transit tags; `host` is our name in the tag.
pub fn decide(
    conn: &ConnectionFacts,
    msg: &MessageFacts,
    class: &Classification,
    config: &Config,
    secrets: &Secrets,
    host: &str,
) -> Vec<Action> {
    let rules = &config.rules;
    let mut actions = originating_ip::decide(
        conn,
        msg,
        class,
        &rules.originating_ip,
        secrets.aead.as_deref(),
    );
    actions.extend(transit_tag::decide(
        msg,
        class,
        &rules.transit_tag,
        &secrets.transit,
        host,
    ));
    actions
}

/// The event's `actions` list: each label once, in the order first taken.
pub fn labels(actions: &[Action]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for a in actions {
        if !labels.iter().any(|l| l == a.label) {
            labels.push(a.label.to_string());
        }
    }
    labels
}

/// The edits in the order the MTA must get them: deletions first, highest index first, so
/// that no deletion shifts the index of a later one; then additions and insertions.
pub fn ordered_edits(actions: &[Action]) -> Vec<&Edit> {
    let mut deletes: Vec<&Edit> = actions
        .iter()
        .filter_map(|a| a.edit.as_ref())
        .filter(|e| matches!(e, Edit::Delete { .. }))
        .collect();
    deletes.sort_by_key(|e| match e {
        Edit::Delete { name, index } => (name.to_ascii_lowercase(), std::cmp::Reverse(*index)),
        Edit::Add { .. } | Edit::Prepend { .. } => unreachable!(),
    });
    let adds = actions
        .iter()
        .filter_map(|a| a.edit.as_ref())
        .filter(|e| !matches!(e, Edit::Delete { .. }));
    deletes.into_iter().chain(adds).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_come_first_in_reverse_order() {
        let actions = vec![
            Action::add("a.added", "X-A", "v".into()),
            Action::delete("a.removed", "X-A", 1),
            Action::delete("a.removed", "X-A", 3),
            Action::delete("b.removed", "X-B", 2),
            Action::note("a.noted"),
            Action::prepend("c.added", "X-C", "v".into()),
        ];
        let order: Vec<String> = ordered_edits(&actions)
            .into_iter()
            .map(|e| match e {
                Edit::Delete { name, index } => format!("-{name}{index}"),
                Edit::Add { name, .. } => format!("+{name}"),
                Edit::Prepend { name, .. } => format!("^{name}"),
            })
            .collect();
        assert_eq!(order, ["-X-A3", "-X-A1", "-X-B2", "+X-A", "^X-C"]);
        assert_eq!(
            labels(&actions),
            ["a.added", "a.removed", "b.removed", "a.noted", "c.added"]
        );
    }
}
