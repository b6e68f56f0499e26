//! A panic anywhere between decoding a frame and writing its reply: the real binary answers
//! `0` in the frame's place, keeps answering the next ones correctly, logs the panic without
//! its (formatted, secret-holding) message and never exits 101. A panic in the decoder
//! before it takes a frame ends the process with status 0 after the replies before it.
//!
//! No input makes the bridge panic, so these tests use the debug-build-only trigger in
//! `server.rs` (`EXTAUTH_BRIDGE_TEST_PANICS=1`; user `panic-STAGE` panics at STAGE). The pty
//! side is in tests/pty.rs.

mod common;

use common::*;

const TRIGGER: (&str, &str) = ("EXTAUTH_BRIDGE_TEST_PANICS", "1");

/// Accounts that exist, so that the panicking requests would have been answered `1`.
fn accounts(dir: &std::path::Path) -> std::path::PathBuf {
    users_file(
        dir,
        &[
            ("romeo@example.net", "right"),
            ("panic-decode@example.net", "s3cret-decode"),
            ("panic-handle@example.net", "s3cret-handle"),
            ("panic-log@example.net", "s3cret-log"),
            ("panic-encode@example.net", "s3cret-encode"),
        ],
    )
}

/// Each panicking request between two that must be answered `1`: a skipped or shifted
/// reply shows.
const REQUESTS: [(&str, bool); 9] = [
    ("auth:romeo:example.net:right", true),
    ("auth:panic-decode:example.net:s3cret-decode", false),
    ("auth:romeo:example.net:right", true),
    ("auth:panic-handle:example.net:s3cret-handle", false),
    ("isuser:romeo:example.net", true),
    ("auth:panic-log:example.net:s3cret-log", false),
    ("auth:romeo:example.net:right", true),
    ("auth:panic-encode:example.net:s3cret-encode", false),
    ("auth:romeo:example.net:right", true),
];

fn debug_build() -> bool {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the panic trigger exists in debug builds only");
    }
    cfg!(debug_assertions)
}

fn assert_no_secret(stderr: &str) {
    for secret in [
        "s3cret-decode",
        "s3cret-handle",
        "s3cret-log",
        "s3cret-encode",
    ] {
        assert!(!stderr.contains(secret), "{secret} in the log: {stderr}");
    }
}

#[test]
fn panics_are_answered_zero_in_place_with_both_protocols() {
    if !debug_build() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let args = ["--users", users.to_str().unwrap(), "--log-level", "debug"];

    // Piped all at once: the requests run concurrently, the replies are still in order.
    let input: String = REQUESTS.iter().map(|(q, _)| format!("{q}\n")).collect();
    let expected: String = REQUESTS
        .iter()
        .map(|&(_, yes)| if yes { "1\n" } else { "0\n" })
        .collect();
    let out = run_env(&args, input.as_bytes(), &[TRIGGER]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The hook logged each panic, its formatted message withheld.
    assert!(!stderr.contains("test panic"), "{stderr}");
    assert_eq!(stderr.matches("withheld").count(), 4, "{stderr}");
    assert!(stderr.contains("decoding the request panicked"), "{stderr}");
    assert!(
        stderr.contains("answering the request panicked"),
        "{stderr}"
    );
    assert!(stderr.contains("encoding the reply failed"), "{stderr}");
    assert_no_secret(&stderr);

    let input: Vec<u8> = REQUESTS.iter().flat_map(|(q, _)| frame(q)).collect();
    let expected: Vec<u8> = REQUESTS
        .iter()
        .flat_map(|&(_, yes)| if yes { YES } else { NO })
        .collect();
    let out = run_env(&args, &input, &[TRIGGER]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.stdout, expected, "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_no_secret(&stderr);
}

#[test]
fn the_trigger_is_off_without_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let input: String = REQUESTS.iter().map(|(q, _)| format!("{q}\n")).collect();
    let out = run(&["--users", users.to_str().unwrap()], input.as_bytes());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n".repeat(9));
}

#[test]
fn a_decoder_panic_with_no_frame_to_answer_ends_cleanly_after_the_replies_before_it() {
    if !debug_build() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let args = ["--users", users.to_str().unwrap()];
    let input = b"auth:romeo:example.net:right\nauth:romeo:example.net:wrong\n\
                  panic-framing\nauth:romeo:example.net:right\n";
    let out = run_env(&args, input, &[TRIGGER]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n0\n", "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("its end is unknown"), "{stderr}");

    let mut input = [frame("isuser:romeo:example.net"), frame("panic-framing")].concat();
    input.extend(frame("isuser:romeo:example.net"));
    let out = run_env(&args, &input, &[TRIGGER]);
    assert_eq!(out.stdout, YES);
    assert_eq!(out.status.code(), Some(0));
}
