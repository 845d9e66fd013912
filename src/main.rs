//! The `privacy-milter` command: parse the command line, set up logging and signals, bind
//! the socket and hand over to [`privacy_milter::run`].

use clap::{Parser, Subcommand};
use privacy_milter::{
    config::{self, LogOverride, Overrides},
    Listener, Reload, Source,
};
use std::{path::PathBuf, process::ExitCode};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::{error, info};

/// Milter that makes a mail privacy policy true: X-Originating-IP for our own senders,
/// transit tagging, and one pseudonymised event per message.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', env = "PRIVACY_MILTER_CONFIG", default_value = config::DEFAULT_PATH)]
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = cli.source();
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("privacy-milter: configuration error\n{e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!("{}: OK\n{}", source.path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Command::Run => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                    "{},indymilter=warn",
                    config.log.level.as_str()
                )))
                .init();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    error!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
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

async fn serve(config: privacy_milter::Config) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

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

    // Readiness for systemd's Type=notify; does nothing without NOTIFY_SOCKET.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let (reload_tx, reload_rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            info!("SIGHUP: reloading the configuration");
            if reload_tx.send(Reload::request()).await.is_err() {
                break;
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM: stopping"),
            _ = interrupt.recv() => info!("SIGINT: stopping"),
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    };
    privacy_milter::run(listener, config, reload_rx, shutdown).await
}
