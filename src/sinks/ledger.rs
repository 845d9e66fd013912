//! Sink `ledger`: events into the SQLite ledger, one transaction per batch.

use super::Sink;
use crate::{event::Event, ledger::Ledger};
use std::{io, path::Path};

pub struct LedgerSink(Ledger);

impl LedgerSink {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ledger::open(path)
            .map(Self)
            .map_err(|e| io::Error::other(format!("events.ledger.path {}: {e}", path.display())))
    }
}

impl Sink for LedgerSink {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn write(&mut self, batch: &[Event]) -> io::Result<()> {
        self.0.insert(batch).map_err(io::Error::other)
    }

    fn purge(&mut self, now: chrono::DateTime<chrono::Utc>, limit: usize) -> io::Result<usize> {
        self.0.purge_some(now, limit).map_err(io::Error::other)
    }
}
