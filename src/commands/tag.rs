//! `privacy-milter verify-tag VALUE --message-id ID`: whether a transit header's value is a
//! tag this host made (under a key still in its ring) for the message with that Message-ID,
//! or someone else's, which vouches for nothing.

use super::CommandError;
use crate::{
    config::Config,
    keys::{self, Purpose},
    rules::transit_tag::{self, TagError},
};

/// What the tag says when it is ours; an error saying why when it is not.
pub fn verify(
    config: &Config,
    value: &str,
    message_id: Option<&str>,
) -> Result<String, CommandError> {
    let ring = keys::derive_ring(
        &keys::load(&config.privacy.keys, keys::Kind::Hmac)?,
        Purpose::TransitTag,
    );
    let check =
        |id: Option<&str>| transit_tag::verify(&ring, value.as_bytes(), id.map(str::as_bytes));
    let verified = match (check(message_id), message_id) {
        // The Message-ID as a mail client shows it, without its angle brackets.
        (Err(TagError::Mismatch), Some(id)) if !id.contains('<') => {
            check(Some(&format!("<{}>", id.trim())))
        }
        (result, _) => result,
    }?;
    Ok(format!(
        "ours: {} by {} (key {})\n",
        verified.direction, verified.by, verified.key_id
    ))
}
