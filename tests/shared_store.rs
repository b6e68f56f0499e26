//! `[shared]` through the real binary against a private `redis-server`: two bridge
//! processes (two nodes) share positive answers and see each other's password changes; the
//! store expiring, crashing, being unreachable or slow never changes an answer nor makes
//! one late; `rediss://` with a test CA; `check` and `generate shared-key`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::http_server::FaultServer;
use common::redis::{free_port, RedisServer, Tls, PASSWORD};
use common::*;

/// Writes the shared key (the same for every node) and the store's password file.
fn secrets(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("shared.key");
    if !key.exists() {
        std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
        std::fs::write(dir.join("store.pw"), format!("{PASSWORD}\n")).unwrap();
    }
    (key, dir.join("store.pw"))
}

/// A config with the cache on, `[shared]` at `url` (plus `extra` lines), and `backend`.
fn config(dir: &Path, name: &str, url: &str, extra: &str, ttl: &str, backend: &str) -> PathBuf {
    let (key, pw) = secrets(dir);
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[cache]\nenabled = true\nttl = \"{ttl}\"\n\
             [shared]\nurl = \"{url}\"\nkey_file = {key:?}\npassword_file = {pw:?}\n{extra}\n\
             {backend}"
        ),
    )
    .unwrap();
    path
}

fn file_backend(users: &Path) -> String {
    format!("[[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n")
}

fn http_backend(api: &FaultServer) -> String {
    format!(
        "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"{}\"\n",
        api.url()
    )
}

/// A bridge process and every log line it wrote so far.
struct Node {
    live: Live,
    log: Vec<String>,
}

impl Node {
    fn logged(&self, needle: &str) -> usize {
        self.log.iter().filter(|l| l.contains(needle)).count()
    }
}

fn bridge(config: &Path) -> Node {
    Node {
        live: Live::spawn(&["--config", config.to_str().unwrap(), "--protocol", "line"]),
        log: Vec::new(),
    }
}

/// Asks one line-protocol question: the answer, the outcome word of its log line, and how
/// long the answer took.
fn ask(node: &mut Node, query: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    let reply = node.live.ask(query);
    let took = started.elapsed();
    let lines = node.live.wait_for_log(" command=", Duration::from_secs(5));
    let line = lines.last().unwrap().clone();
    assert!(lines.iter().all(|l| !l.contains(PASSWORD)), "{lines:?}");
    node.log.extend(lines);
    let outcome = line
        .split(" outcome=")
        .nth(1)
        .unwrap()
        .trim_start_matches('"')
        .split(['"', ' '])
        .next()
        .unwrap()
        .to_owned();
    (reply == "1\n", outcome, took)
}

fn answer(node: &mut Node, query: &str) -> (bool, String) {
    let (yes, outcome, _) = ask(node, query);
    (yes, outcome)
}

/// Two nodes over a fresh store and one users file holding romeo (password `secret`),
/// the cache on, and `extra` (e.g. [`THROTTLE`]).
fn romeo_on_two_nodes(extra: &str) -> (tempfile::TempDir, RedisServer, Node, Node) {
    let (dir, store, cfg) = romeo_config(extra);
    let (a, b) = (bridge(&cfg), bridge(&cfg));
    (dir, store, a, b)
}

/// A fresh store, a users file holding romeo (password `secret`), and the config over both.
fn romeo_config(extra: &str) -> (tempfile::TempDir, RedisServer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedisServer::start(dir.path());
    let users = users_file(dir.path(), &[("romeo@example.net", "secret")]);
    let backend = file_backend(&users);
    let cfg = config(dir.path(), "c.toml", &store.url(), extra, "10m", &backend);
    (dir, store, cfg)
}

/// Two nodes over a fresh store and an HTTP API (password `right`), the cache on with `ttl`.
fn two_nodes_over_an_api(ttl: &str) -> (tempfile::TempDir, RedisServer, FaultServer, Node, Node) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedisServer::start(dir.path());
    let api = FaultServer::start();
    let backend = http_backend(&api);
    let cfg = config(dir.path(), "c.toml", &store.url(), "", ttl, &backend);
    let (a, b) = (bridge(&cfg), bridge(&cfg));
    (dir, store, api, a, b)
}

/// Asks, and checks the answer and its outcome word.
fn expect(node: &mut Node, query: &str, yes: bool, outcome: &str) {
    assert_eq!(answer(node, query), (yes, outcome.to_owned()), "{query}");
}

fn calls(api: &FaultServer) -> usize {
    api.seen().len()
}

#[test]
fn a_yes_learnt_by_one_node_serves_the_other_without_a_backend_call() {
    let (_dir, store, api, mut a, mut b) = two_nodes_over_an_api("10m");
    expect(&mut a, "auth:romeo:example.net:right", true, "yes");
    let before = calls(&api);
    expect(
        &mut b,
        "auth:romeo:example.net:right",
        true,
        "cached_shared",
    );
    assert_eq!(
        calls(&api),
        before,
        "a shared hit must not call the backend"
    );
    // A wrong password is never served from the store.
    expect(&mut b, "auth:romeo:example.net:wrong", false, "no");
    assert_eq!(calls(&api), before + 1);
    // Nothing stored names the user or holds the password, and every key expires.
    let keys = store.cli(&["--scan"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(
        keys.iter().any(|k| k.starts_with("extauth-bridge:cache:")),
        "{keys:?}"
    );
    for key in &keys {
        assert!(!key.contains("romeo") && !key.contains("right"), "{key}");
        let ttl: i64 = store.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
        let dump = store.cli(&["HGETALL", key]);
        assert!(!dump.contains("romeo") && !dump.contains("right"), "{dump}");
    }
}

#[test]
fn a_setpass_through_one_node_refuses_the_old_password_on_the_other_at_once() {
    let (_dir, _store, mut a, mut b) = romeo_on_two_nodes("");
    expect(&mut b, "auth:romeo:example.net:secret", true, "yes");
    expect(
        &mut b,
        "auth:romeo:example.net:secret",
        true,
        "cached_shared",
    );
    expect(&mut a, "setpass:romeo:example.net:new", true, "yes");
    expect(&mut b, "auth:romeo:example.net:secret", false, "no");
    expect(&mut b, "auth:romeo:example.net:new", true, "yes");
    expect(&mut a, "auth:romeo:example.net:new", true, "cached_shared");
    expect(&mut b, "removeuser:romeo:example.net", true, "yes");
    expect(&mut a, "auth:romeo:example.net:new", false, "no");
}

#[test]
fn entries_expire_with_the_cache_ttl() {
    let (_dir, store, _api, mut a, mut b) = two_nodes_over_an_api("1s");
    expect(&mut a, "auth:romeo:example.net:right", true, "yes");
    expect(
        &mut b,
        "auth:romeo:example.net:right",
        true,
        "cached_shared",
    );
    std::thread::sleep(Duration::from_millis(1300));
    expect(&mut b, "auth:romeo:example.net:right", true, "yes");
    // The hash itself is gone from the store within its lifetime too.
    std::thread::sleep(Duration::from_millis(1300));
    assert!(!store.cli(&["--scan"]).contains(":cache:"));
}

#[test]
fn a_store_killed_and_restarted_is_used_again_without_a_restart() {
    let (_dir, mut store, _api, mut a, mut b) = two_nodes_over_an_api("10m");
    expect(&mut a, "auth:romeo:example.net:right", true, "yes");
    store.kill();
    for _ in 0..3 {
        let (yes, _, took) = ask(&mut b, "auth:romeo:example.net:right");
        assert!(yes && took < Duration::from_secs(1), "{took:?}");
        let (yes, outcome, took) = ask(&mut b, "auth:romeo:example.net:wrong");
        assert!(
            !yes && outcome == "no" && took < Duration::from_secs(1),
            "{took:?}"
        );
    }
    store.restart();
    // Reconnected by the next requests (a failed connect is retried after a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(answer(&mut a, "auth:romeo:example.net:right").0);
        if answer(&mut b, "auth:romeo:example.net:right") == (true, "cached_shared".into()) {
            break;
        }
        assert!(Instant::now() < deadline, "the store was not used again");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.logged("shared store unavailable"), 1, "{:#?}", b.log);
    assert_eq!(b.logged("shared store reachable again"), 1, "{:#?}", b.log);
}

#[test]
fn an_unreachable_store_changes_no_answer_and_delays_none() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "secret")]);
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let cfg = config(dir.path(), "c.toml", &url, "", "10m", &file_backend(&users));
    let mut a = bridge(&cfg);
    for _ in 0..5 {
        let (yes, _, took) = ask(&mut a, "auth:romeo:example.net:secret");
        assert!(yes && took < Duration::from_millis(500), "{took:?}");
        let (yes, outcome, took) = ask(&mut a, "auth:romeo:example.net:wrong");
        assert!(!yes && outcome == "no" && took < Duration::from_millis(500));
    }
    // Logged once, not per request.
    assert_eq!(a.logged("shared store unavailable"), 1, "{:#?}", a.log);
}

#[test]
fn a_slow_store_does_not_make_a_request_late() {
    let (_dir, store, mut a, _b) = romeo_on_two_nodes("");
    expect(&mut a, "auth:romeo:example.net:secret", true, "yes");
    let sleeper = stall(&store, "1.5");
    let (yes, outcome, took) = ask(&mut a, "auth:romeo:example.net:secret");
    assert!(yes && outcome != "cached_shared", "{outcome}");
    assert!(took < Duration::from_millis(500), "late: {took:?}");
    let (yes, _, took) = ask(&mut a, "auth:romeo:example.net:wrong");
    assert!(!yes && took < Duration::from_millis(500), "late: {took:?}");
    assert_eq!(a.logged("shared store unavailable"), 1, "{:#?}", a.log);
    sleeper.join().unwrap();
}

#[test]
fn rediss_with_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::generate(dir.path());
    let store = RedisServer::start_on(dir.path(), free_port(), Some(&tls));
    let api = FaultServer::start();
    let extra = format!("ca_file = {:?}", tls.ca);
    let cfg = config(
        dir.path(),
        "c.toml",
        &store.url(),
        &extra,
        "10m",
        &http_backend(&api),
    );
    let (mut a, mut b) = (bridge(&cfg), bridge(&cfg));
    expect(&mut a, "auth:romeo:example.net:right", true, "yes");
    // The first connect (TLS) may outlast one operation's timeout: it completes meanwhile.
    let deadline = Instant::now() + Duration::from_secs(5);
    while answer(&mut b, "auth:romeo:example.net:right") != (true, "cached_shared".into()) {
        assert!(Instant::now() < deadline, "TLS store never used");
        assert!(answer(&mut a, "auth:romeo:example.net:right").0);
    }
    let out = run(&["--config", cfg.to_str().unwrap(), "check"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("probe key written, read and deleted"),
        "{text}"
    );
    // Without the CA, the store's certificate is refused: check says so.
    let cfg = config(
        dir.path(),
        "d.toml",
        &store.url(),
        "",
        "10m",
        &http_backend(&api),
    );
    let out = run(&["--config", cfg.to_str().unwrap(), "check"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shared    FAIL"), "{text}");
    assert!(!text.contains(PASSWORD));
}

#[test]
fn check_reports_the_round_trip_and_the_key_file_mode() {
    let (dir, _store, cfg) = romeo_config("");
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("shared.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["--config", cfg.to_str().unwrap(), "check"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("round trip"), "{text}");
    assert!(text.contains("mode 0600"), "{text}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["--config", cfg.to_str().unwrap(), "check"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("world-readable"), "{text}");
    assert_ne!(out.status.code(), Some(0));
    // A wrong password: check fails and names the store, never the password.
    std::fs::write(dir.path().join("store.pw"), "not-it\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["--config", cfg.to_str().unwrap(), "check"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shared    FAIL"), "{text}");
    assert!(!text.contains("not-it"), "{text}");
}

#[test]
fn credentials_in_the_url_and_a_bad_key_file_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "secret")]);
    let url = "redis://:hunter2@127.0.0.1:6379/0";
    let cfg = config(dir.path(), "c.toml", url, "", "10m", &file_backend(&users));
    let out = run(&["--config", cfg.to_str().unwrap()], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("shared.url") && !err.contains("hunter2"),
        "{err}"
    );
    let cfg = config(
        dir.path(),
        "d.toml",
        "redis://127.0.0.1:1/0",
        "",
        "10m",
        &file_backend(&users),
    );
    std::fs::write(dir.path().join("shared.key"), "short\n").unwrap();
    let out = run(&["--config", cfg.to_str().unwrap()], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("shared.key_file"), "{err}");
    // Three store round trips must leave the backend most of the request's deadline.
    let cfg = config(
        dir.path(),
        "e.toml",
        "redis://127.0.0.1:1/0",
        "timeout = \"2s\"",
        "10m",
        &file_backend(&users),
    );
    let out = run(&["--config", cfg.to_str().unwrap()], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("shared.timeout") && err.contains("fifth"),
        "{err}"
    );
}

#[test]
fn generate_shared_key_writes_0600_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let out = run(&["generate", "shared-key", key.to_str().unwrap()], b"");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.trim().len(), 64);
    assert!(text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = run(&["generate", "shared-key", key.to_str().unwrap()], b"");
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(text.trim()));
}

const THROTTLE: &str = "[throttle]\nenabled = true\nmax_failures = 4\n";

/// Every key the bridge wrote expires, and none names the user or holds a password.
fn assert_keys_are_keyed_and_expire(store: &RedisServer) {
    let keys = store.cli(&["--scan"]);
    assert!(!keys.trim().is_empty());
    for key in keys.lines() {
        assert!(!key.contains("romeo") && !key.contains("secret"), "{key}");
        let ttl: i64 = store.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
        let dump = store.cli(&["--no-raw", "DUMP", key]);
        assert!(!dump.contains("romeo") && !dump.contains("secret"), "{key}");
    }
}

#[test]
fn failures_spread_over_two_nodes_lock_the_account_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedisServer::start(dir.path());
    let users = users_file(
        dir.path(),
        &[
            ("romeo@example.net", "secret"),
            ("juliet@example.net", "rose"),
        ],
    );
    let cfg = config(
        dir.path(),
        "c.toml",
        &store.url(),
        THROTTLE,
        "10m",
        &file_backend(&users),
    );
    let (mut a, mut b) = (bridge(&cfg), bridge(&cfg));
    // Juliet logs in first on A: her password is trusted on every node.
    expect(&mut a, "auth:juliet:example.net:rose", true, "yes");
    for (i, who) in ["romeo", "juliet"].iter().enumerate() {
        for n in 0..4 {
            let node = if n % 2 == 0 { &mut a } else { &mut b };
            expect(
                node,
                &format!("auth:{who}:example.net:guess{i}{n}"),
                false,
                "no",
            );
        }
    }
    // Four in all, two per node: locked on both (per node it would take four each).
    expect(&mut a, "auth:romeo:example.net:secret", false, "throttled");
    expect(&mut b, "auth:romeo:example.net:secret", false, "throttled");
    // A guess seen by A is known to B: answered unasked, and not counted again.
    expect(&mut b, "auth:romeo:example.net:guess00", false, "throttled");
    // The owner, trusted through A, still logs in through B during her lockout.
    expect(
        &mut b,
        "auth:juliet:example.net:rose",
        true,
        "cached_shared",
    );
    expect(
        &mut b,
        "auth:juliet:example.net:guess13",
        false,
        "throttled",
    );
    assert_eq!(a.logged("account locked"), 1, "{:#?}", a.log);
    // `query` (a third process) says the lockout is the shared one.
    let out = run(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "query",
            "auth",
            "romeo",
            "example.net",
        ],
        b"secret\n",
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("throttled") && text.contains("in the shared store, on every node"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
    assert_keys_are_keyed_and_expire(&store);
}

#[test]
fn a_wrong_password_repeated_on_another_node_is_not_counted_twice() {
    let (_dir, _store, mut a, mut b) = romeo_on_two_nodes(THROTTLE);
    expect(&mut a, "auth:romeo:example.net:old", false, "no");
    for _ in 0..5 {
        expect(&mut b, "auth:romeo:example.net:old", false, "repeated");
    }
    expect(&mut b, "auth:romeo:example.net:secret", true, "yes");
    // A password change on B outdates what A remembered as wrong: the new password,
    // once a wrong one, is asked again through A.
    expect(&mut a, "auth:romeo:example.net:next", false, "no");
    expect(&mut a, "auth:romeo:example.net:next", false, "repeated");
    expect(&mut b, "setpass:romeo:example.net:next", true, "yes");
    expect(&mut a, "auth:romeo:example.net:next", true, "yes");
}

#[test]
fn with_the_store_down_the_throttle_answers_as_without_shared() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "secret")]);
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let cfg = config(
        dir.path(),
        "c.toml",
        &url,
        THROTTLE,
        "10m",
        &file_backend(&users),
    );
    let mut a = bridge(&cfg);
    for n in 0..4 {
        let (yes, outcome, took) = ask(&mut a, &format!("auth:romeo:example.net:guess{n}"));
        assert!(!yes && outcome == "no", "{outcome}");
        assert!(took < Duration::from_millis(500), "late: {took:?}");
    }
    expect(&mut a, "auth:romeo:example.net:secret", false, "throttled");
    assert_eq!(a.logged("shared store unavailable"), 1, "{:#?}", a.log);
}

/// Blocks the store for `seconds` (in the background), as a store too slow to answer.
fn stall(store: &RedisServer, seconds: &str) -> std::thread::JoinHandle<()> {
    let (port, seconds) = (store.port, seconds.to_owned());
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["DEBUG", "SLEEP", &seconds])
            .env("REDISCLI_AUTH", PASSWORD)
            .output()
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    sleeper
}

#[test]
fn a_change_made_while_the_store_stalls_reaches_the_other_node_when_it_is_back() {
    let (_dir, store, mut a, mut b) = romeo_on_two_nodes("");
    expect(&mut b, "auth:romeo:example.net:secret", true, "yes");
    let sleeper = stall(&store, "1.5");
    // The change cannot reach the store now; it still goes through, at once.
    let (yes, _, took) = ask(&mut a, "setpass:romeo:example.net:new");
    assert!(yes && took < Duration::from_millis(500), "{took:?}");
    sleeper.join().unwrap();
    // Once the store answers again, A's change is replayed (within about a second)
    // before B could serve the old password from what it shared before.
    std::thread::sleep(Duration::from_millis(1500));
    expect(&mut b, "auth:romeo:example.net:secret", false, "no");
    expect(&mut b, "auth:romeo:example.net:new", true, "yes");
}

#[test]
fn a_store_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedisServer::start(dir.path());
    let users = users_file(dir.path(), &[("romeo@example.net", "secret")]);
    let url = store.unix_url();
    let cfg = config(dir.path(), "u.toml", &url, "", "10m", &file_backend(&users));
    let mut nodes = [bridge(&cfg), bridge(&cfg)];
    let steps = [
        (0, "auth:romeo:example.net:secret", true, "yes"),
        (1, "auth:romeo:example.net:secret", true, "cached_shared"),
        (0, "setpass:romeo:example.net:other", true, "yes"),
        (1, "auth:romeo:example.net:secret", false, "no"),
    ];
    for (node, query, yes, outcome) in steps {
        let got = answer(&mut nodes[node], query);
        assert_eq!(got, (yes, outcome.into()), "{query}");
    }
    let a = &nodes[0];
    assert_eq!(a.logged("shared store unavailable"), 0, "{:#?}", a.log);
}

#[test]
fn stale_if_error_serves_what_another_node_shared_and_nothing_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedisServer::start(dir.path());
    let api = FaultServer::start();
    let backend = http_backend(&api);
    let cache = "[cache]\nenabled = true\nttl = \"1s\"\nstale_if_error = \"10m\"\n";
    let cfg = config(dir.path(), "s.toml", &store.url(), "", "1s", &backend);
    // The helper writes its own [cache] table first; this one adds stale_if_error.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replacen("[cache]\nenabled = true\nttl = \"1s\"\n", cache, 1);
    std::fs::write(&cfg, text).unwrap();
    let (mut a, mut b) = (bridge(&cfg), bridge(&cfg));
    expect(&mut a, "auth:romeo:example.net:right", true, "yes");
    std::thread::sleep(Duration::from_millis(1100));
    api.set(common::http_server::Mode::ServerError);
    // Older than ttl: B asks the backend, which is down; what A shared answers, stale.
    expect(&mut b, "auth:romeo:example.net:right", true, "stale");
    expect(&mut b, "auth:romeo:example.net:wrong", false, "unavailable");
    // A removeuser through A (refused by the API, but a change may have happened): B no
    // longer serves the old answer, even stale.
    let _ = answer(&mut a, "removeuser:romeo:example.net");
    let (yes, outcome) = answer(&mut b, "auth:romeo:example.net:right");
    assert!(!yes, "{outcome}");
}

#[test]
fn a_stalled_store_never_lets_a_local_entry_answer_for_a_password_changed_elsewhere() {
    // Two machines: each node its own generations file, only the store in common.
    let (dir, store, cfg) = romeo_config("");
    let node = |name: &str| {
        let state = dir.path().join(name);
        std::fs::create_dir(&state).unwrap();
        let text = std::fs::read_to_string(&cfg).unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("state_dir = {state:?}\n{text}")).unwrap();
        bridge(&path)
    };
    let (mut a, mut b) = (node("a"), node("b"));
    expect(&mut a, "auth:romeo:example.net:secret", true, "yes");
    expect(&mut b, "setpass:romeo:example.net:changed", true, "yes");
    let sleeper = stall(&store, "1");
    // A cannot reach the store: its own entry of the old password must not answer.
    let (yes, outcome, took) = ask(&mut a, "auth:romeo:example.net:secret");
    assert!(!yes && outcome == "no", "{outcome}");
    assert!(took < Duration::from_millis(500), "late: {took:?}");
    expect(&mut a, "auth:romeo:example.net:changed", true, "yes");
    sleeper.join().unwrap();
}
