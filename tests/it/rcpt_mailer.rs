//! The MTA's `{rcpt_mailer}` decides locality for domains not listed in domains.local.

use crate::common::*;

#[tokio::test]
async fn virtual_mailer_is_local() {
    let milter = Milter::start("rcpt_mailer/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.9").rcpt_via("x@hosted-elsewhere.example", "virtual");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), Vec::<String>::new());
    let events = milter.events();
    assert_eq!(event_for(&events, "4TestQ1d")["direction"], "inbound");
}

#[tokio::test]
async fn smtp_mailer_is_remote_even_for_unlisted_domain() {
    let milter = Milter::start("rcpt_mailer/privacy-milter.toml").await;
    let mail = Mail::from_ip("198.51.100.9")
        .rcpt_via("x@hosted-elsewhere.example", "lmtp")
        .rcpt_via("y@hosted-elsewhere.example", "esmtp");
    let (actions, _) = mail.send(&milter).await;
    assert_eq!(edits(&actions), [RELAY_TAG]);
    let events = milter.events();
    let r = &event_for(&events, "4TestQ1d")["recipients"];
    assert_eq!(r[0]["local"], true);
    assert_eq!(r[1]["local"], false);
}
