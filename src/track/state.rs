//! Where the tracker is in the log, kept in `tracking.state` across restarts: a file position
//! (device, inode, offset and a hash of the file's first line) or a journal cursor. Written
//! whole to a temporary file and renamed over the old one, so a crash leaves one or the other.
//! Beside the place, the pseudonymised copy's file and length ([`CopyPlace`]), saved in the same
//! write: the copy then holds exactly the lines up to the place. A state without it (from an
//! earlier version, or saved while the copy was off) loads with none.
//! The temporary gets a random name in the state's directory and is created new (never a file
//! or link already there), for the owner only: a link planted there is never written through.
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
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut file) = create_temporary(dir, random_names(&base))?;
    let written = file
        .write_all(
            serde_json::to_string(place)
                .expect("a place serialises")
                .as_bytes(),
        )
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Names for the temporary: unpredictable, so nobody can plant a link at the one to come.
fn random_names(base: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::repeat_with(move || {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).expect("the system has randomness");
        format!(".{base}.{}.tmp", hex::encode(bytes))
    })
}

/// Creates a new file in `dir` under the first of `names` not taken, for the owner only. A
/// name taken by anything, a symlink above all (dangling or not), is passed over, never
/// opened: O_EXCL with O_CREAT does not follow a final symlink, O_NOFOLLOW says so twice.
fn create_temporary(
    dir: &Path,
    names: impl Iterator<Item = String>,
) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for name in names.take(16) {
        let tmp = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no name for a temporary file")))
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

    /// A symlink planted at the temporary's old fixed name is not written through (as root it
    /// overwrote its target).
    #[test]
    fn a_symlink_at_the_old_temporary_name_is_not_written_through() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("track.state");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        symlink(&victim, dir.path().join("track.state.tmp")).unwrap();
        let place = Saved {
            place: Place::Journal {
                cursor: "s=1;i=2".into(),
            },
            copy: None,
        };
        save(&path, &place).unwrap();
        assert_eq!(load(&path).unwrap(), Some(place.clone()));
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    /// Names the tracker would pick, planted beforehand (dangling or not): each is passed
    /// over, and a save leaves no temporary behind.
    #[test]
    fn names_already_taken_are_passed_over() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("track.state");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let dangling = dir.path().join("would-be-created");
        symlink(&victim, dir.path().join("planted-1")).unwrap();
        symlink(&dangling, dir.path().join("planted-2")).unwrap();
        let names = ["planted-1", "planted-2", "free"].map(String::from);
        let (tmp, _file) = create_temporary(dir.path(), names.into_iter()).unwrap();
        assert_eq!(tmp, dir.path().join("free"));
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!dangling.exists());
        fs::remove_file(&tmp).unwrap();
        let place = Saved {
            place: Place::Journal { cursor: "c".into() },
            copy: None,
        };
        save(&path, &place).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp") && n != "track.state.tmp")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
