//! Reads the lines that Postfix and Sendmail log about a queued message: when the next server
//! acknowledged it (and under which queue id, when it says), and when its queue file went.
//!
//! Pure code: [`split_syslog`] cuts a syslog line into time, host, ident, pid and message, and
//! [`parse`] interprets the message. Nothing here fails: a line that looks like one we track but
//! cannot be read is [`Parsed::NotUnderstood`] (the caller counts it), anything else that is not
//! ours is [`Parsed::Ignored`]. Lines are personal data; nothing here logs or keeps them.
//!
//! # Syslog lines
//! - Classic: `Nov 29 21:06:33 host ident[pid]: message` (also `Nov  3`, `Nov 3`). It has no year
//!   and no zone: it is read in the zone of `now`, in `now`'s year unless that puts it more than a
//!   day ahead of `now`, then in the year before (December lines read in January). A day that
//!   does not exist that year (29 February) is looked for in the years before.
//! - RFC 3339: `2026-01-05T13:54:43.262668+01:00 host ident[pid]: message` (Debian 12 rsyslog),
//!   and journalctl's `short-iso` form with a `+0100` offset.
//! - The pid is optional (`ident: message`); a line without `ident:` is not syslog-shaped.
//!
//! # Postfix (3.7; the ident's first component starts with `postfix`, its last names the service)
//! Matching the last component covers `syslog_name` variants (`postfix/submission/smtpd`,
//! `postfix-mx/smtp`, `postfix-mx/content-filter/smtp`). Queue ids are short upper-case hex
//! (`3B3AE9AC053`, 6+ chars) or long (`3Pt2mN2VXxznjll`, 12+ letters and digits); `NOQUEUE` and
//! lines without a queue id are ignored.
//! - `QID: to=<r>[, orig_to=<o>], relay=R[, conn_use=N], delay=D, delays=a/b/c/d, dsn=X.Y.Z,
//!   status=S (reason)` from any service (smtp, lmtp, local, virtual, relay, error, retry,
//!   discard, pipe, and qmgr, which logs its own deferrals for dead destinations): one
//!   [`Record::Delivery`]. Fields before `status=` are read by key, in any order, unknown ones
//!   skipped (newer Postfix adds `tls=`). The reason is everything after `status=S (` up to the
//!   final `)`: replies hold commas and parentheses. Addresses are taken quote-aware, since
//!   Postfix 3.5+ quotes local parts (`to=<"john doe"@example.org>`) that may hold `>` or `, `.
//!   - `sent`, `deferred`, `bounced` map to [`Status`]; `SOFTBOUNCE` (`soft_bounce = yes`: the
//!     bounce became a deferral, the dsn is 4.x.x and the message stays queued) is
//!     [`Status::Deferred`].
//!   - `deliverable`, `undeliverable`, `undeliverable-but-not-cached` come from address
//!     verification probes and `sendmail -bv`: no message is delivered, so Ignored.
//!   - Any other status word is NotUnderstood.
//!   - A line cut inside the reason (no closing parenthesis; Postfix cuts lines at about 2000
//!     bytes) still gives its Delivery, the reply as far as it goes and no remote queue id. A line
//!     cut before `status=S (` is NotUnderstood.
//! - qmgr `QID: removed`, postsuper `QID: removed` (postsuper -d): [`Record::Removed`].
//! - qmgr `QID: from=<s>, status=expired, returned to sender` and `status=force-expired`
//!   (postsuper -e, Postfix 3.5+): [`Record::Expired`]. Other qmgr lines with a queue id
//!   (`from=..., size=..., nrcpt=... (queue active)`, `skipped, still being delivered`) are
//!   Ignored; a qmgr line with a queue id and unknown text is NotUnderstood.
//! - bounce `QID: sender non-delivery notification: NEWQID`, and likewise `sender delivery status`
//!   (DSN SUCCESS), `sender delay`, `postmaster non-delivery` and `postmaster delay` notifications:
//!   [`Record::Notification`]. Other bounce lines with a queue id are NotUnderstood.
//! - pickup `NEWQID: uid=N from=<s> orig_id=OLDQID` (mail requeued with postsuper -r):
//!   [`Record::Requeued`]; without `orig_id=` it is new mail, Ignored; other pickup lines with a
//!   queue id are NotUnderstood.
//! - postsuper `requeued`, `placed on hold`, `released from hold`, `expired`: Ignored (the
//!   outcome follows in other lines); other postsuper lines with a queue id are NotUnderstood.
//!
//! # Sendmail (8.17; idents `sendmail`, `sm-mta` (Debian's daemon), `sm-msp-queue`)
//! Queue ids are 8 to 24 letters and digits (`x9EL4XLo001111`).
//! - `QID: to=<a@x>,<b@y>, [ctladdr=<c> (uid/gid),] delay=HH:MM:SS, xdelay=HH:MM:SS, mailer=M,
//!   pri=N, relay=host. [ip], dsn=X.Y.Z, stat=TEXT`: one [`Record::Delivery`] per recipient.
//!   The recipient list is split at commas outside quotes and brackets. `stat=` is the last field
//!   and takes the rest of the line. The status comes from the dsn class (2 sent, 4 deferred,
//!   5 bounced); without a dsn from the stat text (`Sent...`, `Deferred...`), and a line with
//!   neither (`stat=queued`, `stat=quarantined`: no delivery attempt) is Ignored. The reply is
//!   the text in `Sent (...)`, else the whole stat text (`Deferred: Connection refused by ...`,
//!   `User unknown`). Delays with days read `D+HH:MM:SS`.
//!   A `to=` line that cannot be read (cut, no `stat=`, a bad delay, no `mailer=`, a dsn of another
//!   class) is NotUnderstood.
//! - `QID: to=<a>,<b>, [more], delay=...`: Sendmail splits a long recipient list over several
//!   lines and repeats all fields on each, so each line gives its own recipients' Deliveries.
//! - `QID: NEWQID: DSN: text` (also `return to sender:`, `sender notify:`, `postmaster notify:`):
//!   [`Record::Notification`].
//! - `QID: done; delay=..., ntries=N` (only at LogLevel 10 and above): Sendmail logs it right
//!   after unlinking the queue files, so [`Record::Removed`].
//! - Everything else (`from=`, `NOQUEUE:`, `STARTTLS=`, milter and ruleset lines, `clone:`) is
//!   Ignored.
//!
//! # The next server's queue id
//! Taken from the reply of a sent delivery only, and only in these shapes:
//! `queued as X` (Postfix and many others; in a content filter's nested reply the last one, which
//! is the hop after the filter), Exim's `id=1WUWWi-0000ig-Gu` (and the 4.97+ long form), and
//! Sendmail's `X Message accepted for delivery`; when several appear, the last wins. After
//! `queued as` the id must look like a Postfix queue id or have 6+ characters with a digit.
//! Free-text replies (Gmail, Microsoft, LMTP "Saved") give None, and so does Postfix local's
//! `forwarded as NEWQID`, which names a new message in the same queue, not the next server's.
//!
//! Hosts: `relay_host` drops Sendmail's trailing root dot and address-literal brackets, so
//! `mx.example. [192.0.2.1]` and `mx.example[192.0.2.1]:25` give the same host.

use std::net::IpAddr;
use std::sync::LazyLock;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc,
};
use regex::Regex;

/// Which MTA's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mta {
    Postfix,
    Sendmail,
}

/// A syslog line cut into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogLine<'a> {
    pub time: DateTime<Utc>,
    pub host: &'a str,
    /// The syslog identifier: "postfix/smtp", "postfix/submission/smtpd", "postfix-mx/smtp", "sendmail", "sm-mta".
    pub ident: &'a str,
    pub pid: Option<u32>,
    pub message: &'a str,
}

/// Cuts a line of a syslog file. Two timestamp formats: classic "Nov 29 21:06:33" (no year, in the
/// time zone of `now`; the year is guessed from `now`: a date more than a day ahead of now belongs
/// to the previous year, so December lines read in January land in the right year) and RFC 3339
/// "2026-01-05T13:54:43.262668+01:00" (Debian 12 rsyslog). Also the single-digit day form "Nov  3 ...".
/// None for a line that is not syslog-shaped.
pub fn split_syslog<'a, Tz: TimeZone>(line: &'a str, now: &DateTime<Tz>) -> Option<SyslogLine<'a>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (time, rest) = if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (stamp, rest) = line.split_once(' ')?;
        (parse_iso_stamp(stamp)?, rest)
    } else {
        let (stamp, rest) = split_classic_stamp(line)?;
        (classic_to_utc(&stamp, now)?, rest)
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
        time,
        host,
        ident,
        pid,
        message: message.strip_prefix(' ').unwrap_or(message),
    })
}

/// What a line says about a queued message.
// Most records are deliveries and live only until they are stored: boxing them buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// One delivery attempt for one recipient.
    Delivery(Delivery),
    /// The queue file is gone: Postfix qmgr "QID: removed", postsuper "QID: removed" (and
    /// Sendmail "QID: done; ...", logged only at LogLevel 10+).
    Removed { queue_id: String },
    /// Postfix qmgr "QID: from=<...>, status=expired, returned to sender" (also "force-expired").
    Expired { queue_id: String },
    /// A notification about `queue_id` was queued as `notice` (Postfix bounce "sender non-delivery
    /// notification: NEWQID" / "sender delivery status notification: NEWQID"; Sendmail "QID: NEWQID: DSN: ...").
    Notification { queue_id: String, notice: String },
    /// Postfix pickup "NEWQID: uid=N from=<...> orig_id=OLDQID" (postsuper -r requeue): `queue_id` now carries `original`.
    Requeued { queue_id: String, original: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub queue_id: String,
    /// The recipient as logged (to=), without angle brackets, Postfix's quoting of the local part kept.
    pub recipient: String,
    /// Postfix orig_to=, when logged.
    pub original_recipient: Option<String>,
    /// Who delivered: the Postfix service's last ident component ("smtp", "lmtp", "local", "virtual", "relay", "error", "retry", "discard") or the Sendmail mailer= ("esmtp", "smtp", "relay", "local", ...).
    pub agent: String,
    /// The next hop: host name and IP and port where logged (Postfix "relay=mx.example[192.0.2.1]:25",
    /// "relay=none", "relay=local"; Sendmail "relay=mx.example. [192.0.2.1]", "relay=[127.0.0.1] [127.0.0.1]").
    /// The host without Sendmail's trailing dot or address-literal brackets ("mx.example",
    /// "127.0.0.1"); None for "relay=none" and when no relay is logged.
    pub relay_host: Option<String>,
    pub relay_ip: Option<IpAddr>,
    pub relay_port: Option<u16>,
    /// Total delay in seconds (Postfix delay=, Sendmail delay=HH:MM:SS or D+HH:MM:SS).
    pub delay: Option<f64>,
    /// Postfix delays=a/b/c/d.
    pub delays: Option<[f64; 4]>,
    pub dsn: Option<String>,
    pub status: Status,
    /// The text in parentheses after the status (the next hop's reply, or Postfix's reason), or Sendmail's stat text.
    pub reply: String,
    /// The next server's queue id when its reply carries one: "queued as X" (also nested in content-filter
    /// replies: take the last), Exim "id=X", Sendmail-to-Sendmail "Sent (x9EL4XLo001111 Message accepted for delivery)". Heuristic; None when unsure.
    pub remote_queue_id: Option<String>,
}

/// What a line means for tracking.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// One or more records (Sendmail logs several recipients in one to= field: one Delivery each).
    Records(Vec<Record>),
    /// A line of a process or kind we do not track (connect, client=, cleanup message-id=, TLS lines, warnings, other programs): skip quietly.
    Ignored,
    /// A line that looks like one we track (e.g. a Postfix delivery agent line with "QID: to=" or a qmgr line with a queue id) but could not be parsed: the caller counts these ("lines not understood") and never fails on them.
    NotUnderstood,
}

/// Interprets the message part of a syslog line of `mta`.
pub fn parse(mta: Mta, line: &SyslogLine<'_>) -> Parsed {
    match mta {
        Mta::Postfix => parse_postfix(line.ident, line.message),
        Mta::Sendmail => parse_sendmail(line.ident, line.message),
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The parts of a classic syslog timestamp ("Nov 29 21:06:33").
struct ClassicStamp {
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// Splits a classic timestamp off the front of `line`, returning it and what follows the space
/// after it.
fn split_classic_stamp(line: &str) -> Option<(ClassicStamp, &str)> {
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
    let rest = rest[8..].strip_prefix(' ')?;
    let c = clock.as_bytes();
    if c[2] != b':' || c[5] != b':' {
        return None;
    }
    let two = |at: usize| -> Option<u32> {
        let (a, b) = (c[at], c[at + 1]);
        (a.is_ascii_digit() && b.is_ascii_digit())
            .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
    };
    let stamp = ClassicStamp {
        month: month as u32 + 1,
        day,
        hour: two(0)?,
        minute: two(3)?,
        second: two(6)?,
    };
    Some((stamp, rest))
}

/// Places a classic timestamp in time: in the zone of `now`, in the latest year that does not put
/// it more than a day after `now` (a day of slack for clocks and zones that disagree a little).
fn classic_to_utc<Tz: TimeZone>(stamp: &ClassicStamp, now: &DateTime<Tz>) -> Option<DateTime<Utc>> {
    let latest = now
        .with_timezone(&Utc)
        .checked_add_signed(TimeDelta::days(1))?;
    let zone = now.timezone();
    // Usually this year or the one before; 29 February may need up to 8 years back (1896 to 1904).
    for year in (now.year() - 8..=now.year()).rev() {
        let Some(naive) = NaiveDate::from_ymd_opt(year, stamp.month, stamp.day)
            .and_then(|d| d.and_hms_opt(stamp.hour, stamp.minute, stamp.second))
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

/// RFC 3339 (rsyslog), or journalctl's short-iso with a "+0100" offset.
fn parse_iso_stamp(stamp: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(stamp)
        .or_else(|_| DateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Postfix

/// A tracked line that could not be read.
struct Malformed;

fn parse_postfix(ident: &str, message: &str) -> Parsed {
    let Some((first, service)) = ident.split_once('/') else {
        return Parsed::Ignored;
    };
    if !first.starts_with("postfix") {
        return Parsed::Ignored;
    }
    let service = service.rsplit('/').next().unwrap_or(service);
    let Some((queue_id, rest)) = message.split_once(": ") else {
        return Parsed::Ignored;
    };
    if !is_postfix_queue_id(queue_id) {
        return Parsed::Ignored;
    }
    if let Some(after) = rest.strip_prefix("to=<") {
        return match postfix_delivery(queue_id, service, after) {
            Ok(Some(delivery)) => Parsed::Records(vec![Record::Delivery(delivery)]),
            Ok(None) => Parsed::Ignored,
            Err(Malformed) => Parsed::NotUnderstood,
        };
    }
    let queue_id = queue_id.to_string();
    match service {
        "qmgr" | "nqmgr" | "oqmgr" => {
            if rest == "removed" {
                return records(Record::Removed { queue_id });
            }
            if rest.starts_with("from=<") {
                let expired = [
                    ", status=expired, returned to sender",
                    ", status=force-expired, returned to sender",
                ];
                if expired.iter().any(|e| rest.ends_with(e)) {
                    return records(Record::Expired { queue_id });
                }
                return Parsed::Ignored;
            }
            if rest == "skipped, still being delivered" {
                return Parsed::Ignored;
            }
            Parsed::NotUnderstood
        }
        "postsuper" => match rest {
            "removed" => records(Record::Removed { queue_id }),
            "requeued" | "placed on hold" | "released from hold" | "expired" => Parsed::Ignored,
            _ => Parsed::NotUnderstood,
        },
        "bounce" => {
            const KINDS: [&str; 5] = [
                "sender non-delivery notification: ",
                "sender delivery status notification: ",
                "sender delay notification: ",
                "postmaster non-delivery notification: ",
                "postmaster delay notification: ",
            ];
            match KINDS.iter().find_map(|k| rest.strip_prefix(k)) {
                Some(notice) if is_postfix_queue_id(notice) => records(Record::Notification {
                    queue_id,
                    notice: notice.to_string(),
                }),
                _ => Parsed::NotUnderstood,
            }
        }
        "pickup" => {
            if !rest.starts_with("uid=") {
                return Parsed::NotUnderstood;
            }
            match rest.rsplit_once(" orig_id=") {
                Some((_, original)) if is_postfix_queue_id(original) => records(Record::Requeued {
                    queue_id,
                    original: original.to_string(),
                }),
                Some(_) => Parsed::NotUnderstood,
                None => Parsed::Ignored,
            }
        }
        _ => Parsed::Ignored,
    }
}

fn records(record: Record) -> Parsed {
    Parsed::Records(vec![record])
}

/// Short ids are upper-case hex; long ones (`enable_long_queue_ids`) letters and digits.
fn is_postfix_queue_id(s: &str) -> bool {
    let short = s.len() >= 6
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    let long = s.len() >= 12 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    s.len() <= 32 && (short || long)
}

/// Reads a Postfix delivery line from just after "QID: to=<". Ok(None) for statuses that are no
/// delivery (address verification).
fn postfix_delivery(
    queue_id: &str,
    agent: &str,
    after_to: &str,
) -> Result<Option<Delivery>, Malformed> {
    let (recipient, mut rest) =
        angle_addr(after_to, &[", orig_to=<", ", relay="]).ok_or(Malformed)?;
    let mut original_recipient = None;
    if let Some(after) = rest.strip_prefix(", orig_to=<") {
        let (original, after) = angle_addr(after, &[", relay="]).ok_or(Malformed)?;
        original_recipient = Some(original.to_string());
        rest = after;
    }
    let (mut relay, mut delay, mut delays, mut dsn) = (None, None, None, None);
    let status_text = loop {
        rest = rest.strip_prefix(", ").ok_or(Malformed)?;
        if let Some(status) = rest.strip_prefix("status=") {
            break status;
        }
        // No value before status= holds ", " (relay names, numbers, dsn, tls= summaries).
        let end = rest.find(", ").unwrap_or(rest.len());
        let (key, value) = rest[..end].split_once('=').ok_or(Malformed)?;
        match key {
            "relay" => relay = Some(value),
            "delay" => delay = Some(parse_seconds(value).ok_or(Malformed)?),
            "delays" => delays = Some(parse_delays(value).ok_or(Malformed)?),
            "dsn" => dsn = Some(value.to_string()),
            _ => {}
        }
        rest = &rest[end..];
    };
    // "sent (reply)": the opening parenthesis proves the status word is whole.
    let (word, reason) = status_text.split_once(" (").ok_or(Malformed)?;
    let status = match word {
        "sent" => Status::Sent,
        "deferred" | "SOFTBOUNCE" => Status::Deferred,
        "bounced" => Status::Bounced,
        "deliverable" | "undeliverable" | "undeliverable-but-not-cached" => return Ok(None),
        _ => return Err(Malformed),
    };
    let reason = reason.trim_end();
    let (reply, complete) = match reason.strip_suffix(')') {
        Some(reply) => (reply, true),
        None => (reason, false),
    };
    let (relay_host, relay_ip, relay_port) = relay.map(postfix_relay).unwrap_or_default();
    Ok(Some(Delivery {
        queue_id: queue_id.to_string(),
        recipient: recipient.to_string(),
        original_recipient,
        agent: agent.to_string(),
        relay_host,
        relay_ip,
        relay_port,
        delay,
        delays,
        dsn,
        status,
        reply: reply.to_string(),
        remote_queue_id: (status == Status::Sent && complete)
            .then(|| remote_queue_id(reply))
            .flatten(),
    }))
}

/// Takes an address from just after its '<': returns it and the text after its '>', which must
/// start with one of `followers`.
fn angle_addr<'a>(s: &'a str, followers: &[&str]) -> Option<(&'a str, &'a str)> {
    let b = s.as_bytes();
    // A quoted local part may hold '>' and ", ": skip it before looking for the end.
    let from = skip_quoted(b).unwrap_or(0);
    if let Some(end) = b[from..].iter().position(|&c| c == b'>').map(|p| p + from) {
        let rest = &s[end + 1..];
        if followers.iter().any(|f| rest.starts_with(f)) {
            return Some((&s[..end], rest));
        }
    }
    // Unquoted logging (Postfix < 3.5, info_log_address_format = internal) may leave a '>' in the
    // local part: take the first '>' that the next field follows.
    followers
        .iter()
        .filter_map(|f| s.find(&format!(">{f}")))
        .min()
        .map(|end| (&s[..end], &s[end + 1..]))
}

/// The length of the quoted string at the start of `b` (RFC 5322, backslash escapes), if any.
fn skip_quoted(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Postfix writes delays as plain decimals ("0.01", "2", "142488").
fn parse_seconds(s: &str) -> Option<f64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    s.parse().ok()
}

fn parse_delays(s: &str) -> Option<[f64; 4]> {
    let mut parts = s.split('/');
    let mut out = [0.0; 4];
    for slot in &mut out {
        *slot = parse_seconds(parts.next()?)?;
    }
    parts.next().is_none().then_some(out)
}

/// "mx.example[192.0.2.1]:25", "mx.example[2001:db8::1]:25", "host[private/dovecot-lmtp]"
/// (LMTP over a socket), "none", "local", "dovecot" (pipe).
fn postfix_relay(value: &str) -> (Option<String>, Option<IpAddr>, Option<u16>) {
    if value == "none" || value.is_empty() {
        return (None, None, None);
    }
    let Some((host, inside, after)) = value.split_once('[').and_then(|(host, rest)| {
        rest.split_once(']')
            .map(|(inside, after)| (host, inside, after))
    }) else {
        return (Some(value.to_string()), None, None);
    };
    let ip = parse_ip(inside);
    let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
    let host = if host.is_empty() {
        ip.map(|ip| ip.to_string())
    } else {
        Some(host.to_string())
    };
    (host, ip, port)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    strip_ipv6_tag(s).parse().ok()
}

/// Sendmail writes IPv6 addresses as "IPv6:2001:db8::1".
fn strip_ipv6_tag(s: &str) -> &str {
    match s.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => &s[5..],
        _ => s,
    }
}

// ---------------------------------------------------------------------------------------------
// Sendmail

fn parse_sendmail(ident: &str, message: &str) -> Parsed {
    if !matches!(ident, "sendmail" | "sm-mta" | "sm-msp-queue") {
        return Parsed::Ignored;
    }
    let Some((queue_id, rest)) = message.split_once(": ") else {
        return Parsed::Ignored;
    };
    if !is_sendmail_queue_id(queue_id) {
        return Parsed::Ignored;
    }
    if let Some(after) = rest.strip_prefix("to=") {
        return match sendmail_delivery(queue_id, after) {
            Ok(Some(deliveries)) => {
                Parsed::Records(deliveries.into_iter().map(Record::Delivery).collect())
            }
            Ok(None) => Parsed::Ignored,
            Err(Malformed) => Parsed::NotUnderstood,
        };
    }
    let queue_id = queue_id.to_string();
    if rest.starts_with("done; ") {
        return records(Record::Removed { queue_id });
    }
    if let Some((notice, text)) = rest.split_once(": ") {
        let kind = text.split_once(':').map_or(text, |(kind, _)| kind);
        let kinds = [
            "DSN",
            "return to sender",
            "sender notify",
            "postmaster notify",
        ];
        if is_sendmail_queue_id(notice) && kinds.contains(&kind) {
            return records(Record::Notification {
                queue_id,
                notice: notice.to_string(),
            });
        }
    }
    Parsed::Ignored
}

/// "x9EL4XLo001111": 14 characters with a 5-digit pid, longer with larger pids.
fn is_sendmail_queue_id(s: &str) -> bool {
    (8..=24).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Reads a Sendmail delivery line from just after "QID: to=". Ok(None) for lines that record no
/// delivery attempt.
fn sendmail_delivery(queue_id: &str, after_to: &str) -> Result<Option<Vec<Delivery>>, Malformed> {
    let (list, mut rest) = split_to_list(after_to).ok_or(Malformed)?;
    if rest.is_empty() {
        // "to=<a>,<b>, [more]" alone: the old short-syslog-buffer format, fields on other lines.
        return Ok(None);
    }
    let (mut delay, mut mailer, mut relay, mut dsn) = (None, None, None, None);
    let stat = loop {
        rest = rest.strip_prefix(", ").ok_or(Malformed)?;
        if let Some(stat) = rest.strip_prefix("stat=") {
            break stat.trim_end();
        }
        let end = next_field(rest).unwrap_or(rest.len());
        let (key, value) = rest[..end].split_once('=').ok_or(Malformed)?;
        match key {
            "delay" => delay = Some(parse_sendmail_delay(value).ok_or(Malformed)?),
            "mailer" => mailer = Some(value),
            "relay" => relay = Some(value),
            "dsn" => dsn = Some(value),
            _ => {}
        }
        rest = &rest[end..];
    };
    if stat == "queued" {
        return Ok(None);
    }
    let status = match dsn.and_then(|d| d.bytes().next()) {
        Some(b'2') => Status::Sent,
        Some(b'4') => Status::Deferred,
        Some(b'5') => Status::Bounced,
        _ if stat.starts_with("Sent") => Status::Sent,
        _ if stat.starts_with("Deferred") => Status::Deferred,
        None => return Ok(None),
        Some(_) => return Err(Malformed),
    };
    let agent = mailer.ok_or(Malformed)?;
    let (reply, complete) = match stat.strip_prefix("Sent (") {
        Some(inner) => match inner.strip_suffix(')') {
            Some(inner) => (inner, true),
            None => (inner, false),
        },
        None => (stat, true),
    };
    let remote_queue_id = (status == Status::Sent && complete)
        .then(|| remote_queue_id(reply))
        .flatten();
    let (relay_host, relay_ip) = relay.map(sendmail_relay).unwrap_or_default();
    let deliveries: Vec<Delivery> = split_top_level(list)
        .into_iter()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|recipient| Delivery {
            queue_id: queue_id.to_string(),
            recipient: strip_angles(recipient).to_string(),
            original_recipient: None,
            agent: agent.to_string(),
            relay_host: relay_host.clone(),
            relay_ip,
            relay_port: None,
            delay,
            delays: None,
            dsn: dsn.map(str::to_string),
            status,
            reply: reply.to_string(),
            remote_queue_id: remote_queue_id.clone(),
        })
        .collect();
    if deliveries.is_empty() {
        return Err(Malformed);
    }
    Ok(Some(deliveries))
}

/// Splits "to=" content into the recipient list and the rest (which starts with ", key=").
/// A "[more]" marker after the list's trailing comma is dropped.
fn split_to_list(s: &str) -> Option<(&str, &str)> {
    for comma in top_level_commas(s) {
        let after = &s[comma + 1..];
        if let Some(rest) = after.strip_prefix(" [more]") {
            return Some((&s[..comma], rest));
        }
        if after.strip_prefix(' ').is_some_and(starts_with_key) {
            return Some((&s[..comma], &s[comma..]));
        }
    }
    None
}

/// Where the field at the start of `s` ends: the first top-level ", key=".
fn next_field(s: &str) -> Option<usize> {
    top_level_commas(s).into_iter().find(|&comma| {
        s[comma + 1..]
            .strip_prefix(' ')
            .is_some_and(starts_with_key)
    })
}

fn starts_with_key(s: &str) -> bool {
    let n = s
        .bytes()
        .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
        .count();
    n > 0 && s.as_bytes().get(n) == Some(&b'=')
}

/// The comma positions of `s` outside quoted strings, angle brackets and parentheses: Sendmail
/// joins recipients with bare commas, and an address or a ctladdr comment may hold commas too.
fn top_level_commas(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped, mut depth) = (false, false, 0usize);
    for (i, c) in s.bytes().enumerate() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                quoted = false;
            }
            continue;
        }
        match c {
            b'"' => quoted = true,
            b'<' | b'(' => depth += 1,
            b'>' | b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => out.push(i),
            _ => {}
        }
    }
    out
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for comma in top_level_commas(s) {
        parts.push(&s[start..comma]);
        start = comma + 1;
    }
    parts.push(&s[start..]);
    parts
}

/// "<a@x>" gives "a@x"; "Name <a@x>" gives "a@x"; a bare "user" or "\"|program\"" stays.
fn strip_angles(s: &str) -> &str {
    if let Some(inner) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        return inner;
    }
    match (s.rfind('<'), s.strip_suffix('>')) {
        (Some(open), Some(body)) => &body[open + 1..],
        _ => s,
    }
}

/// "00:00:05", "1+02:03:04" (days+hours:minutes:seconds).
fn parse_sendmail_delay(s: &str) -> Option<f64> {
    let (days, clock) = match s.split_once('+') {
        Some((days, clock)) => (digits(days)?, clock),
        None => (0, s),
    };
    let mut parts = clock.split(':');
    let hours = digits(parts.next()?)?;
    let minutes = digits(parts.next()?)?;
    let seconds = digits(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((days * 86_400 + hours * 3_600 + minutes * 60 + seconds) as f64)
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// "mx.example. [192.0.2.1]", "[127.0.0.1] [127.0.0.1]", "[IPv6:2001:db8::1] [IPv6:2001:db8::1]",
/// or a name alone (no connection made).
fn sendmail_relay(value: &str) -> (Option<String>, Option<IpAddr>) {
    let (name, addr) = match value.split_once(" [") {
        Some((name, rest)) => (name, rest.split_once(']').map(|(addr, _)| addr)),
        None => (value, None),
    };
    let name = name.trim();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .map_or(name, strip_ipv6_tag);
    let name = name.strip_suffix('.').unwrap_or(name);
    let host = (!name.is_empty()).then(|| name.to_string());
    (host, addr.and_then(parse_ip))
}

// ---------------------------------------------------------------------------------------------
// The next server's queue id

static QUEUED_AS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?i:queued as) ([0-9A-Za-z][0-9A-Za-z._-]*)").expect("valid regex")
});
/// Exim ids: "1WUWWi-0000ig-Gu" and, since 4.97, "1rGtKh-000000003pL-0Bt6".
static EXIM_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bid=([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})\b").expect("valid regex")
});
/// Sendmail's "250 2.0.0 x9EL4XLo001111 Message accepted for delivery".
static SENDMAIL_ACCEPTED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b([0-9A-Za-z]{8,24}) Message accepted for delivery").expect("valid regex")
});

/// The next server's queue id in its reply, when it is there in a known shape; the last one
/// wins, so a content filter's nested reply gives the id of the hop after the filter.
fn remote_queue_id(reply: &str) -> Option<String> {
    let mut found: Vec<(usize, &str)> = Vec::new();
    for caps in QUEUED_AS.captures_iter(reply) {
        if let Some(m) = caps.get(1) {
            let id = m.as_str().trim_end_matches(['.', '-', '_']);
            // "queued as soon as possible" is no id: want a Postfix-shaped id, or 6+ characters
            // with a digit.
            if is_postfix_queue_id(id) || (id.len() >= 6 && id.bytes().any(|b| b.is_ascii_digit()))
            {
                found.push((m.start(), id));
            }
        }
    }
    for re in [&*EXIM_ID, &*SENDMAIL_ACCEPTED] {
        for caps in re.captures_iter(reply) {
            if let Some(m) = caps.get(1) {
                found.push((m.start(), m.as_str()));
            }
        }
    }
    found
        .into_iter()
        .max_by_key(|&(at, _)| at)
        .map(|(_, id)| id.to_string())
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

    fn run(mta: Mta, line: &str) -> Parsed {
        let split = split_syslog(line, &now()).expect("syslog-shaped");
        parse(mta, &split)
    }

    fn one_delivery(mta: Mta, line: &str) -> Delivery {
        match run(mta, line) {
            Parsed::Records(r) if r.len() == 1 => match &r[0] {
                Record::Delivery(d) => d.clone(),
                other => panic!("not a delivery: {other:?}"),
            },
            other => panic!("not one record: {other:?}"),
        }
    }

    fn deliveries(mta: Mta, line: &str) -> Vec<Delivery> {
        match run(mta, line) {
            Parsed::Records(r) => r
                .into_iter()
                .map(|r| match r {
                    Record::Delivery(d) => d,
                    other => panic!("not a delivery: {other:?}"),
                })
                .collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    fn one_record(mta: Mta, line: &str) -> Record {
        match run(mta, line) {
            Parsed::Records(mut r) if r.len() == 1 => r.remove(0),
            other => panic!("not one record: {other:?}"),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    // ---- syslog framing ----

    #[test]
    fn classic_line_is_split_in_the_zone_of_now() {
        let l = split_syslog(
            "Nov 29 21:06:33 mx postfix/smtp[24393]: 3B3AE9AC053: removed",
            &now(),
        )
        .unwrap();
        assert_eq!(l.time, utc(2026, 11, 29, 20, 6, 33));
        assert_eq!(l.host, "mx");
        assert_eq!(l.ident, "postfix/smtp");
        assert_eq!(l.pid, Some(24393));
        assert_eq!(l.message, "3B3AE9AC053: removed");
    }

    #[test]
    fn rfc3339_line_is_split() {
        let l = split_syslog(
            "2026-01-05T13:54:43.262668+01:00 mail postfix/qmgr[3663]: 3B3AE9AC053: removed\n",
            &now(),
        )
        .unwrap();
        assert_eq!(
            l.time,
            utc(2026, 1, 5, 12, 54, 43) + TimeDelta::microseconds(262_668)
        );
        assert_eq!(l.host, "mail");
        assert_eq!(l.ident, "postfix/qmgr");
        assert_eq!(l.message, "3B3AE9AC053: removed");
    }

    #[test]
    fn short_iso_offset_without_colon_is_read() {
        let l = split_syslog("2026-01-05T13:54:43+0100 mail sm-mta[1]: x", &now()).unwrap();
        assert_eq!(l.time, utc(2026, 1, 5, 12, 54, 43));
    }

    #[test]
    fn single_digit_day_forms() {
        for line in [
            "Nov  3 01:02:03 mx postfix/smtp[1]: m",
            "Nov 3 01:02:03 mx postfix/smtp[1]: m",
            "Nov 03 01:02:03 mx postfix/smtp[1]: m",
        ] {
            let l = split_syslog(line, &now()).unwrap();
            assert_eq!(l.time, utc(2026, 11, 3, 0, 2, 3), "{line}");
            assert_eq!(l.message, "m");
        }
    }

    #[test]
    fn december_lines_read_in_january_belong_to_last_year() {
        let jan = Utc.with_ymd_and_hms(2026, 1, 2, 0, 30, 0).unwrap();
        let dec = split_syslog("Dec 31 23:59:59 mx postfix/smtp[1]: m", &jan).unwrap();
        assert_eq!(dec.time, utc(2025, 12, 31, 23, 59, 59));
        let new_year = split_syslog("Jan  1 00:00:01 mx postfix/smtp[1]: m", &jan).unwrap();
        assert_eq!(new_year.time, utc(2026, 1, 1, 0, 0, 1));
    }

    #[test]
    fn a_day_of_slack_before_the_year_goes_back() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        let soon = split_syslog("Mar 11 11:00:00 mx postfix/smtp[1]: m", &now).unwrap();
        assert_eq!(soon.time, utc(2026, 3, 11, 11, 0, 0));
        let too_far = split_syslog("Mar 11 13:00:00 mx postfix/smtp[1]: m", &now).unwrap();
        assert_eq!(too_far.time, utc(2025, 3, 11, 13, 0, 0));
    }

    #[test]
    fn february_29_goes_back_to_a_leap_year() {
        let now = Utc.with_ymd_and_hms(2027, 3, 1, 0, 0, 0).unwrap();
        let l = split_syslog("Feb 29 10:00:00 mx postfix/smtp[1]: m", &now).unwrap();
        assert_eq!(l.time, utc(2024, 2, 29, 10, 0, 0));
    }

    #[test]
    fn ident_without_pid() {
        let l = split_syslog("Nov 29 21:06:33 mx sendmail: hello: there", &now()).unwrap();
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
            assert_eq!(split_syslog(line, &now()), None, "{line:?}");
        }
    }

    // ---- Postfix deliveries ----

    #[test]
    fn postfix_sent_real_line() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[24393]: 3B3AE9AC053: to=<b@remote.example>, relay=127.0.0.1[127.0.0.1]:25302, delay=0.01, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        );
        assert_eq!(
            d,
            Delivery {
                queue_id: "3B3AE9AC053".into(),
                recipient: "b@remote.example".into(),
                original_recipient: None,
                agent: "smtp".into(),
                relay_host: Some("127.0.0.1".into()),
                relay_ip: ip("127.0.0.1"),
                relay_port: Some(25302),
                delay: Some(0.01),
                delays: Some([0.01, 0.01, 0.0, 0.0]),
                dsn: Some("2.0.0".into()),
                status: Status::Sent,
                reply: "250 2.0.0 Ok".into(),
                remote_queue_id: None,
            }
        );
    }

    #[test]
    fn postfix_queued_as_long_id_real_line() {
        let d = one_delivery(
            Mta::Postfix,
            "Dec 26 18:46:01 mail postfix/smtp[12651]: B6CFE52606B3: to=<someoneelse@them.tld>, relay=asuperserver.tld[1.2.3.4]:25, delay=2, delays=0.24/0.04/0.35/1.4, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)",
        );
        assert_eq!(d.queue_id, "B6CFE52606B3");
        assert_eq!(d.relay_host.as_deref(), Some("asuperserver.tld"));
        assert_eq!(d.relay_ip, ip("1.2.3.4"));
        assert_eq!(d.delay, Some(2.0));
        assert_eq!(d.delays, Some([0.24, 0.04, 0.35, 1.4]));
        assert_eq!(d.remote_queue_id.as_deref(), Some("4T02Hr4S5hz9vf6k"));
    }

    #[test]
    fn postfix_quoted_local_part_and_orig_to() {
        let d = one_delivery(
            Mta::Postfix,
            r#"Nov 29 21:06:33 mx postfix/smtp[1]: 3Pt2mN2VXxznjll: to=<"john doe"@example.org>, orig_to=<"doe, john>"@example.org>, relay=mx.example.org[192.0.2.10]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 3B3AE9AC099)"#,
        );
        assert_eq!(d.queue_id, "3Pt2mN2VXxznjll");
        assert_eq!(d.recipient, r#""john doe"@example.org"#);
        assert_eq!(
            d.original_recipient.as_deref(),
            Some(r#""doe, john>"@example.org"#)
        );
        assert_eq!(d.relay_host.as_deref(), Some("mx.example.org"));
        assert_eq!(d.remote_queue_id.as_deref(), Some("3B3AE9AC099"));
    }

    #[test]
    fn a_quoted_local_part_cannot_forge_fields() {
        let d = one_delivery(
            Mta::Postfix,
            r#"Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<"x>, relay=evil[192.0.2.66]:25, status=sent (\" y"@example.org>, relay=mx.example.org[192.0.2.10]:25, delay=1, delays=0/0/0/1, dsn=4.2.0, status=deferred (450 try later)"#,
        );
        assert_eq!(
            d.recipient,
            r#""x>, relay=evil[192.0.2.66]:25, status=sent (\" y"@example.org"#
        );
        assert_eq!(d.relay_ip, ip("192.0.2.10"));
        assert_eq!(d.status, Status::Deferred);
    }

    #[test]
    fn postfix_unquoted_local_part_with_angle_bracket() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<a>b@example.org>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (x)",
        );
        assert_eq!(d.recipient, "a>b@example.org");
        assert_eq!(d.status, Status::Deferred);
    }

    #[test]
    fn postfix_bounce_reply_with_commas_and_nested_parentheses() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[203.0.113.5]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=5.1.1, status=bounced (host mx.example.org[203.0.113.5] said: 550 5.1.1 <x@example.org>: Recipient address rejected: User unknown, sorry (in reply to RCPT TO command))",
        );
        assert_eq!(d.status, Status::Bounced);
        assert_eq!(d.dsn.as_deref(), Some("5.1.1"));
        assert_eq!(
            d.reply,
            "host mx.example.org[203.0.113.5] said: 550 5.1.1 <x@example.org>: Recipient address rejected: User unknown, sorry (in reply to RCPT TO command)"
        );
        assert_eq!(d.remote_queue_id, None);
    }

    #[test]
    fn postfix_content_filter_nested_reply_takes_the_last_id() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix-mx/content-filter/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=127.0.0.1[127.0.0.1]:10024, delay=0.9, delays=0.1/0/0/0.8, dsn=2.0.0, status=sent (250 2.0.0 Ok, id=12345-01, from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)",
        );
        assert_eq!(d.agent, "smtp");
        assert_eq!(d.relay_port, Some(10024));
        assert_eq!(d.remote_queue_id.as_deref(), Some("4T02Hr4S5hz9vf6k"));
    }

    #[test]
    fn postfix_to_exim_id() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[198.51.100.7]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 OK id=1WUWWi-0000ig-Gu)",
        );
        assert_eq!(d.remote_queue_id.as_deref(), Some("1WUWWi-0000ig-Gu"));
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[198.51.100.7]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 OK id=1rGtKh-000000003pL-0Bt6)",
        );
        assert_eq!(
            d.remote_queue_id.as_deref(),
            Some("1rGtKh-000000003pL-0Bt6")
        );
    }

    #[test]
    fn postfix_to_sendmail_accepted() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[198.51.100.7]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 x9EL4XLo001111 Message accepted for delivery)",
        );
        assert_eq!(d.remote_queue_id.as_deref(), Some("x9EL4XLo001111"));
    }

    #[test]
    fn free_text_replies_give_no_remote_id() {
        for reply in [
            "250 2.0.0 OK  1700000000 d2e1a72fcca58-6c5si12345.678 - gsmtp",
            "250 2.0.0 Ok: queued as soon as possible",
            "250 2.6.0 <m@example.org> [InternalId=123, Hostname=X] Queued mail for delivery",
            "250 2.0.0 Ok",
        ] {
            assert_eq!(remote_queue_id(reply), None, "{reply}");
        }
        // Several ids: the last is the hop furthest along.
        assert_eq!(
            remote_queue_id(
                "250 2.0.0 Ok: queued as 3B3AE9AC053 (relayed: 250 OK id=1WUWWi-0000ig-Gu)"
            ),
            Some("1WUWWi-0000ig-Gu".into())
        );
        assert_eq!(
            remote_queue_id(
                "250 Ok: queued as 3B3AE9AC053; then: 250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k"
            ),
            Some("4T02Hr4S5hz9vf6k".into())
        );
        assert_eq!(
            remote_queue_id("250 2.0.0 Ok: queued as BACE842E72."),
            Some("BACE842E72".into())
        );
    }

    #[test]
    fn postfix_relay_none_deferral_with_address_in_reply() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/error[7]: 3B3AE9AC053: to=<x@example.org>, relay=none, delay=3600, delays=3599/1/0/0, dsn=4.4.1, status=deferred (delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: Connection refused)",
        );
        assert_eq!(d.agent, "error");
        assert_eq!(d.relay_host, None);
        assert_eq!(d.relay_ip, None);
        assert_eq!(d.relay_port, None);
        assert_eq!(d.status, Status::Deferred);
        assert_eq!(
            d.reply,
            "delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: Connection refused"
        );
    }

    #[test]
    fn postfix_ipv6_relay_and_conn_use() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example[2001:db8::1]:25, conn_use=3, delay=0.3, delays=0/0/0/0.3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 3B3AE9AC0AA)",
        );
        assert_eq!(d.relay_host.as_deref(), Some("mx.example"));
        assert_eq!(d.relay_ip, ip("2001:db8::1"));
        assert_eq!(d.relay_port, Some(25));
        assert_eq!(d.delay, Some(0.3));
        assert_eq!(d.remote_queue_id.as_deref(), Some("3B3AE9AC0AA"));
    }

    #[test]
    fn postfix_local_lmtp_and_unknown_fields() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/local[1]: 3B3AE9AC053: to=<u@example.org>, orig_to=<alias@example.org>, relay=local, delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, status=sent (delivered to mailbox)",
        );
        assert_eq!(d.agent, "local");
        assert_eq!(d.relay_host.as_deref(), Some("local"));
        assert_eq!(d.original_recipient.as_deref(), Some("alias@example.org"));
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/lmtp[1]: 3B3AE9AC053: to=<u@example.org>, relay=mail.example.org[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, tls=!REQUIRETLS, dsn=2.0.0, status=sent (250 2.0.0 <u@example.org> 8Kq0Ku5RZ2W3XgAAq4jfBQ Saved)",
        );
        assert_eq!(d.agent, "lmtp");
        assert_eq!(d.relay_host.as_deref(), Some("mail.example.org"));
        assert_eq!(d.relay_ip, None);
        assert_eq!(d.dsn.as_deref(), Some("2.0.0"));
        assert_eq!(d.remote_queue_id, None);
    }

    #[test]
    fn postfix_softbounce_is_a_deferral_and_probes_are_ignored() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=4.1.1, status=SOFTBOUNCE (host mx.example.org[192.0.2.1] said: 550 5.1.1 unknown (in reply to RCPT TO command))",
        );
        assert_eq!(d.status, Status::Deferred);
        for word in [
            "deliverable",
            "undeliverable",
            "undeliverable-but-not-cached",
        ] {
            let line = format!("Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.1.5, status={word} (250 2.1.5 Ok)");
            assert_eq!(run(Mta::Postfix, &line), Parsed::Ignored, "{word}");
        }
        let odd = "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=none, delay=1, delays=0/0/0/1, dsn=2.0.0, status=teleported (x)";
        assert_eq!(run(Mta::Postfix, odd), Parsed::NotUnderstood);
    }

    #[test]
    fn truncated_postfix_lines() {
        let full = "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)";
        for cut in [60, 80, 100, 140, full.find("status=sent").unwrap() + 9] {
            assert_eq!(
                run(Mta::Postfix, &full[..cut]),
                Parsed::NotUnderstood,
                "{}",
                &full[..cut]
            );
        }
        // Cut inside the reply: the delivery stands, but a cut id is no id.
        let d = one_delivery(Mta::Postfix, &full[..full.len() - 5]);
        assert_eq!(d.status, Status::Sent);
        assert_eq!(d.reply, "250 2.0.0 Ok: queued as 4T02Hr4S5hz9");
        assert_eq!(d.remote_queue_id, None);
        let bad_delay = full.replace("delay=1,", "delay=inf,");
        assert_eq!(run(Mta::Postfix, &bad_delay), Parsed::NotUnderstood);
    }

    #[test]
    fn non_ascii_text_is_kept() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<jörg@exämple.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.7.1, status=bounced (host mx.example.org[192.0.2.1] said: 550 5.7.1 Zurückgewiesen \u{fffd}\u{fffd} (in reply to end of DATA command))",
        );
        assert_eq!(d.recipient, "jörg@exämple.org");
        assert!(d.reply.contains("Zurückgewiesen \u{fffd}\u{fffd}"));
        let lossy = String::from_utf8_lossy(
            b"Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<\xff\xfe@x>, relay=n\xc3",
        );
        assert_eq!(run(Mta::Postfix, &lossy), Parsed::NotUnderstood);
    }

    #[test]
    fn postfix_syslog_name_variants() {
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix-mx/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        );
        assert_eq!(d.agent, "smtp");
        let l = split_syslog(
            "Nov 29 21:06:33 mx postfix/submission/smtpd[2]: 3B3AE9AC053: client=c.example.org[192.0.2.9]",
            &now(),
        )
        .unwrap();
        assert_eq!(l.ident, "postfix/submission/smtpd");
        assert_eq!(parse(Mta::Postfix, &l), Parsed::Ignored);
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix-mx/qmgr[2]: 3B3AE9AC053: removed"
            ),
            Parsed::Records(vec![Record::Removed {
                queue_id: "3B3AE9AC053".into()
            }])
        );
    }

    // ---- Postfix queue events ----

    #[test]
    fn postfix_removed_by_qmgr_and_postsuper() {
        for line in [
            "Nov 29 21:06:33 mx postfix/qmgr[24385]: 3B3AE9AC053: removed",
            "Nov 29 21:06:33 mx postfix/postsuper[9]: 3B3AE9AC053: removed",
            "Nov 29 21:06:33 mx postfix/oqmgr[24385]: 3B3AE9AC053: removed",
        ] {
            assert_eq!(
                one_record(Mta::Postfix, line),
                Record::Removed {
                    queue_id: "3B3AE9AC053".into()
                }
            );
        }
        for other in [
            "requeued",
            "placed on hold",
            "released from hold",
            "expired",
        ] {
            let line = format!("Nov 29 21:06:33 mx postfix/postsuper[9]: 3B3AE9AC053: {other}");
            assert_eq!(run(Mta::Postfix, &line), Parsed::Ignored, "{other}");
        }
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/postsuper[9]: Deleted: 3 messages"
            ),
            Parsed::Ignored
        );
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/postsuper[9]: 3B3AE9AC053: vanished"
            ),
            Parsed::NotUnderstood
        );
    }

    #[test]
    fn postfix_expired_real_line_and_force_expired() {
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Apr 10 14:50:16 mail postfix/qmgr[3663]: BACE842E72: from=<noreply@domain.com>, status=expired, returned to sender"
            ),
            Record::Expired {
                queue_id: "BACE842E72".into()
            }
        );
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Apr 10 14:50:16 mail postfix/qmgr[3663]: 3Pt2mN2VXxznjll: from=<>, status=force-expired, returned to sender"
            ),
            Record::Expired {
                queue_id: "3Pt2mN2VXxznjll".into()
            }
        );
    }

    #[test]
    fn other_qmgr_lines() {
        assert_eq!(
            run(Mta::Postfix, "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: from=<a@example.org>, size=1234, nrcpt=1 (queue active)"),
            Parsed::Ignored
        );
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: skipped, still being delivered"
            ),
            Parsed::Ignored
        );
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: teleported"
            ),
            Parsed::NotUnderstood
        );
        // qmgr's own deferral for a dead destination is a delivery record.
        let d = one_delivery(
            Mta::Postfix,
            "Nov 29 21:06:33 mx postfix/qmgr[1]: 3B3AE9AC053: to=<x@example.org>, relay=none, delay=12, delays=12/0/0/0, dsn=4.4.1, status=deferred (delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: Connection timed out)",
        );
        assert_eq!(d.agent, "qmgr");
    }

    #[test]
    fn postfix_bounce_notifications() {
        for kind in [
            "sender non-delivery",
            "sender delivery status",
            "sender delay",
            "postmaster non-delivery",
        ] {
            let line = format!(
                "Nov 29 21:06:33 mx postfix/bounce[5]: 3B3AE9AC053: {kind} notification: 4T02Hr4S5hz9vf6k"
            );
            assert_eq!(
                one_record(Mta::Postfix, &line),
                Record::Notification {
                    queue_id: "3B3AE9AC053".into(),
                    notice: "4T02Hr4S5hz9vf6k".into()
                },
                "{kind}"
            );
        }
        assert_eq!(
            run(Mta::Postfix, "Nov 29 21:06:33 mx postfix/bounce[5]: 3B3AE9AC053: sender non-delivery notification: ?"),
            Parsed::NotUnderstood
        );
    }

    #[test]
    fn postfix_pickup_requeue() {
        assert_eq!(
            one_record(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/pickup[8]: 4T02Hr4S5hz9vf6k: uid=0 from=<a@example.org> orig_id=3B3AE9AC053"
            ),
            Record::Requeued {
                queue_id: "4T02Hr4S5hz9vf6k".into(),
                original: "3B3AE9AC053".into()
            }
        );
        assert_eq!(
            run(
                Mta::Postfix,
                "Nov 29 21:06:33 mx postfix/pickup[8]: 3B3AE9AC053: uid=1000 from=<a@example.org>"
            ),
            Parsed::Ignored
        );
    }

    #[test]
    fn postfix_lines_we_do_not_track() {
        for line in [
            "Nov 29 21:06:33 mx postfix/smtpd[2]: NOQUEUE: reject: RCPT from c.example.org[192.0.2.9]: 554 5.7.1 <x@example.org>: Relay access denied; from=<a@example.org> to=<x@example.org> proto=ESMTP helo=<c>",
            "Nov 29 21:06:33 mx postfix/smtpd[2]: connect from c.example.org[192.0.2.9]",
            "Nov 29 21:06:33 mx postfix/cleanup[3]: 3B3AE9AC053: message-id=<1@example.org>",
            "Nov 29 21:06:33 mx postfix/smtp[1]: warning: 3B3AE9AC053: something",
            "Nov 29 21:06:33 mx postfix/smtp[1]: Trusted TLS connection established to mx.example.org[192.0.2.1]:25: TLSv1.3",
            "Nov 29 21:06:33 mx postfixadmin[1]: 3B3AE9AC053: removed",
            "Nov 29 21:06:33 mx dovecot: imap-login: Login: user=<u@example.org>",
            "Nov 29 21:06:33 mx CRON[77]: (root) CMD (true)",
            "Nov 29 21:06:33 mx sendmail[1]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, mailer=esmtp, pri=1, dsn=2.0.0, stat=Sent",
        ] {
            assert_eq!(run(Mta::Postfix, line), Parsed::Ignored, "{line}");
        }
    }

    // ---- Sendmail ----

    #[test]
    fn sendmail_real_line() {
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sendmail[1131]: x9EL4XLo001111: to=<...>, ctladdr=<...> (960/100), delay=00:00:05, xdelay=00:00:01, mailer=esmtp, pri=402603, relay=mx.core.locaweb.com.br. [177.153.23.241], dsn=2.0.0, stat=Sent (Ok: queued as 46sWK42Z5gz1F)",
        );
        assert_eq!(
            d,
            Delivery {
                queue_id: "x9EL4XLo001111".into(),
                recipient: "...".into(),
                original_recipient: None,
                agent: "esmtp".into(),
                relay_host: Some("mx.core.locaweb.com.br".into()),
                relay_ip: ip("177.153.23.241"),
                relay_port: None,
                delay: Some(5.0),
                delays: None,
                dsn: Some("2.0.0".into()),
                status: Status::Sent,
                reply: "Ok: queued as 46sWK42Z5gz1F".into(),
                remote_queue_id: Some("46sWK42Z5gz1F".into()),
            }
        );
    }

    #[test]
    fn sendmail_several_recipients_and_sendmail_reply() {
        let ds = deliveries(
            Mta::Sendmail,
            r#"Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<a@example.org>,"Doe, J" <j@example.org>,<b@example.org>, ctladdr=<u@example.org> (1000/1000), delay=1+02:03:04, xdelay=00:00:01, mailer=esmtp, tls_verify=OK, pri=120, relay=mx.example.org. [198.51.100.3], dsn=2.0.0, stat=Sent (x9EL4XLp002222 Message accepted for delivery)"#,
        );
        let rcpts: Vec<_> = ds.iter().map(|d| d.recipient.as_str()).collect();
        assert_eq!(rcpts, ["a@example.org", "j@example.org", "b@example.org"]);
        for d in &ds {
            assert_eq!(d.agent, "esmtp");
            assert_eq!(d.delay, Some(93_784.0));
            assert_eq!(d.remote_queue_id.as_deref(), Some("x9EL4XLp002222"));
            assert_eq!(d.relay_ip, ip("198.51.100.3"));
        }
    }

    #[test]
    fn sendmail_deferral_and_bounces() {
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:10:00, xdelay=00:00:30, mailer=esmtp, pri=30, relay=mx.example.org., dsn=4.0.0, stat=Deferred: Connection refused by mx.example.org.",
        );
        assert_eq!(d.status, Status::Deferred);
        assert_eq!(d.reply, "Deferred: Connection refused by mx.example.org.");
        assert_eq!(d.relay_host.as_deref(), Some("mx.example.org"));
        assert_eq!(d.relay_ip, None);
        for stat in ["User unknown", "Service unavailable"] {
            let line = format!("Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30, relay=mx.example.org. [203.0.113.8], dsn=5.1.1, stat={stat}");
            let d = one_delivery(Mta::Sendmail, &line);
            assert_eq!(d.status, Status::Bounced);
            assert_eq!(d.reply, stat);
            assert_eq!(d.remote_queue_id, None);
        }
    }

    #[test]
    fn sendmail_local_and_loopback_relays() {
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sm-msp-queue[7]: x9EL4XLo001111: to=root, ctladdr=root (0/0), delay=00:00:00, xdelay=00:00:00, mailer=relay, pri=30, relay=[127.0.0.1] [127.0.0.1], dsn=2.0.0, stat=Sent (x9EL4XLo001112 Message accepted for delivery)",
        );
        assert_eq!(d.recipient, "root");
        assert_eq!(d.agent, "relay");
        assert_eq!(d.relay_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(d.relay_ip, ip("127.0.0.1"));
        assert_eq!(d.remote_queue_id.as_deref(), Some("x9EL4XLo001112"));
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30, relay=mx.example. [IPv6:2001:db8::1], dsn=2.0.0, stat=Sent (ok)",
        );
        assert_eq!(d.relay_ip, ip("2001:db8::1"));
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=u, delay=00:00:00, xdelay=00:00:00, mailer=local, pri=30, dsn=2.0.0, stat=Sent",
        );
        assert_eq!((d.agent.as_str(), d.reply.as_str()), ("local", "Sent"));
        assert_eq!(d.relay_host, None);
    }

    #[test]
    fn sendmail_more_continuation() {
        let fields = ", delay=00:00:02, xdelay=00:00:02, mailer=esmtp, pri=1, relay=mx.example.org. [192.0.2.3], dsn=2.0.0, stat=Sent (Ok: queued as 3B3AE9AC053)";
        let first = format!("Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<a@example.org>,<b@example.org>, [more]{fields}");
        let last =
            format!("Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<c@example.org>{fields}");
        let a: Vec<_> = deliveries(Mta::Sendmail, &first)
            .into_iter()
            .map(|d| (d.recipient, d.remote_queue_id))
            .collect();
        let id = Some("3B3AE9AC053".to_string());
        assert_eq!(
            a,
            [
                ("a@example.org".to_string(), id.clone()),
                ("b@example.org".to_string(), id.clone())
            ]
        );
        assert_eq!(
            deliveries(Mta::Sendmail, &last)[0].recipient,
            "c@example.org"
        );
        assert_eq!(
            run(Mta::Sendmail, "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>,<b@example.org>, [more]"),
            Parsed::Ignored
        );
    }

    #[test]
    fn sendmail_lines_without_a_delivery_attempt() {
        for line in [
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:00, mailer=esmtp, pri=30, stat=queued",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:00, mailer=esmtp, pri=30, dsn=4.0.0, stat=queued",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:00, mailer=esmtp, pri=30, quarantine=held, stat=quarantined",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: from=<a@example.org>, size=100, class=0, nrcpts=1, msgid=<1@example.org>, proto=ESMTP, daemon=MTA, relay=c.example.org [192.0.2.9]",
            "Nov 29 21:06:33 mx sendmail[7]: NOQUEUE: connect from c.example.org [192.0.2.9]",
            "Nov 29 21:06:33 mx sendmail[7]: STARTTLS=client, relay=mx.example.org., version=TLSv1.3, verify=OK",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: Milter: data, reject=550 5.7.1 no",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: x9EL4XLo001112: clone: owner=owner-list@example.org",
            "Nov 29 21:06:33 mx postfix/smtp[1]: 3B3AE9AC053: to=<x@example.org>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (x)",
        ] {
            assert_eq!(run(Mta::Sendmail, line), Parsed::Ignored, "{line}");
        }
        // Without a dsn the stat text still tells a sent or deferred attempt.
        let d = one_delivery(
            Mta::Sendmail,
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:09, mailer=esmtp, pri=30, relay=mx.example.org., stat=Deferred: Name server: mx.example.org.: host name lookup failure",
        );
        assert_eq!((d.status, d.dsn), (Status::Deferred, None));
    }

    #[test]
    fn sendmail_notifications_and_done() {
        for kind in [
            "DSN",
            "return to sender",
            "sender notify",
            "postmaster notify",
        ] {
            let line = format!("Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: x9EL4XLp002222: {kind}: Service unavailable");
            assert_eq!(
                one_record(Mta::Sendmail, &line),
                Record::Notification {
                    queue_id: "x9EL4XLo001111".into(),
                    notice: "x9EL4XLp002222".into()
                },
                "{kind}"
            );
        }
        assert_eq!(
            one_record(
                Mta::Sendmail,
                "Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: done; delay=00:05:00, ntries=3"
            ),
            Record::Removed {
                queue_id: "x9EL4XLo001111".into()
            }
        );
    }

    #[test]
    fn broken_sendmail_delivery_lines() {
        for line in [
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, mailer=esmtp, pri=30, rel",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=xx:00:01, mailer=esmtp, dsn=2.0.0, stat=Sent",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, dsn=2.0.0, stat=Sent",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=<a@example.org>, delay=00:00:01, mailer=esmtp, dsn=3.0.0, stat=Odd",
            "Nov 29 21:06:33 mx sendmail[7]: x9EL4XLo001111: to=, , delay=00:00:01, mailer=esmtp, dsn=2.0.0, stat=Sent",
        ] {
            assert_eq!(run(Mta::Sendmail, line), Parsed::NotUnderstood, "{line}");
        }
    }

    // ---- properties ----

    mod props {
        use super::*;
        use proptest::prelude::*;

        const REAL: [&str; 8] = [
            "Nov 29 21:06:33 mx postfix/smtp[24393]: 3B3AE9AC053: to=<b@remote.example>, relay=127.0.0.1[127.0.0.1]:25302, delay=0.01, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
            "Nov 29 21:06:33 mx postfix/qmgr[24385]: 3B3AE9AC053: removed",
            "Dec 26 18:46:01 mail postfix/smtp[12651]: B6CFE52606B3: to=<someoneelse@them.tld>, relay=asuperserver.tld[1.2.3.4]:25, delay=2, delays=0.24/0.04/0.35/1.4, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)",
            "Apr 10 14:50:16 mail postfix/qmgr[3663]: BACE842E72: from=<noreply@domain.com>, status=expired, returned to sender",
            "2026-01-05T13:54:43.262668+01:00 mx sendmail[1131]: x9EL4XLo001111: to=<...>, ctladdr=<...> (960/100), delay=00:00:05, xdelay=00:00:01, mailer=esmtp, pri=402603, relay=mx.core.locaweb.com.br. [177.153.23.241], dsn=2.0.0, stat=Sent (Ok: queued as 46sWK42Z5gz1F)",
            r#"Nov  3 01:02:03 mx postfix/smtp[1]: 3Pt2mN2VXxznjll: to=<"john doe"@example.org>, orig_to=<"doe, john>"@example.org>, relay=mx.example[2001:db8::1]:25, conn_use=2, delay=1.2, delays=0.1/0/0.5/0.6, dsn=5.1.1, status=bounced (host mx.example[2001:db8::1] said: 550 5.1.1 <x@y>: Recipient address rejected: User unknown (in reply to RCPT TO command))"#,
            r#"Nov 29 21:06:33 mx sm-mta[7]: x9EL4XLo001111: to=<a@example.org>,"Doe, J" <j@example.org>, [more], delay=1+02:03:04, mailer=esmtp, pri=1, relay=[127.0.0.1] [127.0.0.1], dsn=4.0.0, stat=Deferred: Connection refused by [127.0.0.1]"#,
            "Nov 29 21:06:33 mx postfix/bounce[5]: 3B3AE9AC053: sender non-delivery notification: 4T02Hr4S5hz9vf6k",
        ];

        /// Whatever a line gives must come from it: ids, recipients and replies are cut out of
        /// the message, never made up.
        fn check_parsed(l: &SyslogLine<'_>) {
            for mta in [Mta::Postfix, Mta::Sendmail] {
                let Parsed::Records(records) = parse(mta, l) else {
                    continue;
                };
                assert!(!records.is_empty());
                for r in records {
                    let ids = match &r {
                        Record::Delivery(d) => {
                            assert!(l.message.contains(&d.recipient), "{d:?}");
                            assert!(l.message.contains(&d.reply), "{d:?}");
                            vec![&d.queue_id]
                        }
                        Record::Removed { queue_id } | Record::Expired { queue_id } => {
                            vec![queue_id]
                        }
                        Record::Notification { queue_id, notice } => vec![queue_id, notice],
                        Record::Requeued { queue_id, original } => vec![queue_id, original],
                    };
                    for id in ids {
                        assert!(!id.is_empty() && l.message.contains(id.as_str()), "{r:?}");
                    }
                }
            }
        }

        fn parse_all(line: &str) {
            if let Some(l) = split_syslog(line, &now()) {
                assert!(line.contains(l.host) && line.contains(l.ident));
                assert!(line.contains(l.message));
                check_parsed(&l);
            }
            let jan = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let _ = split_syslog(line, &jan);
        }

        #[derive(Debug, Clone)]
        enum Edit {
            Cut(usize),
            Insert(usize, char),
            Delete(usize, usize),
            Replace(usize, char),
        }

        fn edit() -> impl Strategy<Value = Edit> {
            let c = prop_oneof![
                proptest::char::range(' ', '~'),
                Just('<'),
                Just('>'),
                Just('('),
                Just(')'),
                Just('"'),
                Just('\\'),
                Just(','),
                Just(':'),
                Just('['),
                Just(']'),
                Just('é'),
                Just('\u{fffd}'),
            ];
            prop_oneof![
                any::<usize>().prop_map(Edit::Cut),
                (any::<usize>(), c.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
                (any::<usize>(), 0usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
                (any::<usize>(), c).prop_map(|(i, c)| Edit::Replace(i, c)),
            ]
        }

        fn apply(line: &str, edits: &[Edit]) -> String {
            let mut chars: Vec<char> = line.chars().collect();
            for e in edits {
                let n = chars.len();
                match *e {
                    Edit::Cut(i) => chars.truncate(i % (n + 1)),
                    Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
                    Edit::Delete(i, k) => {
                        let at = i % (n + 1);
                        chars.drain(at..(at + k).min(n));
                    }
                    Edit::Replace(i, c) => {
                        if n > 0 {
                            chars[i % n] = c;
                        }
                    }
                }
            }
            chars.into_iter().collect()
        }

        fn short_id() -> impl Strategy<Value = String> {
            "[0-9A-F]{6,12}"
        }

        fn long_id() -> impl Strategy<Value = String> {
            "[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{12,16}"
        }

        /// A recipient as Postfix logs it, plain or with a quoted local part.
        fn address() -> impl Strategy<Value = String> {
            let local = prop_oneof![
                "[a-z0-9._+-]{1,16}",
                r#""[a-z ,()<>@\[\]:;]{1,12}""#,
                r#""[a-z]{1,5}\\"[a-z, ]{0,5}""#,
            ];
            (
                local,
                "[a-z0-9-]{1,10}",
                prop_oneof![Just("org"), Just("example")],
            )
                .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
        }

        fn relay() -> impl Strategy<Value = (String, Option<String>, Option<IpAddr>, Option<u16>)> {
            prop_oneof![
                Just(("none".to_string(), None, None, None)),
                Just(("local".to_string(), Some("local".to_string()), None, None)),
                ("[a-z]{1,8}\\.example", any::<[u8; 4]>(), any::<u16>()).prop_map(|(h, a, p)| {
                    let ip = IpAddr::from(a);
                    (format!("{h}[{ip}]:{p}"), Some(h), Some(ip), Some(p))
                }),
                ("[a-z]{1,8}\\.example", any::<[u16; 8]>(), any::<u16>()).prop_map(|(h, a, p)| {
                    let ip = IpAddr::from(a);
                    (format!("{h}[{ip}]:{p}"), Some(h), Some(ip), Some(p))
                }),
            ]
        }

        /// Postfix prints small delays with two significant digits and large ones as integers.
        fn seconds() -> impl Strategy<Value = (String, f64)> {
            prop_oneof![
                (0u32..100).prop_map(|n| (format!("0.{n:02}"), f64::from(n) / 100.0)),
                (1u32..10, 0u32..10)
                    .prop_map(|(a, b)| (format!("{a}.{b}"), f64::from(a * 10 + b) / 10.0)),
                (0u32..10_000_000).prop_map(|n| (n.to_string(), f64::from(n))),
            ]
        }

        prop_compose! {
            fn status()(pick in 0..3usize) -> (&'static str, Status, &'static str) {
                [("sent", Status::Sent, "2.0.0"), ("deferred", Status::Deferred, "4.4.1"), ("bounced", Status::Bounced, "5.1.1")][pick]
            }
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(s in any::<String>(), t in "\\PC{0,200}") {
                parse_all(&s);
                parse_all(&t);
                for ident in ["postfix/smtp", "postfix/qmgr", "postfix/bounce", "postfix/pickup", "postfix/postsuper", "sendmail"] {
                    let l = SyslogLine { time: Utc::now(), host: "mx", ident, pid: None, message: &t };
                    check_parsed(&l);
                }
            }

            #[test]
            fn mutated_real_lines_never_panic(
                pick in 0..REAL.len(),
                edits in proptest::collection::vec(edit(), 1..6),
            ) {
                parse_all(&apply(REAL[pick], &edits));
            }

            #[test]
            fn mutated_messages_never_panic(
                pick in 0..REAL.len(),
                edits in proptest::collection::vec(edit(), 1..6),
            ) {
                let l = split_syslog(REAL[pick], &now()).unwrap();
                let message = apply(l.message, &edits);
                let l = SyslogLine { message: &message, ..l };
                check_parsed(&l);
            }

            #[test]
            fn generated_postfix_deliveries_read_back(
                queue_id in prop_oneof![short_id(), long_id()],
                agent in prop_oneof![Just("smtp"), Just("lmtp"), Just("relay"), Just("error")],
                recipient in address(),
                original in proptest::option::of(address()),
                (relay_text, relay_host, relay_ip, relay_port) in relay(),
                conn_use in proptest::option::of(2u32..100),
                (delay_text, delay) in seconds(),
                delays in proptest::array::uniform4(seconds()),
                (word, status, dsn) in status(),
                reply in "[a-zA-Z0-9 ,;:.<>@\\[\\]()=é-]{0,80}",
                remote in proptest::option::of(prop_oneof![short_id(), long_id()]),
            ) {
                prop_assume!(!reply.to_ascii_lowercase().contains("queued as"));
                prop_assume!(!reply.contains("id=") && !reply.contains("accepted"));
                let reply = match &remote {
                    Some(id) => format!("{reply} 250 2.0.0 Ok: queued as {id}"),
                    None => reply,
                };
                let mut line = format!("Nov 29 21:06:33 mx postfix-mx/{agent}[42]: {queue_id}: to=<{recipient}>");
                if let Some(o) = &original {
                    line += &format!(", orig_to=<{o}>");
                }
                line += &format!(", relay={relay_text}");
                if let Some(n) = conn_use {
                    line += &format!(", conn_use={n}");
                }
                let delays_text: Vec<&str> = delays.iter().map(|(t, _)| t.as_str()).collect();
                line += &format!(", delay={delay_text}, delays={}, dsn={dsn}, status={word} ({reply})", delays_text.join("/"));

                let expected = Delivery {
                    queue_id: queue_id.clone(),
                    recipient,
                    original_recipient: original,
                    agent: agent.to_string(),
                    relay_host,
                    relay_ip,
                    relay_port,
                    delay: Some(delay),
                    delays: Some([delays[0].1, delays[1].1, delays[2].1, delays[3].1]),
                    dsn: Some(dsn.to_string()),
                    status,
                    reply: reply.clone(),
                    remote_queue_id: if status == Status::Sent { remote } else { None },
                };
                prop_assert_eq!(run(Mta::Postfix, &line), Parsed::Records(vec![Record::Delivery(expected)]));
            }
        }
    }
}
