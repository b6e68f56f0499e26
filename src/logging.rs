//! Logging setup. Logs never go to stdout (the protocol); under a Prosody pty they never go
//! to stderr either (the same pty). Text or JSON lines, to stderr, a file, or nowhere.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

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
    if !HOOK_INSTALLED.load(Ordering::SeqCst) || under_pty {
        // Callers that did not install it first (other subcommands) still get it.
        install_panic_hook(under_pty);
    }
    let dest = destination(config, under_pty);
    let filter = level(config.level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_target(false);
    // try_init: a second init (tests, reload) keeps the first subscriber.
    match (dest, config.format) {
        (Destination::Nowhere, _) => return Ok(()),
        (Destination::Stderr, LogFormat::Text) => {
            let ansi = rustix::termios::isatty(rustix::stdio::stderr());
            let writer = deferred(Box::new(io::stderr()));
            let _ = builder.with_ansi(ansi).with_writer(writer).try_init();
        }
        (Destination::Stderr, LogFormat::Json) => {
            let _ = builder
                .json()
                .flatten_event(true)
                .with_writer(deferred(Box::new(io::stderr())))
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
            let writer = deferred(Box::new(file));
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
    LOGGING_READY.store(true, Ordering::SeqCst);
    Ok(())
}

/// Log lines wait here until the request loop has written its replies, then go out in one
/// write: a reply never waits for its own log line, and a piped file's thousands of lines
/// cost a few writes instead of one each. The loop calls [`flush`] before it blocks on input
/// and before it returns, so a line waits at most until its reply is out; a line from
/// another thread while the loop is idle waits for the next request (or the 64 KiB mark).
struct Deferred {
    lines: Mutex<Vec<u8>>,
    sink: Mutex<Box<dyn io::Write + Send>>,
    pending: AtomicBool,
}

/// Lines past this size are written at once rather than held.
const DEFERRED_LIMIT: usize = 64 * 1024;

static DEFERRED: OnceLock<Deferred> = OnceLock::new();

/// Routes log lines through the deferred buffer, writing them to `sink` on [`flush`].
fn deferred(sink: Box<dyn io::Write + Send>) -> DeferredWriter {
    let _ = DEFERRED.set(Deferred {
        lines: Mutex::new(Vec::with_capacity(4096)),
        sink: Mutex::new(sink),
        pending: AtomicBool::new(false),
    });
    DeferredWriter
}

/// The `MakeWriter` handed to tracing: each formatted event is one `write` into the buffer.
#[derive(Clone, Copy)]
struct DeferredWriter;

impl io::Write for DeferredWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let Some(d) = DEFERRED.get() else {
            return Ok(line.len());
        };
        let mut lines = d.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.extend_from_slice(line);
        d.pending.store(true, Ordering::Release);
        if lines.len() >= DEFERRED_LIMIT {
            let full = std::mem::take(&mut *lines);
            drop(lines);
            write_lines(d, &full);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DeferredWriter {
    type Writer = DeferredWriter;
    fn make_writer(&'a self) -> DeferredWriter {
        DeferredWriter
    }
}

fn write_lines(d: &Deferred, lines: &[u8]) {
    let mut sink = d.sink.lock().unwrap_or_else(|p| p.into_inner());
    // Nowhere to report a failing log destination; the protocol must go on.
    let _ = io::Write::write_all(&mut **sink, lines);
    let _ = io::Write::flush(&mut **sink);
}

/// Writes out the log lines held since the last call. Cheap when there are none.
pub fn flush() {
    let Some(d) = DEFERRED.get() else { return };
    if !d.pending.swap(false, Ordering::AcqRel) {
        return;
    }
    let mut lines = d.lines.lock().unwrap_or_else(|p| p.into_inner());
    if lines.is_empty() {
        return;
    }
    let held = std::mem::replace(&mut *lines, Vec::with_capacity(4096));
    drop(lines);
    write_lines(d, &held);
}

static LOGGING_READY: AtomicBool = AtomicBool::new(false);
static STDERR_FORBIDDEN: AtomicBool = AtomicBool::new(false);
static HOOK_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Replaces the default panic hook, which prints to stderr: under Prosody that is the
/// protocol pty. Called first thing, before the configuration is read; `under_pty` forbids
/// stderr from then on. Panics go to the log once there is one, before that to stderr (not
/// under a pty) or nowhere. Request handling catches them and answers `0`.
pub fn install_panic_hook(under_pty: bool) {
    STDERR_FORBIDDEN.store(under_pty, Ordering::SeqCst);
    HOOK_INSTALLED.store(true, Ordering::SeqCst);
    std::panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if LOGGING_READY.load(Ordering::SeqCst) {
            tracing::error!(%location, message = message.as_ref(), "panic");
        } else if !STDERR_FORBIDDEN.load(Ordering::SeqCst) {
            eprintln!("extauth-bridge: panic at {location}: {message}");
        }
        // The loop catches request panics and flushes; anything else may be about to exit.
        flush();
    }));
}

/// What a panic log line may say about the payload. A literal message (`&'static str`) was
/// written by a programmer and is shown. A formatted one (`String`: `panic!("{x}")`, the
/// `Debug` of an error in `unwrap()`) is built from runtime values, which in a request may
/// include a password, so only its length is shown.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> std::borrow::Cow<'static, str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).into()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("(formatted message of {} bytes withheld)", s.len()).into()
    } else {
        "(non-text payload)".into()
    }
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

    #[test]
    fn formatted_panic_messages_are_withheld() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("literal message");
        assert_eq!(panic_message(literal.as_ref()), "literal message");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("password {}", "hunter2"));
        let shown = panic_message(formatted.as_ref());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("16 bytes"), "{shown}");
    }
}
