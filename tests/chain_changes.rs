//! A chain never creates or changes, below, an account that a backend above it holds or may
//! hold, and an outage never passes a change down (SPEC §10). Through the real binary, with
//! the shipped example configuration as written, against a real API that is down.

mod common;

use std::path::Path;

use common::http_server::{FaultServer, Mode};

/// `examples/http-with-file-fallback.toml` as shipped, pointed at `api_url` and a users file.
fn example_config(dir: &Path, api_url: &str, users: &Path) -> std::path::PathBuf {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/http-with-file-fallback.toml"),
    )
    .unwrap();
    assert!(example.contains("on_unavailable = \"next\""));
    let text = example
        .replace("https://accounts.example.com/xmpp", api_url)
        .replace("/etc/extauth-bridge/users", users.to_str().unwrap())
        .lines()
        .filter(|l| !l.starts_with("credentials_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Asks every line of `queries` and returns the replies, one character each.
fn replies(config: &Path, queries: &[&str]) -> String {
    let input: String = queries.iter().map(|q| format!("{q}\n")).collect();
    let out = common::run(&["--config", config.to_str().unwrap()], input.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().replace('\n', "")
}

/// The attack of the second review: while the API is down, `isuser:alice` says no, so the
/// server lets a client register alice; the registration must not land in the users file
/// (else the attacker logs in as the API's alice at every later outage), and no password
/// change or removal made during the outage may land there either.
fn outage_passes_no_change_down(api_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let users = common::users_file(dir.path(), &[("svc@example.net", "right")]);
    let before = std::fs::read(&users).unwrap();
    let config = example_config(dir.path(), api_url, &users);
    let got = replies(
        &config,
        &[
            "isuser:alice:example.net",
            "tryregister:alice:example.net:attacker-pw",
            "auth:alice:example.net:attacker-pw",
            "setpass:svc:example.net:attacker-pw",
            "removeuser:svc:example.net",
            "removeuser3:svc:example.net:right",
            // The fallback still does what it is there for: the service account logs in.
            "auth:svc:example.net:right",
            "isuser:svc:example.net",
        ],
    );
    assert_eq!(got, "00000011", "API at {api_url}");
    assert_eq!(
        std::fs::read(&users).unwrap(),
        before,
        "the users file changed"
    );
}

#[test]
fn an_api_refusing_connections_passes_no_change_to_the_file() {
    // A port nobody listens on: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    outage_passes_no_change_down(&format!("http://127.0.0.1:{port}/xmpp"));
}

#[test]
fn an_api_answering_503_passes_no_change_to_the_file() {
    let api = FaultServer::start();
    api.set(Mode::ServerError);
    outage_passes_no_change_down(&format!("{}/xmpp", api.url()));
    assert!(!api.seen().is_empty(), "the API was never asked");
}

/// The attack of the first review, without the control byte: an IdP cannot register
/// accounts and answers `isuser` by policy, so `tryregister` used to fall through to the
/// users file below it and create the IdP's `romeo` there, with the attacker's password.
#[test]
fn nothing_is_created_in_a_file_below_an_idp() {
    let dir = tempfile::tempdir().unwrap();
    let users = common::users_file(dir.path(), &[("svc@example.net", "right")]);
    let before = std::fs::read(&users).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[backend]]
name = "idp"
type = "oauth2"
issuer = "http://127.0.0.1:{port}"
token_endpoint = "http://127.0.0.1:{port}/token"
userinfo_endpoint = "http://127.0.0.1:{port}/userinfo"
client_id = "bridge"
client_auth = "none"
mode = "password_grant"
verify = "userinfo"
isuser = "deny"

[[backend]]
name = "local"
type = "file"
path = "{}"

[[route]]
domains = ["example.net"]
backends = ["idp", "local"]
on_unavailable = "next"
"#,
            users.display()
        ),
    )
    .unwrap();
    let got = replies(
        &config,
        &[
            "tryregister:romeo:example.net:secret-token:x",
            "setpass:romeo:example.net:x",
            "removeuser:svc:example.net",
            "auth:romeo:example.net:secret-token:x",
            "auth:svc:example.net:right",
        ],
    );
    assert_eq!(got, "00001");
    assert_eq!(
        std::fs::read(&users).unwrap(),
        before,
        "the users file changed"
    );
}

/// A no from a backend below an outage is no outage a cached yes may paper over: the users
/// file holds the account, and it refused the credential (changed since it was cached, by
/// another process of the pool or by `users passwd`). `stale_if_error` must not answer `1`.
#[test]
fn a_no_below_an_outage_is_never_answered_from_the_stale_cache() {
    let dir = tempfile::tempdir().unwrap();
    let api = FaultServer::start();
    let users = common::users_file(dir.path(), &[("alice@example.net", "changed")]);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[cache]
enabled = true
ttl = "1s"
stale_if_error = "10m"

[[backend]]
name = "api"
type = "http"
url = "{}/xmpp"

[[backend]]
name = "local"
type = "file"
path = "{}"

[[route]]
domains = ["example.net"]
backends = ["api", "local"]
on_unavailable = "next"
"#,
            api.url(),
            users.display()
        ),
    )
    .unwrap();
    let mut bridge = common::Live::spawn(&["--config", config.to_str().unwrap()]);
    // The API says yes to `right` (and the cache remembers it)…
    assert_eq!(bridge.ask("auth:alice:example.net:right"), "1\n");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // …then it is down: the file, which holds alice with another password, says no.
    api.set(Mode::ServerError);
    assert_eq!(bridge.ask("auth:alice:example.net:right"), "0\n");
}
