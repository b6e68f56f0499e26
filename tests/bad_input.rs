//! Hostile and broken input on both wire protocols: exactly one correct reply per request,
//! no panic, and memory that stays bounded whatever is sent.

mod common;

use std::time::Duration;

use common::*;

fn accounts(dir: &std::path::Path, long_password: &str) -> std::path::PathBuf {
    users_file(
        dir,
        &[
            ("romeo@example.net", "pw"),
            ("juliet@example.net", long_password),
        ],
    )
}

/// The longest ejabberd frame: `auth:juliet:example.net:` and a password filling the rest.
fn longest_frame_password() -> String {
    "p".repeat(65_535 - "auth:juliet:example.net:".len())
}

#[test]
fn line_protocol_bad_input_gets_one_zero_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path(), "x");
    let mut input = Vec::new();
    let mut expected = String::new();
    let mut expect = |input: &mut Vec<u8>, bytes: &[u8], reply: &str| {
        input.extend_from_slice(bytes);
        expected.push_str(reply);
    };
    expect(&mut input, b"auth:romeo:example.net:pw\n", "1\n");
    // 1 MiB without a newline, then its newline: one 0, and the next line is intact.
    expect(&mut input, &vec![b'a'; 1 << 20], "");
    expect(&mut input, b"\n", "0\n");
    expect(&mut input, b"auth:romeo:example.net:pw\n", "1\n");
    // 100 000 empty lines.
    for _ in 0..100_000 {
        expect(&mut input, b"\n", "0\n");
    }
    expect(&mut input, b"\r\n", "0\n");
    expect(&mut input, b"auth:r\xffmeo:example.net:pw\n", "0\n");
    expect(&mut input, b"auth:romeo:example.net:p\xc3\n", "0\n");
    expect(&mut input, b"auth:romeo:example.net:p\0w\n", "0\n");
    expect(&mut input, b"\0\n", "0\n");
    // `\r` inside fields: a control character in user or server; part of a password.
    expect(&mut input, b"auth:ro\rmeo:example.net:pw\n", "0\n");
    expect(&mut input, b"isuser:romeo:exam\rple.net\n", "0\n");
    expect(&mut input, b"auth:romeo:example.net:p\rw\n", "0\n");
    expect(&mut input, b"auth:romeo:example.net:pw\r\r\n", "0\n");
    expect(&mut input, b"auth:romeo:example.net:pw\r\n", "1\n");
    // Unknown commands and wrong shapes.
    for bad in [
        &b"AUTH:romeo:example.net:pw"[..],
        b"login:romeo:example.net:pw",
        b"auth",
        b"auth:romeo",
        b"auth:romeo:example.net",
        b"isuser:romeo:example.net:extra",
        b" auth:romeo:example.net:pw",
        b"\x1b[A",
    ] {
        expect(&mut input, bad, "");
        expect(&mut input, b"\n", "0\n");
    }
    // Fields with only colons.
    for bad in [
        &b":"[..],
        b"::",
        b":::",
        b"::::",
        b":::::::",
        b"auth:::",
        b"auth::::",
        b"isuser::",
    ] {
        expect(&mut input, bad, "");
        expect(&mut input, b"\n", "0\n");
    }
    expect(&mut input, b"isuser:romeo:example.net\n", "1\n");
    // 1 MiB without a newline at the very end: answered 0 once at EOF.
    expect(&mut input, &vec![b'b'; 1 << 20], "0\n");

    let out = run(
        &["--users", users.to_str().unwrap(), "--log-level", "error"],
        &input,
    );
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected.as_bytes(), "replies differ");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panic"));
}

#[test]
fn ejabberd_bad_input_gets_one_zero_per_frame() {
    let dir = tempfile::tempdir().unwrap();
    let long = longest_frame_password();
    let users = accounts(dir.path(), &long);
    let raw = |bytes: &[u8]| {
        let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    };
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let longest = format!("auth:juliet:example.net:{long}");
    assert_eq!(longest.len(), 65_535);
    for (frame, reply) in [
        (raw(longest.as_bytes()), YES),
        (raw(&longest.as_bytes()[..65_534]), NO),
        (raw(b""), NO),
        (raw(b"auth:romeo:example.net:pw"), YES),
        (raw(b"bogus:romeo:example.net"), NO),
        (raw(b"::::"), NO),
        (raw(b":"), NO),
        (raw(b"isuser::"), NO),
        (raw(b"auth:r\xffmeo:example.net:pw"), NO),
        (raw(b"auth:romeo:example.net:p\0w"), NO),
        (raw(b"\0\0\0\0"), NO),
        (raw(b"isuser:ro\rmeo:example.net"), NO),
        (raw(b"auth:romeo:example.net:pw\n"), NO),
        (raw(b"isuser:romeo:example.net"), YES),
    ] {
        input.extend(frame);
        expected.extend(reply);
    }
    for _ in 0..10_000 {
        input.extend(raw(b""));
        expected.extend(NO);
    }
    input.extend(raw(b"isuser:romeo:example.net"));
    expected.extend(YES);
    // Truncated: a length promising more than EOF delivers. No reply, exit 0.
    input.extend_from_slice(&[0x01, 0x00]);
    input.extend_from_slice(b"auth:romeo:example.net:pw");

    // The first frame is longer than 8 KiB: its first byte looks like text to auto-detection.
    let args = ["--users", users.to_str().unwrap(), "--log-level", "error"];
    let out = run(&[&args[..], &["--protocol", "ejabberd"]].concat(), &input);
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "replies differ");
}

/// The peak resident set of a process, from /proc.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

const MEMORY_BOUND_KIB: u64 = 32 * 1024;

#[test]
fn memory_stays_bounded_while_100_mib_of_junk_flows() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path(), "x");
    let u = users.to_str().unwrap();

    // Line protocol: 100 lines of 1 MiB, each followed by a real query.
    let mut bridge = Live::spawn(&["--users", u, "--log-level", "error"]);
    let junk = vec![b'j'; 1 << 20];
    for _ in 0..100 {
        bridge.send(&junk);
        bridge.send(b"\nauth:romeo:example.net:pw\n");
        let reply = bridge.read_exact_within(4, Duration::from_secs(30));
        assert_eq!(reply, b"0\n1\n");
    }
    let hwm = vm_hwm_kib(bridge.child.id());
    assert!(hwm < MEMORY_BOUND_KIB, "line protocol peak RSS {hwm} KiB");
    bridge.close_stdin();
    assert_eq!(
        bridge.wait_within(Duration::from_secs(10)).0.code(),
        Some(0)
    );

    // ejabberd: 1 600 maximal frames of junk (100 MiB), a real query after every 16.
    let mut bridge = Live::spawn(&[
        "--users",
        u,
        "--log-level",
        "error",
        "--protocol",
        "ejabberd",
    ]);
    let mut junk = vec![0xff, 0xff];
    junk.resize(2 + 65_535, b'j');
    let mut batch = Vec::new();
    for _ in 0..16 {
        batch.extend_from_slice(&junk);
    }
    batch.extend(frame("auth:romeo:example.net:pw"));
    let mut expected = Vec::new();
    for _ in 0..16 {
        expected.extend(NO);
    }
    expected.extend(YES);
    for _ in 0..100 {
        bridge.send(&batch);
        let reply = bridge.read_exact_within(expected.len(), Duration::from_secs(30));
        assert_eq!(reply, expected);
    }
    let hwm = vm_hwm_kib(bridge.child.id());
    assert!(hwm < MEMORY_BOUND_KIB, "ejabberd peak RSS {hwm} KiB");
    bridge.close_stdin();
    assert_eq!(
        bridge.wait_within(Duration::from_secs(10)).0.code(),
        Some(0)
    );
}
