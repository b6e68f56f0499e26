//! Wire formats. Each codec is pure (bytes in, [`Incoming`] out; `bool` in, bytes out), so it
//! can be fuzzed and tested without I/O; [`WireCodec`] picks one from the first bytes (see
//! [`Protocol::detect`]).

pub mod ejabberd;
pub mod line;

use bytes::BytesMut;
use serde::Deserialize;
use tokio_util::codec::{Decoder, Encoder};

pub use ejabberd::EjabberdCodec;
pub use line::LineCodec;

use crate::request::{Command, Incoming};

/// Which framing to speak on stdin/stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Decide from the command name the first request starts with (see [`Protocol::detect`]).
    #[default]
    Auto,
    /// Prosody's line protocol (`auth:user:host:pass\n`).
    Line,
    /// ejabberd's 2-byte length-prefixed frames.
    Ejabberd,
}

/// The longest command name (`tryregister`, `removeuser3`).
const LONGEST_COMMAND: usize = 11;

/// How many bytes [`Protocol::detect`] needs at most: a 2-byte length, the longest command
/// name and its `:`. Auto-detection never holds more than this undecided.
pub const DETECT_BYTES: usize = 2 + LONGEST_COMMAND + 1;

/// How far `bytes` goes towards `NAME:` for a known command name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    /// Starts with `NAME:`.
    Complete,
    /// Could still become `NAME:` with more bytes.
    Partial,
    /// Cannot.
    No,
}

fn command_prefix(bytes: &[u8]) -> Prefix {
    let mut partial = false;
    for command in Command::ALL {
        let name = command.as_str().as_bytes();
        let n = bytes.len().min(name.len() + 1);
        let wanted = name.iter().chain(b":").take(n);
        if bytes[..n].iter().eq(wanted) {
            if n == name.len() + 1 {
                return Prefix::Complete;
            }
            partial = true;
        }
    }
    if partial {
        Prefix::Partial
    } else {
        Prefix::No
    }
}

impl Protocol {
    /// Which framing the stream starting with `start` is in; `None` while more bytes are
    /// needed to tell (never once `start` holds [`DETECT_BYTES`], nor at `eof`, except for
    /// an empty stream, which needs no answer).
    ///
    /// From the command name, not from one byte (SPEC §4): an ejabberd frame of 8 KiB or
    /// more starts with a length byte ≥ 0x20, `a` (0x61) for 24 832 bytes and up, so a first
    /// login with a long password would be read as a line, answered in the wrong framing,
    /// and every later reply misread. A line starts with `NAME:`; a frame has `NAME:` right
    /// after its length. No name ends in another one two bytes in, so both cannot match.
    /// Input that matches neither is answered `0` in the framing its first byte suggests:
    /// ejabberd below 0x20 (a frame under 8 KiB), else the line protocol, which is what a
    /// person typing at a terminal reads.
    pub fn detect(start: &[u8], eof: bool) -> Option<Protocol> {
        let &first = start.first()?;
        // No command name starts with a control byte: this cannot be a line, and a frame
        // is what the first byte suggests anyway, so there is nothing to wait for.
        if first < 0x20 {
            return Some(Protocol::Ejabberd);
        }
        let line = command_prefix(start);
        let frame = start.get(2..).map_or(Prefix::Partial, command_prefix);
        match (line, frame) {
            (Prefix::Complete, _) => Some(Protocol::Line),
            (_, Prefix::Complete) => Some(Protocol::Ejabberd),
            (Prefix::Partial, _) | (_, Prefix::Partial) if !eof => None,
            _ => Some(Protocol::Line),
        }
    }
}

/// The codec the request loop uses: fixed by configuration or chosen by [`Protocol::detect`].
#[derive(Debug, Clone)]
pub enum WireCodec {
    Undecided { max_line: usize },
    Line(LineCodec),
    Ejabberd(EjabberdCodec),
}

impl WireCodec {
    pub fn new(protocol: Protocol, max_line: usize) -> Self {
        match protocol {
            Protocol::Auto => WireCodec::Undecided { max_line },
            Protocol::Line => WireCodec::Line(LineCodec::new(max_line)),
            Protocol::Ejabberd => WireCodec::Ejabberd(EjabberdCodec),
        }
    }

    /// The protocol in use, once known.
    pub fn protocol(&self) -> Protocol {
        match self {
            WireCodec::Undecided { .. } => Protocol::Auto,
            WireCodec::Line(_) => Protocol::Line,
            WireCodec::Ejabberd(_) => Protocol::Ejabberd,
        }
    }

    /// Commits to a framing once [`Protocol::detect`] can tell. Until then the bytes stay
    /// in `buf`, unanswered: at most [`DETECT_BYTES`] of them, then a decision.
    fn decide(&mut self, buf: &BytesMut, eof: bool) {
        if let WireCodec::Undecided { max_line } = *self {
            let start = &buf[..buf.len().min(DETECT_BYTES)];
            if let Some(protocol) = Protocol::detect(start, eof) {
                *self = WireCodec::new(protocol, max_line);
            }
        }
    }
}

impl Decoder for WireCodec {
    type Item = Incoming;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        self.decide(buf, false);
        match self {
            WireCodec::Undecided { .. } => Ok(None),
            WireCodec::Line(c) => c.decode(buf),
            WireCodec::Ejabberd(c) => c.decode(buf),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        self.decide(buf, true);
        match self {
            WireCodec::Undecided { .. } => Ok(None),
            WireCodec::Line(c) => c.decode_eof(buf),
            WireCodec::Ejabberd(c) => c.decode_eof(buf),
        }
    }
}

impl Encoder<bool> for WireCodec {
    type Error = std::io::Error;

    /// Before a framing is decided there is nothing to answer; a reply then would be a bug, and
    /// the line form is the one an admin at a terminal can read.
    fn encode(&mut self, answer: bool, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        match self {
            WireCodec::Ejabberd(c) => c.encode(answer, dst),
            WireCodec::Line(c) => c.encode(answer, dst),
            WireCodec::Undecided { max_line } => LineCodec::new(*max_line).encode(answer, dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

    #[test]
    fn detection_waits_for_the_command_name() {
        let line = b"removeuser3:a:b:c\n";
        for n in 1..12 {
            assert_eq!(Protocol::detect(&line[..n], false), None, "{n} bytes");
        }
        assert_eq!(Protocol::detect(&line[..12], false), Some(Protocol::Line));
        // `removeuser:` is complete one byte earlier.
        assert_eq!(
            Protocol::detect(b"removeuser:", false),
            Some(Protocol::Line)
        );
        // A frame of 24 876 bytes: its length starts with `a`, its payload with `auth:`.
        let frame = [&[0x61, 0x2c][..], b"auth:romeo:example.net:xxxx"].concat();
        for n in 1..7 {
            assert_eq!(Protocol::detect(&frame[..n], false), None, "{n} bytes");
        }
        assert_eq!(
            Protocol::detect(&frame[..7], false),
            Some(Protocol::Ejabberd)
        );
        // Below 0x20 the first byte is enough: no line starts with it.
        assert_eq!(Protocol::detect(&[0x00], false), Some(Protocol::Ejabberd));
        assert_eq!(Protocol::detect(&[0x1f], false), Some(Protocol::Ejabberd));
        assert_eq!(Protocol::detect(b"", true), None);
    }

    #[test]
    fn input_matching_neither_goes_by_the_first_byte() {
        // Decided as soon as neither form can match any more, within DETECT_BYTES.
        assert_eq!(Protocol::detect(b"hel", false), Some(Protocol::Line));
        assert_eq!(Protocol::detect(b"he", false), None);
        assert_eq!(Protocol::detect(b"he", true), Some(Protocol::Line));
        assert_eq!(Protocol::detect(b"auth\n", false), Some(Protocol::Line));
        assert_eq!(
            Protocol::detect(&[0, 3, b'x'], false),
            Some(Protocol::Ejabberd)
        );
        let longest = [&b"\xff\xfftryregister"[..], b"x"].concat();
        assert_eq!(longest.len(), DETECT_BYTES);
        assert_eq!(Protocol::detect(&longest, false), Some(Protocol::Line));
        assert_eq!(Protocol::detect(&longest[..DETECT_BYTES - 1], false), None);
    }

    #[test]
    fn no_command_name_ends_in_another_two_bytes_in() {
        // What makes the two forms exclusive: `NAME1:` with its first two bytes taken as a
        // length never starts like `NAME2:`, nor the other way round.
        let names: Vec<Vec<u8>> = Command::ALL
            .iter()
            .map(|c| [c.as_str().as_bytes(), b":"].concat())
            .collect();
        for a in &names {
            for b in &names {
                let rest = &a[2..];
                let n = rest.len().min(b.len());
                assert_ne!(rest[..n], b[..n], "{a:?} / {b:?}");
            }
        }
        let longest = Command::ALL.iter().map(|c| c.as_str().len()).max();
        assert_eq!(longest, Some(LONGEST_COMMAND));
    }

    #[test]
    fn auto_codec_switches_once_it_can_tell() {
        let mut codec = WireCodec::new(Protocol::Auto, 1024);
        let mut buf = BytesMut::new();
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(codec.protocol(), Protocol::Auto);
        buf.extend_from_slice(&[0, 10]);
        buf.extend_from_slice(b"isuser:a:b");
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(Ok(Request::IsUser(_)))
        ));
        assert_eq!(codec.protocol(), Protocol::Ejabberd);

        let mut codec = WireCodec::new(Protocol::Auto, 1024);
        let mut buf = BytesMut::from(&b"isuser:a:b\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert_eq!(codec.protocol(), Protocol::Line);
    }
}
