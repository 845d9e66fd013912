//! Sink `jsonl`: one JSON object per line, appended to `events.jsonl.path`.
//!
//! Each batch goes out in one `write` on an `O_APPEND` file, then `fdatasync`, so a crash
//! leaves whole lines and every acknowledged event on disk. SIGHUP re-opens the file, so
//! logrotate can move it away.

use super::{Flush, Sink};
use crate::event::Event;
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

pub struct JsonlSink {
    path: PathBuf,
    file: File,
}

impl JsonlSink {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("events.jsonl.path {}: {e}", path.display()),
                )
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write(&mut self, batch: &[Event]) -> io::Result<Option<Arc<dyn Flush>>> {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for event in batch {
            serde_json::to_writer(&mut buf, event)?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        Ok(None)
    }
}
