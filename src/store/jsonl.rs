//! Sink `jsonl`: one JSON object per line, appended to `events.jsonl.path`.
//!
//! Each batch goes out in one `write` on an `O_APPEND` file, then `fdatasync`, so a crash
//! leaves whole lines and every acknowledged event on disk. SIGHUP re-opens the file, so
//! logrotate can move it away.

use crate::{
    config::Config,
    event::Event,
    store::{self, Flush, Result, Sink, StoreError},
    transit::{Delivery, Transit},
};
use chrono::{DateTime, Utc};
use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

pub struct JsonlSink {
    path: PathBuf,
    file: File,
}

impl JsonlSink {
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| StoreError::io(path, e).opening("events.jsonl.path"))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl JsonlSink {
    /// Appends whole lines in one `write` and makes them durable.
    fn append(&mut self, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| StoreError::io(&self.path, e))
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write(&mut self, batch: &[Event]) -> Result<Option<Arc<dyn Flush>>> {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for event in batch {
            serde_json::to_writer(&mut buf, event).expect("events always serialise");
            buf.push(b'\n');
        }
        self.append(&buf)?;
        Ok(None)
    }

    /// Nothing to purge: the file is the operator's to rotate.
    fn purge_some(&mut self, _now: DateTime<Utc>, _limit: usize) -> Result<usize> {
        Ok(0)
    }

    /// One line per delivery outcome (schema `privacy-milter.delivery.v1`), beside the events.
    fn record_transit(&mut self, _transits: &[Transit], deliveries: &[Delivery]) -> Result<()> {
        let mut buf = Vec::with_capacity(deliveries.len() * 384);
        for delivery in deliveries {
            buf.extend_from_slice(delivery.to_json().as_bytes());
            buf.push(b'\n');
        }
        self.append(&buf)
    }

    /// The new file opens before the old one closes: a file that cannot be opened (a
    /// directory that is gone or not writable) leaves the events going into the old one.
    fn reopen(self: Box<Self>, config: &Config) -> (Box<dyn Sink>, Option<StoreError>) {
        store::reopen_beside(self, || {
            Ok(Box::new(Self::open(&config.events.jsonl.path)?) as Box<dyn Sink>)
        })
    }
}
