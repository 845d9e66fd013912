//! Sink `log`: one structured log line per event, for pipelines that already collect logs.

use crate::{
    event::Event,
    store::{Flush, Result, Store},
};
use std::sync::Arc;
use tracing::info;

pub struct LogSink;

impl Store for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn write(&mut self, batch: &[Event]) -> Result<Option<Arc<dyn Flush>>> {
        for event in batch {
            info!(target: "privacy_milter::event", queue_id = event.queue_id.as_deref().unwrap_or("-"), event = %event.to_json(), "event");
        }
        Ok(None)
    }
}
