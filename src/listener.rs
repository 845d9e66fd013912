//! The listening socket: `unix:` (stale file removed at start, mode and group set, removed
//! on exit) or TCP, where every accepted connection gets `TCP_NODELAY` and `TCP_QUICKACK`.
//!
//! Why both TCP options (design.md §7): without them each message meets two Nagle and
//! delayed-ACK stalls of about 40 ms. `TCP_NODELAY` sends our replies at once; Linux clears
//! `TCP_QUICKACK` after it acknowledges, so it is set again after every read, which makes
//! the kernel acknowledge the MTA's no-reply commands at once instead of holding its next write.
//!
//! What indymilter is handed ([`Gate`], [`Stream`]) also keeps a connection from costing more
//! than it should: accept() failing for want of resources never ends the milter (issue 15.1),
//! and a command longer than [`MAX_FRAME`] ends its connection before it is read (15.2).

use crate::config::{Config, Period, SocketSpec};
use std::{
    fs,
    future::Future,
    io,
    os::unix::fs::{chown, PermissionsExt},
    path::{Path, PathBuf},
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
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
};
use tracing::{debug, error, info, warn};

/// The log target of the listener's lines: the daemon's.
const TARGET: &str = "privacy_milter";

/// A bound socket, ready for [`crate::run`].
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixSocket),
}

/// A bound unix socket; its file is removed when this is dropped.
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Listener {
    /// Binds the configured socket.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("socket {}: {e}", config.socket));
        match &config.socket {
            SocketSpec::Inet(addr) => {
                Ok(Self::Tcp(TcpListener::bind(addr).await.map_err(context)?))
            }
            SocketSpec::Unix(path) => bind_unix(path, config).map(Self::Unix).map_err(context),
        }
    }

    /// The address of a TCP listener (tests bind port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(_) => None,
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Self::Tcp(l)
    }
}

fn bind_unix(path: &Path, config: &Config) -> io::Result<UnixSocket> {
    use nix::unistd::{getegid, geteuid, getgroups, Gid, User};
    // Who the daemon runs as, for the errors: a name where there is one.
    let user = || {
        User::from_uid(geteuid())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {}", geteuid()), |u| u.name)
    };
    remove_stale(path)?;
    let listener = UnixListener::bind(path).map_err(|e| {
        let dir = path.parent().unwrap_or(Path::new("/")).display();
        let what = match e.kind() {
            io::ErrorKind::PermissionDenied => format!(
                ": the daemon's user {} may not create files in {dir}; make the directory \
                 writable by it (the package's unit uses /run/privacy-milter)",
                user()
            ),
            _ => String::new(),
        };
        io::Error::new(
            e.kind(),
            format!("cannot create the socket {}: {e}{what}", path.display()),
        )
    })?;
    // Removed on drop from here on, even if setting the mode fails.
    let socket = UnixSocket {
        listener,
        path: path.to_path_buf(),
    };
    if !config.socket_group.is_empty() {
        let group = nix::unistd::Group::from_name(&config.socket_group)
            .ok()
            .flatten()
            .ok_or_else(|| {
                io::Error::other(format!("group {} does not exist", config.socket_group))
            })?;
        chown(path, None, Some(group.gid.as_raw())).map_err(|e| {
            let gid: Gid = group.gid;
            let member = getegid() == gid || getgroups().is_ok_and(|g| g.contains(&gid));
            let name = &config.socket_group;
            // Only root, or a member of the group, may give a file to it.
            let what = match e.kind() {
                io::ErrorKind::PermissionDenied if !member => format!(
                    ": the daemon's user {user} is not a member of group {name}; add it \
                     (usermod -a -G {name} {user}) and restart it, set socket_group to a group \
                     it is in, or leave socket_group empty for its own group",
                    user = user()
                ),
                _ => String::new(),
            };
            io::Error::new(
                e.kind(),
                format!(
                    "cannot give {} to group {name} (gid {gid}): {e}{what}",
                    path.display()
                ),
            )
        })?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(config.socket_mode.0))?;
    Ok(socket)
}

/// Removes a socket file left by a milter that did not exit cleanly, but never a socket that
/// a running milter still answers on, and never anything that is not a socket.
fn remove_stale(path: &Path) -> io::Result<()> {
    use nix::unistd::{Gid, Group, Uid, User};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot look at {}: {e}", path.display()),
        )),
        Ok(md) if !md.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening on it",
            )),
            Err(_) => fs::remove_file(path).map_err(|e| {
                let md = fs::symlink_metadata(path).ok();
                let owner = md.as_ref().map_or_else(
                    || "someone".to_string(),
                    |md| {
                        let user = User::from_uid(Uid::from_raw(md.uid()))
                            .ok()
                            .flatten()
                            .map_or_else(|| md.uid().to_string(), |u| u.name);
                        let group = Group::from_gid(Gid::from_raw(md.gid()))
                            .ok()
                            .flatten()
                            .map_or_else(|| md.gid().to_string(), |g| g.name);
                        format!("{user}:{group}")
                    },
                );
                let dir = path.parent().unwrap_or(Path::new("/"));
                let sticky = fs::metadata(dir).is_ok_and(|d| d.permissions().mode() & 0o1000 != 0);
                let what = match e.kind() {
                    io::ErrorKind::PermissionDenied if sticky => format!(
                        ": {} has the sticky bit, so only the socket's owner or root may \
                         remove it; remove it by hand (rm {}) and start again, or choose \
                         another socket path",
                        dir.display(),
                        path.display()
                    ),
                    io::ErrorKind::PermissionDenied => format!(
                        ": the daemon's user may not write to {}; remove it by hand (rm {}) \
                         and start again",
                        dir.display(),
                        path.display()
                    ),
                    _ => String::new(),
                };
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot remove the stale socket {} (owned by {owner}): {e}{what}",
                        path.display()
                    ),
                )
            }),
        },
    }
}

/// The listener as indymilter sees it; [`Gate::close`] stops accepting at once (the socket
/// closes, a unix socket file goes) while open sessions carry on.
///
/// indymilter ends the whole milter on the first error `poll_accept` returns, so only errors
/// that no retry can mend get that far. When accept() fails for want of resources (EMFILE at
/// the descriptor limit, ENFILE, ENOBUFS, ENOMEM), the gate waits [`ACCEPT_BACKOFF`] and tries
/// again: the connection waits in the listener's backlog, the open sessions go on, and the
/// failure is logged once per episode. An error that belongs to one connection (it was reset
/// or aborted while it waited) is skipped at once.
#[derive(Clone)]
pub struct Gate {
    state: Arc<Mutex<GateState>>,
    /// Connections accepted and not yet closed.
    open: Arc<AtomicUsize>,
    max_connections: usize,
    /// Refused frames and connections closed for silence, each logged at most once per
    /// [`LOG_EVERY`] across all connections.
    notices: Arc<Notices>,
    session_timeout: Duration,
}

struct GateState {
    listener: Option<Listener>,
    /// While accept() fails for want of resources: the wait before the next try.
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    failures: Episodes,
    full: Episodes,
}

/// How long the gate waits before it calls accept() again after a failure for want of
/// resources: short enough that a freed descriptor is used at once, long enough not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An error is logged at most this often, however often it recurs.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Per-connection errors skipped in one poll before the gate lets other tasks run.
const SKIPS_PER_POLL: usize = 32;

impl Gate {
    pub fn new(listener: Listener, max_connections: usize, session_timeout: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(GateState {
                listener: Some(listener),
                backoff: None,
                failures: Episodes::default(),
                full: Episodes::default(),
            })),
            open: Arc::new(AtomicUsize::new(0)),
            max_connections,
            notices: Arc::default(),
            session_timeout,
        }
    }

    pub fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.listener.take();
        state.backoff.take();
    }
}

/// What to do after accept() failed.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// The connection that was waiting is gone (reset, aborted, a network error Linux passes
    /// on from it): take the next one.
    Skip,
    /// Short of descriptors, buffers or memory: wait and try again.
    Backoff,
    /// The listener itself is unusable: nothing can be accepted again.
    Fatal,
}

fn classify(error: &io::Error) -> AcceptError {
    use nix::libc::*;
    match error.raw_os_error() {
        // Not a listening socket (any more): no retry helps; the daemon exits and its service
        // manager starts it afresh.
        Some(EBADF | ENOTSOCK | EINVAL | EFAULT) => AcceptError::Fatal,
        // accept(2): "Linux accept() passes already-pending network errors on the new socket
        // as an error code", to be treated like EAGAIN; and connections reset or aborted while
        // they waited in the backlog.
        Some(
            ECONNABORTED | ECONNRESET | EINTR | EAGAIN | EPROTO | EPERM | ENETDOWN | ENOPROTOOPT
            | EHOSTDOWN | ENONET | EHOSTUNREACH | EOPNOTSUPP | ENETUNREACH | ETIMEDOUT,
        ) => AcceptError::Skip,
        // EMFILE, ENFILE, ENOBUFS, ENOMEM, and whatever else: the milter must not stop.
        _ => AcceptError::Backoff,
    }
}

/// A condition that may recur many times a second (accept failing, every connection in
/// use), logged when it begins and when it ends, at most once per [`LOG_EVERY`].
#[derive(Default)]
struct Episodes {
    /// Since when the condition holds, and how often it was met.
    current: Option<(Instant, u64)>,
    /// When the start of an episode was last logged.
    logged_at: Option<Instant>,
    /// The current episode's start was logged, so its end is too.
    logged: bool,
}

impl Episodes {
    /// The condition is met (again); true if this is the time to log it.
    fn met(&mut self) -> bool {
        let now = Instant::now();
        let (_, count) = self.current.get_or_insert((now, 0));
        *count += 1;
        let due = !self.logged && self.logged_at.is_none_or(|t| now - t >= LOG_EVERY);
        if due {
            self.logged_at = Some(now);
            self.logged = true;
        }
        due
    }

    /// The condition is over; how long it lasted and how often it was met, if its start was
    /// logged.
    fn over(&mut self) -> Option<(Duration, u64)> {
        let (since, count) = self.current.take()?;
        std::mem::take(&mut self.logged).then(|| (since.elapsed(), count))
    }
}

impl GateState {
    fn accept_failed(&mut self, error: &io::Error, open: usize) {
        if self.failures.met() {
            let hint = if error.raw_os_error() == Some(nix::libc::EMFILE) {
                " (the process's descriptor limit: raise LimitNOFILE= or lower max_connections)"
            } else {
                ""
            };
            error!(
                target: TARGET,
                "cannot accept connections: {error}{hint}; the {open} open connections go on, \
                 new ones wait and accept is tried again every {} ms",
                ACCEPT_BACKOFF.as_millis()
            );
        }
    }

    fn accepted(&mut self, open: usize, max: usize) {
        if let Some((lasted, failures)) = self.failures.over() {
            info!(
                target: TARGET,
                "accepting connections again after {failures} failed attempts in {:.1}s",
                lasted.as_secs_f64()
            );
        }
        if open >= max {
            if self.full.met() {
                warn!(
                    target: TARGET,
                    "all {max} connections in use (max_connections): new connections wait \
                     until one closes"
                );
            }
        } else if let Some((lasted, _)) = self.full.over() {
            info!(
                target: TARGET,
                "connections free again after {:.1}s at max_connections",
                lasted.as_secs_f64()
            );
        }
    }
}

impl indymilter::Listener for Gate {
    type Io = Stream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Stream>> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        if let Some(backoff) = &mut state.backoff {
            ready!(backoff.as_mut().poll(cx));
            state.backoff = None;
        }
        for _ in 0..SKIPS_PER_POLL {
            let accepted = match &state.listener {
                // Closed: nothing more is accepted; shutdown ends the milter.
                None => return Poll::Pending,
                Some(Listener::Tcp(l)) => ready!(l.poll_accept(cx)).map(|(stream, _)| {
                    let _ = stream.set_nodelay(true);
                    indymilter::EitherStream::Tcp(QuickAckStream::new(stream))
                }),
                Some(Listener::Unix(u)) => ready!(u.listener.poll_accept(cx))
                    .map(|(stream, _)| indymilter::EitherStream::Unix(stream)),
            };
            match accepted {
                Ok(stream) => {
                    let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
                    state.accepted(open, self.max_connections);
                    return Poll::Ready(Ok(Stream {
                        inner: stream,
                        _open: OpenCount(self.open.clone()),
                        frames: Frames::default(),
                        refused: None,
                        last_active: Instant::now(),
                        eof: false,
                        session_timeout: self.session_timeout,
                        notices: self.notices.clone(),
                    }));
                }
                Err(e) => match classify(&e) {
                    AcceptError::Skip => {
                        debug!(target: TARGET, "a connection was gone before it was accepted: {e}");
                    }
                    AcceptError::Backoff => {
                        state.accept_failed(&e, self.open.load(Ordering::Relaxed));
                        let mut backoff = Box::pin(tokio::time::sleep(ACCEPT_BACKOFF));
                        // Registers the wake-up; the sleep has only just begun.
                        if backoff.as_mut().poll(cx).is_ready() {
                            continue;
                        }
                        state.backoff = Some(backoff);
                        return Poll::Pending;
                    }
                    AcceptError::Fatal => return Poll::Ready(Err(e)),
                },
            }
        }
        // Many connections gone at once: let the sessions run, then take the next.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Counts a connection as open until it is dropped.
struct OpenCount(Arc<AtomicUsize>);

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

#[derive(Default)]
struct Notices {
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

/// A TCP stream that re-arms `TCP_QUICKACK` after every read.
pub struct QuickAckStream {
    inner: TcpStream,
}

impl QuickAckStream {
    fn new(inner: TcpStream) -> Self {
        let stream = Self { inner };
        stream.quickack();
        stream
    }

    fn quickack(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&self.inner).set_quickack(true);
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.quickack();
        }
        result
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_listener_is_fatal() {
        let kind = |errno| classify(&io::Error::from_raw_os_error(errno));
        use nix::libc::*;
        for errno in [EMFILE, ENFILE, ENOBUFS, ENOMEM, ENOSPC] {
            assert_eq!(kind(errno), AcceptError::Backoff, "errno {errno}");
        }
        for errno in [ECONNABORTED, ECONNRESET, EINTR, EPROTO, EPERM, ENETUNREACH] {
            assert_eq!(kind(errno), AcceptError::Skip, "errno {errno}");
        }
        for errno in [EBADF, ENOTSOCK, EINVAL] {
            assert_eq!(kind(errno), AcceptError::Fatal, "errno {errno}");
        }
        assert_eq!(
            classify(&io::Error::other("no errno")),
            AcceptError::Backoff
        );
    }

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

    #[test]
    fn an_episode_is_logged_once_and_a_relapse_soon_after_not_at_all() {
        let mut episodes = Episodes::default();
        assert!(episodes.met(), "the start is logged");
        assert!(!episodes.met() && !episodes.met(), "a recurrence is not");
        let (_, count) = episodes
            .over()
            .expect("the end of a logged episode is logged");
        assert_eq!(count, 3);
        assert!(episodes.over().is_none(), "it ended once");
        // Flapping within LOG_EVERY of the last logged start: silent, end included.
        assert!(!episodes.met());
        assert!(episodes.over().is_none());
        // Once LOG_EVERY has passed, a new episode is logged again.
        episodes.logged_at = Some(Instant::now() - LOG_EVERY);
        assert!(episodes.met());
        assert!(episodes.over().is_some());
    }
}
