//! The generations file: the account generations of [`super::generation`] shared by every
//! bridge process of the machine, so that a password changed through one process is out of
//! date in all of them before its reply is written.
//!
//! `<dir>/extauth-bridge.generations` holds the [`SLOTS`] counters as native-endian `u64`,
//! nothing else (no header: its size is its format). Each process maps it `MAP_SHARED` and
//! reads and bumps the slots as `AtomicU64`: a bump is one atomic add in shared memory, a
//! check one atomic load, with no system call and no lock. The counters need not survive a
//! reboot (every cache is empty then), so the file is never synced.
//!
//! Where `<dir>` is ([`location`]): `state_dir` when set, else the directory of the first
//! users file (the XMPP server's account writes there by design), else nowhere: each process
//! keeps its counters in memory, which is correct only for a single process.
//!
//! Trust: whoever can write the file can reset a counter and so keep a changed password
//! served from a cache. It is therefore created `0600`, and one that is not a regular file,
//! not exactly the right size, not owned by us (or, for root, by anyone: root's `query`
//! uses the daemon's file) or writable by group or others is refused with an error naming
//! the cause, never silently replaced by per-process counters. All processes of a pool run
//! as one account (the XMPP server's), which is what `0600` needs.
//!
//! Must not decide what a generation means (that is [`super::generation`]), and must not
//! remove or truncate the file: another process may have it mapped, and a shrunk mapping
//! faults.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use super::generation::SLOTS;
use crate::config::{BackendConfig, Config};

/// The file's name in its directory.
pub const FILE_NAME: &str = "extauth-bridge.generations";

/// The file's exact size: one `u64` per slot (512 KiB).
pub const FILE_SIZE: u64 = (SLOTS * std::mem::size_of::<u64>()) as u64;

/// Why the generations file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GenerationsFileError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a regular file (a symbolic link or something else is in its place)", path.display())]
    NotRegular { path: PathBuf },
    #[error("{}: {found} bytes, not {FILE_SIZE}: not a generations file; remove it while no bridge runs", path.display())]
    WrongSize { path: PathBuf, found: u64 },
    #[error("{}: owned by uid {owner}, not by this process's uid {us}", path.display())]
    NotOurs { path: PathBuf, owner: u32, us: u32 },
    #[error("{}: mode {mode:04o} lets group or others write it; it must be 0600", path.display())]
    Writable { path: PathBuf, mode: u32 },
}

/// Where the generations file goes, and the configuration key that put it there (for
/// errors and `check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub dir: PathBuf,
    pub key: String,
}

impl Location {
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }
}

/// `state_dir`, else the first users file's directory when anything remembers credentials
/// (the cache, the throttle's trusted and repeated-wrong passwords): a deployment without one must not start failing because its users file's
/// directory is read-only. `None`: counters in memory.
pub fn location(config: &Config) -> Option<Location> {
    if let Some(dir) = &config.state_dir {
        return Some(Location {
            dir: dir.clone(),
            key: "state_dir".into(),
        });
    }
    if !config.cache.enabled && !config.throttle.enabled {
        return None;
    }
    config
        .backends
        .iter()
        .enumerate()
        .find_map(|(i, b)| match b {
            BackendConfig::File(f) => Some(Location {
                dir: crate::fs::parent_dir(&f.path),
                key: format!("backend[{i}].path"),
            }),
            _ => None,
        })
}

/// The file, opened and checked; created first when `create` and it does not exist.
pub fn open(dir: &Path, create: bool) -> Result<File, GenerationsFileError> {
    let path = dir.join(FILE_NAME);
    let io = |source| GenerationsFileError::Io {
        path: path.clone(),
        source,
    };
    // Two rounds at most: missing, created (by us or a process starting at the same time),
    // then found.
    for _ in 0..3 {
        match open_existing(&path) {
            Ok(file) => return Ok(file),
            Err(GenerationsFileError::Io { source, .. })
                if create && source.kind() == io::ErrorKind::NotFound =>
            {
                create_new(dir, &path).map_err(io)?
            }
            Err(e) => return Err(e),
        }
    }
    Err(io(io::Error::other("created but then not found")))
}

/// Opens `path` without following a symbolic link and checks what is there.
fn open_existing(path: &Path) -> Result<File, GenerationsFileError> {
    let path_buf = || path.to_path_buf();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => GenerationsFileError::NotRegular { path: path_buf() },
            _ => GenerationsFileError::Io {
                path: path_buf(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| GenerationsFileError::Io {
        path: path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(GenerationsFileError::NotRegular { path: path_buf() });
    }
    if meta.len() != FILE_SIZE {
        return Err(GenerationsFileError::WrongSize {
            path: path_buf(),
            found: meta.len(),
        });
    }
    let us = rustix::process::geteuid().as_raw();
    if meta.uid() != us && us != 0 {
        return Err(GenerationsFileError::NotOurs {
            path: path_buf(),
            owner: meta.uid(),
            us,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(GenerationsFileError::Writable {
            path: path_buf(),
            mode,
        });
    }
    Ok(file)
}

/// Makes the full-size file under a temporary name and links it into place: `link` never
/// replaces an existing file, so of several processes starting at once exactly one file
/// wins and every process maps that one (a rename would let a later process put a fresh
/// file under a name whose old file others already have mapped).
fn create_new(dir: &Path, path: &Path) -> io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{FILE_NAME}.{}.{nanos}.tmp", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let made = prepare(&file, dir).and_then(|()| match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    });
    let _ = std::fs::remove_file(&tmp);
    made
}

/// Sizes the new file, mode `0600` whatever the umask, and, when root makes it (`query` or
/// `check` run by an admin), gives it to the directory's owner: a root-owned file would
/// keep the XMPP server's bridges from starting.
fn prepare(file: &File, dir: &Path) -> io::Result<()> {
    file.set_len(FILE_SIZE)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    if rustix::process::geteuid().is_root() {
        let owner = std::fs::metadata(dir)?;
        std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid()))?;
    }
    Ok(())
}

/// The file's counters, mapped into this process.
pub struct Mapping {
    slots: &'static [AtomicU64],
}

impl Mapping {
    /// Maps an opened, checked file (see [`open`]).
    pub fn new(file: &File) -> io::Result<Mapping> {
        let len = FILE_SIZE as usize;
        let prot = rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE;
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust object.
        // It is `len` bytes of a file checked to be exactly `len` long, page-aligned (so
        // aligned for `AtomicU64`), and lives until `drop` unmaps it; the slice never
        // escapes `&self`. Other processes write the same memory, but only through atomics
        // of the same size, which is sound for a shared mapping on the platforms we build
        // for. The file is ours and `0600`; only a process of our own account truncating it
        // could make an access fault, and no bridge ever truncates it.
        let slots = unsafe {
            let ptr = rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                rustix::mm::MapFlags::SHARED,
                file,
                0,
            )?;
            std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), SLOTS)
        };
        Ok(Mapping { slots })
    }

    pub fn slots(&self) -> &[AtomicU64] {
        self.slots
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let ptr = self.slots.as_ptr().cast_mut().cast();
        // SAFETY: unmaps exactly what `new` mapped; `self.slots` is not used after this.
        let _ = unsafe { rustix::mm::munmap(ptr, FILE_SIZE as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::generation::{Generations, Slot};

    #[test]
    fn two_openers_see_each_others_bumps() {
        let dir = tempfile::tempdir().unwrap();
        let a = Generations::shared(dir.path()).unwrap();
        let b = Generations::shared(dir.path()).unwrap();
        let slot = Slot::of("romeo", "example.net");
        let then = b.current(slot);
        a.bump(slot);
        assert!(!b.is_current(slot, then));
        let now = b.current(slot);
        b.bump(slot);
        assert!(!a.is_current(slot, now));
        let meta = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(meta.len(), FILE_SIZE);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn processes_starting_at_once_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Generations> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Generations::shared(dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let slot = Slot::of("juliet", "example.net");
        let seen: Vec<_> = all.iter().map(|g| g.current(slot)).collect();
        all[0].bump(slot);
        for (g, then) in all.iter().zip(seen) {
            assert!(!g.is_current(slot, then));
        }
    }

    #[test]
    fn wrong_size_symlink_and_loose_mode_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"short").unwrap();
        let e = Generations::shared(dir.path()).unwrap_err();
        assert!(
            matches!(e, GenerationsFileError::WrongSize { found: 5, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(FILE_NAME), "{e}");

        std::fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, vec![0u8; FILE_SIZE as usize]).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = Generations::shared(dir.path()).unwrap_err();
        assert!(matches!(e, GenerationsFileError::NotRegular { .. }), "{e}");

        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = Generations::shared(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                GenerationsFileError::NotRegular { .. } | GenerationsFileError::Io { .. }
            ),
            "{e}"
        );

        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, vec![0u8; FILE_SIZE as usize]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let e = Generations::shared(dir.path()).unwrap_err();
        assert!(matches!(e, GenerationsFileError::Writable { .. }), "{e}");
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let e = Generations::shared(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(e, GenerationsFileError::Io { .. }), "{e}");
        // Not created when only looked at.
        assert!(open(dir.path(), false).is_err());
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
