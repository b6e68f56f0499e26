//! The journal and syslog targets' common side: the unbound non-blocking socket and its
//! sends (a lost datagram is counted, then told in a notice once one gets through), the
//! subscriber layer that turns an event into one datagram, the recorded fields and their
//! text form, and the syslog severity of a level. The two wire formats themselves are in
//! `journald.rs` and `syslog.rs`. Must not block or retry a send, nor fall back to stderr
//! (under Prosody it is the protocol pty).

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use tracing_subscriber::filter::LevelFilter;

use super::deferred::{hold, Deferred, Sink, DEFERRED};
use super::dropped::DROPPED;
use super::journald;
use super::level::install;
use super::syslog;
use super::InitError;
use crate::config::Facility;

/// Sets up the journal or syslog: events are encoded as datagrams when they happen, held
/// with the other deferred lines, and sent by [`flush`](super::flush).
pub(super) fn datagrams(wire: Wire, path: PathBuf, filter: LevelFilter) -> Result<(), InitError> {
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

/// The socket side of the journal and syslog targets.
pub(super) struct Datagrams {
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
    pub(super) fn send_held(&mut self, mut held: &[u8]) {
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
pub(super) const MAX_FIELD: usize = 2 * 1024;

/// Which datagram format, with the facility it is logged under.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wire {
    Journal(Facility),
    Syslog(Facility),
}

/// Syslog severity of a tracing level (RFC 5424 §6.2.1). `info` is syslog's `info`, not
/// `notice`: one line per request is routine, not "significant".
pub(super) fn priority(level: tracing::Level) -> u8 {
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
            Wire::Journal(facility) => journald::datagram(facility, level, code, &text, fields),
            Wire::Syslog(facility) => syslog::line(facility, level, &text),
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub(super) fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
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
/// datagram and holds it for [`flush`](super::flush).
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
pub(super) struct Fields {
    message: String,
    pub(super) fields: Vec<(&'static str, Value)>,
}

pub(super) enum Value {
    /// A string field: quoted in the text form, as the text format does.
    Str(String),
    /// Anything else, already formatted (`Debug`, or `Display` through `%`).
    Shown(String),
}

impl Value {
    /// The value without quotes, for a journal field.
    pub(super) fn plain(&self) -> &str {
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

#[cfg(test)]
mod tests {
    use super::super::journald::journal_name;
    use super::*;

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
}
