//! Pool-wide invalidation through the real binary: two bridge processes with the cache on,
//! as two processes of an ejabberd pool. A password changed (or an account removed) through
//! one is refused through the other at the very next request, because both map the same
//! generations file; with a generations file each (what separate in-memory counters
//! amount to), the other process goes on serving the old password from its cache, which
//! is what these tests would catch.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::Form;
use common::*;

const GENERATIONS: &str = "extauth-bridge.generations";

/// One bridge process of the pool, talking the line protocol.
fn bridge(config: &Path) -> Live {
    Live::spawn(&["--config", config.to_str().unwrap(), "--protocol", "line"])
}

/// Asks and returns the answer and the request's outcome word from its log line.
fn ask(live: &mut Live, query: &str) -> (String, String) {
    let reply = live.ask(query).trim_end().to_owned();
    let line = live
        .wait_for_log("outcome=", Duration::from_secs(10))
        .pop()
        .unwrap();
    let outcome = line
        .split("outcome=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_owned();
    (reply, outcome)
}

/// `head` (a `[cache]` table, `state_dir`) and one backend table.
fn config(dir: &Path, name: &str, head: &str, backend: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("{head}\n[cache]\nenabled = true\nttl = \"1h\"\n\n[[backend]]\n{backend}"),
    )
    .unwrap();
    path
}

/// The scenario both backends share: `b` caches the old password, `a` changes it, `b`
/// must refuse the old one at once and accept the new one; then `b` caches the new one,
/// `a` removes the account, `b` must refuse it at once. With `shared == false` the two
/// processes have separate generations and `b` is expected to serve the old password.
fn change_through_one_seen_by_the_other(a: &mut Live, b: &mut Live, shared: bool) {
    assert_eq!(
        ask(b, "auth:romeo:example.net:oldpw"),
        ("1".into(), "yes".into())
    );
    assert_eq!(ask(b, "auth:romeo:example.net:oldpw").1, "cached");
    assert_eq!(ask(a, "setpass:romeo:example.net:newpw").0, "1");
    let after = ask(b, "auth:romeo:example.net:oldpw");
    if !shared {
        assert_eq!(after, ("1".into(), "cached".into()), "separate generations");
        return;
    }
    assert_eq!(
        after,
        ("0".into(), "no".into()),
        "old password after setpass"
    );
    assert_eq!(
        ask(b, "auth:romeo:example.net:newpw"),
        ("1".into(), "yes".into())
    );
    assert_eq!(ask(b, "auth:romeo:example.net:newpw").1, "cached");
    assert_eq!(ask(a, "removeuser:romeo:example.net").0, "1");
    assert_eq!(
        ask(b, "auth:romeo:example.net:newpw"),
        ("0".into(), "no".into()),
        "password of a removed account"
    );
}

fn users_backend(users: &Path) -> String {
    format!("name = \"local\"\ntype = \"file\"\npath = {users:?}\n")
}

#[test]
fn users_file_a_change_through_one_process_is_refused_by_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "oldpw")]);
    // No state_dir: the users file's directory holds the generations file.
    let c = config(dir.path(), "c.toml", "", &users_backend(&users));
    let (mut a, mut b) = (bridge(&c), bridge(&c));
    change_through_one_seen_by_the_other(&mut a, &mut b, true);
    let meta = std::fs::metadata(dir.path().join(GENERATIONS)).unwrap();
    assert_eq!(meta.len(), 512 * 1024);
}

#[test]
fn users_file_with_separate_generations_the_old_password_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "oldpw")]);
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&state_a).unwrap();
    std::fs::create_dir(&state_b).unwrap();
    let backend = users_backend(&users);
    let head = |d: &Path| format!("state_dir = {d:?}");
    let ca = config(dir.path(), "a.toml", &head(&state_a), &backend);
    let cb = config(dir.path(), "b.toml", &head(&state_b), &backend);
    let (mut a, mut b) = (bridge(&ca), bridge(&cb));
    change_through_one_seen_by_the_other(&mut a, &mut b, false);
}

/// A mod_auth_http API holding one account in memory, changed by the `set_password` and
/// `remove_user` calls it receives.
struct Api {
    url: String,
    _runtime: tokio::runtime::Runtime,
}

type Accounts = Arc<Mutex<HashMap<String, String>>>;

fn account(p: &HashMap<String, String>) -> String {
    format!(
        "{}@{}",
        p.get("user").map_or("", String::as_str),
        p.get("server").map_or("", String::as_str)
    )
}

impl Api {
    fn start() -> Api {
        let accounts: Accounts = Arc::new(Mutex::new(HashMap::from([(
            "romeo@example.net".to_owned(),
            "oldpw".to_owned(),
        )])));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = axum::Router::new()
            .route(
                "/check_password",
                get(
                    |State(s): State<Accounts>, Query(p): Query<HashMap<String, String>>| async move {
                        let known = s.lock().unwrap().get(&account(&p)).cloned();
                        let yes = known.is_some() && known == p.get("pass").cloned();
                        if yes { "true" } else { "false" }
                    },
                ),
            )
            .route(
                "/user_exists",
                get(
                    |State(s): State<Accounts>, Query(p): Query<HashMap<String, String>>| async move {
                        if s.lock().unwrap().contains_key(&account(&p)) { "true" } else { "false" }
                    },
                ),
            )
            .route(
                "/set_password",
                post(
                    |State(s): State<Accounts>, Form(p): Form<HashMap<String, String>>| async move {
                        let pass = p.get("pass").cloned().unwrap_or_default();
                        s.lock().unwrap().insert(account(&p), pass);
                        ""
                    },
                ),
            )
            .route(
                "/remove_user",
                post(
                    |State(s): State<Accounts>, Form(p): Form<HashMap<String, String>>| async move {
                        s.lock().unwrap().remove(&account(&p));
                        ""
                    },
                ),
            )
            .with_state(accounts);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Api {
            url,
            _runtime: runtime,
        }
    }
}

#[test]
fn http_api_with_state_dir_a_change_through_one_process_is_refused_by_the_other() {
    let api = Api::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let backend = format!("name = \"api\"\ntype = \"http\"\nurl = {:?}\n", api.url);
    let c = config(
        dir.path(),
        "c.toml",
        &format!("state_dir = {state:?}"),
        &backend,
    );
    let (mut a, mut b) = (bridge(&c), bridge(&c));
    change_through_one_seen_by_the_other(&mut a, &mut b, true);
    assert!(state.join(GENERATIONS).is_file());
}

#[test]
fn http_api_without_a_shared_directory_the_old_password_is_served() {
    let api = Api::start();
    let dir = tempfile::tempdir().unwrap();
    let backend = format!("name = \"api\"\ntype = \"http\"\nurl = {:?}\n", api.url);
    // No state_dir and no users file: counters in each process's memory.
    let c = config(dir.path(), "c.toml", "", &backend);
    let (mut a, mut b) = (bridge(&c), bridge(&c));
    change_through_one_seen_by_the_other(&mut a, &mut b, false);
}

#[test]
fn an_unusable_generations_file_stops_the_bridge_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join(GENERATIONS), b"not the right size").unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "oldpw")]);
    let c = config(
        dir.path(),
        "c.toml",
        &format!("state_dir = {state:?}"),
        &users_backend(&users),
    );
    let out = run(
        &["--config", c.to_str().unwrap(), "--protocol", "line"],
        b"auth:romeo:example.net:oldpw\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key `state_dir`"), "{err}");
    assert!(err.contains(GENERATIONS), "{err}");
    // A users file's directory that cannot hold the file: the key is the backend's path.
    let missing = dir.path().join("gone").join("users.txt");
    let c = config(dir.path(), "d.toml", "", &users_backend(&missing));
    let out = run(
        &["--config", c.to_str().unwrap(), "--protocol", "line"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key `backend[0].path`"), "{err}");
}

#[test]
fn users_command_changing_the_file_reaches_the_running_bridges_caches() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "oldpw")]);
    let c = config(dir.path(), "c.toml", "", &users_backend(&users));
    let mut b = bridge(&c);
    assert_eq!(ask(&mut b, "auth:romeo:example.net:oldpw").0, "1");
    assert_eq!(ask(&mut b, "auth:romeo:example.net:oldpw").1, "cached");
    let out = run(
        &[
            "users",
            "remove",
            users.to_str().unwrap(),
            "romeo@example.net",
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        ask(&mut b, "auth:romeo:example.net:oldpw"),
        ("0".into(), "no".into())
    );
}
