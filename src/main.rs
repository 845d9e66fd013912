//! The `privacy-milter` command: parse the command line, dispatch to the daemon
//! ([`privacy_milter::run`], with logging, signals and the socket set up here) or to a
//! command, and print any error, with its causes, in one place ([`report`]).

use clap::{Parser, Subcommand};
use privacy_milter::{
    commands::{
        self,
        ledger::{self as ledger_cmd, Format, Subject},
    },
    Listener, LogOverride, Overrides, Reload, Source,
};
use sd_notify::NotifyState;
use std::{path::PathBuf, process::ExitCode};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
};
use tracing::{error, info};

/// Milter that makes a mail privacy policy true: X-Originating-IP for our own senders,
/// transit tagging, and one pseudonymised event per message.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', env = "PRIVACY_MILTER_CONFIG", default_value = privacy_milter::DEFAULT_PATH)]
    config: PathBuf,
    /// Listen here instead of the configured socket (unix:/PATH, inet:PORT@HOST, inet6:PORT@[HOST]).
    #[arg(long, global = true)]
    socket: Option<String>,
    /// Decide, log and record events, but change no header.
    #[arg(long, global = true)]
    dry_run: bool,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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
        #[arg(long, default_value = "markdown", value_parser = ["markdown", "html"])]
        format: String,
    },
    /// Check this host against the policy: the MTA's logs, the ledger, the keys, transit mail,
    /// the MTA and its socket, where data goes. Exit status 1 when a finding fails.
    Audit {
        /// text or json ({"findings": [{"check", "ok", "detail", "fix"}]}).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
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
        #[arg(long, value_name = "DURATION")]
        held_longer_than: Option<String>,
        /// Only those in these states (pending, deferred, acknowledged, removed, bounced,
        /// expired, gone); repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        /// table or json.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
}

#[derive(Subcommand)]
enum IpCommand {
    /// Print the address inside a token and the id of the key that made it.
    Decrypt {
        /// The header value (enc:... with or without brackets) or the bare token.
        token: String,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Delete every event whose retention period has passed.
    Purge,
    /// Show the events held about an address or an IP address.
    Query {
        #[command(flatten)]
        subject: SubjectArgs,
        /// table or json.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Delete the events held about an address or an IP address, and say how many.
    Erase {
        #[command(flatten)]
        subject: SubjectArgs,
    },
    /// Write events (all, or those from --since until before --until) to standard output.
    Export {
        /// A date (2026-11-26) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// jsonl or csv.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
    },
    /// Counts per retention class and direction, the oldest record and the next expiry.
    Stats,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct SubjectArgs {
    /// An e-mail address.
    #[arg(long)]
    address: Option<String>,
    /// An IPv4 or IPv6 address.
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
}

impl SubjectArgs {
    fn subject(&self) -> Subject {
        match (&self.address, self.ip) {
            (Some(a), _) => Subject::Address(a.clone()),
            (None, Some(ip)) => Subject::Ip(ip),
            (None, None) => unreachable!("clap requires one"),
        }
    }
}

impl Cli {
    fn source(&self) -> Source {
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

/// Prints an error and each of its causes (those its own text does not already say) as the
/// one line `privacy-milter: ERROR: CAUSE: ...`, or, for a configuration error, its lines.
fn report(error: &dyn std::error::Error) {
    privacy_milter::report_error(&privacy_milter::error_chain(error));
}

/// The runtime of a long-running command: one thread (see `Command::Run`); `None`, with the
/// error logged, if it cannot be made.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .inspect_err(|e| error!("cannot start the runtime: {e}"))
        .ok()
}

/// A command's output, or its error reported.
fn finish<E: std::error::Error>(result: Result<String, E>) -> ExitCode {
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// A problem with the command line's own values.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = cli.source();
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            privacy_milter::report_error(&format!("configuration error\n{e}"));
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!("{}: OK\n{}", source.path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Command::Ledger(command) => match ledger(&config, command) {
            Ok(result) => finish(result),
            Err(usage) => finish::<Usage>(Err(usage)),
        },
        Command::Ip(IpCommand::Decrypt { token }) => finish(commands::ip::decrypt(&config, &token)),
        Command::VerifyTag { message_id, value } => finish(commands::tag::verify(
            &config,
            &value,
            message_id.as_deref(),
        )),
        Command::Audit { format } => {
            let format = if format == "json" {
                commands::audit::Format::Json
            } else {
                commands::audit::Format::Text
            };
            let (text, ok) = commands::audit::audit(&config, format);
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Report { output } => finish(commands::report::report(&config, &output)),
        Command::Policy { format } => {
            let format = if format == "html" {
                commands::policy::Format::Html
            } else {
                commands::policy::Format::Markdown
            };
            finish(commands::policy::policy(&config, format))
        }
        Command::Transit {
            held_longer_than,
            state,
            format,
        } => match transit_args(held_longer_than, &state) {
            Ok((held, states)) => {
                let format = if format == "json" {
                    commands::transit::Format::Json
                } else {
                    commands::transit::Format::Table
                };
                finish(commands::transit::list(&config, held, &states, format))
            }
            Err(usage) => finish::<Usage>(Err(usage)),
        },
        Command::Track { once } => {
            if let Err(e) = privacy_milter::init_logging(&config.log) {
                privacy_milter::report_error(&e);
                return ExitCode::FAILURE;
            }
            track(config, once)
        }
        Command::Run => {
            if let Err(e) = privacy_milter::init_logging(&config.log) {
                privacy_milter::report_error(&e);
                return ExitCode::FAILURE;
            }
            // One thread for every milter session: a session is a few microseconds of work
            // between waits, and on one thread no wake-up crosses between threads (measured:
            // 0.36-0.46 ms of CPU per message behind Postfix against 0.65-0.82 with a worker
            // pool; docs/performance.md). Events are written on a thread of their own.
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The `transit` command's filters, or what is wrong with them.
fn transit_args(
    held_longer_than: Option<String>,
    states: &[String],
) -> Result<
    (
        Option<std::time::Duration>,
        Vec<privacy_milter::internals::State>,
    ),
    Usage,
> {
    let held = held_longer_than
        .map(|d| {
            privacy_milter::internals::Period::try_from(d)
                .map(|p| p.0)
                .map_err(|e| Usage(format!("--held-longer-than: {e}")))
        })
        .transpose()?;
    let states = states
        .iter()
        .map(|s| s.trim().parse().map_err(|e| Usage(format!("--state: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok((held, states))
}

/// Runs `track` until SIGTERM or SIGINT (or, with `--once`, until the log is read).
fn track(config: privacy_milter::Config, once: bool) -> ExitCode {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        );
        let (Ok(mut terminate), Ok(mut interrupt), Ok(mut hangup)) = signals else {
            return Err("cannot install the signal handlers".to_string());
        };
        let flag = Arc::clone(&stop);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => info!("SIGTERM: stopping"),
                    _ = interrupt.recv() => info!("SIGINT: stopping"),
                    _ = hangup.recv() => {
                        info!("SIGHUP: nothing to reload; the tracker follows log rotation by itself");
                        continue;
                    }
                }
                flag.store(true, Ordering::Relaxed);
                notify(&[NotifyState::Stopping]);
            }
        });
        let endpoint = privacy_milter::track_metrics(&config)
            .await
            .map_err(|e| e.to_string())?;
        notify(&[NotifyState::Ready, NotifyState::Status("tracking")]);
        let flag = Arc::clone(&stop);
        let counts = tokio::task::spawn_blocking(move || privacy_milter::track(&config, once, flag))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(endpoint) = endpoint {
            endpoint.abort();
        }
        counts.map_err(|e| privacy_milter::error_chain(&e))
    });
    match result {
        Ok(counts) => {
            info!(
                "stopped: {} log lines read, {} deliveries recorded, {} lines about messages without a transit record, {} lines not understood",
                counts.lines, counts.deliveries, counts.unmatched, counts.not_understood
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a `ledger` command; the outer error is a bad time on the command line.
fn ledger(
    config: &privacy_milter::Config,
    command: LedgerCommand,
) -> Result<Result<String, commands::CommandError>, Usage> {
    let format = |f: &str| match f {
        "json" => Format::Json,
        "csv" => Format::Csv,
        "jsonl" => Format::Jsonl,
        _ => Format::Table,
    };
    let time = |t: Option<String>| {
        t.as_deref()
            .map(ledger_cmd::parse_time)
            .transpose()
            .map_err(Usage)
    };
    Ok(match command {
        LedgerCommand::Purge => ledger_cmd::purge(config),
        LedgerCommand::Query { subject, format: f } => {
            ledger_cmd::query(config, &subject.subject(), format(&f))
        }
        LedgerCommand::Erase { subject } => ledger_cmd::erase(config, &subject.subject()),
        LedgerCommand::Export {
            since,
            until,
            format: f,
        } => ledger_cmd::export(config, time(since)?, time(until)?, format(&f)),
        LedgerCommand::Stats => ledger_cmd::stats(config),
    })
}

async fn serve(config: privacy_milter::Config) -> std::io::Result<()> {
    let hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    privacy_milter::fit_descriptor_limit(&config);
    let listener = Listener::bind(&config).await?;
    info!(
        "privacy-milter {} listening on {}{}",
        env!("CARGO_PKG_VERSION"),
        config.socket,
        if config.dry_run {
            " (dry run: no header is changed)"
        } else {
            ""
        }
    );

    // Readiness for systemd's Type=notify, and the status line `systemctl status` shows; both
    // do nothing without NOTIFY_SOCKET.
    let listening = format!("listening on {}", config.socket);
    notify(&[NotifyState::Ready, NotifyState::Status(&listening)]);

    if let Some(period) = watchdog_period() {
        tokio::spawn(ping_watchdog(period));
    }
    let (reload_tx, reload_rx) = mpsc::channel(4);
    tokio::spawn(reload_on_sighup(hangup, reload_tx, listening));
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM: stopping"),
            _ = interrupt.recv() => info!("SIGINT: stopping"),
        }
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    };
    privacy_milter::run(listener, config, reload_rx, shutdown).await
}

/// With WatchdogSec= in the unit, how often to ping: half the period (sd_watchdog_enabled(3)).
fn watchdog_period() -> Option<std::time::Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| std::time::Duration::from_micros(usec / 2))
}

/// systemd restarts the daemon when the thread that runs every milter session stops answering:
/// the pings run on that thread.
async fn ping_watchdog(period: std::time::Duration) {
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

/// Turns each SIGHUP into a reload, framed for systemd by RELOADING=1 and READY=1 with a
/// status line that says how it went (`listening` is the status line's start).
async fn reload_on_sighup(mut hangup: Signal, reloads: mpsc::Sender<Reload>, listening: String) {
    while hangup.recv().await.is_some() {
        info!("SIGHUP: reloading the configuration");
        // systemd (from v253) wants the monotonic time with RELOADING=1.
        match NotifyState::monotonic_usec_now() {
            Ok(now) => notify(&[NotifyState::Reloading, now]),
            Err(_) => notify(&[NotifyState::Reloading]),
        }
        let (request, outcome) = Reload::with_reply();
        if reloads.send(request).await.is_err() {
            break;
        }
        let outcome = outcome.await;
        let at = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
        let status = match outcome {
            Ok(Ok(_)) => format!("{listening}; configuration reloaded at {at}"),
            Ok(Err(e)) => format!(
                "{listening}; configuration not reloaded at {at}, the running one stays: {}",
                e.lines().next().unwrap_or_default()
            ),
            // The daemon is stopping.
            Err(_) => break,
        };
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }
}

/// Tells systemd (Type=notify) about the daemon's state; a no-op without NOTIFY_SOCKET, and a
/// notification that cannot be sent changes nothing for the mail.
fn notify(states: &[NotifyState]) {
    let _ = sd_notify::notify(false, states);
}
