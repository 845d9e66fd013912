//! When a line may move a transit record onto another queue id, and what the log must have
//! said before (docs/transit.md, "What a log line is trusted with").
//!
//! Two lines move a message: pickup's `NEWQID: uid=N from=<s> orig_id=OLDQID` after
//! `postsuper -r`, and a content filter's hop (`OLDQID: ... status=sent (250 ... queued as
//! NEWQID)`) when NEWQID entered our own queue. Anyone who can write to the log (`logger -t
//! postfix/pickup` on a host whose syslog takes local users' lines) can write such a line, so
//! a move is believed only when the lines before it make it plausible:
//!
//! - a requeue: the pickup line has a PID (`logger` writes none unless asked), its `uid=` is
//!   `mail_owner`'s when that is known (postsuper keeps the queue file's owner), postsuper
//!   logged `OLDQID: requeued` (or `Requeued: N messages` for `postsuper -r ALL`) at most a day
//!   before, each such line allows one move, and NEWQID has not been seen in the log;
//! - a hop: NEWQID was logged entering the queue (smtpd `client=`, cleanup `message-id=`,
//!   pickup) by the same Postfix instance as the hop, within the last hour.
//!
//! The caller checks the records: NEWQID has none, OLDQID has an open one.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;

/// How long after postsuper's line a requeue is believed.
const REQUEUE_WITHIN: TimeDelta = TimeDelta::days(1);
/// How long a queue id seen entering the queue is remembered: a content filter answers within
/// seconds of queueing, and memory stays bounded on a busy host.
const ENTERED_KEPT: TimeDelta = TimeDelta::hours(1);

/// Why a requeue line was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refused {
    NoPid,
    NotMailOwner,
    NoPostsuper,
    NewIdSeen,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoPid => "it has no process id",
            Self::NotMailOwner => "its uid is not Postfix's mail_owner",
            Self::NoPostsuper => "no postsuper line requeued the message in the day before",
            Self::NewIdSeen => "its new queue id was seen before",
        }
    }
}

/// What the log said so far that moves depend on.
#[derive(Debug, Default)]
pub struct Rekeys {
    /// Postfix's `mail_owner` uid, when known.
    mail_owner: Option<u32>,
    /// Queue ids seen entering the queue: the instance (the identifier's first part) and when.
    entered: HashMap<String, (String, DateTime<Utc>)>,
    /// postsuper `OLDQID: requeued` lines not used yet, by OLDQID.
    requeued: HashMap<String, DateTime<Utc>>,
    /// postsuper `Requeued: N messages` lines: when, and how many moves they still allow.
    counted: Vec<(DateTime<Utc>, u32)>,
    /// `OLDQID: requeued` lines per postsuper process, not to be counted twice by its count line.
    per_run: HashMap<u32, u32>,
    /// Queue ids whose record moved away in this batch (the ledger files it under the old one
    /// until the batch is recorded).
    moved: std::collections::HashSet<String>,
}

/// The Postfix instance of an identifier: `postfix` of `postfix/smtpd`, `postfix-mx` of
/// `postfix-mx/smtp`.
fn instance(ident: &str) -> &str {
    ident.split('/').next().unwrap_or(ident)
}

impl Rekeys {
    pub fn new(mail_owner: Option<u32>) -> Self {
        Self {
            mail_owner,
            ..Default::default()
        }
    }

    /// `queue_id` entered the queue of `ident`'s instance at `at`.
    pub fn entered(&mut self, queue_id: &str, ident: &str, at: DateTime<Utc>) {
        self.entered
            .insert(queue_id.to_string(), (instance(ident).to_string(), at));
    }

    /// postsuper (process `pid`) logged `queue_id: requeued` at `at`.
    pub fn postsuper_requeued(&mut self, queue_id: &str, pid: Option<u32>, at: DateTime<Utc>) {
        self.requeued.insert(queue_id.to_string(), at);
        if let Some(pid) = pid {
            *self.per_run.entry(pid).or_default() += 1;
        }
    }

    /// postsuper (process `pid`) logged `Requeued: count messages` at `at`: the moves its
    /// per-message lines did not allow already.
    pub fn postsuper_count(&mut self, count: u32, pid: Option<u32>, at: DateTime<Utc>) {
        let said = pid.and_then(|p| self.per_run.remove(&p)).unwrap_or(0);
        let left = count.saturating_sub(said);
        if left > 0 {
            self.counted.push((at, left));
        }
    }

    /// Whether pickup's requeue of `original` as `queue_id` may be believed, as far as the log
    /// goes; the allowance it uses is taken only by [`Self::requeue_used`].
    pub fn requeue_refused(
        &self,
        queue_id: &str,
        original: &str,
        pid: Option<u32>,
        uid: Option<u32>,
        at: DateTime<Utc>,
    ) -> Option<Refused> {
        if pid.is_none() {
            return Some(Refused::NoPid);
        }
        if self.mail_owner.is_some() && uid != self.mail_owner {
            return Some(Refused::NotMailOwner);
        }
        if self.entered.contains_key(queue_id) {
            return Some(Refused::NewIdSeen);
        }
        let recent = |t: &DateTime<Utc>| *t <= at && at - *t <= REQUEUE_WITHIN;
        let named = self.requeued.get(original).is_some_and(recent);
        if !named && !self.counted.iter().any(|(t, _)| recent(t)) {
            return Some(Refused::NoPostsuper);
        }
        None
    }

    /// The requeue of `original` was believed: its allowance is used up.
    pub fn requeue_used(&mut self, original: &str, queue_id: &str, ident: &str, at: DateTime<Utc>) {
        if self.requeued.remove(original).is_none() {
            let recent = |t: &DateTime<Utc>| *t <= at && at - *t <= REQUEUE_WITHIN;
            if let Some(slot) = self.counted.iter_mut().find(|(t, _)| recent(t)) {
                slot.1 -= 1;
            }
            self.counted.retain(|(_, left)| *left > 0);
        }
        self.moved_away(original);
        self.entered(queue_id, ident, at);
    }

    /// A content filter's hop: the queue id the next server gave, when it is one that entered
    /// the queue of the same instance as `ident` (ours), and not the message's own.
    pub fn filter_hop<'d>(
        &self,
        queue_id: &str,
        remote_queue_id: Option<&'d str>,
        ident: &str,
        at: DateTime<Utc>,
    ) -> Option<&'d str> {
        let new = remote_queue_id.filter(|new| *new != queue_id)?;
        let (their_instance, when) = self.entered.get(new)?;
        (their_instance == instance(ident)
            && at - *when <= ENTERED_KEPT
            && *when <= at + ENTERED_KEPT)
            .then_some(new)
    }

    /// The record filed under `queue_id` moved away in this batch.
    pub fn moved_away(&mut self, queue_id: &str) {
        self.moved.insert(queue_id.to_string());
    }

    /// Whether the record filed under `queue_id` moved to another in this batch.
    pub fn has_moved(&self, queue_id: &str) -> bool {
        self.moved.contains(queue_id)
    }

    /// At the end of a batch (recorded: the ledger files moved records under their new ids),
    /// forgets what is too old to matter at `now`, the newest line's time.
    pub fn batch_done(&mut self, now: DateTime<Utc>) {
        self.moved.clear();
        self.entered.retain(|_, (_, at)| now - *at <= ENTERED_KEPT);
        self.requeued.retain(|_, at| now - *at <= REQUEUE_WITHIN);
        self.counted.retain(|(at, _)| now - *at <= REQUEUE_WITHIN);
        if self.per_run.len() > 1000 {
            self.per_run.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    const OLD: &str = "3B3AE9AC053";
    const NEW: &str = "4T02Hr4S5hz9vf6k";

    #[test]
    fn a_forged_pickup_line_alone_is_refused() {
        let r = Rekeys::new(Some(107));
        // logger -t postfix/pickup: no PID, uid=0, no postsuper line.
        assert_eq!(
            r.requeue_refused(NEW, OLD, None, Some(0), t(0)),
            Some(Refused::NoPid)
        );
        assert_eq!(
            r.requeue_refused(NEW, OLD, Some(9), Some(0), t(0)),
            Some(Refused::NotMailOwner)
        );
        assert_eq!(
            r.requeue_refused(NEW, OLD, Some(9), Some(107), t(0)),
            Some(Refused::NoPostsuper)
        );
    }

    #[test]
    fn after_postsuper_one_move_per_line_within_a_day() {
        let mut r = Rekeys::new(Some(107));
        r.postsuper_requeued(OLD, Some(5), t(0));
        // Not before postsuper's line, not a day after.
        assert_eq!(
            r.requeue_refused(NEW, OLD, Some(9), Some(107), t(-1)),
            Some(Refused::NoPostsuper)
        );
        assert_eq!(
            r.requeue_refused(NEW, OLD, Some(9), Some(107), t(86401)),
            Some(Refused::NoPostsuper)
        );
        assert_eq!(r.requeue_refused(NEW, OLD, Some(9), Some(107), t(1)), None);
        // Another message is not allowed by this line.
        assert_eq!(
            r.requeue_refused(NEW, "5C5C5C5C5C5", Some(9), Some(107), t(1)),
            Some(Refused::NoPostsuper)
        );
        r.requeue_used(OLD, NEW, "postfix/pickup", t(1));
        assert!(r.has_moved(OLD));
        // Used once; and the new id is now seen.
        assert_eq!(
            r.requeue_refused("4T02Hr4S5hz9vXXX", OLD, Some(9), Some(107), t(2)),
            Some(Refused::NoPostsuper)
        );
        r.postsuper_requeued(OLD, Some(6), t(3));
        assert_eq!(
            r.requeue_refused(NEW, OLD, Some(9), Some(107), t(4)),
            Some(Refused::NewIdSeen)
        );
    }

    #[test]
    fn requeue_all_allows_as_many_moves_as_it_counted() {
        let mut r = Rekeys::new(None);
        // postsuper -r ALL: per-message lines and the count line of the same process.
        r.postsuper_requeued("AAAAAAAAAA1", Some(5), t(0));
        r.postsuper_count(1, Some(5), t(0));
        assert_eq!(
            r.requeue_refused(NEW, "BBBBBBBBBB2", Some(9), Some(0), t(1)),
            Some(Refused::NoPostsuper)
        );
        // A count line alone (no per-message lines seen): that many moves, of open records.
        r.postsuper_count(2, Some(6), t(2));
        for (n, new) in ["4T02Hr4S5hz9vf01", "4T02Hr4S5hz9vf02"].iter().enumerate() {
            assert_eq!(
                r.requeue_refused(new, "BBBBBBBBBB2", Some(9), Some(0), t(3)),
                None,
                "{n}"
            );
            r.requeue_used("BBBBBBBBBB2", new, "postfix/pickup", t(3));
        }
        assert_eq!(
            r.requeue_refused("4T02Hr4S5hz9vf03", "BBBBBBBBBB3", Some(9), Some(0), t(3)),
            Some(Refused::NoPostsuper)
        );
    }

    #[test]
    fn a_hop_to_an_id_that_entered_our_queue() {
        let mut r = Rekeys::new(None);
        assert_eq!(r.filter_hop(OLD, Some(NEW), "postfix/smtp", t(0)), None);
        r.entered(NEW, "postfix/smtpd", t(0));
        assert_eq!(
            r.filter_hop(OLD, Some(NEW), "postfix/smtp", t(1)),
            Some(NEW)
        );
        // Another instance's queue, or long ago: not ours.
        assert_eq!(r.filter_hop(OLD, Some(NEW), "postfix-out/smtp", t(1)), None);
        assert_eq!(r.filter_hop(OLD, Some(NEW), "postfix/smtp", t(7200)), None);
        assert_eq!(r.filter_hop(NEW, Some(NEW), "postfix/smtp", t(1)), None);
        r.batch_done(t(7200));
        assert_eq!(r.filter_hop(OLD, Some(NEW), "postfix/smtp", t(1)), None);
    }
}
