//! The circuit breaker (`backend[].breaker`) against a real HTTP server that blackholes
//! (accepts, reads the request, never answers) and is then switched back to answering: the
//! first `failures` logins each cost the backend's `request_timeout`, the following ones are
//! answered at once without reaching the server (alone, `0`; in a chain with
//! `on_unavailable = "next"`, by the users file below), and after `open_for` one probe finds
//! the backend back. A no and a 429 are answers, and never open it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::http_server::{FaultServer, Mode};
use common::*;

const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
const FAILURES: usize = 3;
const OPEN_FOR: Duration = Duration::from_millis(1500);
/// What an answer of an open breaker may take, reply over the pipe included.
const AT_ONCE: Duration = Duration::from_millis(5);

fn api(url: &str, failures: usize, open_for: Duration) -> String {
    format!(
        "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"{url}\"\n\
         connect_timeout = \"1s\"\nrequest_timeout = \"{}ms\"\n\
         breaker = {{ failures = {failures}, open_for = \"{}ms\" }}\n",
        REQUEST_TIMEOUT.as_millis(),
        open_for.as_millis()
    )
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let metrics = dir.join("m-{pid}.prom");
    fs::write(
        &path,
        format!(
            "timeout = \"2s\"\nmetrics_file = {metrics:?}\nmetrics_interval = \"50ms\"\n{body}"
        ),
    )
    .unwrap();
    path
}

/// A server that accepts, reads the request and never answers, and a directory for the rest.
fn blackhole() -> (FaultServer, tempfile::TempDir) {
    let server = FaultServer::start();
    server.set(Mode::Slow);
    (server, tempfile::tempdir().unwrap())
}

fn start(config: &Path) -> Live {
    Live::spawn(&["--config", config.to_str().unwrap()])
}

fn timed(bridge: &mut Live, query: &str, expected: &str) -> Duration {
    let started = Instant::now();
    let reply = bridge.ask(query);
    let took = started.elapsed();
    assert_eq!(reply, expected, "{query}");
    took
}

/// Waits until the metrics file of `bridge` exports `line`.
fn wait_for_metric(dir: &Path, bridge: &Live, line: &str) {
    let file = dir.join(format!("m-{}.prom", bridge.child.id()));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fs::read_to_string(&file).unwrap_or_default();
        if text.lines().any(|l| l.ends_with(line)) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `failures` logins that open the breaker: each waits the backend's request_timeout.
fn open_it(bridge: &mut Live, query: &str, expected: &str) {
    for _ in 0..FAILURES {
        let took = timed(bridge, query, expected);
        assert!(
            took >= REQUEST_TIMEOUT - Duration::from_millis(50) && took < Duration::from_secs(1),
            "a blackholed login took {took:?}, not about the request_timeout"
        );
    }
}

/// Asks `n` times while the breaker is open; every answer comes at once. Returns the times.
fn while_open(bridge: &mut Live, n: usize, query: &str, expected: &str) -> Vec<Duration> {
    let mut times: Vec<_> = (0..n).map(|_| timed(bridge, query, expected)).collect();
    times.sort();
    // The median must be under AT_ONCE; no single answer may come anywhere near a
    // request_timeout (a loaded test machine can delay one reply by a few ms).
    assert!(times[n / 2] < AT_ONCE, "open-breaker answers: {times:?}");
    assert!(
        times[n - 1] < REQUEST_TIMEOUT / 6,
        "open-breaker answers: {times:?}"
    );
    times
}

#[test]
fn a_blackholed_backend_is_cut_off_at_once_and_one_probe_brings_it_back() {
    let (server, dir) = blackhole();
    let config = write_config(dir.path(), &api(&server.url(), FAILURES, OPEN_FOR));
    let mut bridge = start(&config);
    wait_for_metric(dir.path(), &bridge, "backend=\"api\"} 0");

    let query = "auth:romeo:example.net:right";
    open_it(&mut bridge, query, "0\n");
    let opened = Instant::now();
    bridge.wait_for_log("circuit breaker open", Duration::from_secs(2));
    let reached = server.seen().len();
    assert_eq!(reached, FAILURES);
    while_open(&mut bridge, 20, query, "0\n");
    while_open(&mut bridge, 5, "isuser:romeo:example.net", "0\n");
    assert!(
        opened.elapsed() < OPEN_FOR,
        "the checks above outlasted open_for"
    );
    assert_eq!(server.seen().len(), reached, "an open breaker made a call");
    wait_for_metric(dir.path(), &bridge, "backend=\"api\"} 1");

    // The backend comes back; after open_for the next login is the probe, and succeeds.
    server.set(Mode::Good);
    std::thread::sleep(OPEN_FOR.saturating_sub(opened.elapsed()) + Duration::from_millis(50));
    let took = timed(&mut bridge, query, "1\n");
    assert!(took < REQUEST_TIMEOUT, "the probe took {took:?}");
    bridge.wait_for_log("circuit breaker half-open", Duration::from_secs(2));
    bridge.wait_for_log("circuit breaker closed", Duration::from_secs(2));
    wait_for_metric(dir.path(), &bridge, "backend=\"api\"} 0");
    timed(&mut bridge, "auth:romeo:example.net:wrong", "0\n");
    timed(&mut bridge, query, "1\n");
    assert_eq!(server.seen().len(), reached + 3);
}

#[test]
fn a_failed_probe_reopens_it_for_another_open_for() {
    let (server, dir) = blackhole();
    let open_for = Duration::from_millis(500);
    let config = write_config(dir.path(), &api(&server.url(), FAILURES, open_for));
    let mut bridge = start(&config);
    let query = "auth:romeo:example.net:right";
    open_it(&mut bridge, query, "0\n");
    std::thread::sleep(open_for + Duration::from_millis(50));
    // The probe hangs like the rest and costs its request_timeout; the breaker is open again.
    let took = timed(&mut bridge, query, "0\n");
    assert!(
        took >= REQUEST_TIMEOUT - Duration::from_millis(50),
        "{took:?}"
    );
    while_open(&mut bridge, 10, query, "0\n");
    assert_eq!(server.seen().len(), FAILURES + 1);
}

#[test]
fn in_a_chain_the_users_file_below_answers_at_once_while_it_is_open() {
    let (server, dir) = blackhole();
    let users = users_file(dir.path(), &[("romeo@example.net", "fromfile")]);
    let body = format!(
        "{}[[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n\
         [[route]]\ndomains = [\"example.net\"]\nbackends = [\"api\", \"users\"]\n\
         on_unavailable = \"next\"\n",
        api(&server.url(), FAILURES, Duration::from_secs(60))
    );
    let config = write_config(dir.path(), &body);
    let mut bridge = start(&config);
    let query = "auth:romeo:example.net:fromfile";
    open_it(&mut bridge, query, "1\n");
    bridge.wait_for_log("circuit breaker open", Duration::from_secs(2));
    while_open(&mut bridge, 20, query, "1\n");
    // A wrong password is still a no from the file, at once.
    while_open(&mut bridge, 5, "auth:romeo:example.net:wrong", "0\n");
    assert_eq!(server.seen().len(), FAILURES);
}

#[test]
fn a_no_and_a_rate_limit_are_answers_and_never_open_it() {
    let server = FaultServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &api(&server.url(), 2, Duration::from_secs(60)));
    let mut bridge = start(&config);
    for _ in 0..4 {
        timed(&mut bridge, "auth:romeo:example.net:wrong", "0\n");
    }
    server.set(Mode::RateLimited);
    for _ in 0..4 {
        timed(&mut bridge, "auth:romeo:example.net:right", "0\n");
    }
    server.set(Mode::Good);
    timed(&mut bridge, "auth:romeo:example.net:right", "1\n");
    // Every request reached the server: the breaker never opened.
    assert_eq!(server.seen().len(), 9);
    // 503s do open it: the same count of them, and the server is no longer asked.
    server.set(Mode::ServerError);
    for _ in 0..2 {
        timed(&mut bridge, "auth:romeo:example.net:right", "0\n");
    }
    server.set(Mode::Good);
    timed(&mut bridge, "auth:romeo:example.net:right", "0\n");
    assert_eq!(server.seen().len(), 11);
}

#[test]
fn check_shows_the_breaker_setting_and_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "x")]);
    let config = dir.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n\
             breaker = {{ open_for = \"30s\" }}\n"
        ),
    )
    .unwrap();
    let out = run(&["--config", config.to_str().unwrap(), "check"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("users: open for 30s after 5 consecutive outage(s)"),
        "{text}"
    );
    assert!(
        text.contains("; circuit breaker closed (opens for 30s after 5"),
        "{text}"
    );
}

#[test]
fn a_call_the_request_deadline_cancels_counts_as_an_outage() {
    // The backend's own timeout is longer than the request deadline: the deadline cancels
    // the call mid-flight, and that is an outage too (the backend did not answer in time).
    let (server, dir) = blackhole();
    let path = dir.path().join("config.toml");
    fs::write(
        &path,
        format!(
            "timeout = \"400ms\"\n[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"{}\"\n\
             request_timeout = \"10s\"\nbreaker = {{ failures = 2, open_for = \"60s\" }}\n",
            server.url()
        ),
    )
    .unwrap();
    let mut bridge = start(&path);
    for _ in 0..2 {
        let took = timed(&mut bridge, "auth:romeo:example.net:right", "0\n");
        assert!(took >= Duration::from_millis(350), "{took:?}");
    }
    bridge.wait_for_log("circuit breaker open", Duration::from_secs(2));
    while_open(&mut bridge, 10, "auth:romeo:example.net:right", "0\n");
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn stale_if_error_serves_the_cache_at_once_while_it_is_open() {
    let server = FaultServer::start();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[cache]\nenabled = true\nttl = \"100ms\"\nstale_if_error = \"1h\"\n{}",
        api(&server.url(), FAILURES, Duration::from_secs(60))
    );
    let config = write_config(dir.path(), &body);
    let mut bridge = start(&config);
    let query = "auth:romeo:example.net:right";
    timed(&mut bridge, query, "1\n");
    server.set(Mode::Slow);
    std::thread::sleep(Duration::from_millis(150));
    // Past ttl: each login asks the API, waits its request_timeout, and is served stale.
    open_it(&mut bridge, query, "1\n");
    bridge.wait_for_log("circuit breaker open", Duration::from_secs(2));
    while_open(&mut bridge, 20, query, "1\n");
    // Only what was remembered: another password is still refused, at once.
    while_open(&mut bridge, 5, "auth:romeo:example.net:other", "0\n");
    assert_eq!(server.seen().len(), 1 + FAILURES);
}
