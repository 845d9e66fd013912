//! `privacy-milter track` on a log file holding Sendmail's lines as rsyslog writes them, for a
//! ledger filled through the real milter: every program name Sendmail logs under is read, and
//! a line that reads like an outcome but cannot be read is counted, not dropped.
use crate::{
    common::{Mail, Milter},
    e2e,
};
use chrono::Local;
use serde_json::Value;
use std::collections::HashMap;

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
