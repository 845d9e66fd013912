//! End-to-end harness: real Postfix or Sendmail, an `smtp-sink` that captures every relayed
//! message to a file, and the `privacy-milter` binary, all private to one temporary directory
//! and to ports picked at run time, so that tests run in parallel.
//!
//! A test that finds its MTA missing prints that it skips and passes, unless
//! `PRIVACY_MILTER_E2E=require`, which makes it fail. Everything started here is stopped by
//! `Drop`, also when the test panics.
#![allow(dead_code)]

use mail_builder::{headers::raw::Raw, MessageBuilder};
use mail_parser::MessageParser;
use serde_json::Value;
use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    net::{TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};
use tempfile::TempDir;

/// How long any wait for readiness or delivery may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(40);

/// Marks the end of every test body: a capture file holding it is complete.
pub const BODY_END: &str = "end-of-e2e-test-message";

/// Where the milter listens for the MTA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socket {
    Unix,
    Tcp,
}

// ---------------------------------------------------------------------------------------
// Availability

/// Whether every program is there; if not, the test skips or fails ([`super::can_run`]).
fn available(test: &str, what: &str, programs: &[PathBuf]) -> bool {
    let missing: Vec<String> = programs
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    super::can_run(
        missing.is_empty(),
        &format!(
            "{test}: {what} not available (missing {}; scripts/setup-test-deps installs it)",
            missing.join(", ")
        ),
    )
}

fn sbin(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("/usr/sbin").join(name)
}

/// Postfix, smtp-sink and swaks are all there.
pub fn postfix_available(test: &str) -> bool {
    available(
        test,
        "Postfix",
        &[sbin("postfix"), sbin("smtp-sink"), sbin("swaks")],
    )
}

/// The root of the unpacked Sendmail debs (see scripts/setup-test-deps).
pub fn sendmail_root() -> PathBuf {
    std::env::var_os("PRIVACY_MILTER_SENDMAIL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/privacy-milter-e2e/sendmail"))
}

/// Sendmail (unpacked), m4, smtp-sink and swaks are all there.
pub fn sendmail_available(test: &str) -> bool {
    let root = sendmail_root();
    available(
        test,
        "Sendmail",
        &[
            root.join("usr/libexec/sendmail/sendmail"),
            root.join("usr/share/sendmail/cf/m4/cf.m4"),
            sbin("m4"),
            sbin("smtp-sink"),
            sbin("swaks"),
            sbin("unshare"),
        ],
    )
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// A loopback port that was free a moment ago, below the ephemeral range (32768 and up), so
/// that no outgoing connection takes it before the server that is to listen on it starts.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 20_000 + (random % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after [`TIMEOUT`] with `what` and `context()`.
pub fn wait_for<T>(
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > TIMEOUT {
            panic!("timed out waiting for {what}\n{}", context());
        }
        thread::sleep(Duration::from_millis(25));
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, owner: &str) {
    let out = run(Command::new("chown").arg(owner).arg(path));
    assert!(out.status.success(), "chown {owner} {}", path.display());
}

/// A child in its own process group; the whole group gets SIGTERM, then SIGKILL, on drop.
pub struct Group {
    child: Child,
    name: &'static str,
}

impl Group {
    fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} {cmd:?}: {e}"));
        Self { child, name }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM to the group; waits up to 10 s for the leader, then SIGKILL.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(status) = self.exited() {
            self.signal_group("-KILL");
            return Some(status);
        }
        self.signal_group("-TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.exited() {
                self.signal_group("-KILL");
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{}: did not stop on SIGTERM, killing", self.name);
        self.signal_group("-KILL");
        let _ = self.child.kill();
        self.child.wait().ok();
        None
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// The milter

/// The privacy-milter binary, run with a configuration written by the test.
pub struct Milter {
    proc: Option<Group>,
    pub socket: Socket,
    /// The socket as the MTA names it: `unix:/path` or `inet:127.0.0.1:PORT`.
    pub postfix_spec: String,
    pub port: u16,
    pub unix_path: PathBuf,
    pub config_path: PathBuf,
    pub events_path: PathBuf,
    pub log_path: PathBuf,
    starts: u32,
}

impl Milter {
    /// Writes the configuration (`extra` is TOML appended to the harness's own keys: put
    /// tables there, e.g. `[networks]`) and starts the milter under `dir`; events go to
    /// `events.jsonl` beside the configuration.
    pub fn start(dir: &Path, socket: Socket, extra: &str) -> Self {
        Self::start_with_events(dir, socket, &["jsonl"], extra)
    }

    /// The same, with these sinks (`ledger` is `ledger.sqlite` beside the configuration).
    pub fn start_with_events(dir: &Path, socket: Socket, sinks: &[&str], extra: &str) -> Self {
        let mdir = dir.join("milter");
        fs::create_dir_all(&mdir).unwrap();
        // Postfix's smtpd (user postfix) must traverse to the socket.
        chmod(&mdir, 0o755);
        let unix_path = mdir.join("milter.sock");
        let port = free_port();
        let (spec, postfix_spec) = match socket {
            Socket::Unix => (
                format!("unix:{}", unix_path.display()),
                format!("unix:{}", unix_path.display()),
            ),
            Socket::Tcp => (
                format!("inet:{port}@127.0.0.1"),
                format!("inet:127.0.0.1:{port}"),
            ),
        };
        let events_path = mdir.join("events.jsonl");
        let config = format!(
            r#"socket = "{spec}"
socket_mode = "0660"
socket_group = "{group}"

[log]
level = "debug"

[events]
sinks = {sinks:?}

[events.jsonl]
path = "{events}"

[events.ledger]
path = "{ledger}"

{privacy}
{extra}
"#,
            // Addresses and IPs in full, unless the test sets its own policy.
            privacy = if extra.contains("[privacy]") {
                String::new()
            } else {
                format!(
                    "[privacy]\nip = \"full\"\naddress = \"full\"\nkeys = \"{}\"\n",
                    mdir.join("keys").display()
                )
            },
            group = if socket == Socket::Unix {
                "postfix"
            } else {
                ""
            },
            events = events_path.display(),
            ledger = mdir.join("ledger.sqlite").display(),
        );
        let config_path = mdir.join("privacy-milter.toml");
        fs::write(&config_path, config).unwrap();
        let mut milter = Self {
            proc: None,
            socket,
            postfix_spec,
            port,
            unix_path,
            config_path,
            events_path,
            log_path: mdir.join("milter.log"),
            starts: 0,
        };
        milter.restart();
        milter
    }

    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_privacy-milter")
    }

    /// The milter reads every `PRIVACY_MILTER_*` variable as a configuration key and refuses
    /// unknown ones, so the harness's own (`PRIVACY_MILTER_E2E`, ...) must not reach it.
    pub fn command() -> Command {
        let mut cmd = Command::new(Self::binary());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PRIVACY_MILTER_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Starts (again) with the same configuration and socket; waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "milter already running");
        let check = run(Self::command()
            .arg("--config")
            .arg(&self.config_path)
            .arg("check-config"));
        assert!(
            check.status.success(),
            "check-config failed:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut proc = Group::spawn(
            "privacy-milter",
            Self::command()
                .arg("--config")
                .arg(&self.config_path)
                .arg("run")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let (socket, port, path) = (self.socket, self.port, self.unix_path.clone());
        let log_path = self.log_path.clone();
        wait_for(
            "the milter to listen",
            || {
                if let Some(status) = proc.exited() {
                    panic!(
                        "privacy-milter exited at start ({status}):\n{}",
                        read_lossy(&log_path)
                    );
                }
                let ready = match socket {
                    Socket::Tcp => port_open(port),
                    Socket::Unix => std::os::unix::net::UnixStream::connect(&path).is_ok(),
                };
                ready.then_some(())
            },
            || read_lossy(&log_path),
        );
        self.proc = Some(proc);
    }

    /// SIGTERM; asserts a clean exit (status 0, unix socket file removed).
    pub fn stop(&mut self) {
        let mut proc = self.proc.take().expect("milter running");
        let status = proc.stop().expect("milter stops on SIGTERM");
        assert!(
            status.success(),
            "milter exit status {status}\n{}",
            self.log()
        );
        if self.socket == Socket::Unix {
            assert!(!self.unix_path.exists(), "unix socket left behind");
        }
    }

    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// All events written so far.
    pub fn events(&self) -> Vec<Value> {
        read_lossy(&self.events_path)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event {l}: {e}")))
            .collect()
    }

    /// The one event with this queue id (panics on none or several).
    pub fn event(&self, queue_id: &str) -> Value {
        let all = self.events();
        let found: Vec<&Value> = all
            .iter()
            .filter(|e| e["queue_id"].as_str() == Some(queue_id))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one event with queue_id {queue_id}, events:\n{all:#?}"
        );
        found[0].clone()
    }
}

// ---------------------------------------------------------------------------------------
// The sink

/// `smtp-sink` writing each mail transaction into its own file.
pub struct Sink {
    proc: Group,
    pub port: u16,
    pub dir: PathBuf,
}

/// One message as the sink received it.
pub struct Delivered {
    pub file: PathBuf,
    pub raw: Vec<u8>,
}

impl Delivered {
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| panic!("{} does not parse", self.file.display()))
    }

    /// Every value of the header `name`, trimmed, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.parsed()
            .headers_raw()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn message_id(&self) -> Option<String> {
        self.parsed().message_id().map(str::to_string)
    }

    /// The queue ids in the `Received:` headers (the MTA's, not the sink's own, whose id is
    /// the random part of the capture file's name).
    pub fn received_ids(&self) -> Vec<String> {
        let file_name = self
            .file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let sink_id = file_name.rsplit('.').next().unwrap_or_default().to_string();
        self.parsed()
            .received_all()
            .filter_map(|r| r.id.as_ref().map(|id| id.to_string()))
            .filter(|id| *id != sink_id)
            .collect()
    }

    /// The envelope recipients as the sink saw them (`X-Rcpt-Args`).
    pub fn rcpt_args(&self) -> Vec<String> {
        self.header_values("X-Rcpt-Args")
    }

    /// Panics with the whole message unless its transit tags are `expected`, top to bottom: a
    /// tag of the lab's milter (`DIR; by=mx.test.example; k=...; mac=...`) reads `ours:DIR`,
    /// any other value as it is (tests/it/e2e_dkim.rs verifies the MACs).
    pub fn assert_transit_tags(&self, expected: &[&str]) {
        let got: Vec<String> = self
            .header_values("X-Transit")
            .into_iter()
            .map(|v| match v.split_once("; by=mx.test.example; k=") {
                Some((dir, rest)) if rest.contains("; mac=") => format!("ours:{dir}"),
                _ => v,
            })
            .collect();
        assert_eq!(
            got,
            expected,
            "transit tags in {}:\n{}",
            self.file.display(),
            String::from_utf8_lossy(&self.raw)
        );
    }

    /// Panics with the whole message unless `headers` has exactly `expected` values.
    pub fn assert_header(&self, name: &str, expected: &[&str]) {
        let got = self.header_values(name);
        assert_eq!(
            got,
            expected,
            "header {name} in {}:\n{}",
            self.file.display(),
            String::from_utf8_lossy(&self.raw)
        );
    }
}

impl Sink {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "sink", &[])
    }

    /// A sink in `dir/NAME` with more smtp-sink options: `["-r", "RCPT"]` defers every
    /// recipient (4xx), `["-f", "RCPT"]` refuses them (5xx).
    pub fn start_with(dir: &Path, name: &str, options: &[&str]) -> Self {
        Self::start_at(dir, name, "127.0.0.1", options)
    }

    /// A sink listening on `address` (one of [`NetNamespace`]'s, say).
    pub fn start_at(dir: &Path, name: &str, address: &str, options: &[&str]) -> Self {
        let sdir = dir.join(name);
        fs::create_dir_all(&sdir).unwrap();
        chown(&sdir, "nobody");
        let port = free_port();
        let proc = Group::spawn(
            "smtp-sink",
            Command::new(sbin("smtp-sink"))
                .args(options)
                .arg("-u")
                .arg("nobody")
                .arg("-d")
                .arg(format!("{}/msg.", sdir.display()))
                .arg(format!("{address}:{port}"))
                .arg("256")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut sink = Self {
            proc,
            port,
            dir: sdir,
        };
        wait_for(
            "smtp-sink to listen",
            || {
                if let Some(status) = sink.proc.exited() {
                    panic!("smtp-sink exited at start: {status}");
                }
                TcpStream::connect((address, port)).is_ok().then_some(())
            },
            String::new,
        );
        sink
    }

    /// Every complete capture file.
    pub fn delivered(&self) -> Vec<Delivered> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let raw = fs::read(entry.path()).unwrap_or_default();
            if String::from_utf8_lossy(&raw).contains(BODY_END) {
                out.push(Delivered {
                    file: entry.path(),
                    raw,
                });
            }
        }
        out.sort_by(|a, b| a.file.cmp(&b.file));
        out
    }

    /// The captures of the message with this Message-ID (without angle brackets).
    pub fn with_message_id(&self, message_id: &str) -> Vec<Delivered> {
        self.delivered()
            .into_iter()
            .filter(|d| d.message_id().as_deref() == Some(message_id))
            .collect()
    }

    /// Waits until `count` captures of the message exist.
    pub fn wait(
        &self,
        message_id: &str,
        count: usize,
        context: impl Fn() -> String,
    ) -> Vec<Delivered> {
        wait_for(
            &format!("{count} deliveries of <{message_id}> at the sink"),
            || {
                let found = self.with_message_id(message_id);
                (found.len() >= count).then_some(found)
            },
            context,
        )
    }
}

// ---------------------------------------------------------------------------------------
// Messages and SMTP clients

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh Message-ID (without brackets), unique across tests and runs.
pub fn new_message_id(tag: &str) -> String {
    format!(
        "{tag}.{}.{}.{}@e2e.test.example",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A message with these envelope-independent headers, extra `headers` (sent verbatim), and a
/// body ending in [`BODY_END`].
pub fn compose(
    message_id: &str,
    from: &str,
    to: &[&str],
    subject: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut builder = MessageBuilder::new()
        .message_id(message_id.to_string())
        .from(from.to_string())
        .to(to.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        .subject(subject.to_string());
    for (name, value) in headers {
        builder = builder.header(name.to_string(), Raw::new(value.to_string()));
    }
    builder
        .text_body(format!("Test message {subject}.\n{BODY_END}\n"))
        .write_to_vec()
        .unwrap()
}

/// One swaks run.
pub struct Swaks<'a> {
    pub port: u16,
    pub from: &'a str,
    pub to: Vec<&'a str>,
    pub xclient: Option<String>,
    pub auth: Option<(&'a str, &'a str)>,
    pub message: Vec<u8>,
}

impl<'a> Swaks<'a> {
    pub fn new(port: u16, from: &'a str, to: &[&'a str], message: Vec<u8>) -> Self {
        Self {
            port,
            from,
            to: to.to_vec(),
            xclient: None,
            auth: None,
            message,
        }
    }

    pub fn xclient(mut self, attrs: &str) -> Self {
        self.xclient = Some(attrs.to_string());
        self
    }

    pub fn auth(mut self, user: &'a str, password: &'a str) -> Self {
        self.auth = Some((user, password));
        self
    }

    /// Runs swaks; returns whether it succeeded and its transcript.
    pub fn run(&self, dir: &Path) -> (bool, String) {
        let data = dir.join(format!(
            "swaks-{}.eml",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&data, &self.message).unwrap();
        let mut cmd = Command::new(sbin("swaks"));
        cmd.arg("--server")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--helo", "client.e2e.test.example"])
            .args(["--from", self.from])
            .args(["--to", &self.to.join(",")])
            .arg("--data")
            .arg(format!("@{}", data.display()))
            .args(["--timeout", "60"]);
        if let Some(x) = &self.xclient {
            cmd.args(["--xclient", x]);
        }
        if let Some((user, password)) = self.auth {
            cmd.args(["--auth", "PLAIN", "--auth-user", user])
                .args(["--auth-password", password]);
        }
        let out = run(cmd.stdin(Stdio::null()));
        let transcript = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), transcript)
    }

    /// Runs swaks and panics unless the message was accepted.
    pub fn send(&self, dir: &Path) -> String {
        let (ok, transcript) = self.run(dir);
        assert!(ok, "swaks failed:\n{transcript}");
        transcript
    }
}

// ---------------------------------------------------------------------------------------
// Event assertions

/// Asserts the fields of an accepted message's event.
pub fn assert_event(
    event: &Value,
    direction: &str,
    transit: bool,
    client_ip: &str,
    authenticated: bool,
    webmail: bool,
) {
    let ctx = || serde_json::to_string_pretty(event).unwrap();
    assert_eq!(event["schema"], "privacy-milter.message.v1", "{}", ctx());
    assert_eq!(event["outcome"], "accepted", "{}", ctx());
    assert_eq!(event["direction"], direction, "{}", ctx());
    assert_eq!(event["transit"], transit, "{}", ctx());
    assert_eq!(event["client"]["ip"], client_ip, "{}", ctx());
    assert_eq!(event["client"]["authenticated"], authenticated, "{}", ctx());
    assert_eq!(event["client"]["webmail"], webmail, "{}", ctx());
    assert_eq!(event["retention"]["class"], direction, "{}", ctx());
}

/// The event's actions.
pub fn actions(event: &Value) -> Vec<String> {
    event["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn assert_actions(event: &Value, present: &[&str], absent: &[&str]) {
    let got = actions(event);
    for a in present {
        assert!(got.iter().any(|g| g == a), "action {a} missing in {got:?}");
    }
    for a in absent {
        assert!(
            !got.iter().any(|g| g == a),
            "unexpected action {a} in {got:?}"
        );
    }
}

/// (address, local) of each recipient in the event, sorted.
pub fn event_recipients(event: &Value) -> Vec<(String, bool)> {
    let mut r: Vec<(String, bool)> = event["recipients"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|r| {
            let name = r["address"]
                .as_str()
                .or_else(|| r["domain"].as_str())
                .unwrap_or_default()
                .to_string();
            (name, r["local"].as_bool().unwrap_or(false))
        })
        .collect();
    r.sort();
    r
}

// ---------------------------------------------------------------------------------------
// Postfix

/// A private Postfix instance in `dir`, relaying everything to `relay_port` (the sink).
pub struct Postfix {
    pub base: PathBuf,
    pub etc: PathBuf,
    pub port: u16,
    pub maillog: PathBuf,
    running: bool,
    /// Shell run before each `postfix` command, in a mount namespace of its own (the
    /// syslog socket of [`Rsyslog`] put at `/dev/log`), when Postfix logs through syslog.
    namespace: Option<String>,
}

/// Settings every test instance gets; a line `key = value` in `extra` replaces the base
/// setting of that key, or is appended. Never write a key twice: Postfix then logs "overriding
/// earlier entry" from every process, postlogd included, and postlogd logs through its own
/// socket; with Linux's default `net.unix.max_dgram_qlen = 10` that can fill the socket before
/// postlogd reads it, and Postfix then hangs (seen here under load).
fn postfix_main_cf(base: &Path, port_sink: u16, milter: &str, extra: &str) -> String {
    let mut lines: Vec<String> = postfix_main_cf_base(base, port_sink, milter)
        .lines()
        .map(str::to_string)
        .collect();
    let key = |line: &str| {
        line.split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    for line in extra.lines().filter(|l| l.contains('=')) {
        match lines.iter_mut().find(|l| key(l) == key(line)) {
            Some(existing) => *existing = line.to_string(),
            None => lines.push(line.to_string()),
        }
    }
    lines.join("\n") + "\n"
}

fn postfix_main_cf_base(base: &Path, port_sink: u16, milter: &str) -> String {
    let b = base.display();
    format!(
        "compatibility_level = 3.6
queue_directory = {b}/queue
data_directory = {b}/data
maillog_file_prefixes = /var, /dev/stdout, /tmp
maillog_file = {b}/maillog
myhostname = mx.test.example
mydomain = test.example
myorigin = test.example
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relay_domains = test.example transit.example
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.0/8
relayhost = [127.0.0.1]:{port_sink}
smtp_dns_support_level = disabled
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {b}/etc/sasl
smtpd_milters = {milter}
non_smtpd_milters = $smtpd_milters
milter_default_action = tempfail
milter_protocol = 6
milter_connect_timeout = 10s
"
    )
}

fn postfix_master_cf(port: u16) -> String {
    format!(
        "127.0.0.1:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"
    )
}

impl Postfix {
    pub fn start(base: &Path, sink_port: u16, milter: &str, extra_main_cf: &str) -> Self {
        Self::start_logging(base, sink_port, milter, extra_main_cf, None)
    }

    /// The same, logging through `syslog` (an empty `maillog_file`: Postfix's own syslog
    /// client, to `/dev/log`, as on Debian) instead of postlogd's file; `maillog` is then
    /// rsyslog's file.
    pub fn start_with_syslog(
        base: &Path,
        sink_port: u16,
        milter: &str,
        extra_main_cf: &str,
        syslog: &Rsyslog,
    ) -> Self {
        let extra = format!("{extra_main_cf}\nmaillog_file =\n");
        Self::start_logging(base, sink_port, milter, &extra, Some(syslog))
    }

    fn start_logging(
        base: &Path,
        sink_port: u16,
        milter: &str,
        extra_main_cf: &str,
        syslog: Option<&Rsyslog>,
    ) -> Self {
        for d in ["etc", "etc/sasl", "queue", "data"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        chown(&base.join("data"), "postfix:postfix");
        let etc = base.join("etc");
        let port = free_port();
        fs::write(
            etc.join("main.cf"),
            postfix_main_cf(base, sink_port, milter, extra_main_cf),
        )
        .unwrap();
        fs::write(etc.join("master.cf"), postfix_master_cf(port)).unwrap();
        let sasldb = base.join("sasldb2");
        fs::write(
            etc.join("sasl/smtpd.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {}\n",
                sasldb.display()
            ),
        )
        .unwrap();
        let mut pf = Self {
            base: base.to_path_buf(),
            etc,
            port,
            maillog: syslog.map_or_else(|| base.join("maillog"), |s| s.maillog.clone()),
            running: false,
            namespace: syslog.map(Rsyslog::dev_log_script),
        };
        let check = pf.postfix(&["check"]).expect("postfix check finishes");
        assert!(
            check.status.success(),
            "postfix check: {}\n{}",
            String::from_utf8_lossy(&check.stdout),
            pf.context()
        );
        pf.running = true;
        let start = pf.postfix(&["start"]).expect("postfix start finishes");
        assert!(
            start.status.success(),
            "postfix start: {}\n{}",
            String::from_utf8_lossy(&start.stdout),
            pf.context()
        );
        wait_for(
            "Postfix to listen",
            || port_open(port).then_some(()),
            || pf.context(),
        );
        pf
    }

    /// Runs `postfix -c ETC ARGS`, killed after 60 s (its logging can block, see
    /// [`postfix_main_cf`]); `None` when it had to be killed.
    fn postfix(&self, args: &[&str]) -> Option<Output> {
        let out_path = self.base.join("postfix-command.out");
        let out = fs::File::create(&out_path).unwrap();
        let mut cmd = match &self.namespace {
            None => {
                let mut cmd = Command::new(sbin("postfix"));
                cmd.arg("-c").arg(&self.etc).args(args);
                cmd
            }
            Some(script) => {
                let mut cmd = Command::new(sbin("unshare"));
                cmd.args(["-m", "sh", "-c"])
                    .arg(format!(
                        "{script} && exec \"$0\" -c \"$1\" {}",
                        args.join(" ")
                    ))
                    .arg(sbin("postfix"))
                    .arg(&self.etc);
                cmd
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("postfix command");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(Output {
                    status,
                    stdout: fs::read(&out_path).unwrap_or_default(),
                    stderr: Vec::new(),
                });
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                eprintln!("postfix {args:?} hung; killed");
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postfix reload`: every process, postlogd included, starts over with main.cf (and
    /// postlogd opens `maillog_file` again, as after a rotation).
    pub fn reload(&self) {
        let out = self.postfix(&["reload"]).expect("postfix reload finishes");
        assert!(out.status.success(), "postfix reload: {}", self.context());
    }

    /// Adds a master.cf entry (a service line, its `-o` options included) and reloads, so
    /// that master starts it.
    pub fn add_service(&self, entry: &str) {
        let master = self.etc.join("master.cf");
        let mut text = read_lossy(&master);
        text.push_str(entry.trim_end());
        text.push('\n');
        fs::write(&master, text).unwrap();
        self.reload();
    }

    /// Runs `postsuper -c ETC ARGS` (as root: it needs the queue), failing the test if it
    /// fails; then wakes pickup (`postkick`), which would otherwise look at the maildrop, where
    /// `postsuper -r` puts a message, only once a minute.
    pub fn postsuper(&self, args: &[&str]) {
        let out = run(Command::new(sbin("postsuper"))
            .arg("-c")
            .arg(&self.etc)
            .args(args));
        assert!(
            out.status.success(),
            "postsuper {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.context()
        );
        run(Command::new(sbin("postkick"))
            .arg("-c")
            .arg(&self.etc)
            .args(["public", "pickup", "W"]));
    }

    /// `postfix logrotate`: postlogd's `maillog_file` renamed with the date as its suffix, a
    /// new one opened, the old one compressed at once (`maillog_file_compressor`, gzip);
    /// returns the compressed file once it is there.
    pub fn logrotate(&self) -> PathBuf {
        let out = self
            .postfix(&["logrotate"])
            .expect("postfix logrotate finishes");
        assert!(
            out.status.success(),
            "postfix logrotate: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            self.context()
        );
        let name = self
            .maillog
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        wait_for(
            "postfix logrotate to compress the old maillog",
            || {
                let mut plain = false;
                let mut gz = None;
                for entry in fs::read_dir(&self.base).ok()?.flatten() {
                    let n = entry.file_name().to_string_lossy().into_owned();
                    if n.starts_with(&format!("{name}.")) {
                        if n.ends_with(".gz") {
                            gz = Some(entry.path());
                        } else {
                            plain = true;
                        }
                    }
                }
                gz.filter(|_| !plain)
            },
            || self.context(),
        )
    }

    fn master_pid(&self) -> Option<String> {
        let pid = read_lossy(&self.base.join("queue/pid/master.pid"))
            .trim()
            .to_string();
        (!pid.is_empty() && Path::new("/proc").join(&pid).exists()).then_some(pid)
    }

    /// Adds a Cyrus sasldb user (`user@realm`).
    pub fn add_sasl_user(&self, user: &str, realm: &str, password: &str) {
        let sasldb = self.base.join("sasldb2");
        add_sasldb_user(&sasldb, user, realm, password);
        chown(&sasldb, "postfix");
    }

    pub fn maillog(&self) -> String {
        read_lossy(&self.maillog)
    }

    /// The maillog, for failure messages.
    pub fn context(&self) -> String {
        format!("--- Postfix maillog ---\n{}", self.maillog())
    }

    /// The queue id that cleanup gave the message with this Message-ID.
    pub fn queue_id(&self, message_id: &str) -> Option<String> {
        let needle = format!(": message-id=<{message_id}>");
        self.maillog().lines().find_map(|line| {
            let (head, _) = line.split_once(&needle)?;
            head.rsplit(' ').next().map(str::to_string)
        })
    }

    /// Waits until Postfix has delivered (and removed) the message; returns its queue id.
    pub fn wait_delivered(&self, message_id: &str, context: impl Fn() -> String) -> String {
        wait_for(
            &format!("Postfix to deliver <{message_id}>"),
            || {
                let qid = self.queue_id(message_id)?;
                let log = self.maillog();
                let removed = format!("{qid}: removed");
                log.lines().any(|l| l.ends_with(&removed)).then_some(qid)
            },
            || format!("{}\n{}", self.context(), context()),
        )
    }

    /// The maillog lines of one queue id.
    pub fn log_of(&self, qid: &str) -> Vec<String> {
        let tag = format!(" {qid}: ");
        self.maillog()
            .lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect()
    }

    /// Submits with the `sendmail` command (pickup, non_smtpd_milters).
    pub fn sendmail(&self, from: &str, to: &[&str], message: &[u8]) {
        let mut child = Command::new(sbin("sendmail"))
            .arg("-C")
            .arg(&self.etc)
            .arg("-f")
            .arg(from)
            .args(to)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sendmail");
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sendmail -C failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postfix stop`; if that fails or hangs, SIGKILL to master's process group (master runs
    /// as a session leader, its children are in its group).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let master = self.master_pid();
        let stopped = self.postfix(&["stop"]).is_some_and(|o| o.status.success());
        let start = Instant::now();
        while stopped && self.master_pid().is_some() && start.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(20));
        }
        if let Some(pid) = master.filter(|_| !stopped || self.master_pid().is_some()) {
            eprintln!("postfix did not stop; killing master {pid} and its process group");
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything one Postfix test needs. Fields drop in order: Postfix, milter, sink, directory.
pub struct PostfixLab {
    pub postfix: Postfix,
    pub milter: Milter,
    pub sink: Sink,
    pub dir: TempDir,
}

impl PostfixLab {
    /// Starts sink, milter (configured with `milter_toml`) and Postfix (`extra_main_cf`).
    pub fn start(socket: Socket, milter_toml: &str, extra_main_cf: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pm-e2e-postfix.")
            .tempdir()
            .unwrap();
        chmod(dir.path(), 0o755);
        let sink = Sink::start(dir.path());
        let milter = Milter::start(dir.path(), socket, milter_toml);
        let postfix = Postfix::start(dir.path(), sink.port, &milter.postfix_spec, extra_main_cf);
        Self {
            postfix,
            milter,
            sink,
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn context(&self) -> String {
        format!(
            "{}\n--- milter log ---\n{}\n--- events ---\n{}",
            self.postfix.context(),
            self.milter.log(),
            read_lossy(&self.milter.events_path)
        )
    }

    pub fn swaks(
        &self,
        from: &'static str,
        to: &[&'static str],
        message: Vec<u8>,
    ) -> Swaks<'static> {
        Swaks::new(self.postfix.port, from, to, message)
    }

    /// Waits for the message to be delivered `copies` times (one per transport/next hop) and
    /// returns the queue id, the captures and the one event with that queue id. Checks the
    /// queue id three ways: maillog (cleanup), the capture's Received header, the event.
    pub fn delivered(&self, message_id: &str, copies: usize) -> (String, Vec<Delivered>, Value) {
        let qid = self.postfix.wait_delivered(message_id, || self.context());
        let captures = self.sink.wait(message_id, copies, || self.context());
        assert_eq!(
            captures.len(),
            copies,
            "copies of <{message_id}> at the sink"
        );
        for c in &captures {
            let ids = c.received_ids();
            assert!(
                ids.contains(&qid),
                "Received ids {ids:?} of {} lack the maillog queue id {qid}",
                c.file.display()
            );
        }
        let sent = self
            .postfix
            .log_of(&qid)
            .iter()
            .filter(|l| l.contains("status=sent"))
            .count();
        assert!(sent >= 1, "no status=sent for {qid}:\n{}", self.context());
        let event = self.milter.event(&qid);
        (qid, captures, event)
    }

    /// Asserts that there is exactly one event per given queue id and no other event.
    pub fn assert_events_are(&self, qids: &[&str]) {
        let events = self.milter.events();
        let mut got: Vec<String> = events
            .iter()
            .map(|e| e["queue_id"].as_str().unwrap_or("<none>").to_string())
            .collect();
        got.sort();
        let mut want: Vec<String> = qids.iter().map(|q| q.to_string()).collect();
        want.sort();
        assert_eq!(
            got,
            want,
            "events vs delivered messages\n{}",
            self.context()
        );
    }
}

/// Adds `user@realm` with `password` to the Cyrus sasldb at `sasldb` (created if missing).
fn add_sasldb_user(sasldb: &Path, user: &str, realm: &str, password: &str) {
    let mut child = Command::new(sbin("saslpasswd2"))
        .arg("-p")
        .arg("-f")
        .arg(sasldb)
        .args(["-c", "-u", realm, user])
        .stdin(Stdio::piped())
        .spawn()
        .expect("saslpasswd2");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "saslpasswd2 failed");
}

// ---------------------------------------------------------------------------------------
// Sendmail

/// A private Sendmail daemon (unpacked debs, private UTS namespace named mx.test.example)
/// relaying everything to the sink, with the milter attached by INPUT_MAIL_FILTER. It offers
/// SMTP AUTH (PLAIN, LOGIN) against its own sasldb: Sendmail reads its SASL configuration only
/// from fixed places, so its private mount namespace has the lab's own over /usr/lib/sasl2.
pub struct Sendmail {
    proc: Option<Group>,
    pub dir: PathBuf,
    pub port: u16,
    /// What Sendmail logged, as rsyslog would write it to mail.log.
    pub maillog: PathBuf,
    _syslog: SyslogCapture,
}

/// A syslog socket of the test's own (bound over `/dev/log` in Sendmail's private mount
/// namespace), writing each message as a line of a log file the way rsyslog does: the
/// `<PRI>` dropped and the host name put after the time stamp.
struct SyslogCapture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SyslogCapture {
    fn start(socket: &Path, log: &Path, host: &str) -> Self {
        let _ = fs::remove_file(socket);
        let sock = std::os::unix::net::UnixDatagram::bind(socket).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, log, host) = (stop.clone(), log.to_path_buf(), host.to_string());
        let thread = thread::spawn(move || {
            let mut out = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]);
                // "<22>Nov 29 21:06:33 sendmail[1131]: ..." (glibc's syslog(3) format).
                let text = text.trim_end_matches(['\n', '\0']);
                let body = text.split_once('>').map_or(text, |(_, rest)| rest);
                if body.len() > 16 {
                    let (stamp, rest) = body.split_at(16);
                    let _ = writeln!(out, "{stamp}{host} {rest}");
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SyslogCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Sendmail {
    /// `milter` is the socket in Sendmail's syntax: `inet:PORT@127.0.0.1` or `local:/path`.
    pub fn start(dir: &Path, sink_port: u16, milter: &str) -> Self {
        let root = sendmail_root();
        let sdir = dir.join("sendmail");
        fs::create_dir_all(sdir.join("mqueue")).unwrap();
        chmod(&sdir.join("mqueue"), 0o700);
        fs::write(sdir.join("service.switch"), "hosts files\naliases files\n").unwrap();
        fs::create_dir_all(sdir.join("sasl2")).unwrap();
        fs::write(
            sdir.join("sasl2/Sendmail.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {}\n",
                sdir.join("sasldb2").display()
            ),
        )
        .unwrap();
        let port = free_port();
        let d = sdir.display();
        let mc = format!(
            "include(`{root}/usr/share/sendmail/cf/m4/cf.m4')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `mx.test.example')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`QUEUE_DIR', `{d}/mqueue')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`STATUS_FILE', `{d}/statistics')dnl
define(`ALIAS_FILE', `')dnl
define(`confHELP_FILE', `')dnl
define(`SMART_HOST', `[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {sink_port}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {sink_port}')dnl
define(`SMTP_MAILER_ARGS', `TCP $h {sink_port}')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`accept_unresolvable_domains')dnl
define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl
define(`confAUTH_OPTIONS', `A')dnl
TRUST_AUTH_MECH(`PLAIN LOGIN')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
INPUT_MAIL_FILTER(`privacy', `S={milter}, F=T, T=S:10s;R:10s;E:1m')dnl
MAILER(`smtp')dnl
",
            root = root.display()
        );
        fs::write(sdir.join("test.mc"), mc).unwrap();
        let cf = run(Command::new(sbin("m4")).arg(sdir.join("test.mc")));
        assert!(
            cf.status.success(),
            "m4: {}",
            String::from_utf8_lossy(&cf.stderr)
        );
        fs::write(sdir.join("sendmail.cf"), &cf.stdout).unwrap();
        let binary = root.join("usr/libexec/sendmail/sendmail");
        let log = fs::File::create(sdir.join("sendmail.out")).unwrap();
        // A /dev of its own whose `log` is the capture's socket; the device nodes Sendmail
        // uses are bound in from the real /dev.
        fs::create_dir_all(sdir.join("dev")).unwrap();
        let maillog = sdir.join("maillog");
        let syslog = SyslogCapture::start(&sdir.join("dev/log"), &maillog, "mx");
        let script = format!(
            "for n in null zero random urandom tty full; do touch {d}/dev/$n \
               && mount --bind /dev/$n {d}/dev/$n || exit 1; done \
             && mount --rbind {d}/dev /dev \
             && mount --bind {d}/sasl2 /usr/lib/sasl2 && hostname mx.test.example \
             && exec {} -C {d}/sendmail.cf -bD -q10s",
            binary.display()
        );
        let mut proc = Group::spawn(
            "sendmail",
            Command::new(sbin("unshare"))
                .args(["-m", "-u", "sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let out_path = sdir.join("sendmail.out");
        wait_for(
            "Sendmail to listen",
            || {
                if let Some(status) = proc.exited() {
                    panic!(
                        "sendmail exited at start ({status}):\n{}",
                        read_lossy(&out_path)
                    );
                }
                port_open(port).then_some(())
            },
            || read_lossy(&out_path),
        );
        Self {
            proc: Some(proc),
            dir: sdir,
            port,
            maillog,
            _syslog: syslog,
        }
    }
}

impl Drop for Sendmail {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }
}

/// Everything one Sendmail test needs. Fields drop in order: Sendmail, milter, sink, dir.
pub struct SendmailLab {
    pub sendmail: Sendmail,
    pub milter: Milter,
    pub sink: Sink,
    pub dir: TempDir,
}

impl SendmailLab {
    /// The milter on TCP.
    pub fn start(milter_toml: &str) -> Self {
        Self::start_on(Socket::Tcp, milter_toml)
    }

    pub fn start_on(socket: Socket, milter_toml: &str) -> Self {
        Self::start_with_events(socket, &["jsonl"], milter_toml)
    }

    /// With these sinks (see [`Milter::start_with_events`]).
    pub fn start_with_events(socket: Socket, sinks: &[&str], milter_toml: &str) -> Self {
        // Sendmail refuses a unix socket, and SASL files, below a world-writable directory
        // such as /tmp ("unsafe: World writable directory"): the lab lives in /run (root's,
        // 0755).
        let dir = tempfile::Builder::new()
            .prefix("pm-e2e-sendmail.")
            .tempdir_in("/run")
            .unwrap();
        chmod(dir.path(), 0o755);
        let sink = Sink::start(dir.path());
        let milter = Milter::start_with_events(dir.path(), socket, sinks, milter_toml);
        let spec = match socket {
            Socket::Tcp => format!("inet:{}@127.0.0.1", milter.port),
            Socket::Unix => format!("local:{}", milter.unix_path.display()),
        };
        let sendmail = Sendmail::start(dir.path(), sink.port, &spec);
        Self {
            sendmail,
            milter,
            sink,
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds an SMTP AUTH user (`user@realm`) to Sendmail's sasldb.
    pub fn add_sasl_user(&self, user: &str, realm: &str, password: &str) {
        add_sasldb_user(&self.sendmail.dir.join("sasldb2"), user, realm, password);
    }

    pub fn context(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "--- sendmail output ---\n{}\n--- sendmail log ---\n{}\n",
            read_lossy(&self.sendmail.dir.join("sendmail.out")),
            read_lossy(&self.sendmail.maillog)
        );
        let _ = write!(
            s,
            "--- milter log ---\n{}\n--- events ---\n{}\n--- sink files ---\n",
            self.milter.log(),
            read_lossy(&self.milter.events_path)
        );
        if let Ok(entries) = fs::read_dir(&self.sink.dir) {
            for e in entries.flatten() {
                let _ = writeln!(s, "{}:\n{}", e.path().display(), read_lossy(&e.path()));
            }
        }
        s
    }

    pub fn swaks(
        &self,
        from: &'static str,
        to: &[&'static str],
        message: Vec<u8>,
    ) -> Swaks<'static> {
        Swaks::new(self.sendmail.port, from, to, message)
    }

    /// Waits for `copies` captures of the message; the queue id is Sendmail's (from its
    /// Received header), and exactly one event carries it.
    pub fn delivered(&self, message_id: &str, copies: usize) -> (String, Vec<Delivered>, Value) {
        let captures = self.sink.wait(message_id, copies, || self.context());
        assert_eq!(
            captures.len(),
            copies,
            "copies of <{message_id}> at the sink"
        );
        // Sendmail's Received header has "with ESMTP id QID" (the sink's own is filtered out).
        let ids = captures[0].received_ids();
        assert_eq!(ids.len(), 1, "Received ids {ids:?}\n{}", self.context());
        let qid = ids[0].clone();
        wait_for(
            "the event",
            || {
                self.milter
                    .events()
                    .into_iter()
                    .any(|e| e["queue_id"].as_str() == Some(&qid))
                    .then_some(())
            },
            || self.context(),
        );
        (qid.clone(), captures, self.milter.event(&qid))
    }
}

// ---------------------------------------------------------------------------------------
// A network of the test's own

/// The calling thread in a network namespace of its own (root only), its loopback up with
/// these extra addresses: the processes it starts then have peers that do not look local
/// (a relay at 198.51.100.25, say), and nothing of the machine's network changes. Namespaces
/// are per thread: the other tests are not in it. Drop puts the thread back.
pub struct NetNamespace {
    original: fs::File,
}

impl NetNamespace {
    pub fn enter(addresses: &[&str]) -> Self {
        let original = fs::File::open("/proc/thread-self/ns/net").unwrap();
        // SAFETY: unshare(2) with a flag, no pointers.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let ns = Self { original };
        let ip = |args: &[&str]| {
            let out = run(Command::new(sbin("ip")).args(args));
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["link", "set", "lo", "up"]);
        for address in addresses {
            ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"]);
        }
        ns
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a descriptor this owns.
        unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

// ---------------------------------------------------------------------------------------
// rsyslog and Dovecot

/// rsyslogd, Dovecot and python3 (the IMAP and POP client) are all there.
pub fn dovecot_available(test: &str) -> bool {
    available(
        test,
        "Dovecot and rsyslog",
        &[
            sbin("rsyslogd"),
            sbin("dovecot"),
            sbin("unshare"),
            PathBuf::from("/usr/lib/dovecot/imap-login"),
            PathBuf::from("/usr/lib/dovecot/pop3-login"),
            PathBuf::from("/usr/bin/python3"),
        ],
    )
}

/// A private rsyslogd writing every `mail.*` message to `mail.log` in Debian 12's format
/// (RFC 3339 time stamps), read from a socket of its own (`imuxsock`, not the system's
/// `/dev/log`). Daemons that can only log to `/dev/log` (Postfix's and Dovecot's syslog
/// clients) run in a mount namespace that puts that socket there: [`Rsyslog::dev_log_script`].
pub struct Rsyslog {
    proc: Group,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub maillog: PathBuf,
    pub pid_file: PathBuf,
}

impl Rsyslog {
    pub fn start(dir: &Path) -> Self {
        let rdir = dir.join("rsyslog");
        fs::create_dir_all(rdir.join("work")).unwrap();
        let socket = rdir.join("log.sock");
        let maillog = dir.join("log/mail.log");
        fs::create_dir_all(maillog.parent().unwrap()).unwrap();
        let pid_file = rdir.join("rsyslogd.pid");
        let config = rdir.join("rsyslog.conf");
        fs::write(
            &config,
            format!(
                "global(workDirectory=\"{work}\")
module(load=\"imuxsock\" SysSock.Use=\"off\")
input(type=\"imuxsock\" Socket=\"{socket}\" CreatePath=\"on\")
mail.* action(type=\"omfile\" file=\"{maillog}\" template=\"RSYSLOG_FileFormat\")
",
                work = rdir.join("work").display(),
                socket = socket.display(),
                maillog = maillog.display()
            ),
        )
        .unwrap();
        let out_path = rdir.join("rsyslogd.out");
        let out = fs::File::create(&out_path).unwrap();
        let mut proc = Group::spawn(
            "rsyslogd",
            Command::new(sbin("rsyslogd"))
                .arg("-n")
                .arg("-f")
                .arg(&config)
                .arg("-i")
                .arg(&pid_file)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        wait_for(
            "rsyslogd's socket",
            || {
                if let Some(status) = proc.exited() {
                    panic!("rsyslogd exited ({status}):\n{}", read_lossy(&out_path));
                }
                (socket.exists() && pid_file.exists()).then_some(())
            },
            || read_lossy(&out_path),
        );
        // The device nodes a daemon needs, bound in from the real /dev by the script.
        let dev = rdir.join("dev");
        fs::create_dir_all(&dev).unwrap();
        for name in ["null", "zero", "random", "urandom", "tty", "full", "log"] {
            fs::write(dev.join(name), "").unwrap();
        }
        Self {
            proc,
            dir: rdir,
            socket,
            maillog,
            pid_file,
        }
    }

    /// Shell for `unshare -m sh -c`: a /dev of its own whose `log` is this rsyslogd's
    /// socket, the other nodes bound in from the real /dev.
    pub fn dev_log_script(&self) -> String {
        let dev = self.dir.join("dev");
        let d = dev.display();
        format!(
            "for n in null zero random urandom tty full; do mount --bind /dev/$n {d}/$n || exit 1; done \
             && mount --bind {} {d}/log && mount --rbind {d} /dev",
            self.socket.display()
        )
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn maillog(&self) -> String {
        read_lossy(&self.maillog)
    }

    /// SIGTERM (the lines it has written are in the file when it exits).
    pub fn stop(&mut self) {
        self.proc.stop();
    }
}

/// A private Dovecot (IMAP and POP3 on loopback ports of its own, its own base_dir and state,
/// users in a passwd-file) logging through `syslog` (facility mail) to an [`Rsyslog`]. Loopback
/// clients are trusted (`login_trusted_networks`), so a test client presents a remote address
/// as a proxy would: IMAP `ID ("x-originating-ip" ...)`, POP3 `XCLIENT ADDR=...`.
pub struct Dovecot {
    proc: Group,
    pub dir: PathBuf,
    pub imap_port: u16,
    pub pop3_port: u16,
}

impl Dovecot {
    /// `users`: (user, password); each gets a maildir under the lab, owned by nobody.
    pub fn start(dir: &Path, syslog: &Rsyslog, users: &[(&str, &str)]) -> Self {
        let ddir = dir.join("dovecot");
        fs::create_dir_all(ddir.join("mail")).unwrap();
        fs::create_dir_all(ddir.join("run")).unwrap();
        fs::create_dir_all(ddir.join("state")).unwrap();
        chown(&ddir.join("mail"), "nobody");
        let passwd: String = users
            .iter()
            .map(|(user, password)| {
                format!(
                    "{user}:{{PLAIN}}{password}:65534:65534::{}/mail/{user}\n",
                    ddir.display()
                )
            })
            .collect();
        fs::write(ddir.join("passwd"), passwd).unwrap();
        let (imap_port, pop3_port) = (free_port(), free_port());
        let config = ddir.join("dovecot.conf");
        fs::write(
            &config,
            format!(
                "base_dir = {d}/run
state_dir = {d}/state
instance_name = dovecot
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
login_trusted_networks = 127.0.0.0/8
log_path = syslog
syslog_facility = mail
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
",
                d = ddir.display()
            ),
        )
        .unwrap();
        let out_path = ddir.join("dovecot.out");
        let out = fs::File::create(&out_path).unwrap();
        let mut proc = Group::spawn(
            "dovecot",
            Command::new(sbin("unshare"))
                .args(["-m", "sh", "-c"])
                .arg(format!(
                    "{} && exec \"$0\" -F -c \"$1\"",
                    syslog.dev_log_script()
                ))
                .arg(sbin("dovecot"))
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        wait_for(
            "Dovecot to listen",
            || {
                if let Some(status) = proc.exited() {
                    panic!("dovecot exited ({status}):\n{}", read_lossy(&out_path));
                }
                (port_open(imap_port) && port_open(pop3_port)).then_some(())
            },
            || read_lossy(&out_path),
        );
        Self {
            proc,
            dir: ddir,
            imap_port,
            pop3_port,
        }
    }

    /// SIGTERM; Dovecot logs its shutdown and exits.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    fn python(&self, script: &str) {
        let out = run(Command::new("/usr/bin/python3").args(["-c", script]));
        assert!(
            out.status.success(),
            "{script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An IMAP login (and SELECT, LOGOUT) by `user`, presenting itself as from `client_ip`.
    pub fn imap_login(&self, user: &str, password: &str, client_ip: &str) {
        self.python(&format!(
            "import imaplib\n\
             c = imaplib.IMAP4('127.0.0.1', {port})\n\
             c.xatom('ID', '(\"x-originating-ip\" \"{client_ip}\" \"x-originating-port\" \"40143\")')\n\
             c.login('{user}', '{password}')\n\
             c.select()\n\
             c.logout()\n",
            port = self.imap_port
        ));
    }

    /// A POP3 login (and STAT, QUIT) by `user`, presenting itself as from `client_ip`.
    pub fn pop3_login(&self, user: &str, password: &str, client_ip: &str) {
        self.python(&format!(
            "import poplib\n\
             c = poplib.POP3('127.0.0.1', {port})\n\
             c._shortcmd('XCLIENT ADDR={client_ip} PORT=40110')\n\
             c.user('{user}')\n\
             c.pass_('{password}')\n\
             c.stat()\n\
             c.quit()\n",
            port = self.pop3_port
        ));
    }
}
