//! `check-config` accepts the shipped file and names the file, the key and the problem in
//! every error, exiting 1.
use std::process::{Command, Output};

fn check(config: &str, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .args(["--config", config, "check-config"])
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn case(name: &str) -> String {
    format!("{}/tests/config_errors/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn assert_error(output: &Output, parts: &[&str]) {
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for part in parts {
        assert!(stderr.contains(part), "{part:?} missing from:\n{stderr}");
    }
}

#[test]
fn shipped_config_passes() {
    let shipped = format!("{}/conf/privacy-milter.toml", env!("CARGO_MANIFEST_DIR"));
    // The shipped socket group may not exist on a build machine; that is checked elsewhere.
    let output = check(&shipped, &[("PRIVACY_MILTER_SOCKET_GROUP", "")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("rule originating_ip: on"), "{stdout}");
    assert!(stdout.contains("rule transit_tag: on"), "{stdout}");
    assert!(
        stdout.contains("socket: unix:/run/privacy-milter/privacy-milter.sock"),
        "{stdout}"
    );
    // The embedded ledger is where events go unless the operator says otherwise.
    assert!(
        stdout.contains("sinks ledger (/var/lib/privacy-milter/ledger.sqlite)"),
        "{stdout}"
    );
    // The MTA's log: raw for a day, then only the pseudonymised copy.
    assert!(
        stdout.contains("MTA logs: raw lines kept 1d, then only a pseudonymised copy in /var/log/privacy-milter/mta (written by privacy-milter track, under [privacy]) until 7d"),
        "{stdout}"
    );
    // And the answer waits for the event (the shipped default).
    assert!(
        stdout.contains(", durability sync, on error accept"),
        "{stdout}"
    );
}

#[test]
fn unknown_key() {
    let output = check(&case("unknown_key.toml"), &[]);
    assert_error(
        &output,
        &[
            "unknown_key.toml",
            "rules.originating_ip.headr",
            "unknown key",
        ],
    );
}

#[test]
fn bad_network() {
    let output = check(&case("bad_network.toml"), &[]);
    assert_error(
        &output,
        &[
            "bad_network.toml",
            "networks.trusted[1]",
            "10.0.0.0/33",
            "0 to 32",
        ],
    );
}

#[test]
fn bad_header_name() {
    let output = check(&case("bad_header.toml"), &[]);
    assert_error(
        &output,
        &[
            "bad_header.toml",
            "rules.transit_tag.header",
            "X-Transit: yes",
        ],
    );
}

#[test]
fn bad_duration() {
    let output = check(&case("bad_duration.toml"), &[]);
    assert_error(
        &output,
        &["bad_duration.toml", "retention.relay", "30 days", "unit"],
    );
}

#[test]
fn bad_socket() {
    let output = check(&case("bad_socket.toml"), &[]);
    assert_error(
        &output,
        &["bad_socket.toml", "key socket", "tcp:25", "inet:PORT@HOST"],
    );
}

#[test]
fn environment_override_is_named() {
    let output = check(
        &case("bad_duration.toml"),
        &[("PRIVACY_MILTER_RETENTION__RELAY", "7x")],
    );
    assert_error(
        &output,
        &[
            "environment variable PRIVACY_MILTER_RETENTION__RELAY",
            "retention.relay",
            "7x",
        ],
    );
    let output = check(
        &case("bad_duration.toml"),
        &[("PRIVACY_MILTER_RETENTION__RELAY", "7d")],
    );
    assert!(output.status.success());
}

#[test]
fn other_variables_with_the_prefix_are_not_config() {
    let output = check(
        &case("bad_duration.toml"),
        &[
            ("PRIVACY_MILTER_RETENTION__RELAY", "7d"),
            ("PRIVACY_MILTER_E2E", "require"),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Inside a known table a misspelt variable is still an error.
    let output = check(
        &case("bad_duration.toml"),
        &[
            ("PRIVACY_MILTER_RETENTION__RELAY", "7d"),
            ("PRIVACY_MILTER_RULES__TRANSIT_TAG__ENABLD", "false"),
        ],
    );
    assert_error(&output, &["rules.transit_tag.enabld", "unknown key"]);
}

#[test]
fn missing_file_and_missing_group() {
    assert_error(
        &check("/nonexistent/privacy-milter.toml", &[]),
        &["/nonexistent/privacy-milter.toml", "cannot read"],
    );
    let output = check(
        &case("bad_duration.toml"),
        &[
            ("PRIVACY_MILTER_RETENTION__RELAY", "7d"),
            ("PRIVACY_MILTER_SOCKET_GROUP", "no-such-group-here"),
        ],
    );
    assert_error(
        &output,
        &["socket_group", "no-such-group-here", "does not exist"],
    );
}

#[test]
fn unknown_value_lists_the_known_ones() {
    let output = check(&case("bad_value.toml"), &[]);
    assert_error(
        &output,
        &[
            "bad_value.toml: key events.durability: unknown value \"eventually\"; \
             expected one of: sync, async",
        ],
    );
}

#[test]
fn command_line_option_is_named() {
    let shipped = format!("{}/conf/privacy-milter.toml", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .args([
            "--config",
            &shipped,
            "--socket",
            "8894@127.0.0.1",
            "check-config",
        ])
        .env("PRIVACY_MILTER_SOCKET_GROUP", "")
        .output()
        .unwrap();
    assert_error(
        &output,
        &["command line (--socket): key socket: invalid socket \"8894@127.0.0.1\""],
    );
    let output = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .args(["--config", &shipped, "--log-level", "loud", "check-config"])
        .env("PRIVACY_MILTER_SOCKET_GROUP", "")
        .output()
        .unwrap();
    assert_error(&output, &["command line (--log-level): key log.level"]);
}
