//! The one way the bridge replaces a file: a temp file created anew next to it, written,
//! fsynced, renamed over it, and the directory fsynced. Used by the users file (which adds
//! its ownership rules through `prepare`) and the metrics file.
//!
//! Both live in directories that another account may write (the XMPP server's account owns
//! the users file's directory; node_exporter's textfile directory is often shared), and the
//! temp file's name is predictable. So nothing already at that name is ever opened: it is
//! removed, and the temp file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, which fails rather
//! than follow a symbolic link planted in between (following one would truncate, and run as
//! root chown, whatever it points to).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory holding `path`, where its temp file goes (a rename cannot cross file
/// systems, and the same directory is what makes it atomic).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.NAME.PID.tmp` next to `path`: hidden (a textfile collector reads only `*.prom`, and a
/// listing of the users file's directory stays readable), and per process, so two processes
/// replacing the same file never write into each other's temp file.
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    Ok(parent_dir(path).join(tmp))
}

/// Replaces `path` with `contents` atomically, the new file getting `mode` (set explicitly,
/// after `prepare`, so neither the umask nor a chown's clearing of set-id bits decides it).
///
/// `prepare` runs on the new, still empty temp file (the users file gives it the old file's
/// owner there). `go_ahead` is asked just before the rename, the moment the change happens:
/// `false` leaves `path` as it was and returns `Ok(false)`. The temp file never outlives a
/// call that did not rename it.
pub fn replace_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
    prepare: impl FnOnce(&File) -> io::Result<()>,
    go_ahead: impl FnOnce() -> bool,
) -> io::Result<bool> {
    #[cfg(debug_assertions)]
    test_hooks::stall(path);
    let tmp = temp_path(path)?;
    // A stale temp file (a crash mid-write) or anything else planted under that name.
    // Removing a symbolic link removes the link, never its target.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(mode)
            .open(&tmp)?;
        prepare(&f)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        if !go_ahead() {
            return Ok(false);
        }
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory is.
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(parent_dir(path))?
            .sync_all()?;
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Stand-ins for what the integration tests cannot make the kernel do on demand: a file
/// system that hangs, and a race lost at one exact point. Compiled only with debug
/// assertions, so release builds carry no trigger (like `EXTAUTH_BRIDGE_TEST_PANICS`), and
/// inert unless their variable is set.
#[cfg(debug_assertions)]
pub mod test_hooks {
    use std::path::Path;
    use std::sync::OnceLock;
    use std::time::Duration;

    /// A path: every access to exactly this path (a users file's stat and read, the
    /// replacing of a users or metrics file) first sleeps [`STALL`], as on a hung mount.
    pub const STALL_ENV: &str = "EXTAUTH_BRIDGE_TEST_STALL";
    /// A FIFO: once the write lock's file is open, and before anything is done with it, the
    /// process reads this FIFO to its end, so a test can swap the lock's name in between.
    pub const LOCK_PAUSE_ENV: &str = "EXTAUTH_BRIDGE_TEST_LOCK_PAUSE";
    /// Longer than any test waits for a reply: for the test, the access never returns.
    pub const STALL: Duration = Duration::from_secs(30);

    fn var(
        name: &'static str,
        cell: &'static OnceLock<Option<std::ffi::OsString>>,
    ) -> Option<&'static std::ffi::OsString> {
        cell.get_or_init(|| std::env::var_os(name)).as_ref()
    }

    pub fn stall(path: &Path) {
        static STALLED: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
        if var(STALL_ENV, &STALLED).is_some_and(|p| Path::new(p) == path) {
            std::thread::sleep(STALL);
        }
    }

    pub fn after_lock_open() {
        static FIFO: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
        if let Some(fifo) = var(LOCK_PAUSE_ENV, &FIFO) {
            // Blocks until the test opens the write end, returns when it closes it.
            if let Ok(mut f) = std::fs::File::open(fifo) {
                let _ = std::io::copy(&mut f, &mut std::io::sink());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_link_planted_at_the_temp_name_is_removed_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, temp_path(&path).unwrap()).unwrap();
        let done = replace_atomically(&path, b"new\n", 0o640, |_| Ok(()), || true).unwrap();
        assert!(done);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert!(!temp_path(&path).unwrap().exists());
    }

    #[test]
    fn no_go_ahead_leaves_the_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        fs::write(&path, "old\n").unwrap();
        let done = replace_atomically(&path, b"new\n", 0o600, |_| Ok(()), || false).unwrap();
        assert!(!done);
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\n");
        let failed = replace_atomically(
            &path,
            b"new\n",
            0o600,
            |_| Err(io::Error::other("refused")),
            || true,
        );
        assert!(failed.is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
