//! The writer's watch on the SQLite ledger's file.

use crate::store::{Result, StoreError};
use std::{
    fs::File,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
};
use tracing::{error, warn};

/// Watches the ledger's file under the daemon: deleted, truncated or overwritten by something
/// else, it must not go on taking events that nobody will find (SQLite would write on into an
/// unlinked inode, or a file it no longer understands). A file moved aside (renamed, still
/// linked) keeps taking events, which stay in it, until a reload opens the one at the path.
pub(super) struct FileGuard {
    path: PathBuf,
    /// The file as opened, for its identity, size and header.
    file: File,
    /// Its largest size seen: a ledger's file never shrinks (no VACUUM, no auto_vacuum).
    largest: u64,
    /// The move has been reported.
    moved: bool,
}

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

impl FileGuard {
    pub(super) fn new(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let mut guard = Self {
            path: path.to_path_buf(),
            file,
            largest: 0,
            moved: false,
        };
        guard.check()?;
        Ok(guard)
    }

    /// Whether the file at the path is still the one opened.
    pub(super) fn at_path(&self) -> bool {
        let (Ok(held), Ok(here)) = (self.file.metadata(), std::fs::metadata(&self.path)) else {
            return false;
        };
        (held.dev(), held.ino()) == (here.dev(), here.ino())
    }

    /// Where the file opened is now, if it was moved aside (renamed, still linked); None if
    /// it is at its path or was deleted.
    pub(super) fn moved_to(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        let held = self.file.metadata().ok().filter(|m| m.nlink() > 0)?;
        let now = std::fs::read_link(format!("/proc/self/fd/{}", self.file.as_raw_fd())).ok()?;
        let there = std::fs::metadata(&now).ok()?;
        let same = (there.dev(), there.ino()) == (held.dev(), held.ino());
        (same && now != self.path).then_some(now)
    }

    /// Three system calls per batch: the path's identity, the file's size, its magic.
    pub(super) fn check(&mut self) -> Result<()> {
        let broken = |what: &str| {
            error!(
                target: "privacy_milter::sinks::ledger",
                "ledger {}: {what}; no event is written to it until it is restored (or moved aside) and the daemon reloaded",
                self.path.display()
            );
            StoreError::Damaged {
                path: self.path.clone(),
                what: what.to_string(),
            }
        };
        let held = self
            .file
            .metadata()
            .map_err(|e| StoreError::io(&self.path, e))?;
        if held.nlink() == 0 {
            return Err(broken("the file was deleted while the daemon was running"));
        }
        let here = match std::fs::metadata(&self.path) {
            Ok(now) => (now.dev(), now.ino()) == (held.dev(), held.ino()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::io(&self.path, e)),
        };
        if !here && !self.moved {
            warn!(
                target: "privacy_milter::sinks::ledger",
                "ledger {}: the file was moved away (or another put in its place); events go on into the moved file until a reload (SIGHUP) opens the one at this path",
                self.path.display()
            );
        }
        self.moved = !here;
        if held.len() < self.largest {
            return Err(broken(
                "the file was truncated while the daemon was running",
            ));
        }
        self.largest = held.len();
        if held.len() >= SQLITE_MAGIC.len() as u64 {
            let mut magic = [0u8; 16];
            self.file
                .read_exact_at(&mut magic, 0)
                .map_err(|e| StoreError::io(&self.path, e))?;
            if &magic != SQLITE_MAGIC {
                return Err(broken(
                    "the file was overwritten: it is no SQLite database any more",
                ));
            }
        }
        Ok(())
    }
}
