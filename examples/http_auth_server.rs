//! A small account API speaking Prosody's mod_auth_http protocol, for trying the bridge's
//! HTTP backend and for measuring it. Accounts live in memory.
//!
//! ```sh
//! cargo run --example http_auth_server -- --listen 127.0.0.1:8080 \
//!     --user romeo@example.net:iheartjuliet [--basic api:s3cr3t]
//! ```
//!
//! | method           | HTTP                       | answer                                 |
//! |------------------|----------------------------|----------------------------------------|
//! | `check_password` | GET query (or POST form)   | 200 `true` / `false`                   |
//! | `user_exists`    | GET query                  | 200 `true` / `false`                   |
//! | `set_password`   | POST form                  | 204, or 404 for an unknown account     |
//! | `register`       | POST form                  | 201, or 409 if it exists               |
//! | `remove_user`    | POST form                  | 204, or 404 for an unknown account     |
//!
//! Missing or wrong Basic credentials (when `--basic` is given) → 401.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use clap::Parser;

#[derive(Parser)]
#[command(about = "A mod_auth_http-compatible account API with in-memory users")]
struct Args {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// An account, `user@domain:password` (repeatable; the password may contain `:`)
    #[arg(long = "user", value_name = "JID:PASSWORD")]
    users: Vec<String>,
    /// Require these HTTP Basic credentials, `user:password`
    #[arg(long, value_name = "USER:PASSWORD")]
    basic: Option<String>,
}

/// `(user, server)` → password.
type Accounts = HashMap<(String, String), String>;

struct Api {
    accounts: Mutex<Accounts>,
    /// The whole expected `Authorization` header value.
    authorization: Option<String>,
}

#[derive(serde::Deserialize)]
struct Params {
    user: String,
    server: String,
    pass: Option<String>,
}

impl Params {
    fn key(&self) -> (String, String) {
        (self.user.clone(), self.server.clone())
    }
}

impl Api {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        match &self.authorization {
            None => true,
            Some(expected) => headers
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v.as_bytes() == expected.as_bytes()),
        }
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, Accounts> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answer(&self, headers: &HeaderMap, method: Method, p: Params) -> Response {
        if !self.authorized(headers) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"accounts\"")],
            )
                .into_response();
        }
        let mut accounts = self.accounts();
        let key = p.key();
        let truth = |b: bool| (StatusCode::OK, if b { "true" } else { "false" }).into_response();
        match (method, p.pass) {
            (Method::CheckPassword, Some(pass)) => truth(accounts.get(&key) == Some(&pass)),
            (Method::UserExists, _) => truth(accounts.contains_key(&key)),
            (Method::SetPassword, Some(pass)) => match accounts.get_mut(&key) {
                Some(old) => {
                    *old = pass;
                    StatusCode::NO_CONTENT.into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            },
            (Method::Register, Some(pass)) => match accounts.entry(key) {
                Entry::Occupied(_) => StatusCode::CONFLICT.into_response(),
                Entry::Vacant(v) => {
                    v.insert(pass);
                    StatusCode::CREATED.into_response()
                }
            },
            (Method::RemoveUser, _) => match accounts.remove(&key) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            },
            _ => (StatusCode::BAD_REQUEST, "missing pass").into_response(),
        }
    }
}

#[derive(Clone, Copy)]
enum Method {
    CheckPassword,
    UserExists,
    SetPassword,
    Register,
    RemoveUser,
}

fn parse_account(text: &str) -> Result<((String, String), String), String> {
    let (jid, pass) = text
        .split_once(':')
        .ok_or_else(|| format!("--user {text:?}: expected user@domain:password"))?;
    let (user, server) = jid
        .rsplit_once('@')
        .ok_or_else(|| format!("--user {jid:?}: expected user@domain"))?;
    Ok(((user.to_owned(), server.to_owned()), pass.to_owned()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let accounts = args
        .users
        .iter()
        .map(|u| parse_account(u))
        .collect::<Result<Accounts, _>>()?;
    let api = Arc::new(Api {
        accounts: Mutex::new(accounts),
        authorization: args.basic.as_ref().map(|b| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        }),
    });
    // mod_auth_http sends GET parameters in the query string and POST ones as a form.
    let by_query = |m: Method| {
        move |State(api): State<Arc<Api>>, h: HeaderMap, Query(p): Query<Params>| async move {
            api.answer(&h, m, p)
        }
    };
    let by_form = |m: Method| {
        move |State(api): State<Arc<Api>>, h: HeaderMap, Form(p): Form<Params>| async move {
            api.answer(&h, m, p)
        }
    };
    let app = Router::new()
        .route(
            "/check_password",
            get(by_query(Method::CheckPassword)).post(by_form(Method::CheckPassword)),
        )
        .route("/user_exists", get(by_query(Method::UserExists)))
        .route("/set_password", post(by_form(Method::SetPassword)))
        .route("/register", post(by_form(Method::Register)))
        .route("/remove_user", post(by_form(Method::RemoveUser)))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "mod_auth_http API on http://{}/ ({} account(s){})",
        listener.local_addr()?,
        args.users.len(),
        if args.basic.is_some() {
            ", Basic credentials required"
        } else {
            ""
        }
    );
    axum::serve(listener, app).await?;
    Ok(())
}
