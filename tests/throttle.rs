//! Failure throttling through the real binary over pipes, against a real HTTP backend that
//! counts the requests it gets, and a users file for password changes: after `max_failures`
//! distinct wrong passwords the next ones never reach the backend, a trusted password still
//! logs in, an unverified right one is refused, a repeated wrong password is sent once, and
//! an outage never locks.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http_server::{FaultServer, Mode};
use common::*;

/// A bridge in line mode whose every answer is read with the outcome word of its log line.
struct Bridge {
    live: Live,
    /// Every log line so far.
    log: Vec<String>,
}

impl Bridge {
    fn start(config: &Path) -> Bridge {
        let config = config.to_str().unwrap();
        let live = Live::spawn(&["--config", config, "--protocol", "line"]);
        Bridge {
            live,
            log: Vec::new(),
        }
    }

    /// `(answer, outcome)` of one request.
    fn ask(&mut self, query: &str) -> (bool, String) {
        let reply = self.live.ask(query);
        let lines = self.live.wait_for_log(" outcome=", Duration::from_secs(10));
        self.log.extend(lines);
        let line = self.log.last().unwrap();
        let outcome = line.split(" outcome=").nth(1).unwrap();
        let outcome = outcome.trim_start_matches('"').split(['"', ' ']).next();
        (reply == "1\n", outcome.unwrap().to_owned())
    }

    fn auth(&mut self, user: &str, password: &str) -> (bool, String) {
        self.ask(&format!("auth:{user}:example.net:{password}"))
    }
}

fn config(dir: &Path, backend: &str) -> PathBuf {
    let path = dir.join("bridge.toml");
    let text = format!("[throttle]\nenabled = true\nmax_failures = 3\n\n[[backend]]\n{backend}");
    std::fs::write(&path, text).unwrap();
    path
}

fn http(server: &FaultServer) -> String {
    format!(
        "name = \"api\"\ntype = \"http\"\nurl = {:?}\n",
        server.url()
    )
}

/// Password checks the API received.
fn checks(server: &FaultServer) -> usize {
    server
        .seen()
        .iter()
        .filter(|l| l.contains("/check_password"))
        .count()
}

fn yes() -> (bool, String) {
    (true, "yes".into())
}

fn word(w: &str) -> (bool, String) {
    (false, w.into())
}

#[test]
fn guesses_stop_reaching_the_backend_but_the_owner_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let api = FaultServer::start();
    let mut b = Bridge::start(&config(dir.path(), &http(&api)));
    assert_eq!(b.auth("romeo", "right"), yes());
    for guess in ["w1", "w2", "w3"] {
        assert_eq!(b.auth("romeo", guess), word("no"));
    }
    assert_eq!(checks(&api), 4);
    let locked: Vec<_> = b
        .log
        .iter()
        .filter(|l| l.contains("account locked"))
        .collect();
    assert_eq!(locked.len(), 1, "{:#?}", b.log);
    assert!(
        locked[0].contains("WARN") && locked[0].contains("lockout_s=300"),
        "{locked:?}"
    );
    for guess in ["w4", "w5", "w6", "w7", "w8", "w1"] {
        assert_eq!(b.auth("romeo", guess), word("throttled"));
    }
    assert_eq!(checks(&api), 4, "a throttled guess reached the backend");
    // The owner's password, verified before the lockout, is still checked, and logs in.
    assert_eq!(b.auth("romeo", "right"), yes());
    assert_eq!(checks(&api), 5);
    // An account whose right password was never verified here: refused unseen.
    for guess in ["w1", "w2", "w3"] {
        assert_eq!(b.auth("juliet", guess), word("no"));
    }
    assert_eq!(b.auth("juliet", "right"), word("throttled"));
    assert_eq!(checks(&api), 8);
}

#[test]
fn a_repeated_wrong_password_is_sent_once_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let api = FaultServer::start();
    let mut b = Bridge::start(&config(dir.path(), &http(&api)));
    assert_eq!(b.auth("romeo", "stale"), word("no"));
    for _ in 0..10 {
        assert_eq!(b.auth("romeo", "stale"), word("repeated"));
    }
    assert_eq!(checks(&api), 1);
    // Counted once: one more distinct failure does not lock (max_failures = 3).
    assert_eq!(b.auth("romeo", "other"), word("no"));
    assert_eq!(b.auth("romeo", "right"), yes());
    assert_eq!(checks(&api), 3);
}

#[test]
fn an_outage_never_locks() {
    let dir = tempfile::tempdir().unwrap();
    let api = FaultServer::start();
    let mut b = Bridge::start(&config(dir.path(), &http(&api)));
    api.set(Mode::ServerError);
    for i in 0..10 {
        assert_eq!(b.auth("romeo", &format!("w{i}")), word("unavailable"));
    }
    assert_eq!(checks(&api), 10);
    // Nor does an empty password, which no backend is asked about.
    for _ in 0..5 {
        assert_eq!(b.auth("romeo", ""), word("refused"));
    }
    api.set(Mode::Good);
    // Nothing was counted or remembered: the same passwords are asked again.
    assert_eq!(b.auth("romeo", "w0"), word("no"));
    assert_eq!(b.auth("romeo", "right"), yes());
    assert_eq!(checks(&api), 12);
}

#[test]
fn a_password_change_outdates_trust_and_remembered_failures() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(
        dir.path(),
        &[
            ("romeo@example.net", "secret"),
            ("juliet@example.net", "nightingale"),
        ],
    );
    let backend = format!("name = \"local\"\ntype = \"file\"\npath = {users:?}\n");
    let mut b = Bridge::start(&config(dir.path(), &backend));
    // A password remembered as wrong becomes the right one: asked again after setpass.
    assert_eq!(b.auth("juliet", "lark"), word("no"));
    assert_eq!(b.auth("juliet", "lark"), word("repeated"));
    assert_eq!(b.ask("setpass:juliet:example.net:lark"), yes());
    assert_eq!(b.auth("juliet", "lark"), yes());
    // A trusted password stops being trusted once it is changed.
    assert_eq!(b.auth("romeo", "secret"), yes());
    assert_eq!(b.ask("setpass:romeo:example.net:changed"), yes());
    for guess in ["w1", "w2", "w3"] {
        assert_eq!(b.auth("romeo", guess), word("no"));
    }
    assert_eq!(b.auth("romeo", "secret"), word("throttled"));
}

#[test]
fn check_shows_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "secret")]);
    let backend = format!("name = \"local\"\ntype = \"file\"\npath = {users:?}\n");
    let config = config(dir.path(), &backend);
    let out = run(&["--config", config.to_str().unwrap(), "check"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("throttle"))
        .unwrap_or_else(|| panic!("no throttle line in:\n{text}"));
    assert!(line.contains("ok"), "{line}");
    for part in [
        "3 distinct wrong passwords within 15m",
        "for 5m",
        "up to 1h",
        "7days",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    // Off: no line at all.
    std::fs::write(&config, format!("[[backend]]\n{backend}")).unwrap();
    let out = run(&["--config", config.to_str().unwrap(), "check"], b"");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("throttle"));
}
