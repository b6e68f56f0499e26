//! `remember_accounts` through the real binary: an HTTP API (a real server on loopback) that
//! checks passwords but answers 501 to `user_exists`, chained with a file backend over the
//! file the API's logins are remembered in. `isuser` says no before a login and yes after;
//! the file gets one locked line per account, written once; a locked line never opens the
//! account (and costs what a missing one does); an unwritable file changes no answer; the
//! `users` command and `check` know about such lines.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, Uri};
use common::*;

/// mod_auth_http with one password for every account, `right`, and no `user_exists` (501).
fn start_api() -> SocketAddr {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    });
    async fn handle(uri: Uri) -> (StatusCode, &'static str) {
        let params: HashMap<String, String> =
            serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap();
        match uri.path().rsplit('/').next() {
            Some("check_password") if params.get("pass").is_some_and(|p| p == "right") => {
                (StatusCode::OK, "true")
            }
            Some("check_password") => (StatusCode::OK, "false"),
            _ => (StatusCode::NOT_IMPLEMENTED, ""),
        }
    }
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(handle))
            .await
            .unwrap()
    });
    addr
}

/// `[[backend]] api` remembering into `remembered`, then (with `reader`) a file backend
/// over it, the chain the README shows.
fn config(dir: &Path, api: SocketAddr, remembered: &Path, reader: bool) -> PathBuf {
    let mut text = format!(
        "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://{api}\"\n\
         remember_accounts = \"{}\"\n",
        remembered.display()
    );
    if reader {
        text.push_str(&format!(
            "[[backend]]\nname = \"remembered\"\ntype = \"file\"\npath = \"{}\"\n\
             [[route]]\ndomains = [\"example.net\"]\nbackends = [\"api\", \"remembered\"]\n",
            remembered.display()
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn eventually(what: &str, mut test: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !test() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn isuser_is_answered_from_accounts_remembered_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let remembered = dir.path().join("remembered");
    std::fs::write(&remembered, "").unwrap();
    let cfg = config(dir.path(), start_api(), &remembered, true);
    let mut bridge = Live::spawn(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(bridge.ask("isuser:romeo:example.net"), "0\n");
    assert_eq!(bridge.ask("auth:romeo:example.net:wrong"), "0\n");
    assert_eq!(bridge.ask("auth:romeo:example.net:right"), "1\n");
    eventually("isuser romeo", || {
        bridge.ask("isuser:romeo:example.net") == "1\n"
    });
    let read = || std::fs::read_to_string(&remembered).unwrap();
    assert_eq!(read(), "romeo@example.net:!\n");
    assert_eq!(bridge.ask("isuser:juliet:example.net"), "0\n");

    // A second login, and one in another process of the pool: the file is not rewritten.
    let before = std::fs::metadata(&remembered).unwrap();
    assert_eq!(bridge.ask("auth:romeo:example.net:right"), "1\n");
    let mut other = Live::spawn(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(other.ask("auth:romeo:example.net:right"), "1\n");
    // Another account after it: once its line is there, the writers are past romeo.
    assert_eq!(other.ask("auth:juliet:example.net:right"), "1\n");
    eventually("juliet remembered", || read().contains("juliet@"));
    assert_eq!(read(), "romeo@example.net:!\njuliet@example.net:!\n");
    let after = std::fs::metadata(&remembered).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        3,
        "config, file, lock: no temp file left"
    );
    // One rewrite in all since romeo's line: juliet's (a new inode per atomic rewrite).
    assert_ne!(after.ino(), before.ino());
    let quiet = std::fs::metadata(&remembered).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(bridge.ask("auth:romeo:example.net:right"), "1\n");
    assert_eq!(bridge.ask("auth:juliet:example.net:right"), "1\n");
    std::thread::sleep(Duration::from_millis(200));
    let last = std::fs::metadata(&remembered).unwrap();
    assert_eq!(
        (last.ino(), last.mtime(), last.mtime_nsec()),
        (quiet.ino(), quiet.mtime(), quiet.mtime_nsec())
    );
    // The locked line itself is no password, through the chain or the file alone.
    for password in ["!", "", "*"] {
        assert_eq!(
            bridge.ask(&format!("auth:romeo:example.net:{password}")),
            "0\n"
        );
    }
}

/// Straight at a users file with locked lines: no password opens them, `!` and the empty
/// one included, each costs what a missing account costs (the decoy), `isuser` says yes,
/// `setpass` is refused and writes nothing.
#[test]
fn locked_entries_never_authenticate_and_cost_the_decoy() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let dir = tempfile::tempdir().unwrap();
    // Dear enough (a few milliseconds) that skipping the decoy would show.
    let params = argon2::Params::new(8192, 2, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let hash = argon.hash_password(b"pw", &salt).unwrap().to_string();
    let file = dir.path().join("users");
    let text = format!("known@h:{hash}\nromeo@h:!\nstar@h:*\nold@h:!{hash}\n");
    std::fs::write(&file, &text).unwrap();
    let mut bridge = Live::spawn(&["--users", file.to_str().unwrap()]);
    assert_eq!(bridge.ask("auth:known:h:pw"), "1\n");
    for user in ["romeo", "star", "old"] {
        for password in ["!", "", "*", "pw", "!pw"] {
            assert_eq!(bridge.ask(&format!("auth:{user}:h:{password}")), "0\n");
        }
        assert_eq!(bridge.ask(&format!("isuser:{user}:h")), "1\n");
    }
    let mut timed = |query: &str| {
        let started = Instant::now();
        assert_eq!(bridge.ask(query), "0\n");
        started.elapsed()
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut locked, mut missing) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        locked.push(timed("auth:romeo:h:!"));
        missing.push(timed("auth:nobody:h:!"));
    }
    let (locked, missing) = (median(locked), median(missing));
    assert!(
        locked * 2 > missing && missing * 2 > locked,
        "locked {locked:?}, missing {missing:?}"
    );
    assert_eq!(bridge.ask("setpass:romeo:h:newpassword"), "0\n");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn an_unwritable_file_changes_no_answer_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    // Under a regular file: no one can create it, root included.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let remembered = blocker.join("remembered");
    let cfg = config(dir.path(), start_api(), &remembered, false);
    // Top-level keys go before the first table.
    let metrics = dir.path().join("metrics.prom");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "metrics_file = \"{}\"\nmetrics_interval = \"50ms\"\n{text}",
            metrics.display()
        ),
    )
    .unwrap();
    let mut bridge = Live::spawn(&["--config", cfg.to_str().unwrap()]);
    let started = Instant::now();
    assert_eq!(bridge.ask("auth:romeo:example.net:right"), "1\n");
    assert!(started.elapsed() < Duration::from_secs(2));
    let seen = bridge.wait_for_log("remember_accounts: cannot add", Duration::from_secs(10));
    let line = seen.last().unwrap();
    assert!(line.contains("WARN") || line.contains("warn"), "{line}");
    assert!(!line.contains("right"), "no password in the log: {line}");
    // Forgotten after the failure: the next login tries (and logs) again, still answered 1.
    assert_eq!(bridge.ask("auth:romeo:example.net:right"), "1\n");
    bridge.wait_for_log("remember_accounts: cannot add", Duration::from_secs(10));
    assert_eq!(bridge.ask("auth:romeo:example.net:wrong"), "0\n");
    eventually("two failures counted", || {
        std::fs::read_to_string(&metrics).is_ok_and(|m| {
            m.lines().any(|l| {
                l.starts_with("extauth_bridge_remember_failures_total{") && l.ends_with(" 2")
            })
        })
    });
}

#[test]
fn users_list_marks_remembered_accounts_and_check_reports_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let remembered = dir.path().join("remembered");
    std::fs::write(
        &remembered,
        format!(
            "romeo@example.net:!\nlocal@example.net:{}\n",
            cheap_hash("pw")
        ),
    )
    .unwrap();
    let f = remembered.to_str().unwrap();
    let out = run(&["users", "list", f], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "romeo@example.net (remembered)\nlocal@example.net\n"
    );
    // `add` over a remembered account: refused, before any prompt.
    let out = run(&["users", "add", f, "romeo@example.net"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("remembered"));

    let api = start_api();
    let cfg = config(dir.path(), api, &remembered, true);
    let out = run(&["check", "--config", cfg.to_str().unwrap()], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "remembers accounts in {f} (2 account(s), 1 remembered; writable)"
        )),
        "{text}"
    );
    assert!(text.contains("read by `remembered`"), "{text}");
    // Without the file backend over it: a warning that isuser will not see them.
    let cfg = config(dir.path(), api, &remembered, false);
    let out = run(&["check", "--config", cfg.to_str().unwrap()], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("isuser never sees"), "{text}");
    // With it above: every remembered account would be refused, a failure.
    let cfg = config(dir.path(), api, &remembered, true);
    let swapped = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[\"api\", \"remembered\"]", "[\"remembered\", \"api\"]");
    std::fs::write(&cfg, swapped).unwrap();
    let out = run(&["check", "--config", cfg.to_str().unwrap()], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("`remembered` before `api`"), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");

    let out = run(&["users", "remove", f, "romeo@example.net"], b"");
    assert_eq!(out.status.code(), Some(0));
    let out = run(&["users", "list", f], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "local@example.net\n");
}

mod oauth2_common;

/// The same through an OAuth2 IdP (the loopback fake: password grant, userinfo), which
/// cannot answer `isuser` at all (`isuser = "next"`, the default).
#[test]
fn an_oauth2_login_is_remembered_for_isuser() {
    use oauth2_common::{fake::FakeIdp, write_config, Bridge, Wire};
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let remembered = dir.path().join("remembered");
    std::fs::write(&remembered, "").unwrap();
    let base = &idp.base;
    let config = write_config(
        dir.path(),
        &format!(
            "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\ntoken_endpoint = \"{base}/token\"\n\
             userinfo_endpoint = \"{base}/userinfo\"\nclient_id = \"bridge\"\n\
             client_auth = \"none\"\nverify = \"userinfo\"\nremember_accounts = \"{r}\"\n\
             [[backend]]\nname = \"remembered\"\ntype = \"file\"\npath = \"{r}\"\n",
            r = remembered.display()
        ),
    );
    for wire in [Wire::Line, Wire::Ejabberd] {
        let mut bridge = Bridge::start(&config, wire);
        let isuser = |b: &mut Bridge| b.ask("isuser:romeo:example.net");
        if wire == Wire::Line {
            assert!(!isuser(&mut bridge), "no login yet");
            assert!(!bridge.auth("romeo", "example.net", "wrong"));
            assert!(bridge.auth("romeo", "example.net", "right"));
        }
        eventually("romeo remembered", || isuser(&mut bridge));
        assert!(!bridge.ask("isuser:juliet:example.net"));
        bridge.finish();
    }
    assert_eq!(
        std::fs::read_to_string(&remembered).unwrap(),
        "romeo@example.net:!\n"
    );
    // `isuser = "deny"` answers itself, and the file is never asked: `check` says so.
    let text = std::fs::read_to_string(&config).unwrap();
    let denying = text.replace("verify = ", "isuser = \"deny\"\nverify = ");
    std::fs::write(&config, denying).unwrap();
    let out = run(&["check", "--config", config.to_str().unwrap()], b"");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("has isuser = \"deny\""), "{report}");
}
