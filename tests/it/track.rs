//! `privacy-milter track` on a log file holding Sendmail's lines as rsyslog writes them, for a
//! ledger filled through the real milter: every program name Sendmail logs under is read, and
//! a line that reads like an outcome but cannot be read is counted, not dropped. And the real
//! binary given what no MTA writes as its log (a FIFO, a device, a file too big to read at
//! once): refused or bounded, and SIGTERM stops it promptly.
use crate::{
    common::{case_config, Mail, Milter},
    e2e,
};
use chrono::Local;
use serde_json::Value;
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    time::{Duration, Instant},
};
use tempfile::TempDir;

/// The real binary's `track` on the log at `log`, with the ledger of `tests/track/ledger.toml`
/// in a directory of its own; its log in `track.log`.
struct Tracker {
    dir: TempDir,
    child: Child,
}

impl Tracker {
    fn start(log: &Path, args: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), log, args)
    }

    fn start_in(dir: TempDir, log: &Path, args: &[&str]) -> Self {
        let config = dir.path().join("privacy-milter.toml");
        std::fs::write(&config, case_config("track/ledger.toml", dir.path())).unwrap();
        let out = std::fs::File::create(dir.path().join("track.log")).unwrap();
        let child = e2e::Milter::command()
            .arg("--config")
            .arg(&config)
            .arg("track")
            .args(args)
            .env("PRIVACY_MILTER_TRACKING__PATH", log)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { dir, child }
    }

    /// The exit status, if it comes within `limit`; else the process is killed and None.
    fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("track.log")).unwrap_or_default()
    }

    fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A FIFO, a link to `/dev/zero`, a character device: `track --once` and `track` refuse each
/// at once, naming the path, and write a short log (before: `--once` hung on the FIFO, and on
/// `/dev/zero` spun writing warnings by the million).
#[test]
fn a_log_that_is_no_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let zero = dir.path().join("zero.log");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let cases: [(PathBuf, &str); 3] = [
        (fifo, "a FIFO"),
        (zero, "a character device"),
        (PathBuf::from("/dev/null"), "a character device"),
    ];
    for (path, kind) in cases {
        for args in [&["--once"][..], &[]] {
            let mut tracker = Tracker::start(&path, args);
            let status = tracker.exit_within(Duration::from_secs(10));
            let log = tracker.log();
            assert!(
                status.is_some_and(|s| s.code() == Some(1)),
                "track {args:?} on {}: {status:?}\n{log}",
                path.display()
            );
            let want = format!("{} is {kind}, not a regular file", path.display());
            assert!(log.contains(&want), "{want:?} not in:\n{log}");
            assert!(log.len() < 4096, "{} bytes of log:\n{log}", log.len());
        }
    }
}

/// A log file far bigger than one poll reads (sparse: zeros, no line in it): SIGTERM during
/// the read stops `track --once` within a few seconds, and its log stays small.
#[test]
fn sigterm_stops_a_long_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::File::create(&log)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let mut tracker = Tracker::start(&log, &["--once"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        tracker.child.try_wait().unwrap().is_none(),
        "exited before SIGTERM:\n{}",
        tracker.log()
    );
    tracker.terminate();
    let status = tracker.exit_within(Duration::from_secs(5));
    let said = tracker.log();
    assert!(
        status.is_some(),
        "did not stop within 5 s of SIGTERM:\n{said}"
    );
    assert!(said.contains("SIGTERM: stopping"), "{said}");
    assert!(said.len() < 8192, "{} bytes of log:\n{said}", said.len());
}

#[tokio::test]
async fn sendmail_lines_are_read_or_counted() {
    let mut milter = Milter::start("track/ledger.toml").await;
    // Sendmail hands the milter its host name ($j); the tracker looks events up by it.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    for (queue_id, to) in [
        ("x9EL4XLo001111", "carol@transit.example"),
        ("x9EL4XLo002222", "dave@transit.example"),
    ] {
        let mut mail = Mail::from_ip("203.0.113.7")
            .auth("alice")
            .rcpt(to)
            .queue_id(queue_id);
        mail.connect_macros = vec![("j".into(), host.clone())];
        mail.send(&milter).await;
    }
    milter.stop().await.unwrap();

    let now = Local::now().format("%b %e %H:%M:%S");
    let fields = "delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=120, relay=mx.transit.example. [192.0.2.25]";
    let log = [
        // The daemon's lines under the name its process title gives it.
        format!("{now} {host} sm-acceptingconnections[7]: x9EL4XLo001111: to=<carol@transit.example>, {fields}, dsn=2.0.0, stat=Sent (x9EL4XLp003333 Message accepted for delivery)"),
        format!("{now} {host} sm-msp-queue[8]: x9EL4XLo002222: to=<dave@transit.example>, {fields}, dsn=4.0.0, stat=Deferred: Connection refused by mx.transit.example."),
        // An outcome in a shape not known, and one in a line that is not syslog's.
        format!("{now} {host} sm-mta[9]: x9EL4XLo002222: rcpt=<dave@transit.example>, {fields}, dsn=2.0.0, stat=Sent (ok)"),
        format!("<22>1 2026-11-29T21:06:33+01:00 {host} sm-mta 9 - - x9EL4XLo002222: to=<dave@transit.example>, {fields}, dsn=2.0.0, stat=Sent (ok)"),
        // Neither.
        format!("{now} {host} sm-mta[9]: x9EL4XLo002222: from=<alice@example.org>, size=100, class=0, nrcpts=1, relay=c.example.org [203.0.113.7]"),
        format!("{now} {host} -- MARK --"),
    ]
    .join("\n")
        + "\n";
    let dir = milter.dir.path();
    std::fs::write(dir.join("mail.log"), log).unwrap();
    let run = |args: &[&str]| {
        e2e::Milter::command()
            .arg("--config")
            .arg(&milter.config_path)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["track", "--once"]);
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("6 log lines read, 2 deliveries recorded, 0 lines about messages without a transit record, 2 lines not understood"),
        "{said}"
    );
    // The first is a warning, naming the program and nothing of the line.
    let warned: Vec<&str> = said.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warned.len(), 1, "{said}");
    assert!(
        warned[0].contains("a line of sm-mta not understood"),
        "{said}"
    );
    assert!(
        !warned[0].contains("x9EL4XLo002222") && !warned[0].contains("dave@"),
        "{said}"
    );

    let out = run(&["transit", "--format", "json"]);
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let state: HashMap<&str, &str> = list
        .iter()
        .map(|t| {
            (
                t["queue_id"].as_str().unwrap(),
                t["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(state["x9EL4XLo001111"], "removed", "{list:#?}");
    assert_eq!(state["x9EL4XLo002222"], "deferred", "{list:#?}");
}

/// Values no real MTA writes change no record (Sendmail would count each message `removed`):
/// a line far in the future, absurd delays, a DSN of another shape, a recipient longer than
/// any address, a thousand recipients on one line for a message with one, a line dated before
/// the message was accepted. Each is counted as not understood, and said once per cause.
#[tokio::test]
async fn implausible_lines_change_no_record() {
    let mut milter = Milter::start("track/ledger.toml").await;
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let cases = ["future", "delay", "dsn", "long", "many", "before", "fine"];
    let qid = |n: usize| format!("x9EL4XLo00{n:04}");
    for n in 0..cases.len() {
        let mut mail = Mail::from_ip("203.0.113.7")
            .auth("alice")
            .rcpt("carol@transit.example")
            .queue_id(&qid(n));
        mail.connect_macros = vec![("j".into(), host.clone())];
        mail.send(&milter).await;
    }
    milter.stop().await.unwrap();

    let now = Local::now();
    let classic = |t: chrono::DateTime<Local>| t.format("%b %e %H:%M:%S").to_string();
    let fields = |delay: &str, dsn: &str| {
        format!("delay={delay}, xdelay=00:00:01, mailer=esmtp, pri=120, relay=mx.transit.example. [192.0.2.25], dsn={dsn}, stat=Sent (ok)")
    };
    let ok = fields("00:00:01", "2.0.0");
    let many: Vec<String> = (0..1001)
        .map(|i| format!("<c{i}@transit.example>"))
        .collect();
    let line = |n: usize, stamp: String, to: &str, rest: &str| {
        format!("{stamp} {host} sm-mta[7]: {}: to={to}, {rest}", qid(n))
    };
    let carol = "<carol@transit.example>";
    let log = [
        line(
            0,
            (now + chrono::Duration::days(3)).to_rfc3339(),
            carol,
            &ok,
        ),
        line(1, classic(now), carol, &fields("99+00:00:00", "2.0.0")),
        line(2, classic(now), carol, &fields("00:00:01", "9.9.9")),
        line(
            3,
            classic(now),
            &format!("<{}@transit.example>", "c".repeat(600)),
            &ok,
        ),
        line(4, classic(now), &many.join(","), &ok),
        line(5, classic(now - chrono::Duration::hours(3)), carol, &ok),
        line(6, classic(now), carol, &ok),
    ]
    .join("\n")
        + "\n";
    let dir = milter.dir.path();
    std::fs::write(dir.join("mail.log"), log).unwrap();
    let run = |args: &[&str]| {
        e2e::Milter::command()
            .arg("--config")
            .arg(&milter.config_path)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["track", "--once"]);
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("7 log lines read, 1 deliveries recorded, 0 lines about messages without a transit record, 6 lines not understood"),
        "{said}"
    );
    let warned = said.lines().filter(|l| l.contains("refused")).count();
    assert_eq!(warned, 6, "{said}");
    // The warnings name the program and the cause: nothing of the lines' addresses or IPs.
    for raw in ["carol@", "@transit.example", "192.0.2.25", "ccccc"] {
        assert!(!said.contains(raw), "{raw} in the tracker's output: {said}");
    }
    let out = run(&["transit", "--format", "json"]);
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let state: HashMap<&str, &str> = list
        .iter()
        .map(|t| {
            (
                t["queue_id"].as_str().unwrap(),
                t["state"].as_str().unwrap(),
            )
        })
        .collect();
    for (n, case) in cases.iter().enumerate() {
        let want = if *case == "fine" {
            "removed"
        } else {
            "pending"
        };
        assert_eq!(state[qid(n).as_str()], want, "{case}: {list:#?}");
    }
}
