//! What the operator wrote: the configuration schema, one struct per TOML table, with the
//! defaults the shipped `conf/privacy-milter.toml` documents. Plain data, no I/O: [`super::Config`] is what the program runs
//! with, these settings plus what they name (the local domain file, the CA roots).
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never silently turns a rule off.

use super::values::{Domain, FileMode, HeaderName, Network, Period, SocketSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where the milter listens.
    pub socket: SocketSpec,
    /// Mode of a unix socket, so that the MTA's user can connect.
    pub socket_mode: FileMode,
    /// Group of a unix socket; empty keeps the daemon's own group.
    pub socket_group: String,
    /// Decide, log and record events, but change no header.
    pub dry_run: bool,
    /// Most milter connections served at once; further ones wait in the listener's backlog
    /// until one closes. Each takes a file descriptor.
    pub max_connections: usize,
    /// A connection that sends nothing for this long, or takes longer than this to send one
    /// command, is closed (conf/privacy-milter.toml says why 30 minutes).
    pub session_timeout: Period,
    pub log: Log,
    pub networks: Networks,
    pub domains: Domains,
    pub rules: Rules,
    pub events: Events,
    pub privacy: Privacy,
    pub retention: Retention,
    pub mta_logs: MtaLogs,
    pub tracking: Tracking,
    pub metrics: Metrics,
    pub policy: Policy,
    pub audit: Audit,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            socket: SocketSpec::Unix("/run/privacy-milter/privacy-milter.sock".into()),
            socket_mode: FileMode(0o660),
            socket_group: String::new(),
            dry_run: false,
            max_connections: 1000,
            session_timeout: Period(std::time::Duration::from_secs(30 * 60)),
            log: Log::default(),
            networks: Networks::default(),
            domains: Domains::default(),
            rules: Rules::default(),
            events: Events::default(),
            privacy: Privacy::default(),
            retention: Retention::default(),
            mta_logs: MtaLogs::default(),
            tracking: Tracking::default(),
            metrics: Metrics::default(),
            policy: Policy::default(),
            audit: Audit::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: LogLevel,
    pub destination: LogDestination,
    /// The syslog socket for `destination = "syslog"`.
    pub syslog_socket: PathBuf,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            destination: LogDestination::Stderr,
            syslog_socket: "/dev/log".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogDestination {
    Stderr,
    /// systemd's journal, with structured fields.
    Journald,
    /// RFC 5424 messages to the local syslog socket.
    Syslog,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Networks {
    /// Clients here are ours: their mail gets an originating-IP header and may carry a transit tag.
    pub trusted: Vec<Network>,
    /// Webmail hosts, which may hand over the browser's address in the originating-IP header.
    pub webmail: Vec<Network>,
}

impl Default for Networks {
    fn default() -> Self {
        Self {
            trusted: loopback(),
            webmail: Vec::new(),
        }
    }
}

fn loopback() -> Vec<Network> {
    ["127.0.0.0/8", "::1/128"]
        .into_iter()
        .map(|n| Network::try_from(n.to_string()).expect("valid default"))
        .collect()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Domains {
    pub local: Vec<Domain>,
    /// A file of further local domains, one per line, `#` comments; empty for none.
    pub local_file: PathBuf,
    /// Values of `{rcpt_mailer}` that mean local delivery.
    pub local_mailers: Vec<String>,
}

impl Default for Domains {
    fn default() -> Self {
        Self {
            local: Vec::new(),
            local_file: PathBuf::new(),
            local_mailers: ["local", "virtual", "lmtp"].map(String::from).to_vec(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    pub originating_ip: OriginatingIp,
    pub transit_tag: TransitTag,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginatingIp {
    pub enabled: bool,
    pub header: HeaderName,
    pub mode: OriginatingIpMode,
    /// Prefix lengths for mode `truncated`.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Source addresses that get no header (by default loopback: local pickup, re-injection).
    pub skip_networks: Vec<Network>,
}

impl Default for OriginatingIp {
    fn default() -> Self {
        Self {
            enabled: true,
            header: HeaderName::try_from("X-Originating-IP".to_string()).expect("valid"),
            mode: OriginatingIpMode::Full,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            skip_networks: loopback(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginatingIpMode {
    /// The address itself.
    Full,
    /// The network around it, per `ipv4_prefix` and `ipv6_prefix`: `[203.0.113.0/24]`.
    Truncated,
    /// An opaque token only the operator's key opens (`privacy-milter ip decrypt`).
    Encrypted,
    /// No header is added, and copies are still stripped from our own senders' mail.
    Off,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransitTag {
    pub enabled: bool,
    pub header: HeaderName,
}

impl Default for TransitTag {
    fn default() -> Self {
        Self {
            enabled: true,
            header: HeaderName::try_from("X-Transit".to_string()).expect("valid"),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    pub enabled: bool,
    pub sinks: Vec<SinkKind>,
    /// `sync`: the MTA's end-of-message answer waits until the event is stored.
    /// `async`: it does not; at most `queue_size` events wait to be written.
    pub durability: Durability,
    pub queue_size: usize,
    /// What the MTA is told when an event cannot be written.
    pub on_error: OnError,
    pub ledger: LedgerConfig,
    pub postgres: PostgresConfig,
    pub jsonl: Jsonl,
}

/// Sink `postgres`: the ledger in a PostgreSQL database that several MTAs may share.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgresql://user[:password]@host[:port]/database` (or `host=... user=...`).
    pub url: String,
    /// Most connections held open at once.
    pub pool_size: usize,
    /// How long a connection attempt may take.
    pub connect_timeout: Period,
    /// Longest a statement may run before the server cancels it (0s: no limit), so that a
    /// locked table or a stuck server sends events to the spool instead of holding up mail.
    pub statement_timeout: Period,
    /// With `sslmode=require` in the URL: the CA certificates (PEM) the server's certificate
    /// must chain to; empty for the system's CA store.
    pub ca_file: PathBuf,
    /// Local file that holds events while the database cannot take them (JSON lines).
    pub spool: PathBuf,
}

impl PostgresConfig {
    /// Where events the database refused for good are kept: beside the spool.
    pub fn rejects(&self) -> PathBuf {
        let mut path = self.spool.clone().into_os_string();
        path.push(".rejected");
        path.into()
    }

    /// Whether the URL asks for TLS: only an explicit `sslmode` does (the library's default,
    /// `prefer`, would otherwise change what an existing URL means).
    pub fn wants_tls(&self) -> bool {
        self.url.contains("sslmode")
            && self
                .url
                .parse::<postgres::Config>()
                .is_ok_and(|pg| pg.get_ssl_mode() != postgres::config::SslMode::Disable)
    }

    /// The URL with its password replaced by `***`, for logs and summaries.
    pub fn redacted_url(&self) -> String {
        redacted(&self.url)
    }
}

/// `url` with its password replaced by `***`: the one place where a PostgreSQL connection
/// string is made fit to show (summaries, log lines, command errors). Every form libpq takes
/// is parsed (see `conninfo`); everything but the password stays readable.
pub fn redacted(url: &str) -> String {
    super::conninfo::redact(url)
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 4,
            connect_timeout: Period(std::time::Duration::from_secs(5)),
            statement_timeout: Period(std::time::Duration::from_secs(10)),
            ca_file: PathBuf::new(),
            spool: "/var/lib/privacy-milter/postgres.spool".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    pub path: PathBuf,
    /// What a commit waits for: `full`, the disk (fsync), or `normal`, the operating system.
    pub synchronous: Synchronous,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            path: "/var/lib/privacy-milter/ledger.sqlite".into(),
            synchronous: Synchronous::Full,
        }
    }
}

/// SQLite's `synchronous` for the ledger's commits (WAL mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is fsynced: an event survives a power loss once its message is answered.
    Full,
    /// Commits reach the operating system, not the disk: an event survives a crash or kill
    /// of the milter, but a power loss can take the last moments' events. The disk is
    /// synced in the background, at checkpoints.
    Normal,
}

impl Synchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Self {
            enabled: true,
            sinks: vec![SinkKind::Ledger],
            durability: Durability::Sync,
            queue_size: 10_000,
            on_error: OnError::Accept,
            ledger: LedgerConfig::default(),
            postgres: PostgresConfig::default(),
            jsonl: Jsonl::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Ledger,
    Postgres,
    Jsonl,
    Log,
}

impl SinkKind {
    /// Its name in `events.sinks`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ledger => "ledger",
            Self::Postgres => "postgres",
            Self::Jsonl => "jsonl",
            Self::Log => "log",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Sync,
    Async,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    Accept,
    Tempfail,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jsonl {
    pub path: PathBuf,
}

impl Default for Jsonl {
    fn default() -> Self {
        Self {
            path: "/var/log/privacy-milter/events.jsonl".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    pub ip: IpPrivacy,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub address: AddressPrivacy,
    /// The key ring: HMAC keys and header encryption keys (a directory, 0700).
    pub keys: PathBuf,
    /// How often a new key is made.
    pub key_rotation: Period,
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            ip: IpPrivacy::Truncated,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            address: AddressPrivacy::Domain,
            keys: "/var/lib/privacy-milter/keys".into(),
            key_rotation: Period(std::time::Duration::from_secs(30 * 86400)),
        }
    }
}

impl Settings {
    /// Whether the key ring is used: HMACs in events, transit tags, or encrypted
    /// originating-IP tokens.
    pub fn needs_keys(&self) -> bool {
        self.uses_hmac_keys() || self.rules.originating_ip.mode == OriginatingIpMode::Encrypted
    }

    /// Whether HMAC keys are kept: for pseudonyms, and for the proof each transit tag carries.
    pub fn uses_hmac_keys(&self) -> bool {
        self.privacy.uses_hmac() || self.rules.transit_tag.enabled
    }

    /// How the key ring is kept under these settings.
    pub fn key_policy(&self) -> crate::keys::Policy {
        crate::keys::Policy {
            dir: self.privacy.keys.clone(),
            hmac: self.uses_hmac_keys(),
            aead: self.rules.originating_ip.mode == OriginatingIpMode::Encrypted,
            rotation: self.privacy.key_rotation.0,
            keep: self.retention.longest(),
        }
    }
}

impl Privacy {
    /// Whether events need the HMAC key ring.
    pub fn uses_hmac(&self) -> bool {
        self.ip == IpPrivacy::Hmac || self.address == AddressPrivacy::Hmac
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPrivacy {
    Full,
    Truncated,
    Hmac,
    Omit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressPrivacy {
    Full,
    Domain,
    Hmac,
    Omit,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub inbound: Period,
    pub outbound: Period,
    pub internal: Period,
    pub relay: Period,
    pub rejected: Period,
    pub aborted: Period,
    /// How often the daemon deletes expired events from the ledger.
    pub purge_interval: Period,
    /// How long the MTA's own log lines may be kept: the raw ones without `[mta_logs] copy`
    /// (they hold every raw IP and address; logrotate and journald delete them), the
    /// pseudonymised copy with it (the tracker deletes its files).
    pub mta_logs: Period,
}

impl Retention {
    /// The longest period any event is kept.
    pub fn longest(&self) -> std::time::Duration {
        [
            self.inbound,
            self.outbound,
            self.internal,
            self.relay,
            self.rejected,
            self.aborted,
        ]
        .iter()
        .map(|p| p.0)
        .max()
        .unwrap_or_default()
    }
}

impl Default for Retention {
    fn default() -> Self {
        let days = |d: u64| Period(std::time::Duration::from_secs(d * 86400));
        Self {
            inbound: days(90),
            outbound: days(90),
            internal: days(30),
            relay: days(30),
            rejected: days(30),
            aborted: days(7),
            purge_interval: Period(std::time::Duration::from_secs(3600)),
            mta_logs: days(7),
        }
    }
}

/// `[mta_logs]`: the MTA's own log under the policy. The raw log (file or journal) is kept only
/// `raw_window` (logrotate and journald delete it); `privacy-milter track` writes a
/// pseudonymised copy of every line it reads into `copy`, kept for `retention.mta_logs`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaLogs {
    /// The directory of the pseudonymised copy; empty: no copy is written.
    pub copy: PathBuf,
    /// How long raw lines are kept (for fail2ban and live troubleshooting): what the policy
    /// promises and `audit` checks. At least [`MtaLogs::COPY_LAG`].
    pub raw_window: Period,
}

impl MtaLogs {
    /// How far the copy may be behind the log it copies (the tracker's batches and polls, with
    /// room): `audit` allows this lag, and a raw window shorter than it could delete raw lines
    /// before they are copied, so none is accepted.
    pub const COPY_LAG: std::time::Duration = std::time::Duration::from_secs(300);

    /// Whether the tracker writes the copy.
    pub fn copies(&self) -> bool {
        !self.copy.as_os_str().is_empty()
    }
}

impl Default for MtaLogs {
    fn default() -> Self {
        Self {
            copy: PathBuf::new(),
            raw_window: Period(std::time::Duration::from_secs(86400)),
        }
    }
}

/// `privacy-milter track`: where the MTA's log is, and how the queue is watched.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tracking {
    /// Whether the operator runs `privacy-milter track` (privacy-milter-track.service): the
    /// published policy then says that transit mail's acknowledgement and removal are
    /// recorded, and `audit` checks that the tracker keeps up. `track` runs either way.
    pub enabled: bool,
    pub mta: Mta,
    pub source: LogSource,
    /// The log file, for `source = "file"`.
    pub path: PathBuf,
    /// Where the tracker keeps its place in the log (file position or journal cursor).
    pub state: PathBuf,
    /// How often the queue is checked (Postfix: `postqueue -j`).
    pub queue_interval: Period,
    /// For a Postfix instance other than the default: its configuration directory.
    pub postfix_config_dir: PathBuf,
    /// Transit mail still queued after this is reported.
    pub alert_after: Period,
}

impl Default for Tracking {
    fn default() -> Self {
        Self {
            enabled: false,
            mta: Mta::Postfix,
            source: LogSource::File,
            path: "/var/log/mail.log".into(),
            state: "/var/lib/privacy-milter/track.state".into(),
            queue_interval: Period(std::time::Duration::from_secs(60)),
            postfix_config_dir: PathBuf::new(),
            alert_after: Period(std::time::Duration::from_secs(3600)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mta {
    Postfix,
    Sendmail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// A log file followed across rotation (rsyslog's mail.log, Postfix's `maillog_file`).
    File,
    /// The systemd journal, through `journalctl`.
    Journald,
}

/// Prometheus endpoints (`GET /metrics`), off unless an address is given.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// The milter daemon's endpoint, `ADDRESS:PORT` (e.g. `127.0.0.1:9465`); empty for none.
    pub listen: String,
    /// `privacy-milter track`'s endpoint; empty for none.
    pub track_listen: String,
}

/// `privacy-milter policy`: who the published policy names as responsible and as the contact
/// for access and erasure requests.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The operator of the mail service (a person or an organisation).
    pub name: String,
    /// Where to ask for access or erasure: an address, a web form, a postal address.
    pub contact: String,
    /// A paragraph of the operator's own, printed at the end; empty for none.
    pub text: String,
}

/// `privacy-milter audit`: where the host's own settings are read. Debian's places by default;
/// tests and other layouts name theirs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Log files that may hold the MTA's lines; each with its rotated siblings
    /// (`mail.log.1`, `mail.log.2.gz`, `mail.log-20261129`).
    pub log_files: Vec<PathBuf>,
    /// logrotate's main configuration; its `include`s are followed.
    pub logrotate_conf: PathBuf,
    /// journald's configuration file.
    pub journald_conf: PathBuf,
    /// journald's drop-in directories, lowest precedence first.
    pub journald_dropins: Vec<PathBuf>,
    /// The journal to read (a directory or a `.journal` file); empty for the system's.
    pub journal: PathBuf,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            // Debian's rsyslog writes mail to mail.log, and everything but auth to syslog.
            log_files: vec!["/var/log/mail.log".into(), "/var/log/syslog".into()],
            logrotate_conf: "/etc/logrotate.conf".into(),
            journald_conf: "/etc/systemd/journald.conf".into(),
            journald_dropins: vec![
                "/usr/lib/systemd/journald.conf.d".into(),
                "/run/systemd/journald.conf.d".into(),
                "/etc/systemd/journald.conf.d".into(),
            ],
            journal: PathBuf::new(),
        }
    }
}
