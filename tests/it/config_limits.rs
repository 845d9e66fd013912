//! Values `check-config` used to accept but the daemon cannot use are refused at load, naming
//! the key and the limit: a count beyond what the daemon can hold (`events.queue_size` near
//! 2^61 panicked the daemon after it said "listening"), a period beyond what PostgreSQL or
//! the kernel take (every connection then failed for ever), a file that is not a regular file
//! of a sane size (`ca_file = "/dev/zero"` was read without end), a sink named twice (every
//! event written twice). One case per kind of key.

use crate::common::*;
use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

/// The base configuration with `from` replaced by `to`, written in `dir`.
fn config_with(dir: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let base = case_config("config_limits/privacy-milter.toml", dir);
    assert!(
        base.contains(from),
        "{from:?} is not in the base configuration"
    );
    let path = dir.join("privacy-milter.toml");
    std::fs::write(&path, base.replace(from, to)).unwrap();
    path
}

/// Runs the binary with `args`, ended after a minute (a test must fail, not hang, where a
/// file is read without end).
fn run_bounded(config: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..2400 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "privacy-milter {args:?} did not finish:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check-config` with `from` replaced by `to` is refused with every one of `says`.
fn refused(from: &str, to: &str, says: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), from, to);
    let out = run_bounded(&config, &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{to} was accepted: {err}");
    for part in says {
        assert!(err.contains(part), "{to}: {part:?} is not in:\n{err}");
    }
}

/// `check-config` with `from` replaced by `to` passes.
fn accepted(from: &str, to: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), from, to);
    let out = run_bounded(&config, &["check-config"]);
    assert!(
        out.status.success(),
        "{to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_base_configuration_passes() {
    accepted("queue_size = 10000", "queue_size = 10000");
}

/// Counts: the async queue (tokio's semaphore holds at most 2^61 places; each waiting event
/// holds its memory) and the PostgreSQL pool.
#[test]
fn counts_are_bounded() {
    refused(
        "queue_size = 10000",
        "queue_size = 2305843009213693952",
        &["key events.queue_size", "at most 1000000"],
    );
    accepted("queue_size = 10000", "queue_size = 1000000");
    refused(
        "pool_size = 4",
        "pool_size = 101",
        &["key events.postgres.pool_size", "at most 100"],
    );
    accepted("pool_size = 4", "pool_size = 100");
}

/// The daemon itself refuses such a queue before it listens, instead of panicking after.
#[test]
fn the_daemon_refuses_a_queue_it_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "queue_size = 10000",
        "queue_size = 2305843009213693952",
    );
    let out = run_bounded(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("key events.queue_size"), "{err}");
    assert!(
        !err.contains("listening") && !err.contains("panicked"),
        "{err}"
    );
}

/// Periods: PostgreSQL takes a statement_timeout of at most 2^31-1 ms (24.8 days); the
/// kernel a TCP_USER_TIMEOUT (three times connect_timeout) of as much; a purge interval
/// longer than a day lets expired events outlive their retention by as much.
#[test]
fn periods_are_bounded() {
    refused(
        "statement_timeout = \"10s\"",
        "statement_timeout = \"25d\"",
        &["key events.postgres.statement_timeout", "at most 24d"],
    );
    accepted("statement_timeout = \"10s\"", "statement_timeout = \"24d\"");
    accepted("statement_timeout = \"10s\"", "statement_timeout = \"0s\"");
    refused(
        "connect_timeout = \"5s\"",
        "connect_timeout = \"9d\"",
        &["key events.postgres.connect_timeout", "at most 1h"],
    );
    accepted("connect_timeout = \"5s\"", "connect_timeout = \"1h\"");
    refused(
        "purge_interval = \"1h\"",
        "purge_interval = \"2d\"",
        &["key retention.purge_interval", "at most 1d"],
    );
    accepted("purge_interval = \"1h\"", "purge_interval = \"1d\"");
}

/// Files: only a regular file of a sane size is read (1 MiB of CA certificates, 16 MiB of
/// local domains); a device or a FIFO would be read without end.
#[test]
fn named_files_must_be_regular_files_of_a_sane_size() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'#'; (1 << 20) + 1]).unwrap();
    for (path, says) in [
        ("/dev/zero", "not a regular file"),
        (big.to_str().unwrap(), "larger than 1 MiB"),
    ] {
        refused(
            "ca_file = \"\"",
            &format!("ca_file = \"{path}\""),
            &["key events.postgres.ca_file", path, says],
        );
    }
    refused(
        "local_file = \"\"",
        "local_file = \"/dev/zero\"",
        &["key domains.local_file", "/dev/zero", "not a regular file"],
    );
}

/// A sink named twice would get every event twice.
#[test]
fn a_sink_named_twice_is_refused() {
    refused(
        "sinks = [\"postgres\", \"jsonl\"]",
        "sinks = [\"jsonl\", \"postgres\", \"jsonl\"]",
        &["key events.sinks", "\"jsonl\" is named twice"],
    );
}

/// `[mta_logs]`: raw lines kept no longer than the log at all, a copy kept in whole days, in a
/// directory of its own (in the log's, its files would pass for the log's rotations).
#[test]
fn the_raw_window_and_the_copy_are_bounded() {
    refused(
        "raw_window = \"1d\"",
        "raw_window = \"8d\"",
        &[
            "privacy-milter.toml",
            "key mta_logs.raw_window",
            "8d is longer than retention.mta_logs (7d)",
        ],
    );
    accepted("raw_window = \"1d\"", "raw_window = \"7d\"");
    // No window at all cannot be kept (the MTA writes each line raw before anyone reads it),
    // nor one shorter than the copy may lag.
    for short in ["0s", "4m", "299s"] {
        refused(
            "raw_window = \"1d\"",
            &format!("raw_window = \"{short}\""),
            &[
                "privacy-milter.toml",
                "key mta_logs.raw_window",
                "is shorter than 5m, the time the copy may lag behind the log",
            ],
        );
    }
    accepted("raw_window = \"1d\"", "raw_window = \"5m\"");
    refused(
        "mta_logs = \"7d\"",
        "mta_logs = \"12h\"",
        &["key retention.mta_logs", "shorter than a day"],
    );
    // Without a copy the raw window means nothing, and a short retention is the operator's.
    accepted(
        "mta_logs = \"7d\"\n\n[mta_logs]\ncopy = \"/nonexistent/privacy-milter/mta\"",
        "mta_logs = \"12h\"\n\n[mta_logs]\ncopy = \"\"",
    );
    refused(
        "copy = \"/nonexistent/privacy-milter/mta\"",
        "copy = \"/var/log\"",
        &["key mta_logs.copy", "the directory of tracking.path"],
    );
    refused(
        "copy = \"/nonexistent/privacy-milter/mta\"",
        "copy = \"mta\"",
        &["key mta_logs.copy", "not an absolute path"],
    );
}
