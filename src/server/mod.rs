//! The request loop: read → decode → handle under a deadline → encode → write.
//!
//! It knows neither the wire format (a codec is passed in) nor the backends (a [`Handler`]
//! is). Its guarantees:
//! - exactly one reply per decoded frame, in request order, each reply complete in one write;
//! - every request answered within the deadline (`0` on expiry);
//! - a panic anywhere between decoding a frame and encoding its reply answered `0` (see
//!   [`frame::decode_next`] for a panic in the decoder itself);
//! - end of input → return `Ok`; a stop request → finish what was read, then return.
//!
//! Reads block on the input between requests: the servers send one request at a time, and a
//! blocking `read`/`write` pair is the cheapest round trip there is. When a read brings several
//! complete frames (an admin piping a file), they run concurrently, bounded by
//! `max_in_flight`, and the replies are still written in order.
//!
//! This file holds the loop itself ([`serve`]: read, decode, answer a batch, stop or reload)
//! and [`handle_request`], the one place a request meets its deadline. Answering a batch and
//! one frame, and the log line of each request, are in `answer.rs`; the codec calls that
//! survive a panic in `frame.rs`. Nothing here may parse or format the wire (that is the
//! codec's, `protocol/`) or know which backend answers (that is the [`Handler`]'s).

use std::io::{self, Read, Write};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::runtime::Runtime;
use tokio_util::codec::{Decoder, Encoder};

use crate::outcome::{Outcome, Status};
use crate::request::{Incoming, Request};
use crate::router::Handler;

mod answer;
mod frame;

#[cfg(debug_assertions)]
mod test_panics;

use answer::answer_batch;
use frame::{decode_next, Decoded};

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
