//! What one connection may hold: a connection that sends nothing, or stops in the
//! middle of a frame, is closed after `session_timeout`; a frame longer than any MTA sends is
//! refused before the daemon reads, or makes room for, its payload.

use crate::{common::*, e2e, wire};
use std::time::Duration;
use tokio::{io::AsyncWriteExt, net::UnixStream};

/// `session_timeout = "2s"`.
const TIMEOUT: &str = "session_limits/timeout.toml";
/// How long a test waits for the daemon to close a connection: generous, whatever the load.
const BOUND: Duration = Duration::from_secs(30);

/// A relayed message, answered with its transit tag: the daemon serves other sessions.
async fn served(daemon: &Daemon, queue_id: &str) {
    let (actions, _) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id(queue_id)
        .send_on(daemon.connect().await)
        .await;
    assert_eq!(edits(&actions), [RELAY_TAG], "{queue_id}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let daemon = Daemon::start(TIMEOUT);
    let mut silent = UnixStream::connect(daemon.socket()).await.unwrap();
    served(&daemon, "4Meanwhile").await;
    assert!(
        wire::closed_within(&mut silent, BOUND).await,
        "a silent connection still open after {BOUND:?}:\n{}",
        daemon.log()
    );
    served(&daemon, "4After").await;
    daemon.wait_log("(session_timeout)");
    let log = daemon.log();
    assert_eq!(
        log.matches("closed a connection that sent nothing for 2s (session_timeout)")
            .count(),
        1,
        "{log}"
    );
}

#[tokio::test]
async fn a_connection_that_stops_half_way_through_a_frame_is_closed() {
    let daemon = Daemon::start(TIMEOUT);
    // Half of the negotiation, before any session began.
    let negotiation = wire::optneg();
    let mut before = wire::send_raw(&daemon.socket(), &negotiation[..7]).await;

    // Half of a header, in the middle of a message.
    let session = wire::session("4Stalled", "x@remote.example");
    let header_at = session.iter().position(|f| f[4] == b'L').unwrap();
    let mut bytes: Vec<u8> = session[..header_at].concat();
    let header = &session[header_at];
    bytes.extend_from_slice(&header[..header.len() / 2]);
    let mut during = wire::send_raw(&daemon.socket(), &bytes).await;

    served(&daemon, "4Meanwhile").await;
    for (what, stream) in [("negotiation", &mut before), ("header", &mut during)] {
        assert!(
            wire::closed_within(stream, BOUND).await,
            "a connection stalled in its {what} still open after {BOUND:?}:\n{}",
            daemon.log()
        );
    }
    // The message given up half-way has its event, as aborted (written without waiting).
    let stalled = |e: &serde_json::Value| e["queue_id"] == "4Stalled";
    eventually(|| {
        json_lines(&daemon.events_text())
            .iter()
            .any(stalled)
            .then_some(())
    })
    .await;
    let events = json_lines(&daemon.events_text());
    assert_eq!(event_for(&events, "4Stalled")["outcome"], "aborted");
    event_for(&events, "4Meanwhile");
    daemon.wait_log("closed a connection that stopped half-way through a command for 2s");
}

/// Frames as long as indymilter takes (1 MiB) made the daemon hold that much per connection:
/// 300 such connections took 323 MB. Now such a frame ends its connection at its length.
#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    const CONNECTIONS: usize = 300;
    const LENGTH: u32 = 1024 * 1024 - 1;
    let daemon = Daemon::start("session_limits/defaults.toml");
    let pid = daemon.child.id();
    for n in 0..3 {
        served(&daemon, &format!("4Warm{n}")).await;
    }
    let baseline = wire::rss_kib(pid);

    // Each sends a header frame's length and most of its payload, then waits.
    let mut payload = LENGTH.to_be_bytes().to_vec();
    payload.push(b'L');
    payload.resize(LENGTH as usize - 64 * 1024, b'x');
    let mut writers = Vec::new();
    for _ in 0..CONNECTIONS {
        let socket = daemon.socket();
        let payload = payload.clone();
        writers.push(tokio::spawn(async move {
            let mut stream = UnixStream::connect(socket).await.unwrap();
            let _ = tokio::time::timeout(BOUND, stream.write_all(&payload)).await;
            stream
        }));
    }
    let mut streams = Vec::new();
    for writer in writers {
        streams.push(writer.await.unwrap());
    }
    let grown = wire::rss_kib(pid).saturating_sub(baseline);
    // 300 frames of 1 MiB would be 300 MiB; a few MiB of buffers and bookkeeping is fine.
    assert!(
        grown < 32 * 1024,
        "the daemon grew by {grown} KiB while {CONNECTIONS} connections held a frame of \
         {LENGTH} bytes (baseline {baseline} KiB)"
    );
    for (n, stream) in streams.iter_mut().enumerate() {
        assert!(
            wire::closed_within(stream, BOUND).await,
            "connection {n} with an oversized frame still open"
        );
    }
    served(&daemon, "4After").await;
    assert!(
        daemon.log().contains("frame of 1048575 bytes"),
        "{}",
        daemon.log()
    );
}

/// The largest frames an MTA sends pass: a header as long as Postfix's `header_size_limit`
/// (102400 bytes by default) and a body chunk of 65535 bytes.
#[tokio::test]
async fn the_largest_frames_an_mta_sends_are_taken() {
    let daemon = Daemon::start("session_limits/defaults.toml");
    let mut mail = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .header("X-Long", vec![b'a'; 102_400 - "X-Long: ".len()]);
    mail.body = vec![b'b'; 65_535];
    let (actions, _) = mail.send_on(daemon.connect().await).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    let events = json_lines(&daemon.events_text());
    assert!(event_for(&events, "4TestQ1d")["size"].as_u64().unwrap() > 167_000);
}

/// What Postfix does when the milter closed a connection for its silence: an SMTP client
/// pauses between RCPT and DATA for longer than `session_timeout`. The milter hears nothing
/// meanwhile: Postfix holds back the commands it expects no answer to (the milter asks for
/// answers only at end of message) and sends them with the next one that needs an answer. At
/// end of message Postfix finds the milter gone and applies `milter_default_action`
/// (tempfail: 451 4.7.1): nothing is delivered, nothing recorded as accepted, and the client
/// tries again later.
#[test]
fn postfix_tempfails_a_message_whose_milter_connection_was_closed() {
    use std::io::{BufRead, BufReader, Write};
    if !e2e::postfix_available("session_limits::postfix_tempfails") {
        return;
    }
    let milter_toml = "[domains]\nlocal = [\"test.example\"]\n";
    let mut lab = e2e::PostfixLab::start(e2e::Socket::Unix, milter_toml, "");
    let config = std::fs::read_to_string(&lab.milter.config_path).unwrap();
    std::fs::write(
        &lab.milter.config_path,
        format!("session_timeout = \"2s\"\n{config}"),
    )
    .unwrap();
    lab.milter.stop();
    lab.milter.restart();

    let smtp = std::net::TcpStream::connect(("127.0.0.1", lab.postfix.port)).unwrap();
    smtp.set_read_timeout(Some(BOUND)).unwrap();
    let mut replies = BufReader::new(smtp.try_clone().unwrap());
    let mut writer = smtp;
    // One reply, its lines joined; the last line has a space after the code.
    let mut reply = |command: &str| {
        if !command.is_empty() {
            writer
                .write_all(format!("{command}\r\n").as_bytes())
                .unwrap();
        }
        let mut text = String::new();
        loop {
            let mut line = String::new();
            replies.read_line(&mut line).unwrap();
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return text;
            }
        }
    };
    assert!(reply("").starts_with("220"));
    assert!(reply("EHLO client.test.example").starts_with("250"));
    assert!(reply("MAIL FROM:<eve@remote.example>").starts_with("250"));
    assert!(reply("RCPT TO:<bob@test.example>").starts_with("250"));
    std::thread::sleep(Duration::from_secs(4));
    let mut answer = reply("DATA");
    if answer.starts_with("354") {
        answer = reply("Subject: slow\r\n\r\nHello.\r\n.");
    }
    assert!(
        answer.starts_with("451 4.7.1"),
        "{answer}\n{}",
        lab.context()
    );
    let _ = reply("QUIT");

    let log = lab.milter.log();
    assert!(
        log.contains("closed a connection that sent nothing for 2s (session_timeout)"),
        "{log}"
    );
    let events = lab.milter.events();
    assert!(
        events.iter().all(|e| e["outcome"] != "accepted"),
        "{events:#?}"
    );
    assert!(lab.sink.delivered().is_empty());
}

/// `max_connections` and `session_timeout` are checked at load, from the file or the
/// environment, and an error names the key.
#[test]
fn limits_out_of_range_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("privacy-milter.toml");
    std::fs::write(
        &config,
        case_config("session_limits/defaults.toml", dir.path()),
    )
    .unwrap();
    let check = |var: &str, value: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"))
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .env(var, value)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (var, value, says) in [
        (
            "PRIVACY_MILTER_MAX_CONNECTIONS",
            "0",
            "key max_connections: must be from 1 to",
        ),
        (
            "PRIVACY_MILTER_MAX_CONNECTIONS",
            "2000000",
            "key max_connections: must be from 1 to",
        ),
        (
            "PRIVACY_MILTER_SESSION_TIMEOUT",
            "0s",
            "key session_timeout: must be longer than 0s",
        ),
    ] {
        let (ok, err) = check(var, value);
        assert!(!ok && err.contains(says), "{var}={value}: {err}");
    }
    assert!(check("PRIVACY_MILTER_SESSION_TIMEOUT", "2h").0);
}
