//! A seeded protocol fuzz against the real daemon (a standing check): a few thousand
//! sessions, most of them mutated (random bytes, truncated frames, wrong lengths, commands out
//! of order, huge macro lists, strings without their NUL, header names with control
//! characters), the rest valid and interleaved with them, several at a time. Asserted: the
//! daemon stays up and closes every mutated connection, every valid session gets the header
//! edits the rules imply and exactly one event, and its memory stays within a generous factor
//! of what it was after a warm-up.
//!
//! `PRIVACY_MILTER_FUZZ_SEED` (decimal or 0x-hex) replays a run; every failure names the seed
//! and the session. `PRIVACY_MILTER_FUZZ_SESSIONS` sets how many sessions run.

use crate::{common::*, wire};
use privacy_milter::internals::MAX_FRAME;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::io::AsyncWriteExt;

const CONFIG: &str = "protocol_fuzz/privacy-milter.toml";
const DEFAULT_SEED: u64 = 0x15_2026_f022;
const DEFAULT_SESSIONS: usize = 3000;
/// Sessions under way at once.
const WORKERS: usize = 8;
/// The first sessions, after which the daemon's memory is the baseline.
const WARM_UP: usize = 300;
/// How long the daemon may take to close a mutated connection whose client has sent all it
/// will (the daemon then reads end of file): generous, whatever the load.
const CLOSE_BOUND: Duration = Duration::from_secs(30);

/// SplitMix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    /// The generator of session `n` in the run seeded with `seed`: a session's content does
    /// not depend on how the sessions interleave.
    fn for_session(seed: u64, n: usize) -> Self {
        let mut rng = Self(seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (which must not be 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn env_number<T: TryFrom<u64>>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => {
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed
                .ok()
                .and_then(|n| T::try_from(n).ok())
                .unwrap_or_else(|| panic!("{name}={text:?} is not a number"))
        }
    }
}

/// A valid message and the header edits the rules imply for it (`tests/protocol_fuzz`: the
/// trusted networks are loopback and 10/8, the local domain example.org).
fn valid(rng: &mut Rng, queue_id: &str) -> (&'static str, Mail, Vec<&'static str>) {
    let external = || Mail::from_ip("198.51.100.9").sender("eve@remote.example");
    let ours = || Mail::from_ip("203.0.113.7").auth("alice");
    let (name, mail, edits) = match rng.below(5) {
        0 => (
            "relay",
            external().rcpt("x@remote.example"),
            vec![RELAY_TAG],
        ),
        1 => ("inbound", external().rcpt("bob@example.org"), vec![]),
        2 => (
            "outbound",
            ours().rcpt("bob@remote.example"),
            vec!["+X-Originating-IP: [203.0.113.7]", OUTBOUND_TAG],
        ),
        3 => (
            "relay with a foreign transit tag, kept",
            external()
                .rcpt("carol@transit.example")
                .header("X-Transit", "relay"),
            vec![RELAY_TAG],
        ),
        _ => (
            "internal with a forged origin",
            ours()
                .rcpt("bob@example.org")
                .header("X-Originating-IP", "[192.0.2.1]"),
            vec!["-X-Originating-IP[1]", "+X-Originating-IP: [203.0.113.7]"],
        ),
    };
    (name, mail.queue_id(queue_id), edits)
}

/// A session with mutations, and what they were (for the failure message).
fn mutated(rng: &mut Rng, queue_id: &str) -> (Vec<u8>, Vec<&'static str>) {
    let mut frames = wire::session(queue_id, "x@remote.example");
    if rng.chance(2) {
        frames.push(wire::quit());
    }
    let mut done = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(frames.len());
        let name = match rng.below(9) {
            0 => {
                let len = rng.below(2048);
                frames = vec![rng.bytes(len)];
                "random bytes"
            }
            1 => {
                let mut bytes = frames.concat();
                bytes.truncate(rng.below(bytes.len() + 1));
                frames = vec![bytes];
                "truncated"
            }
            2 => {
                let frame = &mut frames[at];
                if frame.len() >= 4 {
                    let length = u32::from_be_bytes(frame[..4].try_into().unwrap());
                    let wrong = match rng.below(6) {
                        0 => length.wrapping_add(1 + rng.below(16) as u32),
                        1 => length.saturating_sub(1 + rng.below(16) as u32),
                        2 => 0,
                        3 => MAX_FRAME + 1,
                        4 => 0x8000_0000 | rng.next() as u32,
                        _ => rng.next() as u32,
                    };
                    frame[..4].copy_from_slice(&wrong.to_be_bytes());
                }
                "wrong length"
            }
            3 => {
                let other = rng.below(frames.len());
                frames.swap(at, other);
                if rng.chance(2) {
                    let copy = frames[rng.below(frames.len())].clone();
                    frames.insert(at, copy);
                } else if frames.len() > 1 {
                    frames.remove(rng.below(frames.len()));
                }
                "commands out of order"
            }
            4 => {
                let mut pairs = Vec::new();
                let count = 100 + rng.below(3000);
                for n in 0..count {
                    pairs.push((format!("{{m{n}}}"), "v".repeat(rng.below(80))));
                }
                let pairs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let stage = b"CHMRTNE"[rng.below(7)];
                frames.insert(at, wire::macros(stage, &pairs));
                "huge macro list"
            }
            5 => {
                let frame = &mut frames[at];
                if frame.len() > 5 {
                    let payload: Vec<u8> = frame[5..].iter().copied().filter(|&b| b != 0).collect();
                    *frame = wire::frame(frame[4], &payload);
                }
                "strings without their NUL"
            }
            6 => {
                let controls = [
                    b'\r', b'\n', b'\t', 0x1b, 0x7f, 0x07, b':', b' ', 0x80, 0xff,
                ];
                let mut name = b"X-".to_vec();
                for _ in 0..1 + rng.below(12) {
                    name.push(controls[rng.below(controls.len())]);
                    name.push(b'a' + rng.below(26) as u8);
                }
                let value = b"[192.0.2.1]\r\nX-Transit: relay\x1b[2J";
                let header = if rng.chance(2) {
                    wire::header(&name, value)
                } else {
                    wire::header(b"X-Originating-IP", &name)
                };
                frames.insert(at, header);
                "header names with control characters"
            }
            7 => {
                let mut bytes = frames.concat();
                for _ in 0..1 + rng.below(8) {
                    if !bytes.is_empty() {
                        let i = rng.below(bytes.len());
                        bytes[i] ^= 1 << rng.below(8);
                    }
                }
                frames = vec![bytes];
                "bits flipped"
            }
            _ => {
                let command = rng.next() as u8;
                let len = rng.below(64);
                let payload = rng.bytes(len);
                frames.insert(at, wire::frame(command, &payload));
                "an unknown or misplaced command"
            }
        };
        done.push(name);
        if frames.is_empty() {
            frames.push(Vec::new());
        }
    }
    (frames.concat(), done)
}

/// Runs sessions `from..to` on `WORKERS` tasks; returns the queue ids of the valid messages.
async fn run_sessions(
    daemon: &Daemon,
    seed: u64,
    from: usize,
    to: usize,
) -> Result<Vec<String>, String> {
    let next = Arc::new(AtomicUsize::new(from));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let next = Arc::clone(&next);
        let socket = daemon.socket();
        workers.push(tokio::spawn(async move {
            let mut valid_ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= to {
                    return Ok::<_, String>(valid_ids);
                }
                let mut rng = Rng::for_session(seed, n);
                if rng.chance(3) {
                    let queue_id = format!("Valid-{n}");
                    let (name, mail, want) = valid(&mut rng, &queue_id);
                    let socket = socket.clone();
                    let sent = tokio::spawn(async move {
                        let conn = indymilter_test::TestConnection::configure()
                            .open_unix(socket)
                            .await
                            .expect("the daemon accepts");
                        mail.send_on(conn).await
                    })
                    .await;
                    let got = match sent {
                        Ok((actions, _)) => edits(&actions),
                        Err(e) => return Err(format!("session {n} ({name}) failed: {e}")),
                    };
                    if got != want {
                        return Err(format!(
                            "session {n} ({name}): edits {got:?}, want {want:?}"
                        ));
                    }
                    valid_ids.push(queue_id);
                } else {
                    let (bytes, what) = mutated(&mut rng, &format!("M{n}"));

                    let mut stream = tokio::net::UnixStream::connect(&socket)
                        .await
                        .map_err(|e| format!("session {n} ({what:?}): connect: {e}"))?;
                    // The daemon may close first: what it does then is what is tested.
                    let _ = tokio::time::timeout(CLOSE_BOUND, stream.write_all(&bytes)).await;
                    let _ = stream.shutdown().await;
                    if !wire::closed_within(&mut stream, CLOSE_BOUND).await {
                        return Err(format!(
                            "session {n} ({what:?}, {} bytes) still open after {CLOSE_BOUND:?}",
                            bytes.len()
                        ));
                    }
                }
            }
        }));
    }
    let mut valid_ids = Vec::new();
    for worker in workers {
        valid_ids.extend(worker.await.map_err(|e| e.to_string())??);
    }
    Ok(valid_ids)
}

/// Fails the test with what went wrong, how to replay the run, and the daemon's log.
fn fail(daemon: &Daemon, replay: &str, what: String) -> ! {
    panic!("{what}\n{replay}\n--- daemon log ---\n{}", daemon.log());
}

#[tokio::test]
async fn mutated_sessions_never_disturb_valid_ones() {
    let seed: u64 = env_number("PRIVACY_MILTER_FUZZ_SEED", DEFAULT_SEED);
    let sessions = env_number("PRIVACY_MILTER_FUZZ_SESSIONS", DEFAULT_SESSIONS).max(WARM_UP + 1);
    let replay = format!("seed {seed:#x} (PRIVACY_MILTER_FUZZ_SEED={seed:#x} replays it)");
    eprintln!("protocol fuzz: {sessions} sessions, {replay}");
    let mut daemon = Daemon::start(CONFIG);
    let pid = daemon.child.id();

    let mut valid_ids = match run_sessions(&daemon, seed, 0, WARM_UP).await {
        Ok(ids) => ids,
        Err(e) => fail(&daemon, &replay, e),
    };
    let baseline = wire::rss_kib(pid);

    // The rest, with the daemon's memory sampled meanwhile.
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = wire::try_rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let rest = run_sessions(&daemon, seed, WARM_UP, sessions).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    match rest {
        Ok(ids) => valid_ids.extend(ids),
        Err(e) => fail(&daemon, &replay, e),
    }

    if let Some(status) = daemon.child.try_wait().unwrap() {
        fail(&daemon, &replay, format!("the daemon exited: {status}"));
    }
    // A valid session after it all.
    let (actions, _) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .queue_id("Valid-after")
        .send_on(daemon.connect().await)
        .await;
    assert_eq!(edits(&actions), [RELAY_TAG], "{replay}");
    valid_ids.push("Valid-after".into());

    // Exactly one event per valid message, accepted.
    let events = json_lines(&daemon.events_text());
    for id in &valid_ids {
        let found: Vec<_> = events.iter().filter(|e| e["queue_id"] == **id).collect();
        if found.len() != 1 || found[0]["outcome"] != "accepted" {
            fail(&daemon, &replay, format!("events for {id}: {found:#?}"));
        }
    }
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "protocol fuzz: {} valid sessions; RSS {baseline} KiB after the warm-up, peak {peak} KiB",
        valid_ids.len()
    );
    // Generous: a few sessions with huge macro lists under way at once cost a few MiB.
    if peak > 2 * baseline + 32 * 1024 {
        fail(
            &daemon,
            &replay,
            format!("RSS grew from {baseline} KiB after the warm-up to {peak} KiB"),
        );
    }
    let log = daemon.log();
    if log.contains("panicked") {
        fail(&daemon, &replay, "a panic in the log".into());
    }
    let status = daemon.stop();
    assert!(status.success(), "{status}\n{replay}\n{}", daemon.log());
}
