//! Where the tracker is in the log, kept in `tracking.state` across restarts: a file position
//! (device, inode, offset and a hash of the file's first line) or a journal cursor. Written
//! whole to a temporary file and renamed over the old one, so a crash leaves one or the other.
//! Beside the place, the pseudonymised copy's file and length ([`CopyPlace`]), saved in the same
//! write: the copy then holds exactly the lines up to the place. A state without it (from an
//! earlier version, or saved while the copy was off) loads with none.
//! It holds no personal data: positions, a hash, the journal's own cursor and a file's length.

use super::follow::Position;
use serde::{Deserialize, Serialize};
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Place {
    /// After this line of this log file.
    File { path: PathBuf, position: Position },
    /// After the journal entry with this cursor.
    #[serde(rename = "journald")]
    Journal { cursor: String },
}

/// What is saved: the place in the log, and the copy's place with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(flatten)]
    pub place: Place,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyPlace>,
}

/// How far the pseudonymised copy (`mta_logs.copy`) is written: its current file holds
/// `length` bytes, the lines up to the place saved beside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyPlace {
    /// The copy's current file (`<copy>/mail.log`), and its inode: a rotation that came after
    /// the save is found by it.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub length: u64,
    /// The day (local, `YYYYMMDD`) of the lines it holds; None before the first line with a
    /// time.
    #[serde(default)]
    pub day: Option<String>,
}

/// The saved place; None when there is none yet.
pub fn load(path: &Path) -> io::Result<Option<Saved>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a tracker state ({e}); remove it to read the log from its start"),
        )
    })
}

/// Saves `place` (the log's, and the copy's), durably, replacing the saved one.
pub fn save(path: &Path, place: &Saved) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(
        serde_json::to_string(place)
            .expect("a place serialises")
            .as_bytes(),
    )?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_round_trip_and_a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("track.state");
        assert_eq!(load(&path).unwrap(), None);
        let place = Place::File {
            path: "/var/log/mail.log".into(),
            position: Position {
                dev: 1,
                ino: 2,
                offset: 3,
                head: Some("ab".into()),
            },
        };
        let saved = |place: &Place, copy: Option<CopyPlace>| Saved {
            place: place.clone(),
            copy,
        };
        save(&path, &saved(&place, None)).unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved(&place, None)));
        let copy = CopyPlace {
            path: "/var/log/privacy-milter/mta/mail.log".into(),
            dev: 1,
            ino: 2,
            length: 1234,
            day: Some("20261208".into()),
        };
        save(&path, &saved(&place, Some(copy.clone()))).unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved(&place, Some(copy))));
        let journal = Place::Journal {
            cursor: "s=1;i=2".into(),
        };
        save(&path, &saved(&journal, None)).unwrap();
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("\"source\":\"journald\""));
        assert_eq!(load(&path).unwrap(), Some(saved(&journal, None)));
        // A state of an earlier version: the place alone.
        fs::write(
            &path,
            r#"{"source":"file","path":"/var/log/mail.log","position":{"dev":1,"ino":2,"offset":3,"head":"ab"}}"#,
        )
        .unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved(&place, None)));
        fs::write(&path, "{").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("remove it"), "{e}");
    }
}
