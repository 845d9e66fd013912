//! Transit tags that are not ours (forged, another site's, lifted from another message) are
//! left exactly as they arrived, never deleted: a sender's DKIM signature may cover them. They
//! vouch for nothing: only a tag whose MAC verifies under our key ring, for this message's
//! Message-ID, is ours. Ours goes at the top of the header.

use crate::common::*;
use indymilter_test::{EomAction, EomActions};

const MID: &str = "<m1.forged@remote.example>";

/// The value of the transit tag the milter inserted, if any.
fn inserted_tag(actions: &EomActions) -> Option<String> {
    actions.actions.iter().find_map(|a| match a {
        EomAction::InsertHeader {
            index: 0,
            name,
            value,
        } if name.to_str() == Ok("X-Transit") => Some(value.to_str().unwrap().to_string()),
        _ => None,
    })
}

/// `privacy-milter verify-tag`: (ours, stdout and stderr).
fn verify_tag(milter: &Milter, value: &str, message_id: Option<&str>) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-milter"));
    cmd.arg("--config")
        .arg(&milter.config_path)
        .arg("verify-tag");
    if let Some(id) = message_id {
        cmd.args(["--message-id", id]);
    }
    let out = cmd.arg(value).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Relay mail from outside: tagged, with the MAC verifying for its Message-ID.
async fn our_tag(milter: &Milter, message_id: &str) -> String {
    let mail = Mail::from_ip("198.51.100.77")
        .rcpt("carol@transit.example")
        .header("Message-ID", message_id)
        .queue_id("4OurTag");
    let (actions, _) = mail.send(milter).await;
    inserted_tag(&actions).expect("tagged")
}

#[tokio::test]
async fn foreign_tags_on_inbound_mail_stay_as_they_are() {
    let milter = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.77")
        .rcpt("bob@example.org")
        .header("X-Transit", "relay")
        .header("X-TRANSIT", "outbound");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), Vec::<String>::new(), "nothing deleted");
    let events = milter.events();
    assert_eq!(
        actions_of(event_for(&events, "4TestQ1d")),
        ["transit_tag.foreign_kept"]
    );
}

#[tokio::test]
async fn relay_mail_keeps_the_foreign_tag_and_gets_ours_on_top() {
    let milter = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.77")
        .rcpt("carol@transit.example")
        .header("Message-ID", MID)
        .header("X-Transit", "internal");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    let events = milter.events();
    assert_eq!(
        actions_of(event_for(&events, "4TestQ1d")),
        ["transit_tag.foreign_kept", "transit_tag.added"]
    );

    // The operator's check: ours for this message, with or without the angle brackets.
    let tag = inserted_tag(&actions).unwrap();
    let (ok, out) = verify_tag(&milter, &tag, Some(MID));
    assert!(
        ok && out.starts_with("ours: relay by mx.test.example (key "),
        "{out}"
    );
    let (ok, out) = verify_tag(&milter, &tag, Some("m1.forged@remote.example"));
    assert!(
        ok && out.starts_with("ours: relay by mx.test.example (key "),
        "{out}"
    );
    // The foreign copy, and ours for another message or one without a Message-ID, are not.
    let (ok, out) = verify_tag(&milter, "internal", Some(MID));
    assert!(
        !ok && out.contains("not a privacy-milter transit tag"),
        "{out}"
    );
    for other in [Some("<m2@remote.example>"), None] {
        let (ok, out) = verify_tag(&milter, &tag, other);
        assert!(!ok && out.contains("the MAC does not match"), "{out}");
    }
}

#[tokio::test]
async fn authenticated_client_outside_trusted_networks_cannot_plant_a_tag() {
    let milter = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let mail = Mail::from_ip("203.0.113.5")
        .auth("alice")
        .rcpt("bob@example.org")
        .header("X-Transit", "relay");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), ["+X-Originating-IP: [203.0.113.5]"]);
    let events = milter.events();
    assert_eq!(
        actions_of(event_for(&events, "4TestQ1d")),
        ["originating_ip.added", "transit_tag.foreign_kept"]
    );
}

/// A trusted client (a second pass) with a tag that does not verify: a forged MAC, a tag of
/// ours lifted from another message, another host's tag. None of them makes the message
/// "already tagged": each stays, and ours is added.
#[tokio::test]
async fn forged_lifted_and_other_hosts_macs_are_not_ours() {
    let milter = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let other_site = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let ours = our_tag(&milter, MID).await;
    let (head, _) = ours.rsplit_once("mac=").unwrap();
    let forged = format!("{head}mac=AAAAAAAAAAAAAAAAAAAAAA");
    let lifted = our_tag(&milter, "<another@remote.example>").await;
    let other_hosts = our_tag(&other_site, MID).await;
    assert_ne!(other_hosts, ours, "another key ring, another MAC");

    for (n, value) in [forged, lifted, other_hosts].iter().enumerate() {
        let mail = Mail::from_ip("10.0.0.25")
            .rcpt("carol@transit.example")
            .header("Message-ID", MID)
            .header("X-Transit", value)
            .queue_id(&format!("4Second{n}"));
        let (actions, _) = mail.send(&milter).await;
        assert_eq!(
            edits(&actions),
            ["+X-Originating-IP: [10.0.0.25]", OUTBOUND_TAG],
            "{value}"
        );
        let events = milter.events();
        assert_eq!(
            actions_of(event_for(&events, &format!("4Second{n}"))),
            [
                "originating_ip.added",
                "transit_tag.foreign_kept",
                "transit_tag.added"
            ],
            "{value}"
        );
        let (ok, _) = verify_tag(&milter, value, Some(MID));
        assert!(!ok, "{value} is not ours");
    }
}

/// Our own tag on a message that comes back from outside (a list, a forward, or someone
/// replaying it): kept, vouches for nothing, and the relayed message gets a tag of this pass.
#[tokio::test]
async fn our_tag_from_outside_is_kept_and_vouches_for_nothing() {
    let milter = Milter::start("forged_transit_tag/privacy-milter.toml").await;
    let ours = our_tag(&milter, MID).await;
    for (rcpt, queue_id, expected_edits, expected_actions) in [
        (
            "carol@transit.example",
            "4BackRelay",
            vec![RELAY_TAG],
            vec!["transit_tag.returned_kept", "transit_tag.added"],
        ),
        (
            "bob@example.org",
            "4BackInbound",
            vec![],
            vec!["transit_tag.returned_kept"],
        ),
    ] {
        let mail = Mail::from_ip("198.51.100.78")
            .rcpt(rcpt)
            .header("Message-ID", MID)
            .header("X-Transit", &ours)
            .queue_id(queue_id);
        let (actions, _) = mail.send(&milter).await;
        assert_eq!(edits(&actions), expected_edits);
        let events = milter.events();
        assert_eq!(actions_of(event_for(&events, queue_id)), expected_actions);
    }
}
