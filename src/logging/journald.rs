//! The systemd journal's native protocol (systemd.journal-fields(7)): one datagram of
//! `NAME=value` fields, the binary form for a value with a newline, and tracing field names
//! made valid journal names. Pure encoding: no socket, no I/O.

use super::datagram::{cut, priority, Fields, MAX_FIELD};
use super::IDENTIFIER;
use crate::config::Facility;

/// One event as one native-protocol datagram: MESSAGE is `text` (the text form), and each
/// field is also a journal field of its own.
pub(super) fn datagram(
    facility: Facility,
    level: tracing::Level,
    code: Option<(&str, u32)>,
    text: &str,
    fields: &Fields,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + text.len());
    journal_field(&mut out, "PRIORITY", priority(level).to_string().as_bytes());
    journal_field(
        &mut out,
        "SYSLOG_FACILITY",
        facility.code().to_string().as_bytes(),
    );
    journal_field(&mut out, "SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes());
    journal_field(
        &mut out,
        "SYSLOG_PID",
        std::process::id().to_string().as_bytes(),
    );
    journal_field(&mut out, "MESSAGE", text.as_bytes());
    if let Some((file, line)) = code {
        journal_field(&mut out, "CODE_FILE", file.as_bytes());
        journal_field(&mut out, "CODE_LINE", line.to_string().as_bytes());
    }
    for (name, value) in &fields.fields {
        let value = value.plain();
        journal_field(
            &mut out,
            &journal_name(name),
            cut(value, MAX_FIELD).as_bytes(),
        );
    }
    out
}

/// Appends one field in the journal's native protocol: `NAME=value\n`, or, for a value with
/// a newline, `NAME\n`, its length as a little-endian u64, the value and `\n`.
fn journal_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A tracing field name as a journal field name: upper case, `[A-Z0-9_]`, not starting with
/// `_` (reserved for fields journald itself vouches for) or a digit, at most 64 bytes. Names
/// we set ourselves get a prefix rather than a second, conflicting value.
pub(super) fn journal_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    let ours = [
        "MESSAGE",
        "PRIORITY",
        "SYSLOG_FACILITY",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_PID",
        "CODE_FILE",
        "CODE_LINE",
    ];
    if out.is_empty()
        || out.starts_with(['_', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
        || ours.contains(&out.as_str())
    {
        out.insert_str(0, "F_");
    }
    out.truncate(64);
    out
}
