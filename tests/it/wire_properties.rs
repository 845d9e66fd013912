//! A standing property check of what the session copies from the MTA: any macro values
//! (`{client_addr}`, `{daemon_name}`, `j`, `{auth_type}`, `{rcpt_mailer}`, `{rcpt_addr}`,
//! the queue id `i`), any sender and recipients, any header value of the originating-IP
//! header: the in-process milter answers every message, records exactly one event for it
//! with the queue id it was given, and stays up for the next.

use crate::common::*;
use indymilter_test::{IntoSocketInfo, MacroStage, SocketInfo, Status};
use proptest::{prelude::*, test_runner::TestRunner};

/// Text an MTA could hand over in a macro or an argument: anything but NUL (C strings).
fn wire() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\\x00]{0,40}",
        "[ -~\\n\\r\\t\\x1b\\x07\\u{85}]{0,40}",
        "(IPv6:)?\\[?[0-9a-fA-F:.]{0,40}\\]?",
        "<?[a-z\\[\\]:.]{0,10}@[a-zA-Z0-9\\[\\]:.\\n]{0,30}>?",
    ]
}

#[derive(Clone, Debug)]
struct Message {
    client: Option<std::net::IpAddr>,
    connect: Vec<(String, String)>,
    auth: Option<(String, String)>,
    sender: String,
    rcpts: Vec<(String, Option<String>, String)>,
    header: Option<String>,
    queue_id: String,
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop::option::of(any::<std::net::IpAddr>()),
        prop::collection::vec(
            (
                prop::sample::select(vec!["j", "{daemon_name}", "{client_addr}"]),
                wire(),
            ),
            0..3,
        ),
        prop::option::of((wire(), wire())),
        wire(),
        prop::collection::vec((wire(), prop::option::of(wire()), wire()), 1..4),
        prop::option::of(wire()),
        "[!-~][ -~\\n\\x1b]{0,20}",
    )
        .prop_map(
            |(client, connect, auth, sender, rcpts, header, queue_id)| Message {
                client,
                connect: connect
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                auth,
                sender,
                rcpts,
                header,
                queue_id,
            },
        )
}

async fn send(milter: &Milter, m: &Message) -> Status {
    let mut conn = milter.connect().await;
    let socket = m
        .client
        .map_or(SocketInfo::Unknown, |ip| ip.into_socket_info());
    // indymilter-test sends no empty macro list; an MTA that sends none skips the command.
    if !m.connect.is_empty() {
        conn.macros(MacroStage::Connect, m.connect.clone())
            .await
            .unwrap();
    }
    conn.connect("client.test.example", socket).await.unwrap();
    let mail_macros = match &m.auth {
        Some((kind, user)) => vec![
            ("{auth_type}", kind.clone()),
            ("{auth_authen}", user.clone()),
        ],
        None => vec![],
    };
    if !mail_macros.is_empty() {
        conn.macros(MacroStage::Mail, mail_macros).await.unwrap();
    }
    conn.mail([m.sender.as_str()]).await.unwrap();
    for (rcpt, mailer, addr) in &m.rcpts {
        let mut macros = vec![("{rcpt_addr}".to_string(), addr.clone())];
        if let Some(mailer) = mailer {
            macros.push(("{rcpt_mailer}".to_string(), mailer.clone()));
        }
        conn.macros(MacroStage::Rcpt, macros).await.unwrap();
        conn.rcpt([rcpt.as_str()]).await.unwrap();
    }
    conn.macros(MacroStage::Data, [("i", m.queue_id.as_str())])
        .await
        .unwrap();
    conn.data().await.unwrap();
    if let Some(value) = &m.header {
        conn.header("X-Originating-IP", value.as_str())
            .await
            .unwrap();
    }
    conn.header("Subject", "x").await.unwrap();
    conn.eoh().await.unwrap();
    conn.body(b"Hello.\r\n".to_vec()).await.unwrap();
    conn.macros(MacroStage::Eom, [("i", m.queue_id.as_str())])
        .await
        .unwrap();
    let (_, status) = conn.eom().await.unwrap();
    conn.close().await.unwrap();
    status
}

#[test]
fn any_macro_values_get_an_answer_and_one_event() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let milter = runtime.block_on(Milter::start("wire_properties/privacy-milter.toml"));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let sent = std::cell::Cell::new(0);
    runner
        .run(&message(), |m| {
            let status = runtime.block_on(send(&milter, &m));
            prop_assert_eq!(status, Status::Continue);
            sent.set(sent.get() + 1);
            let events = milter.events();
            prop_assert_eq!(events.len(), sent.get(), "one event per message");
            let event = events.last().unwrap();
            prop_assert_eq!(event["queue_id"].as_str(), Some(m.queue_id.as_str()));
            prop_assert_eq!(event["outcome"].as_str(), Some("accepted"));
            Ok(())
        })
        .unwrap();
}
