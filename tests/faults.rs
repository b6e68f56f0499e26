//! The fault matrix: every way a backend can fail, each against a real local server (or file)
//! that fails that way. Each case asserts the answer `0`, a time bound (the request deadline
//! plus a generous second), and that the next request is answered correctly: by the same
//! backend once it has recovered (without a restart), or by a healthy one. A users file
//! whose every access blocks for good (a FIFO; a stat that never returns, through the
//! debug-build hook in `src/fs.rs`) costs its own requests their deadline and nothing more.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http_server::{FaultServer, Mode};
use common::*;

/// The request deadline the bridge runs with in these tests.
const DEADLINE: Duration = Duration::from_secs(2);
/// What any faulty request may take: the deadline and a generous second.
const BOUND: Duration = Duration::from_secs(3);

fn write_config(dir: &Path, backends: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    fs::write(
        &path,
        format!(
            "timeout = \"{}s\"\n[log]\nlevel = \"debug\"\n{backends}",
            DEADLINE.as_secs()
        ),
    )
    .unwrap();
    path
}

/// An http backend whose own timeouts are longer than the deadline, so that "slow" is
/// caught by the request loop's deadline, the last line of defence.
fn http_backend(name: &str, url: &str) -> String {
    format!(
        "[[backend]]\nname = \"{name}\"\ntype = \"http\"\nurl = \"{url}\"\n\
         connect_timeout = \"10s\"\nrequest_timeout = \"10s\"\n"
    )
}

fn route(domain: &str, backend: &str) -> String {
    format!("[[route]]\ndomains = [\"{domain}\"]\nbackends = [\"{backend}\"]\n")
}

/// Asks and checks the answer and the time bound; returns how long it took.
fn ask_timed(bridge: &mut Live, query: &str, expected: &str, bound: Duration) -> Duration {
    let started = Instant::now();
    let reply = bridge.ask(query);
    let took = started.elapsed();
    assert_eq!(reply, expected, "{query}");
    assert!(took < bound, "{query} took {took:?}");
    took
}

/// A bridge on a users file holding romeo (password `right`), seen to work; returns it, the
/// file and the file's contents.
fn start_with_users_file(dir: &Path) -> (Live, std::path::PathBuf, Vec<u8>) {
    let users = users_file(dir, &[("romeo@example.net", "right")]);
    let saved = fs::read(&users).unwrap();
    let backend = format!("[[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n");
    let config = write_config(dir, &backend);
    let mut bridge = start(&config);
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "1\n", BOUND);
    (bridge, users, saved)
}

fn file_backend(name: &str, path: &Path) -> String {
    format!("[[backend]]\nname = \"{name}\"\ntype = \"file\"\npath = {path:?}\n")
}

/// Two routes, each with its users file: `stuck.example` on `stuck`, `good.example` on `good`.
fn stuck_and_good(dir: &Path, stuck: &Path, good: &Path) -> std::path::PathBuf {
    let backends = [
        file_backend("stuck", stuck),
        file_backend("good", good),
        route("stuck.example", "stuck"),
        route("good.example", "good"),
    ];
    write_config(dir, &backends.concat())
}

fn start(config: &Path) -> Live {
    Live::spawn(&["--config", config.to_str().unwrap()])
}

#[test]
fn http_faults_answer_zero_in_time_and_the_recovered_backend_is_used_again() {
    let server = FaultServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &http_backend("api", &server.url()));
    let mut bridge = start(&config);
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "1\n", BOUND);

    for mode in [
        Mode::ResetMidResponse,
        Mode::ServerError,
        Mode::Garbage,
        Mode::Oversized,
        Mode::Slow,
    ] {
        server.set(mode);
        // Correct password: only the fault can make it fail.
        let took = ask_timed(&mut bridge, "auth:romeo:example.net:right", "0\n", BOUND);
        if mode == Mode::Slow {
            assert!(took >= DEADLINE, "answered before the deadline: {took:?}");
        } else {
            // Failures that show themselves are not left to the deadline.
            assert!(took < DEADLINE, "{mode:?} took {took:?}");
        }
        server.set(Mode::Good);
        ask_timed(&mut bridge, "auth:romeo:example.net:right", "1\n", BOUND);
        ask_timed(&mut bridge, "auth:romeo:example.net:wrong", "0\n", BOUND);
    }
    bridge.close_stdin();
    assert_eq!(bridge.wait_within(BOUND).0.code(), Some(0));
}

#[test]
fn refused_connection_then_the_backend_comes_back() {
    // Take a free port, then leave it: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &http_backend("api", &format!("http://{addr}")));
    let mut bridge = start(&config);
    let took = ask_timed(&mut bridge, "auth:romeo:example.net:right", "0\n", BOUND);
    assert!(took < DEADLINE, "refused took {took:?}");
    // The API starts: used from the next request on, no restart.
    let _server = FaultServer::start_on(addr);
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "1\n", BOUND);
    ask_timed(&mut bridge, "isuser:romeo:example.net", "1\n", BOUND);
}

#[test]
fn tls_and_dns_failures_answer_zero_and_other_domains_still_work() {
    let good = FaultServer::start();
    let plain = FaultServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backends = [
        // A plain-TCP server behind an https URL: the TLS handshake fails.
        http_backend("tls", &format!("https://{}", plain.addr)),
        // `.invalid` never resolves (RFC 2606).
        http_backend("dns", "http://no-such-host.invalid:8080"),
        http_backend("good", &good.url()),
        route("tls.example", "tls"),
        route("dns.example", "dns"),
        route("good.example", "good"),
    ]
    .concat();
    let config = write_config(dir.path(), &backends);
    let mut bridge = start(&config);
    for _ in 0..2 {
        let took = ask_timed(&mut bridge, "auth:romeo:tls.example:right", "0\n", BOUND);
        assert!(took < DEADLINE, "TLS failure took {took:?}");
        ask_timed(&mut bridge, "auth:romeo:good.example:right", "1\n", BOUND);
        ask_timed(&mut bridge, "auth:romeo:dns.example:right", "0\n", BOUND);
        ask_timed(&mut bridge, "auth:romeo:good.example:right", "1\n", BOUND);
        ask_timed(&mut bridge, "auth:romeo:good.example:wrong", "0\n", BOUND);
    }
}

#[test]
fn users_file_faults_answer_zero_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bridge, users, saved) = start_with_users_file(dir.path());

    // Deleted.
    fs::remove_file(&users).unwrap();
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "0\n", BOUND);
    fs::write(&users, &saved).unwrap();
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "1\n", BOUND);

    // Unreadable (a directory where the file should be: root reads any mode bits).
    fs::remove_file(&users).unwrap();
    fs::create_dir(&users).unwrap();
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "0\n", BOUND);
    fs::remove_dir(&users).unwrap();
    fs::write(&users, &saved).unwrap();
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "1\n", BOUND);

    // The write lock held by another process past the deadline.
    let lock = hold_write_lock(&users);
    let took = ask_timed(&mut bridge, "setpass:romeo:example.net:new", "0\n", BOUND);
    assert!(took >= DEADLINE, "{took:?}");
    // Reads do not need the lock.
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "1\n", BOUND);
    // End of input while a stuck task still waits for the lock: exit promptly anyway.
    bridge.close_stdin();
    assert_eq!(bridge.wait_within(BOUND).0.code(), Some(0));
    drop(lock);
}

#[test]
fn a_users_file_change_answered_zero_at_the_deadline_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bridge, users, saved) = start_with_users_file(dir.path());

    // Another writer holds the lock past the deadline.
    let lock = hold_write_lock(&users);
    for query in [
        "tryregister:tybalt:example.net:late",
        "removeuser:romeo:example.net",
    ] {
        ask_timed(&mut bridge, query, "0\n", BOUND);
    }
    // The lock comes free: nothing that was answered 0 may happen now. (Unfixed, the two
    // workers still waiting would take it, and write, before the next change's.)
    drop(lock);
    ask_timed(
        &mut bridge,
        "tryregister:benvolio:example.net:now",
        "1\n",
        BOUND,
    );
    ask_timed(&mut bridge, "isuser:tybalt:example.net", "0\n", BOUND);
    ask_timed(&mut bridge, "auth:romeo:example.net:right", "1\n", BOUND);
    bridge.close_stdin();
    let (status, log) = bridge.wait_within(BOUND);
    assert_eq!(status.code(), Some(0));
    assert!(
        log.iter()
            .any(|l| l.contains("users file change abandoned")),
        "{log:#?}"
    );
    let text = fs::read_to_string(&users).unwrap();
    let before = String::from_utf8(saved).unwrap();
    assert!(text.starts_with(&before), "{text}");
    assert_eq!(text.lines().count(), before.lines().count() + 1, "{text}");
    assert!(text.contains("benvolio@example.net:$argon2id$"), "{text}");
}

#[test]
fn a_stat_that_never_returns_costs_one_deadline_not_more() {
    // The users file sits on a hung mount: its stat does not come back (the hook sleeps far
    // past any wait here). Unfixed, the stat ran on the request thread, which the deadline
    // cannot interrupt: the reply came when the stat did.
    let dir = tempfile::tempdir().unwrap();
    let hung = dir.path().join("hung");
    fs::create_dir(&hung).unwrap();
    let stuck = users_file(&hung, &[("romeo@stuck.example", "right")]);
    let good = users_file(dir.path(), &[("romeo@good.example", "right")]);
    let config = stuck_and_good(dir.path(), &stuck, &good);
    let mut bridge = Live::spawn_env(
        &["--config", config.to_str().unwrap()],
        &[("EXTAUTH_BRIDGE_TEST_STALL", stuck.to_str().unwrap())],
    );
    for query in [
        "auth:romeo:stuck.example:right",
        "isuser:romeo:stuck.example",
        "setpass:romeo:stuck.example:new",
    ] {
        let took = ask_timed(&mut bridge, query, "0\n", BOUND);
        assert!(took >= DEADLINE - Duration::from_millis(50), "{took:?}");
    }
    // The loop was never held: the other file answers at once.
    let took = ask_timed(&mut bridge, "auth:romeo:good.example:right", "1\n", BOUND);
    assert!(took < DEADLINE, "{took:?}");
}

#[test]
fn a_users_file_that_blocks_never_starves_another_route() {
    // A FIFO nobody writes to: opening it for reading blocks for good, like a read on a hung
    // mount. Every request to it leaves a worker stuck; unfixed, each took a thread of the
    // shared blocking pool (2·cores+2) until none was left, and the healthy route's right
    // password timed out too, for the life of the process.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("users.fifo");
    mkfifo(&fifo);
    let good = users_file(dir.path(), &[("romeo@good.example", "right")]);
    let config = stuck_and_good(dir.path(), &fifo, &good);
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = 2 * cores + 2;
    // All at once (they run concurrently, up to max_in_flight): more than the pool holds.
    let many: String = (0..pool + 2)
        .map(|i| format!("auth:user{i}:stuck.example:pw\n"))
        .collect();
    let started = Instant::now();
    bridge.send(many.as_bytes());
    let replies = bridge.read_exact_within(2 * (pool + 2), BOUND + Duration::from_secs(1));
    assert_eq!(replies, "0\n".repeat(pool + 2).as_bytes());
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    // Changes go to the stuck file too (each runs alone, so one deadline each).
    for i in 0..2 {
        ask_timed(
            &mut bridge,
            &format!("removeuser:user{i}:stuck.example"),
            "0\n",
            BOUND,
        );
    }
    // The healthy route: a right password is still a 1, well within the deadline.
    for _ in 0..2 {
        let took = ask_timed(&mut bridge, "auth:romeo:good.example:right", "1\n", BOUND);
        assert!(took < DEADLINE, "{took:?}");
        ask_timed(&mut bridge, "auth:romeo:good.example:wrong", "0\n", BOUND);
    }
}

/// The HTTP clients are built on first use, and building one reads the system's root
/// certificates (`SSL_CERT_FILE` here, a FIFO nobody writes: a read that never returns, as on
/// a hung mount). That must not happen on the request thread, which the deadline cannot
/// interrupt: each request is still answered `0` at `timeout`, for both backend kinds.
#[test]
fn a_client_whose_roots_cannot_be_read_delays_no_reply() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("roots.pem");
    mkfifo(&fifo);
    let config = dir.path().join("config.toml");
    fs::write(
        &config,
        "timeout = \"1s\"\n\
         [[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"https://127.0.0.1:9/xmpp\"\n\
         [[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"https://127.0.0.1:9\"\n\
         token_endpoint = \"https://127.0.0.1:9/token\"\n\
         userinfo_endpoint = \"https://127.0.0.1:9/userinfo\"\nclient_id = \"bridge\"\n\
         client_auth = \"none\"\nmode = \"password_grant\"\nverify = \"userinfo\"\n\
         [[route]]\ndomains = [\"example.net\"]\nbackends = [\"api\"]\n\
         [[route]]\ndomains = [\"example.org\"]\nbackends = [\"idp\"]\n",
    )
    .unwrap();
    let mut bridge = Live::spawn_env(
        &["--config", config.to_str().unwrap()],
        &[("SSL_CERT_FILE", fifo.to_str().unwrap())],
    );
    for query in [
        "auth:romeo:example.net:pw",
        "auth:romeo:example.net:pw",
        "auth:romeo:example.org:pw",
        "isuser:romeo:example.net",
    ] {
        let started = Instant::now();
        bridge.send(format!("{query}\n").as_bytes());
        assert_eq!(
            bridge.read_exact_within(2, Duration::from_secs(5)),
            b"0\n",
            "{query}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1800),
            "{query}: {:?}",
            started.elapsed()
        );
    }
}
