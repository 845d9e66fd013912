//! Where the tracker is in the log, kept in `tracking.state` across restarts: a file position
//! (device, inode, offset and a hash of the file's first line) or a journal cursor. Written
//! whole to a temporary file and renamed over the old one, so a crash leaves one or the other.
//! It holds no personal data: positions, a hash and the journal's own cursor.

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

/// The saved place; None when there is none yet.
pub fn load(path: &Path) -> io::Result<Option<Place>> {
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

/// Saves `place`, durably, replacing the saved one.
pub fn save(path: &Path, place: &Place) -> io::Result<()> {
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
        save(&path, &place).unwrap();
        assert_eq!(load(&path).unwrap(), Some(place));
        let journal = Place::Journal {
            cursor: "s=1;i=2".into(),
        };
        save(&path, &journal).unwrap();
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("\"source\":\"journald\""));
        assert_eq!(load(&path).unwrap(), Some(journal));
        fs::write(&path, "{").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("remove it"), "{e}");
    }
}
