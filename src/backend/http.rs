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

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Client, Method, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::body::BodyError;
use super::net::CountConnections;
use super::{unavailable_status, Backend, BackendError, BackendResult};
use crate::request::Account;
use crate::secret::Secret;

/// Placeholder in `url` replaced by the request's server (domain).
pub const HOST_PLACEHOLDER: &str = "$host";

/// A `[[backend]]` table with `type = "http"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBackendConfig {
    pub name: String,
    /// Base URL; the method name is appended after a `/`. `$host` is replaced by the
    /// request's server.
    pub url: String,
    /// HTTP Basic credentials, `user:pass`.
    pub credentials: Option<Secret>,
    /// A file whose first line is `user:pass`.
    pub credentials_file: Option<PathBuf>,
    /// An environment variable holding `user:pass`.
    pub credentials_env: Option<String>,
    #[serde(default)]
    pub check_password_method: CheckPasswordMethod,
    #[serde(default)]
    pub follow_redirects: bool,
    /// Extra trusted CA certificates (PEM), on top of the system's roots.
    pub ca_file: Option<PathBuf>,
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub connect_timeout: Duration,
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub request_timeout: Duration,
    /// Largest response body read, in bytes; a longer one is an error.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// The account `extauth-bridge check` asks `user_exists` about, `user@domain`.
    pub check_account: Option<String>,
}

/// How `check_password` is sent. POST keeps passwords out of web-server access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CheckPasswordMethod {
    #[default]
    Get,
    Post,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Below the request loop's 4 s deadline, so a slow API is reported as a timeout of the
/// API (and its connection dropped) rather than as the loop's deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A yes/no API never needs more than a few bytes; 64 KiB tolerates chatty error pages.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY
}

/// A configuration problem: the key (relative to the backend table) and what is wrong.
pub type KeyError = (&'static str, String);

impl HttpBackendConfig {
    /// A backend with every optional key at its default: what `--http-url` builds.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        HttpBackendConfig {
            name: name.into(),
            url: url.into(),
            credentials: None,
            credentials_file: None,
            credentials_env: None,
            check_password_method: CheckPasswordMethod::default(),
            follow_redirects: false,
            ca_file: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            check_account: None,
        }
    }

    /// Checks what can be checked without touching files or the environment.
    pub fn validate(&self) -> Result<(), KeyError> {
        BaseUrl::parse(&self.url).map_err(|e| ("url", e))?;
        let sources = [
            self.credentials.is_some(),
            self.credentials_file.is_some(),
            self.credentials_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err((
                "credentials",
                "give at most one of credentials, credentials_file, credentials_env".into(),
            ));
        }
        if let Some(c) = &self.credentials {
            BasicCredentials::parse(c.expose()).map_err(|e| ("credentials", e))?;
        }
        if self.connect_timeout.is_zero() {
            return Err(("connect_timeout", "must be greater than zero".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(("request_timeout", "must be greater than zero".into()));
        }
        if self.max_body < 16 {
            return Err(("max_body", "must be at least 16 bytes".into()));
        }
        if let Some(a) = &self.check_account {
            split_account(a).ok_or(("check_account", "must be user@domain".into()))?;
        }
        Ok(())
    }
}

fn split_account(jid: &str) -> Option<Account> {
    let (user, server) = jid.rsplit_once('@')?;
    (!user.is_empty() && !server.is_empty()).then(|| Account {
        user: user.to_owned(),
        server: server.to_owned(),
    })
}

/// The configured URL, split around `$host` so each request only concatenates.
#[derive(Debug, Clone)]
struct BaseUrl {
    /// Text before and after each `$host`, without a trailing `/`.
    pieces: Vec<String>,
    /// Without `$host`, the URL parsed once: parsing it per request (IDNA and all) was 6 %
    /// of the bridge's instructions per HTTP login (callgrind, BENCHMARKS.md).
    fixed: Option<Url>,
}

impl BaseUrl {
    fn parse(url: &str) -> Result<BaseUrl, String> {
        let trimmed = url.trim().trim_end_matches('/');
        let pieces: Vec<String> = trimmed.split(HOST_PLACEHOLDER).map(str::to_owned).collect();
        let sample = Url::parse(&pieces.join("example.org"))
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        if !matches!(sample.scheme(), "http" | "https") {
            return Err(format!("{url:?}: the scheme must be http or https"));
        }
        if sample.host_str().is_none() {
            return Err(format!("{url:?}: no host"));
        }
        if sample.query().is_some() || sample.fragment().is_some() {
            return Err(format!(
                "{url:?}: no query string or fragment (the method name is appended to the path)"
            ));
        }
        if !sample.username().is_empty() || sample.password().is_some() {
            return Err("put credentials in `credentials`, not in the URL".into());
        }
        let fixed = (pieces.len() == 1).then_some(sample);
        Ok(BaseUrl { pieces, fixed })
    }

    fn is_https(&self) -> bool {
        self.pieces[0]
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("https:"))
    }

    fn has_host(&self) -> bool {
        self.pieces.len() > 1
    }

    /// `{base}/{method}` with `$host` replaced by `server`.
    fn for_method(&self, server: &str, method: &str) -> Result<Url, BackendError> {
        if let Some(base) = &self.fixed {
            let mut url = base.clone();
            // `cannot-be-a-base` URLs were refused by `parse` (they have no host).
            let appended = match url.path_segments_mut() {
                Ok(mut path) => {
                    path.pop_if_empty().push(method);
                    true
                }
                Err(()) => false,
            };
            if appended {
                return Ok(url);
            }
        }
        if self.has_host() && !valid_host_name(server) {
            // The client's input must not choose where the request goes: a final no.
            return Err(BackendError::Protocol(
                "server name is not a domain name (labels of ASCII letters, digits, - and _), refused in $host".into(),
            ));
        }
        let mut text = self.pieces.join(server);
        text.push('/');
        text.push_str(method);
        Url::parse(&text)
            .map_err(|e| BackendError::Protocol(format!("URL for server {server:?}: {e}")))
    }

    /// The URL with `$host` still in it, for logs and descriptions.
    fn display(&self) -> String {
        self.pieces.join(HOST_PLACEHOLDER)
    }
}

/// A domain name as DNS spells it: non-empty labels of ASCII letters, digits, `-` and `_`,
/// joined by single dots, at most 253 bytes and 63 per label. Nothing else goes into `$host`:
/// `..`, `.` or an empty label would be a path segment (`/tenants/../xmpp` is `/xmpp`), and
/// `/`, `?`, `@`, `%` would change the URL outright. An internationalised domain must
/// arrive in its ASCII (`xn--`) form: its Unicode form would be a second spelling of it.
fn valid_host_name(server: &str) -> bool {
    server.len() <= 253
        && server.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// HTTP Basic credentials, split once at construction.
#[derive(Clone)]
struct BasicCredentials {
    user: Secret,
    password: Secret,
}

impl BasicCredentials {
    fn parse(text: &str) -> Result<BasicCredentials, String> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(BasicCredentials {
                user: Secret::new(user),
                password: Secret::new(password),
            }),
            _ => Err("must be \"user:password\"".into()),
        }
    }

    /// Reads the configured source: the value itself, a file's first line, or a variable.
    fn load(config: &HttpBackendConfig) -> Result<Option<BasicCredentials>, KeyError> {
        const KEYS: [&str; 3] = ["credentials", "credentials_file", "credentials_env"];
        let Some(text) = crate::secret::resolve(
            KEYS,
            config.credentials.as_ref(),
            config.credentials_file.as_deref(),
            config.credentials_env.as_deref(),
        )?
        else {
            return Ok(None);
        };
        let key = if config.credentials_file.is_some() {
            KEYS[1]
        } else if config.credentials_env.is_some() {
            KEYS[2]
        } else {
            KEYS[0]
        };
        BasicCredentials::parse(text.expose().lines().next().unwrap_or(""))
            .map(Some)
            .map_err(|e| (key, e))
    }
}

/// What the client is built from, kept until first use.
struct ClientSettings {
    connect_timeout: Duration,
    request_timeout: Duration,
    follow_redirects: bool,
    check_password_method: CheckPasswordMethod,
    extra_roots: Vec<reqwest::Certificate>,
    /// Whether to load the system's root certificates: not for a plain-http API (redirects
    /// never leave its origin), since loading them is the costly part of building.
    native_roots: bool,
}

impl ClientSettings {
    fn build(&self, connections: &CountConnections) -> Result<Client, BackendError> {
        let redirects = if self.follow_redirects {
            same_origin_redirects(self.check_password_method)
        } else {
            reqwest::redirect::Policy::none()
        };
        let mut builder = super::net::client_builder(self.connect_timeout, self.request_timeout)
            .redirect(redirects)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .tls_built_in_native_certs(self.native_roots)
            .connector_layer(connections.clone());
        for cert in &self.extra_roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder
            .build()
            .map_err(|e| BackendError::Internal(format!("cannot build the HTTP client: {e}")))
    }
}

/// Most redirects followed for one call.
const MAX_REDIRECTS: usize = 5;

/// Why a redirect was not followed. The messages hold no URL: a `Location` may repeat the
/// query string, password included.
#[derive(Debug, thiserror::Error)]
enum RedirectRefused {
    #[error("redirect to another origin (scheme, host or port): not followed, it would carry the password there")]
    OtherOrigin,
    #[error(
        "HTTP {0} would turn the POST into a GET without its form: the change would not be made"
    )]
    WouldDropBody(u16),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooMany,
}

/// `follow_redirects = true`: follow a redirect only within the API's own origin (same
/// scheme, host and port), where the password and the Basic credentials already go. Another
/// host or port could be anyone's (an open redirect on the API's site), and `https` → `http`
/// would send them in clear; reqwest itself only drops `Authorization` on a host or port
/// change and re-sends a 307's body anywhere. A POST (a change, or `check_password` sent as
/// POST) follows only 307 and 308, which keep the method and the form: a 301, 302 or 303
/// makes it a bodiless GET, whose 200 would report a change that never happened.
fn same_origin_redirects(check_password: CheckPasswordMethod) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let previous = attempt.previous();
        // The first URL is the call's own, `{base}/{method}`; when in doubt, a POST.
        let posted = previous
            .first()
            .and_then(|url| url.path_segments()?.next_back())
            .map_or(true, |method| match method {
                "user_exists" => false,
                "check_password" => check_password == CheckPasswordMethod::Post,
                _ => true,
            });
        let status = attempt.status().as_u16();
        if previous.len() > MAX_REDIRECTS {
            attempt.error(RedirectRefused::TooMany)
        } else if previous
            .last()
            .map_or(true, |from| from.origin() != attempt.url().origin())
        {
            attempt.error(RedirectRefused::OtherOrigin)
        } else if posted && !matches!(status, 307 | 308) {
            attempt.error(RedirectRefused::WouldDropBody(status))
        } else {
            attempt.follow()
        }
    })
}

/// An account API speaking mod_auth_http.
pub struct HttpBackend {
    name: String,
    base: BaseUrl,
    credentials: Option<BasicCredentials>,
    check_password_method: CheckPasswordMethod,
    max_body: usize,
    check_account: Option<Account>,
    settings: ClientSettings,
    client: OnceCell<Client>,
    /// Connections the client opened, for the retry's "was it a kept-alive one" test.
    connections: CountConnections,
}

impl HttpBackend {
    /// Validates the configuration and reads credentials and CA files. The HTTP client
    /// itself (and the system's root certificates) is only set up on first use.
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
        let native_roots = base.is_https();
        Ok(HttpBackend {
            name: config.name.clone(),
            base,
            credentials,
            check_password_method: config.check_password_method,
            max_body: config.max_body,
            check_account: config.check_account.as_deref().and_then(split_account),
            settings: ClientSettings {
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                follow_redirects: config.follow_redirects,
                check_password_method: config.check_password_method,
                extra_roots,
                native_roots,
            },
            client: OnceCell::new(),
            connections: CountConnections::default(),
        })
    }

    async fn client(&self) -> Result<&Client, BackendError> {
        self.client
            .get_or_try_init(|| async { self.settings.build(&self.connections) })
            .await
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

    fn config(extra: &str) -> Result<HttpBackendConfig, String> {
        let text = format!("name = \"api\"\nurl = \"https://api.example.org/auth\"\n{extra}");
        toml::from_str(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = config("").unwrap();
        assert_eq!(c.check_password_method, CheckPasswordMethod::Get);
        assert!(!c.follow_redirects);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.max_body, DEFAULT_MAX_BODY);
        c.validate().unwrap();
        assert!(config("check_password_method = \"POST\"").is_ok());
        assert!(config("check_password_method = \"PUT\"").is_err());
        assert!(config("colour = 1").is_err());
    }

    #[test]
    fn url_validation() {
        for bad in [
            "ftp://x/y",
            "not a url",
            "https://x/y?a=b",
            "https://u:p@x/y",
            "/relative",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
        let b = BaseUrl::parse("https://$host/api/").unwrap();
        assert_eq!(
            b.for_method("example.net", "user_exists").unwrap().as_str(),
            "https://example.net/api/user_exists"
        );
        assert!(b.for_method("evil.com/x?", "user_exists").is_err());
        assert!(b.for_method("a@b", "user_exists").is_err());
        let long_label = "a".repeat(64);
        for not_a_domain in [
            "..",
            ".",
            "",
            "a..b",
            ".a",
            "a.",
            "b\u{fc}cher.de",
            long_label.as_str(),
        ] {
            assert!(
                b.for_method(not_a_domain, "user_exists").is_err(),
                "{not_a_domain}"
            );
        }
        assert!(b.for_method("xn--bcher-kva.de", "user_exists").is_ok());
        let b = BaseUrl::parse("http://127.0.0.1:1/x").unwrap();
        assert_eq!(
            b.for_method("a/b", "register").unwrap().as_str(),
            "http://127.0.0.1:1/x/register"
        );
    }

    #[test]
    fn a_url_parsed_once_gives_what_parsing_per_request_gave() {
        for base in [
            "http://h",
            "http://h/",
            "http://h/api",
            "https://h/api//",
            "http://h:8080/a/b/",
            "http://h/a%20b",
            "http://BÜCHER.example/x",
            "http://[::1]:9/auth",
        ] {
            let b = BaseUrl::parse(base).unwrap();
            assert!(b.fixed.is_some(), "{base}");
            for method in ["check_password", "user_exists", "remove_user"] {
                let slow = Url::parse(&format!("{}/{method}", b.pieces[0])).unwrap();
                assert_eq!(b.for_method("any", method).unwrap(), slow, "{base}");
            }
        }
    }

    #[test]
    fn credentials_sources_are_exclusive_and_well_formed() {
        let c = config("credentials = \"a:b\"\ncredentials_env = \"X\"").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "credentials");
        let c = config("credentials = \"nocolon\"").unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.0, "credentials");
        assert!(!e.1.contains("nocolon"), "the value must not be echoed");
        let c = config("credentials_env = \"EXTAUTH_BRIDGE_TEST_UNSET_VAR\"").unwrap();
        assert_eq!(HttpBackend::new(&c).err().unwrap().0, "credentials_env");
        let c = config("ca_file = \"/nonexistent/ca.pem\"").unwrap();
        assert_eq!(HttpBackend::new(&c).err().unwrap().0, "ca_file");
        let c = config("check_account = \"nodomain\"").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "check_account");
    }

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

    #[test]
    fn debug_never_shows_credentials() {
        let c = config("credentials = \"api:s3cr3t\"").unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
