//! Dry run: decide, log and record events with the actions that would have been taken, but
//! change no header.

use crate::common::*;

#[tokio::test]
async fn no_edits_but_actions_recorded() {
    let milter = Milter::start("dry_run/privacy-milter.toml").await;
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .header("X-Originating-IP", "[192.0.2.1]");
    let (actions, status) = mail.send(&milter).await;
    assert_eq!(status, indymilter_test::Status::Continue);
    assert!(actions.actions.is_empty(), "{:?}", actions.actions);
    let events = milter.events();
    let e = event_for(&events, "4TestQ1d");
    assert_eq!(e["dry_run"], true);
    assert_eq!(
        actions_of(e),
        [
            "originating_ip.removed_forged",
            "originating_ip.added",
            "transit_tag.added"
        ]
    );
}
