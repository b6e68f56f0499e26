//! The OAuth2 fault matrix: the real bridge against a loopback IdP (tests/oauth2_common/
//! fake.rs) whose token, introspection, userinfo or discovery endpoint fails on demand.
//! Each case asserts the answer `0`, that it came within a generous bound (the request
//! deadline plus three seconds), that the reason was logged, and that the next request on
//! the same stream is answered correctly once the IdP behaves again, without a restart.

mod common;
mod oauth2_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{frame, Live, NO, YES};
use oauth2_common::fake::{access_token, FakeIdp, Fault, DISCOVERY};
use oauth2_common::Wire;

/// The request deadline the bridge runs with here.
const DEADLINE: Duration = Duration::from_secs(2);
/// What any faulty request may take: the deadline and a generous margin.
const BOUND: Duration = Duration::from_secs(5);

/// Writes the configuration: one oauth2 backend with `settings`. Its own timeouts are
/// longer than the deadline, so a slow IdP is cut by the request loop's deadline.
fn config(dir: &Path, settings: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "timeout = \"{}s\"\n[log]\nlevel = \"debug\"\n\n[[backend]]\nname = \"idp\"\n\
         type = \"oauth2\"\nconnect_timeout = \"10s\"\nrequest_timeout = \"10s\"\n{settings}",
        DEADLINE.as_secs()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Password grant at explicit endpoints, then userinfo says whose token it is.
fn grant_settings(base: &str) -> String {
    format!(
        "token_endpoint = \"{base}/token\"\nuserinfo_endpoint = \"{base}/userinfo\"\n\
         client_id = \"bridge\"\nclient_auth = \"none\"\nverify = \"userinfo\"\n"
    )
}

/// Tokens as passwords, introspected.
fn introspection_settings(base: &str) -> String {
    format!(
        "mode = \"token\"\nvalidate = \"introspection\"\n\
         introspection_endpoint = \"{base}/introspect\"\nintrospection_bearer = \"fake-bearer\"\n\
         audience = \"bridge\"\n"
    )
}

/// The password grant with its endpoints discovered from the issuer.
fn discovered_settings(base: &str) -> String {
    format!("issuer = \"{base}\"\nclient_id = \"bridge\"\nclient_auth = \"none\"\n")
}

/// A way of logging in: the settings, the right and a wrong credential for romeo.
struct Login {
    what: &'static str,
    settings: String,
    right: String,
    wrong: String,
}

fn grant(base: &str, what: &'static str) -> Login {
    Login {
        what,
        settings: grant_settings(base),
        right: "right".into(),
        wrong: "wrong".into(),
    }
}

fn introspection(base: &str) -> Login {
    Login {
        what: "introspection",
        settings: introspection_settings(base),
        right: access_token("romeo"),
        // A valid token, of someone else.
        wrong: access_token("juliet"),
    }
}

fn start(config: &Path) -> Live {
    Live::spawn(&["--config", config.to_str().unwrap()])
}

/// Asks `auth:romeo:example.net:PASSWORD` over `wire`; checks the answer and the bound.
fn auth_timed(bridge: &mut Live, wire: Wire, password: &str, want: bool) -> Duration {
    let query = format!("auth:romeo:example.net:{password}");
    let started = Instant::now();
    let got = match wire {
        Wire::Line => bridge.ask(&query) == "1\n",
        Wire::Ejabberd => {
            bridge.send(&frame(&query));
            let reply = bridge.read_exact_within(4, Duration::from_secs(10));
            assert!(reply == YES || reply == NO, "bad reply {reply:?}");
            reply == YES
        }
    };
    let took = started.elapsed();
    assert_eq!(got, want, "{query} over {wire:?}");
    assert!(took < BOUND, "{query} over {wire:?} took {took:?}");
    took
}

/// Peak resident set of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Far below the 128 MiB an oversized answer carries: what the bridge reads is capped.
const MEMORY_BOUND_KIB: u64 = 48 * 1024;

/// Oversized token, userinfo, introspection and discovery answers (valid JSON after
/// 128 MiB of whitespace, no length announced) are cut off at the cap: answered `0` at
/// once, logged, the memory stays bounded, and the next login works.
#[test]
fn oversized_answers_are_cut_off() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let discovered = Login {
        what: "discovery",
        settings: discovered_settings(&idp.base),
        ..grant(&idp.base, "discovery")
    };
    let cases = [
        (grant(&idp.base, "token"), "/token", Wire::Line),
        (grant(&idp.base, "token"), "/token", Wire::Ejabberd),
        (grant(&idp.base, "userinfo"), "/userinfo", Wire::Line),
        (introspection(&idp.base), "/introspect", Wire::Line),
        (discovered, DISCOVERY, Wire::Line),
    ];
    for (login, path, wire) in cases {
        let what = format!("{} {wire:?}", login.what);
        let mut bridge = start(&config(dir.path(), &login.settings));
        idp.fail_at(path, Fault::Oversized);
        auth_timed(&mut bridge, wire, &login.right, false);
        bridge.wait_for_log("response body over", BOUND);
        idp.fail(Fault::None);
        auth_timed(&mut bridge, wire, &login.right, true);
        auth_timed(&mut bridge, wire, &login.wrong, false);
        let peak = peak_rss_kib(bridge.child.id());
        assert!(peak < MEMORY_BOUND_KIB, "{what}: peak RSS {peak} KiB");
        bridge.close_stdin();
        assert_eq!(bridge.wait_within(BOUND).0.code(), Some(0), "{what}");
    }
}

/// Every way the token, userinfo or introspection endpoint can fail: answered `0` (the
/// slow one at the deadline, not before), the reason logged, and the next logins on the
/// same stream answered right once the IdP behaves again. Both wire protocols.
#[test]
fn faults_answer_0_in_time_and_the_next_login_is_answered_right() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (grant(&idp.base, "token"), "/token", Wire::Line),
        (grant(&idp.base, "token"), "/token", Wire::Ejabberd),
        (grant(&idp.base, "userinfo"), "/userinfo", Wire::Line),
        (introspection(&idp.base), "/introspect", Wire::Line),
        (introspection(&idp.base), "/introspect", Wire::Ejabberd),
    ];
    let faults = [
        // The IdP answered, then broke off: an answer gone bad, not an outage (SPEC §10).
        (Fault::ResetMidResponse, "outcome=\"protocol\""),
        (Fault::ServerError, "HTTP 503"),
        (Fault::GarbageJson, "outcome=\"protocol\""),
        (Fault::Slow, "deadline expired"),
    ];
    for (login, path, wire) in cases {
        let what = format!("{} {wire:?}", login.what);
        let mut bridge = start(&config(dir.path(), &login.settings));
        auth_timed(&mut bridge, wire, &login.right, true);
        for (fault, logged) in faults {
            idp.fail_at(path, fault);
            let took = auth_timed(&mut bridge, wire, &login.right, false);
            if fault == Fault::Slow {
                assert!(took >= DEADLINE, "{what}: answered before the deadline");
            }
            bridge.wait_for_log(logged, BOUND);
            idp.fail(Fault::None);
            auth_timed(&mut bridge, wire, &login.right, true);
            auth_timed(&mut bridge, wire, &login.wrong, false);
        }
        bridge.close_stdin();
        assert_eq!(bridge.wait_within(BOUND).0.code(), Some(0), "{what}");
    }
}

/// Nothing listens where the IdP should be: `0` at once; then it starts, and the same
/// bridge uses it from the next login on.
#[test]
fn refused_connections_then_the_idp_comes_back() {
    for (make, wire) in [
        (grant as fn(&str, &'static str) -> Login, Wire::Line),
        (|base: &str, _| introspection(base), Wire::Ejabberd),
    ] {
        // Take a free port, then leave it: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let login = make(&format!("http://{addr}"), "token");
        let dir = tempfile::tempdir().unwrap();
        let mut bridge = start(&config(dir.path(), &login.settings));
        auth_timed(&mut bridge, wire, &login.right, false);
        let seen = bridge.wait_for_log("outcome=\"unavailable\"", BOUND);
        // The cause, not just reqwest's "error sending request": what an operator needs.
        let line = seen.last().unwrap();
        assert!(line.contains("Connection refused"), "{line}");
        let _idp = FakeIdp::start_on(addr);
        auth_timed(&mut bridge, wire, &login.right, true);
        auth_timed(&mut bridge, wire, &login.wrong, false);
    }
}
