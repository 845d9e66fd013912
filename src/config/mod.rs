//! Configuration: the TOML file, then `PRIVACY_MILTER_*` environment overrides, then
//! command-line flags, validated as a whole at load and on every reload.

mod model;
mod values;

pub use model::*;
pub use values::{in_networks, Domain, FileMode, HeaderName, Network, Period, SocketSpec};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    value::{Dict, Map},
    Figment, Metadata, Profile, Provider,
};
use serde::Serialize;
use std::{collections::HashSet, fmt, fs, path::PathBuf};

/// The default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/privacy-milter/privacy-milter.toml";

/// The file's top-level keys. Only `PRIVACY_MILTER_*` variables that start with one of them
/// are configuration; others (`PRIVACY_MILTER_CONFIG`, the test suite's
/// `PRIVACY_MILTER_E2E`) are not, and are left alone.
const TOP_LEVEL_KEYS: &[&str] = &[
    "socket",
    "socket_mode",
    "socket_group",
    "dry_run",
    "log",
    "networks",
    "domains",
    "rules",
    "events",
    "privacy",
    "retention",
];

/// Settings given on the command line; they win over the file and the environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverride>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LogOverride {
    pub level: String,
}

/// The command line's settings as a configuration source, named as such in errors (figment
/// would name them after their Rust type).
struct CommandLine<'a>(&'a Overrides);

/// The name errors give the command line.
const COMMAND_LINE: &str = "command line";

impl Provider for CommandLine<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named(COMMAND_LINE)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(self.0).data()
    }
}

/// Where a configuration comes from, kept so that SIGHUP can load it again the same way.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub overrides: Overrides,
}

impl Source {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            overrides: Overrides::default(),
        }
    }

    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let file = self.path.display().to_string();
        if let Err(e) = fs::metadata(&self.path) {
            return Err(ConfigError::single(
                &file,
                "",
                format!("cannot read the file: {e}"),
            ));
        }
        let figment = Figment::new()
            .merge(Toml::file_exact(&self.path))
            .merge(
                Env::prefixed("PRIVACY_MILTER_")
                    .filter(|key| {
                        let top = key.as_str().split("__").next().unwrap_or("");
                        TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
                    })
                    .split("__"),
            )
            .merge(CommandLine(&self.overrides));
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::from_figment(&file, e))?;
        // Where a key was set, for errors found after extraction.
        let origin = |key: &str| {
            figment
                .find_metadata(key)
                .map(|md| describe_source(md, key))
                .unwrap_or_else(|| file.clone())
        };
        validate(&mut config).map_err(|(key, msg)| ConfigError::single(&origin(key), key, msg))?;
        config.source = Some(self.clone());
        Ok(config)
    }
}

fn validate(config: &mut Config) -> Result<(), (&'static str, String)> {
    if config.rules.originating_ip.ipv4_prefix > 32 {
        return Err((
            "rules.originating_ip.ipv4_prefix",
            "must be at most 32".into(),
        ));
    }
    if config.rules.originating_ip.ipv6_prefix > 128 {
        return Err((
            "rules.originating_ip.ipv6_prefix",
            "must be at most 128".into(),
        ));
    }
    if config.privacy.ipv4_prefix > 32 {
        return Err(("privacy.ipv4_prefix", "must be at most 32".into()));
    }
    if config.privacy.ipv6_prefix > 128 {
        return Err(("privacy.ipv6_prefix", "must be at most 128".into()));
    }
    if config
        .rules
        .originating_ip
        .header
        .matches(config.rules.transit_tag.header.as_str())
    {
        return Err((
            "rules.transit_tag.header",
            "must differ from rules.originating_ip.header".into(),
        ));
    }
    if config
        .domains
        .local_mailers
        .iter()
        .any(|m| m.trim().is_empty())
    {
        return Err((
            "domains.local_mailers",
            "contains an empty mailer name".into(),
        ));
    }
    if config.events.enabled && config.events.sinks.is_empty() {
        return Err((
            "events.sinks",
            "is empty while events.enabled is true; name a sink or set events.enabled = false"
                .into(),
        ));
    }
    if config.events.sinks.contains(&SinkKind::Jsonl)
        && config.events.jsonl.path.as_os_str().is_empty()
    {
        return Err((
            "events.jsonl.path",
            "is empty but the jsonl sink is enabled".into(),
        ));
    }
    if config.events.sinks.contains(&SinkKind::Ledger)
        && config.events.ledger.path.as_os_str().is_empty()
    {
        return Err((
            "events.ledger.path",
            "is empty but the ledger sink is enabled".into(),
        ));
    }
    if config.events.sinks.contains(&SinkKind::Postgres) {
        let pg = &config.events.postgres;
        if pg.url.trim().is_empty() {
            return Err((
                "events.postgres.url",
                "is empty but the postgres sink is enabled".into(),
            ));
        }
        if let Err(e) = pg.url.parse::<postgres::Config>() {
            return Err((
                "events.postgres.url",
                format!("is not a PostgreSQL connection URL: {e}"),
            ));
        }
        if pg.pool_size == 0 {
            return Err(("events.postgres.pool_size", "must be at least 1".into()));
        }
        if !pg.ca_file.as_os_str().is_empty() {
            if let Err(e) = crate::ledger::postgres::load_ca_file(&pg.ca_file) {
                return Err(("events.postgres.ca_file", e));
            }
        }
        if pg.connect_timeout.0.is_zero() {
            return Err((
                "events.postgres.connect_timeout",
                "must be longer than 0s".into(),
            ));
        }
        if pg.spool.as_os_str().is_empty() {
            return Err((
                "events.postgres.spool",
                "is empty but the postgres sink is enabled".into(),
            ));
        }
    }
    if config.events.queue_size == 0 {
        return Err(("events.queue_size", "must be at least 1".into()));
    }
    if config.retention.purge_interval.0.is_zero() {
        return Err(("retention.purge_interval", "must be longer than 0s".into()));
    }
    if !config.socket_group.is_empty() && matches!(config.socket, SocketSpec::Unix(_)) {
        match nix::unistd::Group::from_name(&config.socket_group) {
            Ok(Some(_)) => {}
            _ => {
                return Err((
                    "socket_group",
                    format!(
                        "group {:?} does not exist on this system",
                        config.socket_group
                    ),
                ))
            }
        }
    }
    let needs_keys = config.privacy.uses_hmac()
        || config.rules.originating_ip.mode == OriginatingIpMode::Encrypted;
    if needs_keys {
        if config.privacy.key_rotation.0.is_zero() {
            return Err(("privacy.key_rotation", "must be longer than 0s".into()));
        }
        // Refuses a key directory or key files others could read.
        crate::keys::load(&config.privacy.keys, crate::keys::Kind::Hmac)
            .map_err(|e| ("privacy.keys", e.0))?;
        crate::keys::load(&config.privacy.keys, crate::keys::Kind::Aead)
            .map_err(|e| ("privacy.keys", e.0))?;
    }
    let mut domains: HashSet<String> = config
        .domains
        .local
        .iter()
        .map(|d| d.as_str().to_string())
        .collect();
    if !config.domains.local_file.as_os_str().is_empty() {
        let listed =
            read_domain_file(&config.domains.local_file).map_err(|e| ("domains.local_file", e))?;
        domains.extend(listed.into_iter().map(String::from));
    }
    config.local_domains = domains;
    Ok(())
}

/// Reads one domain per line; blank lines and `#` comments are skipped.
fn read_domain_file(path: &std::path::Path) -> Result<Vec<Domain>, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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

/// `["networks", "trusted", "0"]` becomes `networks.trusted[0]`.
fn join_key(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

fn describe_source(md: &figment::Metadata, key: &str) -> String {
    match &md.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ if md.name.contains("environment") => format!(
            "environment variable PRIVACY_MILTER_{}",
            key.to_ascii_uppercase().replace('.', "__")
        ),
        // The options are named after their keys: socket, dry_run, log.level.
        _ if md.name == COMMAND_LINE => {
            format!("command line (--{})", key.replace(['.', '_'], "-"))
        }
        _ => md.name.to_string(),
    }
}

/// A configuration problem: where (file or variable), which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: String,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn single(origin: &str, key: &str, message: String) -> Self {
        Self {
            problems: vec![Problem {
                origin: origin.to_string(),
                key: key.to_string(),
                message,
            }],
        }
    }

    fn from_figment(file: &str, error: figment::Error) -> Self {
        let problems = error
            .into_iter()
            .map(|e| {
                let mut path = e.path.clone();
                let message = match &e.kind {
                    figment::error::Kind::UnknownField(field, expected) => {
                        if path.last() != Some(field) {
                            path.push(field.clone());
                        }
                        format!("unknown key; expected one of: {}", expected.join(", "))
                    }
                    figment::error::Kind::UnknownVariant(found, expected) => {
                        format!(
                            "unknown value {found:?}; expected one of: {}",
                            expected.join(", ")
                        )
                    }
                    kind => kind.to_string(),
                };
                let key = join_key(&path);
                let origin = e
                    .metadata
                    .as_ref()
                    .map(|md| describe_source(md, &key))
                    .unwrap_or_else(|| file.to_string());
                Problem {
                    origin,
                    key,
                    message,
                }
            })
            .collect();
        Self { problems }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.key.as_str() {
                "" => write!(f, "{}: {}", p.origin, p.message)?,
                key => write!(f, "{}: key {key}: {}", p.origin, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The name an enum value has in the config file.
fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

impl Config {
    /// A short account of the effective rules, for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        let nets = |n: &[Network]| {
            if n.is_empty() {
                "none".to_string()
            } else {
                n.iter()
                    .map(|n| n.0.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let oip = &self.rules.originating_ip;
        let tt = &self.rules.transit_tag;
        let mut domains: Vec<&str> = self.local_domains.iter().map(String::as_str).collect();
        domains.sort_unstable();
        let sinks: Vec<String> = self
            .events
            .sinks
            .iter()
            .map(|s| match s {
                SinkKind::Jsonl => format!("jsonl ({})", self.events.jsonl.path.display()),
                SinkKind::Ledger => match self.events.ledger.synchronous {
                    Synchronous::Full => format!("ledger ({})", self.events.ledger.path.display()),
                    Synchronous::Normal => format!(
                        "ledger ({}, synchronous normal)",
                        self.events.ledger.path.display()
                    ),
                },
                SinkKind::Postgres => format!(
                    "postgres ({}, {}, spool {})",
                    crate::ledger::postgres::redacted(&self.events.postgres.url),
                    crate::ledger::postgres::tls_summary(&self.events.postgres),
                    self.events.postgres.spool.display()
                ),
                SinkKind::Log => "log".to_string(),
            })
            .collect();
        let r = &self.retention;
        format!(
            "socket: {socket}\n\
             dry run: {dry}\n\
             trusted networks: {trusted}\n\
             webmail hosts: {webmail}\n\
             local domains: {domains} (plus mailers {mailers})\n\
             rule originating_ip: {oip_on}, header {oip_h}, mode {oip_mode}, skipping {skip}\n\
             rule transit_tag: {tt_on}, header {tt_h}\n\
             events: {ev_on}, sinks {sinks}, durability {durability}, on error {on_error}\n\
             privacy: ip {ip}, address {addr}\n\
             retention: inbound {ri}, outbound {ro}, internal {rn}, relay {rr}, rejected {rj}, aborted {ra}; purge every {rp}",
            socket = self.socket,
            dry = on(self.dry_run),
            trusted = nets(&self.networks.trusted),
            webmail = nets(&self.networks.webmail),
            domains = if domains.is_empty() { "none".into() } else { domains.join(", ") },
            mailers = self.domains.local_mailers.join(", "),
            oip_on = on(oip.enabled),
            oip_h = oip.header.as_str(),
            oip_mode = name(&oip.mode),
            skip = nets(&oip.skip_networks),
            tt_on = on(tt.enabled),
            tt_h = tt.header.as_str(),
            ev_on = on(self.events.enabled),
            sinks = sinks.join(", "),
            durability = name(&self.events.durability),
            on_error = name(&self.events.on_error),
            ip = name(&self.privacy.ip),
            addr = name(&self.privacy.address),
            ri = r.inbound,
            ro = r.outbound,
            rn = r.internal,
            rr = r.relay,
            rj = r.rejected,
            ra = r.aborted,
            rp = r.purge_interval,
        )
    }

    /// Whether `domain` is one we host.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .contains(&domain.trim_end_matches('.').to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keys_are_the_schema() {
        let value = serde_json::to_value(Config::default()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = TOP_LEVEL_KEYS.to_vec();
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }
}
