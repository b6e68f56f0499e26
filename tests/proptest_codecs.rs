//! Property tests for the wire codecs and the request loop:
//! - any request, framed by either protocol, decodes to the same request;
//! - any byte stream, read in any pieces, gets exactly one reply per complete request, in
//!   order, each reply well-formed, and never a panic;
//! - auto-detection picks the right framing for a first request of any length (SPEC §4).

mod common;

use std::io::{self, Read};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use common::oracle::{complete_frames, line_requests};
use extauth_bridge::outcome::Outcome;
use extauth_bridge::protocol::{EjabberdCodec, LineCodec, Protocol, WireCodec, DETECT_BYTES};
use extauth_bridge::request::{Command, Incoming, Request};
use extauth_bridge::router::Handler;
use extauth_bridge::server::{serve, NoControl, ServeOptions};

/// A user or server: no `:`, no control characters, not empty.
fn name() -> impl Strategy<Value = String> {
    "[^:\\p{Cc}]{1,24}"
}

fn command() -> impl Strategy<Value = Command> {
    prop::sample::select(
        Command::ALL
            .into_iter()
            .filter(|c| *c != Command::CertAuth)
            .collect::<Vec<_>>(),
    )
}

fn password(request: &Request) -> Option<&str> {
    match request {
        Request::Auth(_, p)
        | Request::SetPass(_, p)
        | Request::TryRegister(_, p)
        | Request::RemoveUser3(_, p) => Some(p.expose()),
        Request::IsUser(_) | Request::RemoveUser(_) | Request::CertAuth(_) => None,
    }
}

fn takes_password(c: Command) -> bool {
    matches!(
        c,
        Command::Auth | Command::SetPass | Command::TryRegister | Command::RemoveUser3
    )
}

fn payload(c: Command, user: &str, server: &str, pw: &str) -> String {
    if takes_password(c) {
        format!("{c}:{user}:{server}:{pw}")
    } else {
        format!("{c}:{user}:{server}")
    }
}

fn check_same(item: Incoming, c: Command, user: &str, server: &str, pw: &str) {
    let request = item.expect("a valid request decodes");
    assert_eq!(request.command(), c);
    assert_eq!(request.account().user, user);
    assert_eq!(request.account().server, server);
    assert_eq!(password(&request), takes_password(c).then_some(pw));
}

fn decode_one<D: Decoder<Item = Incoming, Error = io::Error>>(
    codec: &mut D,
    bytes: &[u8],
) -> Incoming {
    let mut buf = BytesMut::from(bytes);
    let item = codec.decode(&mut buf).unwrap().expect("one complete frame");
    assert!(buf.is_empty(), "the frame was consumed exactly");
    item
}

proptest! {
    #[test]
    fn line_round_trip(
        c in command(),
        user in name(),
        server in name(),
        // A line ends at `\n`, one trailing `\r` is stripped, NUL is refused: anything else,
        // colons included, is a password.
        pw in "[^\n\0]{1,40}[^\n\0\r]",
        crlf in any::<bool>(),
    ) {
        let mut line = payload(c, &user, &server, &pw).into_bytes();
        line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        check_same(decode_one(&mut LineCodec::default(), &line), c, &user, &server, &pw);
    }

    #[test]
    fn ejabberd_round_trip(
        c in command(),
        user in name(),
        server in name(),
        // Frames are not line-trimmed: `\r` and `\n` belong to the password.
        pw in "[^\0]{1,40}",
    ) {
        let text = payload(c, &user, &server, &pw);
        let mut frame = (text.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(text.as_bytes());
        check_same(decode_one(&mut EjabberdCodec, &frame), c, &user, &server, &pw);
    }
}

/// Says yes to `auth` with password `yes` and to `isuser` of user `yes`.
struct Trivial;

#[async_trait]
impl Handler for Trivial {
    async fn handle(&self, request: &Request) -> Outcome {
        let yes = match request {
            Request::Auth(_, p) => p.expose() == "yes",
            Request::IsUser(a) => a.user == "yes",
            _ => false,
        };
        Outcome::answered("trivial", yes)
    }
}

/// Hands out the input in the given piece sizes (cycled).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What the loop should answer: the codec's own decoding of the whole stream, each item
/// answered as [`Trivial`] would.
fn expected_answers(mut codec: WireCodec, input: &[u8]) -> Vec<bool> {
    let mut buf = BytesMut::from(input);
    let mut answers = Vec::new();
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        answers.push(match item {
            Ok(Request::Auth(_, p)) => p.expose() == "yes",
            Ok(Request::IsUser(a)) => a.user == "yes",
            _ => false,
        });
    }
    answers
}

fn served(codec: WireCodec, input: &[u8], sizes: Vec<usize>) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = Vec::new();
    let reader = Pieces {
        data: input,
        sizes,
        next: 0,
    };
    serve(
        &rt,
        codec,
        reader,
        &mut out,
        Arc::new(Trivial),
        ServeOptions::default(),
        &mut NoControl,
    )
    .expect("the loop ends at EOF, never with an error");
    out
}

/// Bytes that are often meaningful: pieces of requests, separators, frame lengths.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"auth:".to_vec()),
        Just(b"isuser:".to_vec()),
        Just(b"setpass:".to_vec()),
        Just(b"yes".to_vec()),
        Just(b":".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\0".to_vec()),
        Just(vec![0u8, 14]),
        Just(vec![0xff]),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..70, 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn line_stream_gets_one_reply_per_line(input in stream(), sizes in sizes()) {
        let codec = WireCodec::new(Protocol::Line, 32);
        let expected = expected_answers(codec.clone(), &input);
        prop_assert_eq!(expected.len(), line_requests(&input));
        let wire: Vec<u8> = expected
            .iter()
            .flat_map(|&yes| if yes { *b"1\n" } else { *b"0\n" })
            .collect();
        prop_assert_eq!(served(codec, &input, sizes), wire);
    }

    #[test]
    fn ejabberd_stream_gets_one_reply_per_frame(input in stream(), sizes in sizes()) {
        let codec = WireCodec::new(Protocol::Ejabberd, 32);
        let expected = expected_answers(codec.clone(), &input);
        prop_assert_eq!(expected.len(), complete_frames(&input));
        let wire: Vec<u8> = expected
            .iter()
            .flat_map(|&yes| [0, 2, 0, u8::from(yes)])
            .collect();
        prop_assert_eq!(served(codec, &input, sizes), wire);
    }

    #[test]
    fn auto_detected_stream_never_panics_and_replies_in_one_shape(
        input in stream(),
        sizes in sizes(),
    ) {
        let codec = WireCodec::new(Protocol::Auto, 32);
        let expected = expected_answers(codec.clone(), &input);
        let out = served(codec, &input, sizes);
        let start = &input[..input.len().min(DETECT_BYTES)];
        let width = match Protocol::detect(start, true) {
            Some(Protocol::Ejabberd) => 4,
            _ => 2,
        };
        prop_assert_eq!(out.len(), expected.len() * width);
    }
}

/// An auth payload of exactly `len` bytes (cut short below 24: then not a valid request,
/// which detection must still frame correctly).
fn auth_payload(len: usize) -> Vec<u8> {
    let mut payload = b"auth:romeo:example.net:".to_vec();
    payload.resize(len.max(payload.len()), b'p');
    payload.truncate(len);
    payload
}

fn ejabberd_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = u16::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// Feeds `input` to an auto-detecting codec: the first bytes one at a time (so detection
/// sees every prefix), the rest in one piece, then EOF. Returns the framing it settled on
/// (checked to be settled by [`DETECT_BYTES`]) and the items, as `Debug` text.
fn auto_decode(input: &[u8], max_line: usize) -> (Protocol, Vec<String>) {
    let mut codec = WireCodec::new(Protocol::Auto, max_line);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let (start, rest) = input.split_at(input.len().min(DETECT_BYTES + 2));
    for (i, &b) in start.iter().enumerate() {
        buf.extend_from_slice(&[b]);
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            items.push(format!("{item:?}"));
        }
        if i + 1 >= DETECT_BYTES {
            assert_ne!(
                codec.protocol(),
                Protocol::Auto,
                "undecided after {DETECT_BYTES} bytes"
            );
        }
    }
    buf.extend_from_slice(rest);
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        items.push(format!("{item:?}"));
    }
    (codec.protocol(), items)
}

/// What a fixed codec makes of the same bytes.
fn fixed_decode<D: Decoder<Item = Incoming, Error = io::Error>>(
    mut codec: D,
    input: &[u8],
) -> Vec<String> {
    let mut buf = BytesMut::from(input);
    let mut items = Vec::new();
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        items.push(format!("{item:?}"));
    }
    items
}

/// Every frame length ejabberd can send, the ones whose first byte is a letter (0x61xx:
/// `a`, 24 832 bytes and up) included, followed by a second frame: detected as ejabberd,
/// both frames decoded as the ejabberd codec decodes them.
#[test]
fn auto_detects_a_first_ejabberd_frame_of_every_length() {
    let next = ejabberd_frame(b"isuser:romeo:example.net");
    let second = fixed_decode(EjabberdCodec, &next);
    let longest = auth_payload(65_535);
    // What the ejabberd codec makes of the first frame alone. Its `Debug` text withholds the
    // password, so it is the same for every auth frame: computed once, not 65 000 times.
    let expected_auth = fixed_decode(EjabberdCodec, &ejabberd_frame(&longest));
    for len in 0..=65_535 {
        let mut input = ejabberd_frame(&longest[..len]);
        let expected = if len < 24 {
            [fixed_decode(EjabberdCodec, &input), second.clone()].concat()
        } else {
            [expected_auth.clone(), second.clone()].concat()
        };
        input.extend_from_slice(&next);
        let (protocol, items) = auto_decode(&input, 1024);
        assert_eq!(protocol, Protocol::Ejabberd, "frame of {len} bytes");
        assert_eq!(items, expected, "frame of {len} bytes");
    }
}

/// Every line length up to the configured limit, and one past it, followed by a second
/// line: detected as the line protocol, decoded as the line codec decodes them.
#[test]
fn auto_detects_a_first_line_of_every_length() {
    const MAX_LINE: usize = 4096;
    // From 5 bytes (`auth:`) on: shorter, the first line is no request, and `a\n` followed
    // by `isuser:…` is as much a frame of 24 842 bytes (SPEC §4: matching neither).
    for len in 5..=MAX_LINE + 1 {
        let input = [&auth_payload(len)[..], b"\nisuser:romeo:example.net\n"].concat();
        let (protocol, items) = auto_decode(&input, MAX_LINE);
        assert_eq!(protocol, Protocol::Line, "line of {len} bytes");
        assert_eq!(
            items,
            fixed_decode(LineCodec::new(MAX_LINE), &input),
            "line of {len} bytes"
        );
        assert_eq!(items.len(), 2, "line of {len} bytes");
    }
}

fn frames(payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads.iter().flat_map(|p| ejabberd_frame(p)).collect()
}

/// A request payload of any length up to a frame's limit, often long enough for its frame
/// length to start with a printable byte.
fn long_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0usize..40).prop_map(auth_payload),
        (8_000usize..65_536).prop_map(auth_payload),
        (0x6100usize..0x6200).prop_map(auth_payload),
        (command(), name(), name()).prop_map(|(c, u, s)| payload(c, &u, &s, "pw").into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A stream of frames, read in any pieces through the real loop: one 4-byte reply each.
    #[test]
    fn auto_detected_ejabberd_streams_are_answered_in_frames(
        payloads in prop::collection::vec(long_payload(), 1..4),
        sizes in sizes(),
    ) {
        let input = frames(&payloads);
        let (protocol, items) = auto_decode(&input, 1024);
        prop_assert_eq!(protocol, Protocol::Ejabberd);
        prop_assert_eq!(items, fixed_decode(EjabberdCodec, &input));
        let out = served(WireCodec::new(Protocol::Auto, 1024), &input, sizes);
        prop_assert_eq!(out.len(), payloads.len() * 4);
        prop_assert!(out.chunks(4).all(|r| r == [0, 2, 0, 0] || r == [0, 2, 0, 1]));
    }
}
