//! The bridge driven through a real pseudo-terminal, the way Prosody's lpty drives it
//! (SPEC §2); the harness is in `common/pty.rs`.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use common::pty::{
    openpty, readable, socket_inode, spawn, spawn_env, wait_with_timeout, write_all, PtyChild,
    Terminal,
};
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

/// What pty mode must give Prosody, once ready: a raw reply (exactly `1\n`, no `\r` added:
/// OPOST off) and nothing else (no logs); no inherited descriptor left open, neither the
/// socket nor Prosody's end of the pty (the child must be spawned with `leak_master`).
fn assert_raw_replies_and_no_inherited_fds(pty: &PtyChild) {
    write_all(pty.master(), b"isuser:romeo:example.net\n");
    assert_eq!(pty.read_once(), b"1\n");
    assert!(
        !readable(pty.master(), Duration::from_millis(300)),
        "something other than replies came out of the pty"
    );
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

    assert_raw_replies_and_no_inherited_fds(&pty);

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

#[test]
fn panics_never_reach_the_pty_and_the_next_reply_is_right() {
    // The debug-build-only trigger (server.rs, tests/panics.rs): user `panic-STAGE`.
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the panic trigger exists in debug builds only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bridge.log");
    let users = users_file(
        dir.path(),
        &[
            ("romeo@example.net", "right-r0meo"),
            ("panic-decode@example.net", "s3cret-decode"),
            ("panic-handle@example.net", "s3cret-handle"),
            ("panic-log@example.net", "s3cret-log"),
            ("panic-encode@example.net", "s3cret-encode"),
        ],
    );
    let config = dir.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[log]\nlevel = \"trace\"\nfile = {log:?}\n\n\
             [[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n"
        ),
    )
    .unwrap();
    let env = [("EXTAUTH_BRIDGE_TEST_PANICS", "1")];
    // A query waits at start-up, so "ready" also means "drained" (see pty_off_…).
    let waiting = b"isuser:romeo:example.net\n";
    let mut pty = spawn_env(&config, &[], &env, Terminal::Without, true, waiting);
    assert_eq!(pty.reply(), "isuser:romeo:example.net");
    pty.wait_until_ready();
    for stage in ["decode", "handle", "log", "encode"] {
        // The account exists and the password is right: only the panic makes it `0`.
        let query = format!("auth:panic-{stage}:example.net:s3cret-{stage}");
        assert_eq!(pty.ask(&query), "0", "{stage}");
        assert_eq!(
            pty.ask("auth:romeo:example.net:right-r0meo"),
            "1",
            "{stage}"
        );
        assert_eq!(pty.ask("auth:romeo:example.net:wrong"), "0", "{stage}");
    }
    // Exactly the replies came out: no panic message, no log line.
    write_all(pty.master(), b"isuser:romeo:example.net\n");
    assert_eq!(pty.read_once(), b"1\n");
    assert!(
        !readable(pty.master(), Duration::from_millis(300)),
        "something other than replies came out of the pty"
    );

    // A panic before the decoder took a frame: the process ends cleanly (Prosody restarts
    // it on the next query), without a word on the pty.
    write_all(pty.master(), b"panic-framing\nisuser:romeo:example.net\n");
    let status = wait_with_timeout(&mut pty.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        !readable(pty.master(), Duration::from_millis(200)),
        "written to the pty: {:?}",
        String::from_utf8_lossy(&pty.read_once())
    );

    let log = fs::read_to_string(&log).unwrap();
    // Four request panics and the framing one, each message withheld.
    assert_eq!(log.matches("withheld").count(), 5, "{log}");
    assert!(log.contains("its end is unknown"), "{log}");
    for stage in ["decode", "handle", "log", "encode"] {
        assert!(!log.contains(&format!("s3cret-{stage}")), "{log}");
    }
}

#[test]
fn pty_on_in_the_config_file_works_like_the_flag() {
    // Read from the file, `on` is known only after the configuration: the late path in
    // app.rs (close inherited descriptors, keep panics off the pty, raw mode, drain).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bridge.log");
    let config = setup(dir.path(), &log, "auto");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("pty = \"on\"\n{text}")).unwrap();
    // At a terminal that is its controlling one, `auto` would keep echo (see
    // an_admin_at_a_terminal_keeps_echo): only the file's `on` makes this pty mode. The
    // leaked master would keep the pty open forever unless pty mode closes it.
    let pty = spawn(
        &config,
        &[],
        Terminal::ThisPty,
        true,
        b"auth:romeo:example.net:right-r0meo\n",
    );
    assert_eq!(pty.reply(), "auth:romeo:example.net:right-r0meo");
    pty.wait_until_ready();
    assert_eq!(pty.ask("auth:romeo:example.net:wrong"), "0");
    assert_eq!(pty.ask("auth:romeo:example.net:right-r0meo"), "1");
    assert_raw_replies_and_no_inherited_fds(&pty);
    assert_eq!(pty.hang_up().code(), Some(0));
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("discarded the queries waiting at start-up"),
        "{log}"
    );
}
