//! Test harness: starts privacy-milter in-process on a loopback port with a test case's own
//! configuration file, and plays the MTA's side of the milter protocol with indymilter-test.
#![allow(dead_code)]

// The skip check, for the cases that take everything from here.
pub use super::{can_run, can_run_as_root};

use indymilter_test::{EomActions, IntoSocketInfo, MacroStage, SocketInfo, Status, TestConnection};
use privacy_milter::{Listener, Reload, Source};
use serde_json::Value;
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};
use tempfile::TempDir;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// A running milter with its own directory for the config file and events.
pub struct Milter {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub config_path: PathBuf,
    reload: mpsc::Sender<Reload>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The test case configuration `tests/NAME`, with `@DIR@` replaced by a fresh directory.
pub fn case_config(name: &str, dir: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.replace("@DIR@", dir.to_str().unwrap())
}

impl Milter {
    /// Starts the milter with the configuration file `tests/NAME`.
    pub async fn start(name: &str) -> Self {
        Self::start_in(name, tempfile::tempdir().unwrap()).await
    }

    /// The same, in a directory the test has already prepared.
    pub async fn start_in(name: &str, dir: TempDir) -> Self {
        let config_path = dir.path().join("privacy-milter.toml");
        std::fs::write(&config_path, case_config(name, dir.path())).unwrap();
        let config = Source::file(&config_path)
            .load()
            .expect("test config loads");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reload, reload_rx) = mpsc::channel(1);
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(privacy_milter::run(
            Listener::from(listener),
            config,
            reload_rx,
            async move {
                let _ = shutdown_rx.await;
            },
        ));
        Self {
            addr,
            dir,
            config_path,
            reload,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Opens a milter connection as an MTA offering every action and option.
    pub async fn connect(&self) -> TestConnection {
        TestConnection::open(self.addr)
            .await
            .expect("milter accepts")
    }

    /// Replaces the config file with `tests/NAME` and asks for a reload.
    pub async fn reload_with(&self, name: &str) -> Result<(), String> {
        std::fs::write(&self.config_path, case_config(name, self.dir.path())).unwrap();
        let (request, answer) = Reload::with_reply();
        self.reload.send(request).await.unwrap();
        answer.await.unwrap().map(drop).map_err(|e| e.to_string())
    }

    /// Stops the milter as SIGTERM would, and returns what `run` returned.
    /// The directory stays until the `Milter` is dropped.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        let _ = self.shutdown.take().expect("running").send(());
        self.task.take().expect("running").await.unwrap()
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// The events written so far.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.events_path()).map_or_else(|_| Vec::new(), |t| json_lines(&t))
    }

    /// Waits for at least `n` events: aborted messages are recorded without waiting.
    pub async fn wait_events(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} events, got {:?}", self.events());
    }
}

/// Runs `privacy-milter --config <the milter's config> ledger ARGS`: (success, stdout, stderr).
pub fn ledger_cmd(milter: &Milter, args: &[&str]) -> (bool, String, String) {
    ledger_with(&milter.config_path, args)
}

/// Runs `privacy-milter --config CONFIG ledger ARGS`: (success, stdout, stderr).
pub fn ledger_with(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(config)
        .arg("ledger")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The three messages the ledger tests hold events of: alice's internal mail (203.0.113.7,
/// authenticated), and eve's inbound and relayed mail (198.51.100.9). Returns the statuses.
pub async fn send_three(milter: &Milter) -> Vec<Status> {
    let mut statuses = Vec::new();
    for mail in [
        Mail::from_ip("203.0.113.7")
            .auth("alice")
            .rcpt("bob@example.org")
            .queue_id("4Internal"),
        Mail::from_ip("198.51.100.9")
            .sender("eve@remote.example")
            .rcpt("bob@example.org")
            .queue_id("4Inbound"),
        Mail::from_ip("198.51.100.9")
            .sender("eve@remote.example")
            .rcpt("carol@transit.example")
            .queue_id("4Relay"),
    ] {
        statuses.push(mail.send(milter).await.1);
    }
    statuses
}

/// After [`send_three`], with IPs and addresses in full: `ledger query` finds eve's IP in the
/// inbound and relay events and bob in the internal and inbound ones, and a CSV export has
/// the three events. The same on every ledger backend.
pub fn assert_queries_find_the_three(milter: &Milter) {
    let (ok, out, err) = ledger_cmd(
        milter,
        &["query", "--ip", "198.51.100.9", "--format", "json"],
    );
    assert!(ok, "{err}");
    let found: Value = serde_json::from_str(&out).unwrap();
    let queue_ids: Vec<&str> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["queue_id"].as_str().unwrap())
        .collect();
    assert_eq!(queue_ids, ["4Inbound", "4Relay"]);

    let (ok, out, _) = ledger_cmd(milter, &["query", "--address", "bob@example.org"]);
    assert!(ok);
    assert!(
        out.starts_with("2 events held for address bob@example.org"),
        "{out}"
    );
    assert!(
        out.contains("4Internal") && out.contains("4Inbound") && !out.contains("4Relay"),
        "{out}"
    );

    let (ok, out, _) = ledger_cmd(milter, &["export", "--format", "csv"]);
    assert!(ok);
    assert_eq!(
        csv::Reader::from_reader(out.as_bytes()).records().count(),
        3
    );
}

/// The bytes of every file in `dir` whose name starts with `prefix`, as text (for searching
/// a ledger and its WAL, or an events file, for data that must not be there).
pub fn all_bytes(dir: &Path, prefix: &str) -> String {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix))
        {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One message as an MTA would hand it over.
#[derive(Clone, Debug)]
pub struct Mail {
    pub client: SocketInfo,
    pub connect_macros: Vec<(String, String)>,
    pub auth: Option<String>,
    pub from: String,
    pub rcpts: Vec<(String, Option<String>)>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub queue_id: String,
}

impl Mail {
    /// A message from a client at `ip` (IPv4 or IPv6).
    pub fn from_ip(ip: &str) -> Self {
        let ip: IpAddr = ip.parse().unwrap();
        Self::with_socket(ip.into_socket_info())
    }

    /// Local submission: no client address at all.
    pub fn local() -> Self {
        Self::with_socket(SocketInfo::Unknown)
    }

    pub fn with_socket(client: SocketInfo) -> Self {
        Self {
            client,
            connect_macros: vec![("j".into(), "mx.test.example".into())],
            auth: None,
            from: "<alice@example.org>".into(),
            rcpts: Vec::new(),
            headers: vec![
                ("From".into(), b"Alice <alice@example.org>".to_vec()),
                ("Subject".into(), b"test".to_vec()),
            ],
            body: b"Hello.\r\n".to_vec(),
            queue_id: "4TestQ1d".into(),
        }
    }

    pub fn auth(mut self, user: &str) -> Self {
        self.auth = Some(user.into());
        self
    }

    pub fn sender(mut self, from: &str) -> Self {
        self.from = format!("<{from}>");
        self
    }

    pub fn rcpt(mut self, to: &str) -> Self {
        self.rcpts.push((format!("<{to}>"), None));
        self
    }

    pub fn rcpt_via(mut self, to: &str, mailer: &str) -> Self {
        self.rcpts.push((format!("<{to}>"), Some(mailer.into())));
        self
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    pub fn connect_macro(mut self, name: &str, value: &str) -> Self {
        self.connect_macros.push((name.into(), value.into()));
        self
    }

    pub fn queue_id(mut self, id: &str) -> Self {
        self.queue_id = id.into();
        self
    }

    /// The connect stage: macros, then the connect command.
    pub async fn connect(&self, conn: &mut TestConnection) {
        conn.macros(MacroStage::Connect, self.connect_macros.clone())
            .await
            .unwrap();
        conn.connect("client.test.example", self.client.clone())
            .await
            .unwrap();
    }

    /// MAIL, RCPT, DATA, headers and body, up to and including end of message.
    pub async fn transaction(&self, conn: &mut TestConnection) -> (EomActions, Status) {
        self.envelope(conn).await;
        self.content(conn).await
    }

    /// MAIL and RCPT.
    pub async fn envelope(&self, conn: &mut TestConnection) {
        let mail_macros = match &self.auth {
            Some(user) => vec![
                ("{auth_type}", "PLAIN".to_string()),
                ("{auth_authen}", user.clone()),
            ],
            None => vec![("{mail_addr}", self.from.clone())],
        };
        conn.macros(MacroStage::Mail, mail_macros).await.unwrap();
        conn.mail([self.from.as_str()]).await.unwrap();
        for (rcpt, mailer) in &self.rcpts {
            let mut macros = vec![(
                "{rcpt_addr}".to_string(),
                rcpt.trim_matches(['<', '>']).to_string(),
            )];
            if let Some(m) = mailer {
                macros.push(("{rcpt_mailer}".to_string(), m.clone()));
            }
            conn.macros(MacroStage::Rcpt, macros).await.unwrap();
            conn.rcpt([rcpt.as_str()]).await.unwrap();
        }
    }

    /// DATA, headers, body and end of message.
    pub async fn content(&self, conn: &mut TestConnection) -> (EomActions, Status) {
        conn.macros(MacroStage::Data, [("i", self.queue_id.as_str())])
            .await
            .unwrap();
        conn.data().await.unwrap();
        for (name, value) in &self.headers {
            let value = std::ffi::CString::new(value.clone()).expect("no NUL in test headers");
            conn.header(name.as_str(), value).await.unwrap();
        }
        conn.eoh().await.unwrap();
        conn.body(self.body.clone()).await.unwrap();
        conn.macros(MacroStage::Eom, [("i", self.queue_id.as_str())])
            .await
            .unwrap();
        conn.eom().await.unwrap()
    }

    /// A whole connection with this one message.
    pub async fn send(&self, milter: &Milter) -> (EomActions, Status) {
        self.send_on(milter.connect().await).await
    }

    /// This one message on an open milter connection, which is then closed.
    pub async fn send_on(&self, mut conn: TestConnection) -> (EomActions, Status) {
        self.connect(&mut conn).await;
        let result = self.transaction(&mut conn).await;
        conn.close().await.unwrap();
        result
    }
}

/// Our transit tags as [`edits`] shows them, inserted at the top by the harness's host.
pub const RELAY_TAG: &str = "+X-Transit@0: relay; by=mx.test.example; k=KEY; mac=MAC";
pub const OUTBOUND_TAG: &str = "+X-Transit@0: outbound; by=mx.test.example; k=KEY; mac=MAC";

/// The header edits as readable strings: `+Name: value`, `+Name@index: value` and
/// `-Name[index]`. A transit tag's key id and MAC, which change with every key and message,
/// read `k=KEY; mac=MAC` (tests/it/forged_transit_tag.rs verifies them).
pub fn edits(actions: &EomActions) -> Vec<String> {
    use indymilter_test::EomAction::*;
    let shown = |value: &std::ffi::CStr| {
        let value = value.to_str().unwrap();
        match value.split_once("; k=") {
            Some((head, tail)) if tail.contains("; mac=") => format!("{head}; k=KEY; mac=MAC"),
            _ => value.to_string(),
        }
    };
    actions
        .actions
        .iter()
        .map(|a| match a {
            AddHeader { name, value } => {
                format!("+{}: {}", name.to_str().unwrap(), shown(value))
            }
            InsertHeader { index, name, value } => {
                format!("+{}@{index}: {}", name.to_str().unwrap(), shown(value))
            }
            DeleteHeader { name, index } => format!("-{}[{index}]", name.to_str().unwrap()),
            ChangeHeader { name, index, value } => {
                format!(
                    "~{}[{index}]: {}",
                    name.to_str().unwrap(),
                    value.to_str().unwrap()
                )
            }
            other => format!("{other:?}"),
        })
        .collect()
}

/// The one event with this queue id.
pub fn event_for<'a>(events: &'a [Value], queue_id: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["queue_id"] == queue_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one event for {queue_id}: {events:#?}"
    );
    found[0]
}

/// The recorded actions of an event.
pub fn actions_of(event: &Value) -> Vec<String> {
    event["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// A stand-in for systemd's notification socket in `dir`: the path to give the daemon as
/// NOTIFY_SOCKET, and the socket to read with `notified`.
pub fn notify_socket(dir: &Path) -> (PathBuf, std::os::unix::net::UnixDatagram) {
    let path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    (path, socket)
}

/// What systemd would read from the notify socket (Type=notify): one datagram, within ten
/// seconds.
pub fn notified(socket: &std::os::unix::net::UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0; 512];
    let n = socket.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
}

/// The real `privacy-milter` binary, started with a test case's configuration (which must
/// listen on `unix:@DIR@/milter.sock`), its log written to `@DIR@/stderr.log`.
pub struct Daemon {
    pub child: std::process::Child,
    pub dir: TempDir,
    pub config_path: PathBuf,
}

impl Daemon {
    pub fn start(name: &str) -> Self {
        Self::start_in(name, tempfile::tempdir().unwrap())
    }

    /// The same, in a directory the test has already prepared.
    pub fn start_in(name: &str, dir: TempDir) -> Self {
        Self::start_with(name, dir, |binary| std::process::Command::new(binary))
    }

    /// The same, with the command line that `command` makes for the binary (a wrapper, an
    /// environment); the harness adds `--config` and the log.
    pub fn start_with(
        name: &str,
        dir: TempDir,
        command: impl FnOnce(&str) -> std::process::Command,
    ) -> Self {
        let config_path = dir.path().join("privacy-milter.toml");
        std::fs::write(&config_path, case_config(name, dir.path())).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = command(env!("CARGO_BIN_EXE_privacy-milter"))
            .arg("--config")
            .arg(&config_path)
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Self {
            child,
            dir,
            config_path,
        };
        daemon.wait_ready();
        daemon
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("milter.sock")
    }

    fn wait_ready(&self) {
        for _ in 0..400 {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the daemon did not start:\n{}", self.log());
    }

    pub async fn connect(&self) -> TestConnection {
        TestConnection::configure()
            .open_unix(self.socket())
            .await
            .expect("daemon accepts")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Sends SIGTERM and waits for the exit (bounded: the test fails rather than hangs).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..2400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        panic!("the daemon did not exit:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Runs `privacy-milter ledger ARGS` with this daemon's configuration; fails the test if
    /// the command fails, and returns its standard output.
    pub fn ledger(&self, args: &[&str]) -> String {
        let (ok, out, err) = ledger_with(&self.config_path, args);
        assert!(ok, "ledger {args:?}: {err}");
        out
    }

    pub fn events_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("events.jsonl")).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str) {
        for _ in 0..400 {
            if self.log().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("log never said {text:?}:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` for up to ten seconds until it gives a value.
pub async fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..200 {
        if let Some(value) = check() {
            return Some(value);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

/// One JSON value per line (events in a jsonl file, a spool, `ledger export`).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// systemd-journal-remote, which writes a journal file from the journal export format.
pub fn journal_remote() -> Option<std::path::PathBuf> {
    [
        "/usr/lib/systemd/systemd-journal-remote",
        "/lib/systemd/systemd-journal-remote",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// Appends the entries of `export` (the journal export format) to the journal file `file`.
pub fn write_journal(file: &std::path::Path, export: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(journal_remote().expect("systemd-journal-remote"))
        .arg(format!("--output={}", file.display()))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
