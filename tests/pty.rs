//! The bridge driven through a real pseudo-terminal, the way Prosody's lpty drives it
//! (SPEC §2); the harness is in `common/pty.rs`.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use common::pty::{openpty, readable, socket_inode, spawn, wait_with_timeout, write_all, Terminal};
use common::users_file;

fn setup(dir: &Path, log: &Path, target: &str) -> std::path::PathBuf {
    let users = users_file(
        dir,
        &[
            ("romeo@example.net", "right-r0meo"),
            ("juliet@example.net", "right-jul1et"),
        ],
    );
    let config = dir.join("config.toml");
    fs::write(
        &config,
        format!(
            "[log]\nlevel = \"trace\"\ntarget = {target:?}\nfile = {log:?}\n\n[[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn prosody_pty_replies_are_never_shifted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bridge.log");
    // target "auto": stderr normally, the file under the pty.
    let config = setup(dir.path(), &log, "auto");
    // Prosody writes its first query right after the fork: echo is still on.
    let pty = spawn(
        &config,
        &[],
        Terminal::Without,
        true,
        b"auth:romeo:example.net:right-r0meo\n",
    );

    // The kernel echoes it, and lpty takes the echo for the reply: a failed login, and the
    // reason the bridge must never answer that query.
    let echo = pty.reply();
    assert_eq!(echo, "auth:romeo:example.net:right-r0meo");
    pty.wait_until_ready();

    // Every later reply is the reply to its own query.
    assert_eq!(pty.ask("auth:romeo:example.net:wrong"), "0");
    assert_eq!(pty.ask("auth:romeo:example.net:right-r0meo"), "1");
    assert_eq!(pty.ask("auth:juliet:example.net:right-r0meo"), "0");
    assert_eq!(pty.ask("auth:juliet:example.net:right-jul1et"), "1");
    assert_eq!(pty.ask("auth:juliet:example.net:wrong"), "0");
    assert_eq!(pty.ask("isuser:romeo:example.net"), "1");
    assert_eq!(pty.ask("isuser:nobody:example.net"), "0");
    assert_eq!(pty.ask("bogus"), "0");

    // Raw replies: exactly `1\n`, no `\r` added (OPOST off), nothing else (no logs).
    write_all(pty.master(), b"auth:romeo:example.net:right-r0meo\n");
    assert_eq!(pty.read_once(), b"1\n");
    assert!(
        !readable(pty.master(), Duration::from_millis(300)),
        "something other than replies came out of the pty"
    );

    // Inherited descriptors are gone: neither the socket nor Prosody's end of the pty.
    let inode = format!("socket:[{}]", socket_inode(&pty.socket));
    let open = pty.open_files();
    assert!(
        !open.iter().any(|f| f == &inode),
        "socket inherited: {open:?}"
    );
    assert!(
        !open.iter().any(|f| f.contains("ptmx")),
        "pty master inherited: {open:?}"
    );

    // Prosody goes away: EIO on read, exit 0 (so Prosody would restart us).
    let status = pty.hang_up();
    assert_eq!(status.code(), Some(0), "{status:?}");

    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("discarded the queries waiting at start-up"),
        "{log}"
    );
    assert!(!log.contains("right-r0meo") && !log.contains("right-jul1et"));
}

#[test]
fn queries_split_across_start_up_are_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bridge.log");
    let config = setup(dir.path(), &log, "auto");
    // A query cut in two: the start waits at start-up (and was echoed), the rest comes later.
    let pty = spawn(&config, &[], Terminal::Without, true, b"auth:romeo:exa");
    let mut echo = Vec::new();
    while echo.len() < 14 {
        echo.extend(pty.read_once());
    }
    assert_eq!(echo, b"auth:romeo:exa");
    pty.wait_until_ready();
    // Its rest belongs to the dropped query: answering it would shift every reply after it.
    write_all(pty.master(), b"mple.net:right-r0meo\n");
    assert_eq!(pty.ask("auth:romeo:example.net:wrong"), "0");
    assert_eq!(pty.ask("auth:romeo:example.net:right-r0meo"), "1");
    assert!(!readable(pty.master(), Duration::from_millis(300)));
    assert_eq!(pty.hang_up().code(), Some(0));
}

#[test]
fn config_errors_under_the_pty_are_not_written_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "timeout = \"forever\"\n").unwrap();
    let mut pty = spawn(&config, &[], Terminal::Without, true, b"");
    let status = wait_with_timeout(&mut pty.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    assert!(
        !readable(pty.master(), Duration::from_millis(200)),
        "the error went to the pty: {:?}",
        String::from_utf8_lossy(&pty.read_once())
    );
}

#[test]
fn another_controlling_terminal_is_still_the_prosody_case() {
    // Had lpty not started a new session, the child would keep the terminal Prosody was
    // started from. Its stdin is still not a terminal anyone types into: pty mode. (This is
    // why detection asks "is fd 0 our controlling terminal", not "do we have one".)
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bridge.log");
    let config = setup(dir.path(), &log, "auto");
    let (_other_master, other_slave) = openpty();
    let pty = spawn(
        &config,
        &[],
        Terminal::Other(other_slave.as_raw_fd()),
        true,
        b"auth:romeo:example.net:right-r0meo\n",
    );
    assert_eq!(pty.reply(), "auth:romeo:example.net:right-r0meo");
    pty.wait_until_ready();
    assert_eq!(pty.ask("auth:romeo:example.net:wrong"), "0");
    assert_eq!(pty.ask("auth:romeo:example.net:right-r0meo"), "1");
    assert_eq!(pty.hang_up().code(), Some(0));
}

#[test]
fn an_admin_at_a_terminal_keeps_echo() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bridge.log");
    let config = setup(dir.path(), &log, "file");
    // The pty is the child's controlling terminal: someone typing, not Prosody.
    let pty = spawn(&config, &[], Terminal::ThisPty, false, b"");
    write_all(pty.master(), b"isuser:romeo:example.net\n");
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n1\r\n") {
        seen.extend(pty.read_once());
    }
    // The line was echoed as typed, the reply went through the terminal's output processing.
    assert_eq!(seen, b"isuser:romeo:example.net\r\n1\r\n");
    assert!(pty
        .slave_termios()
        .local_modes
        .contains(rustix::termios::LocalModes::ECHO));
    assert_eq!(pty.hang_up().code(), Some(0));
}

#[test]
fn pty_off_keeps_the_terminal_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bridge.log");
    let config = setup(dir.path(), &log, "file");
    // `on` at a terminal: raw mode although someone could be typing.
    // A query waits at start-up, so "ready" below also means "drained": a query written
    // between raw mode and the drain would be dropped.
    let on = spawn(
        &config,
        &["--pty", "on"],
        Terminal::ThisPty,
        false,
        b"isuser:romeo:example.net\n",
    );
    assert_eq!(on.reply(), "isuser:romeo:example.net");
    on.wait_until_ready();
    assert_eq!(on.ask("isuser:romeo:example.net"), "1");
    assert_eq!(on.hang_up().code(), Some(0));

    // `off` on Prosody's pty: left alone, echo on.
    let pty = spawn(&config, &["--pty", "off"], Terminal::Without, false, b"");
    write_all(pty.master(), b"isuser:romeo:example.net\n");
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n1\r\n") {
        seen.extend(pty.read_once());
    }
    assert!(pty
        .slave_termios()
        .local_modes
        .contains(rustix::termios::LocalModes::ECHO));
    assert_eq!(pty.hang_up().code(), Some(0));
}
