//! The key ring in `[privacy] keys`: HMAC keys for pseudonymised events and transit tags, and
//! AEAD keys for encrypted `X-Originating-IP` tokens.
//!
//! A key's id is its creation time (`20261126T180000Z`), written into every value made with
//! it. A new key of each kind is made every `key_rotation`. A key is destroyed once the
//! longest retention period has passed since it was retired (since its successor was made):
//! by then every event made with it has expired, and its HMACs can no longer be linked to
//! anyone. The directory must be 0700 and every key file 0600; looser modes are refused.
//!
//! A key id from the future (beyond [`CLOCK_SKEW`]) is refused: it would stay the current key,
//! never rotated, never destroyed. [`Watch`] tells a change of the ring made by someone else
//! (a key deleted or added by hand, the directory removed) from the daemon's own.

use chrono::{DateTime, NaiveDateTime, Utc};
use std::{
    collections::BTreeSet,
    fmt, fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const KEY_LEN: usize = 32;

/// How far ahead of the clock a key id may be: a clock stepped back a little (by NTP, or a
/// key made on a host whose clock ran ahead) must not stop the daemon, while a key dated
/// further ahead would stay current for that long and is refused.
pub const CLOCK_SKEW: Duration = Duration::from_secs(3600);

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
    /// For transit tags: every live HMAC key, derived for that purpose (see
    /// [`Purpose::TransitTag`]), newest last; a tag made under a retired key still verifies
    /// until the key is destroyed.
    pub transit: Ring,
}

/// What a key derived from an HMAC key of the ring is for. The pseudonymisation HMAC uses the
/// ring's key itself; every other use gets a key of its own, so that no value made for one
/// purpose can stand for one made for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    TransitTag,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::TransitTag => b"privacy-milter transit-tag v1",
        }
    }
}

/// The key for `purpose` derived from the HMAC key `key`: HMAC-SHA256 keyed with the
/// purpose's label, of the key (HKDF-Extract with the label as salt, RFC 5869). A pseudonym
/// is an HMAC keyed with the key itself, so no value pseudonymised, whatever it holds, gives
/// a derived key. It keeps the id and creation time of the key it comes from, so it rotates
/// and is destroyed with it.
pub fn derive(key: &Key, purpose: Purpose) -> Key {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(purpose.label()).expect("any key length");
    mac.update(&key.bytes);
    Key {
        id: key.id.clone(),
        created: key.created,
        bytes: mac.finalize().into_bytes().into(),
    }
}

/// [`derive`] for every key of `ring`.
pub fn derive_ring(ring: &Ring, purpose: Purpose) -> Ring {
    Ring {
        keys: ring
            .keys
            .iter()
            .map(|k| Arc::new(derive(k, purpose)))
            .collect(),
    }
}

/// How the key ring is kept.
#[derive(Clone, Debug)]
pub struct Policy {
    pub dir: PathBuf,
    /// The kinds in use: only those are made and rotated. HMAC keys serve pseudonymisation
    /// and transit tags.
    pub hmac: bool,
    pub aead: bool,
    /// How often a new key is made.
    pub rotation: Duration,
    /// How long a retired key is kept: the longest retention period.
    pub keep: Duration,
}

/// What [`refresh`] gives: the current keys, and the ids it destroyed.
pub type Refreshed = (Secrets, Vec<String>);

/// The periodic duty: makes a new key of each kind in use when rotation is due, destroys the
/// retired keys (see [`destroy_retired`]), and returns the current keys with the ids destroyed.
pub fn refresh(policy: &Policy, now: DateTime<Utc>) -> Result<Refreshed, KeyError> {
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
    if policy.hmac {
        // Read after destruction: a destroyed key verifies no tag.
        secrets.transit = derive_ring(&load_at(&policy.dir, Kind::Hmac, now)?, Purpose::TransitTag);
    }
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
    load_at(dir, kind, Utc::now())
}

/// [`load`], with `now` the time key ids may not be ahead of (beyond [`CLOCK_SKEW`]).
fn load_at(dir: &Path, kind: Kind, now: DateTime<Utc>) -> Result<Ring, KeyError> {
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
        if let Ok(ahead) = (created - now).to_std() {
            if ahead > CLOCK_SKEW {
                return Err(err(
                    &path,
                    format!(
                        "the key id {id} is {} in the future (at most {} of clock skew is \
                         allowed): it would stay the current key, never rotated nor destroyed; \
                         remove the file, or set the clock right",
                        describe(ahead),
                        describe(CLOCK_SKEW)
                    ),
                ));
            }
        }
        let md = fs::metadata(&path).map_err(|e| err(&path, e))?;
        // A FIFO or a device would block or never end the read.
        if !md.is_file() {
            return Err(err(&path, "is not a regular file"));
        }
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
    let mut ring = load_at(dir, kind, now)?;
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
    let ring = load_at(dir, kind, now)?;
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

/// A duration as a person reads it: `3d 4h`, `5m 10s`.
fn describe(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86400 => format!("{}d {}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}m {}s", s / 60, s % 60),
    }
}

/// The key files of a directory, by name without `.key` (`hmac-20261126T180000Z`); `None`
/// when the directory is missing.
fn key_names(dir: &Path) -> Result<Option<BTreeSet<String>>, KeyError> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(dir, e)),
        Ok(entries) => entries,
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        let name = entry.map_err(|e| err(dir, e))?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".key")) else {
            continue;
        };
        if [Kind::Hmac, Kind::Aead]
            .iter()
            .any(|k| stem.starts_with(k.prefix()))
        {
            names.insert(stem.to_string());
        }
    }
    Ok(Some(names))
}

/// Keeps the ring as the daemon last left it, so that the next look can tell a change made
/// by someone else: a key deleted (the next refresh makes a new one where none is left, and
/// every HMAC changes), a key added, the directory removed.
#[derive(Debug, Default)]
pub struct Watch {
    /// The directory and its key files after the last refresh.
    last: Option<(PathBuf, BTreeSet<String>)>,
}

/// A change of the ring that neither rotation nor destruction made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingChange {
    pub dir: PathBuf,
    /// The directory itself was gone.
    pub dir_gone: bool,
    /// Keys gone that the destruction rule would have kept (`hmac-ID`).
    pub gone: Vec<String>,
    pub appeared: Vec<String>,
}

impl fmt::Display for RingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key ring {} changed other than by rotation or destruction:",
            self.dir.display()
        )?;
        if self.dir_gone {
            write!(f, " the directory was removed;")?;
        }
        if !self.gone.is_empty() {
            write!(f, " keys gone: {};", self.gone.join(", "))?;
        }
        if !self.appeared.is_empty() {
            write!(f, " keys appeared: {};", self.appeared.join(", "))?;
        }
        write!(
            f,
            " pseudonyms made from now on may not match earlier ones (a new key is made where \
             none is left)"
        )
    }
}

impl Watch {
    /// Looks at the ring, tells what changed since the daemon last left it, then rotates and
    /// destroys as [`refresh`] does and remembers the ring as it is left.
    pub fn refresh(
        &mut self,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> (Option<RingChange>, Result<Refreshed, KeyError>) {
        let found = key_names(&policy.dir);
        let change = match (&self.last, &found) {
            (Some((dir, last)), Ok(found)) if *dir == policy.dir => {
                changes(dir, last, found.as_ref(), policy.keep, now)
            }
            _ => None,
        };
        // Told once: from here on the ring as found is the one known.
        if let Ok(found) = found {
            self.last = Some((policy.dir.clone(), found.unwrap_or_default()));
        }
        let refreshed = refresh(policy, now);
        if refreshed.is_ok() {
            if let Ok(left) = key_names(&policy.dir) {
                self.last = Some((policy.dir.clone(), left.unwrap_or_default()));
            }
        }
        (change, refreshed)
    }
}

/// What changed from `last` to `found` that the destruction rule does not explain: a key
/// gone whose successor was made less than `keep` ago, or a key that appeared.
fn changes(
    dir: &Path,
    last: &BTreeSet<String>,
    found: Option<&BTreeSet<String>>,
    keep: Duration,
    now: DateTime<Utc>,
) -> Option<RingChange> {
    let empty = BTreeSet::new();
    let found_set = found.unwrap_or(&empty);
    let created = |name: &str| {
        let id = name.split_once('-').map_or(name, |(_, id)| id);
        NaiveDateTime::parse_from_str(id, ID_FORMAT)
            .ok()
            .map(|t| t.and_utc())
    };
    let gone: Vec<String> = last
        .difference(found_set)
        .filter(|name| {
            // Names sort by kind, then by time: the successor is the next of the same kind.
            let kind = name.split('-').next().unwrap_or("");
            let successor = last
                .range::<String, _>((
                    std::ops::Bound::Excluded(name.to_string()),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .filter(|next| next.split('-').next() == Some(kind));
            let destroyed_by_rule = successor
                .and_then(|next| created(next))
                .and_then(|made| (now - made).to_std().ok())
                .is_some_and(|retired_for| retired_for > keep);
            !destroyed_by_rule
        })
        .cloned()
        .collect();
    let appeared: Vec<String> = found_set.difference(last).cloned().collect();
    let dir_gone = found.is_none() && !last.is_empty();
    (dir_gone || !gone.is_empty() || !appeared.is_empty()).then(|| RingChange {
        dir: dir.to_path_buf(),
        dir_gone,
        gone,
        appeared,
    })
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

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn write_key(dir: &Path, name: &str) {
        let path = dir.join(format!("{name}.key"));
        fs::write(&path, [1u8; KEY_LEN]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn keys_from_the_future_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("keys");
        let now = at("2026-11-26T18:00:00Z");
        rotate(&dir, Kind::Hmac, Duration::from_secs(86400), now).unwrap();
        // Within the allowance: accepted (a clock stepped back a little).
        write_key(&dir, "hmac-20261126T185900Z");
        assert_eq!(load_at(&dir, Kind::Hmac, now).unwrap().keys.len(), 2);
        write_key(&dir, "hmac-20261126T190100Z");
        let e = load_at(&dir, Kind::Hmac, now).unwrap_err();
        assert!(e.path.ends_with("hmac-20261126T190100Z.key"), "{e}");
        assert!(e.problem.contains("1h 1m in the future"), "{e}");
        let e = rotate(&dir, Kind::Hmac, Duration::from_secs(86400), now).unwrap_err();
        assert!(e.to_string().contains("in the future"), "{e}");
        // Other kinds are not held up by it.
        assert!(load_at(&dir, Kind::Aead, now).is_ok());
    }

    #[test]
    fn the_watch_tells_others_changes_from_our_own() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("keys");
        let day = Duration::from_secs(86400);
        let policy = Policy {
            dir: dir.clone(),
            hmac: true,
            aead: false,
            rotation: 30 * day,
            keep: 90 * day,
        };
        let t0 = at("2026-01-01T00:00:00Z");
        let mut watch = Watch::default();
        let refresh_at = |watch: &mut Watch, t| {
            let (change, result) = watch.refresh(&policy, t);
            result.unwrap();
            change
        };
        // The first look, a rotation, a destruction: all our own.
        assert_eq!(refresh_at(&mut watch, t0), None);
        let t1 = t0 + chrono::Duration::days(30);
        assert_eq!(refresh_at(&mut watch, t1), None);
        assert_eq!(load(&dir, Kind::Hmac).unwrap().keys.len(), 2);
        let t2 = t1 + chrono::Duration::days(91);
        assert_eq!(refresh_at(&mut watch, t2), None);
        // Destroyed by the rule in another process (ledger purge): not a change.
        let t3 = t2 + chrono::Duration::days(30);
        destroy_retired(&dir, policy.keep, t3 + chrono::Duration::days(91)).unwrap();
        assert_eq!(
            refresh_at(&mut watch, t3 + chrono::Duration::days(91)),
            None
        );

        // A live key deleted by hand.
        let current = load(&dir, Kind::Hmac)
            .unwrap()
            .current()
            .unwrap()
            .id
            .clone();
        fs::remove_file(path_of(&dir, Kind::Hmac, &current)).unwrap();
        let t4 = t3 + chrono::Duration::days(92);
        let change = refresh_at(&mut watch, t4).unwrap();
        assert_eq!(change.gone, [format!("hmac-{current}")]);
        assert!(!change.dir_gone && change.appeared.is_empty());
        assert!(change.to_string().contains("keys gone: hmac-"), "{change}");
        assert_eq!(refresh_at(&mut watch, t4), None, "told once");

        // A key added by hand, the directory removed.
        write_key(&dir, "hmac-20200101T000000Z");
        let change = refresh_at(&mut watch, t4).unwrap();
        assert_eq!(change.appeared, ["hmac-20200101T000000Z"]);
        fs::remove_dir_all(&dir).unwrap();
        let change = refresh_at(&mut watch, t4).unwrap();
        assert!(change.dir_gone && change.gone.len() == 2, "{change:?}");
        assert!(change.to_string().contains("the directory was removed"));
        assert_eq!(load(&dir, Kind::Hmac).unwrap().keys.len(), 1, "made anew");

        // Another directory (a reload): a first look again.
        let mut other = policy.clone();
        other.dir = base.path().join("other");
        assert_eq!(watch.refresh(&other, t4).0, None);
    }

    #[test]
    fn refresh_derives_the_transit_ring_from_every_live_hmac_key() {
        let base = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86400);
        let policy = Policy {
            dir: base.path().join("keys"),
            hmac: true,
            aead: false,
            rotation: 30 * day,
            keep: 90 * day,
        };
        let t0 = at("2026-01-01T00:00:00Z");
        refresh(&policy, t0).unwrap();
        let (secrets, _) = refresh(&policy, t0 + chrono::Duration::days(30)).unwrap();
        let hmac = load(&policy.dir, Kind::Hmac).unwrap();
        let ids = |ring: &Ring| ring.keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&secrets.transit), ids(&hmac));
        assert_eq!(
            secrets.transit.keys.len(),
            2,
            "the retired key still verifies"
        );
        for (derived, key) in secrets.transit.keys.iter().zip(&hmac.keys) {
            assert_eq!(derived.bytes, derive(key, Purpose::TransitTag).bytes);
            assert_ne!(derived.bytes, key.bytes);
        }
        // Once the retired key is destroyed, it verifies nothing.
        let (secrets, destroyed) = refresh(&policy, t0 + chrono::Duration::days(30 + 91)).unwrap();
        assert_eq!(destroyed, ["20260101T000000Z"]);
        let live = ids(&load(&policy.dir, Kind::Hmac).unwrap());
        assert_eq!(ids(&secrets.transit), live);
        assert!(!live.contains(&"20260101T000000Z".to_string()), "{live:?}");
        // Without HMAC keys in use, no transit ring.
        let off = Policy {
            dir: base.path().join("other"),
            hmac: false,
            ..policy
        };
        assert!(refresh(&off, t0).unwrap().0.transit.keys.is_empty());
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
