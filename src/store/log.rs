//! Sink `log`: one structured log line per event, for pipelines that already collect logs.

use crate::{
    config::Config,
    event::Event,
    store::{Flush, Result, Sink, StoreError},
    transit::{Delivery, Transit},
};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tracing::info;

pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn write(&mut self, batch: &[Event]) -> Result<Option<Arc<dyn Flush>>> {
        for event in batch {
            info!(target: "privacy_milter::event", queue_id = event.queue_id.as_deref().unwrap_or("-"), event = %event.to_json(), "event");
        }
        Ok(None)
    }

    /// Nothing to purge: the lines are the log's.
    fn purge_some(&mut self, _now: DateTime<Utc>, _limit: usize) -> Result<usize> {
        Ok(0)
    }

    fn record_transit(&mut self, _transits: &[Transit], deliveries: &[Delivery]) -> Result<()> {
        for delivery in deliveries {
            info!(target: "privacy_milter::delivery", queue_id = delivery.queue_id.as_str(), delivery = %delivery.to_json(), "delivery");
        }
        Ok(())
    }

    /// Nothing to open: the log is the daemon's.
    fn reopen(self: Box<Self>, _config: &Config) -> (Box<dyn Sink>, Option<StoreError>) {
        (self, None)
    }
}
