//! Prosody's pty: detection and the start-up steps that keep its replies aligned (SPEC §2).
//!
//! Prosody (through lpty) gives us one pseudo-terminal for stdin, stdout and stderr, in a new
//! session without a controlling terminal, and writes its first query right after the fork,
//! usually before anything could turn echo off. The kernel then echoes that query (password
//! included) back to Prosody, which reads the echo as the reply, and every later reply is
//! read as the answer to the query after its own: a wrong password can get the previous
//! user's `1`. So, in pty mode, before anything else:
//! 1. close inherited descriptors ≥ 3 ([`close_inherited_fds`]): one of them may be Prosody's
//!    own end of the pty, and while we hold it our read never fails when Prosody dies;
//! 2. switch fd 0 to raw mode with `TCSANOW` ([`enter_raw_mode`]): no echo, no line editing,
//!    no signals from bytes, no `\r`/`\n` translation either way. Never `TCSAFLUSH`, which
//!    would throw away input without telling us what it was;
//! 3. discard, unanswered, what is already waiting ([`drain_pending`]), and with a partial
//!    line the rest of that line ([`SkipPartialLine`]).

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use serde::Deserialize;

/// The `pty` setting: `--pty` on the command line, `pty = …` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PtyMode {
    /// Pty mode when stdin is a terminal that is not our controlling terminal (see `detect`).
    #[default]
    Auto,
    On,
    Off,
}

impl PtyMode {
    /// Whether to behave as under Prosody's pty; `detected` is [`detect`]'s answer.
    pub fn enabled(self, detected: bool) -> bool {
        match self {
            PtyMode::Auto => detected,
            PtyMode::On => true,
            PtyMode::Off => false,
        }
    }
}

/// True when fd 0 is a terminal that is not our controlling terminal: Prosody's lpty.
///
/// The check is `tcgetsid(0)`: it succeeds only when fd 0 *is* the caller's controlling
/// terminal, and then returns our own session. An admin typing into a terminal passes it and
/// keeps echo. A child of lpty fails it, whether it has no controlling terminal at all (lpty
/// calls `setsid()`) or still has some other one (had lpty not done so, the terminal Prosody
/// was started from): in both cases fd 0 is not a terminal anyone types into. Opening
/// `/dev/tty` would only answer "do we have a controlling terminal", which gets the second
/// case wrong, and would open a file before the inherited descriptors are closed.
pub fn detect() -> bool {
    let stdin = rustix::stdio::stdin();
    if !rustix::termios::isatty(stdin) {
        return false;
    }
    match (
        rustix::termios::tcgetsid(stdin),
        rustix::process::getsid(None),
    ) {
        (Ok(terminal_session), Ok(own_session)) => terminal_session != own_session,
        _ => true,
    }
}

/// Closes every descriptor ≥ 3. Called first thing in pty mode, before the configuration is
/// read, so nothing of ours is open yet.
pub fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; nothing in this process owns one ≥ 3 yet.
    // The raw syscall avoids depending on the C library's version for the wrapper.
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0;
    if done {
        return;
    }
    // Kernels before 5.9: list /proc/self/fd first (the listing's own descriptor is among
    // them and closes with the listing), then close what was listed.
    let listed: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd >= 3)
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in listed {
        // SAFETY: as above; EBADF for the listing's own, already closed, descriptor is fine.
        unsafe { libc::close(fd) };
    }
}

/// Raw mode on `fd`, effective at once (`TCSANOW`), keeping whatever input is queued.
pub fn enter_raw_mode(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut termios = rustix::termios::tcgetattr(fd)?;
    // cfmakeraw: clears ECHO, ECHONL, ICANON, ISIG, IEXTEN, IXON, ICRNL, INLCR, IGNCR, OPOST…
    termios.make_raw();
    rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &termios)?;
    Ok(())
}

/// What [`drain_pending`] threw away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Complete lines discarded.
    pub lines: usize,
    pub bytes: usize,
    /// The last discarded bytes were the start of a line: its rest must be discarded too.
    pub partial_line: bool,
}

/// Reads and discards everything already waiting on `fd`, without blocking.
///
/// A query of which any byte was waiting is dropped whole. If its bytes arrived before raw
/// mode, the kernel echoed them and Prosody took the echo as the reply: answering would shift
/// every later reply. If they arrived just after, dropping costs that one login (Prosody times
/// out), never alignment. Data arriving later is never dropped, except the rest of a line
/// whose start was waiting, which is the same query.
pub fn drain_pending(fd: BorrowedFd<'_>) -> Drained {
    // The pty's input queue holds 4 KiB; the bound only guards against a peer that never
    // stops writing.
    const MAX_DRAIN: usize = 1 << 20;
    let mut drained = Drained::default();
    let mut chunk = [0u8; 4096];
    while drained.bytes < MAX_DRAIN {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&zero)) {
            Ok(n) if n > 0 && fds[0].revents().contains(PollFlags::IN) => {}
            Err(Errno::INTR) => continue,
            _ => break,
        }
        match rustix::io::read(fd, &mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                let data = &chunk[..n];
                drained.bytes += n;
                drained.lines += data.iter().filter(|&&b| b == b'\n').count();
                drained.partial_line = data.last() != Some(&b'\n');
            }
            Err(Errno::INTR | Errno::AGAIN) => continue,
            // EIO: Prosody is already gone; the request loop will see it as end of input.
            Err(_) => break,
        }
    }
    drained
}

/// The pty steps 2 and 3 on stdin.
pub fn prepare_stdin() -> io::Result<Drained> {
    let stdin = rustix::stdio::stdin();
    enter_raw_mode(stdin)?;
    Ok(drain_pending(stdin.as_fd()))
}

/// Passes input through, after dropping everything up to and including the first `\n` when
/// asked to: the rest of a line whose start [`drain_pending`] discarded.
pub struct SkipPartialLine<R> {
    inner: R,
    skipping: bool,
}

impl<R: Read> SkipPartialLine<R> {
    pub fn new(inner: R, skip: bool) -> Self {
        SkipPartialLine {
            inner,
            skipping: skip,
        }
    }
}

impl<R: Read> Read for SkipPartialLine<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if !self.skipping || n == 0 {
                return Ok(n);
            }
            if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
                self.skipping = false;
                buf.copy_within(end + 1..n, 0);
                let kept = n - end - 1;
                if kept > 0 {
                    return Ok(kept);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_resolution() {
        assert!(PtyMode::Auto.enabled(true));
        assert!(!PtyMode::Auto.enabled(false));
        assert!(PtyMode::On.enabled(false));
        assert!(!PtyMode::Off.enabled(true));
    }

    #[test]
    fn skips_only_the_rest_of_the_first_line() {
        let input: &[u8] = b"d:pw\nisuser:a:b\nauth:a:b:c\n";
        let mut out = Vec::new();
        SkipPartialLine::new(input, true)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"isuser:a:b\nauth:a:b:c\n");

        let mut out = Vec::new();
        SkipPartialLine::new(input, false)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn skipping_across_reads_never_returns_an_early_zero() {
        // One byte per read: the wrapper must keep reading past the skipped bytes, since a
        // zero would read as end of input.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((&b, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = b;
                self.0 = rest;
                Ok(1)
            }
        }
        let mut out = Vec::new();
        SkipPartialLine::new(Trickle(b"xyz\n\nq"), true)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"\nq");
    }
}
