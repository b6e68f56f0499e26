//! The request loop: read → decode → handle under a deadline → encode → write.
//!
//! It knows neither the wire format (a codec is passed in) nor the backends (a [`Handler`]
//! is). Its guarantees:
//! - exactly one reply per decoded frame, in request order, each reply complete in one write;
//! - every request answered within the deadline (`0` on expiry), a panic answered `0`;
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

use crate::request::{Incoming, Outcome, Status};
use crate::router::Handler;

/// How much to read at once. Large reads keep piped files fast; memory stays bounded by this
/// plus the codec's own frame limit.
const READ_CHUNK: usize = 64 * 1024;

/// Lets the loop learn about stop and reload requests between requests.
pub trait Control {
    /// Stop after the requests already read have been answered.
    fn should_stop(&self) -> bool;
    /// A new handler to use from the next request on (configuration reloaded).
    fn reload(&mut self) -> Option<Arc<dyn Handler>>;
}

/// A [`Control`] that never stops or reloads: for tests and one-shot uses.
pub struct NoControl;

impl Control for NoControl {
    fn should_stop(&self) -> bool {
        false
    }
    fn reload(&mut self) -> Option<Arc<dyn Handler>> {
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

/// Serves requests from `input` until end of input or a stop request.
pub fn serve<C, R, W>(
    runtime: &Runtime,
    mut codec: C,
    mut input: R,
    mut output: W,
    handler: Arc<dyn Handler>,
    options: ServeOptions,
    control: &mut dyn Control,
) -> io::Result<()>
where
    C: Decoder<Item = Incoming, Error = io::Error> + Encoder<bool, Error = io::Error>,
    R: Read,
    W: Write,
{
    let mut handler = handler;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out = BytesMut::with_capacity(256);
    let mut next_id: u64 = 0;
    let mut eof = false;
    loop {
        let mut batch = Vec::new();
        while batch.len() < options.max_in_flight.max(1) * 16 {
            let item = if eof {
                codec.decode_eof(&mut buf)?
            } else {
                codec.decode(&mut buf)?
            };
            match item {
                Some(item) => batch.push(item),
                None => break,
            }
        }
        if !batch.is_empty() {
            let first_id = next_id;
            next_id += batch.len() as u64;
            runtime.block_on(async {
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
            if control.should_stop() {
                tracing::info!("stop requested: answered the requests in hand, exiting");
                return Ok(());
            }
            if let Some(h) = control.reload() {
                handler = h;
            }
            continue;
        }
        if eof {
            return Ok(());
        }
        if control.should_stop() {
            tracing::info!("stop requested, exiting");
            return Ok(());
        }
        // The replies are out: now the log lines of their requests (see logging::flush).
        crate::logging::flush();
        // Read into a chunk zeroed once, then append what came: growing `buf` by 64 KiB of
        // zeros before every read cost a 64 KiB memset per request (seen in a profile).
        match input.read(&mut chunk[..]) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if let Some(h) = control.reload() {
                    handler = h;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Answers a batch of frames in order, running up to `max_in_flight` at once. Replies that
/// are ready together go out in one write; the buffer is written whenever the next reply is
/// not ready yet, so a lone request is answered at once.
async fn answer_batch<C, W>(
    codec: &mut C,
    output: &mut W,
    out: &mut BytesMut,
    handler: &Arc<dyn Handler>,
    batch: Vec<Incoming>,
    first_id: u64,
    options: ServeOptions,
) -> io::Result<()>
where
    C: Encoder<bool, Error = io::Error>,
    W: Write,
{
    if batch.len() == 1 {
        // The servers' case: one request in flight. No ordering machinery needed.
        for item in batch {
            let answer = answer_one(handler.as_ref(), item, first_id, options.timeout).await;
            codec.encode(answer, out)?;
        }
        return write_out(output, out);
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
            let Some((_, next)) = pending.peek() else {
                break;
            };
            let exclusive = changes_accounts(next);
            if exclusive && !running.is_empty() {
                break;
            }
            let Some((i, item)) = pending.next() else {
                break;
            };
            *exclusive_running = exclusive;
            let handler = Arc::clone(handler);
            running.push_back(async move {
                answer_one(handler.as_ref(), item, first_id + i as u64, options.timeout).await
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
        let Some(answer) = next else { break };
        codec.encode(answer, out)?;
        refill(&mut running, &mut exclusive_running);
    }
    write_out(output, out)
}

fn changes_accounts(item: &Incoming) -> bool {
    use crate::request::Command;
    matches!(
        item.as_ref().map(|r| r.command()),
        Ok(Command::SetPass | Command::TryRegister | Command::RemoveUser | Command::RemoveUser3)
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
async fn answer_one(handler: &dyn Handler, item: Incoming, id: u64, timeout: Duration) -> bool {
    let started = Instant::now();
    let request = match item {
        Ok(request) => request,
        Err(bad) => {
            tracing::warn!(id, outcome = "invalid", reason = %bad, "request rejected");
            crate::metrics::record(crate::metrics::NONE, None, "invalid", started.elapsed());
            return false;
        }
    };
    let outcome = handle_request(handler, &request, timeout).await;
    let took = started.elapsed();
    log_outcome(id, &request, &outcome, took);
    let (command, status) = (request.command().as_str(), outcome.status.as_str());
    crate::metrics::record(command, outcome.backend.as_deref(), status, took);
    outcome.answer
}

/// Handles one request the way the daemon does: under the deadline, a panic answered `0`.
/// `extauth-bridge query` goes through here too, so a question asked by hand gets exactly the
/// daemon's answer.
pub async fn handle_request(
    handler: &dyn Handler,
    request: &crate::request::Request,
    timeout: Duration,
) -> Outcome {
    let handling = AssertUnwindSafe(handler.handle(request)).catch_unwind();
    match tokio::time::timeout(timeout, handling).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Outcome::failed(Status::Panic),
        Err(_) => Outcome::failed(Status::Timeout),
    }
}

fn log_outcome(id: u64, request: &crate::request::Request, outcome: &Outcome, took: Duration) {
    let account = request.account();
    let reason: std::borrow::Cow<'_, str> = match &outcome.status {
        Status::Yes | Status::No | Status::Cached => "".into(),
        Status::Stale(message) => message.as_str().into(),
        Status::Refused(why) => (*why).into(),
        Status::Error(_, message) => message.as_str().into(),
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
        Status::Yes | Status::No | Status::Cached | Status::Refused(_) => {
            event!(tracing::Level::INFO)
        }
        _ => event!(tracing::Level::WARN),
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        serve(
            &rt,
            LineCodec::default(),
            input,
            &mut out,
            Arc::new(Scripted),
            options,
            &mut NoControl,
        )
        .unwrap();
        out
    }

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
}
