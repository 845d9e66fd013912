//! Transit tracking behind a real Postfix: `privacy-milter track` reads Postfix's own log
//! (`maillog_file`) and queue (`postqueue -j`), and records what became of each message we
//! pass on. Three next hops: one accepts (the lab's sink), one defers every recipient
//! (`smtp-sink -r RCPT`, for `defer.example`), one refuses them (`smtp-sink -f RCPT`, for
//! `reject.example`); `test.example` is ours.

use crate::e2e::{self, compose, new_message_id, wait_for, Milter, Postfix, Sink, Socket, Swaks};
use serde_json::Value;
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};
use tempfile::TempDir;

/// Fields drop in order: Postfix first, the directory last.
struct Lab {
    postfix: Postfix,
    milter: Milter,
    _sinks: Vec<Sink>,
    dir: TempDir,
}

impl Lab {
    fn start(test: &str, privacy: &str, sinks: &[&str]) -> Option<Self> {
        Self::start_with(test, privacy, sinks, "")
    }

    /// The same with more main.cf settings (`key = value` lines).
    fn start_with(test: &str, privacy: &str, sinks: &[&str], main_cf: &str) -> Option<Self> {
        if !e2e::postfix_available(test) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("pm-e2e-transit.")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let accept = Sink::start(dir.path());
        let defer = Sink::start_with(dir.path(), "defer", &["-r", "RCPT"]);
        let reject = Sink::start_with(dir.path(), "reject", &["-f", "RCPT"]);
        let base = dir.path().display();
        let privacy = privacy.replace("KEYS", &format!("{base}/keys"));
        let milter = Milter::start_with_events(
            dir.path(),
            Socket::Unix,
            sinks,
            &format!(
                r#"
{privacy}

[networks]
trusted = ["127.0.0.0/8"]

[domains]
local = ["test.example"]

[tracking]
mta = "postfix"
source = "file"
path = "{base}/maillog"
state = "{base}/track.state"
postfix_config_dir = "{base}/etc"
queue_interval = "1s"
alert_after = "1s"
"#
            ),
        );
        let transports = format!(
            "transport_maps = inline:{{defer.example=smtp:[127.0.0.1]:{}, reject.example=smtp:[127.0.0.1]:{}}}\n{main_cf}",
            defer.port, reject.port
        );
        let postfix = Postfix::start(dir.path(), accept.port, &milter.postfix_spec, &transports);
        Some(Self {
            postfix,
            milter,
            _sinks: vec![accept, defer, reject],
            dir,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a message from a trusted client; returns its queue id once Postfix logged
    /// `what` for it.
    fn send(&self, to: &[&'static str], what: &str) -> String {
        let id = new_message_id("transit");
        Swaks::new(
            self.postfix.port,
            "alice@test.example",
            to,
            compose(&id, "alice@test.example", to, "transit", &[]),
        )
        .send(self.path());
        wait_for(
            &format!("Postfix to log {what:?} for <{id}>"),
            || {
                let qid = self.postfix.queue_id(&id)?;
                self.postfix
                    .log_of(&qid)
                    .iter()
                    .any(|l| l.contains(what))
                    .then_some(qid)
            },
            || self.context(),
        )
    }

    fn context(&self) -> String {
        format!(
            "{}\n--- milter log ---\n{}",
            self.postfix.context(),
            self.milter.log()
        )
    }

    /// Runs the binary with the lab's configuration.
    fn cli(&self, args: &[&str]) -> Output {
        Milter::command()
            .arg("--config")
            .arg(&self.milter.config_path)
            .args(args)
            .output()
            .unwrap()
    }

    fn track_once(&self) -> String {
        let out = self.cli(&["track", "--once"]);
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "track --once:\n{log}\n{}",
            self.context()
        );
        log
    }

    /// `transit --format json ARGS`, by queue id.
    fn transit(&self, args: &[&str]) -> HashMap<String, Value> {
        let mut all = vec!["transit", "--format", "json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "transit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.into_iter()
            .map(|v| (v["queue_id"].as_str().unwrap().to_string(), v))
            .collect()
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in walk(self.path()) {
            let name = entry.to_string_lossy();
            if name.contains("/milter/") || name.ends_with("track.state") {
                found.push(entry);
            }
        }
        found
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn state_of(list: &HashMap<String, Value>, qid: &str) -> String {
    list.get(qid)
        .unwrap_or_else(|| panic!("{qid} not listed: {list:#?}"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

const FULL: &str = "[privacy]\nip = \"full\"\naddress = \"full\"\nkeys = \"KEYS\"";

/// Accepted, deferred and refused next hops; a local-only message; a message with a local and
/// a remote recipient: each gets the state the log says, and only transit mail is tracked.
#[test]
fn outcomes_of_transit_mail() {
    let Some(lab) = Lab::start("e2e_transit::outcomes", FULL, &["ledger", "jsonl"]) else {
        return;
    };
    let sent = lab.send(&["carol@remote.example"], ": removed");
    let deferred = lab.send(&["dave@defer.example"], "status=deferred");
    let bounced = lab.send(&["erin@reject.example"], ": removed");
    let local = lab.send(&["bob@test.example"], ": removed");
    let mixed = lab.send(&["bob@test.example", "frank@remote.example"], ": removed");
    // Held longer than alert_after (1s) by the time the queue is checked.
    std::thread::sleep(Duration::from_millis(1500));
    let log = lab.track_once();

    let list = lab.transit(&[]);
    assert_eq!(state_of(&list, &sent), "removed", "{list:#?}");
    assert_eq!(state_of(&list, &deferred), "deferred");
    assert_eq!(state_of(&list, &bounced), "bounced");
    assert_eq!(state_of(&list, &mixed), "removed");
    assert!(
        !list.contains_key(&local),
        "a local-only message is not transit mail"
    );

    let removed = &list[&sent];
    assert!(removed["acknowledged_at"].is_string() && removed["removed_at"].is_string());
    let deliveries = removed["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{removed:#}");
    assert_eq!(deliveries[0]["status"], "sent");
    assert_eq!(deliveries[0]["dsn"], "2.0.0");
    assert_eq!(deliveries[0]["recipient_domain"], "remote.example");
    assert_eq!(list[&bounced]["deliveries"][0]["status"], "bounced");
    let mixed = list[&mixed]["deliveries"].as_array().unwrap();
    assert_eq!(mixed.len(), 1, "only the remote recipient: {mixed:#?}");
    assert_eq!(mixed[0]["recipient_domain"], "remote.example");

    // Still queued after alert_after: reported once, naming the queue id and the state.
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("held for") && l.contains(&deferred))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("state deferred"), "{log}");
    let held = lab.transit(&["--held-longer-than", "1s", "--state", "deferred"]);
    assert_eq!(held.keys().collect::<Vec<_>>(), [&deferred]);
    assert!(held[&deferred]["held_for_seconds"].as_u64().unwrap() >= 1);

    // The stream sink got one line per delivery outcome, beside the events.
    let lines: Vec<Value> = std::fs::read_to_string(&lab.milter.events_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes: Vec<&Value> = lines
        .iter()
        .filter(|v| v["schema"] == "privacy-milter.delivery.v1")
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|d| d["queue_id"] == sent.as_str() && d["status"] == "sent"),
        "{outcomes:#?}"
    );
    // `ledger query` shows the lifecycle with the event.
    let out = lab.cli(&[
        "ledger",
        "query",
        "--address",
        "carol@remote.example",
        "--format",
        "json",
    ]);
    let found: Vec<Value> = answer_events(&out.stdout);
    assert_eq!(found[0]["lifecycle"]["state"], "removed", "{found:#?}");

    // A second run reads nothing twice.
    lab.track_once();
    let again = lab.transit(&[]);
    assert_eq!(again[&sent]["deliveries"].as_array().unwrap().len(), 1);
}

/// With HMACs for addresses and IPs, no raw recipient address or relay IP reaches the
/// ledger, the stream, the state file or the tracker's log.
#[test]
fn tracking_keeps_the_privacy_policy() {
    let privacy = "[privacy]\nip = \"hmac\"\naddress = \"hmac\"\nkeys = \"KEYS\"";
    let Some(lab) = Lab::start("e2e_transit::privacy", privacy, &["ledger", "jsonl", "log"]) else {
        return;
    };
    let sent = lab.send(&["carol@remote.example"], ": removed");
    let log = lab.track_once();
    let list = lab.transit(&[]);
    assert_eq!(state_of(&list, &sent), "removed");
    let mut bytes = log.into_bytes();
    for file in lab.files() {
        bytes.extend(std::fs::read(&file).unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&bytes);
    for raw in ["carol@remote.example", "alice@test.example", "127.0.0.1"] {
        assert!(
            !text.contains(raw),
            "{raw} found in the tracker's files or log"
        );
    }
    assert!(
        text.contains("privacy-milter.delivery.v1"),
        "the stream got deliveries"
    );
}

/// The tracker follows the log while mail flows: rotation by rename (and a reload, as
/// logrotate's postrotate does) and by copytruncate, and a SIGKILL with a restart between
/// them; every delivery is recorded exactly once.
#[test]
fn rotation_and_restarts_lose_and_double_nothing() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let Some(lab) = Lab::start("e2e_transit::rotation", FULL, &["ledger"]) else {
        return;
    };
    let start_tracker = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab.path().join("track.log"))
            .unwrap();
        Milter::command()
            .arg("--config")
            .arg(&lab.milter.config_path)
            .arg("track")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let round = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| lab.send(&["carol@remote.example"], ": removed"))
            .collect()
    };
    let maillog = lab.path().join("maillog");
    let mut tracker = start_tracker();
    let mut sent = round(4);
    // Rename, and Postfix opens a new file.
    std::fs::rename(&maillog, lab.path().join("maillog.1")).unwrap();
    lab.postfix.reload();
    sent.extend(round(4));
    kill(Pid::from_raw(tracker.id() as i32), Signal::SIGKILL).unwrap();
    tracker.wait().unwrap();
    // While the tracker is down: more mail, then copytruncate.
    sent.extend(round(4));
    std::fs::copy(&maillog, lab.path().join("maillog.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&maillog)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut tracker = start_tracker();
    sent.extend(round(4));
    let done = wait_for(
        "the tracker to record every message as removed",
        || {
            let list = lab.transit(&["--state", "removed"]);
            sent.iter().all(|q| list.contains_key(q)).then_some(list)
        },
        || {
            format!(
                "{}\n--- tracker ---\n{}",
                lab.context(),
                std::fs::read_to_string(lab.path().join("track.log")).unwrap_or_default()
            )
        },
    );
    kill(Pid::from_raw(tracker.id() as i32), Signal::SIGTERM).unwrap();
    assert!(tracker.wait().unwrap().success());
    for qid in &sent {
        let deliveries = done[qid]["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1, "{qid}: {deliveries:#?}");
        assert_eq!(deliveries[0]["status"], "sent");
    }
    assert_eq!(done.len(), sent.len(), "{done:#?}");
}

/// A content filter on loopback (as amavis is run: `content_filter` to a filter, which hands
/// the message back to a second smtpd of the same Postfix; here that smtpd is the filter):
/// the hop to it is no acknowledgement. The record follows the message onto the queue id the
/// reinjection gave it, and the copy that leaves gets the delivery; `ledger query` finds the
/// lifecycle of the moved record with its event.
#[test]
fn a_content_filter_is_not_the_next_server() {
    let filter_port = e2e::free_port();
    let Some(lab) = Lab::start_with(
        "e2e_transit::content_filter",
        FULL,
        &["ledger"],
        &format!("content_filter = scan:[127.0.0.1]:{filter_port}"),
    ) else {
        return;
    };
    lab.postfix.add_service(&format!(
        "scan unix - - n - 4 smtp
127.0.0.1:{filter_port} inet n - n - 4 smtpd -o content_filter= -o smtpd_milters= -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters -o smtpd_authorized_xforward_hosts=127.0.0.0/8"
    ));
    let first = lab.send(&["carol@remote.example"], ": removed");
    // The filter's hop, and the copy it queued again.
    let hop = lab
        .postfix
        .log_of(&first)
        .into_iter()
        .find(|l| l.contains(&format!(":{filter_port}, ")) && l.contains("status=sent"))
        .unwrap_or_else(|| panic!("no hop to the filter:\n{}", lab.context()));
    let again = hop
        .rsplit("queued as ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    wait_for(
        "the copy queued again to be delivered and removed",
        || {
            let log = lab.postfix.log_of(&again);
            (log.iter().any(|l| l.contains("status=sent"))
                && log.iter().any(|l| l.ends_with(": removed")))
            .then_some(())
        },
        || lab.context(),
    );
    let log = lab.track_once();
    let list = lab.transit(&[]);
    assert!(!list.contains_key(&first), "{list:#?}\n{log}");
    assert_eq!(state_of(&list, &again), "removed", "{list:#?}\n{log}");
    let deliveries = list[&again]["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    assert_eq!(deliveries[0]["status"], "sent");
    assert_eq!(deliveries[0]["recipient_domain"], "remote.example");
    // Not the filter: the lab's sink is the next server.
    assert_ne!(
        deliveries[0]["relay"].as_str().unwrap_or_default(),
        format!("127.0.0.1:{filter_port}")
    );
    let out = lab.cli(&[
        "ledger",
        "query",
        "--address",
        "carol@remote.example",
        "--format",
        "json",
    ]);
    let found: Vec<Value> = answer_events(&out.stdout);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["lifecycle"]["state"], "removed", "{found:#?}");
    // The event keeps the queue id the milter saw; its lifecycle names the one it left under.
    assert_eq!(found[0]["queue_id"], first.as_str(), "{found:#?}");
    assert_eq!(
        found[0]["lifecycle"]["queue_id"],
        again.as_str(),
        "{found:#?}"
    );
}

/// A forged `postfix/pickup` line (as `logger -t postfix/pickup` by any local user writes it)
/// moves no record; the real `postsuper -r` still does (its `requeued` line, then pickup's).
#[test]
fn a_forged_requeue_line_moves_nothing() {
    let Some(lab) = Lab::start("e2e_transit::forged_requeue", FULL, &["ledger"]) else {
        return;
    };
    let held = lab.send(&["dave@defer.example"], "status=deferred");
    lab.track_once();
    let uid = nix::unistd::User::from_name("postfix")
        .unwrap()
        .map(|u| u.uid.as_raw())
        .unwrap_or(0);
    let now = chrono::Local::now().format("%b %e %H:%M:%S");
    let forged = [
        // logger writes no PID unless asked.
        format!("{now} mx.test.example postfix/pickup: 4T02Hr4S5hz9vf01: uid=0 from=<x@example.org> orig_id={held}"),
        // A PID, but root's uid.
        format!("{now} mx.test.example postfix/pickup[4242]: 4T02Hr4S5hz9vf02: uid=0 from=<x@example.org> orig_id={held}"),
        // The right uid, but no postsuper line before it.
        format!("{now} mx.test.example postfix/pickup[4242]: 4T02Hr4S5hz9vf03: uid={uid} from=<x@example.org> orig_id={held}"),
    ];
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&lab.postfix.maillog)
        .unwrap();
    std::io::Write::write_all(&mut log, (forged.join("\n") + "\n").as_bytes()).unwrap();
    let said = lab.track_once();
    let list = lab.transit(&[]);
    assert_eq!(state_of(&list, &held), "deferred", "{list:#?}\n{said}");
    assert_eq!(list.len(), 1, "{list:#?}");
    assert!(said.contains("not believed"), "{said}");
    // The warning names queue ids and the cause, not the forged line's sender or the mail's.
    for raw in ["x@example.org", "dave@defer.example"] {
        assert!(!said.contains(raw), "{raw} in the tracker's output: {said}");
    }

    // The administrator requeues it for real.
    lab.postfix.postsuper(&["-r", &held]);
    let requeued = wait_for(
        "pickup to log the requeued message",
        || {
            lab.postfix.maillog().lines().find_map(|l| {
                let (head, _) = l.split_once(&format!(" orig_id={held}"))?;
                (l.contains("postfix/pickup[") && !forged.iter().any(|f| f == l))
                    .then(|| head.split(": ").nth(1).map(str::to_string))?
            })
        },
        || lab.context(),
    );
    let said = lab.track_once();
    let list = lab.transit(&[]);
    assert!(!list.contains_key(&held), "{list:#?}\n{said}");
    assert!(
        list.contains_key(&requeued),
        "{requeued}: {list:#?}\n{said}\n{}",
        lab.context()
    );
}

/// `postfix logrotate` while the tracker is down: the old maillog is renamed and compressed
/// at once (`maillog_file_compressor = gzip`, the default). The lines written before it were
/// only in the compressed file: they are read from it (found by its head, from the saved
/// place), then the new maillog; every delivery is recorded, none twice.
#[test]
fn a_log_compressed_at_rotation_is_finished() {
    let Some(lab) = Lab::start("e2e_transit::compressed", FULL, &["ledger"]) else {
        return;
    };
    let mut sent: Vec<String> = (0..2)
        .map(|_| lab.send(&["carol@remote.example"], ": removed"))
        .collect();
    lab.track_once();
    // The tracker is down: more mail, then the rotation, then more mail.
    for _ in 0..3 {
        sent.push(lab.send(&["carol@remote.example"], ": removed"));
    }
    let compressed = lab.postfix.logrotate();
    for _ in 0..2 {
        sent.push(lab.send(&["carol@remote.example"], ": removed"));
    }
    let log = lab.track_once();
    assert!(
        !log.contains("may have been missed"),
        "{log}\n{}",
        compressed.display()
    );
    let list = lab.transit(&[]);
    for qid in &sent {
        assert_eq!(state_of(&list, qid), "removed", "{qid}: {list:#?}\n{log}");
        let deliveries = list[qid]["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1, "{qid}: {deliveries:#?}");
    }
    // Started again, it reads nothing twice.
    lab.track_once();
    let again = lab.transit(&[]);
    for qid in &sent {
        assert_eq!(again[qid]["deliveries"].as_array().unwrap().len(), 1);
    }
}

/// Sendmail's delivery lines (through a syslog socket of the test's own, written as rsyslog
/// writes mail.log): a message whose every remote recipient was sent counts as removed, as
/// Sendmail logs no removal at its default log level; local mail is not tracked.
#[test]
fn sendmail_deliveries_are_tracked() {
    use crate::e2e::SendmailLab;
    if !e2e::sendmail_available("e2e_transit::sendmail") {
        return;
    }
    let lab = SendmailLab::start_with_events(
        Socket::Tcp,
        &["ledger", "jsonl"],
        r#"
[networks]
trusted = ["127.0.0.0/8"]

[domains]
local = ["test.example"]

[tracking]
mta = "sendmail"
source = "file"
"#,
    );
    let send = |to: &'static str| -> String {
        let id = new_message_id("sendmail-transit");
        lab.swaks(
            "alice@test.example",
            &[to],
            compose(&id, "alice@test.example", &[to], "transit", &[]),
        )
        .send(lab.path());
        let (qid, _, _) = lab.delivered(&id, 1);
        wait_for(
            "Sendmail to log the delivery",
            || {
                std::fs::read_to_string(&lab.sendmail.maillog)
                    .ok()?
                    .lines()
                    .any(|l| l.contains(&qid) && l.contains("stat=Sent"))
                    .then_some(())
            },
            || lab.context(),
        );
        qid
    };
    let remote = send("carol@remote.example");
    let local = send("bob@test.example");
    let state = lab.path().join("track.state");
    let run = |args: &[&str]| {
        Milter::command()
            .arg("--config")
            .arg(&lab.milter.config_path)
            .args(args)
            .env("PRIVACY_MILTER_TRACKING__PATH", &lab.sendmail.maillog)
            .env("PRIVACY_MILTER_TRACKING__STATE", &state)
            .output()
            .unwrap()
    };
    let out = run(&["track", "--once"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.context()
    );
    let out = run(&["transit", "--format", "json"]);
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by_id: HashMap<&str, &Value> = list
        .iter()
        .map(|v| (v["queue_id"].as_str().unwrap(), v))
        .collect();
    assert!(!by_id.contains_key(local.as_str()), "{list:#?}");
    let t = by_id
        .get(remote.as_str())
        .unwrap_or_else(|| panic!("{remote} not tracked: {list:#?}\n{}", lab.context()));
    assert_eq!(t["state"], "removed", "{t:#}");
    assert_eq!(t["deliveries"][0]["status"], "sent");
    assert_eq!(t["deliveries"][0]["recipient_domain"], "remote.example");
}

/// The tracker's Prometheus endpoint (`metrics.track_listen`) while it follows the log:
/// deliveries by status, open transit mail by state, mail held too long, log lines read.
#[test]
fn the_tracker_counts_what_it_records() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::{Read, Write};
    let Some(lab) = Lab::start("e2e_transit::metrics", FULL, &["ledger"]) else {
        return;
    };
    let sent = lab.send(&["carol@remote.example"], ": removed");
    let deferred = lab.send(&["dave@defer.example"], "status=deferred");
    let port = e2e::free_port();
    let mut tracker = Milter::command()
        .arg("--config")
        .arg(&lab.milter.config_path)
        .arg("track")
        .env(
            "PRIVACY_MILTER_METRICS__TRACK_LISTEN",
            format!("127.0.0.1:{port}"),
        )
        .stderr(std::fs::File::create(lab.path().join("track.log")).unwrap())
        .spawn()
        .unwrap();
    let scrape = || -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let has = |text: &str, line: &str| text.lines().any(|l| l == line);
    let text = wait_for(
        "the tracker's figures",
        || {
            let text = scrape()?;
            (has(
                &text,
                r#"privacy_milter_track_deliveries_total{status="sent"} 1"#,
            ) && has(
                &text,
                r#"privacy_milter_track_transit_open{state="deferred"} 1"#,
            ) && has(&text, "privacy_milter_track_held_too_long 1"))
            .then_some(text)
        },
        || {
            format!(
                "{}\n--- scrape ---\n{}\n--- tracker ---\n{}",
                lab.context(),
                scrape().unwrap_or_default(),
                std::fs::read_to_string(lab.path().join("track.log")).unwrap_or_default()
            )
        },
    );
    kill(Pid::from_raw(tracker.id() as i32), Signal::SIGTERM).unwrap();
    assert!(tracker.wait().unwrap().success());
    assert!(
        has(
            &text,
            r#"privacy_milter_track_transit_settled_total{state="removed"} 1"#
        ),
        "{text}"
    );
    assert!(
        has(&text, "privacy_milter_track_acknowledged_seconds_count 1"),
        "{text}"
    );
    assert!(
        !text.contains("privacy_milter_track_log_lines_total 0"),
        "{text}"
    );
    for raw in [
        "carol@",
        "dave@",
        "remote.example",
        "127.0.0.1",
        &sent,
        &deferred,
    ] {
        assert!(!text.contains(raw), "{raw} in the scrape");
    }
}

/// The events of `ledger query --format json`'s answer (`{"events": [...], "log_copy": ...}`).
fn answer_events(stdout: &[u8]) -> Vec<Value> {
    let answer: Value = serde_json::from_slice(stdout).unwrap();
    answer["events"].as_array().unwrap().clone()
}
