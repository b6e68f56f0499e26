//! SIGTERM/SIGINT (stop after the request in hand) and SIGHUP (reload the configuration).
//!
//! The request loop blocks in `read(2)` on stdin between requests. A flag alone would race:
//! a signal landing just before the loop blocks would go unnoticed until the next request.
//! So the handler also writes a byte to a self-pipe, and the loop waits on stdin and the
//! pipe together with `poll(2)`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use rustix::event::{poll, PollFd, PollFlags};

static SHUTDOWN: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe work here: atomics and write(2), with errno preserved.
    let saved = io::Error::last_os_error().raw_os_error();
    if signal == libc::SIGHUP {
        RELOAD.store(true, Ordering::SeqCst);
    } else {
        SHUTDOWN.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writing one byte from a static buffer to a descriptor we own.
        unsafe {
            libc::write(fd, b"s".as_ptr().cast(), 1);
        }
    }
    if let Some(errno) = saved {
        // SAFETY: __errno_location returns the calling thread's errno slot.
        unsafe { *libc::__errno_location() = errno };
    }
}

/// Wakes the request loop from its wait for input, as a signal would, so that it looks at
/// its controls (a reload prepared on another thread is ready). Harmless before
/// [`Signals::install`] and when the loop is busy: it then finds the byte on its next wait
/// and finds nothing more to do.
pub fn wake() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writing one byte from a static buffer to the self-pipe, which lives as long
        // as the process serves requests; a full pipe (EAGAIN) already holds a wake-up.
        unsafe {
            libc::write(fd, b"w".as_ptr().cast(), 1);
        }
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread. Run at the start of every thread
/// the runtime spawns (blocking pool included), so these signals are always delivered to the
/// main thread, where the request loop waits for them. Delivered to a pool thread instead,
/// a signal would interrupt whatever system call it was in (a `flock` waiting for the users
/// file, a DNS lookup) and fail that request.
pub fn block_in_this_thread() {
    // SAFETY: building a signal set on the stack and changing this thread's mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The installed handlers and the read end of the self-pipe.
pub struct Signals {
    wake_read: OwnedFd,
    _wake_write: OwnedFd,
}

impl Drop for Signals {
    /// The descriptor number must not reach a handler or [`wake`] once it is closed: it may
    /// be reused for a file.
    fn drop(&mut self) {
        WAKE_FD.store(-1, Ordering::SeqCst);
    }
}

impl Signals {
    /// Installs handlers for SIGTERM, SIGINT and SIGHUP. Call once, early.
    pub fn install() -> io::Result<Signals> {
        let (wake_read, wake_write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        WAKE_FD.store(wake_write.as_raw_fd(), Ordering::SeqCst);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is valid; the handler only touches atomics and write(2).
            // No SA_RESTART: a blocked read/poll returns EINTR and the loop looks at the flags.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                action.sa_flags = 0;
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Signals {
            wake_read,
            _wake_write: wake_write,
        })
    }

    pub fn shutdown_requested(&self) -> bool {
        SHUTDOWN.load(Ordering::SeqCst)
    }

    /// True once per SIGHUP received since the last call.
    pub fn take_reload(&self) -> bool {
        RELOAD.swap(false, Ordering::SeqCst)
    }

    /// Blocks until `fd` is readable (`Ok`) or a signal arrived (`Err(Interrupted)`).
    pub fn wait_readable(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut fds = [
            PollFd::new(&fd, PollFlags::IN),
            PollFd::new(&self.wake_read, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Err(io::ErrorKind::Interrupted.into()),
            Err(e) => return Err(e.into()),
        }
        if !fds[1].revents().is_empty() {
            let mut sink = [0u8; 64];
            while matches!(rustix::io::read(self.wake_read.as_fd(), &mut sink), Ok(n) if n > 0) {}
            return Err(io::ErrorKind::Interrupted.into());
        }
        Ok(())
    }
}
