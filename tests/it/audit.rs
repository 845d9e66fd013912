//! `privacy-milter audit` on real files: a mail.log with lines older than
//! `retention.mta_logs` and a rotated `.gz`, a logrotate configuration that keeps too much, a
//! journald configuration and drop-in, a journal written by systemd-journal-remote, a ledger
//! filled through the real milter, a key ring, and a private Postfix instance with and without
//! the milter configured. Each finding appears, then goes once its cause is fixed the way the
//! finding's fix (and `docs/log-retention.md`) says; the drop-ins are `docs/examples/`'s own.
use crate::{
    common::{Mail, Milter as InProcess},
    e2e::{self, PostfixLab, Socket},
};
use chrono::{Duration, Local, Utc};
use serde_json::Value;
use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

fn docs(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/examples")
            .join(name),
    )
    .unwrap()
}

/// The audit's configuration, in `dir`: everything it reads lives there (or is the lab's).
struct Setup {
    dir: PathBuf,
    socket: String,
    postfix_etc: PathBuf,
    /// More keys of `[tracking]`.
    tracking: String,
    /// `[policy] contact`.
    contact: &'static str,
    /// More tables.
    extra: String,
    /// Environment variables for the audit.
    env: Vec<(&'static str, &'static str)>,
}

impl Setup {
    fn config(&self) -> PathBuf {
        let d = self.dir.display();
        let text = format!(
            r#"socket = "{socket}"
[domains]
local = ["example.org"]
[events]
sinks = ["ledger"]
[events.ledger]
path = "{d}/ledger.sqlite"
[retention]
mta_logs = "7d"
purge_interval = "1h"
[tracking]
postfix_config_dir = "{etc}"
state = "{d}/track.state"
{tracking}
[policy]
name = "Example Org"
contact = "{contact}"
[audit]
log_files = ["{d}/log/mail.log", "{d}/log/syslog"]
logrotate_conf = "{d}/logrotate.conf"
journald_conf = "{d}/journald.conf"
journald_dropins = ["{d}/journald.conf.d"]
journal = "{d}/journal"
{extra}
"#,
            socket = self.socket,
            etc = self.postfix_etc.display(),
            tracking = self.tracking,
            contact = self.contact,
            extra = self.extra,
        );
        let path = self.dir.join("audit.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// In `d`: Sendmail's log in `log/mail.log` tracked, a pseudonymised copy in `copy`
    /// (`raw_window` a day), empty logrotate and journald drop-in directories and journal;
    /// `extra` more tables.
    fn with_copy(d: &Path, port: u16, extra: &str) -> Self {
        for dir in ["log", "logrotate.d", "journald.conf.d", "journal"] {
            std::fs::create_dir_all(d.join(dir)).unwrap();
        }
        Setup {
            dir: d.to_path_buf(),
            socket: format!("inet:{port}@127.0.0.1"),
            postfix_etc: d.join("no-postfix"),
            tracking: format!(
                "mta = \"sendmail\"\npath = \"{}\"",
                d.join("log/mail.log").display()
            ),
            contact: "privacy@example.org",
            extra: format!(
                "{extra}[mta_logs]\ncopy = \"{}\"\nraw_window = \"1d\"\n",
                d.join("copy").display()
            ),
            env: Vec::new(),
        }
    }

    /// Runs the binary with this configuration.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        e2e::Milter::command()
            .arg("--config")
            .arg(self.config())
            .args(args)
            .envs(self.env.iter().copied())
            .output()
            .unwrap()
    }

    /// Runs `args`, which must succeed: what it printed.
    fn succeeds(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    }

    /// Runs the audit: exit status and findings by check.
    fn audit(&self) -> (bool, Vec<Value>) {
        let out = self.cli(&["audit", "--format", "json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
        // The shape is an interface.
        let object = json.as_object().unwrap();
        assert_eq!(object.keys().collect::<Vec<_>>(), ["findings"]);
        let findings = json["findings"].as_array().unwrap().clone();
        for f in &findings {
            let mut keys: Vec<&String> = f.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, ["check", "detail", "fix", "ok"], "{f}");
            assert!(f["check"].is_string() && f["ok"].is_boolean() && f["detail"].is_string());
            assert_eq!(
                f["fix"] == "",
                f["ok"] == true,
                "a fix exactly when it fails: {f}"
            );
        }
        let all_ok = findings.iter().all(|f| f["ok"] == true);
        assert_eq!(
            out.status.success(),
            all_ok,
            "exit status vs findings: {findings:#?}"
        );
        (out.status.success(), findings)
    }

    /// Whether every finding of `check` holds, and their details.
    fn check(&self, check: &str) -> (bool, String) {
        let (_, findings) = self.audit();
        let mine: Vec<&Value> = findings.iter().filter(|f| f["check"] == check).collect();
        assert!(!mine.is_empty(), "no finding {check}: {findings:#?}");
        let text = mine
            .iter()
            .map(|f| {
                format!(
                    "{} | {}",
                    f["detail"].as_str().unwrap(),
                    f["fix"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        (mine.iter().all(|f| f["ok"] == true), text)
    }

    fn fails(&self, check: &str, containing: &str) -> String {
        let (ok, text) = self.check(check);
        assert!(!ok, "{check} holds:\n{text}");
        assert!(
            text.contains(containing),
            "{check}: {containing:?} not in\n{text}"
        );
        text
    }

    fn holds(&self, check: &str) -> String {
        let (ok, text) = self.check(check);
        assert!(ok, "{check} fails:\n{text}");
        text
    }
}

/// A syslog line as rsyslog writes it, `days` ago in local time.
fn line(days: i64, ident: &str, message: &str) -> String {
    let at = Local::now() - Duration::days(days);
    format!(
        "{} mx {ident}[123]: {message}\n",
        at.format("%b %e %H:%M:%S")
    )
}

fn gzip(path: &Path, text: &str) {
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
}

/// The modification time of a file set `days` ago.
fn age(path: &Path, days: i64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(days as u64 * 86400);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A journal file in `dir` with one entry of `ident` `days` ago (written by
/// systemd-journal-remote from the journal export format).
fn journal_with_entry(dir: &Path, ident: &str, days: i64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let micros = (Utc::now() - Duration::days(days)).timestamp_micros();
    let export = format!(
        "__REALTIME_TIMESTAMP={micros}\n__MONOTONIC_TIMESTAMP=1\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
         _HOSTNAME=mx\nSYSLOG_IDENTIFIER={ident}\nSYSLOG_FACILITY=2\nMESSAGE=connect from unknown\n\n"
    );
    crate::common::write_journal(&dir.join("remote.journal"), &export);
}

/// Installs the logrotate drop-in `example` of docs/examples for `log`, as
/// `logrotate.d/mail-privacy` in `dir`: returns what logrotate itself says of the configuration
/// then (None without logrotate), having checked that it rotates `log` without an error.
fn install_logrotate_dropin(
    dir: &Path,
    example: &str,
    log: &Path,
    has_logrotate: bool,
) -> Option<String> {
    let ours = docs(example).replace("/var/log/mail.log", &log.display().to_string());
    std::fs::write(dir.join("logrotate.d/mail-privacy"), &ours).unwrap();
    if !has_logrotate {
        return None;
    }
    let said = logrotate_says(&dir.join("logrotate.conf"), &dir.join("lr.state")).unwrap();
    assert!(
        said.contains(&format!("rotating pattern: {} ", log.display())) && !said.contains("error"),
        "{said}"
    );
    Some(said)
}

/// `logrotate --debug` reads the configuration and says how it rotates `log`.
fn logrotate_says(conf: &Path, state: &Path) -> Option<String> {
    let out = Command::new("logrotate")
        .arg("-d")
        .arg("-s")
        .arg(state)
        .arg(conf)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

/// The MTA's logs: files (with a rotated .gz), logrotate and journald settings, the journal.
#[test]
fn mta_logs_findings_come_and_go() {
    let has_journal = crate::common::can_run(
        crate::common::journal_remote().is_some(),
        "systemd-journal-remote is not installed (scripts/setup-test-deps)",
    );
    let has_logrotate = crate::common::can_run(
        Path::new("/usr/sbin/logrotate").exists(),
        "logrotate is not installed (scripts/setup-test-deps)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let setup = Setup {
        dir: d.to_path_buf(),
        socket: "inet:8894@127.0.0.1".into(),
        postfix_etc: d.join("no-postfix"),
        tracking: String::new(),
        contact: "privacy@example.org",
        extra: String::new(),
        env: Vec::new(),
    };
    let log = d.join("log");
    std::fs::create_dir_all(&log).unwrap();
    let mail_log = log.join("mail.log");
    // Debian's layout: weekly, rotate 4, mail.log in the rsyslog rule.
    std::fs::create_dir_all(d.join("logrotate.d")).unwrap();
    std::fs::write(
        d.join("logrotate.conf"),
        format!(
            "weekly\nrotate 4\ncreate\ninclude {}/logrotate.d\n",
            d.display()
        ),
    )
    .unwrap();
    let rsyslog_rule = |with_mail: bool| {
        format!(
            "{}/syslog\n{}{{\n\trotate 4\n\tweekly\n\tmissingok\n\tpostrotate\n\t\t/usr/lib/rsyslog/rsyslog-rotate\n\tendscript\n}}\n",
            log.display(),
            if with_mail { format!("{}\n", mail_log.display()) } else { String::new() }
        )
    };
    std::fs::write(d.join("logrotate.d/rsyslog"), rsyslog_rule(true)).unwrap();
    std::fs::write(
        d.join("journald.conf"),
        "[Journal]\n#MaxRetentionSec=\n#MaxFileSec=1month\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("journald.conf.d")).unwrap();
    std::fs::create_dir_all(d.join("journal")).unwrap();

    // Lines of 2 days ago in mail.log; of 12 days ago in a rotation compressed by logrotate.
    std::fs::write(
        &mail_log,
        line(2, "postfix/smtpd", "connect from unknown") + &line(1, "postfix/qmgr", "4T: removed"),
    )
    .unwrap();
    let rotated = log.join("mail.log.2.gz");
    gzip(
        &rotated,
        &(line(12, "postfix/smtpd", "connect") + &line(11, "postfix/qmgr", "x: removed")),
    );
    age(&rotated, 11);
    // syslog holds no MTA line: other programs only.
    std::fs::write(log.join("syslog"), line(20, "cron", "session opened")).unwrap();

    let text = setup.fails("mta_logs.files", "mail.log.2.gz");
    assert!(text.contains("12 days"), "{text}");
    assert!(
        text.contains(&format!("rm {}", rotated.display())),
        "{text}"
    );
    let text = setup.fails("mta_logs.logrotate", "weekly, rotate 4");
    assert!(text.contains("35 days"), "{text}");
    if has_logrotate {
        // logrotate itself reads the rule the same way.
        let said = logrotate_says(&d.join("logrotate.conf"), &d.join("lr.state")).unwrap();
        assert!(said.contains("weekly (4 rotations)"), "{said}");
    }
    setup.fails("mta_logs.journald", "no MaxRetentionSec");

    // Fixes: the old rotation deleted, mail.log given the rule of docs/examples/logrotate-mail.
    std::fs::remove_file(&rotated).unwrap();
    setup.holds("mta_logs.files");
    std::fs::write(d.join("logrotate.d/rsyslog"), rsyslog_rule(false)).unwrap();
    let said = install_logrotate_dropin(d, "logrotate-mail", &mail_log, has_logrotate);
    let text = setup.holds("mta_logs.logrotate");
    assert!(
        text.contains("daily, rotate 6, maxage 6") && text.contains("7 days"),
        "{text}"
    );
    if let Some(said) = said {
        assert!(said.contains("after 1 days (6 rotations)"), "{said}");
    }
    // Two rules for one log: logrotate refuses the second, and the audit says so.
    std::fs::write(d.join("logrotate.d/rsyslog"), rsyslog_rule(true)).unwrap();
    setup.fails(
        "mta_logs.logrotate",
        "logrotate refuses the other rules naming it",
    );
    std::fs::write(d.join("logrotate.d/rsyslog"), rsyslog_rule(false)).unwrap();

    // journald: the drop-in of docs/examples.
    std::fs::write(
        d.join("journald.conf.d/privacy-milter.conf"),
        docs("journald-privacy-milter.conf"),
    )
    .unwrap();
    let text = setup.holds("mta_logs.journald");
    assert!(text.contains("up to 7 days"), "{text}");

    // MTA lines in syslog, kept by the weekly rule: the syslog rule now matters too.
    std::fs::write(log.join("syslog"), line(9, "postfix/smtp", "status=sent")).unwrap();
    let text = setup.fails("mta_logs.files", "syslog");
    assert!(text.contains("rsyslog drop-in"), "{text}");
    std::fs::write(log.join("syslog"), line(1, "cron", "x")).unwrap();
    setup.holds("mta_logs.files");

    if has_journal {
        journal_with_entry(&d.join("journal"), "postfix/smtpd", 10);
        setup.fails("mta_logs.journal", "postfix/smtpd");
        journal_with_entry(&d.join("journal"), "postfix/smtpd", 3);
        setup.holds("mta_logs.journal");
    }
}

/// Sendmail's MSP queue runner (`sm-msp-queue`) and its daemon (`sm-acceptingconnections`)
/// log under names of their own: their lines count in files and in the journal.
#[test]
fn every_sendmail_program_counts() {
    let has_journal = crate::common::can_run(
        crate::common::journal_remote().is_some(),
        "systemd-journal-remote is not installed (scripts/setup-test-deps)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let setup = Setup {
        dir: d.to_path_buf(),
        socket: "inet:8894@127.0.0.1".into(),
        postfix_etc: d.join("no-postfix"),
        tracking: String::new(),
        contact: "privacy@example.org",
        extra: String::new(),
        env: Vec::new(),
    };
    let log = d.join("log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::create_dir_all(d.join("journal")).unwrap();
    for ident in ["sm-msp-queue", "sm-acceptingconnections"] {
        std::fs::write(
            log.join("mail.log"),
            line(9, ident, "x9EL4XLo001111: to=root, stat=Sent")
                + &line(1, "sm-mta", "starting daemon"),
        )
        .unwrap();
        let text = setup.fails("mta_logs.files", "mail.log");
        assert!(text.contains("is 9 days old"), "{ident}: {text}");
        if has_journal {
            journal_with_entry(&d.join("journal"), ident, 10);
            setup.fails("mta_logs.journal", ident);
        }
    }
}

/// The ledger, the keys, transit mail, where data goes, who answers: the ledger filled
/// through the real milter.
#[tokio::test]
async fn ledger_keys_transit_and_destinations() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut milter = InProcess::start("audit/ledger.toml").await;
    for mail in [
        Mail::from_ip("203.0.113.7")
            .auth("alice")
            .rcpt("carol@transit.example")
            .queue_id("4Out"),
        Mail::from_ip("198.51.100.9")
            .sender("eve@remote.example")
            .rcpt("bob@example.org")
            .queue_id("4In"),
    ] {
        mail.send(&milter).await;
    }
    milter.stop().await.unwrap();
    std::fs::copy(
        milter.dir.path().join("ledger.sqlite"),
        d.join("ledger.sqlite"),
    )
    .unwrap();
    let keys = d.join("keys");
    let mut setup = Setup {
        dir: d.to_path_buf(),
        socket: "inet:8894@127.0.0.1".into(),
        postfix_etc: d.join("no-postfix"),
        tracking: String::new(),
        contact: "privacy@example.org",
        extra: format!("[privacy]\nkeys = \"{}\"\n", keys.display()),
        env: Vec::new(),
    };

    setup.holds("ledger.expiry");
    // An event whose expiry passed two hours ago (purge_interval is 1h).
    let db = rusqlite::Connection::open(d.join("ledger.sqlite")).unwrap();
    let expired =
        (Utc::now() - Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    db.execute(
        "UPDATE events SET expires_at = ?1 WHERE queue_id = '4In'",
        [&expired],
    )
    .unwrap();
    let text = setup.fails("ledger.expiry", "1 events are held");
    assert!(text.contains("privacy-milter ledger purge"), "{text}");
    let purge = e2e::Milter::command()
        .arg("--config")
        .arg(setup.config())
        .args(["ledger", "purge"])
        .output()
        .unwrap();
    assert!(
        purge.status.success(),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    setup.holds("ledger.expiry");

    // Keys: a retired key kept past the longest retention (90 days), then a loose directory.
    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = |id: &str| {
        let path = keys.join(format!("hmac-{id}.key"));
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    key("20200101T000000Z");
    key("20200201T000000Z");
    key(&Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    setup.fails("keys.retired", "20200101T000000Z");
    let purge = e2e::Milter::command()
        .arg("--config")
        .arg(setup.config())
        .args(["ledger", "purge"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&purge.stdout).contains("destroyed key 20200101T000000Z"));
    setup.holds("keys.retired");
    setup.holds("keys.modes");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    // With the ring in use (the transit tag's MAC, by default) the configuration itself
    // refuses it, naming the fix; with it unused, the audit's finding says so.
    let refused = e2e::Milter::command()
        .arg("--config")
        .arg(setup.config())
        .args(["audit", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("chmod 0700"),
        "{stderr}"
    );
    let in_use = setup.extra.clone();
    setup.extra = format!("{in_use}[rules.transit_tag]\nenabled = false\n");
    setup.fails("keys.modes", "0755");
    setup.extra = in_use;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    setup.holds("keys.modes");

    // Transit: the tracker enabled but never run; then a message held too long.
    setup.holds("transit.held");
    setup.tracking = "enabled = true\nalert_after = \"1h\"".into();
    setup.fails("transit.held", "has never run");
    std::fs::write(d.join("track.state"), "{}").unwrap();
    setup.holds("transit.held");
    let since =
        (Utc::now() - Duration::hours(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    db.execute(
        "UPDATE transit SET since = ?1 WHERE queue_id = '4Out'",
        [&since],
    )
    .unwrap();
    setup.fails("transit.held", "4Out (pending)");
    db.execute(
        "UPDATE transit SET state = 'removed' WHERE queue_id = '4Out'",
        [],
    )
    .unwrap();
    setup.holds("transit.held");

    // Where events go: a PostgreSQL host reached in clear, then over TLS.
    let text = setup.holds("data.destinations");
    assert!(
        text.contains(&format!(
            "ledger: local file {}",
            d.join("ledger.sqlite").display()
        )),
        "{text}"
    );
    let plain = setup.extra.clone();
    let with_pg = |s: &mut Setup, url: &str| {
        s.extra = format!("{plain}[events.postgres]\nurl = \"{url}\"\n");
    };
    // The sinks key is set by the base configuration: the environment adds postgres.
    setup.env = vec![("PRIVACY_MILTER_EVENTS__SINKS", "[\"ledger\", \"postgres\"]")];
    with_pg(&mut setup, "postgresql://pm@db.example.net/privacy");
    setup.fails("data.destinations", "in clear to host db.example.net");
    with_pg(
        &mut setup,
        "postgresql://pm@db.example.net/privacy?sslmode=require",
    );
    setup.holds("data.destinations");
    setup.env.clear();
    setup.extra = plain;

    // Who answers: an empty contact fails.
    setup.holds("policy.contact");
    setup.contact = "";
    setup.fails("policy.contact", "policy.contact empty");
}

/// A private Postfix with and without the milter in its settings, and the socket's mode.
#[test]
fn postfix_and_the_socket() {
    if !e2e::postfix_available("audit::postfix_and_the_socket") {
        return;
    }
    let lab = PostfixLab::start(Socket::Unix, "", "");
    let d = lab.path().join("audit");
    std::fs::create_dir_all(&d).unwrap();
    let setup = Setup {
        dir: d.clone(),
        socket: format!("unix:{}", lab.milter.unix_path.display()),
        postfix_etc: lab.postfix.etc.clone(),
        tracking: String::new(),
        contact: "privacy@example.org",
        extra: String::new(),
        env: Vec::new(),
    };
    let postconf = |args: &[&str]| {
        let out = Command::new("postconf")
            .arg("-c")
            .arg(&lab.postfix.etc)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    setup.holds("mta.milters");
    setup.holds("mta.default_action");
    let text = setup.holds("mta.socket");
    assert!(text.contains("mode 0660, group postfix"), "{text}");

    postconf(&["-e", "non_smtpd_milters ="]);
    let text = setup.fails("mta.milters", "non_smtpd_milters lack it");
    assert!(text.contains("postconf -e"), "{text}");
    postconf(&[
        "-e",
        "smtpd_milters =",
        "non_smtpd_milters = $smtpd_milters",
    ]);
    setup.fails("mta.milters", "smtpd_milters and non_smtpd_milters lack it");
    postconf(&[
        "-e",
        &format!("smtpd_milters = {}", lab.milter.postfix_spec),
        "non_smtpd_milters = $smtpd_milters",
    ]);
    setup.holds("mta.milters");

    postconf(&["-X", "milter_default_action"]);
    setup.fails("mta.default_action", "not stated");
    postconf(&["-e", "milter_default_action = tempfail"]);
    setup.holds("mta.default_action");

    let socket = &lab.milter.unix_path;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    setup.fails("mta.socket", "so may anybody");
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    setup.fails("mta.socket", "postfix may not connect");
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    setup.holds("mta.socket");
}

/// The rsyslog drop-in of docs/examples is a configuration rsyslogd accepts (and a broken one
/// is refused, so the check can fail).
#[test]
fn the_rsyslog_drop_in_is_valid() {
    if !crate::common::can_run(
        Path::new("/usr/sbin/rsyslogd").exists(),
        "rsyslog is not installed (scripts/setup-test-deps)",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let validate = |dropin: &str| {
        let file = tmp.path().join("10-mail-only.conf");
        std::fs::write(&file, dropin).unwrap();
        let main = tmp.path().join("rsyslog.conf");
        std::fs::write(
            &main,
            format!(
                "$IncludeConfig {}\n*.*;auth,authpriv.none -{}/syslog\n",
                file.display(),
                tmp.path().display()
            ),
        )
        .unwrap();
        let out = Command::new("/usr/sbin/rsyslogd")
            .arg("-N1")
            .arg("-f")
            .arg(&main)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, said) = validate(&docs("rsyslog-mail-only.conf"));
    assert!(ok, "{said}");
    let (ok, _) = validate("mail.* -/var/log/mail.log\n& stopp\n");
    assert!(
        !ok,
        "rsyslogd accepted a broken drop-in: the check cannot fail"
    );
}

/// Messages that passed a milter connection on which the MTA did not allow header edits:
/// the audit counts them among the day's events, and holds again once a day passed without
/// one.
#[tokio::test]
async fn connections_that_could_not_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut milter = InProcess::start("audit/ledger.toml").await;
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("carol@remote.example");
    mail.clone().queue_id("4Edited").send(&milter).await;
    let no_edits = indymilter_test::TestConnection::configure()
        .available_actions(indymilter_test::Actions::ADD_HEADER)
        .open_tcp(milter.addr)
        .await
        .unwrap();
    mail.queue_id("4Unedited").send_on(no_edits).await;
    milter.stop().await.unwrap();
    std::fs::copy(
        milter.dir.path().join("ledger.sqlite"),
        d.join("ledger.sqlite"),
    )
    .unwrap();
    let setup = Setup {
        dir: d.to_path_buf(),
        socket: "inet:8894@127.0.0.1".into(),
        postfix_etc: d.join("no-postfix"),
        tracking: String::new(),
        contact: "privacy@example.org",
        extra: String::new(),
        env: Vec::new(),
    };
    let text = setup.fails("milter.edits", "1 of the 2 events");
    assert!(text.contains("mx.test.example"), "{text}");
    assert!(text.contains("SMFIF_CHGHDRS"), "{text}");

    let db = rusqlite::Connection::open(d.join("ledger.sqlite")).unwrap();
    let before =
        (Utc::now() - Duration::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    db.execute(
        "UPDATE events SET time = ?1 WHERE queue_id = '4Unedited'",
        [&before],
    )
    .unwrap();
    let text = setup.holds("milter.edits");
    assert!(text.contains("1 event"), "{text}");
}

/// With `tracking.source = "journald"` and `tracking.path` naming a journal directory (not the
/// system journal), the copy's lag is measured against the journal the tracker reads, not
/// `audit.journal`: an empty copy of a journal with MTA entries is behind until the real
/// tracker has copied them.
#[test]
fn the_copy_lag_is_against_the_tracked_journal() {
    if !crate::common::can_run(
        crate::common::journal_remote().is_some(),
        "systemd-journal-remote is not installed (scripts/setup-test-deps)",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let tracked = d.join("tracked");
    let copy = d.join("copy");
    // audit.journal: a journal directory without an entry.
    std::fs::create_dir_all(d.join("journal")).unwrap();
    std::fs::create_dir_all(&copy).unwrap();
    journal_with_entry(&tracked, "postfix/smtpd", 0);
    let setup = Setup {
        dir: d.to_path_buf(),
        socket: "inet:8896@127.0.0.1".into(),
        postfix_etc: d.join("no-postfix"),
        tracking: format!("source = \"journald\"\npath = \"{}\"", tracked.display()),
        contact: "privacy@example.org",
        extra: format!(
            "[privacy]\nip = \"truncated\"\naddress = \"domain\"\n[mta_logs]\ncopy = \"{}\"\nraw_window = \"1d\"\n",
            copy.display()
        ),
        env: Vec::new(),
    };
    let text = setup.fails("mta_logs.copy_lag", "the copy");
    assert!(
        text.contains(&tracked.display().to_string()) && text.contains("has none"),
        "{text}"
    );
    setup.succeeds(&["track", "--once"]);
    let text = setup.holds("mta_logs.copy_lag");
    assert!(
        text.contains(&format!("the newest MTA line of {}", tracked.display())),
        "{text}"
    );
}

/// With a pseudonymised copy (`[mta_logs] copy`, written by the real `privacy-milter track`):
/// raw lines are held to `mta_logs.raw_window`, not `retention.mta_logs`; the copy's age, its
/// lag behind the log and any raw field in it are found. Each finding goes once its cause is
/// fixed the way docs/log-retention.md says, with the drop-ins of docs/examples.
#[test]
fn the_copy_and_the_raw_window() {
    let has_logrotate = crate::common::can_run(
        Path::new("/usr/sbin/logrotate").exists(),
        "logrotate is not installed (scripts/setup-test-deps)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let setup = Setup::with_copy(
        d,
        8895,
        "[privacy]\nip = \"truncated\"\naddress = \"domain\"\n",
    );
    let (log, copy) = (d.join("log"), d.join("copy"));
    let mail_log = log.join("mail.log");
    std::fs::write(
        d.join("logrotate.conf"),
        format!(
            "weekly\nrotate 4\ncreate\ninclude {}/logrotate.d\n",
            d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("journald.conf"),
        "[Journal]\nMaxRetentionSec=6day\nMaxFileSec=1day\n",
    )
    .unwrap();
    let track = || setup.succeeds(&["track", "--once"]);

    // Raw lines of two days and one day ago: within retention.mta_logs, not the raw window.
    let (client, address) = ("203.0.113.77", "alice.secret@example.org");
    std::fs::write(
        &mail_log,
        line(2, "sm-mta", &format!("x9EL4XLo001111: from=<{address}>, size=100, class=0, nrcpts=1, relay=c.example.org [{client}]"))
            + &line(1, "sm-mta", &format!("x9EL4XLo001111: to=<{address}>, delay=00:00:01, mailer=local, pri=1, relay=local, dsn=2.0.0, stat=Sent")),
    )
    .unwrap();
    let text = setup.fails("mta_logs.files", "mta_logs.raw_window is 1 day");
    assert!(text.contains("2 days"), "{text}");
    setup.fails("mta_logs.logrotate", "no logrotate rule names");
    setup.fails("mta_logs.journald", "longer than mta_logs.raw_window");
    // No copy yet, and the log has lines to copy.
    setup.fails("mta_logs.copy", "no copy written yet");
    setup.fails("mta_logs.copy_lag", "has none");

    // The tracker writes the copy: it holds the lines, pseudonymised.
    track();
    let text = setup.holds("mta_logs.copy");
    assert!(text.contains("2 days old"), "{text}");
    setup.holds("mta_logs.copy_lag");
    let text = setup.holds("mta_logs.copy_raw");
    assert!(text.contains("newest 2 lines"), "{text}");

    // A raw IP in the copy is found; the finding does not repeat it.
    let current = copy.join("mail.log");
    let before = std::fs::read_to_string(&current).unwrap();
    std::fs::write(
        &current,
        before.clone() + &line(1, "sm-mta", &format!("x9EL4XLo001111: relay=[{client}]")),
    )
    .unwrap();
    let text = setup.fails("mta_logs.copy_raw", "holds a raw Ip field");
    assert!(!text.contains(client), "{text}");
    std::fs::write(&current, before).unwrap();
    setup.holds("mta_logs.copy_raw");

    // A raw line the tracker has not copied yet: the copy is behind, until it runs.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&mail_log)
        .unwrap()
        .write_all(line(0, "sm-mta", "x9EL4XLo001111: done").as_bytes())
        .unwrap();
    let text = setup.fails("mta_logs.copy_lag", "behind the newest MTA line");
    assert!(text.contains("privacy-milter-track"), "{text}");
    track();
    setup.holds("mta_logs.copy_lag");

    // A copy file past retention.mta_logs (left while the tracker was away): found, then gone.
    let stale = copy.join("mail.log-20261120.gz");
    gzip(&stale, &line(10, "sm-mta", "x9EL4XLo000000: removed"));
    age(&stale, 10);
    let text = setup.fails("mta_logs.copy", "10 days old");
    assert!(text.contains(&format!("rm {}", stale.display())), "{text}");
    std::fs::remove_file(&stale).unwrap();
    setup.holds("mta_logs.copy");

    // The raw window kept: mail.log as the drop-in's daily rotation leaves it, the drop-ins of
    // docs/examples installed.
    std::fs::write(&mail_log, line(0, "sm-mta", "x9EL4XLo001111: done")).unwrap();
    setup.holds("mta_logs.files");
    install_logrotate_dropin(d, "logrotate-mail-raw-window", &mail_log, has_logrotate);
    let text = setup.holds("mta_logs.logrotate");
    assert!(
        text.contains("daily, rotate 0") && text.contains("1 day"),
        "{text}"
    );
    std::fs::write(
        d.join("journald.conf.d/privacy-milter.conf"),
        docs("journald-raw-window.conf"),
    )
    .unwrap();
    let text = setup.holds("mta_logs.journald");
    assert!(text.contains("up to 1 day"), "{text}");
    let (_, findings) = setup.audit();
    let failing: Vec<&Value> = findings
        .iter()
        .filter(|f| f["ok"] == false && f["check"].as_str().unwrap().starts_with("mta_logs"))
        .collect();
    assert!(failing.is_empty(), "{failing:#?}");

    // Subject access: `ledger query` finds the subject's lines in the copy, across its files
    // (the current one and the compressed rotations); `erase` leaves them and says so.
    let ledger = |args: &[&str]| setup.succeeds(&[&["ledger"], args].concat());
    let found: Value =
        serde_json::from_str(&ledger(&["query", "--ip", client, "--format", "json"])).unwrap();
    let held = found["log_copy"].as_array().unwrap();
    assert_eq!(held.len(), 1, "the from line only: {found}");
    assert_eq!(held[0]["lines"], 1, "{found}");
    assert!(
        held[0]["file"].as_str().unwrap().ends_with(".gz"),
        "{found}"
    );
    let found: Value = serde_json::from_str(&ledger(&[
        "query",
        "--address",
        address,
        "--format",
        "json",
    ]))
    .unwrap();
    let lines: u64 = found["log_copy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["lines"].as_u64().unwrap())
        .sum();
    assert_eq!(lines, 2, "from and to: {found}");
    let table = ledger(&["query", "--address", address]);
    assert!(
        table.contains("2 lines held in the pseudonymised MTA log copy"),
        "{table}"
    );
    let said = ledger(&["erase", "--address", address]);
    assert!(
        said.contains("note: 2 pseudonymised lines of this subject remain"),
        "{said}"
    );
    assert_eq!(
        ledger(&["query", "--ip", "198.51.100.1", "--format", "json"])
            .matches("\"file\"")
            .count(),
        0
    );

    // Nothing of the raw values in the copy's bytes.
    for entry in std::fs::read_dir(&copy).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = Vec::new();
        let file = std::fs::File::open(&path).unwrap();
        if path.extension().is_some_and(|e| e == "gz") {
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(file), &mut bytes)
        } else {
            std::io::Read::read_to_end(&mut &file, &mut bytes)
        }
        .unwrap();
        let bytes = String::from_utf8_lossy(&bytes);
        for value in [client, address, "alice.secret", "c.example.org"] {
            assert!(!bytes.contains(value), "{value} in {}", path.display());
        }
    }
}

/// The raw-window drop-in of docs/examples run by the real logrotate (forced, as the day's run
/// would): while the tracker is not running its prerotate fails and the raw file stays (the
/// audit then says its lines outlive the window); once it runs, the day's file goes and no raw
/// line is left in any file of the log's directory.
#[test]
fn the_raw_window_drop_in_rotates_only_behind_the_tracker() {
    if !crate::common::can_run(
        Path::new("/usr/sbin/logrotate").exists(),
        "logrotate is not installed (scripts/setup-test-deps)",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let setup = Setup::with_copy(d, 8896, "");
    let log = d.join("log");
    let mail_log = log.join("mail.log");
    std::fs::write(d.join("journald.conf"), "[Journal]\n").unwrap();
    let client = "203.0.113.78";
    std::fs::write(
        &mail_log,
        line(
            2,
            "sm-mta",
            &format!("x9EL4XLo001111: from=<a@example.org>, relay=[{client}]"),
        ),
    )
    .unwrap();
    // The drop-in as shipped, but for the test's paths: the unit's state stands for a file,
    // and rsyslog (which is not running here) is not told to reopen.
    let running = d.join("tracker-running");
    let ours = docs("logrotate-mail-raw-window")
        .replace("/var/log/mail.log", &mail_log.display().to_string())
        .replace(
            "systemctl is-active --quiet privacy-milter-track.service",
            &format!("test -e {}", running.display()),
        )
        .replace("/usr/lib/rsyslog/rsyslog-rotate", "true");
    assert!(
        ours.contains("test -e") && ours.contains("rotate 0"),
        "{ours}"
    );
    let conf = d.join("logrotate.conf");
    std::fs::write(&conf, &ours).unwrap();
    let rotate = || {
        Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(d.join("lr.state"))
            .arg(&conf)
            .output()
            .unwrap()
    };
    let raw_left = || -> Vec<PathBuf> {
        std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .contains(client)
            })
            .collect()
    };

    // The tracker down: logrotate refuses (the prerotate failed) and the line stays.
    let out = rotate();
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(raw_left(), std::slice::from_ref(&mail_log));
    setup.fails("mta_logs.files", "mta_logs.raw_window is 1 day");

    // The tracker running: the day's file goes, and with it every raw line.
    std::fs::write(&running, "").unwrap();
    let out = rotate();
    assert!(out.status.success(), "{out:?}");
    assert!(raw_left().is_empty(), "{:?}", raw_left());
    setup.holds("mta_logs.files");
}
