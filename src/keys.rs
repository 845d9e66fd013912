//! The key ring in `[privacy] keys`: HMAC keys for pseudonymised events and AEAD keys for
//! encrypted `X-Originating-IP` tokens.
//!
//! A key's id is its creation time (`20261126T180000Z`), written into every value made with
//! it. A new key of each kind is made every `key_rotation`. A key is destroyed once the
//! longest retention period has passed since it was retired (since its successor was made):
//! by then every event made with it has expired, and its HMACs can no longer be linked to
//! anyone. The directory must be 0700 and every key file 0600; looser modes are refused.

use chrono::{DateTime, NaiveDateTime, Utc};
use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const KEY_LEN: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Keys for HMAC-SHA256 of IPs and addresses in events.
    Hmac,
    /// Keys for XChaCha20-Poly1305 tokens in the originating-IP header.
    Aead,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Hmac => "hmac-",
            Self::Aead => "aead-",
        }
    }
}

#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub created: DateTime<Utc>,
    pub bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// The live keys of one kind, newest last.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    pub keys: Vec<Arc<Key>>,
}

impl Ring {
    /// The key new values are made with.
    pub fn current(&self) -> Option<&Arc<Key>> {
        self.keys.last()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Key>> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// What is wrong with the key ring, and where.
#[derive(Debug, thiserror::Error)]
#[error("privacy.keys: {}: {problem}", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    pub problem: String,
}

fn err(path: &Path, what: impl std::fmt::Display) -> KeyError {
    KeyError {
        path: path.to_path_buf(),
        problem: what.to_string(),
    }
}

/// The keys new values are made with.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    /// For `hmac` privacy modes.
    pub hmac: Option<Arc<Key>>,
    /// For `originating_ip` mode `encrypted`.
    pub aead: Option<Arc<Key>>,
}

/// How the key ring is kept.
#[derive(Clone, Debug)]
pub struct Policy {
    pub dir: PathBuf,
    /// The kinds in use: only those are made and rotated.
    pub hmac: bool,
    pub aead: bool,
    /// How often a new key is made.
    pub rotation: Duration,
    /// How long a retired key is kept: the longest retention period.
    pub keep: Duration,
}

/// The periodic duty: makes a new key of each kind in use when rotation is due, destroys the
/// retired keys (see [`destroy_retired`]), and returns the current keys with the ids destroyed.
pub fn refresh(policy: &Policy, now: DateTime<Utc>) -> Result<(Secrets, Vec<String>), KeyError> {
    let mut secrets = Secrets::default();
    for (kind, used) in [(Kind::Hmac, policy.hmac), (Kind::Aead, policy.aead)] {
        if used {
            let current = rotate(&policy.dir, kind, policy.rotation, now)?
                .current()
                .cloned();
            match kind {
                Kind::Hmac => secrets.hmac = current,
                Kind::Aead => secrets.aead = current,
            }
        }
    }
    let destroyed = destroy_retired(&policy.dir, policy.keep, now)?;
    Ok((secrets, destroyed))
}

/// The one rule for destroying keys, used by the daemon and by `ledger purge`: a key of either
/// kind is destroyed once `keep` (the longest retention period) has passed since it was
/// retired (since its successor was made). By then every event made with it has expired, and
/// its HMACs can no longer be linked to anyone. Returns the ids destroyed; a missing
/// directory holds nothing to destroy.
pub fn destroy_retired(
    dir: &Path,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<String>, KeyError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut destroyed = destroy_expired(dir, Kind::Hmac, keep, now)?;
    destroyed.extend(destroy_expired(dir, Kind::Aead, keep, now)?);
    Ok(destroyed)
}

/// Creates the directory (0700) if it is missing, and checks its mode if it exists.
pub fn ensure_dir(dir: &Path) -> Result<(), KeyError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(dir, format!("cannot create the key directory: {e}"))),
        Err(e) => Err(err(dir, e)),
        Ok(md) if !md.is_dir() => Err(err(dir, "is not a directory")),
        Ok(md) if md.permissions().mode() & 0o077 != 0 => Err(err(
            dir,
            format!(
                "mode {:04o} lets others in; the key directory must be 0700 (chmod 0700 {})",
                md.permissions().mode() & 0o7777,
                dir.display()
            ),
        )),
        Ok(_) => Ok(()),
    }
}

/// Reads every key of `kind`, refusing a directory or key files that others could read. A
/// missing directory holds no keys: only the daemon creates it (as its own user), so that
/// `check-config` or `ip decrypt` run as root never leave a directory the daemon cannot use.
pub fn load(dir: &Path, kind: Kind) -> Result<Ring, KeyError> {
    if !dir.exists() {
        return Ok(Ring::default());
    }
    ensure_dir(dir)?;
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let path = entry.map_err(|e| err(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(id) = name
            .strip_prefix(kind.prefix())
            .and_then(|n| n.strip_suffix(".key"))
        else {
            continue;
        };
        let created = NaiveDateTime::parse_from_str(id, ID_FORMAT)
            .map_err(|_| {
                err(
                    &path,
                    "the file name does not hold a key id such as 20261126T180000Z",
                )
            })?
            .and_utc();
        let md = fs::metadata(&path).map_err(|e| err(&path, e))?;
        if md.permissions().mode() & 0o077 != 0 {
            return Err(err(
                &path,
                format!(
                    "mode {:04o} lets others read the key; it must be 0600 (chmod 0600 {})",
                    md.permissions().mode() & 0o7777,
                    path.display()
                ),
            ));
        }
        let bytes: [u8; KEY_LEN] = fs::read(&path)
            .map_err(|e| err(&path, e))?
            .try_into()
            .map_err(|_| err(&path, format!("a key file holds exactly {KEY_LEN} bytes")))?;
        keys.push(Arc::new(Key {
            id: id.to_string(),
            created,
            bytes,
        }));
    }
    keys.sort_by_key(|k| k.created);
    Ok(Ring { keys })
}

fn path_of(dir: &Path, kind: Kind, id: &str) -> PathBuf {
    dir.join(format!("{}{id}.key", kind.prefix()))
}

/// Makes a new key when there is none or the newest is older than `rotation`; returns the
/// ring as it now is.
pub fn rotate(
    dir: &Path,
    kind: Kind,
    rotation: Duration,
    now: DateTime<Utc>,
) -> Result<Ring, KeyError> {
    ensure_dir(dir)?;
    let mut ring = load(dir, kind)?;
    let due = match ring.current() {
        None => true,
        Some(k) => (now - k.created)
            .to_std()
            .map(|age| age >= rotation)
            .unwrap_or(false),
    };
    if due {
        let id = now.format(ID_FORMAT).to_string();
        if ring.get(&id).is_none() {
            let mut bytes = [0u8; KEY_LEN];
            getrandom::getrandom(&mut bytes)
                .map_err(|e| err(dir, format!("no randomness: {e}")))?;
            let path = path_of(dir, kind, &id);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| err(&path, e))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| err(&path, e))?;
            ring.keys.push(Arc::new(Key {
                id,
                created: now.with_nanosecond_zero(),
                bytes,
            }));
        }
    }
    Ok(ring)
}

/// Deletes the keys of `kind` retired longer than `keep` ago; returns their ids.
fn destroy_expired(
    dir: &Path,
    kind: Kind,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<String>, KeyError> {
    let ring = load(dir, kind)?;
    let mut destroyed = Vec::new();
    for pair in ring.keys.windows(2) {
        let (key, successor) = (&pair[0], &pair[1]);
        let retired_for = (now - successor.created).to_std().unwrap_or_default();
        if retired_for > keep {
            let path = path_of(dir, kind, &key.id);
            fs::remove_file(&path).map_err(|e| err(&path, e))?;
            destroyed.push(key.id.clone());
        }
    }
    Ok(destroyed)
}

trait NanosecondZero {
    fn with_nanosecond_zero(self) -> Self;
}

impl NanosecondZero for DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        chrono::Timelike::with_nanosecond(&self, 0).unwrap_or(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_and_destruction() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("keys");
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = Duration::from_secs(86400);
        let ring = rotate(&dir, Kind::Hmac, 30 * day, t0).unwrap();
        assert_eq!(ring.keys.len(), 1);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = path_of(&dir, Kind::Hmac, "20260101T000000Z");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // Not due yet; then due.
        assert_eq!(
            rotate(&dir, Kind::Hmac, 30 * day, t0 + chrono::Duration::days(29))
                .unwrap()
                .keys
                .len(),
            1
        );
        let t1 = t0 + chrono::Duration::days(30);
        let ring = rotate(&dir, Kind::Hmac, 30 * day, t1).unwrap();
        assert_eq!(ring.keys.len(), 2);
        assert_eq!(ring.current().unwrap().id, "20260131T000000Z");
        // Other kinds are separate.
        assert!(load(&dir, Kind::Aead).unwrap().keys.is_empty());

        // The first key was retired at t1: kept for 90 days after that, then destroyed.
        let keep = 90 * day;
        assert!(
            destroy_expired(&dir, Kind::Hmac, keep, t1 + chrono::Duration::days(90))
                .unwrap()
                .is_empty()
        );
        let gone =
            destroy_expired(&dir, Kind::Hmac, keep, t1 + chrono::Duration::days(91)).unwrap();
        assert_eq!(gone, ["20260101T000000Z"]);
        assert_eq!(load(&dir, Kind::Hmac).unwrap().keys.len(), 1);
    }

    #[test]
    fn loading_never_creates_the_directory() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("keys");
        assert!(load(&dir, Kind::Hmac).unwrap().keys.is_empty());
        assert!(!dir.exists());
    }

    #[test]
    fn loose_modes_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("keys");
        rotate(&dir, Kind::Hmac, Duration::from_secs(60), Utc::now()).unwrap();
        let key = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&dir, Kind::Hmac).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("must be 0600"), "{e}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let e = load(&dir, Kind::Hmac).unwrap_err().to_string();
        assert!(e.contains("0755") && e.contains("must be 0700"), "{e}");
    }
}
