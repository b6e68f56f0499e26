//! The rules that keep a wrong `1` out of the OAuth2 backend (SPEC §10), each shown on the
//! real bridge against a loopback IdP (tests/oauth2_common/fake.rs) that records every
//! request: a token the client shaped so that no request can be built, an IdP name that
//! only matches after folding, an unverified email, a token meant for another application.

mod common;
mod oauth2_common;

use std::path::{Path, PathBuf};

use oauth2_common::fake::{access_token, FakeIdp};
use oauth2_common::{Bridge, Wire, BOTH};
use serde_json::json;

/// An oauth2 backend with `settings`, then a users file holding `romeo@example.net` with
/// `file_password`, chained with `on_unavailable = "next"`: whatever reaches the file with
/// that password is a `1`, so a `0` shows the file was not asked.
fn chained(dir: &Path, settings: &str, file_password: &str) -> PathBuf {
    let users = common::users_file(dir, &[("romeo@example.net", file_password)]);
    let path = dir.join("config.toml");
    let text = format!(
        "timeout = \"4s\"\n\n[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n{settings}\n\
         [[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n\n\
         [[route]]\ndomains = [\"example.net\"]\nbackends = [\"idp\", \"local\"]\n\
         on_unavailable = \"next\"\n",
        users.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// One oauth2 backend with `settings`, alone.
fn alone(dir: &Path, settings: &str) -> PathBuf {
    oauth2_common::write_config(
        dir,
        &format!("[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n{settings}"),
    )
}

fn userinfo_settings(base: &str) -> String {
    format!(
        "mode = \"token\"\nvalidate = \"userinfo\"\nuserinfo_endpoint = \"{base}/userinfo\"\n\
         audience = \"any\"\n"
    )
}

fn introspection_settings(base: &str, audience: &str) -> String {
    format!(
        "mode = \"token\"\nvalidate = \"introspection\"\n\
         introspection_endpoint = \"{base}/introspect\"\nintrospection_bearer = \"fake-bearer\"\n\
         audience = \"{audience}\"\n"
    )
}

/// Item 1: a token with a control byte, DEL, a space or a non-ASCII letter cannot go into
/// an `Authorization` header (reqwest fails while building the request, which used to be
/// classified `Unavailable`, so the next backend was asked). It is refused before any
/// request, a final `0`: the users file below, which holds exactly that password, is
/// not asked, and the IdP sees nothing.
#[test]
fn a_token_that_is_not_visible_ascii_is_a_final_no_without_any_request() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &idp.base;
    let jwt = format!(
        "mode = \"token\"\nvalidate = \"jwt\"\nissuer = \"{base}\"\njwks_uri = \"{base}/jwks\"\n\
         audience = \"bridge\"\n"
    );
    let auto = format!(
        "mode = \"auto\"\ntoken_prefixes = [\"secret-token:\"]\nvalidate = \"userinfo\"\n\
         token_endpoint = \"{base}/token\"\nuserinfo_endpoint = \"{base}/userinfo\"\n\
         client_id = \"bridge\"\nclient_auth = \"none\"\naudience = \"any\"\n"
    );
    let good = access_token("romeo");
    for settings in [
        userinfo_settings(base),
        introspection_settings(base, "any"),
        jwt,
        auto,
    ] {
        for bad in [
            format!("secret-token:{good}\u{1}"),
            format!("secret-token:{good}\u{7f}"),
            format!("secret-token:{good} x"),
            format!("secret-token:{good}\u{e9}"),
            format!("secret-token:\t{good}"),
        ] {
            let config = chained(dir.path(), &settings, &bad);
            for wire in BOTH {
                let mut bridge = Bridge::start(&config, wire);
                assert!(
                    !bridge.auth("romeo", "example.net", &bad),
                    "{settings}: {bad:?} reached the users file"
                );
                bridge.finish();
            }
        }
    }
    assert_eq!(idp.seen(), Vec::<String>::new(), "requests were made");
}

/// Item 1, the other side: a Prosody token (`secret-token:` and a `:`) and a token with
/// every visible ASCII character are sent and work.
#[test]
fn visible_ascii_tokens_with_prosody_prefix_are_sent() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    // The fake's tokens are `At-USER-SECRET`; the user part may hold any visible ASCII.
    let user = "romeo";
    let token = access_token(user);
    let config = alone(dir.path(), &userinfo_settings(&idp.base));
    let mut bridge = Bridge::start(&config, Wire::Line);
    assert!(bridge.auth(user, "example.net", &token));
    bridge.finish();
    let odd = access_token("r!\"#$%&'()*+,-./;<=>?@[\\]^_`{|}~o");
    idp.set_claims(
        "r!\"#$%&'()*+,-./;<=>?@[\\]^_`{|}~o",
        json!({"preferred_username": "romeo"}),
    );
    let mut bridge = Bridge::start(&config, Wire::Ejabberd);
    assert!(bridge.auth(user, "example.net", &odd));
    bridge.finish();
    assert_eq!(idp.seen().len(), 2, "{:?}", idp.seen());
}

/// Item 1, the password grant: the password travels form-encoded in the body, so control
/// bytes are fine to send; the IdP's `invalid_grant` is a final `0` (the users file holding
/// that password is not asked), nothing of it becomes `Unavailable`.
#[test]
fn a_password_with_control_bytes_goes_to_the_token_endpoint_form_encoded() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &idp.base;
    let settings = format!(
        "token_endpoint = \"{base}/token\"\nuserinfo_endpoint = \"{base}/userinfo\"\n\
         client_id = \"bridge\"\nclient_auth = \"none\"\n"
    );
    let bad = "pass\u{1}w\u{7f}rd \u{e9}";
    let config = chained(dir.path(), &settings, bad);
    let mut bridge = Bridge::start(&config, Wire::Line);
    assert!(!bridge.auth("romeo", "example.net", bad));
    assert!(bridge.auth("romeo", "example.net", "right"));
    bridge.finish();
    assert_eq!(
        idp.seen()
            .iter()
            .filter(|r| r.as_str() == "POST /token")
            .count(),
        2
    );
}

/// Item 2: the IdP's `Romeo` is another account than `romeo` at a case-sensitive IdP, and
/// `\u{212A}ate` (KELVIN SIGN) is not `kate`: both are refused by default. With
/// `username_case = "ascii"`, `Romeo` is `romeo`, and the KELVIN SIGN still is not `kate`.
#[test]
fn the_identity_check_is_exact_unless_ascii_folding_is_asked_for() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    idp.set_claims("kelvin", json!({"preferred_username": "\u{212A}ate"}));
    let base = &idp.base;
    for (case, romeo_ok) in [
        ("", false),
        ("username_case = \"exact\"\n", false),
        ("username_case = \"ascii\"\n", true),
    ] {
        for settings in [
            userinfo_settings(base),
            introspection_settings(base, "bridge"),
        ] {
            let config = alone(dir.path(), &format!("{settings}{case}"));
            for wire in BOTH {
                let mut bridge = Bridge::start(&config, wire);
                assert_eq!(
                    bridge.auth("romeo", "example.net", &access_token("Romeo")),
                    romeo_ok,
                    "{settings}{case}"
                );
                assert!(
                    !bridge.auth("kate", "example.net", &access_token("kelvin")),
                    "{settings}{case}"
                );
                assert!(bridge.auth("romeo", "example.net", &access_token("romeo")));
                bridge.finish();
            }
        }
    }
}

/// Item 3: with `username_field = "email"`, an address the IdP has not verified names no
/// one: mallory's token with romeo's unverified address is not romeo's, through userinfo
/// and introspection alike; `"true"` as a string or a missing claim are not verified.
#[test]
fn an_email_identity_needs_email_verified_true() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &idp.base;
    for (who, verified) in [
        ("mallory-false", json!(false)),
        ("mallory-string", json!("true")),
        ("mallory-missing", json!(null)),
        ("romeo-verified", json!(true)),
    ] {
        let mut claims = json!({"preferred_username": who, "email": "romeo@example.net"});
        if !verified.is_null() {
            claims["email_verified"] = verified;
        }
        idp.set_claims(who, claims);
    }
    for settings in [
        userinfo_settings(base),
        introspection_settings(base, "bridge"),
    ] {
        let config = alone(
            dir.path(),
            &format!("{settings}username_field = \"email\"\n"),
        );
        let mut bridge = Bridge::start(&config, Wire::Line);
        for who in ["mallory-false", "mallory-string", "mallory-missing"] {
            assert!(
                !bridge.auth("romeo", "example.net", &access_token(who)),
                "{settings}: {who}"
            );
        }
        assert!(bridge.auth("romeo", "example.net", &access_token("romeo-verified")));
        bridge.finish();
    }
}

/// Item 4: tokens as passwords without an audience are a configuration error (exit 2,
/// naming the file and the key) for every `validate`, in `token` and `auto` mode: without
/// one, a token the IdP issued to any other application would log in.
#[test]
fn tokens_as_passwords_need_an_audience_or_an_explicit_any() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &idp.base;
    for mode in ["token", "auto"] {
        for validate in ["introspection", "userinfo", "jwt"] {
            let settings = format!(
                "mode = \"{mode}\"\nvalidate = \"{validate}\"\nissuer = \"{base}\"\n\
                 client_id = \"bridge\"\nclient_auth = \"none\"\nintrospection_bearer = \"b\"\n"
            );
            let config = alone(dir.path(), &settings);
            let out = common::run(&["--config", config.to_str().unwrap()], b"auth:a:b:c\n");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{settings}: {err}");
            assert!(
                err.contains(config.to_str().unwrap()) && err.contains("backend[0].audience"),
                "{err}"
            );
            assert!(out.stdout.is_empty());
        }
    }
    assert_eq!(idp.seen(), Vec::<String>::new());
}

/// Item 4: with introspection, the configured audience must be in `aud` (a string or an
/// array) or be the token's `client_id`: another application's token is a `0`.
#[test]
fn an_introspected_token_of_another_application_is_refused() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    idp.set_claims(
        "other-app",
        json!({"username": "romeo", "client_id": "game"}),
    );
    idp.set_claims(
        "other-aud",
        json!({"username": "romeo", "client_id": "game", "aud": ["wiki", "chat"]}),
    );
    idp.set_claims(
        "in-aud",
        json!({"username": "romeo", "client_id": "game", "aud": ["wiki", "bridge"]}),
    );
    idp.set_claims(
        "aud-string",
        json!({"username": "romeo", "client_id": "game", "aud": "bridge"}),
    );
    let config = alone(dir.path(), &introspection_settings(&idp.base, "bridge"));
    for wire in BOTH {
        let mut bridge = Bridge::start(&config, wire);
        assert!(!bridge.auth("romeo", "example.net", &access_token("other-app")));
        assert!(!bridge.auth("romeo", "example.net", &access_token("other-aud")));
        assert!(bridge.auth("romeo", "example.net", &access_token("in-aud")));
        assert!(bridge.auth("romeo", "example.net", &access_token("aud-string")));
        // The fake's own tokens carry client_id = "bridge".
        assert!(bridge.auth("romeo", "example.net", &access_token("romeo")));
        bridge.finish();
    }
    // `audience = "any"` is the operator's explicit choice: then the game's token passes.
    let config = alone(dir.path(), &introspection_settings(&idp.base, "any"));
    let mut bridge = Bridge::start(&config, Wire::Line);
    assert!(bridge.auth("romeo", "example.net", &access_token("other-app")));
    bridge.finish();
}

/// Item 4: `check` warns about `audience = "any"` and about `validate = "userinfo"`, which
/// cannot check an audience; a bound configuration has no such warning.
#[test]
fn check_warns_about_unbound_tokens() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &idp.base;
    for (settings, warning) in [
        (
            introspection_settings(base, "any"),
            Some("audience = \"any\""),
        ),
        (
            userinfo_settings(base),
            Some("validate = \"userinfo\" cannot check"),
        ),
        (introspection_settings(base, "bridge"), None),
    ] {
        let config = alone(dir.path(), &settings);
        let out = common::run(&["--config", config.to_str().unwrap(), "check"], b"");
        let text = String::from_utf8_lossy(&out.stdout);
        match warning {
            Some(w) => assert!(
                text.contains(w) && text.contains("warn"),
                "{settings}: {text}"
            ),
            None => assert!(!text.contains("audience"), "{settings}: {text}"),
        }
    }
}

/// Every OAuth2 example in README.md is a valid configuration under these rules (an
/// audience where tokens are passwords, no credentials in URLs…). Secrets named by file or
/// variable are given inline here: the files do not exist on the test machine.
#[test]
fn the_readme_oauth2_examples_are_valid() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains("type = \"oauth2\""))
        .collect();
    assert!(blocks.len() >= 3, "{}", blocks.len());
    for block in blocks {
        let text: String = block
            .lines()
            .map(|l| {
                if l.starts_with("client_secret_file") || l.starts_with("client_secret_env") {
                    "client_secret = \"s\"".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = extauth_bridge::config::Config::parse(&text, "README.md")
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (i, b) in config.backends.iter().enumerate() {
            if let extauth_bridge::config::BackendConfig::Oauth2(_) = b {
                if let Err(e) = extauth_bridge::router::build_backend(b, i, "README.md") {
                    panic!("{e}\n{text}");
                }
            }
        }
    }
}

/// Item 12: no configured OAuth2 URL may carry `user:password@` (a password in the
/// configuration that would be logged with the URL): a configuration error naming the key.
#[test]
fn credentials_in_configured_urls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2-in-url";
    for key in [
        "issuer",
        "token_endpoint",
        "introspection_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
    ] {
        for credentials in [
            format!("bridge:{secret}@"),
            "bridge@".to_owned(),
            format!(":{secret}@"),
        ] {
            let settings = format!(
                "mode = \"auto\"\nvalidate = \"jwt\"\nverify = \"introspection\"\n\
                 issuer = \"https://idp.example\"\naudience = \"bridge\"\nclient_id = \"bridge\"\n\
                 client_secret = \"s\"\n{key} = \"https://{credentials}idp.example/x\"\n"
            )
            .replacen(
                "issuer = \"https://idp.example\"\n",
                "",
                usize::from(key == "issuer"),
            );
            let config = alone(dir.path(), &settings);
            let out = common::run(&["--config", config.to_str().unwrap()], b"");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{settings}: {err}");
            assert!(err.contains(&format!("backend[0].{key}")), "{err}");
            assert!(!err.contains(secret), "{err}");
        }
    }
}

/// Item 12: an endpoint learned from discovery with `user:password@` is refused before it
/// is used or logged: the login is a `0`, nothing is sent there, and the password never
/// reaches the log, even at trace level.
#[test]
fn credentials_in_discovered_urls_are_refused_and_never_logged() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &idp.base;
    let secret = "hunter2-in-discovery";
    let host = base.trim_start_matches("http://");
    idp.set_discovery(json!({
        "token_endpoint": format!("http://bridge:{secret}@{host}/token"),
        "jwks_uri": format!("http://bridge:{secret}@{host}/jwks"),
    }));
    let settings = format!(
        "issuer = \"{base}\"\nclient_id = \"bridge\"\nclient_auth = \"none\"\n\
         userinfo_endpoint = \"{base}/userinfo\"\n"
    );
    let jwt = format!(
        "issuer = \"{base}\"\nmode = \"token\"\nvalidate = \"jwt\"\naudience = \"bridge\"\n"
    );
    for settings in [settings, jwt] {
        let config = alone(dir.path(), &settings);
        let mut bridge = Bridge::start_with(&config, Wire::Line, &["--log-level", "trace"]);
        assert!(!bridge.auth("romeo", "example.net", "right"));
        assert!(!bridge.auth(
            "romeo",
            "example.net",
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ4In0.c2ln"
        ));
        let log = bridge.finish();
        assert!(!log.contains(secret), "{log}");
        assert!(log.contains("credentials"), "{log}");
    }
    let seen = idp.seen();
    assert!(
        !seen
            .iter()
            .any(|r| r.contains("/token") || r.contains("/jwks")),
        "{seen:?}"
    );
}
