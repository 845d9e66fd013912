//! What a reload (SIGHUP) may change. The socket, the connection limits, logging and the event
//! queue are set up once at start; a reload that changes them keeps the running values (so the
//! running configuration always describes what runs) and says, every time, that they need a
//! restart. A sink that a reload cannot open keeps its running settings too.
//!
//! `[tracking]` and `[mta_logs]` are read by `privacy-milter track`, a process of its own that
//! reads its configuration once: a SIGHUP to it reloads nothing, and a change of where the
//! log is, of the copy's directory or of its raw window takes effect when it restarts (the
//! copy goes on from the place saved with the tracker's). The daemon takes their new values
//! on reload, as it uses none of them.

use super::{Config, SinkKind};

/// Copies the settings that need a restart from `running` into `new`, and returns the keys
/// whose new value differs (and so waits for a restart).
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let (old, settings) = (running.settings(), &mut new.settings);
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $key:literal) => {
            if settings.$($field).+ != old.$($field).+ {
                changed.push($key);
                settings.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!(socket, "socket");
    keep!(socket_mode, "socket_mode");
    keep!(socket_group, "socket_group");
    keep!(max_connections, "max_connections");
    keep!(session_timeout, "session_timeout");
    keep!(log.level, "log.level");
    keep!(log.destination, "log.destination");
    keep!(log.syslog_socket, "log.syslog_socket");
    keep!(events.queue_size, "events.queue_size");
    keep!(metrics.listen, "metrics.listen");
    changed
}

/// After a reload that could not open the sinks `kept` with `new`'s settings: puts back
/// their running settings (the sinks run on as they were), and leaves out of
/// `events.sinks` those that were not running (nothing runs for them).
pub fn keep_running_sinks(running: &Config, new: &mut Config, kept: &[SinkKind]) {
    let (old, events) = (&running.settings.events, &mut new.settings.events);
    for kind in kept {
        if !(old.enabled && old.sinks.contains(kind)) {
            events.sinks.retain(|k| k != kind);
            continue;
        }
        match kind {
            SinkKind::Ledger => events.ledger = old.ledger.clone(),
            SinkKind::Postgres => {
                events.postgres = old.postgres.clone();
                new.postgres_roots = running.postgres_roots.clone();
            }
            SinkKind::Jsonl => events.jsonl = old.jsonl.clone(),
            SinkKind::Log => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogLevel, SocketSpec};

    #[test]
    fn restart_only_settings_stay_and_are_named() {
        let running = Config::default();
        let mut new = Config::default();
        new.settings.socket = SocketSpec::Unix("/run/other.sock".into());
        new.settings.log.level = LogLevel::Debug;
        new.settings.dry_run = true;
        let changed = keep_restart_only(&running, &mut new);
        assert_eq!(changed, ["socket", "log.level"]);
        assert_eq!(new.socket, running.socket);
        assert_eq!(new.log.level, running.log.level);
        assert!(new.dry_run, "a setting a reload may change was kept back");
        assert!(keep_restart_only(&running, &mut new).is_empty());
    }

    /// A sink that was running keeps its settings; one that was not leaves the list.
    #[test]
    fn sinks_not_reopened_keep_what_runs() {
        let running = Config::default();
        let mut new = Config::default();
        new.settings.events.sinks = vec![SinkKind::Ledger, SinkKind::Jsonl];
        new.settings.events.ledger.path = "/elsewhere/ledger.sqlite".into();
        new.settings.events.jsonl.path = "/nowhere/events.jsonl".into();
        keep_running_sinks(&running, &mut new, &[SinkKind::Ledger, SinkKind::Jsonl]);
        assert_eq!(new.events.sinks, [SinkKind::Ledger]);
        assert_eq!(new.events.ledger.path, running.events.ledger.path);
    }
}
