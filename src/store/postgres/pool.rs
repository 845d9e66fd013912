//! Connections to the PostgreSQL ledger: a small pool (`events.postgres.pool_size`), made on
//! demand with `events.postgres.connect_timeout`; a connection found closed is dropped and
//! replaced.
//!
//! TLS (rustls) when the URL says `sslmode=require`: the server's certificate must chain to
//! `events.postgres.ca_file`, or to the system's CA store, and name the host; there is no
//! unverified mode. Without `sslmode` the connection is plain, as it always was; with
//! `sslmode=prefer` TLS is used (and verified) when the server offers it.

use super::schema;
use crate::{
    config::Config,
    store::{Result, StoreError},
};
use postgres::{config::SslMode, Client, NoTls};
use rustls::pki_types::CertificateDer;
use std::{
    ops::{Deref, DerefMut},
    sync::{
        atomic::{AtomicBool, Ordering},
        Condvar, Mutex,
    },
    time::Duration,
};
use tokio_postgres_rustls::MakeRustlsConnect;

struct PoolState {
    idle: Vec<Client>,
    /// Connections handed out and not yet returned.
    busy: usize,
}

/// A TLS connector that verifies the server against `ca_roots` (`events.postgres.ca_file`),
/// or the system's CA store when there are none.
fn tls_connector(ca_roots: &[CertificateDer<'static>]) -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_roots.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A certificate of the store that rustls cannot use is no reason to fail.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(StoreError::Connect(format!(
                "events.postgres: sslmode asks for TLS but the system has no CA certificates ({:?}); set events.postgres.ca_file",
                found.errors
            )));
        }
    } else {
        for cert in ca_roots {
            roots
                .add(cert.clone())
                .map_err(|e| StoreError::Connect(format!("events.postgres.ca_file: {e}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Connect(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// At most `size` connections, made when needed and kept while they stay open. Safe to share
/// between threads.
pub(super) struct Pool {
    config: postgres::Config,
    /// The URL without its password.
    url: String,
    /// The TLS connector when the URL asks for TLS.
    tls: Option<MakeRustlsConnect>,
    size: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
    migrated: AtomicBool,
}

pub(super) struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("held until drop")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("held until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
        state.busy -= 1;
        if let Some(client) = self.client.take().filter(|c| !c.is_closed()) {
            state.idle.push(client);
        }
        self.pool.returned.notify_one();
    }
}

impl Pool {
    /// Checks the URL and sets up the pool; no connection is made yet.
    pub(super) fn new(config: &Config) -> Result<Self> {
        let roots = &config.postgres_roots;
        let config = &config.events.postgres;
        let mut pg: postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::Connect(format!("events.postgres.url: {e}")))?;
        pg.connect_timeout(config.connect_timeout.0)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            // A write into a dead connection fails after this instead of hanging.
            .tcp_user_timeout(config.connect_timeout.0.max(Duration::from_secs(10)) * 3);
        if pg.get_application_name().is_none() {
            pg.application_name("privacy-milter");
        }
        let timeout_ms = config.statement_timeout.0.as_millis();
        if timeout_ms > 0 {
            // Server-side, so that it also cancels a statement waiting for a lock.
            let options = match pg.get_options() {
                Some(given) => format!("{given} -c statement_timeout={timeout_ms}"),
                None => format!("-c statement_timeout={timeout_ms}"),
            };
            pg.options(&options);
        }
        let tls = if config.wants_tls() {
            Some(tls_connector(roots)?)
        } else {
            pg.ssl_mode(SslMode::Disable);
            None
        };
        Ok(Self {
            config: pg,
            url: config.redacted_url(),
            tls,
            size: config.pool_size.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                busy: 0,
            }),
            returned: Condvar::new(),
            migrated: AtomicBool::new(false),
        })
    }

    /// The URL without its password.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// A connection: an idle one, a new one while fewer than `size` are out, else the next
    /// one given back. The first connection made migrates the schema.
    pub(super) fn get(&self) -> Result<Pooled<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            while let Some(client) = state.idle.pop() {
                if !client.is_closed() {
                    state.busy += 1;
                    return Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    });
                }
            }
            if state.busy < self.size {
                break;
            }
            state = self.returned.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.busy += 1;
        drop(state);
        // Counted as busy from here: a failed connection gives its place back on drop.
        let mut pooled = Pooled {
            pool: self,
            client: None,
        };
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
        .map_err(|e| StoreError::Connect(crate::logging::chain(&e)))?;
        if !self.migrated.load(Ordering::Acquire) {
            schema::migrate(&mut client)?;
            self.migrated.store(true, Ordering::Release);
        }
        pooled.client = Some(client);
        Ok(pooled)
    }
}
