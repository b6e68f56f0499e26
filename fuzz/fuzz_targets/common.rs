//! Shared by the codec targets: decode a whole input fed in pieces of one size.

use bytes::BytesMut;
use extauth_bridge::request::Incoming;
use tokio_util::codec::Decoder;

/// Every item decoded from `input` fed `piece` bytes at a time, then EOF, as `Debug` text
/// (comparable; secrets print redacted). Checks the buffer never holds more than `bound`
/// plus one piece, and that EOF leaves nothing behind.
pub fn decode_in_pieces<D>(mut codec: D, input: &[u8], piece: usize, bound: usize) -> Vec<String>
where
    D: Decoder<Item = Incoming, Error = std::io::Error>,
{
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).expect("decode never fails") {
            items.push(format!("{item:?}"));
        }
        assert!(buf.len() <= bound + piece, "buffer grew to {}", buf.len());
    }
    while let Some(item) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        items.push(format!("{item:?}"));
    }
    assert!(buf.is_empty(), "EOF leaves nothing behind");
    items
}
