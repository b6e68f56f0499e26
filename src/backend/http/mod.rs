//! The mod_auth_http protocol (Prosody's HTTP authentication contract), as a client.
//!
//! | method           | HTTP                | success                          |
//! |------------------|---------------------|----------------------------------|
//! | `check_password` | GET, query string   | 200 and body `true`              |
//! | `user_exists`    | GET, query string   | 200 and body `true`              |
//! | `set_password`   | POST form           | 200, 201 or 204                  |
//! | `register`       | POST form           | 201 (409: exists → `0`)          |
//! | `remove_user`    | POST form           | 200, 201 or 204                  |
//!
//! 501 means "not supported here" and lets the chain ask the next backend. 502, 503 and 504
//! mean the API is down (said by a proxy in front of it, or by the API itself): unavailable,
//! exactly like a refused connection, so `on_unavailable = "next"` and `stale_if_error` apply.
//! Anything else we do not expect is an error, answered `0`; that includes 429, on purpose
//! (see [`unavailable_status`]). One HTTP client per backend keeps connections
//! alive across requests; it is built on first use, because loading the system's root
//! certificates is the most expensive thing the bridge does at start-up and a process that
//! is only asked `check` or never asked anything should not pay for it.
//!
//! Layout: [`config`] (the table, its checks, the Basic credentials), [`url`] (the base URL
//! and `$host`), `client.rs` (how the reqwest client is built, the redirect policy); this file
//! is the backend itself: the calls, the one retry, and how a status and body become an
//! answer. Configuration checks belong in `config`, not here.

mod client;
pub mod config;
pub mod url;

use async_trait::async_trait;
use reqwest::{Client, Method, StatusCode};

use super::body::BodyError;
use super::net::{BuiltOnce, CountConnections};
use super::{unavailable_status, Backend, BackendError, BackendResult};
use crate::request::Account;
use crate::secret::Secret;

use client::ClientSettings;
use config::{split_account, BasicCredentials, CheckPasswordMethod, HttpBackendConfig, KeyError};
use url::BaseUrl;

/// An account API speaking mod_auth_http.
pub struct HttpBackend {
    name: String,
    base: BaseUrl,
    credentials: Option<BasicCredentials>,
    check_password_method: CheckPasswordMethod,
    max_body: usize,
    check_account: Option<Account>,
    /// Built on first use, off the request thread (it reads the system's roots).
    client: BuiltOnce<Client>,
    /// Connections the client opened, for the retry's "was it a kept-alive one" test.
    connections: CountConnections,
}

impl HttpBackend {
    /// Validates the configuration and reads credentials and CA files. The HTTP client
    /// itself (and the system's root certificates) is only set up on first use, on a thread
    /// of its own ([`BuiltOnce`]).
    pub fn new(config: &HttpBackendConfig) -> Result<HttpBackend, KeyError> {
        config.validate()?;
        let base = BaseUrl::parse(&config.url).map_err(|e| ("url", e))?;
        let credentials = BasicCredentials::load(config)?;
        let extra_roots = match &config.ca_file {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| ("ca_file", format!("cannot read {}: {e}", path.display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    (
                        "ca_file",
                        format!("{}: not PEM certificates: {e}", path.display()),
                    )
                })?;
                if certs.is_empty() {
                    return Err((
                        "ca_file",
                        format!("{}: no certificate found", path.display()),
                    ));
                }
                certs
            }
        };
        let settings = ClientSettings {
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            follow_redirects: config.follow_redirects,
            check_password_method: config.check_password_method,
            extra_roots,
            native_roots: base.is_https(),
        };
        let connections = CountConnections::default();
        let client = {
            let connections = connections.clone();
            BuiltOnce::new(move || settings.build(&connections).map_err(|e| e.to_string()))
        };
        Ok(HttpBackend {
            name: config.name.clone(),
            base,
            credentials,
            check_password_method: config.check_password_method,
            max_body: config.max_body,
            check_account: config.check_account.as_deref().and_then(split_account),
            client,
            connections,
        })
    }

    async fn client(&self) -> Result<Client, BackendError> {
        self.client.get().await
    }

    /// Sends one mod_auth_http call and returns the status and the (size-capped) body.
    async fn call(
        &self,
        method: &str,
        http_method: Method,
        account: &Account,
        password: Option<&Secret>,
    ) -> Result<(StatusCode, bytes::Bytes), BackendError> {
        let url = self.base.for_method(&account.server, method)?;
        let client = self.client().await?;
        // Between requests the request loop blocks on stdin and nothing runs the pooled
        // connections' tasks, so a connection the server closed while idle (gunicorn,
        // Apache and nginx all do after seconds) still looks usable, and a login sent on
        // it would fail. Yielding once lets the runtime poll its I/O first: the closed
        // connection is noticed and dropped, and the request goes on a fresh one.
        tokio::task::yield_now().await;
        let mut params: Vec<(&str, &str)> = vec![
            ("user", account.user.as_str()),
            ("server", account.server.as_str()),
        ];
        if let Some(p) = password {
            params.push(("pass", p.expose()));
        }
        let send = || {
            let request = client.request(http_method.clone(), url.clone());
            let request = if http_method == Method::GET {
                request.query(&params)
            } else {
                request.form(&params)
            };
            match &self.credentials {
                Some(c) => request.basic_auth(c.user.expose(), Some(c.password.expose())),
                None => request,
            }
            .send()
        };
        let opened = self.connections.get();
        let response = match send().await {
            // The server may still close a kept-alive connection just as a request goes
            // out on it. The questions (check_password, user_exists) are safe to ask
            // twice, so they get one more try, on a new connection; a change is not
            // repeated, since the server may have applied it. Only when no connection was
            // opened meanwhile, i.e. the request went on a kept-alive one: a fresh
            // connection that took the request and closed without an answer is the API
            // (or a WAF in front of it) refusing to answer, and asking again would count
            // the password guess twice. Builder errors never reached the network at all.
            Err(e)
                if is_question(method)
                    && e.is_request()
                    && !e.is_timeout()
                    && !e.is_connect()
                    && self.connections.get() == opened =>
            {
                tracing::debug!(backend = %self.name, method, "a kept-alive connection closed under the request, retrying once");
                send().await
            }
            other => other,
        }
        .map_err(|e| super::classify(method, e))?;
        let status = response.status();
        // The body is read even when only the status matters, so that the connection
        // can be reused; for a 501 only the status counts.
        let body = self.read_body(method, response).await;
        // Like the 501, a proxy's error page over max_body still says "down", not "garbage".
        if status == StatusCode::NOT_IMPLEMENTED {
            return Err(BackendError::Unsupported);
        }
        if unavailable_status(status) {
            return Err(BackendError::Unavailable(format!(
                "{method}: HTTP {} (the API, or a proxy in front of it, says it is down)",
                status.as_u16()
            )));
        }
        Ok((status, body?))
    }

    /// Reads the body, stopping as soon as it exceeds `max_body`.
    async fn read_body(
        &self,
        method: &str,
        response: reqwest::Response,
    ) -> Result<bytes::Bytes, BackendError> {
        let status = response.status().as_u16();
        super::body::read_capped(response, self.max_body)
            .await
            .map_err(|e| match e {
                BodyError::OverLimit => BackendError::Protocol(format!(
                    "{method}: HTTP {status} with a body over max_body ({} bytes)",
                    self.max_body
                )),
                BodyError::Transport(e) => super::classify(method, e),
            })
    }

    /// `check_password` and `user_exists`: 200 with `true` or `false`.
    async fn ask(
        &self,
        method: &str,
        http_method: Method,
        account: &Account,
        password: Option<&Secret>,
    ) -> BackendResult {
        let (status, body) = self.call(method, http_method, account, password).await?;
        if status != StatusCode::OK {
            return Err(unexpected_status(method, status));
        }
        match std::str::from_utf8(&body).map(str::trim) {
            Ok("true") => Ok(true),
            Ok("false") => Ok(false),
            _ => Err(BackendError::Protocol(format!(
                "{method}: HTTP 200 with a body that is neither true nor false ({} bytes)",
                body.len()
            ))),
        }
    }

    /// The POST methods: success is one of `ok`; `no` (register's 409) is a plain no.
    async fn change(
        &self,
        method: &str,
        account: &Account,
        password: Option<&Secret>,
        ok: &[StatusCode],
        no: Option<StatusCode>,
    ) -> BackendResult {
        let (status, _) = self.call(method, Method::POST, account, password).await?;
        if ok.contains(&status) {
            Ok(true)
        } else if Some(status) == no {
            Ok(false)
        } else {
            Err(unexpected_status(method, status))
        }
    }
}

/// The methods that only ask, so that sending one twice changes nothing.
fn is_question(method: &str) -> bool {
    matches!(method, "check_password" | "user_exists")
}

const CHANGED: [StatusCode; 3] = [StatusCode::OK, StatusCode::CREATED, StatusCode::NO_CONTENT];

fn unexpected_status(method: &str, status: StatusCode) -> BackendError {
    let hint = match status.as_u16() {
        300..=399 => " (redirects are not followed; see follow_redirects)",
        401 | 403 => " (check the credentials)",
        429 => " (rate limited; never passed on to the next backend)",
        _ => "",
    };
    BackendError::Protocol(format!(
        "{method}: unexpected HTTP {}{hint}",
        status.as_u16()
    ))
}

#[async_trait]
impl Backend for HttpBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "http"
    }

    async fn authenticate(&self, account: &Account, password: &Secret) -> BackendResult {
        let method = match self.check_password_method {
            CheckPasswordMethod::Get => Method::GET,
            CheckPasswordMethod::Post => Method::POST,
        };
        self.ask("check_password", method, account, Some(password))
            .await
    }

    async fn user_exists(&self, account: &Account) -> BackendResult {
        self.ask("user_exists", Method::GET, account, None).await
    }

    async fn set_password(&self, account: &Account, password: &Secret) -> BackendResult {
        self.change("set_password", account, Some(password), &CHANGED, None)
            .await
    }

    async fn register(&self, account: &Account, password: &Secret) -> BackendResult {
        let created = [StatusCode::CREATED];
        self.change(
            "register",
            account,
            Some(password),
            &created,
            Some(StatusCode::CONFLICT),
        )
        .await
    }

    async fn remove_user(&self, account: &Account) -> BackendResult {
        self.change("remove_user", account, None, &CHANGED, None)
            .await
    }

    /// Asks `user_exists` about `check_account` (or a made-up user on the first domain the
    /// URL allows): proves DNS, TCP, TLS, credentials and the API's answer format.
    async fn check(&self) -> Result<String, BackendError> {
        let account = match &self.check_account {
            Some(a) => a.clone(),
            None if self.base.has_host() => {
                return Err(BackendError::Internal(
                    "url contains $host: set check_account = \"user@domain\" to say which domain to probe".into(),
                ))
            }
            None => Account {
                user: "extauth-bridge-check".into(),
                server: "localhost".into(),
            },
        };
        let url = self.base.display();
        let jid = format!("{}@{}", account.user, account.server);
        match self.user_exists(&account).await {
            Ok(exists) => Ok(format!("{url}/user_exists answered {exists} for {jid}")),
            Err(BackendError::Unsupported) => Ok(format!(
                "{url}/user_exists reached; it answered 501 (not supported)"
            )),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_statuses_are_unavailable_and_a_rate_limit_is_not() {
        for code in [502, 503, 504] {
            assert!(
                unavailable_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [429, 500, 501, 404, 200] {
            assert!(
                !unavailable_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        let e = unexpected_status("check_password", StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.kind(), "protocol");
        assert!(e.to_string().contains("rate limited"), "{e}");
    }
}
