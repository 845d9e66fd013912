//! What no real MTA writes, refused before it becomes a record that misleads: a line dated far
//! ahead, a delay no queue allows, a DSN code of another shape, a recipient longer than any
//! address, a line or a message with more recipients than any real one, an outcome dated
//! before its message was accepted. Such a line changes nothing; the caller counts it as not
//! understood and says so once per cause.

use super::parse::{Delivery, Record};
use crate::transit::Transit;
use chrono::{DateTime, TimeDelta, Utc};

/// A line dated more than this ahead of now is not believed (clock skew is seconds).
const FUTURE: TimeDelta = TimeDelta::days(1);
/// No queue holds a message longer (Postfix's `maximal_queue_lifetime` defaults to 5 days,
/// Sendmail's `Timeout.queuereturn` to 5 days; 30 days is beyond what anyone configures).
const QUEUE_LIFETIME_SECONDS: f64 = 30.0 * 86400.0;
/// RFC 5321 allows 256 octets for a path; twice that leaves room for quoting.
const RECIPIENT_BYTES: usize = 512;
/// Recipients on one line (Sendmail lists several), and outcomes recorded for one message.
pub const RECIPIENTS: usize = 1000;
/// A classic time stamp has whole seconds, the event's time milliseconds, and both come from
/// clocks of the same host: an outcome more than this before the acceptance is not believed.
const BEFORE_ACCEPTANCE: TimeDelta = TimeDelta::minutes(1);

/// Why a line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Implausible {
    Future,
    Delay,
    Dsn,
    LongRecipient,
    TooManyRecipients,
    BeforeAcceptance,
}

impl Implausible {
    /// For the tracker's log: what was wrong, saying nothing of the line's content.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Future => "its time is more than a day ahead",
            Self::Delay => "its delay is negative or longer than any queue holds mail (30 days)",
            Self::Dsn => "its DSN code is not of the shape 2.x.x, 4.x.x or 5.x.x",
            Self::LongRecipient => "its recipient is longer than 512 bytes",
            Self::TooManyRecipients => "it names more than 1000 recipients for one message",
            Self::BeforeAcceptance => "it is dated before its message was accepted",
        }
    }
}

/// The checks that need nothing but the line: its time, and each record in it.
pub fn line(records: &[Record], at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), Implausible> {
    if at > now + FUTURE {
        return Err(Implausible::Future);
    }
    if records.len() > RECIPIENTS {
        return Err(Implausible::TooManyRecipients);
    }
    records.iter().try_for_each(|r| match r {
        Record::Delivery(d) => delivery(d),
        _ => Ok(()),
    })
}

fn delivery(d: &Delivery) -> Result<(), Implausible> {
    let plausible = |s: f64| (0.0..=QUEUE_LIFETIME_SECONDS).contains(&s);
    if !d.delay.is_none_or(plausible) || !d.delays.is_none_or(|ds| ds.into_iter().all(plausible)) {
        return Err(Implausible::Delay);
    }
    if !d.dsn.as_deref().is_none_or(dsn_shaped) {
        return Err(Implausible::Dsn);
    }
    let long = |r: &str| r.len() > RECIPIENT_BYTES;
    if long(&d.recipient) || d.original_recipient.as_deref().is_some_and(long) {
        return Err(Implausible::LongRecipient);
    }
    Ok(())
}

/// `[245].d{1,3}.d{1,3}` (RFC 3463: class, subject, detail).
fn dsn_shaped(dsn: &str) -> bool {
    let mut parts = dsn.split('.');
    let number = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(parts.next(), Some("2" | "4" | "5"))
        && number(parts.next())
        && number(parts.next())
        && parts.next().is_none()
}

/// The checks against the message's record: an outcome at `at` for `t`.
pub fn on_message(t: &Transit, at: DateTime<Utc>, delivery: bool) -> Result<(), Implausible> {
    if at < t.since - BEFORE_ACCEPTANCE {
        return Err(Implausible::BeforeAcceptance);
    }
    if delivery && (t.sent + t.bounced) as usize >= RECIPIENTS {
        return Err(Implausible::TooManyRecipients);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::parse::Status;

    fn now() -> DateTime<Utc> {
        "2026-11-29T21:06:33Z".parse().unwrap()
    }

    fn sent() -> Delivery {
        Delivery {
            queue_id: "3B3AE9AC053".into(),
            recipient: "b@remote.example".into(),
            original_recipient: None,
            agent: "smtp".into(),
            relay_host: None,
            relay_ip: None,
            relay_port: None,
            delay: Some(0.5),
            delays: Some([0.1, 0.1, 0.1, 0.2]),
            dsn: Some("2.0.0".into()),
            status: Status::Sent,
            reply: "250 2.0.0 Ok".into(),
            remote_queue_id: None,
        }
    }

    fn check(d: Delivery) -> Result<(), Implausible> {
        line(&[Record::Delivery(d)], now(), now())
    }

    #[test]
    fn a_real_delivery_passes() {
        assert_eq!(check(sent()), Ok(()));
        let slow = Delivery {
            delay: Some(5.0 * 86400.0),
            dsn: Some("4.4.1".into()),
            ..sent()
        };
        assert_eq!(check(slow), Ok(()));
        assert_eq!(
            check(Delivery {
                delay: None,
                delays: None,
                dsn: None,
                ..sent()
            }),
            Ok(())
        );
    }

    #[test]
    fn a_line_far_in_the_future() {
        let removed = [Record::Removed {
            queue_id: "3B3AE9AC053".into(),
        }];
        assert_eq!(line(&removed, now() + TimeDelta::hours(23), now()), Ok(()));
        assert_eq!(
            line(&removed, now() + TimeDelta::hours(25), now()),
            Err(Implausible::Future)
        );
    }

    #[test]
    fn absurd_delays() {
        for delay in [-1.0, 31.0 * 86400.0, f64::NAN, f64::INFINITY] {
            let d = Delivery {
                delay: Some(delay),
                ..sent()
            };
            assert_eq!(check(d), Err(Implausible::Delay), "{delay}");
            let d = Delivery {
                delays: Some([0.0, 0.0, delay, 0.0]),
                ..sent()
            };
            assert_eq!(check(d), Err(Implausible::Delay), "{delay}");
        }
    }

    #[test]
    fn dsn_codes_of_another_shape() {
        for dsn in ["2.0.0", "4.7.1", "5.1.1", "5.123.999"] {
            assert_eq!(
                check(Delivery {
                    dsn: Some(dsn.into()),
                    ..sent()
                }),
                Ok(()),
                "{dsn}"
            );
        }
        for dsn in [
            "3.0.0", "2.0", "2.0.0.0", "2.1234.0", "2.x.0", "", "2..0", "25.0.0",
        ] {
            let d = Delivery {
                dsn: Some(dsn.into()),
                ..sent()
            };
            assert_eq!(check(d), Err(Implausible::Dsn), "{dsn}");
        }
    }

    #[test]
    fn a_recipient_longer_than_any_address() {
        let long = format!("{}@remote.example", "a".repeat(500));
        let d = Delivery {
            recipient: long.clone(),
            ..sent()
        };
        assert_eq!(check(d), Err(Implausible::LongRecipient));
        let d = Delivery {
            original_recipient: Some(long),
            ..sent()
        };
        assert_eq!(check(d), Err(Implausible::LongRecipient));
    }

    #[test]
    fn too_many_recipients_on_a_line_or_a_message() {
        let many = vec![Record::Delivery(sent()); RECIPIENTS + 1];
        assert_eq!(
            line(&many, now(), now()),
            Err(Implausible::TooManyRecipients)
        );
        assert_eq!(line(&many[..RECIPIENTS], now(), now()), Ok(()));
        let mut t = Transit::new(uuid::Uuid::nil(), "mx", "3B3AE9AC053", now(), 1);
        assert_eq!(on_message(&t, now(), true), Ok(()));
        t.sent = RECIPIENTS as u32;
        assert_eq!(
            on_message(&t, now(), true),
            Err(Implausible::TooManyRecipients)
        );
        // Its removal is still believed.
        assert_eq!(on_message(&t, now(), false), Ok(()));
    }

    #[test]
    fn an_outcome_before_the_acceptance() {
        let t = Transit::new(uuid::Uuid::nil(), "mx", "3B3AE9AC053", now(), 1);
        // Whole seconds against milliseconds: a line of the same second is fine.
        assert_eq!(
            on_message(&t, now() - TimeDelta::milliseconds(900), true),
            Ok(())
        );
        assert_eq!(
            on_message(&t, now() - TimeDelta::hours(2), true),
            Err(Implausible::BeforeAcceptance)
        );
        assert_eq!(
            on_message(&t, now() - TimeDelta::hours(2), false),
            Err(Implausible::BeforeAcceptance)
        );
    }
}
