//! An accepted connection as indymilter reads and writes it ([`Stream`]): counted while open,
//! ended at the first frame longer than [`MAX_FRAME`] before indymilter sets room aside for it,
//! and logged when it is closed for its silence.

use super::{quickack::QuickAckStream, LOG_EVERY, TARGET};
use crate::config::Period;
use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::UnixStream,
};
use tracing::warn;

/// Counts a connection as open from its accept until it is dropped.
pub(super) struct OpenCount(Arc<AtomicUsize>);

impl OpenCount {
    /// Counts one more open connection; how many that makes.
    pub(super) fn new(open: &Arc<AtomicUsize>) -> (Self, usize) {
        let now = open.fetch_add(1, Ordering::Relaxed) + 1;
        (Self(open.clone()), now)
    }
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The longest frame a connection may send: its command byte and payload, as its 4-byte
/// length prefix counts them. indymilter takes up to 1 MiB and sets that much aside as soon as
/// it has read the length, so 300 connections that announce such frames held 323 MB. No MTA
/// sends that much: Postfix's largest frames are a header, up to `header_size_limit` (100 KiB
/// by default), and body chunks of 65535 bytes; Sendmail's body chunks are as large, and
/// macros and the negotiation are a few hundred bytes. 256 KiB leaves room for a raised
/// `header_size_limit`. A connection may thus hold one frame being read and the macros of its
/// seven stages, each at most this long, besides indymilter's two 8 KiB buffers.
pub const MAX_FRAME: u32 = 256 * 1024;

/// Follows the length prefixes of the frames a connection sends, so that one longer than
/// [`MAX_FRAME`] (or empty: every frame has its command byte) ends the connection before
/// indymilter reads its length.
#[derive(Debug, Default)]
struct Frames {
    /// The length prefix read so far, and how many of its 4 bytes that is.
    prefix: [u8; 4],
    prefix_read: usize,
    /// What is left of the current frame after its prefix.
    remaining: u32,
}

impl Frames {
    /// Part of a frame has come in, not all of it.
    fn in_frame(&self) -> bool {
        self.prefix_read > 0 || self.remaining > 0
    }

    /// Follows `bytes`, the next ones read; a frame length that is refused is the error.
    fn follow(&mut self, mut bytes: &[u8]) -> Result<(), u32> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = bytes.len().min(self.remaining as usize);
                self.remaining -= skip as u32;
                bytes = &bytes[skip..];
                continue;
            }
            let take = bytes.len().min(4 - self.prefix_read);
            self.prefix[self.prefix_read..self.prefix_read + take].copy_from_slice(&bytes[..take]);
            self.prefix_read += take;
            bytes = &bytes[take..];
            if self.prefix_read == 4 {
                self.prefix_read = 0;
                let length = u32::from_be_bytes(self.prefix);
                if length == 0 || length > MAX_FRAME {
                    return Err(length);
                }
                self.remaining = length;
            }
        }
        Ok(())
    }
}

/// Something worth a log line that may happen many times a second: logged at most once per
/// [`LOG_EVERY`], with how often it happened since.
#[derive(Default)]
struct Notice {
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl Notice {
    /// It happened; `Some(times it happened unlogged before)` if this is the time to log it.
    fn due(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now - t < LOG_EVERY) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

/// What the connections log at most once per [`LOG_EVERY`] between them.
#[derive(Default)]
pub(super) struct Notices {
    oversized: Notice,
    timed_out: Notice,
}

/// An accepted connection as indymilter reads and writes it: counted while open, ended at the
/// first frame longer than [`MAX_FRAME`], and logged if it is closed for its silence.
pub struct Stream {
    inner: indymilter::EitherStream<QuickAckStream, UnixStream>,
    _open: OpenCount,
    frames: Frames,
    /// The length of a frame refused: every later read fails too.
    refused: Option<u32>,
    /// When the last byte came in or went out, and whether the peer closed its side (or the
    /// close was already looked at): a connection closed after `session_timeout` of silence
    /// was closed by indymilter's timer.
    last_active: Instant,
    eof: bool,
    session_timeout: Duration,
    notices: Arc<Notices>,
}

impl Stream {
    pub(super) fn new(
        inner: indymilter::EitherStream<QuickAckStream, UnixStream>,
        open: OpenCount,
        session_timeout: Duration,
        notices: Arc<Notices>,
    ) -> Self {
        Self {
            inner,
            _open: open,
            frames: Frames::default(),
            refused: None,
            last_active: Instant::now(),
            eof: false,
            session_timeout,
            notices,
        }
    }

    fn refusal(length: u32) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes (at most {MAX_FRAME} are taken)"),
        )
    }
}

impl Stream {
    /// Logs, once, if the connection is being closed for its silence: indymilter's timer ran
    /// out (nothing came in or went out for `session_timeout`, and the peer did not close).
    fn note_if_timed_out(&mut self) {
        let timed_out = !std::mem::replace(&mut self.eof, true)
            && self.refused.is_none()
            && self.last_active.elapsed() >= self.session_timeout;
        if !timed_out {
            return;
        }
        if let Some(unlogged) = self.notices.timed_out.due() {
            let what = if self.frames.in_frame() {
                "stopped half-way through a command"
            } else {
                "sent nothing"
            };
            warn!(
                target: TARGET,
                "closed a connection that {what} for {} (session_timeout){}",
                Period(self.session_timeout),
                more_since(unlogged)
            );
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.note_if_timed_out();
    }
}

/// The tail of a rate-limited line: how many like it went unlogged.
fn more_since(unlogged: u64) -> String {
    match unlogged {
        0 => String::new(),
        n => format!(" ({n} more since the last such line)"),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(length) = this.refused {
            return Poll::Ready(Err(Self::refusal(length)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if read.is_empty() {
            this.eof = buf.remaining() > 0;
            return Poll::Ready(Ok(()));
        }
        this.last_active = Instant::now();
        if let Err(length) = this.frames.follow(read) {
            // indymilter never sees the length, so it sets nothing aside for the frame.
            buf.set_filled(before);
            this.refused = Some(length);
            if let Some(unlogged) = this.notices.oversized.due() {
                warn!(
                    target: TARGET,
                    "closed a connection that sent a frame of {length} bytes: at most \
                     {MAX_FRAME} are taken (with Postfix, keep header_size_limit below that){}",
                    more_since(unlogged)
                );
            }
            return Poll::Ready(Err(Self::refusal(length)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        this.last_active = Instant::now();
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        this.last_active = Instant::now();
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // indymilter shuts a connection down before it drops it: the line comes before the
        // peer sees the end.
        this.note_if_timed_out();
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_followed_across_reads_and_a_long_one_refused() {
        let frame = |len: u32| {
            let mut f = len.to_be_bytes().to_vec();
            f.resize(4 + len as usize, b'x');
            f
        };
        let mut frames = Frames::default();
        // Two whole frames in one read, then one split inside its prefix and its payload.
        let mut bytes = [frame(5), frame(MAX_FRAME)].concat();
        assert_eq!(frames.follow(&bytes), Ok(()));
        bytes = frame(300);
        for piece in [&bytes[..2], &bytes[2..3], &bytes[3..100], &bytes[100..]] {
            assert_eq!(frames.follow(piece), Ok(()));
        }
        // A prefix split across reads, announcing one byte too many.
        assert_eq!(frames.follow(&(MAX_FRAME + 1).to_be_bytes()[..3]), Ok(()));
        assert_eq!(frames.follow(&[0x01, b'L']), Err(MAX_FRAME + 1));
        // An empty frame has no command: refused too.
        assert_eq!(Frames::default().follow(&[0, 0, 0, 0, b'O']), Err(0));
    }

    #[test]
    fn a_notice_is_due_once_per_period_and_counts_the_rest() {
        let notice = Notice::default();
        assert_eq!(notice.due(), Some(0));
        assert_eq!(notice.due(), None);
        assert_eq!(notice.due(), None);
        *notice.last.lock().unwrap() = Some(Instant::now() - LOG_EVERY);
        assert_eq!(notice.due(), Some(2));
    }
}
