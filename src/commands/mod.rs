//! The operator's commands: `check`, `query`, `users`, `generate`, `hash-password`. Unlike the daemon they
//! talk to a person, so their results go to stdout (each such write is marked `stdout-ok`)
//! and their logs to stderr, whatever the configuration says: a `query` run as root must
//! not create the daemon's log file with root as its owner.

pub mod check;
pub mod generate;
pub mod hash_password;
pub mod prompt;
pub mod query;
pub mod users;

use std::io::{self, Write};
use std::process::ExitCode;

use crate::cli::Cli;
use crate::config::{LogConfig, LogLevel, LogTarget};

/// Exit status: all is well / the answer is yes.
pub const EXIT_OK: u8 = 0;
/// Exit status: a no, a broken backend, no such user.
pub const EXIT_NO: u8 = 1;
/// Exit status: a configuration or usage error, or (for `query`) a failed request.
pub const EXIT_ERROR: u8 = 2;

/// Writes a command's output to stdout. A closed stdout (`| head`) is not worth a panic.
pub(crate) fn say(text: std::fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    // stdout-ok: the operator commands' output is meant for stdout.
    let _ = stdout.write_fmt(text);
    let _ = stdout.write_all(b"\n");
}

/// Prints a one-line error on stderr and returns `code`.
pub(crate) fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("extauth-bridge: {message}");
    ExitCode::from(code)
}

/// Logs of an operator command: stderr, at `--log-level` or else `warn` (backends warn
/// about malformed users-file lines and the like; the rest is noise here).
pub(crate) fn init_command_logging(cli: &Cli) {
    // `file` stays unset: never the daemon's log file.
    let config = LogConfig {
        level: cli.log_level.unwrap_or(LogLevel::Warn),
        format: cli.log_format.unwrap_or_default(),
        target: LogTarget::Stderr,
        ..LogConfig::default()
    };
    let _ = crate::logging::init(&config, false);
}

/// The same single-threaded runtime the daemon uses.
pub(crate) fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Milliseconds with one decimal, for reports.
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
