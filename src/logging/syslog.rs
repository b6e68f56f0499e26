//! Syslog lines as syslog(3) writes them to /dev/log (RFC 3164): `<PRI>TIMESTAMP TAG[PID]: MSG`.
//! Pure formatting: no socket, no I/O.

use super::datagram::priority;
use super::IDENTIFIER;
use crate::config::Facility;

/// One event as one syslog line: RFC 3164 as syslog(3) writes it to /dev/log,
/// `<PRI>TIMESTAMP TAG[PID]: MSG`.
pub(super) fn line(facility: Facility, level: tracing::Level, text: &str) -> Vec<u8> {
    let pri = u16::from(facility.code()) * 8 + u16::from(priority(level));
    format!(
        "<{pri}>{} {IDENTIFIER}[{}]: {text}",
        timestamp_3164(),
        std::process::id()
    )
    .into_bytes()
}

/// `Mmm dd hh:mm:ss` in local time, as syslog(3) stamps a line. The receiver keeps its own
/// arrival time anyway (rsyslog and journald both do by default for the local socket).
fn timestamp_3164() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) has no preconditions; localtime_r writes only into `tm`, which
    // lives on this stack frame, and is the thread-safe variant.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            None
        } else {
            Some(tm)
        }
    };
    let month = tm.and_then(|tm| MONTHS.get(usize::try_from(tm.tm_mon).ok()?));
    match (tm, month) {
        (Some(tm), Some(month)) => format!(
            "{month} {:>2} {:02}:{:02}:{:02}",
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
        ),
        // Receivers stamp lines without a timestamp themselves (RFC 3164 §4.3.2).
        _ => String::new(),
    }
}
