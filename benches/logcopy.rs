//! Log copy benchmark: how much mail log the pseudonymised copy (`logcopy::Rewriter`) writes
//! per CPU-second, against copying the same lines unchanged and cutting them
//! (`SyslogLine::split`), measured in the same run (these machines are shared).
//!
//! The log is a day of a small mail service as its MTAs write it: inbound mail from thousands
//! of clients (many without a name, some rejected), our users' outbound mail after SASL, their
//! IMAP and POP logins in Dovecot's lines, and a Sendmail host's lines beside them. Clients,
//! senders and recipients are drawn from pools, so the pseudonyms' cache sees a log's mix of
//! repeats and first sightings.
//!
//! The target is at least 50 MB of log per CPU-second: a Postfix at full throughput on this
//! machine writes well under 1 MB/s of log.
//!
//! Run: `cargo bench --bench logcopy` (`-- --rounds N`). Under `cargo test` (no `--bench`) it
//! only checks, on a few lines, that every step runs and that the copy holds no raw field.

mod common;
use common::{median, Args};

use privacy_milter::internals::{
    logcopy::{AddressPrivacy, IpPrivacy, Key, Privacy, Pseudonymiser, Rewriter},
    maillog::SyslogLine,
};
use std::{hint::black_box, sync::Arc};

/// A small deterministic generator (xorshift), so every run reads the same log.
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

fn client_ip(n: usize) -> String {
    if n % 5 == 0 {
        format!("2001:db8:{:x}::{:x}", n % 4096, n)
    } else {
        format!(
            "{}.{}.{}.{}",
            11 + n % 200,
            n / 7 % 256,
            n / 3 % 256,
            1 + n % 254
        )
    }
}

fn client_name(n: usize) -> String {
    match n % 3 {
        0 => "unknown".into(),
        1 => format!(
            "{}-{}-{}-{}.dyn.isp{}.example",
            11 + n % 200,
            n / 7 % 256,
            n / 3 % 256,
            1 + n % 254,
            n % 9
        ),
        _ => format!("mail{}.sender{}.example", n % 4, n % 700),
    }
}

/// `messages` messages' worth of lines, in the order a busy host interleaves them loosely.
fn day_log(messages: usize) -> String {
    let mut d = Draw(0x9E37_79B9_7F4A_7C15);
    let mut log = String::new();
    for n in 0..messages {
        let at = format!(
            "Dec  7 {:02}:{:02}:{:02}",
            n / 3600 % 24,
            n / 60 % 60,
            n % 60
        );
        let qid = format!("{:011X}", 0x03B3_AE9A_C053_u64 + n as u64);
        let c = d.next(5000);
        let (ip, name) = (client_ip(c), client_name(c));
        let user = format!("user{}@example.org", d.next(500));
        let remote = format!("r{}@remote{}.example", d.next(3000), d.next(40));
        let pid = 9000 + n % 97;
        let mut line = |text: String| log.push_str(&format!("{at} mx {text}\n"));
        match n % 10 {
            // Inbound, accepted.
            0..=4 => {
                line(format!("postfix/smtpd[{pid}]: connect from {name}[{ip}]"));
                line(format!("postfix/smtpd[{pid}]: {qid}: client={name}[{ip}]"));
                line(format!(
                    "postfix/cleanup[{}]: {qid}: message-id=<{n}.{c}@sender.example>",
                    pid + 1
                ));
                line(format!(
                    "postfix/qmgr[9595]: {qid}: from=<{remote}>, size={}, nrcpt=1 (queue active)",
                    2000 + n % 90000
                ));
                line(format!("postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"));
                line(format!("postfix/lmtp[{}]: {qid}: to=<{user}>, relay=mx.example.org[private/dovecot-lmtp], delay=0.12, delays=0.05/0.01/0.02/0.04, dsn=2.0.0, status=sent (250 2.0.0 <{user}> Saved)", pid + 2));
                line(format!("dovecot: lmtp({user})<{}><Xk9a{n:08}>: msgid=<{n}.{c}@sender.example>: saved mail to INBOX", pid + 3));
                line(format!("postfix/qmgr[9595]: {qid}: removed"));
            }
            // Rejected before the queue.
            5 | 6 => {
                line(format!("postfix/smtpd[{pid}]: connect from {name}[{ip}]"));
                line(format!("postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 554 5.7.1 <{remote}>: Relay access denied; from=<spam{c}@spam.example> to=<{remote}> proto=ESMTP helo=<{name}>"));
                line(format!("postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4"));
            }
            // Our user's outbound mail.
            7 | 8 => {
                line(format!(
                    "postfix/submission/smtpd[{pid}]: connect from {name}[{ip}]"
                ));
                line(format!("postfix/submission/smtpd[{pid}]: {qid}: client={name}[{ip}], sasl_method=PLAIN, sasl_username={user}"));
                line(format!(
                    "postfix/qmgr[9595]: {qid}: from=<{user}>, size={}, nrcpt=1 (queue active)",
                    2000 + n % 90000
                ));
                line(format!("postfix/smtp[{}]: {qid}: to=<{remote}>, relay=mx.remote{}.example[198.51.{}.{}]:25, delay=0.41, delays=0.06/0.01/0.2/0.14, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4T02Hr4S5hz9vf6k)", pid + 4, c % 40, c % 256, 1 + c % 254));
                line(format!("postfix/qmgr[9595]: {qid}: removed"));
            }
            // IMAP and POP logins; a Sendmail host's message.
            _ => {
                line(format!("dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={pid}, TLS, session=<nJi6{n:012}>"));
                line(format!("dovecot: imap({user})<{pid}><nJi6{n:012}>: Logged out in=120 out=5430 deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0"));
                line(format!("dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<{remote}>, method=PLAIN, rip={ip}, lip=192.0.2.1, session=<pQ7{n:012}>"));
                line(format!("sm-mta[{pid}]: 6B7GXxO{n:07}: from=<{remote}>, size=2549, class=0, nrcpts=1, msgid=<{n}@sender.example>, proto=ESMTP, daemon=MTA, relay={name} [{ip}]"));
                line(format!("sm-mta[{}]: 6B7GXxO{n:07}: to=<{user}>, delay=00:00:01, xdelay=00:00:01, mailer=local, pri=32549, dsn=2.0.0, stat=Sent", pid + 1));
            }
        }
    }
    log
}

fn rewriter(ip: IpPrivacy, address: AddressPrivacy) -> Rewriter {
    let key = Key {
        id: "20261207T000000Z".into(),
        created: chrono::Utc::now(),
        bytes: [42; 32],
    };
    let privacy = Privacy {
        ip,
        address,
        ..Privacy::default()
    };
    Rewriter::new(Pseudonymiser::new(privacy, Some(Arc::new(key))))
}

#[derive(Clone, Copy)]
enum Step {
    /// The lines copied unchanged into the output: the floor of any copy.
    Copy,
    Split,
    Hmac,
    Truncated,
}

impl Step {
    const ALL: [Step; 4] = [Step::Copy, Step::Split, Step::Hmac, Step::Truncated];

    fn name(self) -> &'static str {
        match self {
            Step::Copy => "copy unchanged",
            Step::Split => "split",
            Step::Hmac => "rewrite hmac",
            Step::Truncated => "rewrite truncated",
        }
    }
}

/// CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(usage.user_time()) + t(usage.system_time())
}

/// Runs `step` over every line; returns the CPU seconds taken and the bytes written.
fn run(lines: &[&str], step: Step) -> (f64, usize) {
    // A fresh rewriter per round: its cache starts cold, as after a restart.
    let mut r = match step {
        Step::Truncated => rewriter(IpPrivacy::Truncated, AddressPrivacy::Domain),
        _ => rewriter(IpPrivacy::Hmac, AddressPrivacy::Hmac),
    };
    let mut out = String::with_capacity(1 << 20);
    let mut written = 0;
    let start = cpu_seconds();
    for line in lines {
        let line = black_box(*line);
        match step {
            Step::Copy => out.push_str(line),
            Step::Split => {
                if let Some(l) = SyslogLine::split(line) {
                    out.push_str(l.message);
                }
            }
            Step::Hmac | Step::Truncated => {
                r.line_into(line, &mut out);
            }
        }
        out.push('\n');
        if out.len() > 1 << 20 {
            written += black_box(&out).len();
            out.clear();
        }
    }
    (cpu_seconds() - start, written + out.len())
}

fn main() {
    let args = Args::get();
    let smoke = args.smoke();
    let rounds = args.rounds(if smoke { 1 } else { 7 });
    let messages = if smoke { 40 } else { 200_000 };
    let text = day_log(messages);
    let lines: Vec<&str> = text.lines().collect();
    let mb = text.len() as f64 / 1e6;
    if smoke {
        let mut r = rewriter(IpPrivacy::Hmac, AddressPrivacy::Hmac);
        for line in &lines {
            let copy = r.line(line);
            assert_eq!(r.raw_personal_data(&copy), None, "{copy}");
            // Our users' addresses are `userN@example.org`, the remote ones `rN@remoteM...`.
            assert!(
                !(0..10).any(|d| copy.contains(&format!("user{d}"))),
                "{copy}"
            );
            let words = copy.split(|c: char| !(c.is_ascii_alphanumeric() || c == '@'));
            assert!(
                !words
                    .into_iter()
                    .any(|w| w.starts_with('r') && w.contains("@remote")),
                "{copy}"
            );
        }
    }
    println!(
        "logcopy: {messages} messages, {} lines, {mb:.1} MB; MB per CPU-second, median of {rounds} rounds",
        lines.len()
    );
    println!("{:<18}  {:>10}  {:>12}", "step", "MB/CPU-s", "vs copy");
    let mut floor = None;
    for step in Step::ALL {
        let mut speeds = Vec::new();
        for _ in 0..rounds {
            let (seconds, written) = run(&lines, step);
            assert!(written > 0);
            speeds.push(mb / seconds.max(1e-6));
        }
        let speed = median(speeds);
        let floor = *floor.get_or_insert(speed);
        println!(
            "{:<18}  {speed:>10.0}  {:>12.3}",
            step.name(),
            speed / floor
        );
    }
}
