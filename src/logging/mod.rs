//! Logging setup. Logs never go to stdout (the protocol); under a Prosody pty they never go
//! to stderr either (the same pty). Text or JSON lines to stderr or a file; datagrams to the
//! systemd journal or to syslog; or nowhere.
//!
//! This file owns the choice of destination (`target = "auto"` resolved) and [`init`], which
//! opens it and installs the subscriber; the pieces live beside it: `level.rs` (the
//! reloadable filter), `deferred.rs` (lines held until the replies are out, [`flush`]),
//! `writer.rs` (the stderr/file writer thread), `datagram.rs` (the journal/syslog socket and
//! layer), `journald.rs` and `syslog.rs` (their wire formats), `dropped.rs` (the drop
//! count), `panic.rs` (the panic hook). Nothing here reads the configuration file or knows
//! the protocol; callers see only what this file makes public.

mod datagram;
mod deferred;
mod dropped;
mod journald;
mod level;
mod panic;
mod syslog;
mod writer;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::config::{ConfigError, LogConfig, LogFormat, LogTarget};

use datagram::{datagrams, Wire};
use deferred::deferred;
pub use deferred::{finish, flush};
pub use dropped::dropped;
pub use level::set_level;
use level::{install, level};
use panic::HOOK_INSTALLED;
pub use panic::{install_panic_hook, panic_message};
use writer::queued;

/// The journal's native-protocol socket (systemd.journal-fields(7), "native protocol").
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
/// The local syslog socket, as syslog(3) uses it.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// `SYSLOG_IDENTIFIER=` in the journal, the tag of a syslog line.
pub const IDENTIFIER: &str = "extauth-bridge";

/// Where logs actually go once `auto` is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    File(PathBuf),
    /// The journal's native protocol, to this socket.
    Journald(PathBuf),
    /// Syslog datagrams, to this socket.
    Syslog(PathBuf),
    Nowhere,
}

/// Resolves `target = "auto"`: stderr normally; under a pty (where stderr is the protocol)
/// the configured file, else the journal if its socket exists, else nothing.
pub fn destination(config: &LogConfig, under_pty: bool) -> Destination {
    destination_with(config, under_pty, is_socket)
}

/// [`destination`] with the question "does this socket exist" answered by `socket_exists`.
fn destination_with(
    config: &LogConfig,
    under_pty: bool,
    socket_exists: impl Fn(&Path) -> bool,
) -> Destination {
    let socket = |usual: &str| config.socket.clone().unwrap_or_else(|| usual.into());
    match config.target {
        LogTarget::None => Destination::Nowhere,
        LogTarget::File => match &config.file {
            Some(f) => Destination::File(f.clone()),
            None => Destination::Nowhere,
        },
        // Named explicitly: used even when nothing listens yet (the daemon may start later;
        // until then lines are dropped, see `Datagrams`).
        LogTarget::Journald => Destination::Journald(socket(JOURNALD_SOCKET)),
        LogTarget::Syslog => Destination::Syslog(socket(SYSLOG_SOCKET)),
        LogTarget::Stderr | LogTarget::Auto if !under_pty => Destination::Stderr,
        // Auto or Stderr under a pty: stderr is off limits. A file the operator named wins;
        // else the journal, where systemd runs Prosody and would have taken its stderr
        // anyway. Syslog is never guessed: /dev/log may be anything, and must be chosen.
        LogTarget::Stderr | LogTarget::Auto => match &config.file {
            Some(f) => Destination::File(f.clone()),
            None => {
                let journal = socket(JOURNALD_SOCKET);
                if socket_exists(&journal) {
                    Destination::Journald(journal)
                } else {
                    Destination::Nowhere
                }
            }
        },
    }
}

/// Whether `path` is a socket (not merely exists: a stale regular file is no daemon).
pub fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Why logging could not be set up. Both are configuration problems for the operator: the
/// daemon exits with status 2 rather than run without the logs it was told to keep.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot open log file {path}: {error}", path = path.display())]
    OpenFile { path: PathBuf, error: io::Error },
    #[error("cannot create a socket to send logs to {path}: {error}", path = path.display())]
    Socket { path: PathBuf, error: io::Error },
}

impl InitError {
    /// The configuration key to blame.
    pub fn key(&self) -> &'static str {
        match self {
            InitError::OpenFile { .. } => "log.file",
            InitError::Socket { .. } => "log.target",
        }
    }

    /// As a configuration error: one line naming `file` (where the configuration came from)
    /// and the key, like every other one, so the operator knows what to fix and where.
    pub fn config_error(&self, file: &str) -> ConfigError {
        ConfigError::new(file, self.key(), self.to_string())
    }
}

/// Installs the global subscriber. Fails only when a log file cannot be opened (or, in
/// theory, a socket cannot be created).
pub fn init(config: &LogConfig, under_pty: bool) -> Result<(), InitError> {
    if !HOOK_INSTALLED.load(Ordering::SeqCst) || under_pty {
        // Callers that did not install it first (other subcommands) still get it.
        install_panic_hook(under_pty);
    }
    let dest = destination(config, under_pty);
    let filter = level(config.level);
    // Text and JSON lines go to a stream: stderr (colours only on a terminal) or a file.
    let (stream, ansi): (Box<dyn io::Write + Send>, bool) = match dest {
        Destination::Nowhere => return Ok(()),
        Destination::Stderr => (
            Box::new(io::stderr()),
            rustix::termios::isatty(rustix::stdio::stderr()),
        ),
        Destination::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&path)
                .map_err(|error| InitError::OpenFile { path, error })?;
            (Box::new(file), false)
        }
        // `format` does not apply: the receiver stamps time, level and process itself, and
        // a human reads MESSAGE (`journalctl`, /var/log/auth.log). The journal also gets
        // every field on its own, which is the structured form there.
        Destination::Journald(path) => {
            return datagrams(Wire::Journal(config.facility), path, filter)
        }
        Destination::Syslog(path) => return datagrams(Wire::Syslog(config.facility), path, filter),
    };
    let writer = deferred(queued(stream));
    let lines = tracing_subscriber::fmt::layer().with_target(false);
    match config.format {
        LogFormat::Text => install(filter, lines.with_ansi(ansi).with_writer(writer)),
        LogFormat::Json => install(filter, lines.json().flatten_event(true).with_writer(writer)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_never_logs_to_stderr() {
        let none = |_: &Path| false;
        let mut c = LogConfig::default();
        assert_eq!(destination_with(&c, false, none), Destination::Stderr);
        assert_eq!(destination_with(&c, true, none), Destination::Nowhere);
        c.target = LogTarget::Stderr;
        assert_eq!(destination_with(&c, true, none), Destination::Nowhere);
        c.file = Some("/tmp/x".into());
        assert_eq!(
            destination_with(&c, true, none),
            Destination::File("/tmp/x".into())
        );
        c.target = LogTarget::None;
        assert_eq!(destination_with(&c, false, none), Destination::Nowhere);
    }

    #[test]
    fn auto_under_a_pty_prefers_the_file_then_the_journal() {
        let journal = |p: &Path| p == Path::new(JOURNALD_SOCKET);
        let mut c = LogConfig::default();
        assert_eq!(
            destination_with(&c, true, journal),
            Destination::Journald(JOURNALD_SOCKET.into())
        );
        // Not under a pty, auto is stderr even with a journal.
        assert_eq!(destination_with(&c, false, journal), Destination::Stderr);
        // log.socket names the journal socket auto looks for.
        c.socket = Some("/elsewhere".into());
        assert_eq!(destination_with(&c, true, journal), Destination::Nowhere);
        c.file = Some("/tmp/x".into());
        assert_eq!(
            destination_with(&c, true, journal),
            Destination::File("/tmp/x".into())
        );
        // Explicit targets use their socket whether it exists or not.
        c.target = LogTarget::Syslog;
        c.socket = None;
        assert_eq!(
            destination_with(&c, true, |_| false),
            Destination::Syslog(SYSLOG_SOCKET.into())
        );
        c.target = LogTarget::Journald;
        c.socket = Some("/s".into());
        assert_eq!(
            destination_with(&c, true, |_| false),
            Destination::Journald("/s".into())
        );
    }
}
