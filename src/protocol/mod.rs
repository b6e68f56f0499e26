//! Wire formats. Each codec is pure (bytes in, [`Incoming`] out; `bool` in, bytes out), so it
//! can be fuzzed and tested without I/O; [`WireCodec`] picks one from the first byte.

pub mod ejabberd;
pub mod line;

use bytes::BytesMut;
use serde::Deserialize;
use tokio_util::codec::{Decoder, Encoder};

pub use ejabberd::EjabberdCodec;
pub use line::LineCodec;

use crate::request::Incoming;

/// Which framing to speak on stdin/stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Decide from the first byte received.
    #[default]
    Auto,
    /// Prosody's line protocol (`auth:user:host:pass\n`).
    Line,
    /// ejabberd's 2-byte length-prefixed frames.
    Ejabberd,
}

impl Protocol {
    /// ejabberd's first byte is the high byte of a length: below 0x20 for any frame under
    /// 8 KiB. A line-protocol request starts with a command name, i.e. a letter.
    pub fn detect(first_byte: u8) -> Protocol {
        if first_byte < 0x20 {
            Protocol::Ejabberd
        } else {
            Protocol::Line
        }
    }
}

/// The codec the request loop uses: fixed by configuration or chosen on the first byte.
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

    fn decide(&mut self, buf: &BytesMut) {
        if let (WireCodec::Undecided { max_line }, Some(&first)) = (&*self, buf.first()) {
            *self = WireCodec::new(Protocol::detect(first), *max_line);
        }
    }
}

impl Decoder for WireCodec {
    type Item = Incoming;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        self.decide(buf);
        match self {
            WireCodec::Undecided { .. } => Ok(None),
            WireCodec::Line(c) => c.decode(buf),
            WireCodec::Ejabberd(c) => c.decode(buf),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        self.decide(buf);
        match self {
            WireCodec::Undecided { .. } => Ok(None),
            WireCodec::Line(c) => c.decode_eof(buf),
            WireCodec::Ejabberd(c) => c.decode_eof(buf),
        }
    }
}

impl Encoder<bool> for WireCodec {
    type Error = std::io::Error;

    /// Before the first byte there is nothing to answer; a reply then would be a bug, and
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
    fn first_byte_decides() {
        assert_eq!(Protocol::detect(b'a'), Protocol::Line);
        assert_eq!(Protocol::detect(0x00), Protocol::Ejabberd);
        assert_eq!(Protocol::detect(0x1f), Protocol::Ejabberd);
    }

    #[test]
    fn auto_codec_switches_on_first_byte() {
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
