//! Sink `log`: one structured log line per event, for pipelines that already collect logs.

use crate::{
    event::Event,
    store::{Flush, Result, Store},
    transit::{Delivery, Transit},
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

    fn record_transit(&mut self, _transits: &[Transit], deliveries: &[Delivery]) -> Result<()> {
        for delivery in deliveries {
            info!(target: "privacy_milter::delivery", queue_id = delivery.queue_id.as_str(), delivery = %delivery.to_json(), "delivery");
        }
        Ok(())
    }
}
