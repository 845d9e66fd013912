//! The milter daemon: [`run`] serves a bound socket until shutdown. It owns what all sessions
//! share ([`Sessions`]: one snapshot of configuration and keys, the event writer), reloads the
//! configuration when asked (SIGHUP), does the periodic duties (key rotation, purge), and on
//! shutdown lets open sessions finish and writes every queued event.

use crate::{
    callbacks,
    config::{
        reload::{keep_restart_only, keep_running_sinks},
        Config, SinkKind,
    },
    keys,
    listener::{Gate, Listener},
    metrics::{self, label, DAEMON},
    session::{Sessions, Snapshot},
    store,
    writer::EventWriter,
};
use std::{
    future::Future,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

/// The log target of the daemon's lines, as operators know it.
const TARGET: &str = "privacy_milter";

/// How long open sessions may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A request to re-read the configuration (SIGHUP). The answer, if asked for, says whether
/// the new configuration took effect.
pub struct Reload {
    reply: Option<oneshot::Sender<Result<Reloaded, ReloadError>>>,
}

impl Reload {
    /// A reload whose outcome is only logged.
    pub fn request() -> Self {
        Self { reply: None }
    }

    /// A reload whose outcome is also sent back.
    pub fn with_reply() -> (Self, oneshot::Receiver<Result<Reloaded, ReloadError>>) {
        let (tx, rx) = oneshot::channel();
        (Self { reply: Some(tx) }, rx)
    }
}

/// What a reload that took effect did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Settings whose new values wait for a restart: the running ones stay.
    pub needs_restart: Vec<&'static str>,
}

/// A reload that did not take full effect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// Nothing changed: the file could not be loaded (or the key ring, or the writer has
    /// stopped); the running configuration stays.
    #[error("{0}")]
    NotLoaded(String),
    /// The new configuration took effect but for these sinks, which could not be opened with
    /// it: those that were running run on as they were, with their running settings.
    #[error("{0}")]
    SinksKept(String),
}

/// The daemon's state beside the sessions'.
struct Daemon {
    sessions: Arc<Sessions>,
    events: EventWriter,
    /// The key ring as housekeeping last left it.
    keys: Mutex<keys::Watch>,
}

/// Rotates keys and destroys retired ones; logs what it destroyed, and warns of a change to
/// the ring that was not its own (a key or the directory deleted, a key added).
fn refresh_keys(
    config: &Config,
    watch: &Mutex<keys::Watch>,
) -> Result<keys::Secrets, keys::KeyError> {
    let (change, refreshed) = watch
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .refresh(&config.key_policy(), chrono::Utc::now());
    if let Some(change) = change {
        warn!(target: TARGET, "{change}");
    }
    let (secrets, destroyed) = refreshed?;
    let now = chrono::Utc::now();
    for id in destroyed {
        info!(target: TARGET, "destroyed key {id}: every event made with it has expired");
    }
    for (kind, key) in [("hmac", &secrets.hmac), ("aead", &secrets.aead)] {
        if let Some(key) = key {
            DAEMON
                .key_age_seconds
                .get_or_create(&label("kind", kind))
                .set((now - key.created).num_seconds());
        }
    }
    Ok(secrets)
}

/// Counts what the ledger holds per retention class, on a connection of its own beside the
/// writer's (a reader: it never holds up events).
fn count_records(config: Arc<Config>) {
    let ledger = config.events.enabled
        && config
            .events
            .sinks
            .iter()
            .any(|s| matches!(s, SinkKind::Ledger | SinkKind::Postgres));
    if !ledger {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let stats = store::open_ledger(&config).and_then(|mut ledger| ledger.stats());
        match stats {
            Ok(stats) => {
                let mut per_class: std::collections::BTreeMap<&str, i64> = Default::default();
                for (class, _, n) in &stats.counts {
                    *per_class.entry(class.as_str()).or_default() += *n as i64;
                }
                for class in [
                    "inbound", "outbound", "internal", "relay", "rejected", "aborted",
                ] {
                    DAEMON
                        .ledger_records
                        .get_or_create(&label("class", class))
                        .set(per_class.get(class).copied().unwrap_or(0));
                }
            }
            Err(e) => {
                warn!(target: TARGET, "cannot count the ledger's records for the metrics: {e}")
            }
        }
    });
}

impl Daemon {
    /// Loads the configuration again from where it came from; a broken file changes nothing.
    /// Each sink is opened again on its own: one that cannot be runs on as it was, the rest
    /// of the new configuration takes effect, and the reload fails naming that sink.
    async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let not_loaded = |e: String| ReloadError::NotLoaded(e);
        let running = self.sessions.current();
        let Some(source) = &running.config.source else {
            return Err(not_loaded(
                "the configuration was not loaded from a file".into(),
            ));
        };
        let mut new = source.load().map_err(|e| not_loaded(e.to_string()))?;
        let needs_restart = keep_restart_only(&running.config, &mut new);
        for key in &needs_restart {
            warn!(target: TARGET, "{key} changed: this takes effect only after a restart");
        }
        let secrets = refresh_keys(&new, &self.keys).map_err(|e| not_loaded(e.to_string()))?;
        // Re-open the sinks (rotated or moved files) before new sessions use the new config.
        let failed = self.events.reopen(&new).await.map_err(not_loaded)?;
        let kinds: Vec<SinkKind> = failed.iter().map(|f| f.kind).collect();
        // The configuration describes what runs: a sink that could not be opened keeps its
        // running settings.
        keep_running_sinks(&running.config, &mut new, &kinds);
        self.sessions.replace(Snapshot::new(Arc::new(new), secrets));
        if failed.is_empty() {
            return Ok(Reloaded { needs_restart });
        }
        let why: Vec<String> = failed
            .iter()
            .map(|f| {
                let what = if f.kept {
                    "runs on as it was"
                } else {
                    "was not running and is not now"
                };
                format!("the {} sink {what}: {}", f.kind.name(), f.error)
            })
            .collect();
        Err(ReloadError::SinksKept(why.join("\n")))
    }

    /// The periodic duties: rotate and destroy keys, purge expired events.
    fn housekeeping(&self) {
        let config = Arc::clone(&self.sessions.current().config);
        match refresh_keys(&config, &self.keys) {
            Ok(secrets) => self
                .sessions
                .replace(Snapshot::new(Arc::clone(&config), secrets)),
            Err(e) => error!(target: TARGET, "key ring: {e}; the keys in use stay"),
        }
        self.events.purge();
        count_records(config);
    }
}

/// Descriptors the daemon needs besides one per connection: the runtime, the listener, the
/// log, the sinks' files (the ledger alone holds six) and a second set of them while a reload
/// reopens them, with room to spare.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The descriptors `config` needs: one per connection, the reserve, and two per PostgreSQL
/// connection (the old pool and the new while a reload reopens the sinks).
fn descriptors_needed(config: &Config) -> u64 {
    let pool = if config.events.sinks.contains(&SinkKind::Postgres) {
        2 * config.events.postgres.pool_size as u64
    } else {
        0
    };
    (config.max_connections as u64)
        .saturating_add(RESERVED_DESCRIPTORS)
        .saturating_add(pool)
}

/// Makes room for `max_connections`: raises the soft limit on open files as far as needed and
/// the hard limit allows (the usual soft limit, 1024, is too low for the default), and warns
/// if that is not enough. Call once at start, before serving: the limit is the process's.
///
/// Short of descriptors, connections beyond the limit wait in the listener's backlog (the
/// listener backs off) and the sinks may fail to reopen; the warning says what to change.
pub fn fit_descriptor_limit(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let needed = descriptors_needed(config);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut limit = soft;
    if soft < needed {
        let raised = needed.min(hard);
        if setrlimit(Resource::RLIMIT_NOFILE, raised, hard).is_ok() {
            limit = raised;
        }
    }
    if limit < needed {
        warn!(
            target: TARGET,
            "max_connections = {} needs {needed} file descriptors, but the limit is {limit}: \
             raise LimitNOFILE= in the unit (or ulimit -n), or lower max_connections; until \
             then connections beyond the limit wait until descriptors free up",
            config.max_connections
        );
    }
}

/// Expired events are purged, and keys rotated, at start and every `retention.purge_interval`.
fn purge_timer(config: &Config) -> tokio::time::Interval {
    let mut timer = tokio::time::interval(config.retention.purge_interval.0);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Runs the milter on `listener` until `shutdown` completes.
///
/// Each message on `reload` re-reads the configuration for new connections. On shutdown the
/// listener closes at once, open sessions get [`SHUTDOWN_GRACE`] to finish, and every queued
/// event is written before this returns.
pub async fn run(
    listener: Listener,
    config: Config,
    mut reload: mpsc::Receiver<Reload>,
    shutdown: impl Future,
) -> io::Result<()> {
    let watch = Mutex::new(keys::Watch::default());
    let secrets = refresh_keys(&config, &watch).map_err(io::Error::other)?;
    let metrics = if config.metrics.listen.is_empty() {
        None
    } else {
        let addr = &config.metrics.listen;
        let endpoint = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("metrics.listen {addr}: {e}")))?;
        info!(target: TARGET, "metrics at http://{addr}/metrics");
        Some(tokio::spawn(metrics::http::serve(
            endpoint,
            metrics::render_daemon,
        )))
    };
    let events = EventWriter::start(&config)?;
    let host: Arc<str> = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .into();
    let daemon = Daemon {
        sessions: Arc::new(Sessions::new(
            Snapshot::new(Arc::new(config), secrets),
            events.clone(),
            host,
        )),
        events: events.clone(),
        keys: watch,
    };

    let (max_connections, session_timeout) = {
        let config = &daemon.sessions.current().config;
        (config.max_connections, config.session_timeout.0)
    };
    let gate = Gate::new(listener, max_connections, session_timeout);
    let (drained, drained_rx) = oneshot::channel::<()>();
    let milter_config = indymilter::Config {
        max_connections,
        // indymilter times each whole frame it reads, from the moment it waits for the next
        // command until the frame's last byte, and each reply it writes: a connection that
        // sends nothing, or stops half-way through a frame, is closed after this long.
        connection_timeout: session_timeout,
        ..Default::default()
    };
    let milter = indymilter::run(
        gate.clone(),
        callbacks::build(Arc::clone(&daemon.sessions)),
        milter_config,
        drained_rx,
    );
    tokio::pin!(milter);
    tokio::pin!(shutdown);
    let mut purge = purge_timer(&daemon.sessions.current().config);

    loop {
        tokio::select! {
            result = &mut milter => {
                // Only a broken listener ends the milter early.
                events.stop().await;
                return result;
            }
            Some(request) = reload.recv() => {
                let result = daemon.reload().await;
                if !matches!(result, Err(ReloadError::NotLoaded(_))) {
                    purge = purge_timer(&daemon.sessions.current().config);
                }
                match &result {
                    Ok(_) => info!(target: TARGET, "configuration reloaded"),
                    Err(ReloadError::NotLoaded(e)) => error!(target: TARGET, "configuration not reloaded, the running one stays:\n{e}"),
                    Err(ReloadError::SinksKept(e)) => error!(target: TARGET, "configuration reloaded but for sinks that could not be opened with it:\n{e}"),
                }
                let outcome = if result.is_ok() { "ok" } else { "failed" };
                DAEMON.reloads.get_or_create(&label("result", outcome)).inc();
                if let Some(reply) = request.reply {
                    let _ = reply.send(result);
                }
            }
            _ = purge.tick() => daemon.housekeeping(),
            _ = &mut shutdown => break,
        }
    }

    gate.close();
    let open = daemon.sessions.open();
    if open > 0 {
        info!(
            target: TARGET,
            "stopping: waiting up to {}s for {open} open sessions",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    let still_open = daemon.sessions.wait_closed(SHUTDOWN_GRACE).await;
    if still_open > 0 {
        warn!(target: TARGET, "stopping with {still_open} sessions still open");
    }
    let _ = drained.send(());
    let result = milter.await;
    events.stop().await;
    if let Some(endpoint) = metrics {
        endpoint.abort();
    }
    info!(target: TARGET, "stopped");
    result
}
