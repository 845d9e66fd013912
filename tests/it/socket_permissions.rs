//! What the operator is told when the daemon's user cannot set up its unix socket: a
//! `socket_group` it is not a member of (chown fails with EPERM), or a stale socket left by
//! root in a directory with the sticky bit (unlink fails with EPERM). Both said only
//! "Operation not permitted"; now the path, the owner or group, the user and what to do.
//! (Root only: the real binary runs as `nobody`.)

use crate::common::*;
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A directory like /tmp (1777) with the test's configuration in it, and the binary as
/// `nobody` can run it (copied in when the build directory is closed to it).
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let config = dir.path().join("privacy-milter.toml");
    std::fs::write(
        &config,
        case_config("socket_permissions/privacy-milter.toml", dir.path()),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut binary = PathBuf::from(env!("CARGO_BIN_EXE_privacy-milter"));
    let reachable = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !reachable {
        let copy = dir.path().join("privacy-milter");
        std::fs::copy(&binary, &copy).unwrap();
        binary = copy;
    }
    (dir, config, binary)
}

/// The daemon as `nobody`, which must fail to start; its stderr.
fn run_as_nobody(binary: &Path, config: &Path, env: &[(&str, &str)]) -> String {
    let out: Output = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(binary)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "it started: {err}");
    err
}

#[test]
fn a_group_the_user_is_not_in_is_explained() {
    if !can_run_as_root("running the daemon as nobody needs root") {
        return;
    }
    let (dir, config, binary) = setup();
    let socket = dir.path().join("milter.sock");
    let err = run_as_nobody(&binary, &config, &[("PRIVACY_MILTER_SOCKET_GROUP", "root")]);
    for part in [
        socket.to_str().unwrap(),
        "group root",
        "Operation not permitted",
        "nobody is not a member of group root",
        "socket_group",
    ] {
        assert!(err.contains(part), "{part:?} is not in: {err}");
    }
    assert!(!socket.exists(), "the socket file was left behind");
}

#[test]
fn a_stale_socket_of_another_user_is_explained() {
    if !can_run_as_root("running the daemon as nobody needs root") {
        return;
    }
    let (dir, config, binary) = setup();
    let socket = dir.path().join("milter.sock");
    // Root's socket, nobody listening: stale, and in a sticky directory only root may remove it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let err = run_as_nobody(&binary, &config, &[]);
    for part in [
        socket.to_str().unwrap(),
        "stale socket",
        "owned by root",
        "Operation not permitted",
        "sticky",
        &format!("rm {}", socket.display()),
    ] {
        assert!(err.contains(part), "{part:?} is not in: {err}");
    }
    assert!(socket.exists(), "nobody could not remove it");
}
