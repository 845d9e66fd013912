//! `privacy-milter policy`: the policy text from the effective configuration. Golden files for
//! the shipped configuration and two others (`tests/policy/`; `UPDATE_GOLDEN=1` rewrites them
//! after a deliberate change of the text), and every key the text depends on changed one at a
//! time, each changing its sentence.
use privacy_milter::{
    commands::policy::{policy, Format},
    internals::Settings,
    Config,
};
use std::path::{Path, PathBuf};

fn root(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
}

/// The binary's `policy` output for a configuration file.
fn cli(config: &Path, format: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .env_remove("PRIVACY_MILTER_E2E")
        .arg("--config")
        .arg(config)
        .args(["policy", "--format", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = root(&format!("tests/policy/{name}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{name} differs from the golden file; if the change is meant, run with UPDATE_GOLDEN=1\n--- got ---\n{actual}"
    );
}

#[test]
fn the_shipped_configuration() {
    let shipped = root("conf/privacy-milter.toml");
    let text = cli(&shipped, "markdown");
    golden("shipped.md", &text);
    golden("shipped.html", &cli(&shipped, "html"));
    // The MTA's logs: raw for a day, then only the pseudonymised copy; not all in full for
    // the whole period.
    assert!(
        text.contains("They are kept in that form for 1 day only")
            && text.contains("After that only a copy of them remains")
            && text.contains("The copy is deleted after 7 days")
            && !text.contains("These logs are deleted after"),
        "{text}"
    );
}

#[test]
fn a_strict_configuration() {
    golden(
        "strict.md",
        &cli(&root("tests/policy/strict.toml"), "markdown"),
    );
}

#[test]
fn a_configuration_that_records_nothing() {
    golden(
        "minimal.md",
        &cli(&root("tests/policy/minimal.toml"), "markdown"),
    );
}

/// The shipped configuration with these keys changed, rendered.
fn render_with(changes: &[(&str, toml_value::V)]) -> String {
    use figment::providers::{Format as _, Toml};
    let mut figment = figment::Figment::from(Toml::file(root("conf/privacy-milter.toml")));
    for (key, value) in changes {
        figment = match value {
            toml_value::V::S(s) => figment.merge((*key, *s)),
            toml_value::V::B(b) => figment.merge((*key, *b)),
            toml_value::V::N(n) => figment.merge((*key, *n)),
            toml_value::V::L(l) => figment.merge((*key, l.to_vec())),
        };
    }
    let settings: Settings = figment.extract().unwrap();
    let config = Config::resolve(settings).unwrap();
    policy(&config, Format::Markdown).unwrap()
}

mod toml_value {
    pub enum V {
        S(&'static str),
        B(bool),
        N(u64),
        L(&'static [&'static str]),
    }
}
use toml_value::V::{B, L, N, S};

/// Each key the policy speaks of, set to another value (with what it needs beside it), and a
/// phrase that only the changed text holds.
#[test]
fn each_key_changes_its_sentence() {
    let base = render_with(&[]);
    let hmac = ("privacy.ip", S("hmac"));
    let tracking = ("tracking.enabled", B(true));
    let encrypted = ("rules.originating_ip.mode", S("encrypted"));
    let cases: Vec<(Vec<(&str, toml_value::V)>, &str)> = vec![
        (
            vec![("privacy.ip", S("full"))],
            "IP address of the client that handed the message to us: in full",
        ),
        (
            vec![("privacy.ip", S("omit"))],
            "handed the message to us: not recorded",
        ),
        (
            vec![hmac],
            "handed the message to us: only a keyed hash of it",
        ),
        (
            vec![("privacy.ipv4_prefix", N(16))],
            "the first 16 bits of an IPv4 address",
        ),
        (
            vec![("privacy.ipv6_prefix", N(56))],
            "the first 56 bits of an IPv6 address",
        ),
        (
            vec![("privacy.address", S("full"))],
            "each recipient's address: in full",
        ),
        (
            vec![("privacy.address", S("hmac"))],
            "a keyed hash of the whole address",
        ),
        (
            vec![("privacy.address", S("omit"))],
            "not recorded, nor its domain",
        ),
        (
            vec![
                ("privacy.ip", S("hmac")),
                ("privacy.key_rotation", S("14d")),
            ],
            "A new key is made every 14 days",
        ),
        (
            vec![("privacy.ip", S("hmac")), ("retention.inbound", S("120d"))],
            "A key is destroyed 120 days after",
        ),
        (
            vec![("retention.inbound", S("91d"))],
            "to our users: 91 days",
        ),
        (
            vec![("retention.outbound", S("92d"))],
            "to other servers: 92 days",
        ),
        (
            vec![("retention.internal", S("31d"))],
            "between our users: 31 days",
        ),
        (
            vec![("retention.relay", S("32d"))],
            "pass on to other servers: 32 days",
        ),
        (vec![("retention.rejected", S("33d"))], "refused: 33 days"),
        (vec![("retention.aborted", S("2d"))], "gave up: 2 days"),
        (
            vec![("retention.purge_interval", S("2h"))],
            "deleted within 2 hours",
        ),
        (
            vec![("retention.mta_logs", S("3d"))],
            "deleted after 3 days",
        ),
        (
            vec![("mta_logs.raw_window", S("2d"))],
            "kept in that form for 2 days only",
        ),
        (
            vec![("mta_logs.raw_window", S("30m"))],
            "kept in that form for 30 minutes only, to fight abuse and to fix faults. After that only a copy",
        ),
        (
            vec![("mta_logs.copy", S(""))],
            "addresses, in full. These logs are deleted after 7 days.",
        ),
        (
            vec![("privacy.ip", S("hmac"))],
            "each IP address and each host name of a client or server is replaced by a keyed hash of it (HMAC-SHA256, the same as in our records)",
        ),
        (
            vec![("privacy.ip", S("full"))],
            "IP addresses and the host names of clients and servers stay in full",
        ),
        (
            vec![("privacy.ip", S("omit"))],
            "IP addresses and the host names of clients and servers are removed",
        ),
        (
            vec![("privacy.address", S("hmac"))],
            "each user name and session identifier by a keyed hash of it",
        ),
        (
            vec![("privacy.address", S("full"))],
            "e-mail addresses and user names stay in full",
        ),
        (
            vec![("privacy.address", S("omit"))],
            "e-mail addresses, user names and session identifiers are removed",
        ),
        (vec![("events.enabled", B(false))], "keeps no record"),
        (
            vec![
                ("events.sinks", L(&["postgres"])),
                ("events.postgres.url", S("postgresql://pm@db/privacy")),
            ],
            "in a database on our own infrastructure",
        ),
        (
            vec![("events.sinks", L(&["ledger", "jsonl"]))],
            "also appended to a file",
        ),
        (
            vec![("events.sinks", L(&["ledger", "log"]))],
            "also written to our mail filter's log",
        ),
        (vec![("dry_run", B(true))], "trial mode"),
        (
            vec![("rules.originating_ip.enabled", B(false))],
            "neither adds nor removes a header field",
        ),
        (
            vec![("rules.originating_ip.header", S("X-Sender-IP"))],
            "header field `X-Sender-IP` with",
        ),
        (
            vec![("rules.originating_ip.mode", S("off"))],
            "carries no IP address from us",
        ),
        (
            vec![("rules.originating_ip.mode", S("truncated"))],
            "only the network of the IP address from which it was sent",
        ),
        (
            vec![
                ("rules.originating_ip.mode", S("truncated")),
                ("rules.originating_ip.ipv4_prefix", N(16)),
            ],
            "its first 16 bits for IPv4",
        ),
        (
            vec![encrypted],
            "an encrypted token instead of the IP address",
        ),
        (
            vec![("rules.transit_tag.enabled", B(false))],
            "deleted from our queue.\n",
        ),
        (
            vec![("rules.transit_tag.header", S("X-Relayed"))],
            "header field `X-Relayed`",
        ),
        (vec![tracking], "when the next server accepted it"),
        (
            vec![
                ("tracking.enabled", B(true)),
                ("tracking.alert_after", S("3h")),
            ],
            "still queued after 3 hours",
        ),
        (
            vec![("policy.name", S("Mailbox Cooperative"))],
            "Responsible for this mail service: Mailbox Cooperative.",
        ),
        (
            vec![("policy.contact", S("dpo@example.org"))],
            "write to dpo@example.org.",
        ),
        (
            vec![("policy.contact", S(""))],
            "Responsible for this mail service: Example Org.\n",
        ),
        (
            vec![("policy.text", S("We answer within a week."))],
            "We answer within a week.",
        ),
    ];
    let mut checked = 0;
    for (changes, phrase) in cases {
        let keys: Vec<&str> = changes.iter().map(|(k, _)| *k).collect();
        let text = render_with(&changes);
        assert_ne!(text, base, "changing {keys:?} changed nothing");
        assert!(
            text.contains(phrase) && !base.contains(phrase),
            "changing {keys:?}: expected {phrase:?} in the new text only\n{text}"
        );
        checked += 1;
    }
    assert!(checked > 30);
}

/// The default `[policy]` names nobody: the text says "the operator", not an empty name.
#[test]
fn no_operator_named() {
    let config = Config::resolve(Settings::default()).unwrap();
    let text = policy(&config, Format::Markdown).unwrap();
    assert!(
        text.contains("Responsible for this mail service: the operator of this mail service."),
        "{text}"
    );
    assert!(!text.contains("write to"), "{text}");
}
