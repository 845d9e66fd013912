//! The milter's own finding, from the ledger: messages of the last day that passed a milter
//! connection on which the MTA did not allow header edits (their events say
//! `"edits": "unavailable"`), so left without the headers the rules add or remove.

use super::{count, ledger, Finding};
use crate::{
    config::Config,
    event::{Edits, Event},
    store::StoreError,
};
use chrono::{DateTime, Duration, Utc};
use std::{collections::BTreeSet, path::Path};

const CHECK: &str = "milter.edits";

/// How far back events are read: the finding clears a day after its cause is fixed.
fn window() -> Duration {
    Duration::days(1)
}

/// Events are read an hour at a time, so that a busy day's are never all in memory at once.
fn chunk() -> Duration {
    Duration::hours(1)
}

/// What the day's events say.
#[derive(Default)]
struct Tally {
    events: usize,
    unedited: usize,
    /// Of those, the messages that had edits due.
    skipped: usize,
    latest: Option<String>,
    hosts: BTreeSet<String>,
}

impl Tally {
    fn add(&mut self, event: &Event) {
        self.events += 1;
        if event.edits != Some(Edits::Unavailable) {
            return;
        }
        self.unedited += 1;
        if !event.skipped_actions.is_empty() {
            self.skipped += 1;
        }
        if self.latest.as_deref() < Some(event.time.as_str()) {
            self.latest = Some(event.time.clone());
        }
        self.hosts.insert(event.host.clone());
    }
}

pub fn edits(config: &Config, now: DateTime<Utc>) -> Vec<Finding> {
    if !ledger::has_ledger(config) {
        return vec![Finding::holds(
            CHECK,
            "no ledger: events are kept in no sink the audit reads",
        )];
    }
    let tally = ledger::as_ledger_owner(config, |ledger| {
        let mut tally = Tally::default();
        let mut from = now - window();
        while from < now {
            let until = from + chunk();
            for event in ledger.export(Some(from), Some(until))? {
                tally.add(&event);
            }
            from = until;
        }
        Ok(tally)
    });
    let tally = match tally {
        Ok(tally) => tally,
        Err(StoreError::NoLedger(path)) if !Path::new(&path).exists() => {
            return vec![Finding::holds(
                CHECK,
                format!("no ledger yet at {} (events.ledger.path)", path.display()),
            )]
        }
        Err(e) => {
            return vec![Finding::fails(
                CHECK,
                format!("cannot read the ledger: {e}"),
                "check events.ledger.path or events.postgres.url",
            )]
        }
    };
    if tally.unedited == 0 {
        return vec![Finding::holds(
            CHECK,
            format!(
                "every milter connection of the last day allowed header edits ({} recorded)",
                count(tally.events, "event")
            ),
        )];
    }
    vec![Finding::fails(
        CHECK,
        format!(
            "{} of the {} recorded in the last day (the latest at {}, on {}) came through a \
             milter connection on which the MTA did not allow header edits (\"edits\": \
             \"unavailable\"); {} of them left without the edits the rules decided \
             (\"skipped_actions\")",
            tally.unedited,
            count(tally.events, "event"),
            tally.latest.as_deref().unwrap_or("-"),
            tally.hosts.into_iter().collect::<Vec<_>>().join(", "),
            tally.skipped,
        ),
        "Postfix and Sendmail always offer the milter the add-header and change-header actions \
         (SMFIF_ADDHDRS, SMFIF_CHGHDRS): what sits between them and the milter withheld them (a \
         milter proxy such as milter-manager, or a test client); let it pass both. The daemon \
         logs a warning for each such connection; this finding clears once a day has passed \
         without one",
    )]
}
