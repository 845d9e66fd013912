//! Configuration: what the operator wrote ([`Settings`], the TOML file with
//! `PRIVACY_MILTER_*` environment overrides and command-line flags layered over it) and what
//! the program runs with ([`Config`]: those settings, checked, plus what they name: the local
//! domain file's domains and the PostgreSQL CA roots).
//!
//! - [`load`]: layering, and errors that name the file (or variable, or flag) and the key;
//! - [`validate`]: checks of the settings alone, no I/O;
//! - [`Config::resolve`]: reads what the settings name, the only I/O;
//! - [`summary`]: what `check-config` prints;
//! - [`reload`]: what a SIGHUP may change and what needs a restart.

mod conninfo;
mod load;
mod model;
pub mod reload;
mod summary;
mod validate;
mod values;

pub use load::{ConfigError, LogOverride, Overrides, Source, DEFAULT_PATH};
pub use model::*;
pub use values::{in_networks, Domain, Network, Period, SocketSpec};

use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::{collections::HashSet, fs, ops::Deref, path::Path};

/// The configuration the program runs with: the operator's [`Settings`] (which it derefs to,
/// so `config.events.sinks` reads as written in the file) and what they name.
#[derive(Clone, Debug, Default)]
pub struct Config {
    settings: Settings,
    /// The domains of `domains.local` and `domains.local_file`, in lower case.
    pub local_domains: HashSet<String>,
    /// The CA certificates of `events.postgres.ca_file`; empty for the system's store.
    pub postgres_roots: Vec<CertificateDer<'static>>,
    /// Where this configuration was loaded from, so a reload can read it again.
    pub source: Option<Source>,
}

impl Deref for Config {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// A problem found in the settings: the key, and what is wrong with it.
pub type KeyProblem = (&'static str, String);

impl Config {
    /// Checks `settings` and reads what they name: the local domain file, the CA file, the
    /// socket's group and the key directory's modes.
    pub fn resolve(settings: Settings) -> Result<Self, KeyProblem> {
        validate::check(&settings)?;
        let mut local_domains: HashSet<String> = settings
            .domains
            .local
            .iter()
            .map(|d| d.as_str().to_string())
            .collect();
        if !settings.domains.local_file.as_os_str().is_empty() {
            let listed = read_domain_file(&settings.domains.local_file)
                .map_err(|e| ("domains.local_file", e))?;
            local_domains.extend(listed.into_iter().map(String::from));
        }
        let pg = &settings.events.postgres;
        let postgres_roots = if settings.events.sinks.contains(&SinkKind::Postgres)
            && !pg.ca_file.as_os_str().is_empty()
        {
            load_ca_file(&pg.ca_file).map_err(|e| ("events.postgres.ca_file", e))?
        } else {
            Vec::new()
        };
        if !settings.socket_group.is_empty() && matches!(settings.socket, SocketSpec::Unix(_)) {
            match nix::unistd::Group::from_name(&settings.socket_group) {
                Ok(Some(_)) => {}
                _ => {
                    return Err((
                        "socket_group",
                        format!(
                            "group {:?} does not exist on this system",
                            settings.socket_group
                        ),
                    ))
                }
            }
        }
        if settings.needs_keys() {
            // Refuses a key directory or key files others could read.
            for kind in [crate::keys::Kind::Hmac, crate::keys::Kind::Aead] {
                crate::keys::load(&settings.privacy.keys, kind)
                    .map_err(|e| ("privacy.keys", e.to_string()))?;
            }
        }
        Ok(Self {
            settings,
            local_domains,
            postgres_roots,
            source: None,
        })
    }

    /// What the operator wrote.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether `domain` is one we host.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .contains(&domain.trim_end_matches('.').to_ascii_lowercase())
    }
}

/// Largest local domain file read: about 800,000 domains.
const MAX_DOMAIN_FILE: u64 = 16 << 20;
/// Largest CA file read: some hundred PEM certificates, more than a system's whole store.
const MAX_CA_FILE: u64 = 1 << 20;

/// The bytes of `path`, which must be a regular file of at most `max` bytes: a device, a FIFO
/// or a huge file named by mistake would be read without end.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let describe = |max: u64| match max {
        m if m % (1 << 20) == 0 => format!("{} MiB", m >> 20),
        m => format!("{m} bytes"),
    };
    let io_error = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = fs::File::open(path).map_err(io_error)?;
    let md = file.metadata().map_err(io_error)?;
    if !md.is_file() {
        return Err(format!(
            "{} is not a regular file; name a file of at most {}",
            path.display(),
            describe(max)
        ));
    }
    let mut bytes = Vec::new();
    // Bounded even if the file grows meanwhile.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "{} is larger than {}, more than such a file can sensibly hold",
            path.display(),
            describe(max)
        ));
    }
    Ok(bytes)
}

/// Reads one domain per line; blank lines and `#` comments are skipped.
fn read_domain_file(path: &Path) -> Result<Vec<Domain>, String> {
    let bytes = read_bounded(path, MAX_DOMAIN_FILE)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("{} is not UTF-8 text: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(n, line)| (n, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            Domain::try_from(line.to_string())
                .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))
        })
        .collect()
}

/// The CA certificates in a PEM file, or what is wrong with it.
fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_bounded(path, MAX_CA_FILE)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The name an enum value has in the config file.
pub(crate) fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
