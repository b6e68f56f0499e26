//! Answering what the loop decoded: a batch in request order ([`answer_batch`]: concurrent up
//! to `max_in_flight`, a request that changes an account alone, replies written as soon as
//! they are ready), one frame (a panic anywhere answered `0`), and the log line and metrics
//! of each request, with the latency the XMPP server waited.
//!
//! It must not parse or format the wire (the codec does, through `frame.rs`), read input, or
//! decide an answer itself beyond `0` for a failure: the [`Handler`] decides.

use std::io::{self, Write};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use tokio_util::codec::Encoder;

use super::frame::{encode_reply, Frame};
use super::{handle_request, ServeOptions};
use crate::outcome::{Outcome, Status};
use crate::request::{Command, Request};
use crate::router::Handler;

#[cfg(debug_assertions)]
use super::test_panics;

/// Answers a batch of frames in order, running up to `max_in_flight` at once. Replies that
/// are ready together go out in one write; the buffer is written whenever the next reply is
/// not ready yet, so a lone request is answered at once. Returns `false` when a reply could
/// not be encoded at all (see [`encode_reply`]): the replies before it are written, nothing
/// after it.
pub(super) async fn answer_batch<C, W>(
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
fn log_outcome(id: u64, request: &Request, outcome: &Outcome, took: Duration) {
    let account = request.account();
    let reason: std::borrow::Cow<'_, str> = match &outcome.status {
        Status::Yes | Status::No | Status::Cached | Status::SharedCached => "".into(),
        Status::Stale(message) | Status::Throttled(message) => message.as_str().into(),
        Status::Repeated(scope) => format!(
            "the same wrong password within throttle.window (remembered {})",
            scope.describe()
        )
        .into(),
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
        // Throttled answers are the throttle working, not a fault: an attack must not flood
        // the log at warn level (the lockout itself is logged once, as a warning).
        Status::Yes
        | Status::No
        | Status::Cached
        | Status::SharedCached
        | Status::Refused(_)
        | Status::Throttled(_)
        | Status::Repeated(_) => {
            event!(tracing::Level::INFO)
        }
        _ => event!(tracing::Level::WARN),
    }
}
