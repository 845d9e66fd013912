//! The milter protocol spoken by hand, for tests that must send what indymilter-test would
//! never send: half a frame, a wrong length, garbage, or nothing at all.
#![allow(dead_code)]

use std::{path::Path, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

/// One frame: the length of what follows (command byte and payload), the command, the payload.
pub fn frame(command: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    out.push(command);
    out.extend_from_slice(payload);
    out
}

/// NUL-terminated strings, one after another.
pub fn strings<S: AsRef<[u8]>>(parts: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part.as_ref());
        out.push(0);
    }
    out
}

/// Option negotiation as an MTA that offers every action and option (protocol version 6).
pub fn optneg() -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&6u32.to_be_bytes());
    payload.extend_from_slice(&0x1ffu32.to_be_bytes());
    payload.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
    frame(b'O', &payload)
}

/// Macros for a stage (`C`onnect, `M`ail, `R`cpt, da`T`a, `N` end of header, `E`nd of message).
pub fn macros(stage: u8, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut payload = vec![stage];
    for (name, value) in pairs {
        payload.extend(strings(&[name, value]));
    }
    frame(b'D', &payload)
}

/// The connect command for a client at an IPv4 address.
pub fn connect(hostname: &str, ip: &str) -> Vec<u8> {
    let mut payload = strings(&[hostname]);
    payload.push(b'4');
    payload.extend_from_slice(&25u16.to_be_bytes());
    payload.extend(strings(&[ip]));
    frame(b'C', &payload)
}

pub fn mail(sender: &str) -> Vec<u8> {
    frame(b'M', &strings(&[sender]))
}

pub fn rcpt(recipient: &str) -> Vec<u8> {
    frame(b'R', &strings(&[recipient]))
}

pub fn data() -> Vec<u8> {
    frame(b'T', &[])
}

pub fn header(name: &[u8], value: &[u8]) -> Vec<u8> {
    frame(b'L', &strings(&[name, value]))
}

pub fn eoh() -> Vec<u8> {
    frame(b'N', &[])
}

pub fn body(chunk: &[u8]) -> Vec<u8> {
    frame(b'B', chunk)
}

pub fn eom() -> Vec<u8> {
    frame(b'E', &[])
}

pub fn abort() -> Vec<u8> {
    frame(b'A', &[])
}

pub fn quit() -> Vec<u8> {
    frame(b'Q', &[])
}

/// A whole session, frame by frame, up to end of message: an external client at
/// 198.51.100.9 sends mail for `rcpt` with the queue id `queue_id`.
pub fn session(queue_id: &str, recipient: &str) -> Vec<Vec<u8>> {
    vec![
        optneg(),
        macros(b'C', &[("j", "mx.test.example")]),
        connect("client.test.example", "198.51.100.9"),
        macros(b'M', &[("{mail_addr}", "<eve@remote.example>")]),
        mail("<eve@remote.example>"),
        macros(b'R', &[("{rcpt_addr}", recipient)]),
        rcpt(&format!("<{recipient}>")),
        macros(b'T', &[("i", queue_id)]),
        data(),
        header(b"From", b"Eve <eve@remote.example>"),
        header(b"Subject", b"test"),
        eoh(),
        body(b"Hello.\r\n"),
        macros(b'E', &[("i", queue_id)]),
        eom(),
    ]
}

/// Whether the peer closes `stream` within `bound`: reads (and drops) whatever it sends until
/// end of file or an error such as a reset.
pub async fn closed_within(stream: &mut UnixStream, bound: Duration) -> bool {
    let mut buf = vec![0; 64 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(bound, read_all).await.is_ok()
}

/// Connects to a unix socket and writes `bytes`, ignoring a peer that closes meanwhile.
pub async fn send_raw(socket: &Path, bytes: &[u8]) -> UnixStream {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    stream
}

/// The resident memory of a process, in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    try_rss_kib(pid).expect("VmRSS of a live process")
}

/// The same, `None` once the process is gone.
pub fn try_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
