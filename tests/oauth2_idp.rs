//! The OAuth2 backend against a real IdP: django-oauth-toolkit (tests/oauth2_server/),
//! started once for this file on loopback, in the virtualenv named by
//! `EXTAUTH_TEST_IDP_VENV` (scripts/test creates it). Every mode, every client
//! authentication method, both wire protocols, and the negative cases.
//!
//! Seeded by the server (see its README): romeo/`iheartjuliet`, juliet/`wherefore:art thou`,
//! mercutio/`pässwörd✓`, tybalt (inactive); clients bridge-basic/`basic-secret`,
//! bridge-post/`post-secret`, bridge-public, `weird id:é`/`s3cr:et&+%`; introspection
//! bearer `introspect-token-123`.

mod oauth2_common;

use std::sync::OnceLock;

use oauth2_common::idp::{venv_python, Idp};
use oauth2_common::*;

const SERVER: &str = "example.net";
const USERS: [(&str, &str); 3] = [
    ("romeo", "iheartjuliet"),
    ("juliet", "wherefore:art thou"),
    ("mercutio", "pässwörd✓"),
];

/// The IdP's working directory: its database is there.
fn work_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("oauth2_idp-work")
}

fn idp() -> &'static Idp {
    static IDP: OnceLock<Idp> = OnceLock::new();
    IDP.get_or_init(|| Idp::start_in(&work_dir(), &["--password-grant-id-token"]))
}

/// Every access and refresh token the IdP holds, read from its database (DOT stores them
/// in clear): among them, those the bridge got from its own password grants.
fn issued_tokens() -> Vec<String> {
    let script = "import sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1], timeout=30)\n\
                  for table in ('accesstoken', 'refreshtoken'):\n    \
                  for (token,) in db.execute(f'select token from oauth2_provider_{table}'):\n        \
                  print(token)\n";
    let db = work_dir().join("db.sqlite3");
    venv_python(&["-c".as_ref(), script.as_ref(), db.as_os_str()])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// An access token for `user`, issued to bridge-basic, straight from the IdP; with
/// `id_token`, the OIDC id_token (a JWT) of the same grant instead.
fn token(user: &str, password: &str, id_token: bool) -> String {
    let response = block_on(idp().token_response(&reqwest::Client::new(), user, password));
    let field = if id_token { "id_token" } else { "access_token" };
    response[field].as_str().expect("a token").to_owned()
}

fn revoke(token: &str) {
    let status = block_on(async {
        reqwest::Client::new()
            .post(format!("{}/revoke_token/", idp().issuer()))
            .basic_auth("bridge-basic", Some("basic-secret"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
}

/// A `[[backend]]` for the test IdP, found by discovery from the issuer, plus `extra`.
fn backend(extra: &str) -> String {
    format!(
        "[[backend]]\nname = \"dot\"\ntype = \"oauth2\"\nissuer = \"{}\"\n{extra}\n",
        idp().issuer()
    )
}

const BASIC: &str = "client_id = \"bridge-basic\"\nclient_secret = \"basic-secret\"\n";
const POST: &str =
    "client_id = \"bridge-post\"\nclient_secret = \"post-secret\"\nclient_auth = \"post\"\n";
const PUBLIC: &str = "client_id = \"bridge-public\"\nclient_auth = \"none\"\n";

/// Every seeded password logs in; wrong, unknown and inactive ones do not.
fn assert_password_logins(config: &std::path::Path, what: &str) {
    for wire in BOTH {
        let mut bridge = Bridge::start(config, wire);
        for (user, password) in USERS {
            assert!(
                bridge.auth(user, SERVER, password),
                "{what} {wire:?} {user}"
            );
        }
        assert!(
            !bridge.auth("romeo", SERVER, "wherefore:art thou"),
            "{what}: wrong password"
        );
        assert!(
            !bridge.auth("juliet", SERVER, "iheartjuliet"),
            "{what}: wrong password"
        );
        assert!(
            !bridge.auth("benvolio", SERVER, "peace"),
            "{what}: unknown user"
        );
        assert!(
            !bridge.auth("tybalt", SERVER, "fightme"),
            "{what}: inactive user"
        );
        assert!(
            !bridge.ask("isuser:romeo:example.net"),
            "{what}: isuser falls through"
        );
        bridge.finish();
    }
}

#[test]
fn password_grant_with_userinfo_for_basic_post_and_public_clients() {
    let dir = tempfile::tempdir().unwrap();
    for client in [BASIC, POST, PUBLIC] {
        let config = write_config(
            dir.path(),
            &backend(&format!(
                "{client}scope = \"openid profile\"\nverify = \"userinfo\""
            )),
        );
        assert_password_logins(&config, client);
    }
}

#[test]
fn password_grant_with_introspection() {
    let dir = tempfile::tempdir().unwrap();
    for (client, extra) in [
        (BASIC, ""),
        (POST, ""),
        // The public client cannot introspect; the bearer token can.
        (PUBLIC, "introspection_bearer = \"introspect-token-123\"\n"),
    ] {
        let config = write_config(
            dir.path(),
            &backend(&format!(
                "{client}{extra}verify = \"introspection\"\nrequired_scope = \"openid\""
            )),
        );
        assert_password_logins(&config, client);
    }
}

#[test]
fn client_credentials_are_form_urlencoded_before_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "s3cr:et&+%\n").unwrap();
    let config = write_config(
        dir.path(),
        &backend(&format!(
            "client_id = \"weird id:é\"\nclient_secret_file = \"{}\"\nverify = \"introspection\"",
            secret.display()
        )),
    );
    assert_password_logins(&config, "weird id");
}

#[test]
fn wrong_client_secret_answers_0() {
    let dir = tempfile::tempdir().unwrap();
    for extra in [
        "client_id = \"bridge-basic\"\nclient_secret = \"nope\"\nverify = \"none\"",
        "client_id = \"bridge-post\"\nclient_secret = \"nope\"\nclient_auth = \"post\"\nverify = \"none\"",
        // Right client for the grant, a bearer the introspection endpoint refuses.
        "client_id = \"bridge-public\"\nclient_auth = \"none\"\nverify = \"introspection\"\n\
         introspection_bearer = \"not-the-bearer\"",
    ] {
        let config = write_config(dir.path(), &backend(extra));
        let mut bridge = Bridge::start(&config, Wire::Line);
        assert!(!bridge.auth("romeo", SERVER, "iheartjuliet"), "{extra}");
        bridge.finish();
    }
}

/// The same password-grant setup with `verify = "none"` trusts the grant alone.
#[test]
fn password_grant_without_verification() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &backend(&format!("{PUBLIC}verify = \"none\"")));
    assert_password_logins(&config, "verify none");
}

/// Token-as-password: romeo's token logs romeo in and nobody else; a garbage or revoked
/// token logs in no one.
fn assert_token_logins(config: &std::path::Path, what: &str, id_token: bool) {
    for wire in BOTH {
        let romeo = token("romeo", "iheartjuliet", id_token);
        let mercutio = token("mercutio", "pässwörd✓", id_token);
        let mut bridge = Bridge::start(config, wire);
        assert!(bridge.auth("romeo", SERVER, &romeo), "{what} {wire:?}");
        assert!(
            bridge.auth("mercutio", SERVER, &mercutio),
            "{what} {wire:?}"
        );
        assert!(
            !bridge.auth("juliet", SERVER, &romeo),
            "{what}: someone else's token"
        );
        assert!(
            !bridge.auth("romeo", SERVER, &mercutio),
            "{what}: someone else's token"
        );
        assert!(
            !bridge.auth("romeo", SERVER, "garbage-token"),
            "{what}: garbage"
        );
        assert!(
            !bridge.auth("romeo", SERVER, "iheartjuliet"),
            "{what}: password"
        );
        if !id_token {
            revoke(&romeo);
            assert!(!bridge.auth("romeo", SERVER, &romeo), "{what}: revoked");
            assert!(
                bridge.auth("mercutio", SERVER, &mercutio),
                "{what} {wire:?}"
            );
        }
        bridge.finish();
    }
}

#[test]
fn token_as_password_via_introspection() {
    let dir = tempfile::tempdir().unwrap();
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, "introspect-token-123").unwrap();
    for extra in [
        format!(
            "{BASIC}mode = \"token\"\nvalidate = \"introspection\"\naudience = \"bridge-basic\""
        ),
        format!(
            "{POST}mode = \"token\"\nvalidate = \"introspection\"\naudience = \"bridge-basic\""
        ),
        format!(
            "mode = \"token\"\nvalidate = \"introspection\"\naudience = \"bridge-basic\"\n\
             introspection_bearer_file = \"{}\"",
            bearer.display()
        ),
    ] {
        let config = write_config(dir.path(), &backend(&extra));
        assert_token_logins(&config, &extra, false);
    }
    // A token for another audience is refused.
    let config = write_config(
        dir.path(),
        &backend(&format!(
            "{BASIC}mode = \"token\"\nvalidate = \"introspection\"\naudience = \"bridge-post\""
        )),
    );
    let mut bridge = Bridge::start(&config, Wire::Line);
    assert!(!bridge.auth("romeo", SERVER, &token("romeo", "iheartjuliet", false)));
    bridge.finish();
}

/// `introspection_bearer_env`: the bearer is read from the environment at start-up; the
/// wrong one is refused by the IdP, an unset variable is a configuration error.
#[test]
fn introspection_bearer_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let var = "EXTAUTH_TEST_INTROSPECTION_BEARER";
    let config = write_config(
        dir.path(),
        &backend(&format!(
            "mode = \"token\"\nvalidate = \"introspection\"\naudience = \"bridge-basic\"\n\
             introspection_bearer_env = \"{var}\""
        )),
    );
    let romeo = token("romeo", "iheartjuliet", false);
    for (bearer, works) in [("introspect-token-123", true), ("not-the-bearer", false)] {
        let mut bridge = Bridge::start_env(&config, Wire::Line, &[(var, bearer)]);
        assert_eq!(bridge.auth("romeo", SERVER, &romeo), works, "{bearer}");
        assert!(!bridge.auth("juliet", SERVER, &romeo), "{bearer}");
        let log = bridge.finish();
        assert!(!log.contains(bearer), "{bearer} in the log: {log}");
    }
    let out = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .env_remove(var)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("introspection_bearer_env"), "{err}");
}

#[test]
fn token_as_password_via_userinfo() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &backend("mode = \"token\"\nvalidate = \"userinfo\"\naudience = \"any\""),
    );
    assert_token_logins(&config, "userinfo", false);
}

/// DOT's id_tokens are RS256 JWTs signed with the key its JWKS publishes: the local
/// validation path against a real issuer, its real discovery and JWKS.
#[test]
fn id_token_as_password_via_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &backend("mode = \"token\"\nvalidate = \"jwt\"\naudience = \"bridge-basic\""),
    );
    assert_token_logins(&config, "jwt", true);
    let config = write_config(
        dir.path(),
        &backend("mode = \"token\"\nvalidate = \"jwt\"\naudience = \"bridge-post\""),
    );
    let mut bridge = Bridge::start(&config, Wire::Line);
    assert!(!bridge.auth("romeo", SERVER, &token("romeo", "iheartjuliet", true)));
    bridge.finish();
}

/// `auto`: the JWT-shaped id_token is validated locally, a password goes to the grant.
#[test]
fn auto_mode_against_the_real_idp() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &backend(&format!(
            "{BASIC}mode = \"auto\"\nvalidate = \"jwt\"\naudience = \"bridge-basic\"\n\
             verify = \"introspection\""
        )),
    );
    for wire in BOTH {
        let mut bridge = Bridge::start(&config, wire);
        assert!(bridge.auth("romeo", SERVER, &token("romeo", "iheartjuliet", true)));
        assert!(bridge.auth("juliet", SERVER, "wherefore:art thou"));
        assert!(!bridge.auth("juliet", SERVER, &token("romeo", "iheartjuliet", true)));
        assert!(!bridge.auth("juliet", SERVER, "iheartjuliet"));
        bridge.finish();
    }
}

/// The operator's `check`: discovery, JWKS and the client credentials, without a user.
#[test]
fn check_reaches_the_idp_and_tests_the_client_credentials() {
    let check = |extra: &str| {
        let text = backend(extra);
        let config = extauth_bridge::config::Config::parse(&text, "test.toml").unwrap();
        let backend =
            extauth_bridge::router::build_backend(&config.backends[0], 0, "test.toml").unwrap();
        block_on(backend.check())
    };
    let ok = check(&format!("{BASIC}verify = \"introspection\"")).unwrap();
    assert!(
        ok.contains("discovery ok") && ok.contains("credentials accepted"),
        "{ok}"
    );
    let ok = check("mode = \"token\"\nvalidate = \"jwt\"\naudience = \"bridge-basic\"").unwrap();
    assert!(ok.contains("JWKS has 1 usable key"), "{ok}");
    let ok = check(PUBLIC).unwrap();
    assert!(ok.contains("token endpoint accepts the client"), "{ok}");
    assert!(check("client_id = \"bridge-basic\"\nclient_secret = \"nope\"").is_err());
    assert!(check("client_id = \"bridge-nobody\"\nclient_auth = \"none\"").is_err());
}

/// Passwords, tokens (those given as passwords, and those the bridge got from its own
/// successful password grants), client secrets and the introspection bearer never reach
/// the log, even at trace level, in either format.
#[test]
fn no_secret_in_the_log_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let romeo = token("romeo", "iheartjuliet", false);
    let id_token = token("juliet", "wherefore:art thou", true);
    let secrets = [
        "iheartjuliet",
        "wherefore:art thou",
        "wherefore%3Aart",
        "wrong-pass-xyz",
        "post-secret",
        "basic-secret",
        "YnJpZGdlLWJhc2ljOmJhc2ljLXNlY3JldA==",
        "introspect-token-123",
        &romeo,
        id_token.rsplit('.').next().unwrap(),
    ];
    let configs = [
        format!("{POST}verify = \"introspection\""),
        format!("{BASIC}verify = \"userinfo\"\nscope = \"openid profile\""),
        "mode = \"token\"\nvalidate = \"introspection\"\naudience = \"bridge-basic\"\n\
         introspection_bearer = \"introspect-token-123\""
            .to_owned(),
        format!("{BASIC}mode = \"token\"\nvalidate = \"userinfo\"\naudience = \"any\""),
        "mode = \"token\"\nvalidate = \"jwt\"\naudience = \"bridge-basic\"".to_owned(),
    ];
    let before = issued_tokens();
    let mut logs = Vec::new();
    for (i, extra) in configs.iter().enumerate() {
        let config = write_config(dir.path(), &backend(extra));
        // The first two configurations do the password grant: it must succeed, so that
        // the bridge holds access tokens of its own while logging at trace level.
        let grants = i < 2;
        for format in ["text", "json"] {
            let mut bridge = Bridge::start_with(
                &config,
                Wire::Line,
                &["--log-level", "trace", "--log-format", format],
            );
            assert_eq!(bridge.auth("romeo", SERVER, "iheartjuliet"), grants);
            assert_eq!(bridge.auth("juliet", SERVER, "wherefore:art thou"), grants);
            bridge.auth("romeo", SERVER, "wrong-pass-xyz");
            bridge.auth("romeo", SERVER, &romeo);
            bridge.auth("juliet", SERVER, &id_token);
            let log = bridge.finish();
            assert!(log.contains("request"), "{extra}: nothing logged?\n{log}");
            for s in &secrets {
                assert!(
                    !log.contains(s),
                    "{extra} ({format}): {s:?} in the log:\n{log}"
                );
            }
            logs.push((format!("{extra} ({format})"), log));
        }
    }
    let issued = issued_tokens();
    let granted = issued.iter().filter(|t| !before.contains(t)).count();
    // Two logins, each an access and a refresh token, for each of the four grant runs.
    assert!(granted >= 16, "only {granted} new tokens");
    for (what, log) in &logs {
        for token in &issued {
            assert!(
                !log.contains(token.as_str()),
                "{what}: {token:?} in the log:\n{log}"
            );
        }
    }
}
