//! A frame as the loop holds it, and the two codec calls around it that survive a panic:
//! [`decode_next`] (a panic inside one frame keeps its place, answered `0`; one before any
//! byte was taken ends the stream) and [`encode_reply`] (a panicking encoder gets a second
//! chance with `0`, no partial reply left behind).
//!
//! It knows the codec only through the `Decoder`/`Encoder` traits: it must not look into the
//! bytes of a frame, nor handle, log or count a request (that is `answer.rs`).

use std::io;
use std::panic::AssertUnwindSafe;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::request::Incoming;

#[cfg(debug_assertions)]
use super::test_panics;

/// A frame as the loop holds it.
pub(super) enum Frame {
    /// What the codec decoded: a request, or why the frame is not one.
    Decoded(Incoming),
    /// The decoder panicked after taking this frame's bytes: its place is known, its
    /// content is not. Answered `0`.
    DecoderPanicked,
}

/// What one call to the decoder gave.
pub(super) enum Decoded {
    Frame(Frame),
    /// No complete frame in the buffer.
    NeedMore,
    /// The decoder panicked before taking any byte: where its frame ends is unknown.
    Lost,
}
/// Decodes the next frame, surviving a panic in the decoder.
///
/// Both codecs take a frame's bytes out of the buffer before parsing them
/// (`Request::parse`, where nearly all of the decoding work is), so a panic that leaves
/// fewer bytes in the buffer happened inside one frame that is now gone: it gets its place
/// in the reply order and is answered `0`, and the stream stays aligned. A panic with every
/// byte still there happened while looking for the frame's end, which is then unknown:
/// answering anything after it could shift every later reply, so the loop answers the
/// frames before it and ends ([`Ended::CodecFailed`](super::Ended::CodecFailed)). The panic hook has logged where it
/// happened; its message is withheld when it was formatted (see `logging::panic_message`).
pub(super) fn decode_next<C>(
    codec: &mut C,
    buf: &mut BytesMut,
    eof: bool,
    id: u64,
) -> io::Result<Decoded>
where
    C: Decoder<Item = Incoming, Error = io::Error>,
{
    let before = buf.len();
    let decoding = std::panic::catch_unwind(AssertUnwindSafe(|| {
        #[cfg(debug_assertions)]
        test_panics::before_decode(buf);
        let item = if eof {
            codec.decode_eof(buf)
        } else {
            codec.decode(buf)
        };
        #[cfg(debug_assertions)]
        if let Ok(Some(Ok(request))) = &item {
            test_panics::at("decode", request);
        }
        item
    }));
    match decoding {
        Ok(item) => Ok(match item? {
            Some(item) => Decoded::Frame(Frame::Decoded(item)),
            None => Decoded::NeedMore,
        }),
        Err(_) if buf.len() < before => Ok(Decoded::Frame(Frame::DecoderPanicked)),
        Err(_) => {
            tracing::error!(
                id,
                "the decoder panicked before taking a frame: its end is unknown, so the \
                 requests before it are answered and the process ends (status 0)"
            );
            Ok(Decoded::Lost)
        }
    }
}
/// Appends one reply to `out`. A panicking encoder leaves no partial reply behind and gets
/// a second chance with `0` (fail closed: whatever the answer was, it was not delivered as
/// decided). Returns `false` if `0` cannot be encoded either: there is then no way to put a
/// reply in its place, and the caller stops rather than skip one.
pub(super) fn encode_reply<C>(codec: &mut C, id: u64, answer: bool, out: &mut BytesMut) -> bool
where
    C: Encoder<bool, Error = io::Error>,
{
    let len = out.len();
    let first = std::panic::catch_unwind(AssertUnwindSafe(|| {
        #[cfg(debug_assertions)]
        test_panics::encode(id);
        codec.encode(answer, out)
    }));
    if matches!(first, Ok(Ok(()))) {
        return true;
    }
    out.truncate(len);
    let second = std::panic::catch_unwind(AssertUnwindSafe(|| codec.encode(false, out)));
    if matches!(second, Ok(Ok(()))) {
        tracing::warn!(
            id,
            outcome = "panic",
            "encoding the reply failed; answered 0"
        );
        return true;
    }
    out.truncate(len);
    tracing::error!(
        id,
        "the encoder cannot encode a reply: answering what came before and ending the \
         process (status 0), so that no reply is skipped or shifted"
    );
    false
}
