//! The command line, as clap reads it: what the operator wrote, each value checked and typed as
//! it is parsed (a format is one of its enum's names, a time a time, a state a state), so that a
//! bad value is clap's usage error before the configuration is read. What the program then runs
//! with is the configuration's [`Source`] ([`Cli::source`]) and a command's arguments, handed on
//! as they are; `main.rs` dispatches them.
//!
//! The format enums (`ListFormat`, `ExportFormat`, `audit::Format`, `policy::Format`) derive
//! clap's `ValueEnum` where they are defined, and their variants carry no doc comments: clap
//! would print those under each `--format`, whose own help already names the values.
//!
//! `packaging/privacy-milter.8` documents every command and flag defined here
//! (`tests/it/cli.rs` walks this tree and fails on one it does not name).

use crate::{
    commands::{
        audit,
        ledger::{self, ExportFormat, Subject},
        policy, ListFormat,
    },
    config::{LogOverride, Overrides, Period, Source, DEFAULT_PATH},
    transit::State,
};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use std::{net::IpAddr, path::PathBuf, time::Duration};

/// Milter that makes a mail privacy policy true: X-Originating-IP for our own senders,
/// transit tagging, and one pseudonymised event per message.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', env = "PRIVACY_MILTER_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Listen here instead of the configured socket (unix:/PATH, inet:PORT@HOST, inet6:PORT@[HOST]).
    #[arg(long, global = true)]
    pub socket: Option<String>,
    /// Decide, log and record events, but change no header.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The configuration file with the flags that override it.
    pub fn source(&self) -> Source {
        Source {
            path: self.config.clone(),
            overrides: Overrides {
                socket: self.socket.clone(),
                dry_run: self.dry_run.then_some(true),
                log: self.log_level.clone().map(|level| LogOverride { level }),
            },
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the milter (the default).
    Run,
    /// Validate the configuration, print a summary of the effective rules, and exit.
    CheckConfig,
    /// Answer for what the ledger holds: query, erase, export, stats, purge.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Open encrypted X-Originating-IP tokens (rules.originating_ip.mode = "encrypted").
    #[command(subcommand)]
    Ip(IpCommand),
    /// Tell whether a transit header's value is our tag for the message with this Message-ID
    /// (exit status 0) or someone else's, which vouches for nothing (exit status 1).
    VerifyTag {
        /// The message's Message-ID (with or without angle brackets); leave it out for a
        /// message that has none.
        #[arg(long)]
        message_id: Option<String>,
        /// The header's value: `relay; by=...; k=...; mac=...`.
        value: String,
    },
    /// Follow the MTA's log and queue, and record what became of the mail we pass on.
    Track {
        /// Read what the log holds now, check the queue once, and exit.
        #[arg(long)]
        once: bool,
    },
    /// Print the mail-privacy section of the privacy policy that this configuration makes true.
    Policy {
        /// markdown or html (an HTML fragment: one <section>).
        #[arg(long, value_enum, default_value_t = policy::Format::Markdown)]
        format: policy::Format,
    },
    /// Check this host against the policy: the MTA's logs, the ledger, the keys, transit mail,
    /// the MTA and its socket, where data goes. Exit status 1 when a finding fails.
    Audit {
        /// text or json ({"findings": [{"check", "ok", "detail", "fix"}]}).
        #[arg(long, value_enum, default_value_t = audit::Format::Text)]
        format: audit::Format,
    },
    /// Write a self-contained HTML page: what the ledger holds and when it expires, events per
    /// day, transit mail, the audit's findings and the policy text.
    Report {
        /// The HTML file to write.
        #[arg(long, value_name = "FILE.html")]
        output: PathBuf,
    },
    /// List transit messages: their state, how long they were held, their delivery attempts.
    Transit {
        /// Only those held at least this long (30s, 15m, 1h, 2d).
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        held_longer_than: Option<Duration>,
        /// Only those in these states (pending, deferred, acknowledged, removed, bounced,
        /// expired, gone); repeat or separate with commas.
        #[arg(long, value_delimiter = ',', value_parser = state)]
        state: Vec<State>,
        /// table or json.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum IpCommand {
    /// Print the address inside a token and the id of the key that made it.
    Decrypt {
        /// The header value (enc:... with or without brackets) or the bare token.
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Delete every event whose retention period has passed.
    Purge,
    /// Show the events held about an address or an IP address.
    Query {
        #[command(flatten)]
        subject: SubjectArgs,
        /// table or json.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Delete the events held about an address or an IP address, and say how many.
    Erase {
        #[command(flatten)]
        subject: SubjectArgs,
    },
    /// Write events (all, or those from --since until before --until) to standard output.
    Export {
        /// A date (2026-11-26) or an RFC 3339 time.
        #[arg(long, value_parser = time)]
        since: Option<DateTime<Utc>>,
        /// Only those before this time (a date or an RFC 3339 time).
        #[arg(long, value_parser = time)]
        until: Option<DateTime<Utc>>,
        /// jsonl or csv.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// Counts per retention class and direction, the oldest record and the next expiry.
    Stats,
}

/// Whom a `ledger query` or `ledger erase` is about: exactly one of the two.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct SubjectArgs {
    /// An e-mail address.
    #[arg(long)]
    address: Option<String>,
    /// An IPv4 or IPv6 address.
    #[arg(long)]
    ip: Option<IpAddr>,
}

impl SubjectArgs {
    pub fn subject(&self) -> Subject {
        match (&self.address, self.ip) {
            (Some(a), _) => Subject::Address(a.clone()),
            (None, Some(ip)) => Subject::Ip(ip),
            (None, None) => unreachable!("clap requires one"),
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    Period::try_from(text.to_string()).map(|p| p.0)
}

/// One of a list separated by commas, which may have spaces after them.
fn state(text: &str) -> Result<State, String> {
    text.trim().parse()
}

fn time(text: &str) -> Result<DateTime<Utc>, String> {
    ledger::parse_time(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_hold_together() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_are_typed_as_they_are_parsed() {
        let cli = Cli::try_parse_from([
            "privacy-milter",
            "transit",
            "--held-longer-than",
            "2h",
            "--state",
            "deferred, removed",
            "--format",
            "json",
        ])
        .unwrap();
        let Some(Command::Transit {
            held_longer_than,
            state,
            format,
        }) = cli.command
        else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(held_longer_than, Some(Duration::from_secs(7200)));
        assert_eq!(state, [State::Deferred, State::Removed]);
        assert_eq!(format, ListFormat::Json);

        let bad = |args: &[&str]| {
            let args = ["privacy-milter"].iter().chain(args);
            Cli::try_parse_from(args).unwrap_err().to_string()
        };
        let e = bad(&["transit", "--state", "pending,lost"]);
        assert!(
            e.contains("--state") && e.contains("unknown state \"lost\""),
            "{e}"
        );
        let e = bad(&["transit", "--held-longer-than", "soon"]);
        assert!(e.contains("invalid duration \"soon\""), "{e}");
        let e = bad(&["ledger", "export", "--since", "2026-13-01"]);
        assert!(e.contains("--since") && e.contains("invalid time"), "{e}");
        let e = bad(&["ledger", "query", "--ip", "192.0.2.1", "--format", "csv"]);
        assert!(e.contains("possible values: table, json"), "{e}");
        let e = bad(&["ledger", "erase"]);
        assert!(e.contains("--address") && e.contains("--ip"), "{e}");
    }
}
