//! Where events go. One writer thread owns every sink and writes events in batches (group
//! commit): whatever queued up while the last batch was written goes out together, with one
//! sync, and each message that waits for its event is answered when its batch is durable.
//!
//! With `events.durability = "async"` the MTA is answered without waiting; at most
//! `events.queue_size` such events wait, and beyond that the answer waits for a place.
//!
//! A sink that fails does not lose the event: it is logged in full (already pseudonymised) at
//! error level, and the waiting message learns of the failure so `events.on_error` applies.

mod jsonl;
mod ledger;
mod log;
mod postgres;

use crate::{
    config::{Config, SinkKind},
    event::Event,
};
use std::{io, sync::Arc, thread};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{error, info};

/// A destination for events.
trait Sink: Send {
    fn name(&self) -> &'static str;
    /// Writes a batch and makes it durable before returning.
    fn write(&mut self, batch: &[Event]) -> io::Result<()>;
    /// Deletes at most `limit` of the events expired at `now`; returns how many went. Only
    /// stores keep anything.
    fn purge(&mut self, _now: chrono::DateTime<chrono::Utc>, _limit: usize) -> io::Result<usize> {
        Ok(0)
    }
}

fn open_sinks(config: &Config) -> io::Result<Vec<Box<dyn Sink>>> {
    if !config.events.enabled {
        return Ok(Vec::new());
    }
    config
        .events
        .sinks
        .iter()
        .map(|kind| -> io::Result<Box<dyn Sink>> {
            Ok(match kind {
                SinkKind::Jsonl => Box::new(jsonl::JsonlSink::open(&config.events.jsonl.path)?),
                SinkKind::Ledger => Box::new(ledger::LedgerSink::open(&config.events.ledger)?),
                SinkKind::Postgres => {
                    Box::new(postgres::PostgresSink::open(&config.events.postgres)?)
                }
                SinkKind::Log => Box::new(log::LogSink),
            })
        })
        .collect()
}

type Ack = oneshot::Sender<Result<(), String>>;

enum Request {
    /// An event; its ack if someone waits for it; its place in the async queue if it holds one.
    Event(Box<Event>, Option<Ack>, Option<OwnedSemaphorePermit>),
    /// Re-open every sink from this configuration (SIGHUP: new paths, rotated files).
    Reopen(Box<Config>, oneshot::Sender<Result<(), String>>),
    /// Delete expired events from every store.
    Purge,
    Stop(oneshot::Sender<()>),
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::UnboundedSender<Request>,
    /// Places in the queue for events nobody waits for (`events.durability = "async"`).
    queue: Arc<Semaphore>,
}

/// Most events written in one batch.
const MAX_BATCH: usize = 512;

impl EventWriter {
    /// Opens the sinks (failing at once if one cannot be opened) and starts the writer thread.
    pub fn start(config: &Config) -> io::Result<Self> {
        let sinks = open_sinks(config)?;
        let (tx, rx) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || writer(sinks, rx))?;
        Ok(Self {
            tx,
            queue: Arc::new(Semaphore::new(config.events.queue_size)),
        })
    }

    /// Writes an event and waits until it is durable in every sink.
    pub async fn commit(&self, event: Event) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Request::Event(Box::new(event), Some(ack), None))
            .map_err(|_| "the event writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the event writer has stopped".to_string())?
    }

    /// Queues an event without waiting for it to be written (`durability = "async"`). When
    /// `queue_size` events already wait, this waits for a place: under overload the MTA is
    /// slowed down, and no event is dropped.
    pub async fn enqueue(&self, event: Event) {
        let place = Arc::clone(&self.queue).acquire_owned().await.ok();
        self.send_or_log(Request::Event(Box::new(event), None, place));
    }

    /// Queues an event without waiting (aborted messages: nobody is waiting for an answer).
    pub fn record(&self, event: Event) {
        self.send_or_log(Request::Event(Box::new(event), None, None));
    }

    fn send_or_log(&self, request: Request) {
        if let Err(e) = self.tx.send(request) {
            if let Request::Event(event, ..) = e.0 {
                error!(event = %event.to_json(), "event writer stopped; event kept in this log line");
            }
        }
    }

    /// Re-opens the sinks from `config`; on failure the old sinks stay.
    pub async fn reopen(&self, config: &Config) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Request::Reopen(Box::new(config.clone()), ack))
            .map_err(|_| "the event writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the event writer has stopped".to_string())?
    }

    /// Asks the writer to purge expired events (after the events queued before).
    pub fn purge(&self) {
        let _ = self.tx.send(Request::Purge);
    }

    /// Writes what is queued and stops the writer.
    pub async fn stop(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Request::Stop(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

/// A purge in progress: it deletes a chunk at a time between batches of events, so that a
/// large backlog of expired events does not hold up messages waiting for their answer.
struct Purge {
    now: chrono::DateTime<chrono::Utc>,
    /// Per sink: events deleted so far, and whether it has no more.
    progress: Vec<(usize, bool)>,
}

impl Purge {
    fn new(sinks: usize) -> Self {
        Self {
            now: chrono::Utc::now(),
            progress: vec![(0, false); sinks],
        }
    }

    /// Deletes one chunk from every sink not done yet; true when the purge is finished.
    fn step(&mut self, sinks: &mut [Box<dyn Sink>]) -> bool {
        for (sink, (total, done)) in sinks.iter_mut().zip(self.progress.iter_mut()) {
            if *done {
                continue;
            }
            match sink.purge(self.now, crate::ledger::PURGE_CHUNK) {
                Ok(n) => {
                    *total += n;
                    if n < crate::ledger::PURGE_CHUNK {
                        *done = true;
                        if *total > 0 {
                            info!(
                                "purged {total} expired events from the {} sink",
                                sink.name()
                            );
                        }
                    }
                }
                Err(e) => {
                    error!("cannot purge the {} sink: {e}", sink.name());
                    *done = true;
                }
            }
        }
        self.progress.iter().all(|(_, done)| *done)
    }
}

fn writer(mut sinks: Vec<Box<dyn Sink>>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut batch: Vec<Event> = Vec::new();
    let mut acks: Vec<Ack> = Vec::new();
    let mut places: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut purge: Option<Purge> = None;
    loop {
        // While a purge goes on, only look for requests between its steps.
        let first = if purge.is_some() {
            match rx.try_recv() {
                Ok(request) => Some(request),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        } else {
            match rx.blocking_recv() {
                Some(request) => Some(request),
                None => return,
            }
        };
        let mut pending = first;
        // Gather what is queued, up to a control request, which is handled after the batch.
        let mut control = None;
        while let Some(request) = pending.take() {
            match request {
                Request::Event(event, ack, place) => {
                    batch.push(*event);
                    acks.extend(ack);
                    places.extend(place);
                    if batch.len() < MAX_BATCH {
                        pending = rx.try_recv().ok();
                    }
                }
                other => control = Some(other),
            }
        }
        if !batch.is_empty() {
            let result = write_all(&mut sinks, &batch);
            for ack in acks.drain(..) {
                let _ = ack.send(result.clone());
            }
            places.clear();
            batch.clear();
        }
        match control {
            Some(Request::Reopen(config, ack)) => {
                let result = open_sinks(&config)
                    .map(|new| {
                        sinks = new;
                        // The next timer tick purges the new sinks.
                        purge = None;
                    })
                    .map_err(|e| e.to_string());
                let _ = ack.send(result);
            }
            Some(Request::Purge) => {
                purge.get_or_insert_with(|| Purge::new(sinks.len()));
            }
            Some(Request::Stop(ack)) => {
                // Close every sink (the ledger checkpoints its WAL) before saying so.
                drop(std::mem::take(&mut sinks));
                let _ = ack.send(());
                return;
            }
            _ => {}
        }
        if purge.as_mut().is_some_and(|p| p.step(&mut sinks)) {
            purge = None;
        }
    }
}

fn write_all(sinks: &mut [Box<dyn Sink>], batch: &[Event]) -> Result<(), String> {
    let mut failure = None;
    for sink in sinks.iter_mut() {
        if let Err(e) = sink.write(batch) {
            let message = format!("cannot write events to the {} sink: {e}", sink.name());
            error!(
                "{message}; the {} events of this batch follow in full",
                batch.len()
            );
            for event in batch {
                error!(sink = sink.name(), event = %event.to_json(), "event not written");
            }
            failure = Some(message);
        }
    }
    failure.map_or(Ok(()), Err)
}
