//! Logging setup. Logs never go to stdout (the protocol); under a Prosody pty they never go
//! to stderr either (the same pty). Text or JSON lines to stderr or a file; datagrams to the
//! systemd journal or to syslog; or nowhere.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::config::{ConfigError, Facility, LogConfig, LogFormat, LogLevel, LogTarget};

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

fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
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

/// The level filter of the installed subscriber, changeable while it runs: a SIGHUP that
/// changes `log.level` takes effect at once (an operator raising it to `debug` to watch a
/// problem should not have to restart the XMPP server's pool for it).
static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();

type Filtered = Layered<reload::Layer<LevelFilter, Registry>, Registry>;

/// Installs `output` as the global subscriber behind a reloadable level filter. A second
/// install (tests, other subcommands) keeps the first subscriber, and its filter.
fn install(filter: LevelFilter, output: impl Layer<Filtered> + Send + Sync + 'static) {
    let (filter, handle) = reload::Layer::new(filter);
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(handle);
    }
    LOGGING_READY.store(true, Ordering::SeqCst);
}

/// Applies a new `log.level` to the running subscriber. Returns `false` when there is none
/// to change (logging goes nowhere, or was installed by someone else).
pub fn set_level(new: LogLevel) -> bool {
    LEVEL
        .get()
        .is_some_and(|handle| handle.modify(|filter| *filter = level(new)).is_ok())
}

/// Sets up the journal or syslog: events are encoded as datagrams when they happen, held
/// with the other deferred lines, and sent by [`flush`].
fn datagrams(wire: Wire, path: PathBuf, filter: LevelFilter) -> Result<(), InitError> {
    // Never blocks a request: a full receive queue or an absent daemon drops the line.
    let socket = UnixDatagram::unbound()
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|error| InitError::Socket {
            path: path.clone(),
            error,
        })?;
    let _ = DEFERRED.set(Deferred::new(Sink::Datagrams(Datagrams {
        socket,
        path,
        wire,
        unreported: 0,
    })));
    install(filter, DatagramLayer { wire });
    Ok(())
}

/// Log lines wait here until the request loop has written its replies, then go out together
/// (to the writer thread for stderr or a file, see [`Queue`]): a reply never waits for its
/// own log line, and a piped file's thousands of lines
/// cost a few writes instead of one each. The loop calls [`flush`] before it blocks on input
/// and before it returns, so a line waits at most until its reply is out; a line from
/// another thread while the loop is idle waits for the next request (or the 64 KiB mark).
/// For the journal and syslog the held bytes are datagrams, each behind its length.
struct Deferred {
    lines: Mutex<Vec<u8>>,
    sink: Mutex<Sink>,
    pending: AtomicBool,
}

impl Deferred {
    fn new(sink: Sink) -> Deferred {
        Deferred {
            lines: Mutex::new(Vec::with_capacity(4096)),
            sink: Mutex::new(sink),
            pending: AtomicBool::new(false),
        }
    }
}

/// Where held lines go.
enum Sink {
    /// stderr or a file, through the writer thread.
    Queued(Arc<Queue>),
    /// stderr or a file written in place: only when the writer thread could not be started.
    Stream(Box<dyn io::Write + Send>),
    /// The journal or syslog: one datagram per held record.
    Datagrams(Datagrams),
}

/// Most bytes of log text waiting for the writer thread; past it, lines are dropped.
const QUEUE_LIMIT: usize = 1024 * 1024;

/// How long [`finish`] waits for the writer thread to write what is queued.
const FINISH_WAIT: Duration = Duration::from_millis(500);

/// Log text on its way to stderr or a file, written by a thread of its own.
///
/// A write to stderr or a file can block for as long as the other side likes: a stderr pipe
/// nobody reads (the XMPP server busy, or reading it only when the process ends) fills after
/// 64 KiB, a file on a hung mount never returns. On the request thread that would hold every
/// reply past the deadline (SPEC §10), and the runtime cannot interrupt it. So the request
/// thread only queues, and never waits: when the queue is full, lines are dropped and
/// counted, like the journal's and syslog's datagrams, and once writing works again the
/// writer logs `log lines dropped count=N` before the next lines.
struct Queue {
    state: Mutex<QueueState>,
    /// The writer waits here for text.
    work: Condvar,
    /// [`finish`] waits here for the queue to empty.
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
    fn push(&self, lines: &[u8]) {
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
    fn drain(&self, wait: Duration) {
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
fn queued(stream: Box<dyn io::Write + Send>) -> Sink {
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

/// Lines past this size are written at once rather than held.
const DEFERRED_LIMIT: usize = 64 * 1024;

static DEFERRED: OnceLock<Deferred> = OnceLock::new();

/// Routes log lines through the deferred buffer, writing them to `sink` on [`flush`].
fn deferred(sink: Sink) -> DeferredWriter {
    let _ = DEFERRED.set(Deferred::new(sink));
    DeferredWriter
}

/// Appends `parts` to the held lines, under one lock so that two threads' lines never
/// interleave.
fn hold(parts: &[&[u8]]) {
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
struct DeferredWriter;

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

/// Log lines dropped since start: the journal or syslog did not take them (receive queue
/// full, no daemon, too big), or stderr or the file did not keep up (see [`Queue`]).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped since start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The socket side of the journal and syslog targets.
struct Datagrams {
    /// Unbound and non-blocking; each datagram is addressed to `path`, so a daemon that
    /// restarts (a new socket at the same path) is reached again without reconnecting.
    socket: UnixDatagram,
    path: PathBuf,
    wire: Wire,
    /// Lines dropped since one last got through, told in a notice when one does again.
    unreported: u64,
}

impl Datagrams {
    /// Sends each held record (a native-endian `u32` length, then the datagram).
    fn send_held(&mut self, mut held: &[u8]) {
        while let Some((len, rest)) = held.split_first_chunk::<4>() {
            let len = u32::from_ne_bytes(*len) as usize;
            let Some(datagram) = rest.get(..len) else {
                return;
            };
            held = &rest[len..];
            if self.unreported > 0 {
                let notice = self.wire.encode(
                    tracing::Level::WARN,
                    None,
                    &Fields::notice(
                        "log lines dropped (socket queue full or no daemon listening)",
                        self.unreported,
                    ),
                );
                if self.send(&notice) {
                    self.unreported = 0;
                }
            }
            if !self.send(datagram) {
                self.unreported += 1;
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One non-blocking send. Which error it was does not matter: the line is lost either
    /// way, and waiting or writing it elsewhere (stderr may be Prosody's pty) is worse.
    fn send(&self, datagram: &[u8]) -> bool {
        self.socket.send_to(datagram, &self.path).is_ok()
    }
}

/// Longest text sent in one datagram (MESSAGE, or a syslog line's message), in bytes; the
/// rest is cut. journald and rsyslog take 8 KiB lines by default, and a datagram must fit
/// the socket buffer; our lines are far shorter unless a request carries a huge user name.
const MAX_TEXT: usize = 8 * 1024;
/// Longest value of one structured journal field.
const MAX_FIELD: usize = 2 * 1024;

/// Which datagram format, with the facility it is logged under.
#[derive(Debug, Clone, Copy)]
enum Wire {
    Journal(Facility),
    Syslog(Facility),
}

/// Syslog severity of a tracing level (RFC 5424 §6.2.1). `info` is syslog's `info`, not
/// `notice`: one line per request is routine, not "significant".
fn priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

impl Wire {
    /// One event as one datagram.
    fn encode(self, level: tracing::Level, code: Option<(&str, u32)>, fields: &Fields) -> Vec<u8> {
        let text = fields.text();
        match self {
            Wire::Journal(facility) => {
                let mut out = Vec::with_capacity(256 + text.len());
                journal_field(&mut out, "PRIORITY", priority(level).to_string().as_bytes());
                journal_field(
                    &mut out,
                    "SYSLOG_FACILITY",
                    facility.code().to_string().as_bytes(),
                );
                journal_field(&mut out, "SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes());
                journal_field(
                    &mut out,
                    "SYSLOG_PID",
                    std::process::id().to_string().as_bytes(),
                );
                journal_field(&mut out, "MESSAGE", text.as_bytes());
                if let Some((file, line)) = code {
                    journal_field(&mut out, "CODE_FILE", file.as_bytes());
                    journal_field(&mut out, "CODE_LINE", line.to_string().as_bytes());
                }
                for (name, value) in &fields.fields {
                    let value = value.plain();
                    journal_field(
                        &mut out,
                        &journal_name(name),
                        cut(value, MAX_FIELD).as_bytes(),
                    );
                }
                out
            }
            Wire::Syslog(facility) => {
                // RFC 3164 as syslog(3) writes it to /dev/log: `<PRI>TIMESTAMP TAG[PID]: MSG`.
                let pri = u16::from(facility.code()) * 8 + u16::from(priority(level));
                format!(
                    "<{pri}>{} {IDENTIFIER}[{}]: {text}",
                    timestamp_3164(),
                    std::process::id()
                )
                .into_bytes()
            }
        }
    }
}

/// Appends one field in the journal's native protocol: `NAME=value\n`, or, for a value with
/// a newline, `NAME\n`, its length as a little-endian u64, the value and `\n`.
fn journal_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A tracing field name as a journal field name: upper case, `[A-Z0-9_]`, not starting with
/// `_` (reserved for fields journald itself vouches for) or a digit, at most 64 bytes. Names
/// we set ourselves get a prefix rather than a second, conflicting value.
fn journal_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    let ours = [
        "MESSAGE",
        "PRIORITY",
        "SYSLOG_FACILITY",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_PID",
        "CODE_FILE",
        "CODE_LINE",
    ];
    if out.is_empty()
        || out.starts_with(['_', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
        || ours.contains(&out.as_str())
    {
        out.insert_str(0, "F_");
    }
    out.truncate(64);
    out
}

/// `Mmm dd hh:mm:ss` in local time, as syslog(3) stamps a line. The receiver keeps its own
/// arrival time anyway (rsyslog and journald both do by default for the local socket).
fn timestamp_3164() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) has no preconditions; localtime_r writes only into `tm`, which
    // lives on this stack frame, and is the thread-safe variant.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            None
        } else {
            Some(tm)
        }
    };
    let month = tm.and_then(|tm| MONTHS.get(usize::try_from(tm.tm_mon).ok()?));
    match (tm, month) {
        (Some(tm), Some(month)) => format!(
            "{month} {:>2} {:02}:{:02}:{:02}",
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
        ),
        // Receivers stamp lines without a timestamp themselves (RFC 3164 §4.3.2).
        _ => String::new(),
    }
}

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// The subscriber layer of the journal and syslog targets: encodes each event as one
/// datagram and holds it for [`flush`].
struct DatagramLayer {
    wire: Wire,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DatagramLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let code = meta.file().zip(meta.line());
        let datagram = self.wire.encode(*meta.level(), code, &fields);
        let Ok(len) = u32::try_from(datagram.len()) else {
            return;
        };
        hold(&[&len.to_ne_bytes(), &datagram]);
    }
}

/// An event's message and fields, as recorded.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, Value)>,
}

enum Value {
    /// A string field: quoted in the text form, as the text format does.
    Str(String),
    /// Anything else, already formatted (`Debug`, or `Display` through `%`).
    Shown(String),
}

impl Value {
    /// The value without quotes, for a journal field.
    fn plain(&self) -> &str {
        match self {
            Value::Str(s) | Value::Shown(s) => s,
        }
    }
}

impl Fields {
    fn notice(message: &str, count: u64) -> Fields {
        Fields {
            message: message.to_owned(),
            fields: vec![("count", Value::Shown(count.to_string()))],
        }
    }

    /// The text format's rendering without timestamp and level: `message key=value …`.
    fn text(&self) -> String {
        let mut text = self.message.clone();
        for (name, value) in &self.fields {
            if !text.is_empty() {
                text.push(' ');
            }
            let _ = match value {
                Value::Str(s) => write!(text, "{name}={s:?}"),
                Value::Shown(s) => write!(text, "{name}={s}"),
            };
        }
        cut(&text, MAX_TEXT).into_owned()
    }
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .push((field.name(), Value::Str(value.to_owned())));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let shown = format!("{value:?}");
        if field.name() == "message" {
            self.message = shown;
        } else {
            self.fields.push((field.name(), Value::Shown(shown)));
        }
    }
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

    fn fields(message: &str, fields: &[(&'static str, &str)]) -> Fields {
        Fields {
            message: message.to_owned(),
            fields: fields
                .iter()
                .map(|(n, v)| (*n, Value::Str((*v).to_owned())))
                .collect(),
        }
    }

    #[test]
    fn journal_datagrams_use_the_binary_form_for_newlines() {
        let f = fields("request", &[("user", "romeo"), ("reason", "two\nlines")]);
        let d = Wire::Journal(Facility::Authpriv).encode(
            tracing::Level::WARN,
            Some(("src/x.rs", 7)),
            &f,
        );
        let text = String::from_utf8_lossy(&d);
        assert!(
            text.starts_with("PRIORITY=4\nSYSLOG_FACILITY=10\n"),
            "{text}"
        );
        assert!(
            text.contains("\nSYSLOG_IDENTIFIER=extauth-bridge\n"),
            "{text}"
        );
        assert!(
            text.contains("\nCODE_FILE=src/x.rs\nCODE_LINE=7\n"),
            "{text}"
        );
        assert!(text.contains("\nUSER=romeo\n"), "{text}");
        // MESSAGE is the text form, where a string's newline is escaped: one line...
        assert!(
            text.contains("\nMESSAGE=request user=\"romeo\" reason=\"two\\nlines\"\n"),
            "{text}"
        );
        // ...but the REASON field carries the raw value: NAME\n, u64 LE length, value, \n.
        let mut binary = b"\nREASON\n".to_vec();
        binary.extend_from_slice(&9u64.to_le_bytes());
        binary.extend_from_slice(b"two\nlines\n");
        assert!(d.windows(binary.len()).any(|w| w == binary), "{text}");
    }

    #[test]
    fn syslog_lines_carry_priority_tag_and_pid() {
        let f = fields("started", &[]);
        let d = Wire::Syslog(Facility::Auth).encode(tracing::Level::ERROR, None, &f);
        let text = String::from_utf8(d).unwrap();
        // auth (4) * 8 + err (3)
        assert!(text.starts_with("<35>"), "{text}");
        let tag = format!(" extauth-bridge[{}]: started", std::process::id());
        assert!(text.ends_with(&tag), "{text}");
        // `<35>Mmm dd hh:mm:ss` before the tag.
        assert_eq!(text.len(), 4 + 15 + tag.len(), "{text}");
    }

    #[test]
    fn levels_map_to_syslog_severities() {
        use tracing::Level;
        let severities = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .map(priority);
        assert_eq!(severities, [3, 4, 6, 7, 7]);
    }

    #[test]
    fn journal_names_and_long_values() {
        assert_eq!(journal_name("latency_us"), "LATENCY_US");
        assert_eq!(journal_name("log.file"), "LOG_FILE");
        assert_eq!(journal_name("_secret"), "F__SECRET");
        assert_eq!(journal_name("priority"), "F_PRIORITY");
        let long = "é".repeat(MAX_TEXT);
        let shown = fields(&long, &[]).text();
        assert!(
            shown.len() <= MAX_TEXT && shown.ends_with('…'),
            "{}",
            shown.len()
        );
        assert_eq!(cut("short", 10), "short");
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
