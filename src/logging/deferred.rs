//! The buffer every log line waits in until the request loop has written its replies, and
//! [`flush`]/[`finish`], which hand the held lines to their sink (the writer thread, a stream
//! in place, or the datagram socket). Must not do I/O on the caller's thread beyond that
//! hand-over: a reply never waits for a log line.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::datagram::Datagrams;
use super::writer::{Queue, FINISH_WAIT};

/// Log lines wait here until the request loop has written its replies, then go out together
/// (to the writer thread for stderr or a file, see [`Queue`]): a reply never waits for its
/// own log line, and a piped file's thousands of lines
/// cost a few writes instead of one each. The loop calls [`flush`] before it blocks on input
/// and before it returns, so a line waits at most until its reply is out; a line from
/// another thread while the loop is idle waits for the next request (or the 64 KiB mark).
/// For the journal and syslog the held bytes are datagrams, each behind its length.
pub(super) struct Deferred {
    lines: Mutex<Vec<u8>>,
    sink: Mutex<Sink>,
    pending: AtomicBool,
}

impl Deferred {
    pub(super) fn new(sink: Sink) -> Deferred {
        Deferred {
            lines: Mutex::new(Vec::with_capacity(4096)),
            sink: Mutex::new(sink),
            pending: AtomicBool::new(false),
        }
    }
}

/// Where held lines go.
pub(super) enum Sink {
    /// stderr or a file, through the writer thread.
    Queued(Arc<Queue>),
    /// stderr or a file written in place: only when the writer thread could not be started.
    Stream(Box<dyn io::Write + Send>),
    /// The journal or syslog: one datagram per held record.
    Datagrams(Datagrams),
}

/// Lines past this size are written at once rather than held.
const DEFERRED_LIMIT: usize = 64 * 1024;

pub(super) static DEFERRED: OnceLock<Deferred> = OnceLock::new();

/// Routes log lines through the deferred buffer, writing them to `sink` on [`flush`].
pub(super) fn deferred(sink: Sink) -> DeferredWriter {
    let _ = DEFERRED.set(Deferred::new(sink));
    DeferredWriter
}

/// Appends `parts` to the held lines, under one lock so that two threads' lines never
/// interleave.
pub(super) fn hold(parts: &[&[u8]]) {
    let Some(d) = DEFERRED.get() else { return };
    let mut lines = d.lines.lock().unwrap_or_else(|p| p.into_inner());
    for part in parts {
        lines.extend_from_slice(part);
    }
    d.pending.store(true, Ordering::Release);
    if lines.len() >= DEFERRED_LIMIT {
        let full = std::mem::take(&mut *lines);
        drop(lines);
        write_lines(d, &full);
    }
}

/// The `MakeWriter` handed to tracing: each formatted event is one `write` into the buffer.
#[derive(Clone, Copy)]
pub(super) struct DeferredWriter;

impl io::Write for DeferredWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        hold(&[line]);
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
    match &mut *sink {
        Sink::Queued(queue) => queue.push(lines),
        Sink::Stream(stream) => {
            // Nowhere to report a failing log destination; the protocol must go on.
            let _ = io::Write::write_all(stream, lines);
            let _ = io::Write::flush(stream);
        }
        Sink::Datagrams(datagrams) => datagrams.send_held(lines),
    }
}

/// Before the process ends: hands over the held lines and gives the writer thread a moment
/// ([`FINISH_WAIT`]) to write them. Bounded, so that a stderr nobody reads cannot hold up
/// the exit.
pub fn finish() {
    flush();
    let Some(d) = DEFERRED.get() else { return };
    let queue = match &*d.sink.lock().unwrap_or_else(|p| p.into_inner()) {
        Sink::Queued(queue) => Arc::clone(queue),
        _ => return,
    };
    queue.drain(FINISH_WAIT);
}

/// Hands the log lines held since the last call to their destination. Cheap when there
/// are none; never blocks on I/O.
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
