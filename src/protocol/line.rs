//! Prosody's "generic" line protocol, which admins also type by hand.
//!
//! `command:user:server[:password]\n` in, `1\n` or `0\n` out. One trailing `\r` is stripped.
//! A line longer than the limit is never buffered whole: the decoder drops bytes until the
//! next `\n` and then yields one [`BadRequest::TooLong`], so it is answered `0` exactly once
//! and memory stays bounded whatever the peer sends.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::request::{BadRequest, Incoming, Request};

/// Prosody refuses queries over 1000 bytes; 64 KiB leaves room for long tokens as passwords.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct LineCodec {
    max_line: usize,
    /// Inside an over-long line: drop everything up to the next `\n`.
    discarding: bool,
    /// How far the buffer has been searched for `\n`, so a line arriving byte by byte
    /// is not rescanned from the start each time.
    scanned: usize,
}

impl LineCodec {
    pub fn new(max_line: usize) -> Self {
        LineCodec {
            max_line,
            discarding: false,
            scanned: 0,
        }
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        LineCodec::new(DEFAULT_MAX_LINE)
    }
}

impl Decoder for LineCodec {
    type Item = Incoming;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        loop {
            let newline = memchr_newline(&buf[self.scanned..]).map(|i| i + self.scanned);
            match newline {
                Some(end) => {
                    self.scanned = 0;
                    if self.discarding {
                        buf.advance(end + 1);
                        self.discarding = false;
                        return Ok(Some(Err(BadRequest::TooLong)));
                    }
                    let line = buf.split_to(end + 1);
                    let mut payload = &line[..end];
                    if let Some(stripped) = payload.strip_suffix(b"\r") {
                        payload = stripped;
                    }
                    if payload.len() > self.max_line {
                        return Ok(Some(Err(BadRequest::TooLong)));
                    }
                    return Ok(Some(Request::parse(payload)));
                }
                None if self.discarding => {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                // +1: the limit is on the payload, a `\r` may still be in front of the `\n`.
                None if buf.len() > self.max_line + 1 => {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    continue;
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    /// A last line without `\n` (an admin's `printf` or `echo -n`) is still answered; the
    /// tail of an over-long line is answered `0` once.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if self.discarding {
            self.discarding = false;
            return Ok(Some(Err(BadRequest::TooLong)));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        buf.extend_from_slice(b"\n");
        self.decode(buf)
    }
}

impl Encoder<bool> for LineCodec {
    type Error = std::io::Error;

    fn encode(&mut self, answer: bool, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(if answer { b"1\n" } else { b"0\n" });
        Ok(())
    }
}

fn memchr_newline(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Incoming> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    fn auth_password(item: &Incoming) -> &str {
        match item {
            Ok(Request::Auth(_, p)) => p.expose(),
            other => panic!("not an auth request: {other:?}"),
        }
    }

    #[test]
    fn colons_in_password_and_crlf() {
        let items = decode_all(
            &mut LineCodec::default(),
            b"auth:romeo:example.net:pa:ss:word\r\n",
        );
        assert_eq!(items.len(), 1);
        assert_eq!(auth_password(&items[0]), "pa:ss:word");
    }

    #[test]
    fn only_one_trailing_cr_is_stripped() {
        let items = decode_all(
            &mut LineCodec::default(),
            b"auth:romeo:example.net:pw\r\r\n",
        );
        assert_eq!(auth_password(&items[0]), "pw\r");
    }

    #[test]
    fn split_reads_are_reassembled() {
        let mut codec = LineCodec::default();
        let mut buf = BytesMut::new();
        let input = b"isuser:romeo:example.net\n";
        let mut got = Vec::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            if let Some(item) = codec.decode(&mut buf).unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Ok(Request::IsUser(_))));
    }

    #[test]
    fn many_requests_in_one_read() {
        let items = decode_all(
            &mut LineCodec::default(),
            b"auth:a:b:c\nisuser:a:b\nbogus\nsetpass:a:b:d\n",
        );
        assert_eq!(items.len(), 4);
        assert!(items[0].is_ok());
        assert!(items[1].is_ok());
        assert_eq!(items[2].as_ref().unwrap_err(), &BadRequest::UnknownCommand);
        assert!(matches!(items[3], Ok(Request::SetPass(..))));
    }

    #[test]
    fn overlong_line_is_answered_once_with_bounded_memory() {
        let mut codec = LineCodec::new(16);
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 100]);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                items.push(item);
            }
            assert!(buf.len() <= 100, "buffer grew to {}", buf.len());
        }
        assert!(items.is_empty());
        buf.extend_from_slice(b"tail\nisuser:a:b\n");
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            items.push(item);
        }
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap_err(), &BadRequest::TooLong);
        assert!(matches!(items[1], Ok(Request::IsUser(_))));
    }

    #[test]
    fn line_at_exactly_the_limit_is_accepted() {
        let mut codec = LineCodec::new(12);
        let items = decode_all(&mut codec, b"isuser:ab:cd\r\nisuser:ab:cde\n");
        assert!(items[0].is_ok());
        assert_eq!(items[1].as_ref().unwrap_err(), &BadRequest::TooLong);
    }

    #[test]
    fn invalid_utf8_nul_and_unknown_are_rejected() {
        let items = decode_all(
            &mut LineCodec::default(),
            b"auth:r\xc3meo:h:p\nauth:romeo:h:p\0w\nfoo:a:b\n\n",
        );
        let errs: Vec<_> = items.iter().map(|i| *i.as_ref().unwrap_err()).collect();
        assert_eq!(
            errs,
            [
                BadRequest::InvalidUtf8,
                BadRequest::NulByte,
                BadRequest::UnknownCommand,
                BadRequest::Empty
            ]
        );
    }

    #[test]
    fn last_line_without_newline_is_answered_at_eof() {
        let mut codec = LineCodec::default();
        let mut buf = BytesMut::from(&b"isuser:a:b"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf).unwrap(),
            Some(Ok(Request::IsUser(_)))
        ));
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn replies_are_one_complete_line() {
        let mut codec = LineCodec::default();
        let mut out = BytesMut::new();
        codec.encode(true, &mut out).unwrap();
        codec.encode(false, &mut out).unwrap();
        assert_eq!(&out[..], b"1\n0\n");
    }
}
