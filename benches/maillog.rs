//! Mail log benchmark: how fast lines are cut (`maillog::SyslogLine::split`), placed in time
//! (`Stamp::time`, classic stamps in the local zone) and read (`parse::parse`, the tracker's
//! path), over a mail.log of Postfix's lines and one of Sendmail's, as the MTAs write them for
//! one message after another (connect, client, cleanup, qmgr, delivery, removal, disconnect).
//!
//! Whatever reads the whole log (a copy of it, the tracker catching up) needs the cut to be
//! fast: it is printed in MB/s of log text, median of the rounds.
//!
//! Run: `cargo bench --bench maillog` (`-- --rounds N`). Under `cargo test` (no `--bench`) it
//! only checks that every step runs and reads what it should, on a few lines.

mod common;
use common::{median, Args};

use privacy_milter::internals::{
    maillog::SyslogLine,
    parse::{self, Mta, Parsed},
};
use std::{hint::black_box, time::Instant};

/// `messages` messages' lines as Postfix logs them, each with its own queue id.
fn postfix_log(messages: usize) -> String {
    let mut log = String::new();
    for n in 0..messages {
        let qid = format!("{:011X}", 0x3B3AE9AC053u64 + n as u64);
        let (h, m, s) = (n / 3600 % 24, n / 60 % 60, n % 60);
        let at = format!("Nov 29 {h:02}:{m:02}:{s:02}");
        for line in [
            "postfix/smtpd[9601]: connect from client.example.org[192.0.2.9]".to_string(),
            format!("postfix/smtpd[9601]: {qid}: client=client.example.org[192.0.2.9], sasl_method=PLAIN, sasl_username=alice"),
            format!("postfix/cleanup[9626]: {qid}: message-id=<20261129.{n}@client.example.org>"),
            format!("postfix/qmgr[9595]: {qid}: from=<alice@example.org>, size=2549, nrcpt=1 (queue active)"),
            "postfix/smtpd[9601]: disconnect from client.example.org[192.0.2.9] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6".to_string(),
            format!("postfix/smtp[9627]: {qid}: to=<carol{n}@remote.example>, relay=mx.remote.example[198.51.100.25]:25, delay=0.41, delays=0.06/0.01/0.2/0.14, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)"),
            format!("postfix/qmgr[9595]: {qid}: removed"),
        ] {
            log.push_str(&format!("{at} mx {line}\n"));
        }
    }
    log
}

/// The same for Sendmail, under Debian's daemon name.
fn sendmail_log(messages: usize) -> String {
    let mut log = String::new();
    for n in 0..messages {
        let qid = format!("6B7GXxO{:07}", n);
        let (h, m, s) = (n / 3600 % 24, n / 60 % 60, n % 60);
        let at = format!("Nov 29 {h:02}:{m:02}:{s:02}");
        for line in [
            format!("sm-mta[11251]: {qid}: from=<alice@example.org>, size=2549, class=0, nrcpts=1, msgid=<20261129.{n}@client.example.org>, proto=ESMTPA, daemon=MTA, relay=client.example.org [192.0.2.9]"),
            format!("sm-mta[11251]: {qid}: Milter (privacy) add: header: X-Transit: outbound"),
            format!("sm-mta[11258]: {qid}: to=<carol{n}@remote.example>, ctladdr=<alice@example.org> (1000/1000), delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=32549, relay=mx.remote.example. [198.51.100.25], dsn=2.0.0, stat=Sent (6B7GXxO0099999 Message accepted for delivery)"),
        ] {
            log.push_str(&format!("{at} mx {line}\n"));
        }
    }
    log
}

#[derive(Clone, Copy)]
enum Step {
    Split,
    Time,
    Parse,
}

impl Step {
    const ALL: [Step; 3] = [Step::Split, Step::Time, Step::Parse];

    fn name(self) -> &'static str {
        match self {
            Step::Split => "split",
            Step::Time => "split+time",
            Step::Parse => "split+time+parse",
        }
    }
}

/// Runs `step` over every line; returns the seconds taken and how many records came out.
fn run(lines: &[&str], mta: Mta, step: Step) -> (f64, usize) {
    let now = chrono::Local::now();
    let mut found = 0;
    let start = Instant::now();
    for line in lines {
        let Some(l) = SyslogLine::split(black_box(line)) else {
            continue;
        };
        match step {
            Step::Split => found += black_box(l.message.len()).min(1),
            Step::Time => found += usize::from(black_box(l.stamp.time(&now)).is_some()),
            Step::Parse => {
                if l.stamp.time(&now).is_none() {
                    continue;
                }
                if let Parsed::Records(r) = black_box(parse::parse(mta, l.ident, l.message)) {
                    found += r.len();
                }
            }
        }
    }
    (start.elapsed().as_secs_f64(), found)
}

fn main() {
    let args = Args::get();
    let smoke = args.smoke();
    let rounds = args.rounds(if smoke { 1 } else { 7 });
    let messages = if smoke { 20 } else { 100_000 };
    println!("maillog: {messages} messages per log, MB/s of log text, median of {rounds} rounds");
    println!("{:<9}  {:>9}  {:>18}  {:>8}", "log", "MB", "step", "MB/s");
    for (name, mta, text, per_message) in [
        // Postfix: entering the queue (smtpd's client=, cleanup's message-id=), a delivery, a
        // removal.
        ("postfix", Mta::Postfix, postfix_log(messages), 4),
        ("sendmail", Mta::Sendmail, sendmail_log(messages), 1),
    ] {
        let lines: Vec<&str> = text.lines().collect();
        let mb = text.len() as f64 / 1e6;
        for step in Step::ALL {
            let mut speeds = Vec::new();
            for _ in 0..rounds {
                let (seconds, found) = run(&lines, mta, step);
                let expected = match step {
                    Step::Split | Step::Time => lines.len(),
                    // Per message, as `per_message` says.
                    Step::Parse => messages * per_message,
                };
                assert_eq!(found, expected, "{name} {}", step.name());
                speeds.push(mb / seconds);
            }
            println!(
                "{name:<9}  {mb:>9.1}  {:>18}  {:>8.0}",
                step.name(),
                median(speeds)
            );
        }
    }
}
