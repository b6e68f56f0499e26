//! The credential cache through the real binary, talked to one request at a time as ejabberd
//! does: hits are visible in the log line (`outcome="cached"`), a password change evicts.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

use common::*;

/// A bridge process driven in lock-step over pipes with ejabberd framing.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    log: BufReader<ChildStderr>,
}

impl Session {
    fn start(config: &std::path::Path) -> Session {
        let mut child = Command::new(BIN)
            .args([
                "--config",
                config.to_str().unwrap(),
                "--protocol",
                "ejabberd",
            ])
            .env_remove("EXTAUTH_BRIDGE_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Session {
            stdin: child.stdin.take().unwrap(),
            stdout: child.stdout.take().unwrap(),
            log: BufReader::new(child.stderr.take().unwrap()),
            child,
        }
    }

    /// Sends one request, returns the answer and the outcome word from its log line.
    fn ask(&mut self, payload: &str) -> (bool, String) {
        self.stdin.write_all(&frame(payload)).unwrap();
        let mut reply = [0u8; 4];
        self.stdout.read_exact(&mut reply).unwrap();
        assert!(reply == YES || reply == NO, "{reply:?}");
        let outcome = loop {
            let mut line = String::new();
            assert!(self.log.read_line(&mut line).unwrap() > 0, "log ended");
            if let Some(rest) = line.split(" outcome=\"").nth(1) {
                break rest.split('"').next().unwrap().to_owned();
            }
        };
        (reply == YES, outcome)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration with `head` (e.g. a `[cache]` table) and one users-file backend.
fn config_file(dir: &std::path::Path, head: &str, users: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("c.toml");
    let backend = format!("[[backend]]\nname = \"local\"\ntype = \"file\"\npath = {users:?}\n");
    std::fs::write(&config, format!("{head}{backend}")).unwrap();
    config
}

#[test]
fn hits_and_eviction_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(
        dir.path(),
        &[
            ("romeo@example.net", "secret"),
            ("juliet@example.net", "nightingale"),
        ],
    );
    let config = config_file(
        dir.path(),
        "[cache]\nenabled = true\nttl = \"10m\"\n",
        &users,
    );
    let mut s = Session::start(&config);
    assert_eq!(s.ask("auth:romeo:example.net:secret"), (true, "yes".into()));
    assert_eq!(
        s.ask("auth:romeo:example.net:secret"),
        (true, "cached".into())
    );
    assert_eq!(s.ask("auth:romeo:example.net:wrong"), (false, "no".into()));
    assert_eq!(s.ask("auth:romeo:example.net:wrong"), (false, "no".into()));
    assert_eq!(
        s.ask("auth:juliet:example.net:nightingale"),
        (true, "yes".into())
    );
    assert_eq!(s.ask("setpass:romeo:example.net:new"), (true, "yes".into()));
    assert_eq!(s.ask("auth:romeo:example.net:secret"), (false, "no".into()));
    assert_eq!(s.ask("auth:romeo:example.net:new"), (true, "yes".into()));
    assert_eq!(s.ask("auth:romeo:example.net:new"), (true, "cached".into()));
    assert_eq!(
        s.ask("auth:juliet:example.net:nightingale"),
        (true, "cached".into())
    );
    assert_eq!(s.ask("removeuser:romeo:example.net"), (true, "yes".into()));
    assert_eq!(s.ask("auth:romeo:example.net:new"), (false, "no".into()));
}

#[test]
fn cache_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "secret")]);
    let config = config_file(dir.path(), "", &users);
    let mut s = Session::start(&config);
    assert_eq!(s.ask("auth:romeo:example.net:secret"), (true, "yes".into()));
    assert_eq!(s.ask("auth:romeo:example.net:secret"), (true, "yes".into()));
}

#[test]
fn cache_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[cache]\nenabled = true\nttl = \"0s\"\n").unwrap();
    let out = run(&["--config", config.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key `cache.ttl`"));
    std::fs::write(&config, "[cache]\nenable = true\n").unwrap();
    let out = run(&["--config", config.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cache.enable"),
        "{out:?}"
    );
}
