//! The properties the fuzz targets check, one function per target, each taking the raw fuzz
//! input. They live here rather than in the targets so that `tests/fuzz_corpus.rs` can replay
//! the committed corpora through exactly the same checks with plain `cargo test` on stable,
//! where libFuzzer is not available. Whoever includes this file must also declare
//! `mod oracle` (tests/common/oracle.rs) at its crate root: the counts come from there.

use bytes::BytesMut;
use extauth_bridge::protocol::{EjabberdCodec, LineCodec, Protocol, WireCodec, DETECT_BYTES};
use extauth_bridge::request::{Incoming, Request};
use tokio_util::codec::{Decoder, Encoder};

use crate::oracle;

/// The line limit the line codec is fuzzed with: small, so that over-long lines (and the
/// codec's discard-until-newline path) are cheap for the fuzzer to reach.
const MAX_LINE: usize = 64;

/// The line codec on arbitrary bytes, fed in arbitrary pieces (the first byte picks the
/// piece size). Checks what the request loop relies on: exactly one item per `\n`-terminated
/// line plus one for a non-empty unterminated tail at EOF, the same items however the input
/// is split, and a bounded buffer.
pub fn line_codec(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let decode =
        |piece| decode_in_pieces(&mut LineCodec::new(MAX_LINE), input, piece, MAX_LINE + 1);
    let whole = decode(input.len().max(1));
    let pieces = decode(usize::from(split % 17) + 1);
    assert_eq!(whole.len(), oracle::line_requests(input));
    assert_eq!(whole, pieces);
}

/// The ejabberd codec on arbitrary bytes, fed in arbitrary pieces (the first byte picks the
/// piece size): one item per complete frame, the same items however the input is split, a
/// truncated last frame dropped at EOF.
pub fn ejabberd_codec(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let decode = |piece| decode_in_pieces(&mut EjabberdCodec, input, piece, 2 + 65_535);
    let whole = decode(input.len().max(1));
    let pieces = decode(usize::from(split % 17) + 1);
    assert_eq!(whole.len(), oracle::complete_frames(input));
    assert_eq!(whole, pieces);
}

/// Auto-detection (`protocol = "auto"`) and decoding, fed in arbitrary pieces. The first
/// byte picks the piece size, the second what the rest is:
/// - `0 mod 3`: arbitrary bytes. The framing is decided within [`DETECT_BYTES`] and is the
///   same however the input is split; the items are exactly what that framing's codec makes
///   of the whole input; the buffer stays bounded; every reply is well-formed in that framing.
/// - `1 mod 3`: valid ejabberd frames built from the input (split at `0xff`, each chunk an
///   `auth` payload, padded by `chunk[0] * 257` bytes so that long frames, whose length
///   starts with a printable byte, are cheap to reach): always detected as ejabberd and
///   decoded as the ejabberd codec decodes them.
/// - `2 mod 3`: valid lines built the same way: always detected as lines.
pub fn protocol_detect(data: &[u8]) {
    let [split, mode, rest @ ..] = data else {
        return;
    };
    let piece = usize::from(split % 17) + 1;
    let (input, must_be) = match mode % 3 {
        0 => (rest.to_vec(), None),
        1 => (valid_stream(rest, true), Some(Protocol::Ejabberd)),
        _ => (valid_stream(rest, false), Some(Protocol::Line)),
    };
    let whole_start = &input[..input.len().min(DETECT_BYTES)];
    let Some(decided) = Protocol::detect(whole_start, true) else {
        assert!(input.is_empty(), "undecided on a non-empty stream at EOF");
        return;
    };
    if let Some(protocol) = must_be {
        assert_eq!(
            decided, protocol,
            "a valid stream detected as the other framing"
        );
    }
    let bound = (2 + 65_535).max(MAX_LINE + 1);
    let mut auto = WireCodec::new(Protocol::Auto, MAX_LINE);
    let items = decode_in_pieces(&mut auto, &input, piece, bound);
    assert_eq!(auto.protocol(), decided, "split input decided otherwise");
    let expected = match decided {
        Protocol::Ejabberd => {
            decode_in_pieces(&mut EjabberdCodec, &input, input.len().max(1), bound)
        }
        _ => decode_in_pieces(
            &mut LineCodec::new(MAX_LINE),
            &input,
            input.len().max(1),
            bound,
        ),
    };
    assert_eq!(items, expected);
    // Replies: one per item, each complete and in the decided framing.
    for answer in [false, true] {
        let mut out = BytesMut::new();
        auto.encode(answer, &mut out).expect("encoding never fails");
        let wanted: &[u8] = match (decided, answer) {
            (Protocol::Ejabberd, false) => &[0, 2, 0, 0],
            (Protocol::Ejabberd, true) => &[0, 2, 0, 1],
            (_, false) => b"0\n",
            (_, true) => b"1\n",
        };
        assert_eq!(&out[..], wanted);
    }
}

/// A stream of valid requests made from `data`: ejabberd frames (`frames`) or lines.
fn valid_stream(data: &[u8], frames: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.split(|&b| b == 0xff) {
        let mut payload = b"auth:romeo:example.net:".to_vec();
        // Lines end at `\n`, and a `\r` before it is stripped: keep both out of a line's
        // password, so each chunk stays one request.
        payload.extend(
            chunk
                .iter()
                .filter(|&&b| frames || (b != b'\n' && b != b'\r')),
        );
        let pad = usize::from(chunk.first().copied().unwrap_or(0)) * 257;
        let limit = if frames { 65_535 } else { MAX_LINE };
        payload.resize((payload.len() + pad).min(limit), b'p');
        payload.truncate(limit);
        if frames {
            out.extend_from_slice(
                &u16::try_from(payload.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            out.extend_from_slice(&payload);
        } else {
            out.extend_from_slice(&payload);
            out.push(b'\n');
        }
    }
    out
}

/// `Request::parse` on arbitrary bytes: never panics, and what it accepts is what the SPEC
/// says: a known command, non-empty user and server without control characters or `:`, the
/// password (when there is one) being everything after the third `:`.
pub fn request_parse(data: &[u8]) {
    let Ok(request) = Request::parse(data) else {
        return;
    };
    let text = std::str::from_utf8(data).expect("accepted input is UTF-8");
    assert!(!text.contains('\0'));
    let mut fields = text.splitn(4, ':');
    assert_eq!(fields.next(), Some(request.command().as_str()));
    let account = request.account();
    assert_eq!(fields.next(), Some(account.user.as_str()));
    assert_eq!(fields.next(), Some(account.server.as_str()));
    assert!(!account.user.is_empty() && !account.server.is_empty());
    assert!(!account
        .user
        .chars()
        .chain(account.server.chars())
        .any(char::is_control));
    let password = match &request {
        Request::Auth(_, p)
        | Request::SetPass(_, p)
        | Request::TryRegister(_, p)
        | Request::RemoveUser3(_, p) => Some(p.expose()),
        Request::IsUser(_) | Request::RemoveUser(_) => None,
        Request::CertAuth(_) => return,
    };
    assert_eq!(fields.next(), password);
}

/// Every item decoded from `input` fed `piece` bytes at a time, then EOF, as `Debug` text
/// (comparable; secrets print redacted). Checks the buffer never holds more than `bound`
/// plus one piece, and that EOF leaves nothing behind.
fn decode_in_pieces<D>(codec: &mut D, input: &[u8], piece: usize, bound: usize) -> Vec<String>
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
