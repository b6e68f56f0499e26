//! The lines of the report about the environment the bridge runs in: who it runs as, what
//! its stdout is, the proxies it would use, the configuration file's permissions. What
//! differs between an admin's shell and the XMPP server's account. Must not judge the
//! configuration's content (that is `findings.rs`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::findings::inline_secrets;
use super::{Finding, Level};

pub(super) fn file_permissions(path: &Path) -> Option<Finding> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    let owner = format!(
        "owner {}, group {}",
        user_name(meta.uid()),
        group_name(meta.gid())
    );
    let secrets = std::fs::read_to_string(path)
        .map(|t| inline_secrets(&t))
        .unwrap_or_default();
    let (level, detail) = if mode & 0o002 != 0 {
        (
            Level::Fail,
            format!("mode {mode:04o} ({owner}): anyone can change it, and with it who gets in; chmod o-w"),
        )
    } else if mode & 0o004 != 0 && !secrets.is_empty() {
        (
            Level::Fail,
            format!(
                "mode {mode:04o} ({owner}): world-readable and holds secrets ({}); chmod 640 and \
                 chgrp it to the XMPP server's group, or move the secrets to files or the environment",
                secrets.join(", ")
            ),
        )
    } else {
        let secrets = if secrets.is_empty() {
            "no inline secrets".to_owned()
        } else {
            format!("inline secrets ({}) not world-readable", secrets.join(", "))
        };
        (Level::Ok, format!("mode {mode:04o} ({owner}); {secrets}"))
    };
    Some(Finding {
        item: "perms",
        level,
        detail,
    })
}

/// The name for a uid or gid from /etc/passwd or /etc/group (no NSS: this is a diagnostic,
/// a number will do when the name is elsewhere).
fn id_name(db: &str, id: u32) -> String {
    std::fs::read_to_string(db)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let n = fields.nth(1)?;
                (n.parse::<u32>().ok()? == id).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

pub(super) fn user_name(uid: u32) -> String {
    id_name("/etc/passwd", uid)
}

fn group_name(gid: u32) -> String {
    id_name("/etc/group", gid)
}

pub(super) fn running_as() -> Finding {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let name = user_name(uid);
    if uid == 0 {
        Finding {
            item: "user",
            level: Level::Warn,
            detail: "root (uid 0): permission problems the XMPP server's account would hit are \
                     hidden; run as that account too, e.g. sudo -u prosody extauth-bridge check"
                .to_owned(),
        }
    } else {
        Finding {
            item: "user",
            level: Level::Ok,
            detail: format!(
                "{name} (uid {uid}, gid {gid}); the XMPP server runs us as its own account"
            ),
        }
    }
}

pub(super) fn stdout_kind() -> Finding {
    let stdout = rustix::stdio::stdout();
    let detail = if rustix::termios::isatty(stdout) {
        "a terminal here; under the server it is a pipe (ejabberd) or a pty (Prosody) carrying \
         nothing but replies"
    } else {
        "not a terminal (a pipe or file); the daemon writes nothing there but replies"
    };
    Finding {
        item: "stdout",
        level: Level::Ok,
        detail: detail.to_owned(),
    }
}

/// Proxies set in this shell are used by the HTTP client; the server's environment
/// usually has none (or others).
pub(super) fn proxy_environment() -> Option<Finding> {
    let set: Vec<&str> = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ]
    .into_iter()
    .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    .collect();
    (!set.is_empty()).then(|| Finding {
        item: "env",
        level: Level::Warn,
        detail: format!(
            "{} set in this environment: HTTP backends use it here, but the XMPP server's \
             environment may differ",
            set.join(", ")
        ),
    })
}
