//! The [`Gate`]: the listener as indymilter accepts from it, which a failing accept() never
//! closes.

use super::{
    quickack::QuickAckStream,
    stream::{Notices, OpenCount, Stream},
    Listener, LOG_EVERY, TARGET,
};
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};
use tracing::{debug, error, info, warn};

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
                Some(Listener::Tcp(l)) => ready!(l.poll_accept(cx))
                    .map(|(stream, _)| indymilter::EitherStream::Tcp(QuickAckStream::new(stream))),
                Some(Listener::Unix(u)) => ready!(u.listener.poll_accept(cx))
                    .map(|(stream, _)| indymilter::EitherStream::Unix(stream)),
            };
            match accepted {
                Ok(stream) => {
                    let (counted, open) = OpenCount::new(&self.open);
                    state.accepted(open, self.max_connections);
                    return Poll::Ready(Ok(Stream::new(
                        stream,
                        counted,
                        self.session_timeout,
                        self.notices.clone(),
                    )));
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
