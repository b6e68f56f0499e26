//! Logging setup. Logs never go to stdout (the protocol); under a Prosody pty they never go
//! to stderr either (the same pty). Text or JSON lines, to stderr, a file, or nowhere.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;

use crate::config::{LogConfig, LogFormat, LogLevel, LogTarget};

/// Where logs actually go once `auto` is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    File(std::path::PathBuf),
    Nowhere,
}

/// Resolves `target = "auto"`: stderr normally; under a pty (where stderr is the protocol)
/// the configured file, or nothing.
pub fn destination(config: &LogConfig, under_pty: bool) -> Destination {
    match config.target {
        LogTarget::Stderr if !under_pty => Destination::Stderr,
        LogTarget::Auto if !under_pty => Destination::Stderr,
        LogTarget::None => Destination::Nowhere,
        LogTarget::File => match &config.file {
            Some(f) => Destination::File(f.clone()),
            None => Destination::Nowhere,
        },
        // Auto or Stderr under a pty: stderr is off limits.
        _ => match &config.file {
            Some(f) => Destination::File(f.clone()),
            None => Destination::Nowhere,
        },
    }
}

fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber. Fails only when a log file cannot be opened.
pub fn init(config: &LogConfig, under_pty: bool) -> io::Result<()> {
    let dest = destination(config, under_pty);
    let filter = level(config.level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_target(false);
    // try_init: a second init (tests, reload) keeps the first subscriber.
    match (dest, config.format) {
        (Destination::Nowhere, _) => {}
        (Destination::Stderr, LogFormat::Text) => {
            let ansi = rustix::termios::isatty(rustix::stdio::stderr());
            let _ = builder.with_ansi(ansi).with_writer(io::stderr).try_init();
        }
        (Destination::Stderr, LogFormat::Json) => {
            let _ = builder
                .json()
                .flatten_event(true)
                .with_writer(io::stderr)
                .try_init();
        }
        (Destination::File(path), format) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&path)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("log file {}: {e}", path.display()))
                })?;
            let writer = Mutex::new(file);
            let _ = match format {
                LogFormat::Text => builder.with_ansi(false).with_writer(writer).try_init(),
                LogFormat::Json => builder
                    .json()
                    .flatten_event(true)
                    .with_writer(writer)
                    .try_init(),
            };
        }
    }
    install_panic_hook();
    Ok(())
}

/// The default panic hook prints to stderr, which under Prosody is the protocol pty.
/// Panics go to the log instead (and request handling catches them and answers `0`).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, message = %payload, "panic");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_never_logs_to_stderr() {
        let mut c = LogConfig::default();
        assert_eq!(destination(&c, false), Destination::Stderr);
        assert_eq!(destination(&c, true), Destination::Nowhere);
        c.target = LogTarget::Stderr;
        assert_eq!(destination(&c, true), Destination::Nowhere);
        c.file = Some("/tmp/x".into());
        assert_eq!(destination(&c, true), Destination::File("/tmp/x".into()));
        c.target = LogTarget::None;
        assert_eq!(destination(&c, false), Destination::Nowhere);
    }
}
