//! privacy-milter: a milter that makes a mail privacy policy true on Postfix and Sendmail.
//!
//! The data flow follows the module list: [`callbacks`] (thin protocol adapters) fill a
//! [`session`] with [`facts`]; at end of message [`classify`] decides direction and transit,
//! the [`rules`] turn facts into header edits, and an [`event`], pseudonymised by
//! [`privacy`], goes to the [`sinks`].
//!
//! The library is public so that tests can run the milter in-process through [`run`].

pub mod callbacks;
pub mod classify;
pub mod config;
pub mod event;
pub mod facts;
pub mod ip;
pub mod keys;
pub mod ledger;
pub mod listener;
pub mod logging;
pub mod privacy;
pub mod rules;
pub mod session;
pub mod sinks;
pub mod token;

pub use config::{Config, ConfigError, Source};
pub use listener::Listener;

use session::{Negotiated, Session, SessionGuard};
use sinks::EventWriter;
use std::{
    future::Future,
    io,
    sync::{Arc, RwLock},
    time::Duration,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

/// How long open sessions may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A request to re-read the configuration (SIGHUP). The answer, if asked for, says whether
/// the new configuration took effect.
pub struct Reload {
    reply: Option<oneshot::Sender<Result<(), String>>>,
}

impl Reload {
    /// A reload whose outcome is only logged.
    pub fn request() -> Self {
        Self { reply: None }
    }

    /// A reload whose outcome is also sent back.
    pub fn with_reply() -> (Self, oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = oneshot::channel();
        (Self { reply: Some(tx) }, rx)
    }
}

/// The keys new values are made with.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    /// For `hmac` privacy modes.
    pub hmac: Option<Arc<keys::Key>>,
    /// For `originating_ip` mode `encrypted`.
    pub aead: Option<Arc<keys::Key>>,
}

impl Secrets {
    /// Loads the keys `config` needs, making new ones when rotation is due, and destroys the
    /// keys retired longer than the longest retention period.
    pub fn refresh(config: &Config) -> Result<Self, keys::KeyError> {
        let dir = &config.privacy.keys;
        let rotation = config.privacy.key_rotation.0;
        let now = chrono::Utc::now();
        let mut secrets = Self::default();
        let wanted = [
            (keys::Kind::Hmac, config.privacy.uses_hmac()),
            (
                keys::Kind::Aead,
                config.rules.originating_ip.mode == config::OriginatingIpMode::Encrypted,
            ),
        ];
        for (kind, used) in wanted {
            if !used {
                continue;
            }
            let current = keys::rotate(dir, kind, rotation, now)?.current().cloned();
            for id in keys::destroy_expired(dir, kind, config.retention.longest(), now)? {
                info!("destroyed key {id}: every event made with it has expired");
            }
            match kind {
                keys::Kind::Hmac => secrets.hmac = current,
                keys::Kind::Aead => secrets.aead = current,
            }
        }
        Ok(secrets)
    }
}

/// State shared by all sessions.
pub struct Shared {
    config: RwLock<Arc<Config>>,
    secrets: RwLock<Secrets>,
    events: EventWriter,
    host: Arc<str>,
    sessions: watch::Sender<usize>,
}

impl Shared {
    fn new_session(&self, negotiated: Negotiated) -> Session {
        let config = Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()));
        let secrets = self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Session::new(
            config,
            secrets,
            self.events.clone(),
            Arc::clone(&self.host),
            negotiated,
            SessionGuard::new(&self.sessions),
        )
    }

    fn current(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Loads the configuration again from where it came from; a broken file changes nothing.
    async fn reload(&self) -> Result<(), String> {
        let old = self.current();
        let Some(source) = &old.source else {
            return Err("the configuration was not loaded from a file".into());
        };
        let new = source.load().map_err(|e| e.to_string())?;
        let secrets = Secrets::refresh(&new).map_err(|e| e.to_string())?;
        for (changed, key) in [
            (new.socket != old.socket, "socket"),
            (new.socket_mode != old.socket_mode, "socket_mode"),
            (new.socket_group != old.socket_group, "socket_group"),
            (new.log.level != old.log.level, "log.level"),
            (
                new.log.destination != old.log.destination,
                "log.destination",
            ),
            (
                new.log.syslog_socket != old.log.syslog_socket,
                "log.syslog_socket",
            ),
            (
                new.events.queue_size != old.events.queue_size,
                "events.queue_size",
            ),
        ] {
            if changed {
                warn!("{key} changed: this takes effect only after a restart");
            }
        }
        // Re-open the sinks (rotated or moved files) before new sessions use the new config.
        self.events.reopen(&new).await?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        *self.secrets.write().unwrap_or_else(|e| e.into_inner()) = secrets;
        Ok(())
    }

    /// The periodic duties: rotate and destroy keys, purge expired events.
    fn housekeeping(&self) {
        match Secrets::refresh(&self.current()) {
            Ok(secrets) => *self.secrets.write().unwrap_or_else(|e| e.into_inner()) = secrets,
            Err(e) => error!("key ring: {e}; the keys in use stay"),
        }
        self.events.purge();
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
    let secrets = Secrets::refresh(&config).map_err(io::Error::other)?;
    let events = EventWriter::start(&config)?;
    let host: Arc<str> = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .into();
    let (sessions, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(config)),
        secrets: RwLock::new(secrets),
        events: events.clone(),
        host,
        sessions,
    });

    let gate = listener::Gate::new(listener);
    let (drained, drained_rx) = oneshot::channel::<()>();
    let milter_config = indymilter::Config {
        max_connections: 1024,
        ..Default::default()
    };
    let milter = indymilter::run(
        gate.clone(),
        callbacks::build(Arc::clone(&shared)),
        milter_config,
        drained_rx,
    );
    tokio::pin!(milter);
    tokio::pin!(shutdown);
    let mut purge = purge_timer(&shared.current());

    loop {
        tokio::select! {
            result = &mut milter => {
                // Only a broken listener ends the milter early.
                events.stop().await;
                return result;
            }
            Some(request) = reload.recv() => {
                let result = shared.reload().await;
                if result.is_ok() {
                    purge = purge_timer(&shared.current());
                }
                match &result {
                    Ok(()) => info!("configuration reloaded"),
                    Err(e) => error!("configuration not reloaded, the running one stays:\n{e}"),
                }
                if let Some(reply) = request.reply {
                    let _ = reply.send(result);
                }
            }
            _ = purge.tick() => shared.housekeeping(),
            _ = &mut shutdown => break,
        }
    }

    gate.close();
    let open = *shared.sessions.borrow();
    if open > 0 {
        info!(
            "stopping: waiting up to {}s for {open} open sessions",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    let mut gauge = shared.sessions.subscribe();
    if tokio::time::timeout(SHUTDOWN_GRACE, gauge.wait_for(|n| *n == 0))
        .await
        .is_err()
    {
        warn!("stopping with {} sessions still open", *gauge.borrow());
    }
    let _ = drained.send(());
    let result = milter.await;
    events.stop().await;
    info!("stopped");
    result
}
