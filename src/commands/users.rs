//! `extauth-bridge users add|passwd|remove|list FILE …`: edit a users file the way the
//! daemon does (argon2id hashes; atomic rewrite under the same advisory lock), so it is safe
//! while bridge processes are reading and writing it.
//!
//! Exit 0 when done, 1 when the account exists (`add`) or does not (`passwd`, `remove`),
//! 2 for usage and I/O errors.
//!
//! Locked entries (`user@domain:!`, written by `remember_accounts`) are listed as
//! `(remembered)`; `add` refuses one like any existing account, `passwd` gives it a local
//! password (the admin's deliberate choice: the daemon's `setpass` never does), `remove`
//! removes it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use super::{fail, prompt, say, EXIT_ERROR, EXIT_NO, EXIT_OK};
use crate::backend::file::format::{storable, BadKind};
use crate::backend::file::hash::hash_password;
use crate::backend::file::store::{lint, lock_path, modify_file, Abandoned};
use crate::cli::UsersAction;
use crate::request::Account;
use crate::state::generation::{Generations, Slot};

pub fn run(action: &UsersAction) -> ExitCode {
    match action {
        UsersAction::List { file } => list(file),
        UsersAction::Add { file, account } => change(file, account, Change::Add),
        UsersAction::Passwd { file, account } => change(file, account, Change::Passwd),
        UsersAction::Remove { file, account } => change(file, account, Change::Remove),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Passwd,
    Remove,
}

/// `user@domain`, split at the last `@`, with what the file format cannot hold rejected.
fn parse_account(text: &str) -> Result<Account, String> {
    let (user, server) = text
        .rsplit_once('@')
        .ok_or_else(|| format!("{text:?} is not user@domain"))?;
    let account = Account {
        user: user.to_owned(),
        server: server.to_owned(),
    };
    if user.is_empty() || server.is_empty() || !storable(&account) {
        return Err(format!(
            "{text:?} is not a storable user@domain (no ':', '@', '#', spaces or control \
             characters in either part, each at most 1023 bytes)"
        ));
    }
    Ok(account)
}

fn list(file: &Path) -> ExitCode {
    let (users, bad) = match lint(file) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_ERROR, format!("{}: {e}", file.display())),
    };
    for (account, locked) in users.entries() {
        if locked {
            say(format_args!("{account} (remembered)"));
        } else {
            say(format_args!("{account}"));
        }
    }
    for b in &bad {
        let what = match b.kind {
            BadKind::Duplicate(first) => format!(
                "repeats the account of line {first} (the daemon uses the first; passwd and \
                 remove change both)"
            ),
            BadKind::Malformed | BadKind::Comment => {
                format!("{} (ignored by the daemon)", b.reason)
            }
            BadKind::Refused => b.reason.to_owned(),
        };
        eprintln!(
            "extauth-bridge: {} line {}: {what}",
            file.display(),
            b.number
        );
    }
    ExitCode::from(EXIT_OK)
}

fn change(file: &Path, account_text: &str, what: Change) -> ExitCode {
    let account = match parse_account(account_text) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    // Ask before prompting, so a typo does not cost a password; asked again under the lock.
    let (exists, locked) = match lint(file) {
        Ok((users, _)) => (
            users.contains(&account.user, &account.server),
            users.is_locked(&account.user, &account.server),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && what == Change::Add => (false, false),
        Err(e) => return fail(EXIT_ERROR, format!("{}: {e}", file.display())),
    };
    if what == Change::Add && locked {
        return fail(
            EXIT_NO,
            format!(
                "{account_text} already exists, remembered from a backend (locked): `users \
                 passwd` gives it a local password, `users remove` removes it"
            ),
        );
    }
    if let Some(code) = refusal(what, exists, account_text) {
        return code;
    }
    let hash = match what {
        Change::Remove => None,
        Change::Add | Change::Passwd => {
            let password = match prompt::new_password(&format!("New password for {account_text}: "))
            {
                Ok(p) => p,
                Err(e) => return fail(EXIT_ERROR, e),
            };
            match hash_password(&password) {
                Ok(h) => Some(h),
                Err(e) => return fail(EXIT_ERROR, e),
            }
        }
    };
    let before = std::fs::metadata(file).ok();
    let (user, server) = (account.user.as_str(), account.server.as_str());
    let pool = running_bridges(file);
    let slot = Slot::of(user, server);
    pool.iter().for_each(|g| g.bump(slot));
    // Never abandoned: an operator waiting for the lock can press Ctrl-C.
    let done = modify_file(file, &Abandoned::default(), |users| {
        Ok(match (what, hash) {
            (Change::Add, Some(h)) => users.insert(user, server, h),
            (Change::Passwd, Some(h)) => users.set_hash(user, server, h),
            (Change::Remove, _) => users.remove(user, server),
            _ => false,
        })
    });
    // After as before, like a change through a bridge: nothing remembered across it lives.
    pool.iter().for_each(|g| g.bump(slot));
    match done {
        Ok(true) => {
            warn_if_owner_changed(file, before.as_ref());
            let verb = match what {
                Change::Add => "added",
                Change::Passwd => "password changed for",
                Change::Remove => "removed",
            };
            eprintln!(
                "extauth-bridge: {verb} {account_text} in {}",
                file.display()
            );
            if before.is_none() {
                eprintln!(
                    "extauth-bridge: created {} with mode 0600: give it and {} to the XMPP \
                     server's account (chown)",
                    file.display(),
                    lock_path(file).display()
                );
            }
            ExitCode::from(EXIT_OK)
        }
        // Someone else changed the file between our look and the lock.
        Ok(false) => refusal(what, what == Change::Add, account_text)
            .unwrap_or_else(|| ExitCode::from(EXIT_NO)),
        Err(e) => fail(EXIT_ERROR, e),
    }
}

/// The generations file the bridges caching this users file share (its directory, see
/// `state/generation_file.rs`), so that their caches drop the account at once. None when
/// no bridge made one; one that cannot be used is said, not fatal: the file still changes,
/// and the bridges notice within `cache.ttl`.
fn running_bridges(file: &Path) -> Option<Generations> {
    let dir = crate::fs::parent_dir(file);
    Generations::existing(&dir).unwrap_or_else(|e| {
        eprintln!(
            "extauth-bridge: warning: {e}: running bridges' caches may serve the old password \
             for up to cache.ttl"
        );
        None
    })
}

/// The exit for an account that is there when it must not be, or the reverse.
fn refusal(what: Change, exists: bool, account: &str) -> Option<ExitCode> {
    match (what, exists) {
        (Change::Add, true) => Some(fail(EXIT_NO, format!("{account} already exists"))),
        (Change::Passwd | Change::Remove, false) => {
            Some(fail(EXIT_NO, format!("no such user {account}")))
        }
        _ => None,
    }
}

/// The rewrite gives the new file, and the lock, the old file's owner and group (so that a
/// command run as root does not lock the XMPP server's account out); say so if that failed.
fn warn_if_owner_changed(file: &Path, before: Option<&std::fs::Metadata>) {
    let Some(before) = before else {
        return;
    };
    let owner = (before.uid(), before.gid());
    for path in [file.to_path_buf(), lock_path(file)] {
        if let Ok(after) = std::fs::metadata(&path) {
            if (after.uid(), after.gid()) != owner {
                eprintln!(
                    "extauth-bridge: warning: {} belongs to {}:{}, not {}:{} (the users file's \
                     owner before the change): the XMPP server's account may not be able to \
                     use it; chown it",
                    path.display(),
                    after.uid(),
                    after.gid(),
                    owner.0,
                    owner.1
                );
            }
        }
    }
}
