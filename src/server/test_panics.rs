//! Panics on demand, for the integration tests: no real input makes the request path panic,
//! yet what a panic does there (answer `0`, in order; log without secrets; never write to a
//! Prosody pty) must be tested on the real binary. Compiled only with debug assertions, so
//! release builds carry no trigger, and off unless `EXTAUTH_BRIDGE_TEST_PANICS=1` is in the
//! environment. Then a request for user `panic-STAGE` panics at that stage (`decode`: after
//! the decoder took the frame; `handle`; `log`; `encode`), and a frame starting with
//! `panic-framing` panics in the decoder before it takes a byte. The messages are formatted
//! and hold the password, as a careless `unwrap` could: the log must withhold them.
//!
//! It owns the triggers only: it must not decide any answer (the request path does, as for
//! any other panic).

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
    if enabled() && (buf.starts_with(MARK) || buf.get(2..).is_some_and(|b| b.starts_with(MARK))) {
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
