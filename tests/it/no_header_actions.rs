//! What the MTA offers at negotiation, and what the milter does with less than everything:
//! without the header actions negotiation still succeeds, mail passes untouched, and the
//! events say that no header was edited; without the macro feature (`SMFIF_SETSYMLIST`) no
//! macro list is sent, as older or strict MTAs expect. The raw-protocol tests read the
//! negotiation reply's bytes as an MTA would.

use crate::{common::*, wire};
use indymilter_test::{Actions, Status, TestConnection};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

const SMFIF_ADDHDRS: u32 = 0x01;
const SMFIF_CHGHDRS: u32 = 0x10;
const SMFIF_SETSYMLIST: u32 = 0x100;

/// The no-reply options of the stages a test client sends (SMFIP_NR_*).
const NR_CONN: u32 = 0x1000;
const NR_MAIL: u32 = 0x4000;
const NR_RCPT: u32 = 0x8000;
const NR_DATA: u32 = 0x1_0000;
const NR_HDR: u32 = 0x80;
const NR_EOH: u32 = 0x4_0000;
const NR_BODY: u32 = 0x8_0000;

#[tokio::test]
async fn passes_untouched() {
    let milter = Milter::start("no_header_actions/privacy-milter.toml").await;
    let mut conn = TestConnection::configure()
        .available_actions(Actions::ADD_HEADER)
        .open_tcp(milter.addr)
        .await
        .unwrap();
    assert!(!conn.negotiated_actions().contains(Actions::CHANGE_HEADER));
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example");
    mail.connect(&mut conn).await;
    let (actions, status) = mail.transaction(&mut conn).await;
    conn.close().await.unwrap();
    assert_eq!(status, Status::Continue);
    assert!(actions.actions.is_empty());
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["direction"], "outbound");
    // What was done: nothing; what the rules wanted, apart, and why it was not done.
    assert!(actions_of(e).is_empty(), "{e}");
    assert_eq!(e["edits"], "unavailable", "{e}");
    assert_eq!(
        e["skipped_actions"],
        serde_json::json!(["originating_ip.added", "transit_tag.added"]),
        "{e}"
    );
}

#[tokio::test]
async fn requests_its_macros_and_skips_helo() {
    let milter = Milter::start("no_header_actions/privacy-milter.toml").await;
    let conn = milter.connect().await;
    let macros = conn.requested_macros();
    let get = |s| {
        macros
            .get(&s)
            .map(|m| m.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    use indymilter_test::MacroStage::*;
    assert!(get(Connect).contains("{client_addr}") && get(Connect).contains("j"));
    assert!(get(Mail).contains("{auth_type}") && get(Mail).contains("{auth_authen}"));
    assert!(get(Rcpt).contains("{rcpt_mailer}"));
    assert_eq!(get(Eom), "i");
    assert!(conn
        .negotiated_opts()
        .contains(indymilter_test::ProtoOpts::NO_HELO));
    assert!(conn
        .negotiated_actions()
        .contains(Actions::ADD_HEADER | Actions::CHANGE_HEADER));
}

/// What an MTA offers in its SMFIC_OPTNEG.
#[derive(Clone, Copy, Debug)]
struct Offer {
    version: u32,
    actions: u32,
    opts: u32,
}

/// The milter's SMFIC_OPTNEG reply, parsed.
#[derive(Debug)]
struct Reply {
    version: u32,
    actions: u32,
    opts: u32,
    /// The macro lists after the three words: (stage, names).
    macro_lists: Vec<(u32, String)>,
}

async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> (u8, Vec<u8>) {
    let mut len = [0; 4];
    stream.read_exact(&mut len).await.expect("a frame's length");
    let len = u32::from_be_bytes(len) as usize;
    assert!(len >= 1, "an empty frame");
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.expect("a whole frame");
    (body[0], body[1..].to_vec())
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Sends `offer` and reads the reply, asserting the frame is well formed.
async fn negotiate(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), offer: Offer) -> Reply {
    let mut payload = Vec::new();
    for w in [offer.version, offer.actions, offer.opts] {
        payload.extend_from_slice(&w.to_be_bytes());
    }
    stream
        .write_all(&wire::frame(b'O', &payload))
        .await
        .unwrap();
    let (command, payload) = read_frame(stream).await;
    assert_eq!(command, b'O', "{offer:?}: not an option negotiation reply");
    assert!(payload.len() >= 12, "{offer:?}: short reply {payload:?}");
    let mut macro_lists = Vec::new();
    let mut rest = &payload[12..];
    while !rest.is_empty() {
        assert!(rest.len() > 4, "{offer:?}: a truncated macro list {rest:?}");
        let stage = word(rest, 0);
        let end = rest[4..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or_else(|| panic!("{offer:?}: a macro list without its NUL"));
        let names = String::from_utf8(rest[4..4 + end].to_vec()).unwrap();
        macro_lists.push((stage, names));
        rest = &rest[4 + end + 1..];
    }
    Reply {
        version: word(&payload, 0),
        actions: word(&payload, 4),
        opts: word(&payload, 8),
        macro_lists,
    }
}

/// One message over raw frames, as an MTA whose own macro settings send what the milter
/// reads (it could not ask for them): alice authenticated at 203.0.113.7, mail for a remote
/// recipient. Returns the frames of the end-of-message answer, the final reply last.
async fn message(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    reply: &Reply,
    queue_id: &str,
) -> Vec<(u8, Vec<u8>)> {
    let mut frames = vec![
        (wire::macros(b'C', &[("j", "mx.test.example")]), None),
        (
            wire::connect("client.test.example", "203.0.113.7"),
            Some(NR_CONN),
        ),
        (
            wire::macros(
                b'M',
                &[
                    ("i", queue_id),
                    ("{auth_type}", "PLAIN"),
                    ("{auth_authen}", "alice"),
                ],
            ),
            None,
        ),
        (wire::mail("<alice@example.org>"), Some(NR_MAIL)),
        (
            wire::macros(b'R', &[("{rcpt_addr}", "bob@remote.example")]),
            None,
        ),
        (wire::rcpt("<bob@remote.example>"), Some(NR_RCPT)),
    ];
    // DATA is a command from protocol version 4 on.
    if reply.version >= 4 {
        frames.push((wire::data(), Some(NR_DATA)));
    }
    frames.extend([
        (
            wire::header(b"From", b"Alice <alice@example.org>"),
            Some(NR_HDR),
        ),
        (wire::eoh(), Some(NR_EOH)),
        (wire::body(b"Hello.\r\n"), Some(NR_BODY)),
    ]);
    // Macro frames get no answer; a command does unless its stage was negotiated no-reply.
    for (bytes, noreply) in frames {
        stream.write_all(&bytes).await.unwrap();
        if noreply.is_some_and(|bit| reply.opts & bit == 0) {
            let (command, _) = read_frame(stream).await;
            assert_eq!(command, b'c', "continue after {:?}", bytes[4] as char);
        }
    }
    stream
        .write_all(&wire::macros(b'E', &[("i", queue_id)]))
        .await
        .unwrap();
    stream.write_all(&wire::eom()).await.unwrap();
    let mut answer = Vec::new();
    loop {
        let frame = read_frame(stream).await;
        let last = !matches!(frame.0, b'h' | b'i' | b'm' | b'p');
        answer.push(frame);
        if last {
            return answer;
        }
    }
}

/// MTAs of protocol versions 2 to 4 know no macro feature, and one of version 6 may not offer
/// it: the reply then holds no macro list, only the three words, and claims nothing the MTA
/// did not offer. Each still gets its message through, edited when it allows header edits,
/// with an event that says what was done.
#[tokio::test]
async fn macro_lists_only_when_offered() {
    let milter = Milter::start("no_header_actions/privacy-milter.toml").await;
    let v2_actions = 0x3f; // add/change header, body, recipients, quarantine
    let cases = [
        (
            "v2",
            Offer {
                version: 2,
                actions: v2_actions,
                opts: 0x7f,
            },
        ),
        (
            "v4",
            Offer {
                version: 4,
                actions: v2_actions,
                opts: 0x3ff,
            },
        ),
        (
            "v6-no-symlist",
            Offer {
                version: 6,
                actions: 0xff,
                opts: 0x1f_ffff,
            },
        ),
        (
            "v6-no-addheader",
            Offer {
                version: 6,
                actions: 0x1ff & !SMFIF_ADDHDRS,
                opts: 0x1f_ffff,
            },
        ),
        (
            "v6-all",
            Offer {
                version: 6,
                actions: 0x1ff,
                opts: 0x1f_ffff,
            },
        ),
    ];
    for (n, (name, offer)) in cases.into_iter().enumerate() {
        let mut stream = TcpStream::connect(milter.addr).await.unwrap();
        let reply = negotiate(&mut stream, offer).await;
        assert_eq!(reply.version, offer.version.min(6), "{name}: {reply:?}");
        assert_eq!(
            reply.actions & !offer.actions,
            0,
            "{name}: claims more than offered: {reply:?}"
        );
        assert_eq!(
            reply.opts & !offer.opts,
            0,
            "{name}: asks more than offered: {reply:?}"
        );
        let symlist = offer.actions & SMFIF_SETSYMLIST != 0;
        assert_eq!(
            reply.actions & SMFIF_SETSYMLIST != 0,
            symlist,
            "{name}: {reply:?}"
        );
        if symlist {
            let stages: Vec<u32> = reply.macro_lists.iter().map(|(s, _)| *s).collect();
            // SMFIM_CONNECT, ENVFROM, ENVRCPT, DATA, EOM, EOH.
            for stage in [0, 2, 3, 4, 5, 6] {
                assert!(
                    stages.contains(&stage),
                    "{name}: no list for stage {stage}: {reply:?}"
                );
            }
        } else {
            assert!(
                reply.macro_lists.is_empty(),
                "{name}: macro lists not asked for: {reply:?}"
            );
        }

        let queue_id = format!("4Raw{n}");
        let answer = message(&mut stream, &reply, &queue_id).await;
        drop(stream);
        let (last, _) = answer.last().unwrap();
        assert_eq!(*last, b'c', "{name}: {answer:?}");
        // Added headers ('h') and inserted ones ('i': our transit tag, at the top, after
        // its four-byte index), the tag's key id and MAC left out.
        let added: Vec<String> = answer
            .iter()
            .filter_map(|(c, p)| match c {
                b'h' => Some(&p[..]),
                b'i' => p.get(4..),
                _ => None,
            })
            .map(|p| {
                let text = String::from_utf8_lossy(p).replace('\0', " ");
                let text = text.trim();
                text.split_once("; by=")
                    .map_or(text, |(head, _)| head)
                    .to_string()
            })
            .collect();
        let events = milter.events();
        let e: &Value = event_for(&events, &queue_id);
        assert_eq!(e["outcome"], "accepted", "{name}: {e}");
        assert_eq!(e["direction"], "outbound", "{name}: {e}");
        let can_edit =
            offer.actions & (SMFIF_ADDHDRS | SMFIF_CHGHDRS) == SMFIF_ADDHDRS | SMFIF_CHGHDRS;
        if can_edit {
            assert_eq!(
                added,
                ["X-Originating-IP [203.0.113.7]", "X-Transit outbound"],
                "{name}: {answer:?}"
            );
            assert_eq!(
                actions_of(e),
                ["originating_ip.added", "transit_tag.added"],
                "{name}: {e}"
            );
            assert!(
                e.get("edits").is_none() && e.get("skipped_actions").is_none(),
                "{name}: {e}"
            );
        } else {
            assert_eq!(
                answer.len(),
                1,
                "{name}: edits the MTA did not allow: {answer:?}"
            );
            assert!(actions_of(e).is_empty(), "{name}: {e}");
            assert_eq!(e["edits"], "unavailable", "{name}: {e}");
            assert_eq!(
                e["skipped_actions"],
                serde_json::json!(["originating_ip.added", "transit_tag.added"]),
                "{name}: {e}"
            );
        }
    }
}

/// The daemon says once per milter connection that the MTA did not allow header edits (not
/// once per message), naming no client, sender or recipient.
#[tokio::test]
async fn warns_once_per_connection() {
    let daemon = Daemon::start("no_header_actions/daemon.toml");
    for round in 0..2 {
        let mut conn = TestConnection::configure()
            .available_actions(Actions::ADD_HEADER)
            .open_unix(daemon.socket())
            .await
            .unwrap();
        let mail = Mail::from_ip("203.0.113.7")
            .auth("alice")
            .rcpt("bob@remote.example");
        mail.connect(&mut conn).await;
        for n in 0..2 {
            let (_, status) = mail
                .clone()
                .queue_id(&format!("4Warn{round}{n}"))
                .transaction(&mut conn)
                .await;
            assert_eq!(status, Status::Continue);
        }
        conn.close().await.unwrap();
    }
    // A connection that may edit says nothing of the kind.
    Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .queue_id("4Edits")
        .send_on(daemon.connect().await)
        .await;
    let events = json_lines(&daemon.events_text());
    assert_eq!(events.len(), 5, "{events:#?}");
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("header"))
        .collect();
    assert_eq!(lines.len(), 2, "one warning per connection:\n{log}");
    for line in lines {
        for personal in ["203.0.113", "alice", "bob", "remote.example"] {
            assert!(!line.contains(personal), "{personal} in {line}");
        }
    }
}

/// Header edits the MTA allowed but that could not be sent (here the MTA stops reading before
/// end of message, so the milter's first edit fails at once): the message is tempfailed, and
/// its event says so and claims no edit.
#[tokio::test]
async fn failed_edits_are_not_recorded_as_made() {
    use std::{io::Write, os::unix::net::UnixStream};
    let daemon = Daemon::start("no_header_actions/daemon.toml");
    let mut stream = UnixStream::connect(daemon.socket()).unwrap();
    // Every action and option offered: only negotiation and end of message are answered.
    let mut frames = wire::session("4Broken", "bob@remote.example");
    frames[2] = wire::connect("client.test.example", "203.0.113.7");
    frames[3] = wire::macros(
        b'M',
        &[("{auth_type}", "PLAIN"), ("{auth_authen}", "alice")],
    );
    frames[4] = wire::mail("<alice@example.org>");
    let eom = frames.split_off(frames.len() - 2);
    stream.write_all(&frames[0]).unwrap();
    let mut len = [0; 4];
    std::io::Read::read_exact(&mut stream, &mut len).unwrap();
    let mut reply = vec![0; u32::from_be_bytes(len) as usize];
    std::io::Read::read_exact(&mut stream, &mut reply).unwrap();
    assert_eq!(reply[0], b'O');
    for frame in &frames[1..] {
        stream.write_all(frame).unwrap();
    }
    // A unix socket whose reader has shut down refuses the writer at once (EPIPE).
    stream.shutdown(std::net::Shutdown::Read).unwrap();
    for frame in &eom {
        stream.write_all(frame).unwrap();
    }
    daemon.wait_log("cannot edit the header");
    let events = eventually(|| {
        let events = json_lines(&daemon.events_text());
        (!events.is_empty()).then_some(events)
    })
    .await
    .unwrap_or_else(|| panic!("no event:\n{}", daemon.log()));
    let e = event_for(&events, "4Broken");
    assert_eq!(e["outcome"], "tempfailed", "{e}");
    assert!(actions_of(e).is_empty(), "{e}");
    assert!(e.get("edits").is_none(), "{e}");
    assert_eq!(
        e["skipped_actions"],
        serde_json::json!(["originating_ip.added", "transit_tag.added"]),
        "{e}"
    );
}
