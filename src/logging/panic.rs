//! The panic hook: panics go to the log once there is one, to stderr only where stderr is
//! not the protocol, and a formatted panic message (which may hold a password) is withheld.
//! Must not write to stderr under a pty.

use std::sync::atomic::{AtomicBool, Ordering};

use super::deferred::flush;

pub(super) static LOGGING_READY: AtomicBool = AtomicBool::new(false);
static STDERR_FORBIDDEN: AtomicBool = AtomicBool::new(false);
pub(super) static HOOK_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Replaces the default panic hook, which prints to stderr: under Prosody that is the
/// protocol pty. Called first thing, before the configuration is read; `under_pty` forbids
/// stderr from then on. Panics go to the log once there is one, before that to stderr (not
/// under a pty) or nowhere. Request handling catches them and answers `0`.
pub fn install_panic_hook(under_pty: bool) {
    STDERR_FORBIDDEN.store(under_pty, Ordering::SeqCst);
    HOOK_INSTALLED.store(true, Ordering::SeqCst);
    std::panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if LOGGING_READY.load(Ordering::SeqCst) {
            tracing::error!(%location, message = message.as_ref(), "panic");
        } else if !STDERR_FORBIDDEN.load(Ordering::SeqCst) {
            eprintln!("extauth-bridge: panic at {location}: {message}");
        }
        // The loop catches request panics and flushes; anything else may be about to exit.
        flush();
    }));
}

/// What a panic log line may say about the payload. A literal message (`&'static str`) was
/// written by a programmer and is shown. A formatted one (`String`: `panic!("{x}")`, the
/// `Debug` of an error in `unwrap()`) is built from runtime values, which in a request may
/// include a password, so only its length is shown.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> std::borrow::Cow<'static, str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).into()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("(formatted message of {} bytes withheld)", s.len()).into()
    } else {
        "(non-text payload)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_panic_messages_are_withheld() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("literal message");
        assert_eq!(panic_message(literal.as_ref()), "literal message");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("password {}", "hunter2"));
        let shown = panic_message(formatted.as_ref());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("16 bytes"), "{shown}");
    }
}
