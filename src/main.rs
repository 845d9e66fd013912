//! The `privacy-milter` command: parse the command line ([`privacy_milter::cli`]), dispatch to
//! the daemon ([`privacy_milter::run`], with logging, signals and the socket set up here) or to
//! a command, and print any error, with its causes, in one place ([`main`]).

use clap::Parser;
use privacy_milter::{
    cli::{Cli, Command, IpCommand, LedgerCommand},
    commands::{self, ledger},
    Config, Listener, Reload, ReloadError,
};
use sd_notify::NotifyState;
use std::process::ExitCode;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
};
use tracing::{error, info};

/// Why the program exits with status 1, and where that is said.
enum Failure {
    /// Before logging is set up, or by a command: on standard error.
    Said(String),
    /// By the daemon or the tracker, once logging is set up: in their log.
    Logged(String),
}

impl Failure {
    /// An error and each of its causes (those its own text does not already say).
    fn of(error: &dyn std::error::Error) -> Self {
        Self::Said(privacy_milter::error_chain(error))
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(Failure::Said(message)) => {
            privacy_milter::report_error(&message);
            ExitCode::FAILURE
        }
        Err(Failure::Logged(message)) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let source = cli.source();
    let config = source
        .load()
        .map_err(|e| Failure::Said(format!("configuration error\n{e}")))?;
    let output = match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            privacy_milter::init_logging(&config.log).map_err(Failure::Said)?;
            // One thread for every milter session: a session is a few microseconds of work
            // between waits, and on one thread no wake-up crosses between threads (measured:
            // 0.36-0.46 ms of CPU per message behind Postfix against 0.65-0.82 with a worker
            // pool; docs/performance.md). Events are written on a thread of their own.
            runtime()?
                .block_on(serve(config))
                .map_err(|e| Failure::Logged(e.to_string()))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Track { once } => {
            privacy_milter::init_logging(&config.log).map_err(Failure::Said)?;
            track(config, once)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::CheckConfig => format!("{}: OK\n{}\n", source.path.display(), config.summary()),
        Command::Audit { format } => {
            let (text, ok) = commands::audit::audit(&config, format);
            print!("{text}");
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Ledger(command) => match command {
            LedgerCommand::Purge => ledger::purge(&config),
            LedgerCommand::Query { subject, format } => {
                ledger::query(&config, &subject.subject(), format)
            }
            LedgerCommand::Erase { subject } => ledger::erase(&config, &subject.subject()),
            LedgerCommand::Export {
                since,
                until,
                format,
            } => ledger::export(&config, since, until, format),
            LedgerCommand::Stats => ledger::stats(&config),
        }
        .map_err(|e| Failure::of(&e))?,
        Command::Ip(IpCommand::Decrypt { token }) => {
            commands::ip::decrypt(&config, &token).map_err(|e| Failure::of(&e))?
        }
        Command::VerifyTag { message_id, value } => {
            commands::tag::verify(&config, &value, message_id.as_deref())
                .map_err(|e| Failure::of(&e))?
        }
        Command::Transit {
            held_longer_than,
            state,
            format,
        } => commands::transit::list(&config, held_longer_than, &state, format)
            .map_err(|e| Failure::of(&e))?,
        Command::Policy { format } => {
            commands::policy::policy(&config, format).map_err(|e| Failure::of(&e))?
        }
        Command::Report { output } => {
            commands::report::report(&config, &output).map_err(|e| Failure::of(&e))?
        }
    };
    print!("{output}");
    Ok(ExitCode::SUCCESS)
}

/// The runtime of a long-running command: one thread (see `Command::Run`).
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Logged(format!("cannot start the runtime: {e}")))
}

/// How long the tracker may take to stop after SIGTERM or SIGINT before it exits regardless.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `track` until SIGTERM or SIGINT (or, with `--once`, until the log is read).
fn track(config: Config, once: bool) -> Result<(), Failure> {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counts = runtime()?.block_on(async {
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
                        info!("SIGHUP: nothing to reload (the tracker follows log rotation by itself; a change of [tracking] or [mta_logs] takes effect at a restart)");
                        continue;
                    }
                }
                flag.store(true, Ordering::Relaxed);
                notify(&[NotifyState::Stopping]);
                // The tracker stops between two reads of the log or two tries of a store; a
                // read or a store that hangs (a dead NFS mount, a locked ledger) must not keep
                // it running. What was recorded stays: the place is saved after each batch.
                tokio::spawn(async {
                    tokio::time::sleep(STOP_GRACE).await;
                    error!("still running {}s after the signal to stop: exiting", STOP_GRACE.as_secs());
                    std::process::exit(1);
                });
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
    let counts = counts.map_err(Failure::Logged)?;
    info!(
        "stopped: {} log lines read, {} deliveries recorded, {} lines about messages without a transit record, {} lines not understood",
        counts.lines, counts.deliveries, counts.unmatched, counts.not_understood
    );
    Ok(())
}

async fn serve(config: Config) -> std::io::Result<()> {
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
            Ok(Err(ReloadError::NotLoaded(e))) => format!(
                "{listening}; configuration not reloaded at {at}, the running one stays: {}",
                e.lines().next().unwrap_or_default()
            ),
            Ok(Err(ReloadError::SinksKept(e))) => format!(
                "{listening}; configuration reloaded at {at} but for sinks that could not be opened with it: {}",
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
