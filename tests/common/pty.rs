//! A pseudo-terminal harness that drives the bridge the way Prosody's lpty does (SPEC §2):
//! fds 0/1/2 on the slave, a new session without a controlling terminal, an inherited
//! descriptor that is not close-on-exec, no arguments (the configuration comes from the
//! environment), and queries written while echo may still be on. Replies are read as lpty
//! reads them: one `read()` of up to 4096 bytes per reply. Used by `pty.rs` and
//! `log_targets.rs`.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::BIN;

/// Where the child gets copies of the parent's socket and of the pty master, without
/// close-on-exec: what a careless parent leaks.
pub const LEAKED_SOCKET_FD: RawFd = 40;
pub const LEAKED_MASTER_FD: RawFd = 41;

pub struct PtyChild {
    master: Option<OwnedFd>,
    /// The parent's copy of the slave: lets it watch the slave's modes and input queue.
    slave: Option<OwnedFd>,
    pub socket: UnixStream,
    pub child: Child,
}

pub fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors; no name, termios or window size given.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
    for fd in [master, slave] {
        // Close-on-exec in the parent: other tests run in parallel threads and spawn
        // children too; only our child gets the deliberate leaks (made in pre_exec).
        // SAFETY: fcntl on descriptors we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: freshly opened, owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// The child's controlling terminal.
#[derive(Clone, Copy)]
pub enum Terminal {
    /// None: lpty's child (a new session).
    Without,
    /// The pty itself: an admin typing at a terminal.
    ThisPty,
    /// Another terminal, open in the parent as this slave descriptor.
    Other(RawFd),
}

/// Spawns the bridge on a new pty, with `terminal` as its controlling terminal.
/// `before_start` is written to the master before the child runs, while echo is on.
/// `leak_master`: also leak the pty master. Outside pty mode nothing closes inherited
/// descriptors, and a leaked master keeps the pty open forever.
pub fn spawn(
    config: &Path,
    extra_args: &[&str],
    terminal: Terminal,
    leak_master: bool,
    before_start: &[u8],
) -> PtyChild {
    spawn_env(config, extra_args, &[], terminal, leak_master, before_start)
}

/// [`spawn`] with extra environment variables.
pub fn spawn_env(
    config: &Path,
    extra_args: &[&str],
    env: &[(&str, &str)],
    terminal: Terminal,
    leak_master: bool,
    before_start: &[u8],
) -> PtyChild {
    let (master, slave) = openpty();
    if !before_start.is_empty() {
        write_all(&master, before_start);
    }
    let (socket, leaked) = UnixStream::pair().unwrap();
    let leaked_socket = leaked.as_raw_fd();
    let leaked_master = if leak_master { master.as_raw_fd() } else { -1 };
    let mut cmd = Command::new(BIN);
    cmd.args(extra_args)
        .envs(env.iter().copied())
        .env("EXTAUTH_BRIDGE_CONFIG", config)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let ctty = match terminal {
                Terminal::Without => None,
                Terminal::ThisPty => Some(0),
                Terminal::Other(fd) => Some(fd),
            };
            if let Some(fd) = ctty {
                if libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // dup2 clears close-on-exec on the copy, in the child only.
            for (from, to) in [
                (leaked_socket, LEAKED_SOCKET_FD),
                (leaked_master, LEAKED_MASTER_FD),
            ] {
                if from >= 0 && libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn bridge");
    drop(leaked);
    PtyChild {
        master: Some(master),
        slave: Some(slave),
        socket,
        child,
    }
}

pub fn write_all(fd: &OwnedFd, mut data: &[u8]) {
    while !data.is_empty() {
        let n = rustix::io::write(fd, data).expect("write to the pty master");
        data = &data[n..];
    }
}

/// Waits up to `timeout` for the master to be readable.
pub fn readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    let timeout = rustix::event::Timespec::try_from(timeout).unwrap();
    matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

impl PtyChild {
    pub fn master(&self) -> &OwnedFd {
        self.master.as_ref().unwrap()
    }

    /// One `read()` of up to 4096 bytes, as lpty does; panics if nothing comes in 10 s.
    pub fn read_once(&self) -> Vec<u8> {
        assert!(
            readable(self.master(), Duration::from_secs(10)),
            "no reply within 10 s"
        );
        let mut buf = [0u8; 4096];
        let n = rustix::io::read(self.master(), &mut buf).expect("read from the pty master");
        buf[..n].to_vec()
    }

    /// Prosody's reading of a reply: one read, one trailing `\r?\n` stripped.
    pub fn reply(&self) -> String {
        let raw = self.read_once();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let text = text.strip_suffix('\n').unwrap_or(&text);
        text.strip_suffix('\r').unwrap_or(text).to_owned()
    }

    pub fn ask(&self, query: &str) -> String {
        write_all(self.master(), format!("{query}\n").as_bytes());
        self.reply()
    }

    pub fn slave_termios(&self) -> rustix::termios::Termios {
        rustix::termios::tcgetattr(self.slave.as_ref().unwrap()).unwrap()
    }

    /// Waits until the child has switched to raw mode and read everything waiting.
    pub fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let raw = !self
                .slave_termios()
                .local_modes
                .contains(rustix::termios::LocalModes::ECHO);
            let queued = rustix::io::ioctl_fionread(self.slave.as_ref().unwrap()).unwrap();
            if raw && queued == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "child never entered raw mode");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The targets of the child's open descriptors.
    pub fn open_files(&self) -> Vec<String> {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Closes our side of the pty, as a dying Prosody does, and waits for the child.
    pub fn hang_up(mut self) -> ExitStatus {
        self.slave.take();
        self.master.take();
        wait_with_timeout(&mut self.child, Duration::from_secs(10))
    }
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child still running {timeout:?} after its pty was closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn socket_inode(s: &UnixStream) -> u64 {
    rustix::fs::fstat(s).unwrap().st_ino
}
