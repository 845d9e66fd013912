//! The next server's queue id in its reply to a sent delivery, only in these shapes:
//! `queued as X` (Postfix and many others; in a content filter's nested reply the last one,
//! which is the hop after the filter), Exim's `id=1WUWWi-0000ig-Gu` (and the 4.97+ long form),
//! and Sendmail's `X Message accepted for delivery`; when several appear, the last wins. After
//! `queued as` the id must look like a Postfix queue id or have 6+ characters with a digit.
//! Free-text replies (Gmail, Microsoft, LMTP "Saved") give None, and so does Postfix local's
//! `forwarded as NEWQID`, which names a new message in the same queue, not the next server's.

use super::postfix;
use regex::Regex;
use std::sync::LazyLock;

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
pub(super) fn remote_queue_id(reply: &str) -> Option<String> {
    let mut found: Vec<(usize, &str)> = Vec::new();
    for caps in QUEUED_AS.captures_iter(reply) {
        if let Some(m) = caps.get(1) {
            let id = m.as_str().trim_end_matches(['.', '-', '_']);
            // "queued as soon as possible" is no id: want a Postfix-shaped id, or 6+ characters
            // with a digit.
            if postfix::is_queue_id(id) || (id.len() >= 6 && id.bytes().any(|b| b.is_ascii_digit()))
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
    use super::super::{testing::*, Mta};
    use super::*;

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
}
