//! When an event cannot be written (here: /dev/full, every write fails with ENOSPC),
//! events.on_error decides what the MTA is told.

use crate::common::*;
use indymilter_test::Status;

#[tokio::test]
async fn tempfail_when_configured() {
    let milter = Milter::start("on_error/tempfail.toml").await;
    let (_, status) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .send(&milter)
        .await;
    assert!(matches!(status, Status::Tempfail { .. }), "{status:?}");
}

#[tokio::test]
async fn accept_by_default() {
    let milter = Milter::start("on_error/accept.toml").await;
    let (actions, status) = Mail::from_ip("198.51.100.9")
        .rcpt("x@remote.example")
        .send(&milter)
        .await;
    assert_eq!(status, Status::Continue);
    assert_eq!(edits(&actions), [RELAY_TAG]);
    // The milter carries on with the next message.
    let (_, status) = Mail::from_ip("198.51.100.9")
        .rcpt("x@example.org")
        .send(&milter)
        .await;
    assert_eq!(status, Status::Continue);
}
