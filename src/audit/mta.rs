//! Findings about the MTA: Postfix passes every message to the milter (`smtpd_milters` and
//! `non_smtpd_milters`, read with `postconf`) and says what happens when it cannot
//! (`milter_default_action`); the socket lets Postfix in and nobody else.

use super::Finding;
use crate::config::{Config, Mta, SocketSpec};
use std::{os::unix::fs::MetadataExt, process::Command};

/// `postconf` for the configured instance: each parameter's value, `$names` expanded.
fn postconf(config: &Config, args: &[&str]) -> Result<Vec<String>, String> {
    let mut cmd = Command::new("postconf");
    let dir = &config.tracking.postfix_config_dir;
    if !dir.as_os_str().is_empty() {
        cmd.arg("-c").arg(dir);
    }
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("cannot run postconf: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "postconf {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Our socket as Postfix names it, given the queue directory its chrooted daemons see as `/`.
fn postfix_names(socket: &SocketSpec, queue_dir: &str) -> Vec<String> {
    match socket {
        SocketSpec::Unix(path) => {
            let mut names = vec![format!("unix:{}", path.display())];
            if let Ok(inside) = path.strip_prefix(queue_dir) {
                names.push(format!("unix:/{}", inside.display()));
                names.push(format!("unix:{}", inside.display()));
            }
            names
        }
        SocketSpec::Inet(addr) => {
            let mut names = vec![
                format!("inet:{}:{}", addr.ip(), addr.port()),
                format!("inet:[{}]:{}", addr.ip(), addr.port()),
            ];
            if addr.ip().is_loopback() {
                names.push(format!("inet:localhost:{}", addr.port()));
            }
            names
        }
    }
}

/// The milters of a `*_milters` value: separated by commas or spaces, maybe `{ name, ... }`.
fn milters(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            // The first part names the milter; the rest are its settings.
            let name = inner[..end].split(',').next().unwrap_or("").trim();
            if !name.is_empty() {
                out.push(name.to_string());
            }
            rest = inner.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find([',', ' ', '\t', '{']).unwrap_or(rest.len());
            if end > 0 {
                out.push(rest[..end].to_string());
            }
            rest = &rest[end..];
            if !rest.starts_with('{') {
                rest = rest.get(1..).unwrap_or("");
            }
        }
        rest = rest.trim_start_matches([',', ' ', '\t']);
    }
    out
}

pub fn postfix(config: &Config) -> Vec<Finding> {
    if config.tracking.mta != Mta::Postfix {
        return vec![Finding::holds(
            "mta.milters",
            "tracking.mta is sendmail: Sendmail's INPUT_MAIL_FILTER is not checked (docs/sendmail.md)",
        )];
    }
    let values = match postconf(
        config,
        &["-x", "-h", "smtpd_milters", "non_smtpd_milters", "queue_directory"],
    ) {
        Ok(v) if v.len() == 3 => v,
        Ok(v) => vec![String::new(); 3].into_iter().zip(v).map(|(_, v)| v).collect(),
        Err(e) => {
            return vec![Finding::fails(
                "mta.milters",
                e,
                "install Postfix, or name its instance in tracking.postfix_config_dir (tracking.mta = \"sendmail\" for Sendmail)",
            )]
        }
    };
    let names = postfix_names(&config.socket, values.get(2).map_or("", String::as_str));
    let ours = |value: &str| milters(value).iter().any(|m| names.contains(m));
    let (smtpd, non_smtpd) = (&values[0], values.get(1).cloned().unwrap_or_default());
    let missing: Vec<&str> = [
        ("smtpd_milters", ours(smtpd)),
        ("non_smtpd_milters", ours(&non_smtpd)),
    ]
    .into_iter()
    .filter(|(_, found)| !found)
    .map(|(name, _)| name)
    .collect();
    let detail = format!(
        "smtpd_milters = {smtpd}; non_smtpd_milters = {non_smtpd}; our socket is {}",
        config.socket
    );
    let mut findings = vec![if missing.is_empty() {
        Finding::holds("mta.milters", detail)
    } else {
        Finding::fails(
            "mta.milters",
            format!("{detail}: {} lack it, so mail passes unrecorded", missing.join(" and ")),
            format!(
                "postconf -e 'smtpd_milters = {}' 'non_smtpd_milters = $smtpd_milters' && postfix reload (docs/postfix.md; a chrooted smtpd names the path inside the chroot)",
                names[names.len().min(2) - 1]
            ),
        )
    }];
    findings.push(match postconf(config, &["-n", "-h", "milter_default_action"]) {
        Ok(v) if v.first().is_some_and(|a| !a.trim().is_empty()) => {
            let action = v[0].trim();
            Finding::holds(
                "mta.default_action",
                format!(
                    "milter_default_action = {action}{}",
                    if action == "accept" {
                        ": while the milter is down mail passes unrecorded and untouched"
                    } else {
                        ""
                    }
                ),
            )
        }
        Ok(_) => Finding::fails(
            "mta.default_action",
            "milter_default_action is not stated in main.cf (Postfix's default, tempfail, applies silently)",
            "postconf -e 'milter_default_action = tempfail' && postfix reload (docs/postfix.md)",
        ),
        Err(e) => Finding::fails("mta.default_action", e, "check tracking.postfix_config_dir"),
    });
    findings
}

/// The socket lets Postfix's user in and nobody else.
pub fn socket(config: &Config) -> Vec<Finding> {
    const CHECK: &str = "mta.socket";
    let path = match &config.socket {
        SocketSpec::Inet(addr) if addr.ip().is_loopback() => {
            return vec![Finding::holds(
                CHECK,
                format!("{}: loopback only (any local user can connect; a unix socket's group would prevent that)", config.socket),
            )]
        }
        SocketSpec::Inet(_) => {
            return vec![Finding::fails(
                CHECK,
                format!("{}: reachable from other hosts", config.socket),
                "listen on a unix socket or on loopback (socket = \"inet:8894@127.0.0.1\")",
            )]
        }
        SocketSpec::Unix(path) => path.clone(),
    };
    let md = match std::fs::metadata(&path) {
        Ok(md) => md,
        Err(e) => {
            return vec![Finding::fails(
                CHECK,
                format!("{}: {e}", path.display()),
                "start the milter (systemctl start privacy-milter)",
            )]
        }
    };
    let mode = md.mode() & 0o777;
    let mta_user = match config.tracking.mta {
        Mta::Postfix => postconf(config, &["-h", "mail_owner"])
            .ok()
            .and_then(|v| v.into_iter().next())
            .unwrap_or_else(|| "postfix".into()),
        Mta::Sendmail => "smmsp".into(),
    };
    let user = nix::unistd::User::from_name(&mta_user).ok().flatten();
    let group = nix::unistd::Group::from_gid(md.gid().into()).ok().flatten();
    let group_name = group
        .as_ref()
        .map_or_else(|| md.gid().to_string(), |g| g.name.clone());
    let in_group = user.as_ref().is_some_and(|u| {
        u.gid.as_raw() == md.gid() || group.as_ref().is_some_and(|g| g.mem.contains(&u.name))
    });
    let owner = user.as_ref().is_some_and(|u| u.uid.as_raw() == md.uid());
    let mta_in = (owner && mode & 0o200 != 0) || (in_group && mode & 0o020 != 0);
    let others = mode & 0o007 != 0;
    let detail = format!(
        "{}: mode {mode:04o}, group {group_name}; {mta_user} {} it",
        path.display(),
        if mta_in {
            "may connect to"
        } else {
            "may not connect to"
        }
    );
    let mut fixes = Vec::new();
    if others {
        fixes.push("socket_mode = \"0660\" (others must not connect)".to_string());
    }
    if !mta_in {
        fixes.push(format!(
            "socket_group = \"{mta_user}\", or add {mta_user} to group {group_name} (adduser {mta_user} {group_name}), with socket_mode = \"0660\""
        ));
    }
    if fixes.is_empty() {
        vec![Finding::holds(CHECK, format!("{detail}, and nobody else"))]
    } else {
        vec![Finding::fails(
            CHECK,
            format!(
                "{detail}{}",
                if others { ", and so may anybody" } else { "" }
            ),
            format!("{}; then restart the milter", fixes.join("; ")),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milter_lists() {
        assert_eq!(
            milters("unix:/a.sock, inet:127.0.0.1:8894"),
            ["unix:/a.sock", "inet:127.0.0.1:8894"]
        );
        assert_eq!(
            milters("{ unix:/a.sock, default_action = accept } inet:h:1"),
            ["unix:/a.sock", "inet:h:1"]
        );
        assert!(milters("").is_empty());
    }

    #[test]
    fn names_inside_the_chroot() {
        let s = SocketSpec::Unix("/var/spool/postfix/privacy-milter/pm.sock".into());
        let names = postfix_names(&s, "/var/spool/postfix");
        assert!(
            names.contains(&"unix:/privacy-milter/pm.sock".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"unix:/var/spool/postfix/privacy-milter/pm.sock".to_string()));
    }
}
