//! The lines of the mail log as syslog writes them, and which programs in it are the MTA's.
//! The tracker, the audit and whatever else reads the log go through here, so that they agree
//! on what a line is and whose it is.
//!
//! A leaf: pure code on borrowed text. [`SyslogLine::split`] cuts a line into its parts without
//! allocating and without reading the calendar; [`Stamp::time`] then places the time stamp in
//! time, which for the classic form means guessing its year.
//!
//! # Lines
//! `STAMP HOST IDENT[PID]: MESSAGE`; the pid is optional (`ident: message`), and a line without
//! `ident:` is not syslog's (`-- MARK --`, `last message repeated 3 times`).
//! - Classic stamp: `Nov 29 21:06:33` (also `Nov  3`, `Nov 3`). It has no year and no zone: it
//!   is read in the zone of `now`, in `now`'s year unless that puts it more than a day ahead of
//!   `now`, then in the year before (December lines read in January). A day that does not exist
//!   that year (29 February) is looked for in the years before.
//! - RFC 3339: `2026-01-05T13:54:43.262668+01:00` (Debian 12 rsyslog), and journalctl's
//!   `short-iso` form with a `+0100` offset.
//!
//! # The MTA's programs
//! - Postfix: an identifier of two or more `/`-separated components, the first starting with
//!   `postfix`, names a Postfix program; the last component is the service (`smtp` of
//!   `postfix/smtp`, `postfix-mx/smtp`, `postfix-mx/content-filter/smtp`; `smtpd` of
//!   `postfix/submission/smtpd`). Postfix always logs as `syslog_name/program`, so `postfix`
//!   alone or `postfixadmin` is not Postfix.
//! - Sendmail: the names in [`SENDMAIL`].

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc,
};

/// The syslog identifiers Sendmail logs under: its own name, Debian's daemon (`-L sm-mta`), the
/// MSP queue runner of Debian, Red Hat and FreeBSD (`-L sm-msp-queue`) and of Gentoo
/// (`-L sm-cm`), and `sm-acceptingconnections`, which the listening daemon's lines carry on
/// some systems.
pub const SENDMAIL: [&str; 5] = [
    "sendmail",
    "sm-mta",
    "sm-msp-queue",
    "sm-cm",
    "sm-acceptingconnections",
];

/// A program of the MTA, from its syslog identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program<'a> {
    /// A Postfix program, by its service: the identifier's last component.
    Postfix {
        service: &'a str,
    },
    Sendmail,
}

/// Which of the MTA's programs `ident` names, if it names one; see the module docs.
pub fn mta_program(ident: &str) -> Option<Program<'_>> {
    if SENDMAIL.contains(&ident) {
        return Some(Program::Sendmail);
    }
    let (instance, rest) = ident.split_once('/')?;
    let service = rest.rsplit('/').next().unwrap_or(rest);
    (instance.starts_with("postfix") && !service.is_empty()).then_some(Program::Postfix { service })
}

/// Whether `ident` names one of the MTA's programs.
pub fn is_mta(ident: &str) -> bool {
    mta_program(ident).is_some()
}

/// A syslog line cut into its parts, borrowed from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyslogLine<'a> {
    pub stamp: Stamp<'a>,
    pub host: &'a str,
    /// The syslog identifier: `postfix/smtp`, `postfix/submission/smtpd`, `sm-mta`, `dovecot`.
    pub ident: &'a str,
    pub pid: Option<u32>,
    pub message: &'a str,
}

impl<'a> SyslogLine<'a> {
    /// Cuts a line (a trailing newline is dropped); None when it is not syslog-shaped. The
    /// classic stamp's shape is checked here, its calendar only by [`Stamp::time`].
    pub fn split(line: &'a str) -> Option<Self> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (stamp, rest) = if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let (text, rest) = line.split_once(' ')?;
            (
                Stamp {
                    text,
                    form: Form::Iso,
                },
                rest,
            )
        } else {
            split_classic(line)?
        };
        let (host, rest) = rest.split_once(' ')?;
        if host.is_empty() {
            return None;
        }
        let (tag, message) = rest.split_once(':')?;
        if tag.is_empty() || tag.contains(char::is_whitespace) {
            return None;
        }
        let (ident, pid) = match tag.split_once('[') {
            Some((ident, pid)) => {
                let pid = pid.strip_suffix(']')?;
                if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (ident, Some(pid.parse().ok()?))
            }
            None => (tag, None),
        };
        if ident.is_empty() {
            return None;
        }
        Some(SyslogLine {
            stamp,
            host,
            ident,
            pid,
            message: message.strip_prefix(' ').unwrap_or(message),
        })
    }
}

/// A line's time stamp, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp<'a> {
    text: &'a str,
    form: Form,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `Nov 29 21:06:33`, its fields read.
    Classic {
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    },
    /// Read when asked for.
    Iso,
}

impl<'a> Stamp<'a> {
    /// The stamp's text in the line.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The time the stamp names: a classic stamp in the zone of `now` and the year that fits
    /// (see the module docs). None for a date or time that does not exist.
    pub fn time<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> Option<DateTime<Utc>> {
        match self.form {
            Form::Iso => DateTime::parse_from_rfc3339(self.text)
                .or_else(|_| DateTime::parse_from_str(self.text, "%Y-%m-%dT%H:%M:%S%.f%z"))
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Form::Classic {
                month,
                day,
                hour,
                minute,
                second,
            } => classic_to_utc(month, day, (hour, minute, second), now),
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Splits a classic stamp off the front of `line`; returns it and what follows the space after
/// it.
fn split_classic(line: &str) -> Option<(Stamp<'_>, &str)> {
    let month = MONTHS.iter().position(|m| line.starts_with(m))?;
    let rest = line[3..].strip_prefix(' ')?;
    // The day is space-padded ("Nov  3"); some writers do not pad ("Nov 3").
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=2).contains(&digits) {
        return None;
    }
    let day = rest[..digits].parse().ok()?;
    let rest = rest[digits..].strip_prefix(' ')?;
    let clock = rest.get(..8)?;
    let after = rest[8..].strip_prefix(' ')?;
    let c = clock.as_bytes();
    if c[2] != b':' || c[5] != b':' {
        return None;
    }
    let two = |at: usize| -> Option<u32> {
        let (a, b) = (c[at], c[at + 1]);
        (a.is_ascii_digit() && b.is_ascii_digit())
            .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
    };
    let form = Form::Classic {
        month: month as u32 + 1,
        day,
        hour: two(0)?,
        minute: two(3)?,
        second: two(6)?,
    };
    let text = &line[..line.len() - rest.len() + 8];
    Some((Stamp { text, form }, after))
}

/// Places a classic stamp in time: in the zone of `now`, in the latest year that does not put
/// it more than a day after `now` (a day of slack for clocks and zones that disagree a little).
fn classic_to_utc<Tz: TimeZone>(
    month: u32,
    day: u32,
    (hour, minute, second): (u32, u32, u32),
    now: &DateTime<Tz>,
) -> Option<DateTime<Utc>> {
    let latest = now
        .with_timezone(&Utc)
        .checked_add_signed(TimeDelta::days(1))?;
    let zone = now.timezone();
    // Usually this year or the one before; 29 February may need up to 8 years back (1896 to 1904).
    for year in (now.year() - 8..=now.year()).rev() {
        let Some(naive) = NaiveDate::from_ymd_opt(year, month, day)
            .and_then(|d| d.and_hms_opt(hour, minute, second))
        else {
            continue;
        };
        if let Some(time) = local_to_utc(&zone, naive) {
            if time <= latest {
                return Some(time);
            }
        }
    }
    None
}

/// A local time of `zone` in UTC. In the hour repeated when summer time ends the earlier reading
/// is taken; a time skipped when it starts (which a clock in that zone never shows) is read with
/// the offset in force just before.
fn local_to_utc<Tz: TimeZone>(zone: &Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => {
            let before = naive.checked_sub_signed(TimeDelta::hours(3))?;
            let offset = zone.from_local_datetime(&before).earliest()?.offset().fix();
            offset
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.with_timezone(&Utc))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    /// A "now" in Berlin winter time, so classic stamps are read at +01:00.
    fn now() -> DateTime<FixedOffset> {
        FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
            .unwrap()
    }

    /// The line cut and its time, as the tracker and the audit read it.
    fn read<'a, Tz: TimeZone>(
        line: &'a str,
        now: &DateTime<Tz>,
    ) -> Option<(SyslogLine<'a>, DateTime<Utc>)> {
        let l = SyslogLine::split(line)?;
        Some((l, l.stamp.time(now)?))
    }

    #[test]
    fn classic_line_is_split_in_the_zone_of_now() {
        let line = "Nov 29 21:06:33 mx postfix/smtp[24393]: 3B3AE9AC053: removed";
        let (l, time) = read(line, &now()).unwrap();
        assert_eq!(time, utc(2026, 11, 29, 20, 6, 33));
        assert_eq!(l.stamp.as_str(), "Nov 29 21:06:33");
        assert_eq!(l.host, "mx");
        assert_eq!(l.ident, "postfix/smtp");
        assert_eq!(l.pid, Some(24393));
        assert_eq!(l.message, "3B3AE9AC053: removed");
    }

    #[test]
    fn rfc3339_line_is_split() {
        let (l, time) = read(
            "2026-01-05T13:54:43.262668+01:00 mail postfix/qmgr[3663]: 3B3AE9AC053: removed\n",
            &now(),
        )
        .unwrap();
        assert_eq!(
            time,
            utc(2026, 1, 5, 12, 54, 43) + TimeDelta::microseconds(262_668)
        );
        assert_eq!(l.stamp.as_str(), "2026-01-05T13:54:43.262668+01:00");
        assert_eq!(l.host, "mail");
        assert_eq!(l.ident, "postfix/qmgr");
        assert_eq!(l.message, "3B3AE9AC053: removed");
    }

    #[test]
    fn short_iso_offset_without_colon_is_read() {
        let (_, time) = read("2026-01-05T13:54:43+0100 mail sm-mta[1]: x", &now()).unwrap();
        assert_eq!(time, utc(2026, 1, 5, 12, 54, 43));
    }

    #[test]
    fn single_digit_day_forms() {
        for line in [
            "Nov  3 01:02:03 mx postfix/smtp[1]: m",
            "Nov 3 01:02:03 mx postfix/smtp[1]: m",
            "Nov 03 01:02:03 mx postfix/smtp[1]: m",
        ] {
            let (l, time) = read(line, &now()).unwrap();
            assert_eq!(time, utc(2026, 11, 3, 0, 2, 3), "{line}");
            assert_eq!(l.stamp.as_str(), &line[..line.find(" mx").unwrap()]);
            assert_eq!(l.message, "m");
        }
    }

    #[test]
    fn december_lines_read_in_january_belong_to_last_year() {
        let jan = Utc.with_ymd_and_hms(2026, 1, 2, 0, 30, 0).unwrap();
        let (_, dec) = read("Dec 31 23:59:59 mx postfix/smtp[1]: m", &jan).unwrap();
        assert_eq!(dec, utc(2025, 12, 31, 23, 59, 59));
        let (_, new_year) = read("Jan  1 00:00:01 mx postfix/smtp[1]: m", &jan).unwrap();
        assert_eq!(new_year, utc(2026, 1, 1, 0, 0, 1));
    }

    #[test]
    fn a_day_of_slack_before_the_year_goes_back() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        let (_, soon) = read("Mar 11 11:00:00 mx postfix/smtp[1]: m", &now).unwrap();
        assert_eq!(soon, utc(2026, 3, 11, 11, 0, 0));
        let (_, too_far) = read("Mar 11 13:00:00 mx postfix/smtp[1]: m", &now).unwrap();
        assert_eq!(too_far, utc(2025, 3, 11, 13, 0, 0));
    }

    #[test]
    fn february_29_goes_back_to_a_leap_year() {
        let now = Utc.with_ymd_and_hms(2027, 3, 1, 0, 0, 0).unwrap();
        let (_, time) = read("Feb 29 10:00:00 mx postfix/smtp[1]: m", &now).unwrap();
        assert_eq!(time, utc(2024, 2, 29, 10, 0, 0));
    }

    #[test]
    fn ident_without_pid() {
        let (l, _) = read("Nov 29 21:06:33 mx sendmail: hello: there", &now()).unwrap();
        assert_eq!(l.ident, "sendmail");
        assert_eq!(l.pid, None);
        assert_eq!(l.message, "hello: there");
    }

    #[test]
    fn lines_that_are_not_syslog_shaped() {
        for line in [
            "",
            "hello world",
            "Nov 29 21:06:33",
            "Nov 29 21:06:33 mx",
            "Nov 29 21:06:33 mx -- MARK --",
            "Nov 29 21:06:33 mx last message repeated 3 times",
            "Nov 29 21:06:33 mx postfix/smtp[abc]: m",
            "Nov 29 21:06:33 mx postfix/smtp[1: m",
            "Nov 29 21:6:33 mx postfix/smtp[1]: m",
            "Nov 29 2a:06:33 mx postfix/smtp[1]: m",
            "Nov 32 21:06:33 mx postfix/smtp[1]: m",
            "Foo 29 21:06:33 mx postfix/smtp[1]: m",
            "2026-13-05T13:54:43+01:00 mx postfix/smtp[1]: m",
            "Nov 29 21:06:33 mx [1]: m",
        ] {
            assert_eq!(read(line, &now()), None, "{line:?}");
        }
        // A shape that splits, on a day no calendar has: cut, but in no time.
        let l = SyslogLine::split("Nov 32 21:06:33 mx postfix/smtp[1]: m").unwrap();
        assert_eq!((l.ident, l.stamp.time(&now())), ("postfix/smtp", None));
    }

    #[test]
    fn the_mtas_programs() {
        for (ident, service) in [
            ("postfix/smtp", "smtp"),
            ("postfix/smtpd", "smtpd"),
            ("postfix-mx/qmgr", "qmgr"),
            ("postfix/submission/smtpd", "smtpd"),
            ("postfix-mx/content-filter/smtp", "smtp"),
        ] {
            assert_eq!(
                mta_program(ident),
                Some(Program::Postfix { service }),
                "{ident}"
            );
        }
        for ident in [
            "sendmail",
            "sm-mta",
            "sm-msp-queue",
            "sm-cm",
            "sm-acceptingconnections",
        ] {
            assert_eq!(mta_program(ident), Some(Program::Sendmail), "{ident}");
        }
        for ident in [
            "",
            "cron",
            "CRON",
            "sshd",
            "dovecot",
            "kernel",
            "sendmailer",
            "sm-mtaa",
            "postfix",
            "postfixadmin",
            "postfix/",
            "my-postfix/smtp",
            "notpostfix/smtp",
        ] {
            assert!(!is_mta(ident), "{ident}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the text, cutting it never panics and every part is cut from it.
            #[test]
            fn any_text_is_cut_or_refused(s in any::<String>(), t in "\\PC{0,200}", day in 0u32..40) {
                let classic = format!("Nov {day} 21:06:33 {t}");
                for line in [s.as_str(), t.as_str(), classic.as_str()] {
                    if let Some(l) = SyslogLine::split(line) {
                        for part in [l.stamp.as_str(), l.host, l.ident, l.message] {
                            prop_assert!(line.contains(part));
                        }
                        let _ = l.stamp.time(&now());
                        let _ = l.stamp.time(&Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
                    }
                }
            }
        }
    }
}
