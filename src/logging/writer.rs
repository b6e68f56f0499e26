//! The writer thread of the stderr and file targets: a bounded queue the request thread
//! pushes to without ever waiting, and a thread that writes it in order and logs how many
//! lines were dropped when the queue was full. The request thread must never write to the
//! stream itself while the thread runs.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::deferred::{flush, Sink};
use super::dropped::DROPPED;

/// Most bytes of log text waiting for the writer thread; past it, lines are dropped.
const QUEUE_LIMIT: usize = 1024 * 1024;

/// How long [`finish`](super::finish) waits for the writer thread to write what is queued.
pub(super) const FINISH_WAIT: Duration = Duration::from_millis(500);

/// Log text on its way to stderr or a file, written by a thread of its own.
///
/// A write to stderr or a file can block for as long as the other side likes: a stderr pipe
/// nobody reads (the XMPP server busy, or reading it only when the process ends) fills after
/// 64 KiB, a file on a hung mount never returns. On the request thread that would hold every
/// reply past the deadline (SPEC §10), and the runtime cannot interrupt it. So the request
/// thread only queues, and never waits: when the queue is full, lines are dropped and
/// counted, like the journal's and syslog's datagrams, and once writing works again the
/// writer logs `log lines dropped count=N` before the next lines.
pub(super) struct Queue {
    state: Mutex<QueueState>,
    /// The writer waits here for text.
    work: Condvar,
    /// [`finish`](super::finish) waits here for the queue to empty.
    written: Condvar,
}

#[derive(Default)]
struct QueueState {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes in `chunks` plus those being written.
    bytes: usize,
    /// Lines dropped since the writer last reported it.
    unreported: u64,
}

impl Queue {
    /// Queues `lines`, or drops and counts them when the queue is full. Never blocks on I/O.
    pub(super) fn push(&self, lines: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.bytes + lines.len() > QUEUE_LIMIT {
            let count = line_count(lines);
            state.unreported += count;
            DROPPED.fetch_add(count, Ordering::Relaxed);
            return;
        }
        state.bytes += lines.len();
        state.chunks.push_back(lines.to_vec());
        self.work.notify_one();
    }

    /// The writer thread: writes what is queued, in order, then says what was dropped.
    fn run(&self, mut stream: Box<dyn io::Write + Send>) {
        crate::signals::block_in_this_thread();
        loop {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            while state.chunks.is_empty() {
                state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            let chunks: Vec<Vec<u8>> = state.chunks.drain(..).collect();
            drop(state);
            let mut len = 0;
            for chunk in &chunks {
                len += chunk.len();
                // Nowhere to report a failing log destination; the protocol must go on.
                if io::Write::write_all(&mut stream, chunk).is_err() {
                    DROPPED.fetch_add(line_count(chunk), Ordering::Relaxed);
                }
            }
            let _ = io::Write::flush(&mut stream);
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.bytes -= len;
            let unreported = std::mem::take(&mut state.unreported);
            self.written.notify_all();
            drop(state);
            if unreported > 0 {
                // Through the subscriber, so it has the configured format; queued by the
                // flush like any line (and counted again, should that fail too).
                tracing::warn!(
                    count = unreported,
                    "log lines dropped (the log destination did not keep up)"
                );
                flush();
            }
        }
    }

    /// Waits until the queue is written, at most `wait`.
    pub(super) fn drain(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.bytes > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// How many log lines `text` holds (a cut line counts as one).
fn line_count(text: &[u8]) -> u64 {
    let lines = text.iter().filter(|&&b| b == b'\n').count();
    (lines + usize::from(text.last().is_some_and(|&b| b != b'\n'))) as u64
}

/// Starts the writer thread for `stream`; if no thread can be started, `stream` is written
/// in place, as before there was one.
pub(super) fn queued(stream: Box<dyn io::Write + Send>) -> Sink {
    let queue = Arc::new(Queue {
        state: Mutex::new(QueueState::default()),
        work: Condvar::new(),
        written: Condvar::new(),
    });
    let writer = Arc::clone(&queue);
    // A failed spawn drops the closure, and a stream moved into it: the closure takes the
    // stream from a slot instead, so that on failure it is still here to write in place.
    let slot = Arc::new(Mutex::new(Some(stream)));
    let taken = Arc::clone(&slot);
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let stream = taken.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(stream) = stream {
                writer.run(stream);
            }
        });
    match spawned {
        Ok(_) => Sink::Queued(queue),
        Err(_) => match slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(stream) => Sink::Stream(stream),
            None => Sink::Queued(queue),
        },
    }
}
