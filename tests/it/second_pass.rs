//! A message passing the milter twice (re-injection after a content filter, a second hop)
//! carries one tag and one X-Originating-IP, not two.

use crate::common::*;
use indymilter_test::EomAction;

#[tokio::test]
async fn second_pass_changes_nothing() {
    let milter = Milter::start("second_pass/privacy-milter.toml").await;
    let first = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example");
    let (actions, _) = first.send(&milter).await;

    // Second pass: the same message with the headers the first pass added, from loopback.
    let mut second = Mail::from_ip("127.0.0.1")
        .rcpt("bob@remote.example")
        .queue_id("4SecondQ");
    for action in &actions.actions {
        if let EomAction::AddHeader { name, value } = action {
            second = second.header(name.to_str().unwrap(), value.as_bytes());
        }
    }
    assert_eq!(second.headers.len(), 4, "first pass added two headers");
    let (actions, _) = second.send(&milter).await;
    assert_eq!(edits(&actions), Vec::<String>::new());

    // A second hop from a trusted, non-loopback host keeps the first hop's header too.
    let third = second.clone().queue_id("4ThirdQ");
    let third = Mail {
        client: Mail::from_ip("10.0.0.25").client,
        ..third
    };
    let (actions, _) = third.send(&milter).await;
    assert_eq!(edits(&actions), Vec::<String>::new());
    assert_eq!(milter.events().len(), 3);
}
