//! The event writer: how events reach the stores. One writer thread owns every sink (a
//! [`Sink`] of `crate::store`) and writes events in batches (group commit): whatever queued
//! up while the last batch was written goes out together, with one sync, and each message
//! that waits for its event is answered when its batch is durable.
//!
//! With `events.durability = "async"` the MTA is answered without waiting; at most
//! `events.queue_size` such events wait, and beyond that the answer waits for a place.
//!
//! A sink may leave the last step of durability (the ledger's `fdatasync`) to a second
//! thread, the syncer, which answers the waiting messages once it is done: meanwhile the
//! writer already writes the next batch, so the CPU of one batch overlaps the disk's flush of
//! the one before. The syncer flushes once for whatever batches queued up behind a flush.
//!
//! A sink that fails does not lose the event: it is logged in full (already pseudonymised) at
//! error level, and the waiting message learns of the failure so `events.on_error` applies.

use crate::{
    config::Config,
    event::Event,
    metrics::{label, DAEMON},
    store::{self, Flush, NotReopened, Sink, PURGE_CHUNK},
};
use std::{io, sync::Arc, thread};
use std::{
    sync::mpsc::{self, RecvTimeoutError, TryRecvError},
    time::{Duration, Instant},
};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{error, info};

/// The log target of the writer's lines, as operators know it.
const TARGET: &str = "privacy_milter::sinks";

type Ack = oneshot::Sender<Result<(), String>>;

enum Request {
    /// An event; its ack if someone waits for it; its place in the async queue if it holds one.
    Event(Box<Event>, Option<Ack>, Option<OwnedSemaphorePermit>),
    /// Re-open every sink from this configuration (SIGHUP: new paths, rotated files); the
    /// answer names those that could not be opened.
    Reopen(Box<Config>, oneshot::Sender<Vec<NotReopened>>),
    /// Delete expired events from every store.
    Purge,
    Stop(oneshot::Sender<()>),
    /// From the syncer: a flush is done.
    Flushed,
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<Request>,
    /// Places in the queue for events nobody waits for (`events.durability = "async"`).
    queue: Arc<Semaphore>,
}

/// Most events written in one batch.
const MAX_BATCH: usize = 512;

/// Group commit: once a written batch already waits behind the flush in progress, the events
/// that arrive would wait for two flushes whenever they were written; the writer gathers them
/// (at most this long after the first) and commits them at once, so that the flush after covers
/// one commit instead of several small ones. With at most one flush in flight an event is
/// written at once, so that its commit overlaps the flush (measured: waiting then cost 0.6 of
/// the throughput at 16 sessions; docs/performance.md).
pub const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(2);

impl EventWriter {
    /// Opens the sinks (failing at once if one cannot be opened) and starts the writer thread.
    pub fn start(config: &Config) -> io::Result<Self> {
        Self::start_with(config, GROUP_COMMIT_WINDOW)
    }

    /// [`EventWriter::start`] with another group-commit window (benchmarks compare them;
    /// zero writes every event as soon as it comes).
    pub fn start_with(config: &Config, window: Duration) -> io::Result<Self> {
        let sinks = store::open_sinks(config).map_err(io::Error::other)?;
        Self::spawn(sinks, config.events.queue_size, window)
    }

    fn spawn(sinks: Vec<Box<dyn Sink>>, queue_size: usize, window: Duration) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (to_syncer, jobs) = mpsc::channel();
        let flushed = tx.clone();
        thread::Builder::new()
            .name("event-syncer".into())
            .spawn(move || syncer(jobs, flushed))?;
        thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || writer(sinks, window, rx, to_syncer))?;
        Ok(Self {
            tx,
            queue: Arc::new(Semaphore::new(queue_size)),
        })
    }

    /// Writes an event and waits until it is durable in every sink.
    pub async fn commit(&self, event: Event) -> Result<(), String> {
        let started = Instant::now();
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Request::Event(Box::new(event), Some(ack), None))
            .map_err(|_| "the event writer has stopped".to_string())?;
        let result = done
            .await
            .map_err(|_| "the event writer has stopped".to_string())?;
        DAEMON
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        result
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
                error!(target: TARGET, event = %event.to_json(), "event writer stopped; event kept in this log line");
            }
        }
    }

    /// Re-opens each sink from `config` on its own ([`store::reopen_sinks`]); returns those
    /// that could not be opened (a running one among them runs on as it was).
    pub async fn reopen(&self, config: &Config) -> Result<Vec<NotReopened>, String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Request::Reopen(Box::new(config.clone()), ack))
            .map_err(|_| "the event writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the event writer has stopped".to_string())
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
            match sink.purge_some(self.now, PURGE_CHUNK) {
                Ok(n) => {
                    *total += n;
                    if n < PURGE_CHUNK {
                        *done = true;
                        if *total > 0 {
                            info!(
                                target: TARGET,
                                "purged {total} expired events from the {} sink",
                                sink.name()
                            );
                        }
                    }
                }
                Err(e) => {
                    error!(target: TARGET, "cannot purge the {} sink: {e}", sink.name());
                    *done = true;
                }
            }
        }
        self.progress.iter().all(|(_, done)| *done)
    }
}

fn writer(
    mut sinks: Vec<Box<dyn Sink>>,
    window: Duration,
    rx: mpsc::Receiver<Request>,
    syncer: mpsc::Sender<ToSyncer>,
) {
    let mut batch: Vec<Event> = Vec::new();
    let mut acks: Vec<Ack> = Vec::new();
    let mut places: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut purge: Option<Purge> = None;
    // Batches handed to the syncer and not yet flushed.
    let mut in_flight = 0usize;
    loop {
        // While a purge goes on, only look for requests between its steps.
        let first = if purge.is_some() {
            match rx.try_recv() {
                Ok(request) => Some(request),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(request) => Some(request),
                Err(_) => return,
            }
        };
        let mut pending = first;
        // Gather what is queued, up to a control request, which is handled after the batch.
        let mut control = None;
        let mut deadline: Option<Instant> = None;
        while let Some(request) = pending.take() {
            match request {
                Request::Event(event, ack, place) => {
                    batch.push(*event);
                    acks.extend(ack);
                    places.extend(place);
                }
                Request::Flushed => in_flight = in_flight.saturating_sub(1),
                other => {
                    control = Some(other);
                    break;
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            pending = rx.try_recv().ok();
            // Nothing more queued: wait for more while a batch waits behind the flush in
            // progress (group commit).
            if pending.is_none() && in_flight > 1 && !batch.is_empty() && !window.is_zero() {
                let until = *deadline.get_or_insert_with(|| Instant::now() + window);
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(request) => pending = Some(request),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
        if !batch.is_empty() {
            let (result, flushes) = write_all(&mut sinks, &batch);
            if flushes.is_empty() {
                for ack in acks.drain(..) {
                    let _ = ack.send(result.clone());
                }
                places.clear();
                batch.clear();
            } else {
                let job = Job {
                    batch: std::mem::take(&mut batch),
                    result,
                    flushes,
                    acks: std::mem::take(&mut acks),
                    _places: std::mem::take(&mut places),
                };
                match syncer.send(ToSyncer::Job(job)) {
                    Ok(()) => in_flight += 1,
                    // Only if the syncer thread died: flush here instead.
                    Err(lost) => {
                        if let ToSyncer::Job(job) = lost.0 {
                            finish(vec![job]);
                        }
                    }
                }
            }
        }
        if matches!(control, Some(Request::Reopen(..) | Request::Stop(_))) {
            // Every batch durable and answered before the sinks change.
            let (done, drained) = oneshot::channel();
            if syncer.send(ToSyncer::Drain(done)).is_ok() {
                let _ = drained.blocking_recv();
            }
        }
        match control {
            Some(Request::Reopen(new, ack)) => {
                // The next timer tick purges the new sinks.
                purge = None;
                let (reopened, failed) = store::reopen_sinks(std::mem::take(&mut sinks), &new);
                sinks = reopened;
                let _ = ack.send(failed);
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

/// Writes a batch to every sink; returns the outcome so far and the flushes still to run.
fn write_all(sinks: &mut [Box<dyn Sink>], batch: &[Event]) -> (Result<(), String>, Vec<Pending>) {
    let mut failure = None;
    let mut flushes = Vec::new();
    for (index, sink) in sinks.iter_mut().enumerate() {
        match sink.write(batch) {
            Ok(Some(flush)) => flushes.push(Pending {
                sink: index,
                name: sink.name(),
                flush,
            }),
            Ok(None) => written(sink.name(), batch.len()),
            Err(e) => failure = Some(not_written(sink.name(), &e.to_string(), batch)),
        }
    }
    (failure.map_or(Ok(()), Err), flushes)
}

/// Counts events a sink made durable.
fn written(sink: &str, n: usize) {
    DAEMON
        .events_written
        .get_or_create(&label("sink", sink))
        .inc_by(n as u64);
}

/// Logs a batch a sink lost in full; returns the message for those waiting for it.
fn not_written(sink: &str, error: &str, batch: &[Event]) -> String {
    DAEMON
        .events_failed
        .get_or_create(&label("sink", sink))
        .inc_by(batch.len() as u64);
    let message = format!("cannot write events to the {sink} sink: {error}");
    error!(
        target: TARGET,
        "{message}; the {} events of this batch follow in full",
        batch.len()
    );
    for event in batch {
        error!(target: TARGET, sink, event = %event.to_json(), "event not written");
    }
    message
}

/// A sink's flush still to run for a batch.
struct Pending {
    /// The sink's place in the list (the same between two drains of the syncer).
    sink: usize,
    name: &'static str,
    flush: Arc<dyn Flush>,
}

/// A written batch waiting for its flushes.
struct Job {
    batch: Vec<Event>,
    /// The outcome of the writes.
    result: Result<(), String>,
    flushes: Vec<Pending>,
    acks: Vec<Ack>,
    /// Places in the async queue, given back once the batch is durable.
    _places: Vec<OwnedSemaphorePermit>,
}

enum ToSyncer {
    Job(Job),
    /// Answered once every job sent before is finished.
    Drain(oneshot::Sender<()>),
}

/// Flushes what the writer hands over; tells the writer each time a job is done.
fn syncer(jobs: mpsc::Receiver<ToSyncer>, writer: mpsc::Sender<Request>) {
    while let Ok(first) = jobs.recv() {
        let mut pending = Vec::new();
        let mut drained = Vec::new();
        for request in std::iter::once(first).chain(jobs.try_iter()) {
            match request {
                ToSyncer::Job(job) => pending.push(job),
                ToSyncer::Drain(done) => drained.push(done),
            }
        }
        let done = pending.len();
        finish(pending);
        for _ in 0..done {
            let _ = writer.send(Request::Flushed);
        }
        for done in drained {
            let _ = done.send(());
        }
    }
}

/// Runs the flushes of some jobs (each sink's last one covers its earlier batches too) and
/// answers those waiting.
fn finish(mut jobs: Vec<Job>) {
    let mut flushed: Vec<usize> = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    for job in jobs.iter().rev() {
        for pending in &job.flushes {
            if !flushed.contains(&pending.sink) {
                flushed.push(pending.sink);
                if let Err(e) = pending.flush.flush() {
                    failed.push((pending.sink, e.to_string()));
                }
            }
        }
    }
    for job in &mut jobs {
        for pending in &job.flushes {
            match failed.iter().find(|(sink, _)| *sink == pending.sink) {
                Some((_, error)) => job.result = Err(not_written(pending.name, error, &job.batch)),
                None => written(pending.name, job.batch.len()),
            }
        }
        for ack in job.acks.drain(..) {
            let _ = ack.send(job.result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sample;
    use std::sync::{mpsc as std_mpsc, Mutex};

    /// A sink whose flush waits for the test's word and then fails or succeeds as told.
    struct Held {
        release: Arc<Mutex<std_mpsc::Receiver<io::Result<()>>>>,
    }

    impl Flush for Held {
        fn flush(&self) -> store::Result<()> {
            self.release
                .lock()
                .unwrap()
                .recv()
                .unwrap()
                .map_err(|e| store::StoreError::io("held", e))
        }
    }

    struct HeldSink(Arc<Held>);

    impl Sink for HeldSink {
        fn name(&self) -> &'static str {
            "held"
        }
        fn write(&mut self, _batch: &[Event]) -> store::Result<Option<Arc<dyn Flush>>> {
            Ok(Some(Arc::clone(&self.0) as Arc<dyn Flush>))
        }
        fn purge_some(
            &mut self,
            _now: chrono::DateTime<chrono::Utc>,
            _limit: usize,
        ) -> store::Result<usize> {
            Ok(0)
        }
        fn record_transit(
            &mut self,
            _transits: &[crate::transit::Transit],
            _deliveries: &[crate::transit::Delivery],
        ) -> store::Result<()> {
            Ok(())
        }
        fn reopen(self: Box<Self>, _config: &Config) -> (Box<dyn Sink>, Option<store::StoreError>) {
            (self, None)
        }
    }

    fn held_writer() -> (EventWriter, std_mpsc::Sender<io::Result<()>>) {
        let (release, held) = std_mpsc::channel();
        let sink = HeldSink(Arc::new(Held {
            release: Arc::new(Mutex::new(held)),
        }));
        (
            EventWriter::spawn(vec![Box::new(sink)], 10, GROUP_COMMIT_WINDOW).unwrap(),
            release,
        )
    }

    /// A message is answered only once its batch's flush has run, and learns if it failed.
    #[tokio::test]
    async fn answers_wait_for_the_flush() {
        let (writer, release) = held_writer();
        let mut first = Box::pin(writer.commit(sample("4First", "a@remote.example")));
        let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut first).await;
        assert!(early.is_err(), "answered before the flush: {early:?}");
        release.send(Ok(())).unwrap();
        assert_eq!(first.await, Ok(()));

        let second = tokio::spawn({
            let writer = writer.clone();
            async move { writer.commit(sample("4Second", "b@remote.example")).await }
        });
        release.send(Err(io::Error::other("disk gone"))).unwrap();
        let failed = second.await.unwrap().unwrap_err();
        assert!(
            failed.contains("held sink") && failed.contains("disk gone"),
            "{failed}"
        );
        writer.stop().await;
    }

    /// Async events hold their place in the queue until they are durable, so the queue
    /// bounds what a power loss could take.
    #[tokio::test]
    async fn async_places_are_given_back_after_the_flush() {
        let (writer, release) = held_writer();
        for n in 0..10 {
            writer
                .enqueue(sample(&format!("4Q{n}"), "a@remote.example"))
                .await;
        }
        let eleventh = writer.enqueue(sample("4Q10", "a@remote.example"));
        let mut eleventh = Box::pin(eleventh);
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(200), &mut eleventh).await;
        assert!(early.is_err(), "a place was free before any flush");
        // However the events were batched, one release per batch is enough.
        for _ in 0..11 {
            release.send(Ok(())).unwrap();
        }
        eleventh.await;
        writer.stop().await;
    }
}
