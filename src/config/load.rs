//! Layering: the TOML file, then `PRIVACY_MILTER_*` environment variables, then
//! command-line flags; and errors that say where a bad value came from.

use super::{Config, Settings};
use figment::{
    providers::{Env, Format, Serialized, Toml},
    value::{Dict, Map},
    Figment, Metadata, Profile, Provider,
};
use serde::Serialize;
use std::{fmt, fs, path::PathBuf};

/// The default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/privacy-milter/privacy-milter.toml";

/// The file's top-level keys. Only `PRIVACY_MILTER_*` variables that start with one of them
/// are configuration; others (`PRIVACY_MILTER_CONFIG`, the test suite's
/// `PRIVACY_MILTER_E2E`) are not, and are left alone.
pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "socket",
    "socket_mode",
    "socket_group",
    "dry_run",
    "max_connections",
    "session_timeout",
    "log",
    "networks",
    "domains",
    "rules",
    "events",
    "privacy",
    "retention",
    "tracking",
    "metrics",
    "policy",
    "audit",
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

    /// Reads, checks and resolves the configuration.
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
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::from_figment(&file, e))?;
        // Where a key was set, for errors found after extraction.
        let origin = |key: &str| {
            figment
                .find_metadata(key)
                .map(|md| describe_source(md, key))
                .unwrap_or_else(|| file.clone())
        };
        let mut config = Config::resolve(settings)
            .map_err(|(key, msg)| ConfigError::single(&origin(key), key, msg))?;
        config.source = Some(self.clone());
        Ok(config)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keys_are_the_schema() {
        let value = serde_json::to_value(Settings::default()).unwrap();
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
