//! Reading a password for `query` and `users`: from the terminal without echo, or one line
//! from stdin when it is piped.
//!
//! Echo is switched off on the terminal itself (termios on fd 0) and switched back on when
//! the read ends, on every path: the guard restores it on return or unwind, and a handler for
//! SIGINT/SIGTERM/SIGHUP/SIGQUIT restores it before the signal's default action runs, so a
//! Ctrl-C at the prompt does not leave the admin's shell without echo. A Ctrl-Z (SIGTSTP)
//! gives the terminal its echo back before the process stops, and takes it away again when
//! the process is continued (SIGCONT, `fg`) and the prompt still waits: not every shell saves
//! and restores a stopped job's terminal modes.

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rustix::termios::{self, LocalModes, OptionalActions, Termios};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read the password: {0}")]
    Io(#[from] io::Error),
    #[error("no password given (end of input)")]
    NoInput,
    #[error("empty password")]
    Empty,
    #[error("the passwords do not match")]
    Mismatch,
}

/// The terminal settings before echo was switched off; written once, read by the handler.
static SAVED: OnceLock<Termios> = OnceLock::new();
/// The settings while the prompt reads: `SAVED` without echo. Written once.
static QUIET: OnceLock<Termios> = OnceLock::new();
/// Whether echo is off right now, i.e. whether the signal handler must restore.
static ECHO_OFF: AtomicBool = AtomicBool::new(false);

extern "C" fn restore_and_stop(_signal: libc::c_int) {
    // Async-signal-safe only: atomics, tcsetattr, signal(2), sigprocmask(2) and raise(3).
    let was_off = ECHO_OFF.swap(false, Ordering::SeqCst);
    if was_off {
        if let Some(saved) = SAVED.get() {
            let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, saved);
        }
    }
    // SAFETY: stop the way the default action would: SIGTSTP is blocked while its handler
    // runs, so unblock it, and raise it with the default action. raise returns once the
    // process is continued; then the handler is put back.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTSTP);
        libc::signal(libc::SIGTSTP, libc::SIG_DFL);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(libc::SIGTSTP);
        libc::signal(
            libc::SIGTSTP,
            restore_and_stop as *const () as libc::sighandler_t,
        );
    }
    // Continued: the prompt still reads, so its echo goes off again.
    if was_off {
        if let Some(quiet) = QUIET.get() {
            if termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, quiet).is_ok() {
                ECHO_OFF.store(true, Ordering::SeqCst);
            }
        }
    }
}

extern "C" fn restore_and_reraise(signal: libc::c_int) {
    // Async-signal-safe only: an atomic, an ioctl (tcsetattr), signal(2) and raise(3).
    if ECHO_OFF.swap(false, Ordering::SeqCst) {
        if let Some(saved) = SAVED.get() {
            let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, saved);
        }
    }
    // SAFETY: resetting to the default action and re-raising is the documented way to end
    // with the signal's usual effect (exit status 128+n for the shell).
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Echo off until dropped.
struct EchoOff;

impl EchoOff {
    fn new() -> io::Result<EchoOff> {
        let stdin = rustix::stdio::stdin();
        let current = termios::tcgetattr(stdin)?;
        let saved = SAVED.get_or_init(|| current.clone());
        let quiet = QUIET.get_or_init(|| {
            let mut quiet = saved.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            // Keep ECHONL so the newline typed after the password still moves the cursor.
            quiet.local_modes.insert(LocalModes::ECHONL);
            quiet
        });
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: installing a handler that only does async-signal-safe work.
            unsafe {
                libc::signal(
                    signal,
                    restore_and_reraise as *const () as libc::sighandler_t,
                );
            }
        }
        // SAFETY: as above.
        unsafe {
            libc::signal(
                libc::SIGTSTP,
                restore_and_stop as *const () as libc::sighandler_t,
            );
        }
        ECHO_OFF.store(true, Ordering::SeqCst);
        if let Err(e) = termios::tcsetattr(stdin, OptionalActions::Now, quiet) {
            ECHO_OFF.store(false, Ordering::SeqCst);
            return Err(e.into());
        }
        Ok(EchoOff)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if ECHO_OFF.swap(false, Ordering::SeqCst) {
            if let Some(saved) = SAVED.get() {
                let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, saved);
            }
        }
    }
}

/// Whether stdin is a terminal (a person typing) rather than a pipe or file.
pub fn stdin_is_terminal() -> bool {
    termios::isatty(rustix::stdio::stdin())
}

/// Reads one line, without its `\n` or `\r\n`; it may be empty. The line buffer is wiped by
/// `Secret`. End of input before anything was read is an error: no password was given at all.
fn read_line() -> Result<Secret, PromptError> {
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        return Err(PromptError::NoInput);
    }
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let secret = Secret::new(trimmed.strip_suffix('\r').unwrap_or(trimmed));
    zeroize::Zeroize::zeroize(&mut line);
    Ok(secret)
}

/// A password to store must not be empty: the daemon refuses every empty password.
fn non_empty(secret: Secret) -> Result<Secret, PromptError> {
    if secret.is_empty() {
        return Err(PromptError::Empty);
    }
    Ok(secret)
}

/// Prompts on stderr (stdout may be a pipe to a script) and reads without echo.
fn read_hidden(prompt: &str) -> Result<Secret, PromptError> {
    let mut stderr = io::stderr().lock();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let _echo_off = EchoOff::new()?;
    read_line()
}

/// A password for a question (`query auth`…): asked once on a terminal, else one piped line.
/// An empty one is returned as it is: the question goes on to the daemon's handler, which
/// answers it the way the daemon does (`0`, "empty password"), and `query` must too.
pub fn password(prompt: &str) -> Result<Secret, PromptError> {
    if stdin_is_terminal() {
        read_hidden(prompt)
    } else {
        read_line()
    }
}

/// A new password (`users add`, `users passwd`): asked twice on a terminal, else one piped line.
pub fn new_password(prompt: &str) -> Result<Secret, PromptError> {
    if !stdin_is_terminal() {
        return read_line().and_then(non_empty);
    }
    let first = read_hidden(prompt).and_then(non_empty)?;
    let again = read_hidden("Retype it: ")?;
    if first.expose() != again.expose() {
        return Err(PromptError::Mismatch);
    }
    Ok(first)
}
