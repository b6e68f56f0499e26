use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines dropped since start: the journal or syslog did not take them (receive queue
/// full, no daemon, too big), or stderr or the file did not keep up (see [`Queue`]).
pub(super) static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped since start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}
