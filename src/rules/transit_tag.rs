//! Rule `transit_tag`: mail we only pass on to another server carries the transit header,
//! whose value is the direction (`outbound` or `relay`) followed by the proof that we wrote
//! it:
//!
//! ```text
//! X-Transit: relay; by=mx.example.org; k=20261126T180000Z; mac=2Jx0cH3XKxT3bN0f1dYq9A
//! ```
//!
//! `mac` is base64url (no padding) of the first 128 bits of HMAC-SHA256, under the key
//! derived for transit tags from HMAC key `k` of the ring, of
//! `v1 NUL direction NUL by NUL k NUL message-id`, where message-id is the value of the
//! message's first Message-ID field with all white space removed (at most 998 bytes), or
//! empty when it has none. No field but the last can hold a NUL, and no milter string can,
//! so the input is unambiguous.
//!
//! Copies that do not verify under our ring are someone else's: they are left exactly as
//! they are, since deleting or reordering a field a sender's DKIM signature covers breaks it.
//! A copy that verifies, from a trusted client, is our own earlier pass (a content filter
//! re-injecting, a second hop): the message is tagged already. One that verifies from outside
//! the trusted networks is our tag on a message that came back (or was made to look so): it
//! is kept and vouches for nothing. Our tag goes at the top of the header: a DKIM verifier
//! takes the bottom-most copy of a signed field, so one appended below a signed copy would
//! break that signature as surely as deleting it.

use super::Action;
use crate::{
    classify::Classification,
    config::TransitTag,
    facts::MessageFacts,
    keys::{Key, Ring},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const ADDED: &str = "transit_tag.added";
pub const ALREADY_TAGGED: &str = "transit_tag.already_tagged";
pub const FOREIGN_KEPT: &str = "transit_tag.foreign_kept";
pub const RETURNED_KEPT: &str = "transit_tag.returned_kept";

/// Bytes of the MAC written: 128 bits, as for the pseudonyms.
const MAC_LEN: usize = 16;
/// The longest Message-ID the MAC covers (the line limit of RFC 5322).
pub const MAX_MESSAGE_ID: usize = 998;
/// The longest host name written in `by=`.
const MAX_HOST: usize = 255;

pub fn decide(
    msg: &MessageFacts,
    class: &Classification,
    cfg: &TransitTag,
    keys: &Ring,
    host: &str,
) -> Vec<Action> {
    if !cfg.enabled {
        return Vec::new();
    }
    let message_id = msg.message_id.as_deref();
    let copies = &msg.transit_tag;
    let (mut ours, mut foreign) = (false, false);
    for value in &copies.values {
        match verify(keys, value, message_id) {
            Ok(_) => ours = true,
            Err(_) => foreign = true,
        }
    }
    // Copies past those kept are not looked at: they stay, like every foreign one.
    if copies.count as usize > copies.values.len() {
        foreign = true;
    }
    let mut actions = Vec::new();
    if foreign {
        actions.push(Action::note(FOREIGN_KEPT));
    }
    if ours && class.trusted {
        actions.push(Action::note(ALREADY_TAGGED));
        return actions;
    }
    if ours {
        actions.push(Action::note(RETURNED_KEPT));
    }
    if class.transit {
        // Without a key (never, once the key ring is loaded) no tag rather than one that
        // proves nothing.
        if let Some(key) = keys.current() {
            let value = make(key, &class.direction.to_string(), host, message_id);
            actions.push(Action::prepend(ADDED, cfg.header.as_str(), value));
        }
    }
    actions
}

/// Our tag for a message: `direction; by=host; k=KEYID; mac=...`, under `key` (derived for
/// transit tags). A host name with characters a tag does not hold has them written as `_`.
pub fn make(key: &Key, direction: &str, host: &str, message_id: Option<&[u8]>) -> String {
    let by = host_token(host);
    let mac = mac(key, direction, &by, &key.id, message_id).finalize();
    format!(
        "{direction}; by={by}; k={}; mac={}",
        key.id,
        URL_SAFE_NO_PAD.encode(&mac.into_bytes()[..MAC_LEN])
    )
}

/// What a tag that verified says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub direction: String,
    pub by: String,
    pub key_id: String,
}

/// Why a header value is not a tag of ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("not a privacy-milter transit tag (no by=, k= and mac= after the direction)")]
    Malformed,
    #[error(
        "key {0} is not in this key ring: another host's tag, or one made under a key since \
         destroyed"
    )]
    UnknownKey(String),
    #[error(
        "the MAC does not match: altered, made by another host with a key of the same id, or \
         lifted from another message (the Message-ID differs)"
    )]
    Mismatch,
}

/// Checks `value` (a header value as it arrived) against the ring of keys derived for transit
/// tags and the message's Message-ID (its raw value, `None` when it has none).
pub fn verify(ring: &Ring, value: &[u8], message_id: Option<&[u8]>) -> Result<Verified, TagError> {
    let parsed = parse(value).ok_or(TagError::Malformed)?;
    let key = ring
        .get(&parsed.key_id)
        .ok_or_else(|| TagError::UnknownKey(parsed.key_id.clone()))?;
    // Constant time; `parse` made sure the MAC has MAC_LEN bytes.
    mac(
        key,
        &parsed.direction,
        &parsed.by,
        &parsed.key_id,
        message_id,
    )
    .verify_truncated_left(&parsed.mac)
    .map_err(|_| TagError::Mismatch)?;
    Ok(Verified {
        direction: parsed.direction,
        by: parsed.by,
        key_id: parsed.key_id,
    })
}

struct Parsed {
    direction: String,
    by: String,
    key_id: String,
    mac: Vec<u8>,
}

/// Reads `direction; by=HOST; k=KEYID; mac=B64` with any white space (a refolded value)
/// around the parts; anything else is not ours.
fn parse(value: &[u8]) -> Option<Parsed> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(';').map(str::trim);
    let direction = parts.next()?;
    if direction.is_empty() || !direction.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let mut field = |name: &str| parts.next()?.strip_prefix(name)?.strip_prefix('=');
    let by = field("by")?;
    let key_id = field("k")?;
    let mac = field("mac")?;
    if parts.next().is_some()
        || by.is_empty()
        || host_token(by) != by
        || key_id.is_empty()
        || !key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    (mac.len() == MAC_LEN).then(|| Parsed {
        direction: direction.to_string(),
        by: by.to_string(),
        key_id: key_id.to_string(),
        mac,
    })
}

/// The MAC of a tag's fields, to finalise (and truncate to [`MAC_LEN`]) or to verify.
fn mac(
    key: &Key,
    direction: &str,
    by: &str,
    key_id: &str,
    message_id: Option<&[u8]>,
) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.bytes).expect("any key length");
    for part in [
        b"v1".as_slice(),
        direction.as_bytes(),
        by.as_bytes(),
        key_id.as_bytes(),
    ] {
        mac.update(part);
        mac.update(b"\0");
    }
    mac.update(&canonical_message_id(message_id.unwrap_or_default()));
    mac
}

/// A Message-ID value as the MAC covers it: without white space (folding may differ between
/// hops), at most [`MAX_MESSAGE_ID`] bytes.
pub fn canonical_message_id(raw: &[u8]) -> Vec<u8> {
    raw.iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .take(MAX_MESSAGE_ID)
        .collect()
}

/// A host name as `by=` holds it: letters, digits and `.-_:[]`, anything else as `_`, at most
/// [`MAX_HOST`] characters; `unknown` for an empty one.
fn host_token(host: &str) -> String {
    let token: String = host
        .chars()
        .take(MAX_HOST)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if token.is_empty() {
        "unknown".into()
    } else {
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        classify::Direction,
        facts::HeaderCopies,
        keys::{derive, derive_ring, Purpose},
        rules::Edit,
    };
    use chrono::{DateTime, Utc};
    use std::sync::Arc;

    const MID: &[u8] = b"<abc.123@mail.example.org>";

    fn key(id: &str, byte: u8) -> Key {
        Key {
            id: id.into(),
            created: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            bytes: [byte; 32],
        }
    }

    /// A ring of HMAC keys as the key ring holds them, derived for transit tags.
    fn ring(keys: &[Key]) -> Ring {
        derive_ring(
            &Ring {
                keys: keys.iter().cloned().map(Arc::new).collect(),
            },
            Purpose::TransitTag,
        )
    }

    fn our_ring() -> Ring {
        ring(&[key("20260101T000000Z", 7)])
    }

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

    fn msg(values: &[&[u8]]) -> MessageFacts {
        MessageFacts {
            transit_tag: HeaderCopies {
                count: values.len() as i32,
                values: values.iter().map(|v| v.to_vec()).collect(),
            },
            message_id: Some(MID.to_vec()),
            ..Default::default()
        }
    }

    fn decide_on(m: &MessageFacts, c: &Classification) -> Vec<Action> {
        decide(m, c, &TransitTag::default(), &our_ring(), "mx.example.org")
    }

    fn labels(actions: &[Action]) -> Vec<&str> {
        actions.iter().map(|a| a.label).collect()
    }

    fn edits(actions: &[Action]) -> Vec<Edit> {
        actions.iter().filter_map(|a| a.edit.clone()).collect()
    }

    fn ours(direction: &str) -> String {
        make(
            our_ring().current().unwrap(),
            direction,
            "mx.example.org",
            Some(MID),
        )
    }

    #[test]
    fn a_tag_verifies_and_says_what_it_covers() {
        let tag = ours("relay");
        assert!(
            tag.starts_with("relay; by=mx.example.org; k=20260101T000000Z; mac="),
            "{tag}"
        );
        assert_eq!(
            tag.len(),
            "relay; by=mx.example.org; k=20260101T000000Z; mac=".len() + 22
        );
        let verified = verify(&our_ring(), tag.as_bytes(), Some(MID)).unwrap();
        assert_eq!(
            verified,
            Verified {
                direction: "relay".into(),
                by: "mx.example.org".into(),
                key_id: "20260101T000000Z".into()
            }
        );
        // Refolded in transit, and a Message-ID refolded too: still ours.
        let folded = tag.replace("; ", ";\r\n\t");
        assert!(verify(
            &our_ring(),
            folded.as_bytes(),
            Some(b" <abc.123@mail.example.org>\r\n")
        )
        .is_ok());
    }

    #[test]
    fn a_changed_direction_host_message_id_or_mac_does_not_verify() {
        let tag = ours("relay");
        let changed = [
            tag.replacen("relay", "outbound", 1),
            tag.replace("by=mx.example.org", "by=mx.example.net"),
        ];
        for value in &changed {
            assert_eq!(
                verify(&our_ring(), value.as_bytes(), Some(MID)),
                Err(TagError::Mismatch),
                "{value}"
            );
        }
        // Lifted onto another message, or onto one without a Message-ID.
        assert_eq!(
            verify(
                &our_ring(),
                tag.as_bytes(),
                Some(b"<other@mail.example.org>")
            ),
            Err(TagError::Mismatch)
        );
        assert_eq!(
            verify(&our_ring(), tag.as_bytes(), None),
            Err(TagError::Mismatch)
        );
        // One bit of the MAC flipped.
        let (head, mac) = tag.rsplit_once("mac=").unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(mac).unwrap();
        raw[0] ^= 1;
        let flipped = format!("{head}mac={}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(
            verify(&our_ring(), flipped.as_bytes(), Some(MID)),
            Err(TagError::Mismatch)
        );
        // A shortened MAC is not a tag at all.
        let short = format!("{head}mac={}", URL_SAFE_NO_PAD.encode(&raw[..8]));
        assert_eq!(
            verify(&our_ring(), short.as_bytes(), Some(MID)),
            Err(TagError::Malformed)
        );
        for value in [
            "relay",
            "outbound",
            "relay; by=x; k=1",
            "Relay; by=x; k=1; mac=AAAA",
            "",
        ] {
            assert_eq!(
                verify(&our_ring(), value.as_bytes(), Some(MID)),
                Err(TagError::Malformed),
                "{value}"
            );
        }
    }

    #[test]
    fn without_a_message_id_the_mac_covers_an_empty_one() {
        let key = our_ring().current().unwrap().clone();
        let tag = make(&key, "outbound", "mx.example.org", None);
        assert!(verify(&our_ring(), tag.as_bytes(), None).is_ok());
        assert!(verify(&our_ring(), tag.as_bytes(), Some(b"  ")).is_ok());
        assert_eq!(
            verify(&our_ring(), tag.as_bytes(), Some(MID)),
            Err(TagError::Mismatch)
        );
    }

    #[test]
    fn a_retired_key_verifies_while_in_the_ring() {
        let old = key("20260101T000000Z", 7);
        let new = key("20260131T000000Z", 8);
        let before = ring(std::slice::from_ref(&old));
        let tag = make(before.current().unwrap(), "relay", "mx", Some(MID));
        // Rotated: new tags are made with the new key, the old one still verifies.
        let rotated = ring(&[old, new.clone()]);
        assert_eq!(rotated.current().unwrap().id, "20260131T000000Z");
        assert!(verify(&rotated, tag.as_bytes(), Some(MID)).is_ok());
        // Destroyed: the tag is no longer provably ours.
        let destroyed = ring(&[new]);
        assert_eq!(
            verify(&destroyed, tag.as_bytes(), Some(MID)),
            Err(TagError::UnknownKey("20260101T000000Z".into()))
        );
        // Another host's key of the same id.
        let other = ring(&[key("20260101T000000Z", 9)]);
        assert_eq!(
            verify(&other, tag.as_bytes(), Some(MID)),
            Err(TagError::Mismatch)
        );
    }

    #[test]
    fn the_tag_key_is_not_the_pseudonymisation_key() {
        let hmac_key = key("20260101T000000Z", 7);
        let derived = derive(&hmac_key, Purpose::TransitTag);
        assert_ne!(derived.bytes, hmac_key.bytes);
        assert_eq!(derived.id, hmac_key.id);
        // A tag made with the ring's key itself (the pseudonymisation key) does not verify.
        let raw_ring = Ring {
            keys: vec![Arc::new(hmac_key.clone())],
        };
        let tag = make(&hmac_key, "relay", "mx", Some(MID));
        assert!(verify(&raw_ring, tag.as_bytes(), Some(MID)).is_ok());
        assert_eq!(
            verify(&our_ring(), tag.as_bytes(), Some(MID)),
            Err(TagError::Mismatch)
        );
        // No pseudonym, not even of the derivation's label, is the derived key.
        let pseudonym = crate::privacy::hmac(&hmac_key, "privacy-milter transit-tag v1");
        assert!(!pseudonym.contains(&hex::encode(&derived.bytes[..16])));
    }

    #[test]
    fn host_names_are_written_as_tokens() {
        let key = our_ring().current().unwrap().clone();
        let tag = make(&key, "relay", "mx; k=evil\r\n", Some(MID));
        assert!(tag.starts_with("relay; by=mx__k_evil__; k="), "{tag}");
        assert!(verify(&our_ring(), tag.as_bytes(), Some(MID)).is_ok());
        let tag = make(&key, "relay", "", Some(MID));
        assert!(tag.starts_with("relay; by=unknown; k="), "{tag}");
    }

    #[test]
    fn relay_from_outside_is_tagged_at_the_top_and_foreign_copies_stay() {
        let a = decide_on(
            &msg(&[
                b"relay",
                b"outbound; by=mx.other.example; k=1; mac=AAAAAAAAAAAAAAAAAAAAAA",
            ]),
            &class(false, Direction::Relay),
        );
        assert_eq!(labels(&a), [FOREIGN_KEPT, ADDED]);
        let e = edits(&a);
        assert_eq!(e.len(), 1, "nothing deleted: {e:?}");
        let Edit::Prepend { name, value } = &e[0] else {
            panic!("{e:?}")
        };
        assert_eq!(name, "X-Transit");
        assert!(verify(&our_ring(), value.as_bytes(), Some(MID)).is_ok());
        assert!(value.starts_with("relay; by=mx.example.org; "), "{value}");
    }

    #[test]
    fn inbound_foreign_copies_stay_and_nothing_is_added() {
        let a = decide_on(&msg(&[b"relay"]), &class(false, Direction::Inbound));
        assert_eq!(labels(&a), [FOREIGN_KEPT]);
        assert!(edits(&a).is_empty());
        assert!(decide_on(&msg(&[]), &class(false, Direction::Inbound)).is_empty());
    }

    #[test]
    fn our_tag_from_a_trusted_client_is_a_second_pass() {
        let first = ours("outbound");
        let a = decide_on(&msg(&[first.as_bytes()]), &class(true, Direction::Outbound));
        assert_eq!(labels(&a), [ALREADY_TAGGED]);
        assert!(edits(&a).is_empty());
        // Beside a foreign copy.
        let a = decide_on(
            &msg(&[b"relay", first.as_bytes()]),
            &class(true, Direction::Outbound),
        );
        assert_eq!(labels(&a), [FOREIGN_KEPT, ALREADY_TAGGED]);
        assert!(edits(&a).is_empty());
    }

    #[test]
    fn a_trusted_client_copy_that_does_not_verify_is_foreign() {
        // The old tag, another host's, or ours lifted from another message.
        let lifted = make(
            our_ring().current().unwrap(),
            "outbound",
            "mx.example.org",
            Some(b"<other@example.org>"),
        );
        for value in [b"outbound".as_slice(), lifted.as_bytes()] {
            let a = decide_on(&msg(&[value]), &class(true, Direction::Outbound));
            assert_eq!(labels(&a), [FOREIGN_KEPT, ADDED]);
        }
    }

    #[test]
    fn our_tag_from_outside_vouches_for_nothing() {
        let tag = ours("outbound");
        let a = decide_on(&msg(&[tag.as_bytes()]), &class(false, Direction::Relay));
        assert_eq!(labels(&a), [RETURNED_KEPT, ADDED]);
        let a = decide_on(&msg(&[tag.as_bytes()]), &class(false, Direction::Inbound));
        assert_eq!(labels(&a), [RETURNED_KEPT]);
        assert!(edits(&a).is_empty());
    }

    #[test]
    fn copies_beyond_those_kept_are_foreign() {
        let tag = ours("outbound");
        let mut m = msg(&[tag.as_bytes()]);
        m.transit_tag.count = 40;
        let a = decide_on(&m, &class(true, Direction::Outbound));
        assert_eq!(labels(&a), [FOREIGN_KEPT, ALREADY_TAGGED]);
    }

    #[test]
    fn without_a_key_no_tag_is_made() {
        let a = decide(
            &msg(&[]),
            &class(false, Direction::Relay),
            &TransitTag::default(),
            &Ring::default(),
            "mx",
        );
        assert!(a.is_empty());
    }

    #[test]
    fn disabled_does_nothing() {
        let cfg = TransitTag {
            enabled: false,
            ..Default::default()
        };
        let a = decide(
            &msg(&[b"relay"]),
            &class(false, Direction::Relay),
            &cfg,
            &our_ring(),
            "mx",
        );
        assert!(a.is_empty());
    }
}
