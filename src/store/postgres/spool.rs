//! The local files of the PostgreSQL sink: the spool, where events wait while the
//! database cannot take them, and the rejects file, where events it refused for good wait
//! for the operator. Both are JSON lines, appended and fsynced.

use crate::{
    event::Event,
    metrics::DAEMON,
    store::{self, StoreError},
};
use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
};
use tracing::error;

/// Most spooled events replayed in one transaction.
const REPLAY_CHUNK: usize = 500;

/// Events the database refused for good: JSON lines like the spool's, appended and fsynced.
/// Fix the cause, then (with the daemon stopped) append the file to the spool to retry them.
pub(super) struct Rejects {
    pub(super) path: PathBuf,
}

impl Rejects {
    pub(super) fn add(&mut self, event: &Event) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        file.write_all(format!("{}\n", event.to_json()).as_bytes())?;
        file.sync_data()
    }

    /// Drops the events that have expired; personal data is not kept here longer than in
    /// the ledger.
    pub(super) fn purge(&mut self, now: chrono::DateTime<chrono::Utc>) -> io::Result<()> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let expired = |line: &str| {
            serde_json::from_str::<Event>(line).is_ok_and(|e| {
                chrono::DateTime::parse_from_rfc3339(&e.retention.expires_at)
                    .is_ok_and(|t| t <= now)
            })
        };
        let kept: String = text
            .lines()
            .filter(|line| !expired(line))
            .map(|line| format!("{line}\n"))
            .collect();
        if kept.len() == text.len() {
            return Ok(());
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(kept.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Events waiting for the database: JSON lines, appended and fsynced.
pub(super) struct Spool {
    pub(super) path: PathBuf,
    file: File,
    /// Events in it (lines), for the metrics.
    held: usize,
}

impl Spool {
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        if !existed {
            // Make the new file's name durable too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        let held = BufReader::new(File::open(path)?).lines().count();
        DAEMON.postgres_spooled.set(held as i64);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            held,
        })
    }

    pub(super) fn is_empty(&self) -> io::Result<bool> {
        Ok(self.file.metadata()?.len() == 0)
    }

    pub(super) fn append(&mut self, batch: &[Event]) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        let mut text = String::new();
        if len > 0 {
            // A line cut short by a crash must not swallow the next event.
            let mut last = [0u8];
            self.file.read_exact_at(&mut last, len - 1)?;
            if last[0] != b'\n' {
                text.push('\n');
            }
        }
        for event in batch {
            text.push_str(&event.to_json());
            text.push('\n');
        }
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()?;
        self.held += batch.len();
        DAEMON.postgres_spooled.set(self.held as i64);
        Ok(())
    }

    /// Hands every spooled event to `insert`, in order and in chunks; returns how many.
    /// A line that does not parse (cut short by a crash before its write was confirmed) is
    /// logged and skipped.
    pub(super) fn replay(
        &self,
        mut insert: impl FnMut(&[Event]) -> store::Result<()>,
    ) -> store::Result<usize> {
        let named = |e| StoreError::io(&self.path, e);
        let reader = BufReader::new(File::open(&self.path).map_err(named)?);
        let mut chunk = Vec::with_capacity(REPLAY_CHUNK);
        let mut total = 0;
        for line in reader.lines() {
            let line = line.map_err(named)?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => chunk.push(event),
                Err(e) => error!(
                    target: super::TARGET,
                    "skipping a damaged line of the spool {}: {e}: {line}",
                    self.path.display()
                ),
            }
            if chunk.len() == REPLAY_CHUNK {
                insert(&chunk)?;
                total += chunk.len();
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            insert(&chunk)?;
            total += chunk.len();
        }
        Ok(total)
    }

    pub(super) fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.held = 0;
        DAEMON.postgres_spooled.set(0);
        Ok(())
    }
}
