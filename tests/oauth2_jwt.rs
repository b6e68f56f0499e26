//! `validate = "jwt"`: tokens signed here, checked by the real bridge binary against a JWKS
//! served by a small axum IdP on loopback (discovery documents, JWKS with a hit counter, a
//! token endpoint that counts calls). Keys are test-only files in tests/data/oauth2/.

mod oauth2_common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth2_common::*;
use serde_json::{json, Value};

const AUDIENCE: &str = "xmpp-bridge";

/// A test key: how to sign with it and how the JWKS publishes it.
struct Key {
    kid: &'static str,
    alg: Algorithm,
    signing: EncodingKey,
}

impl Key {
    fn new(kid: &'static str, alg: Algorithm, signing: EncodingKey) -> Key {
        Key { kid, alg, signing }
    }
    fn rsa(kid: &'static str, der: &[u8]) -> Key {
        Key::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(der))
    }
    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.signing, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk
    }
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.signing).unwrap()
    }
}

fn rsa_a() -> Key {
    Key::rsa("rsa-a", include_bytes!("data/oauth2/rsa-a.der"))
}
fn rsa_b() -> Key {
    Key::rsa("rsa-b", include_bytes!("data/oauth2/rsa-b.der"))
}
fn rsa_c() -> Key {
    Key::rsa("rsa-c", include_bytes!("data/oauth2/rsa-c.der"))
}
fn ec() -> Key {
    let der = include_bytes!("data/oauth2/ec.p8.der");
    Key::new("ec", Algorithm::ES256, EncodingKey::from_ec_der(der))
}
fn ed() -> Key {
    let der = include_bytes!("data/oauth2/ed.p8.der");
    Key::new("ed", Algorithm::EdDSA, EncodingKey::from_ed_der(der))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// base64url without padding, for hand-made tokens.
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[derive(Clone, Default)]
struct IdpState {
    base: Arc<Mutex<String>>,
    keys: Arc<Mutex<Vec<Jwk>>>,
    jwks_hits: Arc<AtomicUsize>,
    /// The JWKS answers 500 while set.
    jwks_down: Arc<AtomicBool>,
    /// The JWKS comes after 1 MiB of whitespace while set (valid JSON, over the cap).
    jwks_oversized: Arc<AtomicBool>,
    token_hits: Arc<AtomicUsize>,
    /// Requests for paths without a route (answered 404).
    unrouted: Arc<Mutex<Vec<String>>>,
}

/// The loopback IdP: `/` is a good issuer; `/wrong` publishes someone else's issuer;
/// `/broken` has a JWKS that answers 500.
struct Idp {
    base: String,
    state: IdpState,
    _runtime: tokio::runtime::Runtime,
}

impl Idp {
    fn start(keys: &[&Key]) -> Idp {
        let (runtime, listener, base) = listen("127.0.0.1:0".parse().unwrap());
        let state = IdpState::default();
        *state.base.lock().unwrap() = base.clone();
        *state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
        async fn oidc(State(s): State<IdpState>) -> Json<Value> {
            let base = s.base.lock().unwrap().clone();
            Json(json!({"issuer": base, "jwks_uri": format!("{base}/jwks"),
                        "token_endpoint": format!("{base}/token")}))
        }
        async fn wrong(State(s): State<IdpState>) -> Json<Value> {
            let base = s.base.lock().unwrap().clone();
            Json(json!({"issuer": "https://evil.example", "jwks_uri": format!("{base}/jwks")}))
        }
        async fn broken(State(s): State<IdpState>) -> Json<Value> {
            let base = s.base.lock().unwrap().clone();
            Json(
                json!({"issuer": format!("{base}/broken"), "jwks_uri": format!("{base}/broken/jwks")}),
            )
        }
        async fn jwks(State(s): State<IdpState>) -> Result<String, StatusCode> {
            s.jwks_hits.fetch_add(1, Ordering::SeqCst);
            if s.jwks_down.load(Ordering::SeqCst) {
                return Err(StatusCode::INTERNAL_SERVER_ERROR);
            }
            let set = json!({"keys": *s.keys.lock().unwrap()}).to_string();
            if s.jwks_oversized.load(Ordering::SeqCst) {
                return Ok(" ".repeat(1 << 20) + &set);
            }
            Ok(set)
        }
        async fn token(State(s): State<IdpState>) -> (StatusCode, Json<Value>) {
            s.token_hits.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant"})),
            )
        }
        // `/half/{case}`: an issuer with one good metadata document and one that fails
        // as `case` says: `{rfc8414|oidc}-{401|403|html|302|500|wrong-issuer}`, with
        // `-partial` the good one lacking `jwks_uri`.
        async fn half(s: &IdpState, document: &str, case: &str) -> axum::response::Response {
            use axum::response::IntoResponse;
            let base = s.base.lock().unwrap().clone();
            let issuer = format!("{base}/half/{case}");
            let (case, good) = match case.strip_suffix("-partial") {
                Some(case) => (case, json!({ "issuer": issuer })),
                None => (
                    case,
                    json!({"issuer": issuer, "jwks_uri": format!("{base}/jwks")}),
                ),
            };
            let Some(fault) = case
                .strip_prefix(document)
                .and_then(|c| c.strip_prefix('-'))
            else {
                return Json(good).into_response();
            };
            let html = [(axum::http::header::CONTENT_TYPE, "text/html")];
            match fault {
                "401" => StatusCode::UNAUTHORIZED.into_response(),
                "403" => (StatusCode::FORBIDDEN, html, "<html>no</html>").into_response(),
                "html" => (StatusCode::OK, html, "<html>log in</html>").into_response(),
                "302" => (StatusCode::FOUND, [("location", "/login")]).into_response(),
                "500" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                "wrong-issuer" => Json(json!({"issuer": format!("{base}/other"),
                                              "jwks_uri": format!("{base}/jwks")}))
                .into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
        async fn half_rfc8414(
            State(s): State<IdpState>,
            Path(case): Path<String>,
        ) -> axum::response::Response {
            half(&s, "rfc8414", &case).await
        }
        async fn half_oidc(
            State(s): State<IdpState>,
            Path(case): Path<String>,
        ) -> axum::response::Response {
            half(&s, "oidc", &case).await
        }
        async fn unrouted(State(s): State<IdpState>, uri: axum::http::Uri) -> StatusCode {
            s.unrouted.lock().unwrap().push(uri.path().to_owned());
            StatusCode::NOT_FOUND
        }
        async fn mac_token() -> Json<Value> {
            Json(json!({"access_token": "abc", "token_type": "mac"}))
        }
        async fn bearer_token() -> Json<Value> {
            Json(json!({"access_token": "abc", "token_type": "Bearer"}))
        }
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(oidc))
            .route("/wrong/.well-known/openid-configuration", get(wrong))
            .route("/broken/.well-known/openid-configuration", get(broken))
            .route(
                "/broken/jwks",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/mac/token", post(mac_token))
            .route("/bearer/token", post(bearer_token))
            .route(
                "/.well-known/oauth-authorization-server/half/{case}",
                get(half_rfc8414),
            )
            .route(
                "/half/{case}/.well-known/openid-configuration",
                get(half_oidc),
            )
            .fallback(unrouted)
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Idp {
            base,
            state,
            _runtime: runtime,
        }
    }

    fn publish(&self, keys: &[&Key]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Good claims for `user`, valid for ten minutes.
    fn claims(&self, user: &str) -> Value {
        json!({"iss": self.base, "aud": AUDIENCE, "sub": format!("id-{user}"),
               "preferred_username": user, "iat": now(), "exp": now() + 600})
    }

    fn config(&self, dir: &std::path::Path, issuer_path: &str, extra: &str) -> std::path::PathBuf {
        write_config(
            dir,
            &format!(
                "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"{}{issuer_path}\"\n\
                 mode = \"token\"\nvalidate = \"jwt\"\naudience = \"{AUDIENCE}\"\n{extra}",
                self.base
            ),
        )
    }
}

fn a_header() -> Header {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-a".into());
    h
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

#[test]
fn good_and_bad_tokens_on_both_wire_protocols() {
    let (a, ec, ed) = (rsa_a(), ec(), ed());
    let idp = Idp::start(&[&a, &ec, &ed]);
    let dir = tempfile::tempdir().unwrap();
    let config = idp.config(dir.path(), "", "");
    let good = idp.claims("romeo");

    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(good.to_string().as_bytes())
    );
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-a".into());
    let confusion_pem = jsonwebtoken::encode(
        &hs,
        &good,
        &EncodingKey::from_secret(include_bytes!("data/oauth2/rsa-a.pub.pem")),
    )
    .unwrap();
    let confusion_der = jsonwebtoken::encode(
        &hs,
        &good,
        &EncodingKey::from_secret(include_bytes!("data/oauth2/rsa-a.pub.pkcs1.der")),
    )
    .unwrap();
    // Romeo's header and signature on a payload that says juliet.
    let romeo = a.sign(&good);
    let parts: Vec<&str> = romeo.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(idp.claims("juliet").to_string().as_bytes()),
        parts[2]
    );
    // Key b's signature under a header that names key a.
    let forged = jsonwebtoken::encode(&a_header(), &good, &rsa_b().signing).unwrap();
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");

    let cases: Vec<(&str, &str, String, bool)> = vec![
        ("good RS256", "romeo", romeo.clone(), true),
        ("good ES256", "romeo", ec.sign(&good), true),
        ("good EdDSA", "romeo", ed.sign(&good), true),
        (
            // Exact by default: `Juliet` may be another account at the IdP.
            "name in another case",
            "juliet",
            a.sign(&idp.claims("Juliet")),
            false,
        ),
        (
            "xmpp: subject",
            "juliet",
            a.sign(&with(
                idp.claims("x"),
                "sub",
                json!("xmpp:juliet@example.net"),
            )),
            true,
        ),
        ("another user's valid token", "juliet", romeo.clone(), false),
        (
            "xmpp: subject of another domain",
            "juliet",
            a.sign(&with(
                idp.claims("x"),
                "sub",
                json!("xmpp:juliet@example.org"),
            )),
            false,
        ),
        (
            "expired",
            "romeo",
            a.sign(&with(good.clone(), "exp", json!(now() - 120))),
            false,
        ),
        (
            "not yet valid",
            "romeo",
            a.sign(&with(good.clone(), "nbf", json!(now() + 600))),
            false,
        ),
        (
            "wrong aud",
            "romeo",
            a.sign(&with(good.clone(), "aud", json!("other-app"))),
            false,
        ),
        (
            "wrong iss",
            "romeo",
            a.sign(&with(good.clone(), "iss", json!("https://evil.example"))),
            false,
        ),
        ("no exp", "romeo", a.sign(&no_exp), false),
        ("alg none", "romeo", alg_none, false),
        (
            "HS256 keyed with the public key PEM",
            "romeo",
            confusion_pem,
            false,
        ),
        (
            "HS256 keyed with the public key DER",
            "romeo",
            confusion_der,
            false,
        ),
        ("tampered payload", "juliet", tampered, false),
        ("signed by an unpublished key", "romeo", forged, false),
        ("garbage", "romeo", "not-a-token".into(), false),
    ];
    for wire in BOTH {
        let mut bridge = Bridge::start_with(&config, wire, &["--log-level", "trace"]);
        for (what, user, token, want) in &cases {
            assert_eq!(
                bridge.auth(user, "example.net", token),
                *want,
                "{what} ({wire:?})"
            );
        }
        // The identity check: a valid token is only good for its own user.
        assert!(!bridge.auth("romeo", "example.net", &idp.claims("x").to_string()));
        assert!(
            !bridge.ask("isuser:romeo:example.net"),
            "isuser falls through to nothing"
        );
        let log = bridge.finish();
        for (what, _, token, _) in &cases {
            let signature = token.rsplit('.').next().unwrap();
            assert!(
                signature.len() < 8 || !log.contains(signature),
                "{what}: token in the log"
            );
        }
    }
    // Every case above ran on cached keys: one fetch per bridge process.
    assert_eq!(idp.jwks_hits(), 2);
}

#[test]
fn unknown_kid_refetches_the_jwks_at_most_once_a_minute() {
    let (a, b, c) = (rsa_a(), rsa_b(), rsa_c());
    let idp = Idp::start(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::start(&idp.config(dir.path(), "", ""), Wire::Line);
    let claims = idp.claims("romeo");

    assert!(bridge.auth("romeo", "example.net", &a.sign(&claims)));
    assert_eq!(idp.jwks_hits(), 1);

    // The IdP rotates in key b: the first token signed with it makes the bridge refetch.
    idp.publish(&[&a, &b]);
    assert!(bridge.auth("romeo", "example.net", &b.sign(&claims)));
    assert_eq!(idp.jwks_hits(), 2);
    assert!(bridge.auth("romeo", "example.net", &b.sign(&claims)));
    assert_eq!(idp.jwks_hits(), 2);

    // Another new key within the minute: no second refetch, so the token is refused
    // until the interval has passed. Made-up kids cannot make us hammer the IdP either.
    idp.publish(&[&a, &b, &c]);
    assert!(!bridge.auth("romeo", "example.net", &c.sign(&claims)));
    let mut made_up = Header::new(Algorithm::RS256);
    made_up.kid = Some("made-up".into());
    let token = jsonwebtoken::encode(&made_up, &claims, &a.signing).unwrap();
    for _ in 0..5 {
        assert!(!bridge.auth("romeo", "example.net", &token));
    }
    assert_eq!(idp.jwks_hits(), 2);
    assert!(bridge.auth("romeo", "example.net", &a.sign(&claims)));
    bridge.finish();
}

/// A failing JWKS (a 500, or a body over the 256 KiB cap) is asked once, then not again
/// before the retry pause (30 s) however many logins come meanwhile: the keys in hand keep
/// serving, and without keys logins answer `0` at once instead of each waiting on the IdP.
/// The reason is logged.
#[test]
fn a_failing_jwks_is_retried_only_after_a_pause() {
    let a = rsa_a();
    let token = |idp: &Idp| a.sign(&idp.claims("romeo"));
    let down = |s: &IdpState| Arc::clone(&s.jwks_down);
    let oversized = |s: &IdpState| Arc::clone(&s.jwks_oversized);
    for (breaks, why) in [
        (
            &down as &dyn Fn(&IdpState) -> Arc<AtomicBool>,
            "JWKS: HTTP 500",
        ),
        (&oversized, "JWKS: response body over 262144 bytes"),
    ] {
        let idp = Idp::start(&[&a]);
        let dir = tempfile::tempdir().unwrap();
        let config = idp.config(dir.path(), "", "jwks_refresh = \"100ms\"\n");
        let mut bridge = Bridge::start(&config, Wire::Line);
        assert!(bridge.auth("romeo", "example.net", &token(&idp)));
        assert_eq!(idp.jwks_hits(), 1);
        // The JWKS breaks, and the keys in hand go stale.
        breaks(&idp.state).store(true, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(200));
        for _ in 0..20 {
            assert!(bridge.auth("romeo", "example.net", &token(&idp)), "{why}");
        }
        assert_eq!(
            idp.jwks_hits(),
            2,
            "{why}: one failed refresh, then the pause"
        );
        let log = bridge.finish();
        assert!(
            log.contains("JWKS refresh failed") && log.contains(why),
            "{log}"
        );

        // No keys at all yet.
        let mut bridge = Bridge::start(&config, Wire::Ejabberd);
        for _ in 0..20 {
            assert!(!bridge.auth("romeo", "example.net", &token(&idp)), "{why}");
        }
        assert_eq!(
            idp.jwks_hits(),
            3,
            "{why}: one failed fetch, then the pause"
        );
        let log = bridge.finish();
        assert!(log.contains(why), "{log}");
    }
}

#[test]
fn discovery_or_jwks_failures_answer_0_and_the_bridge_keeps_serving() {
    let a = rsa_a();
    let idp = Idp::start(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    let token = a.sign(&idp.claims("romeo"));

    // Nothing listens on this port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = write_config(
        dir.path(),
        &format!(
            "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"{dead}\"\n\
             mode = \"token\"\nvalidate = \"jwt\"\naudience = \"{AUDIENCE}\"\n"
        ),
    );
    for config in [
        unreachable,
        idp.config(dir.path(), "/wrong", ""),
        idp.config(dir.path(), "/broken", ""),
    ] {
        for wire in BOTH {
            let mut bridge = Bridge::start(&config, wire);
            for _ in 0..3 {
                assert!(!bridge.auth("romeo", "example.net", &token), "{config:?}");
            }
            bridge.finish();
        }
    }
    // The good issuer, for contrast: the same token passes.
    let mut bridge = Bridge::start(&idp.config(dir.path(), "", ""), Wire::Line);
    assert!(bridge.auth("romeo", "example.net", &token));
    bridge.finish();
}

/// `validate = "jwt"` needs only the JWKS: with `jwks_uri` configured, the issuer's
/// well-known URLs are never asked, whether they answer 404 or nothing listens there.
#[test]
fn an_explicit_jwks_uri_switches_discovery_off() {
    let a = rsa_a();
    let idp = Idp::start(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    for issuer in [format!("{}/no-metadata", idp.base), dead] {
        let config = write_config(
            dir.path(),
            &format!(
                "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"{issuer}\"\n\
                 mode = \"token\"\nvalidate = \"jwt\"\naudience = \"{AUDIENCE}\"\n\
                 jwks_uri = \"{}/jwks\"\n",
                idp.base
            ),
        );
        let claims = with(idp.claims("romeo"), "iss", json!(issuer));
        for wire in BOTH {
            let mut bridge = Bridge::start(&config, wire);
            assert!(
                bridge.auth("romeo", "example.net", &a.sign(&claims)),
                "{issuer}"
            );
            assert!(
                !bridge.auth("juliet", "example.net", &a.sign(&claims)),
                "{issuer}"
            );
            bridge.finish();
        }
    }
    assert_eq!(*idp.state.unrouted.lock().unwrap(), Vec::<String>::new());
}

/// One metadata document failing (401, 403, an HTML page, a redirect, a 500) while the
/// other is valid: the valid one is used, if it has every endpoint needed. One naming another issuer: discovery fails, the
/// valid other document notwithstanding.
#[test]
fn discovery_uses_the_valid_document_when_the_other_fails() {
    let a = rsa_a();
    let idp = Idp::start(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("rfc8414-401", true),
        ("rfc8414-403", true),
        ("rfc8414-html", true),
        ("rfc8414-302", true),
        ("oidc-403", true),
        ("oidc-html", true),
        ("oidc-500", true),
        ("rfc8414-wrong-issuer", false),
        ("oidc-wrong-issuer", false),
        // The endpoint we need may be in the failed document: a failure then, not a
        // discovery without a JWKS cached until the next refresh.
        ("oidc-500-partial", false),
    ];
    for (case, works) in cases {
        let path = format!("/half/{case}");
        let config = idp.config(dir.path(), &path, "");
        let claims = with(
            idp.claims("romeo"),
            "iss",
            json!(format!("{}{path}", idp.base)),
        );
        let mut bridge = Bridge::start(&config, Wire::Line);
        assert_eq!(
            bridge.auth("romeo", "example.net", &a.sign(&claims)),
            works,
            "{case}"
        );
        assert!(!bridge.auth("juliet", "example.net", &a.sign(&claims)));
        let log = bridge.finish();
        let logged = if works {
            "one discovery document failed"
        } else if case.ends_with("-partial") {
            "discovery failed"
        } else {
            "is not the configured"
        };
        assert!(log.contains(logged), "{case}: {log}");
    }
}

/// Without `audience`, any token the issuer signed for any of its clients would pass:
/// `validate = "jwt"` refuses to start without it, naming the file and the key (exit 2);
/// the message says how to opt out explicitly (`audience = "any"`).
#[test]
fn jwt_validation_without_audience_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["token", "auto"] {
        let config = write_config(
            dir.path(),
            &format!(
                "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"https://idp.example\"\n\
                 client_id = \"bridge\"\nclient_auth = \"none\"\nmode = \"{mode}\"\nvalidate = \"jwt\"\n"
            ),
        );
        let out = std::process::Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .env_remove("EXTAUTH_BRIDGE_CONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{mode}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(config.to_str().unwrap())
                && err.contains("backend[0].audience")
                && err.contains("audience = \"any\""),
            "{mode}: {err}"
        );
    }
}

/// `audience = "any"` is the explicit opt-out: a token signed for another client passes
/// (the signature, `exp` and `iss` still count), where the configured audience refuses it.
#[test]
fn audience_any_accepts_a_token_of_another_client() {
    let a = rsa_a();
    let idp = Idp::start(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    let other = a.sign(&with(idp.claims("romeo"), "aud", json!("other-app")));
    let expired = a.sign(&with(
        with(idp.claims("romeo"), "aud", json!("other-app")),
        "exp",
        json!(now() - 600),
    ));
    let bound = idp.config(dir.path(), "", "");
    let mut bridge = Bridge::start(&bound, Wire::Line);
    assert!(!bridge.auth("romeo", "example.net", &other));
    bridge.finish();
    let text = std::fs::read_to_string(&bound)
        .unwrap()
        .replace(&format!("audience = \"{AUDIENCE}\""), "audience = \"any\"");
    let any = write_config(dir.path(), text.trim_start_matches("timeout = \"4s\"\n\n"));
    let mut bridge = Bridge::start(&any, Wire::Line);
    assert!(bridge.auth("romeo", "example.net", &other));
    assert!(!bridge.auth("romeo", "example.net", &expired));
    assert!(!bridge.auth("juliet", "example.net", &other));
    bridge.finish();
}

/// RFC 6749 §7.1: a token of a type we do not know how to use (`mac`) is refused, even
/// with `verify = "none"`; the same answer with `token_type = "Bearer"` logs in.
#[test]
fn a_granted_token_that_is_not_a_bearer_token_is_refused() {
    let idp = Idp::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    for (path, bearer) in [("/mac/token", false), ("/bearer/token", true)] {
        let config = write_config(
            dir.path(),
            &format!(
                "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n\
                 token_endpoint = \"{}{path}\"\nclient_id = \"bridge\"\n\
                 client_auth = \"none\"\nverify = \"none\"\n",
                idp.base
            ),
        );
        for wire in BOTH {
            let mut bridge = Bridge::start(&config, wire);
            assert_eq!(bridge.auth("romeo", "example.net", "pw"), bearer, "{path}");
            let log = bridge.finish();
            assert_eq!(log.contains("token_type is not bearer"), !bearer, "{log}");
        }
    }
}

#[test]
fn auto_mode_sends_token_shaped_passwords_the_token_way() {
    let a = rsa_a();
    let idp = Idp::start(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    let config = idp.config(
        dir.path(),
        "",
        "client_id = \"bridge\"\nclient_auth = \"none\"\nverify = \"none\"\n\
         token_prefixes = [\"secret-token:\"]\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("mode = \"token\"", "mode = \"auto\"");
    std::fs::write(&config, text).unwrap();
    let token_hits = || idp.state.token_hits.load(Ordering::SeqCst);
    for wire in BOTH {
        let mut bridge = Bridge::start(&config, wire);
        let before = token_hits();
        assert!(bridge.auth("romeo", "example.net", &a.sign(&idp.claims("romeo"))));
        assert!(!bridge.auth("juliet", "example.net", &a.sign(&idp.claims("romeo"))));
        assert!(!bridge.auth("romeo", "example.net", "secret-token:abc"));
        assert_eq!(
            token_hits(),
            before,
            "tokens never reach the token endpoint"
        );
        assert!(!bridge.auth("romeo", "example.net", "iheartjuliet"));
        assert!(!bridge.auth("romeo", "example.net", "a.b.c"));
        assert_eq!(
            token_hits(),
            before + 2,
            "passwords go to the password grant"
        );
        bridge.finish();
    }
}

#[test]
fn isuser_policy() {
    let a = rsa_a();
    let idp = Idp::start(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    for (policy, want) in [("allow", true), ("deny", false)] {
        let config = idp.config(dir.path(), "", &format!("isuser = \"{policy}\"\n"));
        let mut bridge = Bridge::start(&config, Wire::Ejabberd);
        assert_eq!(bridge.ask("isuser:anyone:example.net"), want, "{policy}");
        // Account changes are never the IdP's business.
        assert!(!bridge.ask("setpass:romeo:example.net:new"), "{policy}");
        assert!(
            !bridge.ask("tryregister:benvolio:example.net:x"),
            "{policy}"
        );
        assert!(!bridge.ask("removeuser:romeo:example.net"), "{policy}");
        bridge.finish();
    }
    // `next`: a users file after the IdP answers isuser (and only it knows romeo). The hash
    // is never verified here: only isuser reaches this backend.
    let users = dir.path().join("users");
    std::fs::write(&users, "romeo@example.net:$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$KfkQ1ODBFivtaC4AuVUWFg\n").unwrap();
    let config = idp.config(
        dir.path(),
        "",
        &format!(
            "\n[[backend]]\nname = \"accounts\"\ntype = \"file\"\npath = \"{}\"\n",
            users.display()
        ),
    );
    let mut bridge = Bridge::start(&config, Wire::Line);
    assert!(bridge.ask("isuser:romeo:example.net"));
    assert!(!bridge.ask("isuser:juliet:example.net"));
    assert!(bridge.auth("romeo", "example.net", &a.sign(&idp.claims("romeo"))));
    bridge.finish();
}

/// An IdP that accepts connections and never answers costs one `request_timeout` per
/// login, answered `0`, and the bridge keeps serving.
#[test]
fn a_silent_idp_costs_a_timeout_not_a_hang() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", silent.local_addr().unwrap());
    // Accept and hold connections open without a byte in reply.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"{base}\"\n\
             client_id = \"bridge\"\nclient_auth = \"none\"\nrequest_timeout = \"300ms\"\n"
        ),
    );
    for wire in BOTH {
        let mut bridge = Bridge::start(&config, wire);
        let start = std::time::Instant::now();
        for _ in 0..3 {
            assert!(!bridge.auth("romeo", "example.net", "iheartjuliet"));
        }
        // Generous bound: three timeouts of 300 ms, far below the 4 s deadline each.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        bridge.finish();
    }
}

/// Only 502/503/504 are an IdP outage. A JWKS (or discovery document) answering anything
/// else, a 500 say, is the IdP answering badly: a final `0`, never a fall-through to the
/// next backend of a route with `on_unavailable = "next"`.
#[test]
fn a_jwks_answering_500_is_no_outage_to_fall_through() {
    let a = rsa_a();
    let idp = Idp::start(&[&a]);
    idp.state.jwks_down.store(true, Ordering::SeqCst);
    let token = a.sign(&idp.claims("romeo"));
    let dir = tempfile::tempdir().unwrap();
    // A users file below the IdP that holds the same token as romeo's password.
    let hash = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon
            .hash_password(token.as_bytes(), &salt)
            .unwrap()
            .to_string()
    };
    let users = dir.path().join("users");
    std::fs::write(&users, format!("romeo@example.net:{hash}\n")).unwrap();
    let config = idp.config(
        dir.path(),
        "",
        &format!(
            "\n[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n\
             [[route]]\ndomains = [\"example.net\"]\nbackends = [\"idp\", \"local\"]\n\
             on_unavailable = \"next\"\n",
            users.display()
        ),
    );
    let mut bridge = Bridge::start(&config, Wire::Line);
    assert!(!bridge.auth("romeo", "example.net", &token));
    let log = bridge.finish();
    assert!(log.contains("JWKS: HTTP 500"), "{log}");
}
