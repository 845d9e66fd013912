//! What Postfix says of its queue and itself: `postqueue -j` (Postfix 3.1+, one JSON object
//! per queued message) and `postconf -h`, with `-c` for an instance's configuration directory.

use crate::config::Config;
use std::{collections::HashSet, io, process::Command};

/// A Postfix command, with the instance's configuration directory when one is set; found on
/// the PATH or in /usr/sbin (where Debian puts them, outside a user's PATH).
fn postfix_command(config: &Config, name: &str) -> Command {
    let program = if std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(name).is_file())
    {
        name.to_string()
    } else {
        format!("/usr/sbin/{name}")
    };
    let mut command = Command::new(program);
    let dir = &config.tracking.postfix_config_dir;
    if !dir.as_os_str().is_empty() {
        command.arg("-c").arg(dir);
    }
    command
}

/// The value of a Postfix parameter, if `postconf` can say.
pub fn postconf(config: &Config, parameter: &str) -> Option<String> {
    let out = postfix_command(config, "postconf")
        .args(["-h", parameter])
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !value.is_empty()).then_some(value)
}

/// The queue ids of every message in the queue (incoming, active, deferred, hold).
pub fn postfix_queue(config: &Config) -> io::Result<HashSet<String>> {
    let out = postfix_command(config, "postqueue").arg("-j").output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "postqueue -j: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(queue_ids(&String::from_utf8_lossy(&out.stdout)))
}

/// The `queue_id` of each line of `postqueue -j` output; lines that are not such objects are
/// skipped.
fn queue_ids(output: &str) -> HashSet<String> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| v.get("queue_id")?.as_str().map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_from_postqueue_output() {
        // As Postfix 3.7 prints it (one object per line).
        let out = r#"{"queue_name": "deferred", "queue_id": "3B3AE9AC053", "arrival_time": 1764450393, "message_size": 412, "forced_expire": false, "sender": "a@example.org", "recipients": [{"address": "b@remote.example", "delay_reason": "connect to 127.0.0.1[127.0.0.1]:25302: Connection refused"}]}
{"queue_name": "hold", "queue_id": "4T02Hr4S5hz9vf6k", "arrival_time": 1764450394, "message_size": 500, "forced_expire": false, "sender": "", "recipients": []}
postqueue: warning: something
"#;
        let ids = queue_ids(out);
        let expected: HashSet<String> =
            ["3B3AE9AC053", "4T02Hr4S5hz9vf6k"].map(String::from).into();
        assert_eq!(ids, expected);
    }
}
