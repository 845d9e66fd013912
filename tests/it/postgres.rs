//! The PostgreSQL ledger (sink `postgres`) against a real server: each test starts its own
//! private cluster on loopback with scripts/postgres-test-server (own directory and port),
//! and stops it at the end, also when the test fails.
//!
//! Without PostgreSQL installed the tests print that they skip, unless
//! `PRIVACY_MILTER_E2E=require`: then the script installs it, and a failure to start fails.

use crate::common::*;
use indymilter_test::Status;
use serde_json::Value;
use std::{
    collections::HashSet,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};
use tempfile::TempDir;

fn installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.flatten()
                .any(|d| d.path().join("bin/initdb").is_file())
        })
        .unwrap_or(false)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres-test-server")
}

/// A private PostgreSQL cluster, stopped on drop.
pub(crate) struct Pg {
    dir: TempDir,
    pub(crate) url: String,
}

impl Pg {
    /// Starts a cluster, or returns `None` (having said so) when PostgreSQL is missing and
    /// not required.
    pub(crate) fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[])
    }

    /// The same, with environment variables for scripts/postgres-test-server (TLS_CERT, ...).
    fn start_with(test: &str, env: &[(&str, &Path)]) -> Option<Self> {
        let why = format!(
            "{test}: PostgreSQL is not installed \
             (PRIVACY_MILTER_E2E=require installs it with scripts/postgres-test-server)"
        );
        if !can_run(installed() || crate::harness::required(), &why) {
            return None;
        }
        // Required: the script installs PostgreSQL when missing, and any failure fails the test.
        let dir = tempfile::tempdir().unwrap();
        // The cluster runs as the postgres user when we are root: it must reach its directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut pg = Self {
            dir,
            url: String::new(),
        };
        // The script picks the port, outside the ephemeral range, and keeps it for restarts.
        pg.url = pg.run_with("start", env);
        Some(pg)
    }

    fn cluster(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    fn run(&self, action: &str) -> String {
        self.run_with(action, &[])
    }

    fn run_with(&self, action: &str, env: &[(&str, &Path)]) -> String {
        let mut cmd = Command::new(script());
        cmd.arg(action).arg(self.cluster());
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "postgres-test-server {action} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    }

    fn stop(&self) {
        self.run("stop");
    }

    /// Starts it again on the same port.
    fn restart(&self) {
        assert_eq!(self.run("start"), self.url);
    }

    /// Runs a query on a thread of its own (the sync client cannot run inside the test's
    /// runtime) and returns the rows as strings.
    pub(crate) fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let url = self.url.clone();
        let sql = sql.to_string();
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .simple_query(&sql)
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(String::from))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
        .join()
        .unwrap()
    }

    fn value(&self, sql: &str) -> String {
        self.query(sql)[0][0].clone().unwrap_or_default()
    }

    /// Writes `tests/CASE` into `dir` as `name`, its `@PG_URL@` pointing at this cluster and
    /// then changed by `edit`; returns the path.
    fn config_in(
        &self,
        case: &str,
        dir: &Path,
        name: &str,
        edit: impl Fn(String) -> String,
    ) -> PathBuf {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join(case),
        )
        .unwrap()
        .replace("@PG_URL@", &self.url);
        let path = dir.join(name);
        std::fs::write(&path, edit(text)).unwrap();
        path
    }

    /// Starts the milter with `tests/NAME`, its `@PG_URL@` pointing at this cluster.
    async fn milter(&self, name: &str) -> Milter {
        let path = self.config_in(name, self.dir.path(), &name.replace('/', "-"), |t| t);
        // An absolute path: the harness reads it as is and fills in @DIR@.
        Milter::start(path.to_str().unwrap()).await
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.cluster())
            .output();
    }
}

async fn send_three_accepted(milter: &Milter) {
    for status in send_three(milter).await {
        assert_eq!(status, Status::Continue);
    }
}

fn ids(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn events_land_in_postgres() {
    let Some(pg) = Pg::start("events_land_in_postgres") else {
        return;
    };
    let milter = pg.milter("postgres/privacy-milter.toml").await;
    send_three_accepted(&milter).await;

    assert_eq!(pg.value("SELECT MAX(version) FROM schema_version"), "2");
    let rows = pg.query(
        "SELECT id, host, class, direction, outcome,
             (SELECT string_agg(value, ',' ORDER BY value) FROM subjects s
              WHERE s.seq = e.seq AND value LIKE 'i:%'),
             (SELECT string_agg(value, ',' ORDER BY value) FROM subjects s
              WHERE s.seq = e.seq AND value LIKE 'a:eve%'),
             body
         FROM events e ORDER BY seq",
    );
    assert_eq!(rows.len(), 3);
    let stored: HashSet<String> = rows.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        stored,
        ids(&milter.events()),
        "the same events as in events.jsonl"
    );
    let queue_ids: Vec<String> = rows
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r[7].as_deref().unwrap()).unwrap();
            assert_eq!(body["id"].as_str(), r[0].as_deref());
            body["queue_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(queue_ids, ["4Internal", "4Inbound", "4Relay"]);
    assert!(rows
        .iter()
        .all(|r| r[1].as_deref() == Some("mx.test.example")));
    assert_eq!(rows[1][2].as_deref(), Some("inbound"));
    assert_eq!(rows[2][3].as_deref(), Some("relay"));
    assert_eq!(rows[0][4].as_deref(), Some("accepted"));
    assert_eq!(rows[1][5].as_deref(), Some("i:198.51.100.9"));
    assert_eq!(rows[1][6].as_deref(), Some("a:eve@remote.example"));
    assert_eq!(
        pg.value(
            "SELECT string_agg(value, ',' ORDER BY value) FROM subjects
             WHERE value IN ('a:bob@example.org', 'a:carol@transit.example')"
        ),
        "a:bob@example.org,a:bob@example.org,a:carol@transit.example"
    );
    // Expiry is an instant: the relay event is kept 1s, the inbound one 90 days.
    assert_eq!(
        pg.value("SELECT COUNT(*) FROM events WHERE expires_at < now() + interval '1 day'"),
        "1"
    );
    assert!(!milter
        .dir
        .path()
        .join("postgres.spool")
        .metadata()
        .is_ok_and(|m| m.len() > 0));
}

#[tokio::test]
async fn ledger_commands_on_postgres() {
    let Some(pg) = Pg::start("ledger_commands_on_postgres") else {
        return;
    };
    let milter = pg.milter("postgres/privacy-milter.toml").await;
    send_three_accepted(&milter).await;

    let (ok, out, err) = ledger_cmd(&milter, &["stats"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ledger: postgres postgresql://"), "{out}");
    crate::ledger::commands_answer_for_the_three(&milter);

    // With the server gone the commands fail and say why.
    pg.stop();
    let (ok, _, err) = ledger_cmd(&milter, &["stats"]);
    assert!(!ok);
    assert!(err.contains("PostgreSQL at postgresql://"), "{err}");
}

#[tokio::test]
async fn outage_spools_then_replays_in_order_exactly_once() {
    let Some(pg) = Pg::start("outage_spools_then_replays_in_order_exactly_once") else {
        return;
    };
    let milter = pg.milter("postgres/outage.toml").await;
    let spool = milter.dir.path().join("postgres.spool");
    let mut sent = Vec::new();
    let milter = &milter;
    let send = |n: usize| {
        let queue_id = format!("4Q{n:03}");
        async move {
            let (_, status) = Mail::from_ip("198.51.100.9")
                .sender("eve@remote.example")
                .rcpt("bob@example.org")
                .queue_id(&queue_id)
                .send(milter)
                .await;
            // on_error = "tempfail": a lost event would tempfail the message.
            assert_eq!(status, Status::Continue, "message {queue_id}");
            queue_id
        }
    };

    for n in 0..3 {
        sent.push(send(n).await);
    }
    assert_eq!(pg.value("SELECT COUNT(*) FROM events"), "3");

    pg.stop();
    for n in 3..8 {
        sent.push(send(n).await);
    }
    let spooled = json_lines(&std::fs::read_to_string(&spool).unwrap());
    let spooled_queue_ids: Vec<&str> = spooled
        .iter()
        .map(|e| e["queue_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        spooled_queue_ids,
        sent[3..8],
        "the outage's events wait in the spool"
    );

    pg.restart();
    assert_eq!(pg.value("SELECT COUNT(*) FROM events"), "3");
    // The next writes replay the spool (the sink waits a moment after a failure before it
    // tries the database again, so keep sending until the spool is empty).
    let mut n = 8;
    while std::fs::metadata(&spool).unwrap().len() > 0 {
        assert!(n < 200, "the spool was never replayed");
        sent.push(send(n).await);
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent.push(send(n).await);

    let rows = pg.query("SELECT id, body FROM events ORDER BY seq");
    let stored_ids: Vec<String> = rows.iter().map(|r| r[0].clone().unwrap()).collect();
    let distinct: HashSet<&String> = stored_ids.iter().collect();
    assert_eq!(distinct.len(), stored_ids.len(), "no event stored twice");
    assert_eq!(stored_ids.len(), sent.len(), "every message has its event");
    assert_eq!(
        distinct.into_iter().cloned().collect::<HashSet<_>>(),
        ids(&milter.events())
    );
    let order: Vec<String> = rows
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r[1].as_deref().unwrap()).unwrap();
            body["queue_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(order, sent, "spooled events went in before the newer ones");
    assert_eq!(
        pg.value("SELECT COUNT(DISTINCT seq) FROM subjects"),
        sent.len().to_string(),
        "each event's subjects, once"
    );
}

#[tokio::test]
async fn spool_left_by_an_earlier_run_is_replayed_once() {
    let Some(pg) = Pg::start("spool_left_by_an_earlier_run_is_replayed_once") else {
        return;
    };
    pg.stop();
    let mut first = pg.milter("postgres/outage.toml").await;
    send_three_accepted(&first).await;
    first.stop().await.unwrap();
    let spool = first.dir.path().join("postgres.spool");
    let spooled = std::fs::read_to_string(&spool).unwrap();
    assert_eq!(spooled.lines().count(), 3);

    pg.restart();
    // An erasure cannot reach events still on their way: it says so.
    let (ok, out, err) = ledger_cmd(&first, &["erase", "--address", "eve@remote.example"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("erased 0 events\n"), "{out}");
    assert!(
        out.contains("note: 2 more events of this subject wait in the spool")
            && out.contains(spool.to_str().unwrap()),
        "{out}"
    );
    // A second milter finds that spool, with a duplicate (a replay cut short before the
    // spool was emptied) and a last line cut short by a crash: the duplicate is not stored
    // twice, the damaged line is skipped.
    let second = pg.milter("postgres/outage.toml").await;
    let second_spool = second.dir.path().join("postgres.spool");
    let first_line = spooled.lines().next().unwrap();
    std::fs::write(
        &second_spool,
        format!(
            "{spooled}{first_line}\n{}",
            &first_line[..first_line.len() / 2]
        ),
    )
    .unwrap();
    let (_, status) = Mail::from_ip("198.51.100.9")
        .rcpt("bob@example.org")
        .queue_id("4After")
        .send(&second)
        .await;
    assert_eq!(status, Status::Continue);
    assert_eq!(std::fs::metadata(&second_spool).unwrap().len(), 0);
    let order: Vec<String> = pg
        .query("SELECT body::json->>'queue_id' FROM events ORDER BY seq")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(order, ["4Internal", "4Inbound", "4Relay", "4After"]);
}

/// An event as the milter writes it, with the given host and expiry.
fn planted_event(queue_id: &str, host: &str, expires_at: &str) -> Value {
    serde_json::json!({
        "schema": "privacy-milter.message.v1",
        "id": uuid::Uuid::now_v7().to_string(),
        "time": "2026-11-26T18:00:00.000Z",
        "host": host,
        "queue_id": queue_id,
        "outcome": "accepted",
        "direction": "inbound",
        "transit": false,
        "client": {"ip": "198.51.100.0/24", "authenticated": false, "webmail": false},
        "sender": {"domain": "remote.example"},
        "recipients": [{"domain": "example.org", "local": true}],
        "size": 100,
        "actions": [],
        "retention": {"class": "inbound", "expires_at": expires_at}
    })
}

/// An event PostgreSQL refuses for good (here a NUL byte, which no `text` value may hold)
/// must not block the spool: it goes to the rejects file, the others go on, in order, and the
/// rejects file is purged of expired events like the ledger.
#[tokio::test]
async fn refused_events_go_to_the_rejects_file_and_the_rest_goes_on() {
    let Some(pg) = Pg::start("refused_events_go_to_the_rejects_file_and_the_rest_goes_on") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let later = "2099-01-01T00:00:00.000Z";
    let refused = planted_event("4Refused", "mx\u{0}.test.example", later);
    let planted = [
        planted_event("4A", "mx.test.example", later),
        refused.clone(),
        planted_event("4C", "mx.test.example", later),
        planted_event(
            "4RefusedExpired",
            "mx\u{0}.test.example",
            "2000-01-01T00:00:00.000Z",
        ),
    ];
    let spool_text: String = planted.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(dir.path().join("postgres.spool"), spool_text).unwrap();
    let config = pg.config_in("postgres/outage.toml", dir.path(), "rejects.toml", |t| t);
    let milter = Milter::start_in(config.to_str().unwrap(), dir).await;
    let (_, status) = Mail::from_ip("198.51.100.9")
        .sender("eve@remote.example")
        .rcpt("bob@example.org")
        .queue_id("4D")
        .send(&milter)
        .await;
    assert_eq!(status, Status::Continue);

    let order: Vec<String> = pg
        .query("SELECT body::json->>'queue_id' FROM events ORDER BY seq")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(order, ["4A", "4C", "4D"]);
    assert_eq!(
        std::fs::metadata(milter.dir.path().join("postgres.spool"))
            .unwrap()
            .len(),
        0,
        "the spool is not blocked"
    );
    let rejects = milter.dir.path().join("postgres.spool.rejected");
    // The purge at start drops the expired refused event from the rejects file.
    let kept = eventually(|| {
        let kept = std::fs::read_to_string(&rejects).unwrap_or_default();
        (kept.lines().count() == 1).then_some(kept)
    })
    .await
    .expect("the rejects file keeps one event");
    let kept = json_lines(&kept);
    assert_eq!(
        kept,
        [refused],
        "only the refused event that has not expired"
    );
    assert_eq!(
        std::fs::metadata(&rejects).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// A statement stuck behind a lock is cancelled after `statement_timeout`: the event goes to
/// the spool and the message goes on, instead of mail waiting for as long as the lock is held.
#[tokio::test]
async fn a_locked_table_sends_events_to_the_spool_after_statement_timeout() {
    let Some(pg) = Pg::start("a_locked_table_sends_events_to_the_spool_after_statement_timeout")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = pg.config_in("postgres/outage.toml", dir.path(), "locked.toml", |t| {
        t.replace(
            "connect_timeout = \"5s\"",
            "connect_timeout = \"5s\"\nstatement_timeout = \"1s\"",
        )
    });
    let milter = Milter::start_in(config.to_str().unwrap(), dir).await;
    let send = |queue_id: &'static str| {
        let milter = &milter;
        async move {
            let mail = Mail::from_ip("198.51.100.9")
                .sender("eve@remote.example")
                .rcpt("bob@example.org")
                .queue_id(queue_id);
            let sent = mail.send(milter);
            // A guard against hanging, not a measurement: the timeout under test is 1s.
            let (_, status) = tokio::time::timeout(Duration::from_secs(60), sent)
                .await
                .unwrap_or_else(|_| panic!("message {queue_id} still waits for its event"));
            // on_error = "tempfail": a lost event would tempfail the message.
            assert_eq!(status, Status::Continue, "message {queue_id}");
        }
    };
    send("4Before").await;
    assert_eq!(pg.value("SELECT COUNT(*) FROM events"), "1");

    // Another session holds the table locked until told to let go.
    let url = pg.url.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        tx.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        tx.commit().unwrap();
    });
    locked_rx.recv().unwrap();
    send("4Locked").await;
    let spool = milter.dir.path().join("postgres.spool");
    let spooled = std::fs::read_to_string(&spool).unwrap();
    assert!(spooled.contains("\"queue_id\":\"4Locked\""), "{spooled}");

    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let mut n = 0;
    while std::fs::metadata(&spool).unwrap().len() > 0 {
        assert!(n < 100, "the spool was never replayed");
        send("4After").await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let order: Vec<String> = pg
        .query("SELECT body::json->>'queue_id' FROM events ORDER BY seq")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(&order[..2], ["4Before", "4Locked"]);
}

/// Runs openssl, failing the test if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir` (NAME.crt, NAME.key).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// The milter's configuration for `pg` with `sslmode=require` and `ca_file`.
fn tls_config(pg: &Pg, ca_file: &Path) -> PathBuf {
    let name = format!(
        "tls-{}.toml",
        ca_file.file_stem().unwrap().to_str().unwrap()
    );
    pg.config_in("postgres/privacy-milter.toml", pg.dir.path(), &name, |t| {
        t.replace(&pg.url, &format!("{}?sslmode=require", pg.url))
            .replace(
                "[events.postgres]\n",
                &format!("[events.postgres]\nca_file = \"{}\"\n", ca_file.display()),
            )
    })
}

/// With `sslmode=require` the milter talks TLS to PostgreSQL and verifies the server against
/// `ca_file`; a server whose certificate does not chain to it gets no events (they wait in
/// the spool) and the commands say why.
#[tokio::test]
async fn tls_to_postgres_is_verified() {
    let certs = tempfile::tempdir().unwrap();
    let c = certs.path();
    make_ca(c, "ca");
    make_ca(c, "other-ca");
    std::fs::write(
        c.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        c,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        c,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    let Some(pg) = Pg::start_with(
        "tls_to_postgres_is_verified",
        &[
            ("TLS_CERT", &c.join("server.crt")),
            ("TLS_KEY", &c.join("server.key")),
        ],
    ) else {
        return;
    };
    let config = tls_config(&pg, &c.join("ca.crt"));
    let milter = Milter::start(config.to_str().unwrap()).await;
    send_three_accepted(&milter).await;
    assert_eq!(pg.value("SELECT COUNT(*) FROM events"), "3");
    assert_eq!(
        pg.value(
            "SELECT bool_and(ssl)::text || ' ' || COUNT(*) FROM pg_stat_ssl
             JOIN pg_stat_activity USING (pid) WHERE application_name = 'privacy-milter'"
        ),
        "true 1",
        "the milter's connection (pool_size 2, one used) is TLS"
    );
    let (ok, out, err) = ledger_cmd(&milter, &["stats"]);
    assert!(ok, "{err}");
    assert!(out.contains("events: 3"), "{out}");

    // A CA that did not sign the server's certificate: refused, nothing lost.
    let config = tls_config(&pg, &c.join("other-ca.crt"));
    let milter = Milter::start(config.to_str().unwrap()).await;
    let (_, status) = Mail::from_ip("198.51.100.9")
        .rcpt("bob@example.org")
        .queue_id("4Untrusted")
        .send(&milter)
        .await;
    assert_eq!(status, Status::Continue);
    assert_eq!(pg.value("SELECT COUNT(*) FROM events"), "3");
    let spooled = std::fs::read_to_string(milter.dir.path().join("postgres.spool")).unwrap();
    assert!(spooled.contains("4Untrusted"), "{spooled}");
    let (ok, _, err) = ledger_cmd(&milter, &["stats"]);
    assert!(!ok);
    assert!(err.contains("certificate"), "{err}");
}

/// `check-config` with tests/postgres/privacy-milter.toml (placeholders as they are) and
/// environment overrides.
fn check_config(env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres/privacy-milter.toml"))
        .arg("check-config")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn postgres_keys_are_checked_and_the_password_never_shown() {
    const URL: &str = "PRIVACY_MILTER_EVENTS__POSTGRES__URL";
    let (ok, out) = check_config(&[(URL, "postgresql://pm:s3cret@db.example.org/privacy")]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "postgres (postgresql://pm:***@db.example.org/privacy, no TLS, spool @DIR@/postgres.spool)"
        ),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");

    let (ok, out) = check_config(&[]);
    assert!(!ok);
    assert!(
        out.contains("key events.postgres.url: is not a PostgreSQL connection URL"),
        "{out}"
    );
    let (ok, out) = check_config(&[(
        URL,
        "postgresql://pm@db.example.org/privacy?sslmode=require",
    )]);
    assert!(ok, "{out}");
    assert!(
        out.contains("TLS verified against the system's CAs"),
        "{out}"
    );
    let (ok, out) = check_config(&[
        (
            URL,
            "postgresql://pm@db.example.org/privacy?sslmode=require",
        ),
        (
            "PRIVACY_MILTER_EVENTS__POSTGRES__CA_FILE",
            "/nonexistent/ca.pem",
        ),
    ]);
    assert!(!ok);
    assert!(
        out.contains("key events.postgres.ca_file: /nonexistent/ca.pem:"),
        "{out}"
    );
    let (ok, out) = check_config(&[(URL, "")]);
    assert!(!ok);
    assert!(out.contains("key events.postgres.url: is empty"), "{out}");
    let (ok, out) = check_config(&[
        (URL, "postgresql://pm@db.example.org/privacy"),
        ("PRIVACY_MILTER_EVENTS__POSTGRES__POOL_SIZE", "0"),
    ]);
    assert!(!ok);
    assert!(
        out.contains("key events.postgres.pool_size: must be at least 1"),
        "{out}"
    );
    let (ok, out) = check_config(&[
        (URL, "postgresql://pm@db.example.org/privacy"),
        ("PRIVACY_MILTER_EVENTS__POSTGRES__CONNECT_TIMEOUT", "soon"),
    ]);
    assert!(!ok);
    assert!(out.contains("events.postgres.connect_timeout"), "{out}");
}

#[tokio::test]
async fn pseudonymised_spool_and_database_hold_no_raw_ip_or_address() {
    let Some(pg) = Pg::start("pseudonymised_spool_and_database_hold_no_raw_ip_or_address") else {
        return;
    };
    let milter = pg.milter("postgres/hmac.toml").await;
    let spool = milter.dir.path().join("postgres.spool");
    let send = |n: usize| {
        let milter = &milter;
        async move {
            let (_, status) = Mail::from_ip("203.0.113.7")
                .auth("alice")
                .sender("alice@example.org")
                .rcpt("bob@remote.example")
                .queue_id(&format!("4H{n:03}"))
                .send(milter)
                .await;
            assert_eq!(status, Status::Continue);
        }
    };
    const SECRETS: [&str; 3] = ["203.0.113.7", "alice@", "bob@"];
    send(0).await;
    pg.stop();
    send(1).await;
    send(2).await;
    let spooled = std::fs::read_to_string(&spool).unwrap();
    assert_eq!(spooled.lines().count(), 2, "{spooled}");
    assert!(spooled.contains("\"ip\":\"hmac:"), "{spooled}");
    for secret in SECRETS {
        assert!(!spooled.contains(secret), "the spool holds {secret}");
    }

    pg.restart();
    let mut n = 3;
    while std::fs::metadata(&spool).unwrap().len() > 0 {
        assert!(n < 200, "the spool was never replayed");
        send(n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = pg.query("SELECT s.value, e.body FROM subjects s JOIN events e ON e.seq = s.seq");
    assert!(rows.len() >= 2 * 3, "events and their subjects are stored");
    let stored: String = rows
        .iter()
        .flatten()
        .flatten()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for secret in SECRETS {
        assert!(!stored.contains(secret), "the database holds {secret}");
    }
    assert!(stored.contains("hmac:") && stored.contains("example.org"));
}

/// The binary with this configuration, tracking the test's own log file against an instance
/// directory whose main.cf names the host the events carry.
fn track_with(config: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("main.cf"), "myhostname = mx.test.example\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("PRIVACY_MILTER_TRACKING__PATH", dir.join("maillog"))
        .env("PRIVACY_MILTER_TRACKING__STATE", dir.join("track.state"))
        .env("PRIVACY_MILTER_TRACKING__POSTFIX_CONFIG_DIR", &etc)
        .output()
        .unwrap()
}

/// Tracking on the shared ledger: the log's outcome joins the event by queue id and host,
/// a line read again is stored once, and erasure takes the records with the event.
#[tokio::test]
async fn transit_is_tracked_in_postgres() {
    let Some(pg) = Pg::start("transit_is_tracked_in_postgres") else {
        return;
    };
    let milter = pg.milter("postgres/privacy-milter.toml").await;
    let (_, status) = Mail::from_ip("198.51.100.9")
        .rcpt("carol@transit.example")
        .queue_id("3B3AE9AC053")
        .send(&milter)
        .await;
    assert_eq!(status, Status::Continue);
    let dir = milter.dir.path();
    // Dated now: the tracker refuses outcomes dated before their message was accepted.
    let now = chrono::Local::now().format("%b %e %H:%M:%S");
    std::fs::write(
        dir.join("maillog"),
        format!(
            "{now} mx postfix/smtp[24393]: 3B3AE9AC053: to=<carol@transit.example>, relay=mx.transit.example[192.0.2.25]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)\n\
             {now} mx postfix/qmgr[24385]: 3B3AE9AC053: removed\n"
        ),
    )
    .unwrap();
    for _ in 0..2 {
        let out = track_with(&milter.config_path, dir, &["track", "--once"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        // Opening a ledger made before says nothing of the tables it already has.
        assert!(!log.contains("already exists"), "{log}");
    }
    assert_eq!(
        pg.query("SELECT state, queue_id, host FROM transit")[0],
        [
            Some("removed".into()),
            Some("3B3AE9AC053".into()),
            Some("mx.test.example".into())
        ]
    );
    assert_eq!(
        pg.value("SELECT COUNT(*) FROM deliveries"),
        "1",
        "stored once"
    );
    let out = track_with(&milter.config_path, dir, &["transit", "--format", "json"]);
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list[0]["deliveries"][0]["remote_queue_id"],
        "4T02Hr4S5hz9vf6k"
    );
    assert_eq!(list[0]["deliveries"][0]["status"], "sent");

    let (ok, out, err) = ledger_cmd(&milter, &["erase", "--address", "carol@transit.example"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("erased 1 events"), "{out}");
    for table in ["transit", "deliveries", "events"] {
        assert_eq!(
            pg.value(&format!("SELECT COUNT(*) FROM {table}")),
            "0",
            "{table}"
        );
    }
}

/// A ledger of schema version 1 (columns per lookup, a recipients table) moves to version 2
/// at the first connection, its events found as before.
#[tokio::test]
async fn version_1_ledger_is_migrated() {
    let Some(pg) = Pg::start("version_1_ledger_is_migrated") else {
        return;
    };
    pg.query(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);
         INSERT INTO schema_version VALUES (1);
         CREATE TABLE events (
             id UUID PRIMARY KEY, seq BIGINT GENERATED ALWAYS AS IDENTITY,
             time TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL, class TEXT NOT NULL,
             direction TEXT NOT NULL, outcome TEXT NOT NULL, host TEXT NOT NULL,
             client_ip TEXT, sender_address TEXT, sender_domain TEXT, body TEXT NOT NULL);
         CREATE INDEX events_expires_at ON events (expires_at);
         CREATE INDEX events_time ON events (time);
         CREATE INDEX events_host ON events (host);
         CREATE INDEX events_client_ip ON events (client_ip);
         CREATE INDEX events_sender_address ON events (sender_address);
         CREATE INDEX events_sender_domain ON events (sender_domain);
         CREATE TABLE recipients (
             event_id UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
             address TEXT, domain TEXT);
         INSERT INTO events (id, time, expires_at, class, direction, outcome, host, client_ip,
             sender_address, sender_domain, body)
         VALUES ('0193a5d2-0000-7000-8000-000000000001', '2026-11-26T18:00:00Z',
             '2099-01-01T00:00:00Z', 'inbound', 'inbound', 'accepted', 'mx.test.example',
             '198.51.100.9', 'eve@remote.example', 'remote.example',
             '{\"schema\":\"privacy-milter.message.v1\",\"id\":\"0193a5d2-0000-7000-8000-000000000001\",\"time\":\"2026-11-26T18:00:00.000Z\",\"host\":\"mx.test.example\",\"queue_id\":\"4Old\",\"outcome\":\"accepted\",\"direction\":\"inbound\",\"transit\":false,\"client\":{\"ip\":\"198.51.100.9\",\"authenticated\":false,\"webmail\":false},\"sender\":{\"address\":\"eve@remote.example\",\"domain\":\"remote.example\"},\"recipients\":[{\"address\":\"bob@example.org\",\"domain\":\"example.org\",\"local\":true}],\"size\":100,\"actions\":[],\"retention\":{\"class\":\"inbound\",\"expires_at\":\"2099-01-01T00:00:00.000Z\"}}');
         INSERT INTO recipients VALUES
             ('0193a5d2-0000-7000-8000-000000000001', 'bob@example.org', 'example.org');",
    );
    let milter = pg.milter("postgres/privacy-milter.toml").await;
    for (args, found) in [
        (["query", "--address", "bob@example.org"], true),
        (["query", "--ip", "198.51.100.9"], true),
        (["query", "--address", "eve@remote.example"], true),
        (["query", "--address", "nobody@example.org"], false),
    ] {
        let (ok, out, err) = ledger_cmd(&milter, &args);
        assert!(ok, "{err}");
        assert_eq!(out.contains("4Old"), found, "{args:?}: {out}");
    }
    assert_eq!(pg.value("SELECT MAX(version) FROM schema_version"), "2");
    assert_eq!(
        pg.value("SELECT COUNT(*) FROM events WHERE queue_id = '4Old'"),
        "1"
    );
    assert_eq!(
        pg.value("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'recipients'"),
        "0"
    );
}
