//! A message passing the milter twice (re-injection after a content filter, a second hop
//! sharing the key ring) carries one tag and one X-Originating-IP, not two: the tag from the
//! first pass verifies, so the message is already tagged.

use crate::common::*;
use indymilter_test::EomAction;

#[tokio::test]
async fn second_pass_changes_nothing() {
    let milter = Milter::start("second_pass/privacy-milter.toml").await;
    let first = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example")
        .header("Message-ID", "<second-pass@example.org>");
    let (actions, _) = first.send(&milter).await;

    // Second pass: the same message with the headers the first pass added, from loopback.
    let mut second = Mail::from_ip("127.0.0.1")
        .rcpt("bob@remote.example")
        .header("Message-ID", "<second-pass@example.org>")
        .queue_id("4SecondQ");
    for action in &actions.actions {
        if let EomAction::AddHeader { name, value } | EomAction::InsertHeader { name, value, .. } =
            action
        {
            second = second.header(name.to_str().unwrap(), value.as_bytes());
        }
    }
    assert_eq!(second.headers.len(), 5, "first pass added two headers");
    let (actions, _) = second.send(&milter).await;
    assert_eq!(edits(&actions), Vec::<String>::new());
    let events = milter.events();
    assert_eq!(
        actions_of(event_for(&events, "4SecondQ")),
        ["transit_tag.already_tagged"]
    );

    // A second hop from a trusted, non-loopback host keeps the first hop's header too.
    let third = second.clone().queue_id("4ThirdQ");
    let third = Mail {
        client: Mail::from_ip("10.0.0.25").client,
        ..third
    };
    let (actions, _) = third.send(&milter).await;
    assert_eq!(edits(&actions), Vec::<String>::new());
    let events = milter.events();
    assert_eq!(events.len(), 3);
    assert_eq!(
        actions_of(event_for(&events, "4ThirdQ")),
        ["transit_tag.already_tagged"]
    );
}
