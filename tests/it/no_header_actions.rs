//! An MTA that does not offer the header actions: negotiation still succeeds, mail passes
//! untouched, and events are still recorded.

use crate::common::*;
use indymilter_test::{Actions, Status, TestConnection};

#[tokio::test]
async fn passes_untouched() {
    let milter = Milter::start("no_header_actions/privacy-milter.toml").await;
    let mut conn = TestConnection::configure()
        .available_actions(Actions::ADD_HEADER)
        .open_tcp(milter.addr)
        .await
        .unwrap();
    assert!(!conn.negotiated_actions().contains(Actions::CHANGE_HEADER));
    let mail = Mail::from_ip("203.0.113.7")
        .auth("alice")
        .rcpt("bob@remote.example");
    mail.connect(&mut conn).await;
    let (actions, status) = mail.transaction(&mut conn).await;
    conn.close().await.unwrap();
    assert_eq!(status, Status::Continue);
    assert!(actions.actions.is_empty());
    let events = milter.events();
    assert_eq!(event_for(&events, "4TestQ1d")["direction"], "outbound");
}

#[tokio::test]
async fn requests_its_macros_and_skips_helo() {
    let milter = Milter::start("no_header_actions/privacy-milter.toml").await;
    let conn = milter.connect().await;
    let macros = conn.requested_macros();
    let get = |s| {
        macros
            .get(&s)
            .map(|m| m.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    use indymilter_test::MacroStage::*;
    assert!(get(Connect).contains("{client_addr}") && get(Connect).contains("j"));
    assert!(get(Mail).contains("{auth_type}") && get(Mail).contains("{auth_authen}"));
    assert!(get(Rcpt).contains("{rcpt_mailer}"));
    assert_eq!(get(Eom), "i");
    assert!(conn
        .negotiated_opts()
        .contains(indymilter_test::ProtoOpts::NO_HELO));
    assert!(conn
        .negotiated_actions()
        .contains(Actions::ADD_HEADER | Actions::CHANGE_HEADER));
}
