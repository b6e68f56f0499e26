//! Signals and lifecycle (SPEC §2, issue 5): SIGTERM/SIGINT finish the request in hand,
//! answer it and exit 0; SIGHUP reloads the configuration (a bad one keeps the old); a closed
//! stdout ends the process quietly with status 0.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn config(dir: &Path, users: &Path) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    write_config(&path, users);
    path
}

fn write_config(path: &Path, users: &Path) {
    write_config_with(path, users, "20s", "debug");
}

fn write_config_with(path: &Path, users: &Path, timeout: &str, level: &str) {
    write_config_full(path, users, timeout, level, "");
}

/// `top` goes first, among the top-level keys.
fn write_config_full(path: &Path, users: &Path, timeout: &str, level: &str, top: &str) {
    // Written next to the target and renamed: the bridge never reads a half-written file.
    let tmp = path.with_extension("tmp");
    fs::write(
        &tmp,
        format!(
            "{top}timeout = {timeout:?}\n[log]\nformat = \"json\"\nlevel = {level:?}\n\
             [[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n"
        ),
    )
    .unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn stop_signals_finish_the_request_in_hand_then_exit_zero() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let users = users_file(dir.path(), &[("romeo@example.net", "old")]);
        let config = config(dir.path(), &users);
        let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
        bridge.wait_for_log("started", Duration::from_secs(10));

        let lock = hold_write_lock(&users);
        bridge.send(b"setpass:romeo:example.net:new\n");
        std::thread::sleep(Duration::from_millis(300));
        bridge.signal(signal);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            bridge.child.try_wait().unwrap().is_none(),
            "exited with a request in hand"
        );
        // The other writer finishes; the request completes and is answered after the signal.
        drop(lock);
        let reply = bridge.read_exact_within(2, Duration::from_secs(10));
        assert_eq!(reply, b"1\n", "signal {signal}");
        let (status, _) = bridge.wait_within(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "signal {signal}");
        let text = fs::read_to_string(&users).unwrap();
        assert!(
            !text.contains(&cheap_hash("old")),
            "the password was changed"
        );
    }
}

#[test]
fn stop_signal_while_idle_exits_zero_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let config = config(dir.path(), &users);
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");
    let started = Instant::now();
    bridge.signal(libc::SIGTERM);
    let (status, _) = bridge.wait_within(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn sighup_reloads_and_a_bad_config_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = users_file(dir.path(), &[("romeo@example.net", "first")]);
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let second = users_file(&other, &[("romeo@example.net", "second")]);
    let config = config(dir.path(), &first);
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    assert_eq!(bridge.ask("auth:romeo:example.net:first"), "1\n");

    write_config(&config, &second);
    bridge.signal(libc::SIGHUP);
    bridge.wait_for_log("configuration reloaded", Duration::from_secs(10));
    assert_eq!(bridge.ask("auth:romeo:example.net:first"), "0\n");
    assert_eq!(bridge.ask("auth:romeo:example.net:second"), "1\n");

    fs::write(
        &config,
        "[[backend]]\nname = \"users\"\ntype = \"nonsense\"\n",
    )
    .unwrap();
    bridge.signal(libc::SIGHUP);
    let seen = bridge.wait_for_log("reload failed", Duration::from_secs(10));
    let line = seen.last().unwrap();
    assert!(line.contains("config.toml"), "names the file: {line}");
    assert_eq!(bridge.ask("auth:romeo:example.net:second"), "1\n");

    bridge.close_stdin();
    let (status, _) = bridge.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sighup_applies_a_new_timeout_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let config = dir.path().join("config.toml");
    write_config_with(&config, &users, "30s", "debug");
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    bridge.wait_for_log("started", Duration::from_secs(10));
    // A setpass waiting for the users file's lock is a request as slow as we like.
    let slow = |bridge: &mut Live| bridge.send(b"setpass:romeo:example.net:new\n");

    // 30 s: still waiting long after a 1 s deadline, answered once the lock is free.
    let lock = hold_write_lock(&users);
    slow(&mut bridge);
    assert!(bridge.silent_for(Duration::from_secs(3)), "answered early");
    drop(lock);
    assert_eq!(bridge.read_exact_within(2, Duration::from_secs(10)), b"1\n");

    // 1 s from the reload on. The protocol changed too: that needs a restart (the codec
    // may have committed to a framing); the log level does not.
    write_config_full(&config, &users, "1s", "trace", "protocol = \"line\"\n");
    bridge.signal(libc::SIGHUP);
    let seen = bridge.wait_for_log("configuration reloaded", Duration::from_secs(10));
    let restart = seen.iter().find(|l| l.contains("needs a restart"));
    assert!(
        restart.is_some_and(|l| l.contains("protocol") && !l.contains("log.level")),
        "{seen:#?}"
    );
    let lock = hold_write_lock(&users);
    let started = Instant::now();
    slow(&mut bridge);
    assert_eq!(bridge.read_exact_within(2, Duration::from_secs(10)), b"0\n");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    drop(lock);

    // And back to 30 s.
    write_config_with(&config, &users, "30s", "debug");
    bridge.signal(libc::SIGHUP);
    bridge.wait_for_log("configuration reloaded", Duration::from_secs(10));
    let lock = hold_write_lock(&users);
    slow(&mut bridge);
    assert!(bridge.silent_for(Duration::from_secs(3)), "answered early");
    drop(lock);
    assert_eq!(bridge.read_exact_within(2, Duration::from_secs(10)), b"1\n");

    bridge.close_stdin();
    let (status, _) = bridge.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sighup_starts_the_metrics_file_named_by_the_new_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let config = config(dir.path(), &users);
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");

    let metrics = dir.path().join("bridge.prom");
    let text = fs::read_to_string(&config).unwrap();
    let with_metrics = format!("metrics_file = {metrics:?}\nmetrics_interval = \"100ms\"\n{text}");
    fs::write(&config, with_metrics).unwrap();
    bridge.signal(libc::SIGHUP);
    let seen = bridge.wait_for_log("configuration reloaded", Duration::from_secs(10));
    // The replaced exporter's last summary: the process carries on, so not "at exit".
    assert!(
        seen.iter().any(|l| l.contains("summary before a reload"))
            && !seen.iter().any(|l| l.contains("summary at exit")),
        "{seen:?}"
    );
    assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&metrics).is_ok_and(|m| m.contains("outcome=\"yes\"")) {
        assert!(
            Instant::now() < deadline,
            "no metrics file after the reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn closed_stdout_exits_zero_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let config = config(dir.path(), &users);
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    let mut seen = bridge.wait_for_log("started", Duration::from_secs(10));
    bridge.close_stdout();
    bridge.send(b"auth:romeo:example.net:pw\nauth:romeo:example.net:pw\n");
    let (status, rest) = bridge.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{rest:#?}");
    seen.extend(rest);
    // Nothing on stderr but log lines (JSON, one per line): no panic, no stray message.
    for line in &seen {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a log line: {line}");
    }
}

#[test]
fn sighup_applies_a_new_log_level_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let config = dir.path().join("config.toml");
    write_config_with(&config, &users, "20s", "warn");
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    // At `warn` a login's line (info) is not written.
    assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");
    assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");

    write_config_with(&config, &users, "20s", "info");
    bridge.signal(libc::SIGHUP);
    // Logged under the new level: the reload line is the first thing to appear at all.
    let seen = bridge.wait_for_log("configuration reloaded", Duration::from_secs(10));
    assert!(
        !seen.iter().any(|l| l.contains("\"outcome\":\"yes\"")),
        "logged at warn: {seen:#?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("needs a restart")),
        "{seen:#?}"
    );
    assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");
    let seen = bridge.wait_for_log("\"outcome\":\"yes\"", Duration::from_secs(10));
    assert!(seen.last().unwrap().contains("romeo"), "{seen:#?}");

    bridge.close_stdin();
    let (status, _) = bridge.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

/// SPEC §10, "nothing blocks past the deadline": a reload whose secret file blocks (a FIFO
/// nobody writes yet) is prepared off the request thread. Requests keep being answered, within
/// the deadline, with the running configuration; once the FIFO is written the reload
/// completes and applies.
#[test]
fn a_reload_stuck_on_a_secret_file_never_delays_a_reply() {
    let dir = tempfile::tempdir().unwrap();
    let first = users_file(dir.path(), &[("romeo@example.net", "first")]);
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let second = users_file(&other, &[("romeo@example.net", "second")]);
    let config = dir.path().join("config.toml");
    write_config_with(&config, &first, "1s", "debug");
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    assert_eq!(bridge.ask("auth:romeo:example.net:first"), "1\n");

    let fifo = dir.path().join("credentials");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path in our own temporary directory.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // The users file first (it answers), then an API whose credentials come from the FIFO.
    write_config_with(&config, &second, "1s", "debug");
    let api = format!(
        "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://127.0.0.1:9\"\n\
         credentials_file = {fifo:?}\n"
    );
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{text}{api}")).unwrap();
    bridge.signal(libc::SIGHUP);

    // Opening the FIFO blocks until a writer comes: meanwhile, every reply within 1 s.
    let until = Instant::now() + Duration::from_secs(3);
    let mut asked = 0;
    while Instant::now() < until {
        let started = Instant::now();
        bridge.send(b"auth:romeo:example.net:first\n");
        let reply = bridge.read_exact_within(2, Duration::from_secs(1));
        assert_eq!(reply, b"1\n", "the running configuration answers");
        assert!(started.elapsed() < Duration::from_secs(1));
        asked += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(asked > 10);
    // A second SIGHUP while the first is stuck says so, and blocks nothing either.
    bridge.signal(libc::SIGHUP);
    bridge.wait_for_log("still being prepared", Duration::from_secs(5));
    assert_eq!(bridge.ask("auth:romeo:example.net:first"), "1\n");

    // The writer comes (the bridge is the reader waiting at the other end).
    let mut writer = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer.is_none() && Instant::now() < deadline {
        use std::os::unix::fs::OpenOptionsExt;
        writer = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .ok();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut writer = writer.expect("the reload opened the FIFO");
    std::io::Write::write_all(&mut writer, b"bridge:api-secret\n").unwrap();
    drop(writer);
    bridge.wait_for_log("configuration reloaded", Duration::from_secs(10));
    assert_eq!(bridge.ask("auth:romeo:example.net:first"), "0\n");
    assert_eq!(bridge.ask("auth:romeo:example.net:second"), "1\n");

    bridge.close_stdin();
    let (status, rest) = bridge.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(!rest.iter().any(|l| l.contains("api-secret")), "{rest:#?}");
}
