//! The one count of log lines lost on the way out, whatever the destination. Counts only;
//! telling the operator about drops is the writer's and the datagram socket's job.

use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines dropped since start: the journal or syslog did not take them (receive queue
/// full, no daemon, too big), or stderr or the file did not keep up (see [`Queue`](super::writer::Queue)).
pub(super) static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped since start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}
