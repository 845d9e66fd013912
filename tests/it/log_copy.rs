//! The pseudonymised copy of the MTA's log (`[mta_logs] copy`), written by the real
//! `privacy-milter track` from a real log file (rotated by rename and by copytruncate, the
//! tracker killed with SIGKILL and started again) and from a real journal: every line of the
//! log is in the copy once, in order, and no raw IP, address or host name of it; under `hmac`
//! a client's pseudonym in the copy is the one in its message's event in the ledger; days roll
//! over into `mail.log-YYYYMMDD.gz`, which expire.
use crate::{
    common::{case_config, json_lines, Mail, Milter},
    e2e,
};
use chrono::{Local, TimeDelta};
use privacy_milter::internals::logcopy::{
    AddressPrivacy, IpPrivacy, Privacy, Pseudonymiser, Rewriter,
};
use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

/// A line of the log with a marker of its own that the copy keeps (the pid, or `seq=N` in a
/// line that is not syslog's), and the personal values in it, none of which the copy may hold.
struct Raw {
    text: String,
    marker: String,
    secrets: Vec<String>,
}

/// Line `i` of a log of every shape: Postfix (client PTR names that spell the IP, SASL users,
/// senders, recipients, relays, a reject with IPv6 and HELO), Dovecot, a milter's line of
/// unknown shape, and a line that is not syslog's at all.
fn raw_line(i: usize, stamp: &str) -> Raw {
    let k = 1 + i % 200;
    let pid = 10_000 + i;
    let qid = format!("{:X}", 0x03B3_AE9A_0000_u64 + i as u64);
    let ptr = format!("203-0-113-{k}.dialup.example.net");
    let ip = format!("203.0.113.{k}");
    let (text, secrets) = match i % 8 {
        0 => (
            format!("{stamp} mx postfix/smtpd[{pid}]: connect from {ptr}[{ip}]"),
            vec![ip.clone(), ptr.clone()],
        ),
        1 => (
            format!("{stamp} mx postfix/smtpd[{pid}]: {qid}: client={ptr}[{ip}], sasl_method=PLAIN, sasl_username=user{k}@example.org"),
            vec![ip.clone(), ptr.clone(), format!("user{k}@")],
        ),
        2 => (
            format!("{stamp} mx postfix/qmgr[{pid}]: {qid}: from=<sender{k}@example.org>, size=1234, nrcpt=1 (queue active)"),
            vec![format!("sender{k}@")],
        ),
        3 => (
            format!("{stamp} mx postfix/smtp[{pid}]: {qid}: to=<rcpt{k}@remote.example>, relay=mx{k}.remote.example[198.51.100.{k}]:25, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)"),
            vec![format!("rcpt{k}@"), format!("mx{k}.remote"), format!("198.51.100.{k}")],
        ),
        4 => (
            format!("{stamp} mx dovecot[{pid}]: imap-login: Login: user=<user{k}@example.org>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=1, TLS, session=<SeSs{k}xyZ>"),
            vec![format!("user{k}@"), ip.clone(), "192.0.2.1".into(), format!("SeSs{k}xyZ")],
        ),
        5 => (
            format!("{stamp} mx opendkim[{pid}]: {qid}: SSL from {ip} for sender{k}@example.org"),
            vec![ip.clone(), format!("sender{k}@")],
        ),
        6 => (
            format!("{stamp} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[2001:db8::{k:x}]: 554 5.7.1 <rcpt{k}@remote.example>: Relay access denied; from=<sender{k}@example.org> to=<rcpt{k}@remote.example> proto=ESMTP helo=<pc{k}.home.example>"),
            vec![format!("2001:db8::{k:x}]"), format!("rcpt{k}@"), format!("sender{k}@"), format!("pc{k}.home")],
        ),
        _ => (
            format!("a line of no known shape seq={i}: from {ip} by sender{k}@example.org"),
            vec![ip.clone(), format!("sender{k}@")],
        ),
    };
    let marker = if i % 8 == 7 {
        format!("seq={i}:")
    } else {
        format!("[{pid}]:")
    };
    Raw {
        text,
        marker,
        secrets,
    }
}

fn now_stamp() -> String {
    Local::now().format("%b %e %H:%M:%S").to_string()
}

/// Appends lines `range` to `path`, remembering them in `all`.
fn append(path: &Path, range: std::ops::Range<usize>, all: &mut Vec<Raw>) {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let stamp = now_stamp();
    let mut text = String::new();
    for i in range {
        let raw = raw_line(i, &stamp);
        text.push_str(&raw.text);
        text.push('\n');
        all.push(raw);
    }
    file.write_all(text.as_bytes()).unwrap();
}

/// The copy's lines in order: the rotated files (decompressed), then `mail.log`.
pub(crate) fn copy_lines(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("mail.log-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut text = String::new();
    for name in names {
        let bytes = fs::read(dir.join(&name)).unwrap();
        if name.ends_with(".gz") {
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }
    text.push_str(&fs::read_to_string(dir.join("mail.log")).unwrap_or_default());
    text.lines().map(String::from).collect()
}

/// Every byte of every file of the copy, decompressed, as text.
fn copy_bytes(dir: &Path) -> String {
    copy_lines(dir).join("\n")
}

/// `privacy-milter track` with `config`, following the log; its output to `log`.
pub(crate) fn start_tracker(config: &Path, log: &Path) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    e2e::Milter::command()
        .arg("--config")
        .arg(config)
        .arg("track")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// `privacy-milter track --once` with `config`; its output.
fn track_once(config: &Path) -> String {
    let out = e2e::Milter::command()
        .arg("--config")
        .arg(config)
        .args(["track", "--once"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    said
}

/// Waits (up to a minute) until the copy holds `n` lines.
fn wait_for_lines(dir: &Path, n: usize, tracker_log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while copy_lines(dir).len() < n {
        assert!(
            Instant::now() < deadline,
            "the copy holds {} lines, not {n}:\n{}",
            copy_lines(dir).len(),
            fs::read_to_string(tracker_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each line of the log once in the copy, in the log's order, with no personal value of it.
fn assert_each_line_once(copy: &[String], raw: &[Raw]) {
    assert_eq!(copy.len(), raw.len(), "lines in the copy, lines in the log");
    for (n, (copied, raw)) in copy.iter().zip(raw).enumerate() {
        assert!(
            copied.contains(&raw.marker),
            "line {n} of the copy is not line {n} of the log:\n{copied}\n{}",
            raw.text
        );
    }
}

fn assert_no_secret(bytes: &str, raw: &[Raw]) {
    let mut secrets: Vec<&str> = raw
        .iter()
        .flat_map(|r| r.secrets.iter().map(String::as_str))
        .collect();
    secrets.sort_unstable();
    secrets.dedup();
    for secret in secrets {
        assert!(!bytes.contains(secret), "{secret:?} is in the copy");
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Under `hmac`, through rename and copytruncate rotations and a SIGKILL: every line once, no
/// raw value, and the client's pseudonym in the copy that of its message's event.
#[tokio::test]
async fn hmac_copy_across_rotation_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("log")).unwrap();
    let mut milter = Milter::start_in("log_copy/hmac.toml", dir).await;
    Mail::from_ip("203.0.113.77")
        .rcpt("bob@example.org")
        .queue_id("4EvtQ1d0A7")
        .send(&milter)
        .await;
    milter.stop().await.unwrap();
    let d = milter.dir.path().to_path_buf();
    let config = milter.config_path.clone();
    let log = d.join("log/mail.log");
    let copy = d.join("mta");
    let tracker_log = d.join("tracker.log");
    let mut raw = Vec::new();

    // The message's own lines first.
    let stamp = now_stamp();
    for (pid, text) in [
        (
            9001,
            "connect from 203-0-113-77.dialup.example.net[203.0.113.77]",
        ),
        (
            9002,
            "4EvtQ1d0A7: client=203-0-113-77.dialup.example.net[203.0.113.77]",
        ),
    ] {
        raw.push(Raw {
            text: format!("{stamp} mx postfix/smtpd[{pid}]: {text}"),
            marker: format!("[{pid}]:"),
            secrets: vec!["203.0.113.77".into(), "203-0-113-77".into()],
        });
    }
    let head: String = raw.iter().map(|r| r.text.clone() + "\n").collect();
    fs::write(&log, head).unwrap();
    append(&log, 0..40, &mut raw);

    let mut tracker = start_tracker(&config, &tracker_log);
    wait_for_lines(&copy, raw.len(), &tracker_log);

    // rename + create, the old file written to a little longer (the writer not told yet).
    fs::rename(&log, d.join("log/mail.log.1")).unwrap();
    append(&d.join("log/mail.log.1"), 40..45, &mut raw);
    append(&log, 45..80, &mut raw);
    wait_for_lines(&copy, raw.len(), &tracker_log);

    // A burst, and SIGKILL while it is being copied.
    append(&log, 80..3080, &mut raw);
    let before = copy_lines(&copy).len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while copy_lines(&copy).len() <= before + 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    tracker.kill().unwrap();
    tracker.wait().unwrap();
    let at_kill = copy_lines(&copy).len();

    // copytruncate while it is down, then more lines.
    fs::rename(d.join("log/mail.log.1"), d.join("log/mail.log.2")).unwrap();
    fs::copy(&log, d.join("log/mail.log.1")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, 3080..3120, &mut raw);

    let mut tracker = start_tracker(&config, &tracker_log);
    wait_for_lines(&copy, raw.len(), &tracker_log);
    // copytruncate while it runs.
    fs::rename(d.join("log/mail.log.1"), d.join("log/mail.log.2")).unwrap();
    fs::copy(&log, d.join("log/mail.log.1")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, 3120..3160, &mut raw);
    wait_for_lines(&copy, raw.len(), &tracker_log);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(tracker.wait().unwrap().success());
    let said = fs::read_to_string(&tracker_log).unwrap();
    // Whether the kill came between a batch's copy and its save (then cut back at start).
    eprintln!(
        "killed with {at_kill} of {} lines in the copy; cut back at restart: {}",
        raw.len(),
        said.contains("cut off")
    );

    let lines = copy_lines(&copy);
    assert_each_line_once(&lines, &raw);
    // Nor in the tracker's own log, nor in its state (the copy's place is a length).
    let bytes = copy_bytes(&copy) + &said + &fs::read_to_string(d.join("track.state")).unwrap();
    assert_no_secret(&bytes, &raw);

    // The client's pseudonym is its event's.
    let (ok, out, err) = crate::common::ledger_cmd(&milter, &["export"]);
    assert!(ok, "{err}");
    let events = json_lines(&out);
    let ip = events[0]["client"]["ip"].as_str().unwrap();
    assert!(ip.starts_with("hmac:"), "{ip}");
    // In the connect and client= lines; the PTR name, under the IP's policy, an HMAC too.
    assert!(
        lines[1].contains(" 4EvtQ1d0A7: client=hmac:") && lines[1].ends_with(&format!("[{ip}]")),
        "{}",
        lines[1]
    );
    assert!(lines[0].contains(&format!("[{ip}]")), "{}", lines[0]);

    assert_eq!(mode(&copy), 0o750);
    assert_eq!(mode(&copy.join("mail.log")), 0o640);
}

/// Under `truncated`, each line of the copy is the rewriter's line for the log's, across a
/// rotation and two runs; unknown shapes too.
#[test]
fn truncated_copy_is_the_rewritten_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("log")).unwrap();
    let config = d.join("privacy-milter.toml");
    fs::write(&config, case_config("log_copy/truncated.toml", d)).unwrap();
    let log = d.join("log/mail.log");
    let mut raw = Vec::new();
    append(&log, 0..100, &mut raw);
    track_once(&config);
    fs::rename(&log, d.join("log/mail.log.1")).unwrap();
    append(&log, 100..200, &mut raw);
    track_once(&config);
    track_once(&config);

    let lines = copy_lines(&d.join("mta"));
    assert_each_line_once(&lines, &raw);
    assert_no_secret(&copy_bytes(&d.join("mta")), &raw);
    let mut rewriter = Rewriter::new(Pseudonymiser::new(
        Privacy {
            ip: IpPrivacy::Truncated,
            address: AddressPrivacy::Domain,
            ..Privacy::default()
        },
        None,
    ));
    for (copied, raw) in lines.iter().zip(&raw) {
        assert_eq!(copied, &rewriter.line(&raw.text));
    }
    // Shapes kept: pflogsumm still reads who relayed where.
    assert!(
        lines[3].contains("to=<@remote.example>, relay=*.remote.example[198.51.100.0/24]:25"),
        "{}",
        lines[3]
    );
    assert!(
        lines[7].contains("from 203.0.113.0/24 by @example.org"),
        "{}",
        lines[7]
    );
}

/// A state saved without the copy (an earlier version, or the copy off): it loads, and the
/// copy starts at the place in the log, with what comes after it.
#[test]
fn a_state_without_the_copy_starts_it_at_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("log")).unwrap();
    let config = d.join("privacy-milter.toml");
    let text = case_config("log_copy/truncated.toml", d);
    let copy_line = format!("copy = \"{}/mta\"", d.display());
    assert!(text.contains(&copy_line));
    fs::write(&config, text.replace(&copy_line, "copy = \"\"")).unwrap();
    let log = d.join("log/mail.log");
    let mut raw = Vec::new();
    append(&log, 0..50, &mut raw);
    track_once(&config);
    let state = fs::read_to_string(d.join("track.state")).unwrap();
    assert!(!state.contains("copy"), "{state}");
    fs::write(&config, &text).unwrap();
    append(&log, 50..80, &mut raw);
    track_once(&config);
    assert_each_line_once(&copy_lines(&d.join("mta")), &raw[50..]);
}

/// Lines of past days: a file per day, compressed, their lines in them; a shorter retention
/// deletes the days that began before it.
#[test]
fn days_roll_over_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("log")).unwrap();
    let config = d.join("privacy-milter.toml");
    let text = case_config("log_copy/truncated.toml", d);
    fs::write(
        &config,
        text.replace("mta_logs = \"7d\"", "mta_logs = \"30d\""),
    )
    .unwrap();
    let day = |ago: i64| Local::now().date_naive() - TimeDelta::days(ago);
    let mut raw = Vec::new();
    let mut log = String::new();
    let ages = [9, 9, 8, 3, 3, 3, 1, 0];
    for (i, ago) in ages.iter().enumerate() {
        let stamp = format!(
            "{}T12:00:00.000000{}",
            day(*ago).format("%Y-%m-%d"),
            Local::now().format("%:z")
        );
        let r = raw_line(i % 7, &stamp);
        log.push_str(&r.text);
        log.push('\n');
        raw.push(r);
    }
    fs::write(d.join("log/mail.log"), log).unwrap();
    track_once(&config);
    let copy = d.join("mta");
    let name = |ago: i64| format!("mail.log-{}.gz", day(ago).format("%Y%m%d"));
    let mut names: Vec<String> = fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![name(9), name(8), name(3), name(1), "mail.log".to_string()];
    expected.sort();
    assert_eq!(names, expected);
    for n in &names {
        assert_eq!(mode(&copy.join(n)), 0o640, "{n}");
    }
    // Each day's lines in its file.
    let lines_of = |name: &str| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&fs::read(copy.join(name)).unwrap()[..])
            .read_to_string(&mut text)
            .unwrap();
        text.lines().count()
    };
    assert_eq!(
        [
            lines_of(&name(9)),
            lines_of(&name(8)),
            lines_of(&name(3)),
            lines_of(&name(1))
        ],
        [2, 1, 3, 1]
    );
    assert_eq!(
        fs::read_to_string(copy.join("mail.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    assert_each_line_once(&copy_lines(&copy), &raw);

    // A week's retention: the days that began more than a week ago go.
    fs::write(&config, text).unwrap();
    track_once(&config);
    let mut names: Vec<String> = fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![name(3), name(1), "mail.log".to_string()];
    expected.sort();
    assert_eq!(names, expected);
}

/// A journal file `file` with these entries (identifier, pid, facility, message), written by
/// systemd-journal-remote from the journal export format.
fn write_journal(file: &Path, first: i64, entries: &[(&str, u32, u8, String)]) {
    let mut export = String::new();
    let now = chrono::Utc::now().timestamp_micros();
    for (n, (ident, pid, facility, message)) in entries.iter().enumerate() {
        let at = now - 1_000_000 * (100 - first - n as i64);
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={at}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             _HOSTNAME=mx\nSYSLOG_IDENTIFIER={ident}\nSYSLOG_PID={pid}\nSYSLOG_FACILITY={facility}\nMESSAGE={message}\n\n",
            first + n as i64 + 1
        ));
    }
    crate::common::write_journal(file, &export);
}

/// From the journal: every mail entry (Postfix's, Dovecot's) as a syslog line, pseudonymised,
/// once across runs; entries of other facilities not at all.
#[test]
fn journal_entries_are_copied_as_syslog_lines() {
    if !crate::common::can_run(
        crate::common::journal_remote().is_some(),
        "systemd-journal-remote is not installed (scripts/setup-test-deps)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("journal")).unwrap();
    let config = d.join("privacy-milter.toml");
    fs::write(&config, case_config("log_copy/journal.toml", d)).unwrap();
    write_journal(
        &d.join("journal/a.journal"),
        0,
        &[
            ("postfix/smtpd", 11, 2, "connect from 203-0-113-5.dialup.example.net[203.0.113.5]".into()),
            ("dovecot", 12, 2, "imap-login: Login: user=<carol@example.org>, method=PLAIN, rip=203.0.113.6, lip=192.0.2.1, session=<AbCd1234>".into()),
            ("sshd", 13, 4, "Accepted password for root from 203.0.113.99".into()),
        ],
    );
    track_once(&config);
    track_once(&config);
    write_journal(
        &d.join("journal/b.journal"),
        10,
        &[(
            "postfix/qmgr",
            14,
            2,
            "3B3AE9AC053: from=<dave@example.org>, size=1, nrcpt=1 (queue active)".into(),
        )],
    );
    track_once(&config);
    let lines = copy_lines(&d.join("mta"));
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].contains(" mx postfix/smtpd[11]: connect from *.example.net[203.0.113.0/24]"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(" mx dovecot[12]: imap-login: Login: user=<@example.org>, method=PLAIN, rip=203.0.113.0/24"), "{}", lines[1]);
    assert!(
        lines[2].contains(" mx postfix/qmgr[14]: 3B3AE9AC053: from=<@example.org>, size=1"),
        "{}",
        lines[2]
    );
    let bytes = lines.join("\n");
    for secret in [
        "203.0.113.5",
        "203-0-113-5",
        "carol",
        "203.0.113.6",
        "192.0.2.1",
        "AbCd1234",
        "dave",
        "203.0.113.99",
    ] {
        assert!(!bytes.contains(secret), "{secret} in {bytes}");
    }
    // An RFC 3339 stamp in local time, as Debian's rsyslog writes.
    let stamp = lines[0].split(' ').next().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{stamp}"
    );
}

/// A first run killed before it saved a batch (here held by a locked ledger after copying it):
/// the next run starts where the first started, so each line is in the copy once, not the
/// first batch twice.
#[test]
fn killed_before_its_first_save() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("log")).unwrap();
    let config = d.join("privacy-milter.toml");
    fs::write(&config, case_config("log_copy/truncated.toml", d)).unwrap();
    // The ledger made, no place saved (no log yet).
    track_once(&config);
    assert!(!d.join("track.state").exists());
    let mut raw = Vec::new();
    append(&d.join("log/mail.log"), 0..50, &mut raw);
    let ledger = rusqlite::Connection::open(d.join("ledger.sqlite")).unwrap();
    ledger.execute_batch("BEGIN IMMEDIATE").unwrap();
    let tracker_log = d.join("tracker.log");
    let mut tracker = start_tracker(&config, &tracker_log);
    wait_for_lines(&d.join("mta"), 50, &tracker_log);
    tracker.kill().unwrap();
    tracker.wait().unwrap();
    drop(ledger);
    append(&d.join("log/mail.log"), 50..60, &mut raw);
    track_once(&config);
    assert_each_line_once(&copy_lines(&d.join("mta")), &raw);
}
