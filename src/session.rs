//! The per-connection state machine: collects the facts stage by stage, and at end of message
//! runs classification and rules, records the event and applies the header edits.
//!
//! [`Sessions`] is what all connections share: the current [`Snapshot`] of configuration and
//! keys (each connection takes it once, so a reload never changes a session half-way), the
//! event writer, and the count of open sessions that shutdown waits for.

use crate::{
    classify::{classify, Classification, Direction},
    config::{Config, Durability, OnError},
    event::{Event, Outcome, Parts},
    facts::{unbracket, ConnectionFacts, Escaped, MessageFacts, Recipient, WatchedHeaders},
    ip,
    keys::Secrets,
    metrics::{self, DAEMON},
    privacy::Pseudonymiser,
    rules::{self, originating_ip, Action, Edit},
    writer::EventWriter,
};
use indymilter::{ContextActions, ProtoOpts, Status};
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

/// One configuration with the keys in use, and what sessions derive from them: made once per
/// reload or key rotation, shared by every session that starts meanwhile.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub secrets: Secrets,
    /// The policy with the current HMAC key.
    pub pseudonymiser: Pseudonymiser,
    pub watched: WatchedHeaders,
}

impl Snapshot {
    pub fn new(config: Arc<Config>, secrets: Secrets) -> Self {
        Self {
            pseudonymiser: Pseudonymiser::new(config.privacy.clone(), secrets.hmac.clone()),
            watched: WatchedHeaders {
                originating_ip: config.rules.originating_ip.header.as_str().to_string(),
                transit_tag: config.rules.transit_tag.header.as_str().to_string(),
            },
            secrets,
            config,
        }
    }
}

/// What every session shares.
pub struct Sessions {
    current: RwLock<Arc<Snapshot>>,
    events: EventWriter,
    /// Host name for events when the MTA does not send macro `j`.
    default_host: Arc<str>,
    open: AtomicUsize,
    /// Woken when the last open session closes.
    all_closed: Notify,
}

impl Sessions {
    pub fn new(snapshot: Snapshot, events: EventWriter, default_host: Arc<str>) -> Self {
        Self {
            current: RwLock::new(Arc::new(snapshot)),
            events,
            default_host,
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
        }
    }

    /// The snapshot new sessions start with.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `snapshot` the one new sessions start with; open sessions keep theirs.
    pub fn replace(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// A session for a new connection.
    pub fn start(self: &Arc<Self>, negotiated: Negotiated) -> Session {
        self.open.fetch_add(1, Ordering::Relaxed);
        DAEMON.sessions_open.inc();
        Session {
            snapshot: self.current(),
            shared: Arc::clone(self),
            negotiated,
            conn: ConnectionFacts::default(),
            msg: None,
        }
    }

    /// How many sessions are open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits up to `grace` for every open session to close; returns how many are still open.
    pub async fn wait_closed(&self, grace: Duration) -> usize {
        let _ = tokio::time::timeout(grace, async {
            loop {
                let closed = self.all_closed.notified();
                if self.open() == 0 {
                    return;
                }
                closed.await;
            }
        })
        .await;
        self.open()
    }

    fn closed(&self) {
        DAEMON.sessions_open.dec();
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }
}

/// What the connection negotiated.
#[derive(Clone, Copy, Debug)]
pub struct Negotiated {
    /// The stages for which the MTA expects no reply.
    pub noreply: ProtoOpts,
    /// The MTA lets us add and change headers; without that we only record events.
    pub can_edit: bool,
}

/// Values of the macros we asked for, copied out of the MTA's macro tables.
#[derive(Clone, Debug, Default)]
pub struct Macros {
    pub queue_id: Option<String>,
    pub host: Option<String>,
    pub daemon_name: Option<String>,
    pub client_addr: Option<String>,
    pub auth_type: Option<String>,
    pub auth_authen: Option<String>,
    pub rcpt_mailer: Option<String>,
    pub rcpt_addr: Option<String>,
}

pub struct Session {
    /// This connection's configuration and keys: a reload affects new connections only.
    snapshot: Arc<Snapshot>,
    shared: Arc<Sessions>,
    negotiated: Negotiated,
    conn: ConnectionFacts,
    msg: Option<MessageFacts>,
}

impl Session {
    /// The status for a stage: `Noreply` where negotiated, else `Continue`.
    fn next(&self, stage: ProtoOpts) -> Status {
        if self.negotiated.noreply.contains(stage) {
            Status::Noreply
        } else {
            Status::Continue
        }
    }

    pub fn connect(&mut self, socket_ip: Option<IpAddr>, macros: Macros) -> Status {
        // Postfix connects again after XCLIENT: a message still open belongs to the old client.
        self.finish_unfinished();
        let client_ip = socket_ip
            .map(ip::canonical)
            .or_else(|| macros.client_addr.as_deref().and_then(ip::parse_mta_addr));
        self.conn = ConnectionFacts {
            client_ip,
            host: macros.host,
            daemon_name: macros.daemon_name,
        };
        debug!(
            client = %self.snapshot.pseudonymiser.ip_for_log(client_ip),
            daemon = %Escaped(self.conn.daemon_name.as_deref().unwrap_or("-")),
            "connect"
        );
        self.next(ProtoOpts::NOREPLY_CONNECT)
    }

    pub fn mail(&mut self, sender: &str, macros: Macros) -> Status {
        self.finish_unfinished();
        let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
        self.msg = Some(MessageFacts {
            queue_id: macros.queue_id,
            sender: unbracket(sender).to_string(),
            authenticated: set(&macros.auth_type) || set(&macros.auth_authen),
            ..Default::default()
        });
        self.next(ProtoOpts::NOREPLY_MAIL)
    }

    pub fn rcpt(&mut self, recipient: &str, macros: Macros) -> Status {
        if let Some(msg) = &mut self.msg {
            let address = match unbracket(recipient) {
                "" => macros.rcpt_addr.unwrap_or_default(),
                a => a.to_string(),
            };
            msg.recipients.push(Recipient {
                address,
                mailer: macros.rcpt_mailer,
            });
            msg.queue_id = macros.queue_id.or(msg.queue_id.take());
        }
        self.next(ProtoOpts::NOREPLY_RCPT)
    }

    /// DATA and end of header only bring the queue id.
    pub fn queue_id(&mut self, queue_id: Option<String>, stage: ProtoOpts) -> Status {
        if let (Some(msg), Some(id)) = (&mut self.msg, queue_id) {
            msg.queue_id = Some(id);
        }
        self.next(stage)
    }

    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Status {
        if let Some(msg) = &mut self.msg {
            msg.header(name, value, &self.snapshot.watched);
        }
        self.next(ProtoOpts::NOREPLY_HEADER)
    }

    pub fn body(&mut self, len: usize) -> Status {
        if let Some(msg) = &mut self.msg {
            msg.size += len as u64;
        }
        self.next(ProtoOpts::NOREPLY_BODY)
    }

    /// End of message: decide, record the event, apply the edits, answer the MTA.
    pub async fn eom(&mut self, queue_id: Option<String>, mta: &impl ContextActions) -> Status {
        let started = Instant::now();
        let (status, direction) = self.end_of_message(queue_id, mta).await;
        if let Some(direction) = direction {
            let outcome = match status {
                Status::Tempfail => "tempfailed",
                _ => "accepted",
            };
            DAEMON
                .messages
                .get_or_create(&vec![
                    ("direction", direction.as_str().to_string()),
                    ("outcome", outcome.to_string()),
                ])
                .inc();
            DAEMON.eom_seconds.observe(started.elapsed().as_secs_f64());
        }
        status
    }

    /// [`Session::eom`]'s work; also says the message's direction, if there was a message.
    async fn end_of_message(
        &mut self,
        queue_id: Option<String>,
        mta: &impl ContextActions,
    ) -> (Status, Option<Direction>) {
        let Some(mut msg) = self.msg.take() else {
            return (Status::Continue, None);
        };
        if queue_id.is_some() {
            msg.queue_id = queue_id;
        }
        msg.size += 2; // the empty line between header and body
        let snapshot = Arc::clone(&self.snapshot);
        let config = &snapshot.config;
        let class = classify(&self.conn, &msg, config);
        let host = self
            .conn
            .host
            .as_deref()
            .unwrap_or(&self.shared.default_host);
        let actions = rules::decide(&self.conn, &msg, &class, config, &snapshot.secrets, host);
        // Escaped once for every line that names it: the MTA's queue id is wire data.
        let qid = Escaped(msg.queue_id.as_deref().unwrap_or("-")).to_string();
        let direction = Some(class.direction);
        if actions
            .iter()
            .any(|a| a.label == originating_ip::DROPPED_INVALID)
        {
            warn!(
                queue_id = %qid,
                "dropped an unparsable {} value from webmail host {}",
                config.rules.originating_ip.header.as_str(),
                self.snapshot.pseudonymiser.ip_for_log(self.conn.client_ip)
            );
        }

        // The edits go first, so that the event records what was done; the MTA keeps them
        // only if it is then told to continue.
        let decided = rules::labels(&actions);
        let (status, done, skipped) = if config.dry_run {
            // A dry run's event lists what would have been done.
            (Status::Continue, decided, Vec::new())
        } else if !self.negotiated.can_edit {
            if !decided.is_empty() {
                debug!(
                    queue_id = %qid,
                    skipped = %decided.join(","),
                    "header edits not made: the MTA does not allow them on this connection"
                );
            }
            (Status::Continue, Vec::new(), decided)
        } else {
            match apply(&actions, mta).await {
                Ok(()) => (Status::Continue, decided, Vec::new()),
                Err(e) => {
                    error!(
                        queue_id = %qid,
                        "cannot edit the header, the MTA is told to try again later: {e}"
                    );
                    (Status::Tempfail, Vec::new(), decided)
                }
            }
        };
        for label in &done {
            DAEMON
                .rule_actions
                .get_or_create(&metrics::label("action", label.as_str()))
                .inc();
        }
        info!(
            queue_id = %qid,
            direction = %class.direction,
            transit = class.transit,
            client = %self.snapshot.pseudonymiser.ip_for_log(self.conn.client_ip),
            authenticated = class.authenticated,
            sender = %self.snapshot.pseudonymiser.address_for_log(&msg.sender),
            recipients = class.local.len(),
            actions = %done.join(","),
            dry_run = config.dry_run,
            "message"
        );

        if config.events.enabled {
            let outcome = match status {
                Status::Tempfail => Outcome::Tempfailed,
                _ => Outcome::Accepted,
            };
            let event = self.event(&msg, &class, outcome, done, skipped);
            match config.events.durability {
                // The answer waits until the event is stored, so an accepted message always has
                // its record.
                Durability::Sync => {
                    if let Err(e) = self.shared.events.commit(event).await {
                        let tempfail = config.events.on_error == OnError::Tempfail;
                        let told = if status == Status::Tempfail {
                            "the MTA is told to try again later (the header edits failed)"
                        } else if tempfail {
                            "the MTA is told to try again later (events.on_error = \"tempfail\")"
                        } else {
                            "the message is accepted without it (events.on_error = \"accept\")"
                        };
                        error!(queue_id = %qid, "event not recorded, {told}: {e}");
                        if tempfail {
                            return (Status::Tempfail, direction);
                        }
                    }
                }
                // A write failure is then only logged, with the event in full.
                Durability::Async => self.shared.events.enqueue(event).await,
            }
        }
        (status, direction)
    }

    /// The MTA gave up the message (RSET, a rejected transaction, a lost client).
    pub fn abort(&mut self) {
        self.finish_unfinished();
    }

    /// Records an event for a message that started but never reached end of message.
    fn finish_unfinished(&mut self) {
        let Some(msg) = self.msg.take() else {
            return;
        };
        // The MTA reports refused recipients with mailer "error": if it refused them all, the
        // transaction was rejected rather than given up by the client.
        let outcome =
            if !msg.recipients.is_empty() && msg.recipients.iter().all(Recipient::rejected) {
                Outcome::Rejected
            } else {
                Outcome::Aborted
            };
        info!(
            queue_id = %Escaped(msg.queue_id.as_deref().unwrap_or("-")),
            client = %self.snapshot.pseudonymiser.ip_for_log(self.conn.client_ip),
            outcome = if outcome == Outcome::Rejected { "rejected" } else { "aborted" },
            "message not completed"
        );
        let class = classify(&self.conn, &msg, &self.snapshot.config);
        DAEMON
            .messages
            .get_or_create(&vec![
                ("direction", class.direction.as_str().to_string()),
                ("outcome", outcome.as_str().to_string()),
            ])
            .inc();
        if self.snapshot.config.events.enabled {
            let event = self.event(&msg, &class, outcome, Vec::new(), Vec::new());
            self.shared.events.record(event);
        }
    }

    fn event(
        &self,
        msg: &MessageFacts,
        class: &Classification,
        outcome: Outcome,
        actions: Vec<String>,
        skipped_actions: Vec<String>,
    ) -> Event {
        Event::build(
            Parts {
                conn: &self.conn,
                msg,
                class,
                outcome,
                actions,
                skipped_actions,
                can_edit: self.negotiated.can_edit,
                host: self
                    .conn
                    .host
                    .as_deref()
                    .unwrap_or(&self.shared.default_host),
                config: &self.snapshot.config,
                pseudonymiser: &self.snapshot.pseudonymiser,
            },
            chrono::Utc::now(),
        )
    }
}

impl Drop for Session {
    /// A connection that ends in the middle of a message still leaves its event.
    fn drop(&mut self) {
        self.finish_unfinished();
        self.shared.closed();
    }
}

/// Sends the edits to the MTA, deletions first in reverse index order. On an error the MTA
/// may hold some of them: it keeps none unless told to continue.
async fn apply(
    actions: &[Action],
    mta: &impl ContextActions,
) -> Result<(), indymilter::ActionError> {
    for edit in rules::ordered_edits(actions) {
        match edit {
            Edit::Delete { name, index } => {
                mta.change_header(name.as_str(), *index, None::<&str>)
                    .await?;
            }
            Edit::Add { name, value } => {
                mta.add_header(name.as_str(), value.as_str()).await?;
            }
            Edit::Prepend { name, value } => {
                mta.insert_header(0, name.as_str(), value.as_str()).await?;
            }
        }
    }
    Ok(())
}
