//! `privacy-milter audit`: the host checked against the policy (see `crate::audit`); exit
//! status 0 when every finding holds, 1 otherwise, for monitoring.

use crate::{audit, config::Config};

pub use crate::audit::Finding;

/// Lines for a person, or JSON: `{"findings": [{"check", "ok", "detail", "fix"}]}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The findings, as text or JSON, and whether they all hold.
pub fn audit(config: &Config, format: Format) -> (String, bool) {
    let findings = audit::run(config, chrono::Utc::now());
    let ok = findings.iter().all(|f| f.ok);
    let text = match format {
        Format::Text => audit::text(&findings),
        Format::Json => audit::json(&findings),
    };
    (text, ok)
}
