//! The users file on disk: reading it (with the `Stamp` that tells the next read whether it
//! changed), and changing it while other bridge processes read and write it ([`modify_file`]):
//! the advisory lock on `{path}.lock` ([`lock_path`]; never through a link, handed over to the
//! file's owner only when this process created it), the atomic rewrite through [`crate::fs`],
//! the owner and mode a rewrite keeps, and giving up once the request is [`Abandoned`]; and
//! what `check` says of a lock the daemon could not use (`lock_warning`).
//!
//! Synchronous, blocking I/O: callers run it on the blocking pool. It must not hash (the
//! change runs under the lock every writer waits for), nor decide what a change is: the
//! caller's closure does, on the parsed [`UsersFile`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::format::{BadKind, BadLine, UsersFile};
use crate::backend::BackendError;

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub(super) fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Reads and parses the file at `path`, returning its stamp too.
pub(super) fn load(path: &Path) -> io::Result<(UsersFile, Stamp)> {
    #[cfg(debug_assertions)]
    crate::fs::test_hooks::stall(path);
    load_from(File::open(path)?, path).map(|(users, meta)| (users, Stamp::of(&meta)))
}

/// Opens the file to be changed: never through a symbolic link. The directory is writable
/// by the XMPP server's account, which could replace the file by a link to one it cannot
/// read; a change run as root would read that and write its lines back as the new users
/// file. (A rename replaces a link, not its target, so a change through one never worked
/// anyway.)
fn open_for_change(path: &Path) -> io::Result<File> {
    #[cfg(debug_assertions)]
    crate::fs::test_hooks::stall(path);
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other(
                "it is a symbolic link: changes are made only to the file itself \
                 (configure the path of the real file)",
            ),
            _ => e,
        })
}

/// Reads and parses an opened users file (`path` for the log), with its metadata.
fn load_from(file: File, path: &Path) -> io::Result<(UsersFile, fs::Metadata)> {
    let meta = file.metadata()?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut &file, &mut bytes)?;
    let (users, bad) = UsersFile::parse(&bytes);
    for b in &bad {
        match b.kind {
            BadKind::Duplicate(first) => tracing::warn!(
                path = %path.display(),
                line = b.number,
                first,
                "users file: second entry for an account ignored (the first is used; a \
                 password change or removal applies to both)"
            ),
            BadKind::Malformed | BadKind::Comment => {
                tracing::warn!(path = %path.display(), line = b.number, reason = b.reason, "users file: line ignored")
            }
            BadKind::Refused => {
                tracing::warn!(path = %path.display(), line = b.number, reason = b.reason, "users file: hash refused")
            }
        }
    }
    Ok((users, meta))
}

/// Parses a users file and reports its malformed lines, for `check` and tests.
pub fn lint(path: &Path) -> io::Result<(UsersFile, Vec<BadLine>)> {
    Ok(UsersFile::parse(fs::read(path)?))
}

/// Set when the request that asked for a change has been abandoned: its deadline fired, it
/// was answered `0` and its future dropped. The blocking worker doing the change cannot be
/// stopped from outside, so it looks at this flag and gives up instead of writing later
/// what the server was already told did not happen.
#[derive(Debug, Clone, Default)]
pub struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Sets the flag when dropped: held by the request's future, which is dropped at the deadline.
pub(super) struct AbandonOnDrop(pub(super) Abandoned);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// How often a writer waiting for the lock looks again. Short next to a writer's hold time
/// (read, write, fsync, rename: hashing happens before the lock is taken).
const LOCK_POLL: Duration = Duration::from_millis(5);

/// The advisory lock's file: `{path}.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// Run as root (`extauth-bridge users …`), the lock file we just created is root's with
/// mode 0600, and the daemon, running as the XMPP server's account, could never open it:
/// every change would fail from then on. Give it the users file's owner and group, and the
/// file's group permissions (a daemon that writes the file as a member of its group must
/// open the lock too). Not root, we cannot give it away.
///
/// Only ever called with a lock this process has just created (`O_CREAT|O_EXCL`), and it
/// changes that file through its descriptor: whatever the name points to by now, what is
/// handed over is the empty file we made. An existing lock is never handed over, whatever
/// it looks like: the directory is writable by the XMPP server's account, which can make
/// the name a hard link to a file it wants (`/etc/shadow`), and any check of the link count
/// or the inode behind the name is a race it can win (the link's other name removed between
/// the open and the check), or even legitimately pass (an old copy of a file that was
/// replaced by a rename has one link left, the one planted here).
fn hand_over_lock(created: &File, path: &Path) -> io::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    // No users file yet (the command is creating it): root's too, until the admin gives
    // both away, as the command says.
    let Ok(users) = fs::metadata(path) else {
        return Ok(());
    };
    let mine = created.metadata()?;
    let mode = 0o600 | (users.mode() & 0o060);
    if (mine.uid(), mine.gid()) != (users.uid(), users.gid()) {
        rustix::fs::fchown(
            created,
            Some(rustix::fs::Uid::from_raw(users.uid())),
            Some(rustix::fs::Gid::from_raw(users.gid())),
        )?;
    }
    if mine.mode() & 0o7777 != mode {
        created.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Opens the lock file, creating it if there is none; `true` when this call created it
/// (then, and only then, [`hand_over_lock`] may give it away).
///
/// O_NOFOLLOW: the directory is writable by the XMPP server's account, which could put a
/// symbolic link here. O_NONBLOCK: a FIFO here would block the open forever.
fn open_lock(lock: &Path) -> io::Result<(File, bool)> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // Created and removed by others in between, each attempt can miss; a few are plenty
    // for a name that only the bridge itself (and an attacker) ever removes.
    for _ in 0..8 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags)
            .open(lock)
        {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            Err(_) => {}
        }
        match OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(lock)
        {
            Ok(file) => return Ok((file, false)),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
    }
    Err(io::Error::other(format!(
        "{} keeps appearing and disappearing",
        lock.display()
    )))
}

/// For `check` run as root, which opens any lock: a lock that is not the users file's
/// owner's may be one the XMPP server's account cannot open (left by an older `users`
/// command run as root, or created by one before the users file existed). Not root,
/// opening it as this user was the test.
fn foreign_lock(opened: &File, lock: &Path, path: &Path) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let (mine, users) = (opened.metadata().ok()?, fs::metadata(path).ok()?);
    ((mine.uid(), mine.gid()) != (users.uid(), users.gid())).then(|| {
        format!(
            "the lock {} belongs to {}:{}, the users file to {}:{}: the XMPP server's account \
             may not be able to open it, and then setpass, tryregister and removeuser fail; \
             chown it to the users file's owner (an existing lock is never given away \
             automatically: it may be a planted link)",
            lock.display(),
            mine.uid(),
            mine.gid(),
            users.uid(),
            users.gid()
        )
    })
}

/// What `check` says of the lock of the users file at `path`, if anything. A lock this user
/// cannot open makes every change fail, whatever the file's own permissions say; typically
/// left by a `users` command run as root. Non-blocking, should the path be a FIFO nobody
/// reads.
pub(super) fn lock_warning(path: &Path) -> Option<String> {
    let lock = lock_path(path);
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&lock)
    {
        Ok(opened) => foreign_lock(&opened, &lock, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(format!(
            "cannot open the lock {} for writing as this user ({e}): setpass, \
             tryregister and removeuser will fail; give it the users file's owner",
            lock.display()
        )),
    }
}

/// Gives the temp file of a rewrite the replaced file's owner and group, before the rename:
/// run as root on a file owned by the XMPP server's account, the new file would otherwise be
/// root's (and unreadable by the daemon) from the rename on. Not root, only a group we are
/// in can be kept; failing that the file becomes ours, as any rewrite by us makes it.
fn keep_owner(tmp: &File, old: &fs::Metadata, path: &Path) -> io::Result<()> {
    let mine = tmp.metadata()?;
    if (mine.uid(), mine.gid()) == (old.uid(), old.gid()) {
        return Ok(());
    }
    let group = Some(rustix::fs::Gid::from_raw(old.gid()));
    let both = rustix::fs::fchown(tmp, Some(rustix::fs::Uid::from_raw(old.uid())), group);
    // Not root: at least the group, which is how a server's account usually shares the file.
    if let Err(e) = both.or_else(|_| rustix::fs::fchown(tmp, None, group)) {
        tracing::warn!(
            path = %path.display(),
            error = %e,
            owner = old.uid(),
            group = old.gid(),
            "users file: the rewritten file cannot keep its owner and group"
        );
    }
    Ok(())
}

/// Holds the advisory lock on `{path}.lock` until dropped.
struct WriteLock {
    _file: File,
}

impl WriteLock {
    /// Waits for the lock until it is ours (`Some`) or the request is abandoned (`None`).
    /// A blocking `flock` could not be given up at the deadline, so this polls a
    /// non-blocking one.
    fn acquire(path: &Path, abandoned: &Abandoned) -> io::Result<Option<WriteLock>> {
        use rustix::fs::{flock, FlockOperation};
        let lock = lock_path(path);
        let (file, created) = open_lock(&lock)?;
        #[cfg(debug_assertions)]
        crate::fs::test_hooks::after_lock_open();
        // A FIFO or a device planted here: nothing to lock with.
        if !file.metadata()?.file_type().is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                lock.display()
            )));
        }
        if created {
            if let Err(e) = hand_over_lock(&file, path) {
                // Our change can go ahead; the daemon's later ones will fail, which `check`
                // and the `users` command report.
                tracing::warn!(lock = %lock.display(), error = %e, "users file lock: cannot give it the users file's owner");
            }
        }
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(WriteLock { _file: file })),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(e.into()),
            }
            if abandoned.is_set() {
                return Ok(None);
            }
            std::thread::sleep(LOCK_POLL);
        }
    }
}

/// Replaces `path` with `contents` atomically ([`crate::fs::replace_atomically`]: a temp
/// file created anew, never one planted at its name, fsync, rename, fsync of the directory).
/// The old file's permissions are kept (0600 for a new one), and its owner ([`keep_owner`]).
/// The rename is the moment the change happens: it is skipped, and `false` returned, when
/// the request has been abandoned by then.
fn write_atomically(
    path: &Path,
    contents: &[u8],
    old: Option<&fs::Metadata>,
    abandoned: &Abandoned,
) -> io::Result<bool> {
    let mode = old
        .as_ref()
        .map_or(0o600, |m| m.permissions().mode() & 0o7777);
    crate::fs::replace_atomically(
        path,
        contents,
        mode,
        |tmp| match old {
            Some(old) => keep_owner(tmp, old, path),
            None => Ok(()),
        },
        || !abandoned.is_set(),
    )
}

/// Applies `change` to the file on disk under the write lock and returns its answer.
/// Nothing is written when the change answers `false`, nor once `abandoned` is set: the
/// request was answered `0` by then, and the file must say the same.
///
/// `change` runs under the lock, which every writer of the file waits for: hash passwords
/// before calling this, not inside `change`.
pub fn modify_file(
    path: &Path,
    abandoned: &Abandoned,
    change: impl FnOnce(&mut UsersFile) -> Result<bool, BackendError>,
) -> Result<bool, BackendError> {
    let io_err = |what: &str, e: io::Error| {
        BackendError::Internal(format!("users file {}: {what}: {e}", path.display()))
    };
    let gave_up = || {
        tracing::warn!(
            path = %path.display(),
            "users file change abandoned: the request's deadline passed (it was answered 0); nothing written"
        );
        BackendError::Unavailable("request abandoned at its deadline".into())
    };
    let Some(_lock) = WriteLock::acquire(path, abandoned).map_err(|e| io_err("cannot lock", e))?
    else {
        return Err(gave_up());
    };
    // The replaced file's metadata comes from what was read, through the descriptor: its
    // owner and mode are what the new file keeps.
    let (mut users, old) = match open_for_change(path).and_then(|f| load_from(f, path)) {
        Ok((users, meta)) => (users, Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (UsersFile::default(), None),
        Err(e) => return Err(io_err("cannot read", e)),
    };
    if !change(&mut users)? {
        return Ok(false);
    }
    if !write_atomically(path, &users.render(), old.as_ref(), abandoned)
        .map_err(|e| io_err("cannot write", e))?
    {
        return Err(gave_up());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_planted_where_the_lock_and_temp_file_go_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        fs::write(&path, "a@h:$x\n").unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let pid = std::process::id();
        let tmp = dir.path().join(format!(".users.{pid}.tmp"));

        // A symbolic link at the temp file's name: removed, not written through.
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let abandoned = Abandoned::default();
        let added = modify_file(&path, &abandoned, |u| Ok(u.insert("b", "h", "$y".into())));
        assert!(matches!(added, Ok(true)), "{added:?}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(fs::read_to_string(&path).unwrap().contains("b@h:$y"));
        assert!(!tmp.exists());

        // A symbolic link as the lock: the change fails, the target is untouched.
        let lock = dir.path().join("users.lock");
        fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let before = fs::metadata(&victim).unwrap();
        let refused = modify_file(&path, &abandoned, |u| Ok(u.insert("c", "h", "$z".into())));
        assert!(refused.is_err(), "{refused:?}");
        let after = fs::metadata(&victim).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (before.uid(), before.gid(), before.mode())
        );
        assert!(!fs::read_to_string(&path).unwrap().contains("c@h"));

        // A hard link as the lock, the victim someone else's: used for locking, never
        // handed over (root only: not root, nothing is handed over anyway).
        fs::remove_file(&lock).unwrap();
        fs::hard_link(&victim, &lock).unwrap();
        if rustix::process::geteuid().is_root() {
            let set_owner = |p: &Path, id| {
                let (uid, gid) = (rustix::fs::Uid::from_raw(id), rustix::fs::Gid::from_raw(id));
                rustix::fs::chown(p, Some(uid), Some(gid)).unwrap()
            };
            set_owner(&path, 65534);
            set_owner(&victim, 4321);
        }
        let before = fs::metadata(&victim).unwrap();
        let added = modify_file(&path, &abandoned, |u| Ok(u.insert("d", "h", "$w".into())));
        assert!(matches!(added, Ok(true)), "{added:?}");
        let after = fs::metadata(&victim).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (before.uid(), before.gid(), before.mode())
        );
    }

    #[test]
    fn an_abandoned_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        fs::write(&path, "a@h:$x\n").unwrap();
        // The deadline passes while the change is being made, after the lock was taken.
        let abandoned = Abandoned::default();
        let result = modify_file(&path, &abandoned, |users| {
            abandoned.set();
            Ok(users.insert("b", "h", "$y".into()))
        });
        assert!(
            matches!(result, Err(BackendError::Unavailable(_))),
            "{result:?}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "a@h:$x\n");
        // No temp file left behind: only the file and its lock.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["users", "users.lock"]);

        // Waiting for a lock held elsewhere: given up once abandoned.
        let held = File::open(dir.path().join("users.lock")).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let abandoned = Abandoned::default();
        let waiter = {
            let (path, abandoned) = (path.clone(), abandoned.clone());
            std::thread::spawn(move || {
                modify_file(&path, &abandoned, |users| {
                    Ok(users.insert("b", "h", "$y".into()))
                })
            })
        };
        abandoned.set();
        let result = waiter.join().unwrap();
        assert!(
            matches!(result, Err(BackendError::Unavailable(_))),
            "{result:?}"
        );
        drop(held);
        assert_eq!(fs::read_to_string(&path).unwrap(), "a@h:$x\n");
    }
}
