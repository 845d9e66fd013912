//! Sink `log`: one structured log line per event, for pipelines that already collect logs.

use super::{Flush, Sink};
use crate::event::Event;
use std::{io, sync::Arc};
use tracing::info;

pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn write(&mut self, batch: &[Event]) -> io::Result<Option<Arc<dyn Flush>>> {
        for event in batch {
            info!(target: "privacy_milter::event", queue_id = event.queue_id.as_deref().unwrap_or("-"), event = %event.to_json(), "event");
        }
        Ok(None)
    }
}
