//! The listening socket: `unix:` (a stale file removed at start, mode and group set, the file
//! removed on exit) or TCP.

use crate::config::{Config, SocketSpec};
use std::{
    fs, io,
    os::unix::fs::{chown, PermissionsExt},
    path::{Path, PathBuf},
};
use tokio::net::{TcpListener, UnixListener};

/// A bound socket, ready for [`crate::run`].
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixSocket),
}

/// A bound unix socket; its file is removed when this is dropped.
pub struct UnixSocket {
    pub(super) listener: UnixListener,
    path: PathBuf,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Listener {
    /// Binds the configured socket.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("socket {}: {e}", config.socket));
        match &config.socket {
            SocketSpec::Inet(addr) => {
                Ok(Self::Tcp(TcpListener::bind(addr).await.map_err(context)?))
            }
            SocketSpec::Unix(path) => bind_unix(path, config).map(Self::Unix).map_err(context),
        }
    }

    /// The address of a TCP listener (tests bind port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(_) => None,
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Self::Tcp(l)
    }
}

fn bind_unix(path: &Path, config: &Config) -> io::Result<UnixSocket> {
    use nix::unistd::{getegid, geteuid, getgroups, Gid, User};
    // Who the daemon runs as, for the errors: a name where there is one.
    let user = || {
        User::from_uid(geteuid())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {}", geteuid()), |u| u.name)
    };
    remove_stale(path)?;
    let listener = UnixListener::bind(path).map_err(|e| {
        let dir = path.parent().unwrap_or(Path::new("/")).display();
        let what = match e.kind() {
            io::ErrorKind::PermissionDenied => format!(
                ": the daemon's user {} may not create files in {dir}; make the directory \
                 writable by it (the package's unit uses /run/privacy-milter)",
                user()
            ),
            _ => String::new(),
        };
        io::Error::new(
            e.kind(),
            format!("cannot create the socket {}: {e}{what}", path.display()),
        )
    })?;
    // Removed on drop from here on, even if setting the mode fails.
    let socket = UnixSocket {
        listener,
        path: path.to_path_buf(),
    };
    if !config.socket_group.is_empty() {
        let group = nix::unistd::Group::from_name(&config.socket_group)
            .ok()
            .flatten()
            .ok_or_else(|| {
                io::Error::other(format!("group {} does not exist", config.socket_group))
            })?;
        chown(path, None, Some(group.gid.as_raw())).map_err(|e| {
            let gid: Gid = group.gid;
            let member = getegid() == gid || getgroups().is_ok_and(|g| g.contains(&gid));
            let name = &config.socket_group;
            // Only root, or a member of the group, may give a file to it.
            let what = match e.kind() {
                io::ErrorKind::PermissionDenied if !member => format!(
                    ": the daemon's user {user} is not a member of group {name}; add it \
                     (usermod -a -G {name} {user}) and restart it, set socket_group to a group \
                     it is in, or leave socket_group empty for its own group",
                    user = user()
                ),
                _ => String::new(),
            };
            io::Error::new(
                e.kind(),
                format!(
                    "cannot give {} to group {name} (gid {gid}): {e}{what}",
                    path.display()
                ),
            )
        })?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(config.socket_mode.0))?;
    Ok(socket)
}

/// Removes a socket file left by a milter that did not exit cleanly, but never a socket that
/// a running milter still answers on, and never anything that is not a socket.
fn remove_stale(path: &Path) -> io::Result<()> {
    use nix::unistd::{Gid, Group, Uid, User};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot look at {}: {e}", path.display()),
        )),
        Ok(md) if !md.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening on it",
            )),
            Err(_) => fs::remove_file(path).map_err(|e| {
                let md = fs::symlink_metadata(path).ok();
                let owner = md.as_ref().map_or_else(
                    || "someone".to_string(),
                    |md| {
                        let user = User::from_uid(Uid::from_raw(md.uid()))
                            .ok()
                            .flatten()
                            .map_or_else(|| md.uid().to_string(), |u| u.name);
                        let group = Group::from_gid(Gid::from_raw(md.gid()))
                            .ok()
                            .flatten()
                            .map_or_else(|| md.gid().to_string(), |g| g.name);
                        format!("{user}:{group}")
                    },
                );
                let dir = path.parent().unwrap_or(Path::new("/"));
                let sticky = fs::metadata(dir).is_ok_and(|d| d.permissions().mode() & 0o1000 != 0);
                let what = match e.kind() {
                    io::ErrorKind::PermissionDenied if sticky => format!(
                        ": {} has the sticky bit, so only the socket's owner or root may \
                         remove it; remove it by hand (rm {}) and start again, or choose \
                         another socket path",
                        dir.display(),
                        path.display()
                    ),
                    io::ErrorKind::PermissionDenied => format!(
                        ": the daemon's user may not write to {}; remove it by hand (rm {}) \
                         and start again",
                        dir.display(),
                        path.display()
                    ),
                    _ => String::new(),
                };
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot remove the stale socket {} (owned by {owner}): {e}{what}",
                        path.display()
                    ),
                )
            }),
        },
    }
}
