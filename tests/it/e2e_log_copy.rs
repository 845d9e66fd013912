//! The pseudonymised copy of a real MTA log (`[mta_logs] copy`), end to end: a private Postfix
//! (the milter in front) and a private Dovecot both logging through a private rsyslogd into one
//! `mail.log`, as on Debian 12; mail of each direction, an IMAP and a POP login; the real
//! `privacy-milter track` following that log across two real logrotate runs (the shipped
//! drop-in, compressing) and a SIGKILL in a burst of mail. Then, under `hmac` and under
//! `truncated`: no client IP, address, PTR or HELO name, or Dovecot user of the run in the
//! copy's bytes; each line of the raw log once in the copy, in order; a client's IP in the copy
//! as in its message's event; pflogsumm counts the same messages in the copy as in the raw log.
//!
//! Remote clients are presented from loopback, as a proxy would: XCLIENT to Postfix, IMAP `ID
//! x-originating-ip` and POP3 `XCLIENT` to Dovecot (loopback stays in clear in the copy by
//! design). The relay (the sink) is at 198.51.100.25, on the loopback of a network namespace
//! of the test's own.
use crate::{
    common::{case_config, json_lines},
    e2e::{
        self, compose, new_message_id, Dovecot, Milter, NetNamespace, Postfix, PostfixLab, Rsyslog,
        Sink,
    },
    log_copy::{copy_lines, start_tracker},
};
use privacy_milter::internals::logcopy::{
    AddressPrivacy, IpPrivacy, Privacy, Pseudonymiser, Rewriter,
};
use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

/// Every personal value the run puts into the raw log; none may be in the copy.
const SECRETS: &[&str] = &[
    // Client IPs (XCLIENT, IMAP ID, POP3 XCLIENT), their PTR names, and the HELO name that
    // Postfix logs in its reject line.
    "203.0.113.17",
    "203-0-113-17",
    "198.51.100.27",
    "198-51-100-27",
    "198.51.100.37",
    "198-51-100-37",
    "198.51.100.47",
    // The relay's IP (Postfix's `relay=IP[IP]:PORT`).
    "198.51.100.25",
    "198-51-100-47",
    // The HELO name (swaks says EHLO again after XCLIENT: its own name is the one logged).
    "client.e2e",
    "203.0.113.57",
    "203.0.113.67",
    // Senders, recipients, the SASL login, the Dovecot users (their local parts: under
    // `domain` the domain stays).
    "alice.lab",
    "bob.lab",
    "eve.lab",
    "frank.lab",
    "carol.lab",
    "mallory.lab",
    "nobody.lab",
    "dave.lab",
    "burst.lab",
    "sunk.lab",
    "carol.imap",
    "dave.pop",
];

/// The relay (the sink), at an address of the lab's own network that does not look local.
const RELAY: &str = "198.51.100.25";

/// The lab: rsyslogd, Postfix (syslog), Dovecot (syslog), the milter, the sink, the tracker.
/// Drop stops the tracker, Dovecot and Postfix, then rsyslogd, then the rest.
struct LogLab {
    tracker: Option<Child>,
    dovecot: Option<Dovecot>,
    lab: PostfixLab,
    rsyslog: Option<Rsyslog>,
    tracker_log: PathBuf,
    /// Last: the thread leaves the lab's network once all is stopped.
    _net: NetNamespace,
}

impl Drop for LogLab {
    fn drop(&mut self) {
        if let Some(mut t) = self.tracker.take() {
            let _ = t.kill();
            let _ = t.wait();
        }
        self.dovecot.take();
        self.lab.postfix.stop();
        self.rsyslog.take();
    }
}

impl LogLab {
    fn start(ip: &str, address: &str) -> Self {
        let net = NetNamespace::enter(&[RELAY]);
        let dir = tempfile::Builder::new()
            .prefix("pm-e2e-logcopy.")
            .tempdir()
            .unwrap();
        let d = dir.path();
        fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let rsyslog = Rsyslog::start(d);
        let sink = Sink::start_at(d, "sink", RELAY, &[]);
        let extra = case_config("e2e_log_copy/milter.toml", d)
            .replace("@IP@", ip)
            .replace("@ADDRESS@", address);
        let milter = Milter::start_with_events(d, e2e::Socket::Tcp, &["jsonl", "ledger"], &extra);
        let main_cf = format!("relayhost = [{RELAY}]:{}", sink.port);
        let postfix =
            Postfix::start_with_syslog(d, sink.port, &milter.postfix_spec, &main_cf, &rsyslog);
        let dovecot = Dovecot::start(
            d,
            &rsyslog,
            &[
                ("carol.imap@test.example", "imap-secret"),
                ("dave.pop@test.example", "pop-secret"),
            ],
        );
        let tracker_log = d.join("tracker.log");
        Self {
            tracker: None,
            dovecot: Some(dovecot),
            lab: PostfixLab {
                postfix,
                milter,
                sink,
                dir,
            },
            rsyslog: Some(rsyslog),
            tracker_log,
            _net: net,
        }
    }

    fn path(&self) -> &Path {
        self.lab.path()
    }

    fn rsyslog(&self) -> &Rsyslog {
        self.rsyslog.as_ref().unwrap()
    }

    fn copy_dir(&self) -> PathBuf {
        self.path().join("mta")
    }

    /// The tracker, following; its pid in `tracker.pid` (for the logrotate drop-in).
    fn start_tracker(&mut self) {
        assert!(self.tracker.is_none());
        let starts = self
            .tracker_said()
            .matches("tracking postfix mail from")
            .count();
        // The milter's configuration, the jsonl sink left to the milter's events (the tracker
        // would add its transit records to it; the ledger holds both).
        let config = self.path().join("track.toml");
        let text = fs::read_to_string(&self.lab.milter.config_path).unwrap();
        let sinks = "sinks = [\"jsonl\", \"ledger\"]";
        assert!(text.contains(sinks), "{text}");
        fs::write(&config, text.replace(sinks, "sinks = [\"ledger\"]")).unwrap();
        let child = start_tracker(&config, &self.tracker_log);
        fs::write(self.path().join("tracker.pid"), child.id().to_string()).unwrap();
        self.tracker = Some(child);
        // Ready once it has opened the log (as the unit's readiness would say to logrotate's
        // prerotate): a rotation before would hide the lines of the rotated file from it.
        e2e::wait_for(
            "the tracker to open the log",
            || {
                (self
                    .tracker_said()
                    .matches("tracking postfix mail from")
                    .count()
                    > starts)
                    .then_some(())
            },
            || self.tracker_said(),
        );
    }

    fn kill_tracker(&mut self) {
        let mut t = self.tracker.take().unwrap();
        t.kill().unwrap();
        t.wait().unwrap();
    }

    fn stop_tracker(&mut self) {
        let t = self.tracker.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(t.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = t.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", self.tracker_said());
    }

    /// The files of the log and the copy, and the tracker's state, for failure messages.
    fn context(&self) -> String {
        let list = |dir: &Path| {
            fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            format!(
                                "{:?} {}",
                                e.file_name(),
                                e.metadata().map_or(0, |m| m.len())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        format!(
            "log: {}\ncopy: {}\nstate: {}",
            list(&self.path().join("log")),
            list(&self.copy_dir()),
            fs::read_to_string(self.path().join("track.state")).unwrap_or_default()
        )
    }

    fn tracker_said(&self) -> String {
        fs::read_to_string(&self.tracker_log).unwrap_or_default()
    }

    /// The raw log's lines in order: the rotated files (mail.log.N.gz, oldest first), then
    /// mail.log.
    fn raw_lines(&self) -> Vec<String> {
        let log = &self.rsyslog().maillog;
        let mut text = String::new();
        for n in (1..=5).rev() {
            let rotated = PathBuf::from(format!("{}.{n}.gz", log.display()));
            if let Ok(bytes) = fs::read(&rotated) {
                flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .unwrap();
            }
        }
        text.push_str(&fs::read_to_string(log).unwrap_or_default());
        text.lines().map(String::from).collect()
    }

    /// Waits (up to a minute) until the copy holds as many lines as the raw log, and the raw
    /// log has stopped growing.
    fn wait_caught_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let raw = self.raw_lines().len();
            let copied = copy_lines(&self.copy_dir()).len();
            if raw == copied {
                std::thread::sleep(Duration::from_millis(300));
                if self.raw_lines().len() == raw && copy_lines(&self.copy_dir()).len() == raw {
                    return;
                }
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "the copy holds {copied} lines, the log {raw}:\n{}\n{}",
                self.tracker_said(),
                self.context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `logrotate -f` with the shipped raw-window drop-in, adapted to the lab.
    fn logrotate(&self) {
        let shipped = include_str!("../../docs/examples/logrotate-mail-raw-window");
        let d = self.path().display();
        let rotate = |text: String, from: &str, to: &str| {
            assert!(text.contains(from), "the drop-in no longer has {from:?}");
            text.replace(from, to)
        };
        let conf = rotate(
            shipped.to_string(),
            "/var/log/mail.log {",
            &format!("{} {{", self.rsyslog().maillog.display()),
        );
        // Kept (and compressed) instead of deleted, so that the test can compare each raw line
        // with the copy: `rotate 0` deletes the file at once.
        let conf = rotate(conf, "\n    rotate 0\n", "\n    rotate 5\n    compress\n");
        // No systemd here: "is the tracker running" asked of its pid instead.
        let conf = rotate(
            conf,
            "systemctl is-active --quiet privacy-milter-track.service",
            &format!("kill -0 \"$(cat {d}/tracker.pid)\""),
        );
        // What rsyslog-rotate does without systemd: HUP to rsyslogd by its pid file.
        let conf = rotate(
            conf,
            "/usr/lib/rsyslog/rsyslog-rotate",
            &format!("kill -HUP \"$(cat {})\"", self.rsyslog().pid_file.display()),
        );
        let path = self.path().join("logrotate.conf");
        fs::write(&path, conf).unwrap();
        let out = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(self.path().join("logrotate.state"))
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logrotate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends one message with swaks (XCLIENT `xclient`), waits for its delivery; its queue id
    /// and event.
    fn mail(
        &self,
        tag: &str,
        from: &'static str,
        to: &'static str,
        xclient: &str,
    ) -> (String, serde_json::Value) {
        let mid = new_message_id(tag);
        let msg = compose(&mid, from, &[to], tag, &[]);
        self.lab
            .swaks(from, &[to], msg)
            .xclient(xclient)
            .send(self.path());
        let (qid, _, event) = self.lab.delivered(&mid, 1);
        (qid, event)
    }
}

/// pflogsumm's message counts (its "Grand Totals", "messages" part) over `lines`.
fn pflogsumm_counts(lines: &[String]) -> Vec<(String, u64)> {
    use std::io::Write as _;
    let mut child = Command::new("pflogsumm")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let report = String::from_utf8(out.stdout).unwrap();
    let counts: Vec<(String, u64)> = report
        .lines()
        .skip_while(|l| !l.starts_with("Grand Totals"))
        .take_while(|l| !l.contains("bytes received"))
        .filter_map(|l| {
            let (n, what) = l.trim().split_once(char::is_whitespace)?;
            Some((what.trim().to_string(), n.parse().ok()?))
        })
        .collect();
    assert!(!counts.is_empty(), "no Grand Totals in:\n{report}");
    counts
}

fn count(counts: &[(String, u64)], what: &str) -> u64 {
    counts
        .iter()
        .find(|(w, _)| w.split(" (").next() == Some(what))
        .unwrap_or_else(|| panic!("no {what:?} in {counts:?}"))
        .1
}

fn available(test: &str) -> bool {
    e2e::postfix_available(test)
        && e2e::dovecot_available(test)
        && crate::common::can_run(
            [
                "/usr/sbin/logrotate",
                "/usr/sbin/pflogsumm",
                "/usr/sbin/smtp-source",
                "/usr/sbin/ip",
            ]
            .iter()
            .all(|p| Path::new(p).is_file()),
            &format!(
                "{test}: logrotate, pflogsumm, smtp-source or ip missing (scripts/setup-test-deps)"
            ),
        )
        && crate::common::can_run_as_root(&format!(
            "{test}: mount namespaces for /dev/log need root"
        ))
}

fn scenario(test: &str, policy_ip: &str, address: &str) {
    if !available(test) {
        return;
    }
    let mut lab = LogLab::start(policy_ip, address);
    lab.start_tracker();

    // Each direction, from a client address of its own with a PTR name that spells it.
    let (auth_qid, auth_event) = lab.mail(
        "auth",
        "alice.lab@test.example",
        "bob.lab@remote.example",
        "ADDR=203.0.113.17 NAME=203-0-113-17.dialup.example.net LOGIN=alice.lab@test.example",
    );
    let (in_qid, in_event) = lab.mail(
        "inbound",
        "eve.lab@remote.example",
        "bob.lab@test.example",
        "ADDR=198.51.100.27 NAME=198-51-100-27.dialup.example.net",
    );
    assert_eq!(auth_event["direction"], "outbound");
    assert_eq!(in_event["direction"], "inbound");
    lab.dovecot.as_ref().unwrap().imap_login(
        "carol.imap@test.example",
        "imap-secret",
        "203.0.113.57",
    );
    lab.dovecot
        .as_ref()
        .unwrap()
        .pop3_login("dave.pop@test.example", "pop-secret", "203.0.113.67");

    // A rotation (compressed at once) while the tracker follows.
    lab.logrotate();
    let (relay_qid, relay_event) = lab.mail(
        "relay",
        "frank.lab@remote.example",
        "carol.lab@transit.example",
        "ADDR=198.51.100.37 NAME=198-51-100-37.dialup.example.net",
    );
    assert_eq!(relay_event["direction"], "relay");
    // Refused (relay access denied): a reject line with the sender, recipient and HELO.
    let mid = new_message_id("reject");
    let (ok, transcript) = lab
        .lab
        .swaks(
            "mallory.lab@remote.example",
            &["nobody.lab@nowhere.example"],
            compose(
                &mid,
                "mallory.lab@remote.example",
                &["x@nowhere.example"],
                "reject",
                &[],
            ),
        )
        .xclient("ADDR=198.51.100.47 NAME=198-51-100-47.dialup.example.net")
        .run(lab.path());
    assert!(
        !ok && transcript.contains("Relay access denied"),
        "{transcript}"
    );

    // A burst of mail from loopback, and SIGKILL to the tracker while it copies it.
    let before = copy_lines(&lab.copy_dir()).len();
    let source = Command::new("/usr/sbin/smtp-source")
        .args(["-s", "4", "-m", "150", "-l", "500"])
        .args([
            "-f",
            "burst.lab@test.example",
            "-t",
            "sunk.lab@remote.example",
        ])
        .arg(format!("127.0.0.1:{}", lab.lab.postfix.port))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while copy_lines(&lab.copy_dir()).len() < before + 100 {
        assert!(
            Instant::now() < deadline,
            "the copy does not grow:\n{}",
            lab.tracker_said()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    lab.kill_tracker();
    let at_kill = copy_lines(&lab.copy_dir()).len();
    assert!(source.wait_with_output().unwrap().status.success());
    lab.start_tracker();

    // Another rotation, and the last message (local submission, trusted) in the new file.
    lab.logrotate();
    let mid = new_message_id("pickup");
    lab.lab.postfix.sendmail(
        "alice.lab@test.example",
        &["dave.lab@remote.example"],
        &compose(
            &mid,
            "alice.lab@test.example",
            &["dave.lab@remote.example"],
            "pickup",
            &[],
        ),
    );
    let (_, _, pickup_event) = lab.lab.delivered(&mid, 1);
    assert_eq!(pickup_event["direction"], "outbound");

    // Everything logged (Dovecot's and Postfix's shutdown too), then copied.
    lab.dovecot.take();
    lab.lab.postfix.stop();
    lab.wait_caught_up();
    lab.stop_tracker();
    let said = lab.tracker_said();
    eprintln!(
        "killed with {at_kill} lines in the copy; cut back at restart: {}",
        said.contains("cut off")
    );

    let raw = lab.raw_lines();
    let copy = copy_lines(&lab.copy_dir());
    let raw_text = raw.join("\n");
    // The test's values really are in the raw log (else searching the copy proves nothing).
    let missing: Vec<&&str> = SECRETS.iter().filter(|s| !raw_text.contains(**s)).collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not in the raw log:\n{raw_text}"
    );
    assert!(raw_text.contains(" dovecot: imap-login: Login: user=<carol.imap@test.example>"));
    assert!(raw_text.contains(" dovecot: pop3-login: Login: user=<dave.pop@test.example>"));
    assert!(raw_text.contains(" postfix/pickup["));

    // Each raw line once, in order: the same time stamp, host and program, and under
    // `truncated` (no key) exactly the rewriter's line.
    assert_eq!(copy.len(), raw.len(), "lines in the copy, lines in the log");
    let mut rewriter = (policy_ip == "truncated").then(|| {
        Rewriter::new(Pseudonymiser::new(
            Privacy {
                ip: IpPrivacy::Truncated,
                address: AddressPrivacy::Domain,
                ..Privacy::default()
            },
            None,
        ))
    });
    for (n, (copied, raw)) in copy.iter().zip(&raw).enumerate() {
        let head = |l: &str| l.split_once(": ").map(|(h, _)| h.to_string());
        assert_eq!(head(copied), head(raw), "line {n}:\n{copied}\n{raw}");
        if let Some(r) = rewriter.as_mut() {
            assert_eq!(copied, &r.line(raw), "line {n}");
        }
    }

    // No personal value of the run in the copy's bytes, nor in the tracker's log or state.
    let state = fs::read_to_string(lab.path().join("track.state")).unwrap();
    let bytes = copy.join("\n") + &said + &state;
    for secret in SECRETS {
        assert!(
            !bytes.contains(secret),
            "{secret:?} is in the copy:\n{bytes}"
        );
    }

    // Dovecot's logins kept as lines of their shape, the user and the remote IP pseudonyms.
    let (user, rip) = if policy_ip == "hmac" {
        ("user=<hmac:", "rip=hmac:")
    } else {
        ("user=<@test.example>", "rip=203.0.113.0/24")
    };
    for service in ["imap-login", "pop3-login"] {
        let prefix = format!(" dovecot: {service}: Login: {user}");
        assert!(
            copy.iter().any(|l| l.contains(&prefix) && l.contains(rip)),
            "no {prefix}...{rip} line in the copy"
        );
    }

    // A client's IP in the copy is its event's (`client=NAME[IP]` of that queue id).
    for (qid, event) in [
        (&auth_qid, &auth_event),
        (&in_qid, &in_event),
        (&relay_qid, &relay_event),
    ] {
        let ip = event["client"]["ip"].as_str().unwrap();
        let line = copy
            .iter()
            .find(|l| l.contains(&format!(" {qid}: client=")))
            .unwrap_or_else(|| panic!("no client= line of {qid}"));
        assert!(line.contains(&format!("[{ip}]")), "{ip} not in {line}");
        // hmac:KEYID:HEX, or the /24 under `truncated`: a pseudonym, not the IP.
        let pseudonym = if policy_ip == "hmac" {
            ip.starts_with("hmac:")
        } else {
            ip.ends_with(".0/24")
        };
        assert!(pseudonym, "{ip}");
    }
    // And the ledger's, the join the copy is for.
    let (ok, out, err) = crate::common::ledger_with(&lab.lab.milter.config_path, &["export"]);
    assert!(ok, "{err}");
    let exported = json_lines(&out);
    let ledger_ip = exported
        .iter()
        .find(|e| e["queue_id"] == auth_qid.as_str())
        .expect("the authenticated message in the ledger")["client"]["ip"]
        .clone();
    assert_eq!(ledger_ip, auth_event["client"]["ip"]);

    // pflogsumm reads the copy as it reads the raw log.
    let (over_raw, over_copy) = (pflogsumm_counts(&raw), pflogsumm_counts(&copy));
    assert_eq!(
        over_copy, over_raw,
        "pflogsumm over the copy, over the raw log"
    );
    assert!(count(&over_raw, "received") >= 154, "{over_raw:?}");
    assert!(count(&over_raw, "delivered") >= 154, "{over_raw:?}");
    assert_eq!(count(&over_raw, "rejected"), 1, "{over_raw:?}");
}

/// Under `hmac` (addresses too): the copy names no one, and its pseudonyms are the events'.
#[test]
fn hmac_copy_of_postfix_and_dovecot_through_rsyslog() {
    scenario("e2e_log_copy::hmac", "hmac", "hmac");
}

/// Under `truncated` IPs and domain-only addresses: each line the rewriter's of the raw one.
#[test]
fn truncated_copy_of_postfix_and_dovecot_through_rsyslog() {
    scenario("e2e_log_copy::truncated", "truncated", "domain");
}
