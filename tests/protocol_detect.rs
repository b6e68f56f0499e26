//! `protocol = "auto"` through the real binary (SPEC §4): a fresh process whose first
//! ejabberd frame is long enough for its length to start with a printable byte (8 KiB and
//! up; 24 832 and up start with `a`) still answers in ejabberd's framing, that frame and the
//! next, and a line inside the password is never answered on its own.

mod common;

use std::time::Duration;

use common::*;

/// A password of exactly `len` bytes that holds line-protocol requests of its own: read as
/// lines, each would get a reply.
fn long_password(len: usize) -> String {
    let mut password = String::from("x\nisuser:romeo:example.net\nauth:romeo:example.net:y\n");
    while password.len() < len {
        password.push('p');
    }
    password.truncate(len);
    password
}

#[test]
fn a_long_first_ejabberd_frame_is_answered_in_frames() {
    // 8 192 + a little: first byte 0x20; 25 000: first byte 0x61, `a`.
    for frame_len in [8_300, 25_000] {
        let prefix = "auth:romeo:example.net:";
        let password = long_password(frame_len - prefix.len());
        let dir = tempfile::tempdir().unwrap();
        let users = users_file(dir.path(), &[("romeo@example.net", &password)]);
        let mut bridge = Live::spawn(&["--users", users.to_str().unwrap(), "--log-level", "error"]);

        let first = frame(&format!("{prefix}{password}"));
        assert_eq!(first.len(), 2 + frame_len);
        assert!(first[0] >= 0x20, "the length's first byte looks like text");
        bridge.send(&first);
        let reply = bridge.read_exact_within(4, Duration::from_secs(10));
        assert_eq!(reply, YES, "first frame of {frame_len} bytes");
        bridge.send(&frame("isuser:romeo:example.net"));
        let reply = bridge.read_exact_within(4, Duration::from_secs(10));
        assert_eq!(reply, YES, "the frame after it");
        bridge.send(&frame(&format!("{prefix}wrong")));
        let reply = bridge.read_exact_within(4, Duration::from_secs(10));
        assert_eq!(reply, NO, "a wrong password after it");
        // Nothing else: no reply to the lines inside the password.
        assert!(bridge.silent_for(Duration::from_millis(300)));

        bridge.close_stdin();
        let (status, _) = bridge.wait_within(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0));
    }
}

#[test]
fn the_line_protocol_is_still_detected_from_its_command_name() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let u = users.to_str().unwrap();
    // Sent one byte at a time: detection waits for `auth:` rather than guessing early.
    let mut bridge = Live::spawn(&["--users", u, "--log-level", "error"]);
    for &b in b"auth:romeo:example.net:pw\n" {
        bridge.send(&[b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(bridge.read_exact_within(2, Duration::from_secs(10)), b"1\n");
    assert_eq!(bridge.ask("isuser:romeo:example.net"), "1\n");

    // Matching neither form: answered `0` as the first byte suggests, here a line.
    let out = run(
        &["--users", u, "--log-level", "error"],
        b"hello\nauth:romeo:example.net:pw\n",
    );
    assert_eq!(out.stdout, b"0\n1\n");
    let out = run(
        &["--users", u, "--log-level", "error"],
        &[&[0, 3][..], b"xyz", &frame("isuser:romeo:example.net")].concat(),
    );
    assert_eq!(out.stdout, [NO, YES].concat());
}
