//! Sink `log`: one structured log line per event, for pipelines that already collect logs.

use super::Sink;
use crate::event::Event;
use std::io;
use tracing::info;

pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn write(&mut self, batch: &[Event]) -> io::Result<()> {
        for event in batch {
            info!(target: "privacy_milter::event", queue_id = event.queue_id.as_deref().unwrap_or("-"), event = %event.to_json(), "event");
        }
        Ok(())
    }
}
