//! `privacy-milter ip decrypt TOKEN`: the address inside an encrypted `X-Originating-IP`
//! token, for the abuse desk.

use super::CommandError;
use crate::{config::Config, keys, token};

/// The address in `token` and the id of the key that made it.
pub fn decrypt(config: &Config, token: &str) -> Result<String, CommandError> {
    let ring = keys::load(&config.privacy.keys, keys::Kind::Aead)?;
    let (ip, key) = token::open(&ring, token)?;
    Ok(format!("{ip} (key {key})\n"))
}
