//! Layering: the TOML file, then `PRIVACY_MILTER_*` environment variables, then
//! command-line flags; and errors that say where a bad value came from.

use super::{Config, Settings};
use figment::{
    providers::{Format, Serialized, Toml},
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider,
};
use serde::Serialize;
use std::{ffi::OsString, fmt, fs, path::PathBuf};

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
    "mta_logs",
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

/// The prefix of configuration variables.
const ENV_PREFIX: &str = "PRIVACY_MILTER_";
/// The name errors give the environment (`describe_source` looks for "environment").
const ENVIRONMENT: &str = "environment variables";

/// `PRIVACY_MILTER_*` variables as a configuration source, each read as its key's type: the
/// schema (the serialized default settings) says whether a key takes a string, a boolean, an
/// integer or a list, so a value is never typed by how it looks (figment's own provider read
/// the mode `0660` as the integer 660, and a domain `true.example` as a boolean gone wrong).
///
/// - a string (a path, a mode, a name, a period, a socket): the value as it is;
/// - a boolean: `true` or `false`; an integer: decimal digits (`016` is 16);
/// - a list (all lists here hold strings): a TOML array such as `["a", "b"]`, or entries
///   separated by commas (`a, b`), white space around each entry ignored; empty for none.
///
/// A variable whose key the schema does not know is passed on as a string, so that the
/// settings refuse it as an unknown key, as in the file.
struct Environment {
    /// What the variables set, typed.
    values: Dict,
    /// The variables that could not be read as their key's type.
    problems: Vec<Problem>,
}

impl Environment {
    /// Reads the variables with the prefix whose first part is a top-level key of the file;
    /// others (`PRIVACY_MILTER_CONFIG`, the test suite's `PRIVACY_MILTER_E2E`) are not
    /// configuration.
    fn new(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let schema = serde_json::to_value(Settings::default()).unwrap_or_default();
        let mut env = Self {
            values: Dict::new(),
            problems: Vec::new(),
        };
        // In order of name, so that errors come in the same order every time.
        let mut vars: Vec<(OsString, OsString)> = vars.into_iter().collect();
        vars.sort();
        for (name, raw) in vars {
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])
            else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if !TOP_LEVEL_KEYS.contains(&path[0].as_str()) {
                continue;
            }
            let typed = match raw.to_str() {
                None => Err("is not valid UTF-8".to_string()),
                Some(_) if path.iter().any(String::is_empty) => {
                    Err("names no key: the parts of a key are joined by \"__\"".to_string())
                }
                Some(text) => typed_value(&schema, &path, text),
            };
            match typed {
                Ok(value) => insert(&mut env.values, &path, value),
                Err(message) => env.problems.push(Problem {
                    origin: format!("environment variable {name}"),
                    key: join_key(&path),
                    message,
                }),
            }
        }
        env
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENVIRONMENT)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.values.clone())]))
    }
}

/// `text` as the type the schema gives the key at `path`.
fn typed_value(schema: &serde_json::Value, path: &[String], text: &str) -> Result<Value, String> {
    use serde_json::Value as Kind;
    let mut node = schema;
    for (depth, part) in path.iter().enumerate() {
        match node {
            Kind::Object(keys) => match keys.get(part) {
                Some(child) => node = child,
                // Unknown: the settings name it as such.
                None => return Ok(Value::from(text)),
            },
            _ => {
                return Err(format!(
                    "{} takes a value, not keys below it: set {ENV_PREFIX}{}",
                    path[..depth].join("."),
                    path[..depth].join("__").to_ascii_uppercase()
                ))
            }
        }
    }
    match node {
        Kind::Object(keys) => Err(format!(
            "names a table: set its keys one by one, such as {ENV_PREFIX}{}__{}",
            path.join("__").to_ascii_uppercase(),
            keys.keys()
                .next()
                .map_or("", String::as_str)
                .to_ascii_uppercase()
        )),
        Kind::Bool(_) => match text.trim() {
            t if t.eq_ignore_ascii_case("true") => Ok(Value::from(true)),
            t if t.eq_ignore_ascii_case("false") => Ok(Value::from(false)),
            _ => Err(format!("expected true or false, found {text:?}")),
        },
        Kind::Number(_) => text
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("expected a whole number (decimal digits), found {text:?}")),
        Kind::Array(_) => list(text).map(Value::from),
        _ => Ok(Value::from(text)),
    }
}

/// A list: a TOML array of strings, or entries separated by commas; empty for none.
fn list(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        let not_array = |why: String| {
            format!("expected a TOML array of strings such as [\"a\", \"b\"], or entries separated by commas: {why}")
        };
        let parsed = Toml::string(&format!("list = {trimmed}"))
            .data()
            .map_err(|e| not_array(e.to_string()))?;
        let array = parsed
            .get(&Profile::Default)
            .and_then(|dict| dict.get("list"))
            .and_then(Value::as_array)
            .ok_or_else(|| not_array("not an array".into()))?;
        return array
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| not_array(format!("entry {} is not a string", i + 1)))
            })
            .collect();
    }
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split(',')
        .enumerate()
        .map(|(i, entry)| match entry.trim() {
            "" => Err(format!(
                "entry {} is empty (entries are separated by commas)",
                i + 1
            )),
            entry => Ok(entry.to_string()),
        })
        .collect()
}

/// Puts `value` at `path` in `dict`, making the tables on the way.
fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [key] => {
            dict.insert(key.clone(), value);
        }
        [key, rest @ ..] => {
            let entry = dict
                .entry(key.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
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
        let env = Environment::new(std::env::vars_os());
        // A variable that is not of its key's type is an error of its own, beside the rest.
        let mut problems = env.problems.clone();
        let figment = Figment::new()
            .merge(Toml::file_exact(&self.path))
            .merge(env)
            .merge(CommandLine(&self.overrides));
        let extracted = figment.extract::<Settings>();
        if let Err(e) = &extracted {
            problems.extend(ConfigError::from_figment(&file, e.clone()).problems);
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let settings = extracted.map_err(|e| ConfigError::from_figment(&file, e))?;
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
        // A list's entry (`networks.trusted[1]`) comes from the list's variable.
        _ if md.name.contains("environment") => format!(
            "environment variable {ENV_PREFIX}{}",
            key.split('[')
                .next()
                .unwrap_or(key)
                .to_ascii_uppercase()
                .replace('.', "__")
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
    use proptest::prelude::*;

    /// The default settings with `vars` over them, as `Source::load` layers them.
    fn from_env(vars: &[(&str, &str)]) -> Result<Settings, Vec<Problem>> {
        let env = Environment::new(
            vars.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        if !env.problems.is_empty() {
            return Err(env.problems);
        }
        Figment::from(Serialized::defaults(Settings::default()))
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::from_figment("defaults", e).problems)
    }

    fn messages(problems: &[Problem]) -> String {
        problems
            .iter()
            .map(|p| format!("{}: {}: {}", p.origin, p.key, p.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_list_in_the_schema_holds_strings() {
        // The environment reads every list as strings; a list of numbers needs a new kind.
        fn walk(value: &serde_json::Value) {
            match value {
                serde_json::Value::Object(map) => map.values().for_each(walk),
                serde_json::Value::Array(items) => {
                    assert!(items.iter().all(serde_json::Value::is_string), "{items:?}")
                }
                _ => {}
            }
        }
        walk(&serde_json::to_value(Settings::default()).unwrap());
    }

    #[test]
    fn each_kind_is_read_as_its_type() {
        let s = from_env(&[
            ("PRIVACY_MILTER_SOCKET_MODE", "0600"),
            ("PRIVACY_MILTER_SOCKET_GROUP", "0660"),
            ("PRIVACY_MILTER_DRY_RUN", " TRUE "),
            ("PRIVACY_MILTER_EVENTS__QUEUE_SIZE", "0100"),
            ("PRIVACY_MILTER_EVENTS__JSONL__PATH", "1234"),
            ("PRIVACY_MILTER_RULES__TRANSIT_TAG__HEADER", "1234"),
            (
                "PRIVACY_MILTER_DOMAINS__LOCAL",
                "true.example, false.example",
            ),
            ("PRIVACY_MILTER_NETWORKS__WEBMAIL", r#"["192.0.2.0/24"]"#),
            ("PRIVACY_MILTER_RETENTION__RELAY", "7d"),
            ("privacy_milter_privacy__address", "hmac"),
            ("PRIVACY_MILTER_CONFIG", "/not/a/key"),
            ("OTHER", "x"),
        ])
        .unwrap_or_else(|p| panic!("{}", messages(&p)));
        assert_eq!(s.socket_mode.0, 0o600);
        assert_eq!(s.socket_group, "0660");
        assert!(s.dry_run);
        assert_eq!(s.events.queue_size, 100);
        assert_eq!(s.events.jsonl.path, PathBuf::from("1234"));
        assert_eq!(s.rules.transit_tag.header.as_str(), "1234");
        let local: Vec<&str> = s.domains.local.iter().map(|d| d.as_str()).collect();
        assert_eq!(local, ["true.example", "false.example"]);
        assert_eq!(s.networks.webmail.len(), 1);
        assert_eq!(s.retention.relay.0.as_secs(), 7 * 86400);
        assert_eq!(s.privacy.address, super::super::AddressPrivacy::Hmac);
    }

    #[test]
    fn problems_name_the_variable_and_the_key() {
        let problems = from_env(&[
            ("PRIVACY_MILTER_DRY_RUN", "yes"),
            ("PRIVACY_MILTER_EVENTS__QUEUE_SIZE", "-1"),
            ("PRIVACY_MILTER_EVENTS", "x"),
            ("PRIVACY_MILTER_SOCKET__PATH", "/x"),
            ("PRIVACY_MILTER_DOMAINS__LOCAL", "a.example,,b.example"),
            ("PRIVACY_MILTER_DOMAINS__LOCAL_MAILERS", "[1]"),
        ])
        .unwrap_err();
        let text = messages(&problems);
        for expected in [
            "environment variable PRIVACY_MILTER_DRY_RUN: dry_run: expected true or false",
            "environment variable PRIVACY_MILTER_EVENTS__QUEUE_SIZE: events.queue_size: expected a whole number",
            "environment variable PRIVACY_MILTER_EVENTS: events: names a table",
            "environment variable PRIVACY_MILTER_SOCKET__PATH: socket.path: socket takes a value",
            "environment variable PRIVACY_MILTER_DOMAINS__LOCAL: domains.local: entry 2 is empty",
            "environment variable PRIVACY_MILTER_DOMAINS__LOCAL_MAILERS: domains.local_mailers: expected a TOML array of strings",
        ] {
            assert!(text.contains(expected), "{expected:?} is not in:\n{text}");
        }
        let unknown = messages(&from_env(&[("PRIVACY_MILTER_LOG__LEVLE", "debug")]).unwrap_err());
        assert!(
            unknown.contains("log.levle") && unknown.contains("unknown key"),
            "{unknown}"
        );
    }

    /// A TOML basic string holding `s`.
    fn toml_string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn never_panics(
            name in "PRIVACY_MILTER_(SOCKET|SOCKET_MODE|DRY_RUN|EVENTS|EVENTS__SINKS|EVENTS__QUEUE_SIZE|NETWORKS__TRUSTED|RULES__ORIGINATING_IP|X)(__[A-Za-z_]{0,8}){0,2}",
            value in "\\PC*",
        ) {
            let _ = from_env(&[(&name, &value)]);
        }

        #[test]
        fn strings_are_taken_as_written(value in "[^\u{0}]*") {
            for key in ["SOCKET_GROUP", "EVENTS__POSTGRES__URL", "EVENTS__JSONL__PATH"] {
                let s = from_env(&[(&format!("PRIVACY_MILTER_{key}"), &value)])
                    .map_err(|p| TestCaseError::fail(messages(&p)))?;
                let got = match key {
                    "SOCKET_GROUP" => s.socket_group.clone(),
                    "EVENTS__POSTGRES__URL" => s.events.postgres.url.clone(),
                    _ => s.events.jsonl.path.to_string_lossy().into_owned(),
                };
                prop_assert_eq!(got, value.clone());
            }
        }

        #[test]
        fn modes_are_octal_strings(digits in "[0-7]{1,3}", zeros in "0{0,2}") {
            let text = format!("{zeros}{digits}");
            let s = from_env(&[("PRIVACY_MILTER_SOCKET_MODE", &text)])
                .map_err(|p| TestCaseError::fail(messages(&p)))?;
            prop_assert_eq!(s.socket_mode.0, u32::from_str_radix(&digits, 8).unwrap());
        }

        #[test]
        fn integers_are_decimal(n in 0u8..=255, width in 0usize..5, queue in 1usize..1_000_000) {
            let s = from_env(&[
                ("PRIVACY_MILTER_PRIVACY__IPV4_PREFIX", &format!(" {n:0width$} ")),
                ("PRIVACY_MILTER_EVENTS__QUEUE_SIZE", &queue.to_string()),
            ]).map_err(|p| TestCaseError::fail(messages(&p)))?;
            prop_assert_eq!(s.privacy.ipv4_prefix, n);
            prop_assert_eq!(s.events.queue_size, queue);
        }

        #[test]
        fn booleans_are_true_or_false(b in any::<bool>(), upper in any::<bool>(), other in "[a-z0-9 ]{0,6}") {
            let text = if upper { b.to_string().to_uppercase() } else { b.to_string() };
            let s = from_env(&[("PRIVACY_MILTER_DRY_RUN", &text)])
                .map_err(|p| TestCaseError::fail(messages(&p)))?;
            prop_assert_eq!(s.dry_run, b);
            if !matches!(other.trim(), "true" | "false") {
                prop_assert!(from_env(&[("PRIVACY_MILTER_DRY_RUN", &other)]).is_err());
            }
        }

        #[test]
        fn lists_are_toml_arrays_or_comma_separated(
            domains in prop::collection::vec("[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}", 0..5),
            space in "[ \t]{0,2}",
        ) {
            let comma = domains.join(&format!("{space},{space}"));
            let toml = format!(
                "[{}]",
                domains.iter().map(|d| toml_string(d)).collect::<Vec<_>>().join(", ")
            );
            for text in [comma, toml] {
                let s = from_env(&[("PRIVACY_MILTER_DOMAINS__LOCAL", &text)])
                    .map_err(|p| TestCaseError::fail(messages(&p)))?;
                let got: Vec<&str> = s.domains.local.iter().map(|d| d.as_str()).collect();
                prop_assert_eq!(got, domains.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }

        #[test]
        fn toml_lists_hold_any_string(mailers in prop::collection::vec("[^\u{0}]{1,12}", 0..4)) {
            let toml = format!(
                "[{}]",
                mailers.iter().map(|m| toml_string(m)).collect::<Vec<_>>().join(",")
            );
            let s = from_env(&[("PRIVACY_MILTER_DOMAINS__LOCAL_MAILERS", &toml)])
                .map_err(|p| TestCaseError::fail(messages(&p)))?;
            prop_assert_eq!(s.domains.local_mailers, mailers);
        }
    }

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
