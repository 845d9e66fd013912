//! `privacy-milter policy`: the mail-privacy section of the operator's privacy policy, from
//! the configuration that runs (see `crate::policy`), to publish as it is.

use super::CommandError;
use crate::config::Config;

pub use crate::policy::Format;

pub fn policy(config: &Config, format: Format) -> Result<String, CommandError> {
    Ok(crate::policy::render(config, format)?)
}
