//! What whoever can write the users file's directory may plant there, against a change run
//! as root: a hard link at the lock's name is never handed over to the users file's owner
//! (only a lock the bridge created is), and a symbolic link at the users file's name is not
//! changed through. The race is lost at one exact point through a debug-build test hook
//! (`src/fs.rs`).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chown(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .unwrap();
}

fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

/// The XMPP server's account, say, which owns the users file and its directory.
const SERVER: u32 = 65534;
/// Someone else, whose file the server's account wants.
const VICTIM: u32 = 4321;

/// Runs `extauth-bridge users passwd` as root, stopped right after it opened the lock file;
/// `meanwhile` runs then (the lock is open, nothing done with it), and the command goes on.
fn passwd_with_a_swap_after_the_lock_is_opened(users: &Path, meanwhile: impl FnOnce()) {
    let fifo = users.with_file_name("pause.fifo");
    mkfifo(&fifo);
    let mut child = Command::new(BIN)
        .args([
            "users",
            "passwd",
            users.to_str().unwrap(),
            "romeo@example.net",
        ])
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .env("EXTAUTH_BRIDGE_TEST_LOCK_PAUSE", &fifo)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"new password\n").unwrap();
    // Opening the write end blocks until the command opens the read end: it has the lock
    // file open then. Closing it lets the command go on.
    let gate = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    meanwhile();
    drop(gate);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.code().is_some(), "{out:?}");
    fs::remove_file(&fifo).unwrap();
}

/// A users file owned by the server's account in a directory it owns, and a victim file
/// of someone else's there (world-writable, so the server's account can hard-link it).
fn root_scene(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let users = users_file(dir, &[("romeo@example.net", "old")]);
    chown(&users, SERVER, SERVER);
    chown(dir, SERVER, SERVER);
    let victim = dir.join("victim");
    fs::write(&victim, "someone else's\n").unwrap();
    chown(&victim, VICTIM, VICTIM);
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o666)).unwrap();
    let lock = dir.join("users.txt.lock");
    (users, victim, lock)
}

#[test]
fn a_lock_swapped_for_a_hard_link_never_hands_its_target_over() {
    if !is_root() {
        eprintln!("skipped: the hand-over happens only as root");
        return;
    }
    // The lock is a hard link to the victim when it is opened; its other name goes before
    // the link count is looked at. Unfixed: one link left, so the victim was handed over.
    let dir = tempfile::tempdir().unwrap();
    let (users, victim, lock) = root_scene(dir.path());
    let before = owner_and_mode(&victim);
    fs::hard_link(&victim, &lock).unwrap();
    passwd_with_a_swap_after_the_lock_is_opened(&users, || fs::remove_file(&lock).unwrap());
    assert_eq!(owner_and_mode(&victim), before);
    // Still changed: an existing lock is used for locking, only never given away.
    assert_eq!(
        stdout_of(&users, "auth:romeo:example.net:new password\n"),
        "1\n"
    );

    // The other order: the bridge creates the lock, which is then replaced by a link to the
    // victim. What it hands over is what it created, through its descriptor.
    let dir = tempfile::tempdir().unwrap();
    let (users, victim, lock) = root_scene(dir.path());
    let before = owner_and_mode(&victim);
    passwd_with_a_swap_after_the_lock_is_opened(&users, || {
        fs::remove_file(&lock).unwrap();
        fs::hard_link(&victim, &lock).unwrap();
    });
    assert_eq!(owner_and_mode(&victim), before);

    // Undisturbed, a lock the command creates is the users file's owner's, so the daemon
    // running as that account can open it.
    let dir = tempfile::tempdir().unwrap();
    let (users, _, lock) = root_scene(dir.path());
    passwd_with_a_swap_after_the_lock_is_opened(&users, || {});
    let (uid, gid, mode) = owner_and_mode(&lock);
    assert_eq!((uid, gid, mode & 0o700), (SERVER, SERVER, 0o600));
}

fn stdout_of(users: &Path, input: &str) -> String {
    let out = run(&["--users", users.to_str().unwrap()], input.as_bytes());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_change_is_never_made_through_a_users_file_that_is_a_symbolic_link() {
    // Whoever can write the directory can put a symbolic link where the users file was.
    // Unfixed, a change run as root read the link's target (any file root can read), kept
    // its lines, and wrote them back as the new users file: a copy of someone else's file
    // where the server's account, or an admin's later chown, could read it.
    if !is_root() {
        eprintln!("skipped: only root reads what the server's account cannot");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (users, victim, _) = root_scene(dir.path());
    fs::write(&victim, "root:$6$secret-hash:19000:0:99999:7:::\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let before = owner_and_mode(&victim);
    fs::remove_file(&users).unwrap();
    std::os::unix::fs::symlink(&victim, &users).unwrap();
    let out = run(
        &[
            "users",
            "add",
            users.to_str().unwrap(),
            "juliet@example.net",
        ],
        b"pw\n",
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symbolic link"),
        "{out:?}"
    );
    assert!(fs::symlink_metadata(&users).unwrap().is_symlink());
    assert_eq!(owner_and_mode(&victim), before);
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "root:$6$secret-hash:19000:0:99999:7:::\n"
    );
    // The daemon run as root refuses the same way (and logins still read through the link).
    let out = run(
        &["--users", users.to_str().unwrap()],
        b"tryregister:juliet:example.net:pw\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n");
    assert!(fs::symlink_metadata(&users).unwrap().is_symlink());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
