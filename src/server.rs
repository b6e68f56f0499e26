//! The request loop: read → decode → handle under a deadline → encode → write.
//!
//! It knows neither the wire format (a codec is passed in) nor the backends (a [`Handler`]
//! is). Its guarantees:
//! - exactly one reply per decoded frame, in request order, each reply complete in one write;
//! - every request answered within the deadline (`0` on expiry);
//! - a panic anywhere between decoding a frame and encoding its reply answered `0` (see
//!   [`decode_next`] for a panic in the decoder itself);
//! - end of input → return `Ok`; a stop request → finish what was read, then return.
//!
//! Reads block on the input between requests: the servers send one request at a time, and a
//! blocking `read`/`write` pair is the cheapest round trip there is. When a read brings several
//! complete frames (an admin piping a file), they run concurrently, bounded by
//! `max_in_flight`, and the replies are still written in order.

use std::io::{self, Read, Write};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use tokio::runtime::Runtime;
use tokio_util::codec::{Decoder, Encoder};

use crate::outcome::{Outcome, Status};
use crate::request::{Command, Incoming, Request};
use crate::router::Handler;

/// How much to read at once. Large reads keep piped files fast; memory stays bounded by this
/// plus the codec's own frame limit.
const READ_CHUNK: usize = 64 * 1024;

/// Lets the loop learn about stop and reload requests between requests.
pub trait Control {
    /// Stop after the requests already read have been answered.
    fn should_stop(&self) -> bool;
    /// What to use from the next request on, when the configuration was reloaded.
    fn reload(&mut self) -> Option<Reloaded>;
}

/// A reloaded configuration, as far as the loop is concerned.
pub struct Reloaded {
    pub handler: Arc<dyn Handler>,
    pub options: ServeOptions,
}

/// A [`Control`] that never stops or reloads: for tests and one-shot uses.
pub struct NoControl;

impl Control for NoControl {
    fn should_stop(&self) -> bool {
        false
    }
    fn reload(&mut self) -> Option<Reloaded> {
        None
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Deadline for one request, from the moment it starts being handled.
    pub timeout: Duration,
    /// How many buffered requests may run at once.
    pub max_in_flight: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            timeout: crate::config::DEFAULT_TIMEOUT,
            max_in_flight: 64,
        }
    }
}

/// Why [`serve`] returned. Every case is a clean end (exit status 0: Prosody starts a new
/// process on the next query, ejabberd's supervisor does too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// End of input: the server closed our stdin.
    EndOfInput,
    /// A stop request (SIGTERM/SIGINT), after answering the requests in hand.
    Stopped,
    /// The codec panicked where no reply could be placed (already logged): going on could
    /// only skip or shift replies, so the loop stopped after answering the frames before.
    CodecFailed,
}

/// A frame as the loop holds it.
enum Frame {
    /// What the codec decoded: a request, or why the frame is not one.
    Decoded(Incoming),
    /// The decoder panicked after taking this frame's bytes: its place is known, its
    /// content is not. Answered `0`.
    DecoderPanicked,
}

/// What one call to the decoder gave.
enum Decoded {
    Frame(Frame),
    /// No complete frame in the buffer.
    NeedMore,
    /// The decoder panicked before taking any byte: where its frame ends is unknown.
    Lost,
}

/// Lets the runtime's other tasks catch up before a batch is answered.
///
/// The runtime only runs inside `block_on`, so while the process waits for input nothing
/// polls the HTTP clients' connection tasks: a keep-alive connection the server closed
/// meanwhile (an idle timeout, a restart) still looks open in the pool, the next request
/// is written into it and fails ("connection closed before message completed"): one
/// refused login per process. Each `yield_now` defers this future until the I/O driver has
/// been polled; the first one lets the driver see the FINs and wake the connection tasks
/// (the `block_on` future is polled again before they run), the second one lets them run
/// and leave the pool. Cost: two driver polls per batch.
async fn run_idle_tasks() {
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
}

/// Serves requests from `input` until end of input, a stop request or a codec failure.
pub fn serve<C, R, W>(
    runtime: &Runtime,
    mut codec: C,
    mut input: R,
    mut output: W,
    handler: Arc<dyn Handler>,
    options: ServeOptions,
    control: &mut dyn Control,
) -> io::Result<Ended>
where
    C: Decoder<Item = Incoming, Error = io::Error> + Encoder<bool, Error = io::Error>,
    R: Read,
    W: Write,
{
    let (mut handler, mut options) = (handler, options);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out = BytesMut::with_capacity(256);
    let mut next_id: u64 = 0;
    let mut eof = false;
    // When the last read returned: a frame decoded now was complete from then on, and the
    // server has been waiting for its reply since (the latency logged, see `answer_one`).
    let mut read_at = Instant::now();
    loop {
        let mut batch = Vec::new();
        let mut lost = false;
        while batch.len() < options.max_in_flight.max(1) * 16 {
            match decode_next(&mut codec, &mut buf, eof, next_id + batch.len() as u64)? {
                Decoded::Frame(frame) => batch.push((frame, read_at)),
                Decoded::NeedMore => break,
                Decoded::Lost => {
                    lost = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let first_id = next_id;
            next_id += batch.len() as u64;
            let encoded = runtime.block_on(async {
                run_idle_tasks().await;
                answer_batch(
                    &mut codec,
                    &mut output,
                    &mut out,
                    &handler,
                    batch,
                    first_id,
                    options,
                )
                .await
            })?;
            if !encoded || lost {
                crate::logging::flush();
                return Ok(Ended::CodecFailed);
            }
            if control.should_stop() {
                tracing::info!("stop requested: answered the requests in hand, exiting");
                return Ok(Ended::Stopped);
            }
            if let Some(r) = control.reload() {
                (handler, options) = (r.handler, r.options);
            }
            continue;
        }
        if lost {
            return Ok(Ended::CodecFailed);
        }
        if eof {
            return Ok(Ended::EndOfInput);
        }
        if control.should_stop() {
            tracing::info!("stop requested, exiting");
            return Ok(Ended::Stopped);
        }
        // The replies are out: now the log lines of their requests (see logging::flush).
        crate::logging::flush();
        // Read into a chunk zeroed once, then append what came: growing `buf` by 64 KiB of
        // zeros before every read cost a 64 KiB memset per request (seen in a profile).
        match input.read(&mut chunk[..]) {
            Ok(0) => {
                eof = true;
                read_at = Instant::now();
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                read_at = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if let Some(r) = control.reload() {
                    (handler, options) = (r.handler, r.options);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Decodes the next frame, surviving a panic in the decoder.
///
/// Both codecs take a frame's bytes out of the buffer before parsing them
/// (`Request::parse`, where nearly all of the decoding work is), so a panic that leaves
/// fewer bytes in the buffer happened inside one frame that is now gone: it gets its place
/// in the reply order and is answered `0`, and the stream stays aligned. A panic with every
/// byte still there happened while looking for the frame's end, which is then unknown:
/// answering anything after it could shift every later reply, so the loop answers the
/// frames before it and ends ([`Ended::CodecFailed`]). The panic hook has logged where it
/// happened; its message is withheld when it was formatted (see `logging::panic_message`).
fn decode_next<C>(codec: &mut C, buf: &mut BytesMut, eof: bool, id: u64) -> io::Result<Decoded>
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

/// Answers a batch of frames in order, running up to `max_in_flight` at once. Replies that
/// are ready together go out in one write; the buffer is written whenever the next reply is
/// not ready yet, so a lone request is answered at once. Returns `false` when a reply could
/// not be encoded at all (see [`encode_reply`]): the replies before it are written, nothing
/// after it.
async fn answer_batch<C, W>(
    codec: &mut C,
    output: &mut W,
    out: &mut BytesMut,
    handler: &Arc<dyn Handler>,
    batch: Vec<(Frame, Instant)>,
    first_id: u64,
    options: ServeOptions,
) -> io::Result<bool>
where
    C: Encoder<bool, Error = io::Error>,
    W: Write,
{
    if batch.len() == 1 {
        // The servers' case: one request in flight. No ordering machinery needed.
        for (frame, read_at) in batch {
            let answer =
                answer_one(handler.as_ref(), frame, first_id, options.timeout, read_at).await;
            if !encode_reply(codec, first_id, answer, out) {
                write_out(output, out)?;
                return Ok(false);
            }
        }
        write_out(output, out)?;
        return Ok(true);
    }
    let mut pending = batch.into_iter().enumerate().peekable();
    let mut running = FuturesOrdered::new();
    // A request that changes an account (setpass, tryregister, removeuser…) runs alone, so a
    // piped `tryregister` followed by an `auth` of the same account sees the new account,
    // exactly as if they had been sent one at a time.
    let mut exclusive_running = false;
    let mut refill = |running: &mut FuturesOrdered<_>, exclusive_running: &mut bool| {
        if running.is_empty() {
            *exclusive_running = false;
        }
        while running.len() < options.max_in_flight.max(1) && !*exclusive_running {
            let Some((_, (next, _))) = pending.peek() else {
                break;
            };
            let exclusive = changes_accounts(next);
            if exclusive && !running.is_empty() {
                break;
            }
            let Some((i, (frame, read_at))) = pending.next() else {
                break;
            };
            *exclusive_running = exclusive;
            let handler = Arc::clone(handler);
            let id = first_id + i as u64;
            running.push_back(async move {
                (
                    id,
                    answer_one(handler.as_ref(), frame, id, options.timeout, read_at).await,
                )
            });
        }
    };
    refill(&mut running, &mut exclusive_running);
    loop {
        let next = match running.next().now_or_never() {
            Some(next) => next,
            None => {
                write_out(output, out)?;
                running.next().await
            }
        };
        let Some((id, answer)) = next else { break };
        if !encode_reply(codec, id, answer, out) {
            write_out(output, out)?;
            return Ok(false);
        }
        refill(&mut running, &mut exclusive_running);
    }
    write_out(output, out)?;
    Ok(true)
}

/// Appends one reply to `out`. A panicking encoder leaves no partial reply behind and gets
/// a second chance with `0` (fail closed: whatever the answer was, it was not delivered as
/// decided). Returns `false` if `0` cannot be encoded either: there is then no way to put a
/// reply in its place, and the caller stops rather than skip one.
fn encode_reply<C>(codec: &mut C, id: u64, answer: bool, out: &mut BytesMut) -> bool
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

fn changes_accounts(frame: &Frame) -> bool {
    use crate::request::Command;
    let Frame::Decoded(Ok(request)) = frame else {
        return false;
    };
    matches!(
        request.command(),
        Command::SetPass | Command::TryRegister | Command::RemoveUser | Command::RemoveUser3
    )
}

fn write_out<W: Write>(output: &mut W, out: &mut BytesMut) -> io::Result<()> {
    if !out.is_empty() {
        output.write_all(out)?;
        output.flush()?;
        out.clear();
    }
    Ok(())
}

/// Handles one frame under the deadline, logs it, and returns the answer for the wire.
/// A panic anywhere in here (the handler, the log line, the metrics) is answered `0`.
///
/// The latency logged (and counted in the metrics) is what the XMPP server waited: from
/// `read_at`, when the frame's last bytes were read, to its reply being ready, which is then
/// written (at once for a lone request; in a batch, once the replies before it are out).
/// The handler's own time alone would hide a request waiting behind others or behind
/// anything else the request thread did first.
async fn answer_one(
    handler: &dyn Handler,
    frame: Frame,
    id: u64,
    timeout: Duration,
    read_at: Instant,
) -> bool {
    let answering = AssertUnwindSafe(answer_frame(handler, frame, id, timeout, read_at));
    match answering.catch_unwind().await {
        Ok(answer) => answer,
        Err(_) => {
            // The panic hook has logged where (not what, if the message was formatted: it may
            // hold the password). Nothing from the request here: its formatting may be what
            // panicked.
            tracing::warn!(
                id,
                outcome = "panic",
                "answering the request panicked; answered 0"
            );
            let took = read_at.elapsed();
            let _ = std::panic::catch_unwind(|| {
                crate::metrics::record(crate::metrics::NONE, None, "panic", took)
            });
            false
        }
    }
}

async fn answer_frame(
    handler: &dyn Handler,
    frame: Frame,
    id: u64,
    timeout: Duration,
    read_at: Instant,
) -> bool {
    let request = match frame {
        Frame::Decoded(Ok(request)) => request,
        Frame::Decoded(Err(bad)) => {
            tracing::warn!(id, outcome = "invalid", reason = %bad, "request rejected");
            crate::metrics::record(crate::metrics::NONE, None, "invalid", read_at.elapsed());
            return false;
        }
        Frame::DecoderPanicked => {
            tracing::warn!(
                id,
                outcome = "panic",
                "decoding the request panicked; answered 0"
            );
            crate::metrics::record(crate::metrics::NONE, None, "panic", read_at.elapsed());
            return false;
        }
    };
    let outcome = handle_request(handler, &request, timeout).await;
    let took = read_at.elapsed();
    #[cfg(debug_assertions)]
    test_panics::at("log", &request);
    log_outcome(id, &request, &outcome, took);
    let (command, status) = (request.command().as_str(), outcome.status.as_str());
    crate::metrics::record(command, outcome.backend.as_deref(), status, took);
    #[cfg(debug_assertions)]
    if request.account().user == "panic-encode" {
        test_panics::arm_encode(id);
    }
    outcome.answer
}

/// Handles one request the way the daemon does: under the deadline, a panic answered `0`.
/// `extauth-bridge query` goes through here too, so a question asked by hand gets exactly the
/// daemon's answer.
pub async fn handle_request(
    handler: &dyn Handler,
    request: &Request,
    timeout: Duration,
) -> Outcome {
    let handling = AssertUnwindSafe(async {
        #[cfg(debug_assertions)]
        test_panics::at("handle", request);
        handler.handle(request).await
    })
    .catch_unwind();
    match tokio::time::timeout(timeout, handling).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Outcome::failed(Status::Panic),
        Err(_) => Outcome::failed(Status::Timeout),
    }
}

fn log_outcome(id: u64, request: &Request, outcome: &Outcome, took: Duration) {
    let account = request.account();
    let reason: std::borrow::Cow<'_, str> = match &outcome.status {
        Status::Yes | Status::No | Status::Cached => "".into(),
        Status::Stale(message) => message.as_str().into(),
        Status::Refused(why) => (*why).into(),
        Status::Error(_, message) => message.as_str().into(),
        Status::UnavailableThenNo(message) => message.as_str().into(),
        Status::Timeout => "deadline expired".into(),
        Status::Panic => "request handling panicked".into(),
        Status::Invalid(bad) => bad.to_string().into(),
    };
    let backend = outcome.backend.as_deref().unwrap_or("-");
    let latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                $level,
                id,
                command = request.command().as_str(),
                user = account.user.as_str(),
                server = account.server.as_str(),
                backend,
                outcome = outcome.status.as_str(),
                reason = reason.as_ref(),
                latency_us,
                "request"
            )
        };
    }
    match outcome.status {
        // ejabberd takes any reply to setpass as done, so the user is told the password
        // changed: an operator must see every refusal (README: ejabberd, setpass).
        _ if request.command() == Command::SetPass && !outcome.answer => {
            event!(tracing::Level::WARN)
        }
        Status::Yes | Status::No | Status::Cached | Status::Refused(_) => {
            event!(tracing::Level::INFO)
        }
        _ => event!(tracing::Level::WARN),
    }
}

/// Panics on demand, for the integration tests: no real input makes the request path panic,
/// yet what a panic does there (answer `0`, in order; log without secrets; never write to a
/// Prosody pty) must be tested on the real binary. Compiled only with debug assertions, so
/// release builds carry no trigger, and off unless `EXTAUTH_BRIDGE_TEST_PANICS=1` is in the
/// environment. Then a request for user `panic-STAGE` panics at that stage (`decode`: after
/// the decoder took the frame; `handle`; `log`; `encode`), and a frame starting with
/// `panic-framing` panics in the decoder before it takes a byte. The messages are formatted
/// and hold the password, as a careless `unwrap` could: the log must withhold them.
#[cfg(debug_assertions)]
mod test_panics {
    use std::sync::{Mutex, OnceLock};

    use crate::request::Request;

    pub const ENV: &str = "EXTAUTH_BRIDGE_TEST_PANICS";

    /// Requests whose reply's encoding is to panic.
    static ENCODE: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var_os(ENV).is_some_and(|v| v == "1"))
    }

    fn password(request: &Request) -> &str {
        match request {
            Request::Auth(_, p)
            | Request::SetPass(_, p)
            | Request::TryRegister(_, p)
            | Request::RemoveUser3(_, p) => p.expose(),
            _ => "",
        }
    }

    pub fn at(stage: &str, request: &Request) {
        if enabled() && request.account().user.strip_prefix("panic-") == Some(stage) {
            panic!("test panic in {stage}, password {}", password(request));
        }
    }

    pub fn before_decode(buf: &[u8]) {
        const MARK: &[u8] = b"panic-framing";
        // The line protocol's frame starts at once, ejabberd's after its length.
        if enabled() && (buf.starts_with(MARK) || buf.get(2..).is_some_and(|b| b.starts_with(MARK)))
        {
            panic!("test panic in framing, {} bytes buffered", buf.len());
        }
    }

    pub fn arm_encode(id: u64) {
        if enabled() {
            ENCODE.lock().unwrap_or_else(|p| p.into_inner()).push(id);
        }
    }

    pub fn encode(id: u64) {
        if !enabled() {
            return;
        }
        let mut armed = ENCODE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = armed.iter().position(|&a| a == id) {
            armed.swap_remove(i);
            drop(armed);
            panic!("test panic in encode, request {id}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LineCodec;
    use crate::request::Request;
    use async_trait::async_trait;

    /// Answers `auth` with "password == yes", sleeping as many ms as the user name says;
    /// user `panic` panics.
    struct Scripted;

    #[async_trait]
    impl Handler for Scripted {
        async fn handle(&self, request: &Request) -> Outcome {
            let account = request.account();
            if account.user == "panic" {
                panic!("scripted panic");
            }
            let delay: u64 = account.user.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let answer = matches!(request, Request::Auth(_, p) if p.expose() == "yes");
            Outcome::answered("scripted", answer)
        }
    }

    fn serve_bytes(input: &[u8], options: ServeOptions) -> Vec<u8> {
        let (out, ended) = serve_with(LineCodec::default(), input, options);
        assert_eq!(ended, Ended::EndOfInput);
        out
    }

    fn serve_with<C>(codec: C, input: &[u8], options: ServeOptions) -> (Vec<u8>, Ended)
    where
        C: Decoder<Item = Incoming, Error = io::Error> + Encoder<bool, Error = io::Error>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        let ended = serve(
            &rt,
            codec,
            input,
            &mut out,
            Arc::new(Scripted),
            options,
            &mut NoControl,
        )
        .unwrap();
        (out, ended)
    }

    /// The line codec with panics where no real input can put them: in parsing a frame
    /// whose payload starts with `parse-panic` (its bytes already taken), in framing when
    /// the buffer starts with `frame-panic` (nothing taken), and in encoding the replies
    /// `encode_panics` says.
    struct Faulty {
        inner: LineCodec,
        encode_panics: fn(bool) -> bool,
    }

    impl Faulty {
        fn new(encode_panics: fn(bool) -> bool) -> Faulty {
            Faulty {
                inner: LineCodec::default(),
                encode_panics,
            }
        }
    }

    impl Decoder for Faulty {
        type Item = Incoming;
        type Error = io::Error;
        fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Incoming>> {
            if buf.starts_with(b"frame-panic") {
                panic!("framing");
            }
            let parse_panic = buf.starts_with(b"parse-panic");
            let item = self.inner.decode(buf)?;
            if parse_panic && item.is_some() {
                panic!("parsing");
            }
            Ok(item)
        }
    }

    impl Encoder<bool> for Faulty {
        type Error = io::Error;
        fn encode(&mut self, answer: bool, dst: &mut BytesMut) -> io::Result<()> {
            // Half a reply first: a panic must not leave it on the wire.
            dst.extend_from_slice(b"1");
            if (self.encode_panics)(answer) {
                panic!("encoding");
            }
            dst.truncate(dst.len() - 1);
            self.inner.encode(answer, dst)
        }
    }

    const ONE_AT_A_TIME: ServeOptions = ServeOptions {
        timeout: Duration::from_secs(5),
        max_in_flight: 1,
    };

    #[test]
    fn replies_stay_in_order_when_later_requests_finish_first() {
        let input = b"auth:300:h:yes\nauth:1:h:no\nauth:150:h:yes\nauth:0:h:no\nauth:50:h:yes\n";
        let started = Instant::now();
        let out = serve_bytes(input, ServeOptions::default());
        assert_eq!(out, b"1\n0\n1\n0\n1\n");
        // Concurrent: the total is the slowest request, not the sum.
        assert!(started.elapsed() < Duration::from_millis(450));
    }

    #[test]
    fn deadline_and_panic_answer_zero_and_the_stream_stays_aligned() {
        let options = ServeOptions {
            timeout: Duration::from_millis(100),
            max_in_flight: 1,
        };
        let out = serve_bytes(
            b"auth:5000:h:yes\nauth:0:h:yes\nauth:panic:h:yes\nauth:0:h:yes\nisuser::\n",
            options,
        );
        assert_eq!(out, b"0\n1\n0\n1\n0\n");
    }

    #[test]
    fn a_panic_parsing_a_frame_answers_it_zero_in_its_place() {
        for options in [ONE_AT_A_TIME, ServeOptions::default()] {
            let input = b"auth:0:h:yes\nparse-panic:a:b\nauth:0:h:no\nparse-panic\nauth:0:h:yes\n";
            let (out, ended) = serve_with(Faulty::new(|_| false), input, options);
            assert_eq!(out, b"1\n0\n0\n0\n1\n");
            assert_eq!(ended, Ended::EndOfInput);
        }
    }

    #[test]
    fn a_panic_finding_a_frame_answers_the_frames_before_and_ends() {
        for options in [ONE_AT_A_TIME, ServeOptions::default()] {
            let input = b"auth:0:h:yes\nauth:0:h:no\nframe-panic\nauth:0:h:yes\n";
            let (out, ended) = serve_with(Faulty::new(|_| false), input, options);
            assert_eq!(out, b"1\n0\n", "nothing after the lost frame");
            assert_eq!(ended, Ended::CodecFailed);
        }
    }

    #[test]
    fn a_panic_encoding_a_reply_answers_zero_without_a_partial_reply() {
        for options in [ONE_AT_A_TIME, ServeOptions::default()] {
            // `1` panics in this encoder, `0` does not: the yes goes out as a whole `0`.
            let input = b"auth:0:h:yes\nauth:0:h:no\nauth:0:h:yes\n";
            let (out, ended) = serve_with(Faulty::new(|answer| answer), input, options);
            assert_eq!(out, b"0\n0\n0\n");
            assert_eq!(ended, Ended::EndOfInput);
        }
    }

    #[test]
    fn an_encoder_that_cannot_encode_zero_ends_the_stream() {
        for options in [ONE_AT_A_TIME, ServeOptions::default()] {
            let input = b"auth:0:h:no\nauth:0:h:no\n";
            let (out, ended) = serve_with(Faulty::new(|_| true), input, options);
            assert_eq!(out, b"", "no reply, not even half of one");
            assert_eq!(ended, Ended::CodecFailed);
        }
    }
}
