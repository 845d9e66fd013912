//! The listening socket and what indymilter is handed from it, one file per mechanism:
//!
//! - `bind.rs`: the socket ([`Listener`]), `unix:` (a stale file removed at start, mode and
//!   group set, the file removed on exit) or TCP.
//! - `accept.rs`: the [`Gate`] indymilter accepts from: accept() failing for want of resources
//!   waits and tries again instead of ending the milter, and reaching `max_connections` is
//!   logged.
//! - `stream.rs`: an accepted connection ([`Stream`](stream::Stream)): a command longer than
//!   [`MAX_FRAME`] ends it before it is read, and a connection closed for its silence
//!   (`session_timeout`) is logged.
//! - `quickack.rs`: `TCP_NODELAY` and `TCP_QUICKACK` on every TCP connection.

mod accept;
mod bind;
mod quickack;
mod stream;

pub use accept::Gate;
pub use bind::Listener;
pub use stream::MAX_FRAME;

use std::time::Duration;

/// The log target of the listener's lines: the daemon's.
const TARGET: &str = "privacy_milter";

/// A condition that may recur many times a second is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
