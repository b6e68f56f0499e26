//! A scriptable OAuth2 IdP on loopback (axum), for the fault and protocol tests: a token
//! endpoint (password `right` → a bearer token), introspection, userinfo and an OIDC
//! discovery document, each of which fails on demand, every way an IdP can. Every request
//! is recorded (method and path, and the username of password grants), so tests can
//! assert what the bridge sent and what it never asked for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{json, Value};

/// The secret part of every access token issued, so tests can look for it in logs.
pub const TOKEN_SECRET: &str = "Fake-at-s3cret-7390";

/// The access token issued to `user`.
pub fn access_token(user: &str) -> String {
    format!("At-{user}-{TOKEN_SECRET}")
}

/// The user an access token was issued to, if it is one of ours.
fn token_user(token: &str) -> Option<&str> {
    token
        .strip_prefix("At-")?
        .strip_suffix(TOKEN_SECRET)?
        .strip_suffix('-')
}

/// How the failing endpoints answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Correctly.
    None,
    /// Headers announcing a body, a few bytes of it, then the connection drops.
    ResetMidResponse,
    /// 503.
    ServerError,
    /// 200 with half a JSON document.
    GarbageJson,
    /// 200 with the correct JSON after 128 MiB of leading whitespace (valid JSON, so only
    /// a size cap keeps the bridge from reading it all), chunked: no length announced.
    Oversized,
    /// Answers correctly after a minute.
    Slow,
}

/// The OIDC discovery document: fails only when named in [`FakeIdp::fail_at`].
pub const DISCOVERY: &str = "/.well-known/openid-configuration";

/// Bytes of whitespace before the JSON of an oversized answer.
const PADDING: usize = 128 << 20;

#[derive(Clone)]
struct FakeState {
    base: String,
    /// The fault, and the path it applies to (`None`: every path but discovery).
    fault: Arc<Mutex<(Fault, Option<String>)>>,
    seen: Arc<Mutex<Vec<String>>>,
    usernames: Arc<Mutex<Vec<String>>>,
    /// Claims merged into the userinfo and introspection answers for a user's token.
    claims: Arc<Mutex<HashMap<String, Value>>>,
    /// Members merged into the discovery document.
    discovery: Arc<Mutex<Value>>,
}

pub struct FakeIdp {
    pub base: String,
    state: FakeState,
    _runtime: tokio::runtime::Runtime,
}

impl FakeIdp {
    pub fn start() -> FakeIdp {
        FakeIdp::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// On a given address: a test can refuse connections there first, then start the IdP.
    pub fn start_on(addr: SocketAddr) -> FakeIdp {
        let (runtime, listener, base) = super::listen(addr);
        let state = FakeState {
            base: base.clone(),
            fault: Arc::new(Mutex::new((Fault::None, None))),
            seen: Arc::default(),
            usernames: Arc::default(),
            claims: Arc::default(),
            discovery: Arc::new(Mutex::new(json!({}))),
        };
        let app = Router::new()
            .route(DISCOVERY, get(discovery))
            .route("/token", post(token))
            .route("/introspect", post(introspect))
            .route("/userinfo", get(userinfo))
            .layer(axum::middleware::from_fn_with_state(state.clone(), record))
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeIdp {
            base,
            state,
            _runtime: runtime,
        }
    }

    /// Makes token, introspection and userinfo fail with `fault` from now on.
    pub fn fail(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = (fault, None);
    }

    /// Makes only `path` (`/token`, `/introspect`, `/userinfo`) fail with `fault`.
    pub fn fail_at(&self, path: &str, fault: Fault) {
        *self.state.fault.lock().unwrap() = (fault, Some(path.to_owned()));
    }

    /// `METHOD /path` of every request so far.
    pub fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }

    /// From now on, the userinfo and introspection answers for `user`'s token carry
    /// `claims` (a JSON object) on top of (or instead of) the usual ones: the IdP names
    /// someone else, adds an `email`, an `aud`, a `client_id`…
    pub fn set_claims(&self, user: &str, claims: Value) {
        self.state
            .claims
            .lock()
            .unwrap()
            .insert(user.to_owned(), claims);
    }

    /// From now on, the discovery document carries `members` (a JSON object) on top of
    /// (or instead of) the usual ones.
    pub fn set_discovery(&self, members: Value) {
        *self.state.discovery.lock().unwrap() = members;
    }

    /// The `username` of every password grant so far.
    pub fn usernames(&self) -> Vec<String> {
        self.state.usernames.lock().unwrap().clone()
    }
}

async fn record(State(s): State<FakeState>, request: Request, next: Next) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    s.seen.lock().unwrap().push(line);
    next.run(request).await
}

async fn discovery(State(s): State<FakeState>) -> Response {
    let base = &s.base;
    let mut document = json!({"issuer": base, "token_endpoint": format!("{base}/token"),
                          "introspection_endpoint": format!("{base}/introspect"),
                          "userinfo_endpoint": format!("{base}/userinfo")});
    if let Value::Object(extra) = &*s.discovery.lock().unwrap() {
        for (k, v) in extra {
            document[k] = v.clone();
        }
    }
    answer(&s, DISCOVERY, StatusCode::OK, document).await
}

async fn token(State(s): State<FakeState>, Form(form): Form<HashMap<String, String>>) -> Response {
    let user = form.get("username").cloned().unwrap_or_default();
    s.usernames.lock().unwrap().push(user.clone());
    let (status, body) = if form.get("password").map(String::as_str) == Some("right") {
        let token = access_token(&user);
        (
            StatusCode::OK,
            json!({"access_token": token, "token_type": "Bearer"}),
        )
    } else {
        (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}))
    };
    answer(&s, "/token", status, body).await
}

async fn introspect(
    State(s): State<FakeState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let user = form.get("token").and_then(|t| token_user(t));
    let body = match user {
        // Issued to the bridge's own client unless a test says otherwise (set_claims).
        Some(user) => with_claims(
            &s,
            user,
            json!({"active": true, "username": user, "client_id": "bridge"}),
        ),
        None => json!({"active": false}),
    };
    answer(&s, "/introspect", StatusCode::OK, body).await
}

async fn userinfo(State(s): State<FakeState>, headers: HeaderMap) -> Response {
    let user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(token_user);
    let (status, body) = match user {
        Some(user) => (
            StatusCode::OK,
            with_claims(&s, user, json!({"preferred_username": user})),
        ),
        None => (StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"})),
    };
    answer(&s, "/userinfo", status, body).await
}

/// `base` with the claims set for `user` (see [`FakeIdp::set_claims`]) merged in.
fn with_claims(s: &FakeState, user: &str, mut base: Value) -> Value {
    if let Some(Value::Object(extra)) = s.claims.lock().unwrap().get(user) {
        for (k, v) in extra {
            base[k] = v.clone();
        }
    }
    base
}

/// The correct answer `status`/`body`, or what the current fault makes of it.
async fn answer(s: &FakeState, path: &str, status: StatusCode, body: Value) -> Response {
    let (fault, at) = s.fault.lock().unwrap().clone();
    let fault = if at.as_deref().map_or(path != DISCOVERY, |p| p == path) {
        fault
    } else {
        Fault::None
    };
    let json_type = [(header::CONTENT_TYPE, "application/json")];
    let text = body.to_string();
    match fault {
        Fault::None => (status, json_type, text).into_response(),
        Fault::ServerError => (
            StatusCode::SERVICE_UNAVAILABLE,
            json_type,
            r#"{"error":"temporarily_unavailable"}"#,
        )
            .into_response(),
        Fault::GarbageJson => {
            (StatusCode::OK, json_type, text[..text.len() / 2].to_owned()).into_response()
        }
        Fault::ResetMidResponse => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from(text[..4].to_owned())),
                Err(std::io::Error::other("reset")),
            ];
            let body = Body::from_stream(futures_util::stream::iter(chunks));
            let length = [(header::CONTENT_LENGTH, "4096")];
            (status, json_type, length, body).into_response()
        }
        Fault::Oversized => {
            static SPACES: [u8; 64 * 1024] = [b' '; 64 * 1024];
            let padding = (0..PADDING / SPACES.len()).map(|_| Ok(Bytes::from_static(&SPACES)));
            let tail = std::iter::once(Ok::<_, std::io::Error>(Bytes::from(text)));
            let body = Body::from_stream(futures_util::stream::iter(padding.chain(tail)));
            (status, json_type, body).into_response()
        }
        Fault::Slow => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (status, json_type, text).into_response()
        }
    }
}
