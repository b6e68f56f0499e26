//! ejabberd's extauth framing: a 2-byte big-endian length, then that many bytes, both ways.
//!
//! Frames are bounded by their own length field (at most 65 535 bytes), so there is nothing
//! to cap. A zero-length frame is answered `0`; a frame cut short by EOF ends the stream
//! without an answer (ejabberd closed the port, nobody is listening).

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::request::{Incoming, Request};

const TRUE_REPLY: [u8; 4] = [0, 2, 0, 1];
const FALSE_REPLY: [u8; 4] = [0, 2, 0, 0];

#[derive(Debug, Clone, Default)]
pub struct EjabberdCodec;

impl Decoder for EjabberdCodec {
    type Item = Incoming;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
        if buf.len() < 2 + len {
            buf.reserve(2 + len - buf.len());
            return Ok(None);
        }
        buf.advance(2);
        let frame = buf.split_to(len);
        Ok(Some(Request::parse(&frame)))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        let item = self.decode(buf)?;
        if item.is_none() {
            buf.clear();
        }
        Ok(item)
    }
}

impl Encoder<bool> for EjabberdCodec {
    type Error = std::io::Error;

    fn encode(&mut self, answer: bool, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(if answer { &TRUE_REPLY } else { &FALSE_REPLY });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::BadRequest;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_frames_with_colons_in_password() {
        let mut buf = BytesMut::from(&frame(b"auth:romeo:example.net:a:b\r\n")[..]);
        match EjabberdCodec.decode(&mut buf).unwrap() {
            Some(Ok(Request::Auth(a, p))) => {
                assert_eq!(a.user, "romeo");
                assert_eq!(
                    p.expose(),
                    "a:b\r\n",
                    "ejabberd frames are not line-trimmed"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn split_and_batched_frames() {
        let mut input = frame(b"isuser:a:b");
        input.extend(frame(b"auth:a:b:c"));
        input.extend(frame(b""));
        input.extend(frame(b"nope"));
        let mut codec = EjabberdCodec;
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for chunk in input.chunks(3) {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                items.push(item);
            }
        }
        assert_eq!(items.len(), 4);
        assert!(matches!(items[0], Ok(Request::IsUser(_))));
        assert!(matches!(items[1], Ok(Request::Auth(..))));
        assert_eq!(items[2].as_ref().unwrap_err(), &BadRequest::Empty);
        assert_eq!(items[3].as_ref().unwrap_err(), &BadRequest::UnknownCommand);
    }

    #[test]
    fn truncated_frame_at_eof_ends_the_stream() {
        let mut buf = BytesMut::from(&frame(b"auth:a:b:c")[..7]);
        assert!(EjabberdCodec.decode_eof(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn largest_frame_is_accepted() {
        let mut payload = b"auth:a:b:".to_vec();
        payload.resize(65_535, b'x');
        let mut buf = BytesMut::from(&frame(&payload)[..]);
        assert!(matches!(
            EjabberdCodec.decode(&mut buf).unwrap(),
            Some(Ok(Request::Auth(..)))
        ));
    }

    #[test]
    fn replies_are_exactly_four_bytes() {
        let mut out = BytesMut::new();
        EjabberdCodec.encode(true, &mut out).unwrap();
        EjabberdCodec.encode(false, &mut out).unwrap();
        assert_eq!(&out[..], &[0, 2, 0, 1, 0, 2, 0, 0]);
    }
}
