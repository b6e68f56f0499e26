//! OAuth2 / OpenID Connect backend: asks an identity provider instead of a local store.
//!
//! Three ways to check an `auth` request (`mode`):
//! - `password_grant` (RFC 6749 §4.3): trade the username and password for an access token
//!   at the token endpoint, then confirm whose token it is ([`grant`], then `verify`);
//! - `token`: the "password" is an access token, checked by introspection (RFC 7662),
//!   userinfo, or locally as a JWT against the issuer's JWKS (`validate`);
//! - `auto`: passwords shaped like a JWT or carrying a configured prefix go the token way,
//!   everything else the password-grant way.
//!
//! Whatever the path, the identity the IdP vouches for must be the requested user
//! ([`identity`]): a valid token of someone else is a `0`.
//!
//! Endpoints come from discovery ([`discovery`]) unless configured explicitly. The HTTP
//! client is built on first use; discovery documents and the JWKS are fetched lazily and
//! cached. Any failure to reach the IdP is `Unavailable` (answer `0`, logged), never a crash.

pub mod body;
pub mod discovery;
pub mod grant;
pub mod identity;
pub mod introspect;
pub mod jwt;
pub mod userinfo;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Backend, BackendError, BackendResult, CheckReport};
use crate::request::Account;
use crate::secret::Secret;

use discovery::{Discovery, Endpoints, Needed};
use identity::{IdentityRule, UsernameCase, UsernameMapping};
use jwt::JwksCache;

/// How the client proves itself to the token and introspection endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret.
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
    /// A public client: `client_id` in the body only.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    PasswordGrant,
    Token,
    Auto,
}

/// What is sent as `username` in the password grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernameFormat {
    /// `user`
    #[default]
    Localpart,
    /// `user@server`
    Jid,
}

/// How a password grant's token is tied to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    #[default]
    Userinfo,
    Introspection,
    /// Trust that the IdP issued the token for the username we sent.
    None,
}

/// How a token given as the password is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validate {
    #[default]
    Introspection,
    Userinfo,
    Jwt,
}

/// The answer to `isuser`: an IdP cannot list its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsUserPolicy {
    Deny,
    Allow,
    /// Fall through to the next backend of the chain.
    #[default]
    Next,
}

/// One `[[backend]]` table with `type = "oauth2"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2BackendConfig {
    pub name: String,
    pub issuer: Option<String>,
    pub token_endpoint: Option<String>,
    pub introspection_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    pub introspection_bearer: Option<Secret>,
    pub introspection_bearer_file: Option<PathBuf>,
    pub introspection_bearer_env: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_scope")]
    pub scope: String,
    #[serde(default)]
    pub username_format: UsernameFormat,
    #[serde(default)]
    pub verify: Verify,
    #[serde(default)]
    pub validate: Validate,
    #[serde(default)]
    pub token_prefixes: Vec<String>,
    #[serde(default = "default_username_field")]
    pub username_field: String,
    #[serde(default)]
    pub username_mapping: UsernameMapping,
    /// `exact` (default) or `ascii`: how the IdP's name is compared with the user.
    #[serde(default)]
    pub username_case: UsernameCase,
    /// Space-separated scopes an introspected token must all carry.
    pub required_scope: Option<String>,
    /// The audience a token must be issued for (introspection `aud`, JWT `aud`).
    pub audience: Option<String>,
    /// Check `iss` of introspection responses and JWTs against `issuer`.
    #[serde(default = "yes")]
    pub check_issuer: bool,
    /// JWT signature algorithms accepted (`validate = "jwt"`).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub isuser: IsUserPolicy,
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
    #[serde(
        default = "default_refresh",
        deserialize_with = "crate::config::duration"
    )]
    pub discovery_refresh: Duration,
    #[serde(
        default = "default_refresh",
        deserialize_with = "crate::config::duration"
    )]
    pub jwks_refresh: Duration,
}

fn default_scope() -> String {
    "openid".to_owned()
}
fn default_username_field() -> String {
    "preferred_username".to_owned()
}
fn yes() -> bool {
    true
}
fn default_algorithms() -> Vec<String> {
    jwt::DEFAULT_ALGORITHMS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
/// Below the default 4 s request deadline, so a slow IdP fails inside the bridge's own
/// deadline with a useful log line.
fn default_request_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_refresh() -> Duration {
    Duration::from_secs(3600)
}

/// After a failed discovery or JWKS fetch, how long before the next try. Meanwhile the
/// previous endpoints or keys serve; logins do not each wait on a failing IdP.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A configuration problem: the key within this backend's table, and what is wrong. The
/// router turns it into a [`crate::config::ConfigError`] naming the file and `backend[i]`.
pub type KeyError = (String, String);

/// Reads a secret given inline, in a file or in an environment variable (at most one).
fn resolve_secret(
    keys: [&'static str; 3],
    inline: &Option<Secret>,
    path: &Option<PathBuf>,
    env: &Option<String>,
) -> Result<Option<Secret>, KeyError> {
    crate::secret::resolve(keys, inline.as_ref(), path.as_deref(), env.as_deref())
        .map_err(|(key, message)| (key.to_owned(), message))
}

/// The client credentials, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: Option<String>,
    pub secret: Option<Secret>,
    pub auth: ClientAuth,
}

impl Client {
    /// Adds client authentication to a token or introspection request. `form` is the body
    /// so far; the returned pairs are what to send.
    pub fn apply(
        &self,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        let Some(id) = &self.id else { return request };
        match (self.auth, &self.secret) {
            (ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: each part is form-urlencoded before they are joined, so a
                // `:` in the id cannot shift the split (many clients get this wrong).
                request.basic_auth(form_urlencode(id), Some(form_urlencode(secret.expose())))
            }
            (ClientAuth::Post, Some(secret)) => {
                form.push(("client_id", id.clone()));
                form.push(("client_secret", secret.expose().to_owned()));
                request
            }
            _ => {
                form.push(("client_id", id.clone()));
                request
            }
        }
    }

    pub fn is_confidential(&self) -> bool {
        self.id.is_some() && self.secret.is_some() && self.auth != ClientAuth::None
    }
}

/// `audience = "any"`: the operator's explicit choice to accept a token issued to any
/// client of the IdP (and so a reserved word, never compared with a real `aud`).
pub const ANY_AUDIENCE: &str = "any";

/// Tokens as passwords must be meant for us (SPEC §10): an IdP issues tokens to every
/// client of its realm, and without a binding a token another application obtained (a
/// game, a wiki, anything its user logged into) would log in here. So `audience` is
/// required with `mode = "token"`/`"auto"`, or the operator writes `"any"`. Userinfo
/// answers who the token belongs to, not whom it was issued to: a real audience there
/// would be a check that is silently not made, so only `"any"` is accepted with it.
fn check_audience(config: &OAuth2BackendConfig) -> Result<(), KeyError> {
    let err = |m: &str| ("audience".to_owned(), m.to_owned());
    match config.audience.as_deref() {
        None => Err(err(
            "required with mode = \"token\" or \"auto\": the `aud` (or, at introspection, the `client_id`) of tokens meant for this service, often its client_id; or audience = \"any\" to accept a token issued to any client of the IdP",
        )),
        Some("") => Err(err("must not be empty")),
        Some(a) if a != ANY_AUDIENCE && config.validate == Validate::Userinfo => Err(err(
            "validate = \"userinfo\" cannot check whom a token was issued to: use introspection or jwt, or write audience = \"any\" to accept tokens issued to any client",
        )),
        Some(_) => Ok(()),
    }
}

/// The audience to check, `None` when any is accepted (or none was configured).
fn audience_to_check(config: &OAuth2BackendConfig) -> Option<String> {
    config.audience.clone().filter(|a| a != ANY_AUDIENCE)
}

/// An endpoint URL fit to be asked and logged: http or https, and no `user:password@`.
/// Credentials there would travel to the IdP outside the client authentication we
/// control, and be printed with every log line naming the URL. The reasons never repeat
/// the URL (it may hold exactly that password).
pub(crate) fn endpoint_url(u: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "must not carry credentials (user:password@); the client authenticates with \
             client_id and client_secret"
                .into(),
        );
    }
    Ok(parsed)
}

/// Plain http is fine on loopback (a local IdP, the tests), nowhere else.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Is `token` fit to be used as a token: a bearer credential, the `token=` of an
/// introspection, a JWT? One or more visible ASCII characters (0x21..=0x7E).
///
/// RFC 6750's `b64token` (letters, digits, `-._~+/`, trailing `=`) would be the strict
/// rule, but it refuses Prosody's `secret-token:…` tokens (the `:`) and what other IdPs
/// issue, so the visible-ASCII superset is accepted. What the rule must keep out is what a
/// client could use to make the request impossible to build (a control byte, DEL, a space,
/// a non-ASCII byte in the `Authorization` header): reqwest reports that as an error the
/// request loop cannot tell from an unreachable IdP, and with `on_unavailable = "next"` the
/// client would have chosen to be asked by the next backend instead (SPEC §10).
pub fn is_token_syntax(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| matches!(b, 0x21..=0x7E))
}

/// `application/x-www-form-urlencoded` encoding of one value (space as `+`).
pub fn form_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// POSTs a form that carries a credential and returns the status and the body (capped at
/// [`body::MAX_RESPONSE`]). Our copy of the form is wiped as soon as it is sent; transport
/// errors never print the URL's query (there is none here, but the rule is cheap).
pub async fn send_form(
    request: reqwest::RequestBuilder,
    mut form: Vec<(&'static str, String)>,
    what: &str,
) -> Result<(reqwest::StatusCode, bytes::Bytes), BackendError> {
    let response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await;
    for (_, v) in &mut form {
        zeroize::Zeroize::zeroize(v);
    }
    let response = response.map_err(|e| super::classify(what, e))?;
    let status = response.status();
    let body = body::read_capped(response, body::MAX_RESPONSE, what).await?;
    Ok((status, body))
}

/// The settings a request needs, shared by the submodules.
pub struct Settings {
    pub mode: Mode,
    pub scope: String,
    pub username_format: UsernameFormat,
    pub verify: Verify,
    pub validate: Validate,
    pub token_prefixes: Vec<String>,
    pub identity: IdentityRule,
    pub required_scope: Vec<String>,
    pub audience: Option<String>,
    /// The `iss` required of introspection responses and JWTs, when checked.
    pub expected_issuer: Option<String>,
    pub isuser: IsUserPolicy,
}

impl Settings {
    /// `mode = "token"` with introspection, judged with `audience`, `expected_issuer` and
    /// `required_scope`, names compared exactly: what the unit tests and the fuzz target
    /// `oauth2_json` check responses against, without a configuration file.
    pub fn introspected_tokens(
        audience: Option<String>,
        expected_issuer: Option<String>,
        required_scope: Vec<String>,
    ) -> Settings {
        Settings {
            mode: Mode::Token,
            scope: default_scope(),
            username_format: UsernameFormat::Localpart,
            verify: Verify::Introspection,
            validate: Validate::Introspection,
            token_prefixes: Vec::new(),
            identity: IdentityRule {
                field: default_username_field(),
                mapping: UsernameMapping::Localpart,
                case: UsernameCase::Exact,
            },
            required_scope,
            audience,
            expected_issuer,
            isuser: IsUserPolicy::Next,
        }
    }
}

pub struct OAuth2Backend {
    name: String,
    settings: Settings,
    client: Client,
    introspection_bearer: Option<Secret>,
    ca_file: Option<PathBuf>,
    connect_timeout: Duration,
    request_timeout: Duration,
    http: OnceLock<Result<reqwest::Client, String>>,
    discovery: Discovery,
    jwks: JwksCache,
}

impl OAuth2Backend {
    /// Builds the backend from its configuration. Nothing is fetched here: the IdP may be
    /// down while we start.
    pub fn new(config: &OAuth2BackendConfig) -> Result<OAuth2Backend, KeyError> {
        let err = |k: &str, m: &str| (k.to_owned(), m.to_owned());
        let client_secret = resolve_secret(
            ["client_secret", "client_secret_file", "client_secret_env"],
            &config.client_secret,
            &config.client_secret_file,
            &config.client_secret_env,
        )?;
        let introspection_bearer = resolve_secret(
            [
                "introspection_bearer",
                "introspection_bearer_file",
                "introspection_bearer_env",
            ],
            &config.introspection_bearer,
            &config.introspection_bearer_file,
            &config.introspection_bearer_env,
        )?;
        // Sent as `Authorization: Bearer`: one that cannot be, fails at start-up rather than
        // turning every login into a request that cannot be built.
        if introspection_bearer
            .as_ref()
            .is_some_and(|b| !is_token_syntax(b.expose()))
        {
            return Err(err(
                "introspection_bearer",
                "must be visible ASCII characters only (no spaces or control characters)",
            ));
        }
        for (k, url) in [
            ("issuer", &config.issuer),
            ("token_endpoint", &config.token_endpoint),
            ("introspection_endpoint", &config.introspection_endpoint),
            ("userinfo_endpoint", &config.userinfo_endpoint),
            ("jwks_uri", &config.jwks_uri),
        ] {
            if let Some(u) = url {
                let parsed = endpoint_url(u).map_err(|m| err(k, &m))?;
                if parsed.scheme() == "http" && !is_loopback(&parsed) {
                    tracing::warn!(backend = %config.name, key = k, url = %u, "plain http: passwords and tokens would cross the network unencrypted");
                }
            }
        }
        let needs = |explicit: &Option<String>, what: &str| -> Result<(), KeyError> {
            if explicit.is_none() && config.issuer.is_none() {
                return Err(err(
                    what,
                    "required (or set issuer for discovery) for this mode",
                ));
            }
            Ok(())
        };
        let grant = matches!(config.mode, Mode::PasswordGrant | Mode::Auto);
        let token = matches!(config.mode, Mode::Token | Mode::Auto);
        let uses_introspection = (grant && config.verify == Verify::Introspection)
            || (token && config.validate == Validate::Introspection);
        let uses_userinfo = (grant && config.verify == Verify::Userinfo)
            || (token && config.validate == Validate::Userinfo);
        let uses_jwt = token && config.validate == Validate::Jwt;
        if grant {
            needs(&config.token_endpoint, "token_endpoint")?;
            if config.client_id.is_none() {
                return Err(err("client_id", "required for the password grant"));
            }
        }
        if uses_introspection {
            needs(&config.introspection_endpoint, "introspection_endpoint")?;
            if introspection_bearer.is_none() && client_secret.is_none() {
                return Err(err(
                    "introspection_bearer",
                    "introspection needs client credentials (client_secret) or a bearer token",
                ));
            }
        }
        if uses_userinfo {
            needs(&config.userinfo_endpoint, "userinfo_endpoint")?;
        }
        if uses_jwt {
            needs(&config.jwks_uri, "jwks_uri")?;
            if config.issuer.is_none() && config.check_issuer {
                return Err(err(
                    "issuer",
                    "required to check the `iss` of JWTs (or set check_issuer = false)",
                ));
            }
        }
        if token {
            check_audience(config)?;
        }
        if config.client_auth != ClientAuth::None
            && client_secret.is_none()
            && config.client_id.is_some()
        {
            return Err(err(
                "client_secret",
                "required with client_auth = \"basic\" or \"post\" (use client_auth = \"none\" for a public client)",
            ));
        }
        if config.scope.contains(['\r', '\n']) {
            return Err(err("scope", "must be one line"));
        }
        if config.username_field.is_empty() {
            return Err(err("username_field", "must not be empty"));
        }
        let algorithms =
            jwt::parse_algorithms(&config.algorithms).map_err(|m| err("algorithms", &m))?;
        for (k, d) in [
            ("connect_timeout", config.connect_timeout),
            ("request_timeout", config.request_timeout),
            ("discovery_refresh", config.discovery_refresh),
            ("jwks_refresh", config.jwks_refresh),
        ] {
            if d.is_zero() {
                return Err(err(k, "must be greater than zero"));
            }
        }
        if let Some(ca) = &config.ca_file {
            if !ca.is_file() {
                return Err(err(
                    "ca_file",
                    &format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        let explicit = Endpoints {
            token: config.token_endpoint.clone(),
            introspection: config.introspection_endpoint.clone(),
            userinfo: config.userinfo_endpoint.clone(),
            jwks_uri: config.jwks_uri.clone(),
        };
        let needed = Needed {
            token: grant,
            introspection: uses_introspection,
            userinfo: uses_userinfo,
            jwks_uri: uses_jwt,
        };
        let expected_issuer = config.issuer.clone().filter(|_| config.check_issuer);
        Ok(OAuth2Backend {
            name: config.name.clone(),
            settings: Settings {
                mode: config.mode,
                scope: config.scope.clone(),
                username_format: config.username_format,
                verify: config.verify,
                validate: config.validate,
                token_prefixes: config.token_prefixes.clone(),
                identity: IdentityRule {
                    field: config.username_field.clone(),
                    mapping: config.username_mapping,
                    case: config.username_case,
                },
                required_scope: config
                    .required_scope
                    .as_deref()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                audience: audience_to_check(config),
                expected_issuer: expected_issuer.clone(),
                isuser: config.isuser,
            },
            client: Client {
                id: config.client_id.clone(),
                secret: client_secret,
                auth: config.client_auth,
            },
            introspection_bearer,
            ca_file: config.ca_file.clone(),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            http: OnceLock::new(),
            discovery: Discovery::new(
                config.issuer.clone(),
                explicit,
                needed,
                config.discovery_refresh,
            ),
            jwks: JwksCache::new(
                algorithms,
                expected_issuer,
                audience_to_check(config),
                config.jwks_refresh,
            ),
        })
    }

    /// The HTTP client, built on first use: one per backend, connections kept alive.
    fn http(&self) -> Result<&reqwest::Client, BackendError> {
        self.http
            .get_or_init(|| {
                build_http_client(
                    self.ca_file.as_deref(),
                    self.connect_timeout,
                    self.request_timeout,
                )
            })
            .as_ref()
            .map_err(|e| BackendError::Internal(e.clone()))
    }

    /// The endpoints, from the configuration or discovery.
    async fn endpoints(&self) -> Result<Arc<Endpoints>, BackendError> {
        self.discovery.endpoints(self.http()?).await
    }

    /// Is `password` to be treated as a token rather than a password?
    fn looks_like_token(&self, password: &str) -> bool {
        self.settings
            .token_prefixes
            .iter()
            .any(|p| !p.is_empty() && password.starts_with(p.as_str()))
            || jwt::looks_like_jwt(password)
    }

    async fn password_grant(&self, account: &Account, password: &Secret) -> BackendResult {
        let http = self.http()?;
        let endpoints = self.endpoints().await?;
        let token_endpoint = endpoints.require_token()?;
        let username = match self.settings.username_format {
            UsernameFormat::Localpart => account.user.clone(),
            UsernameFormat::Jid => format!("{}@{}", account.user, account.server),
        };
        let token = match grant::password_grant(
            http,
            token_endpoint,
            &self.client,
            &username,
            password,
            &self.settings.scope,
        )
        .await?
        {
            grant::Grant::Token(t) => t,
            grant::Grant::Refused(why) => return Ok(self.refuse(account, why)),
        };
        let claims = match self.settings.verify {
            Verify::None => return Ok(true),
            Verify::Userinfo => {
                userinfo::fetch(http, endpoints.require_userinfo()?, &token).await?
            }
            Verify::Introspection => self.introspect(&endpoints, &token).await?,
        };
        Ok(self.judge(account, claims))
    }

    async fn introspect(
        &self,
        endpoints: &Endpoints,
        token: &Secret,
    ) -> Result<identity::Verdict, BackendError> {
        introspect::introspect(
            self.http()?,
            endpoints.require_introspection()?,
            &self.client,
            self.introspection_bearer.as_ref(),
            token,
            &self.settings,
        )
        .await
    }

    async fn token_as_password(&self, account: &Account, token: &Secret) -> BackendResult {
        // Before anything is fetched or built: a final `0`, never `Unavailable`.
        if !is_token_syntax(token.expose()) {
            return Ok(self.refuse(account, "token is not visible ASCII"));
        }
        let claims = match self.settings.validate {
            Validate::Introspection => {
                let endpoints = self.endpoints().await?;
                self.introspect(&endpoints, token).await?
            }
            Validate::Userinfo => {
                let endpoints = self.endpoints().await?;
                userinfo::fetch(self.http()?, endpoints.require_userinfo()?, token).await?
            }
            Validate::Jwt => {
                let endpoints = self.endpoints().await?;
                self.jwks
                    .verify(self.http()?, endpoints.require_jwks_uri()?, token)
                    .await?
            }
        };
        Ok(self.judge(account, claims))
    }

    /// The identity check, always the last word: the claims must name the requested user.
    fn judge(&self, account: &Account, claims: identity::Verdict) -> bool {
        match claims {
            Ok(claims) => match self.settings.identity.check(&claims, account) {
                Ok(()) => true,
                Err(why) => self.refuse(account, why),
            },
            Err(why) => self.refuse(account, why),
        }
    }

    /// What `check` says about tokens not bound to this service (the configuration
    /// allows both, as the operator's explicit choice, but they should know).
    fn audience_warnings(&self) -> Vec<String> {
        let s = &self.settings;
        if s.mode == Mode::PasswordGrant {
            return Vec::new();
        }
        let warning = if s.validate == Validate::Userinfo {
            "validate = \"userinfo\" cannot check whom a token was issued to: a token any client \
             of the IdP obtained for a user logs in as that user; prefer introspection or jwt \
             with an audience"
        } else if s.audience.is_none() {
            "audience = \"any\": a token issued to any client of the IdP logs in; set the \
             audience of tokens meant for this service (often its client_id)"
        } else {
            return Vec::new();
        };
        vec![warning.to_owned()]
    }

    /// Logs why a login was refused (never the credential) and answers `false`.
    fn refuse(&self, account: &Account, why: &str) -> bool {
        tracing::debug!(backend = %self.name, user = %account.user, server = %account.server, reason = why, "oauth2 refused");
        false
    }
}

/// Builds the backend's HTTP client: rustls with the system roots plus `ca_file`, no
/// redirects (credentials must not travel to another host), bounded timeouts.
fn build_http_client(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<reqwest::Client, String> {
    // The shared base: no Referer, name lookups bounded per backend.
    let mut builder = crate::backend::net::client_builder(connect_timeout, request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

#[async_trait]
impl Backend for OAuth2Backend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "oauth2"
    }

    async fn authenticate(&self, account: &Account, password: &Secret) -> BackendResult {
        match self.settings.mode {
            Mode::PasswordGrant => self.password_grant(account, password).await,
            Mode::Token => self.token_as_password(account, password).await,
            Mode::Auto if self.looks_like_token(password.expose()) => {
                self.token_as_password(account, password).await
            }
            Mode::Auto => self.password_grant(account, password).await,
        }
    }

    /// `isuser` is answered by policy: the IdP may hold any name, so no change is ever
    /// passed below it (an account it holds must not be created in a users file behind it).
    fn knows_its_accounts(&self) -> bool {
        false
    }

    async fn user_exists(&self, _account: &Account) -> BackendResult {
        match self.settings.isuser {
            IsUserPolicy::Allow => Ok(true),
            IsUserPolicy::Deny => Ok(false),
            IsUserPolicy::Next => Err(BackendError::Unsupported),
        }
    }

    async fn check_report(&self) -> Result<CheckReport, BackendError> {
        Ok(CheckReport {
            detail: self.check().await?,
            warnings: self.audience_warnings(),
        })
    }

    async fn check(&self) -> Result<String, BackendError> {
        let http = self.http()?;
        let endpoints = self.discovery.refresh(http).await?;
        let mut done = vec![if self.discovery.is_used() {
            "discovery ok"
        } else {
            "endpoints configured"
        }
        .to_owned()];
        if let Some(jwks_uri) = &endpoints.jwks_uri {
            if self.settings.mode != Mode::PasswordGrant && self.settings.validate == Validate::Jwt
            {
                let n = self.jwks.refresh(http, jwks_uri).await?;
                done.push(format!("JWKS has {n} usable key(s)"));
            }
        }
        // A made-up token tells whether the client credentials are accepted: refused (401,
        // or 403 at django-oauth-toolkit) means they are not; `active: false` means they are.
        // Without a way to introspect, a made-up password at the token endpoint tells the
        // same: `invalid_grant` is about the user, `invalid_client` about us.
        let can_introspect = self.client.is_confidential() || self.introspection_bearer.is_some();
        match (&endpoints.introspection, &endpoints.token) {
            (Some(introspection), _) if can_introspect => {
                let dummy = Secret::new("extauth-bridge-check-not-a-token");
                let bearer = self.introspection_bearer.as_ref();
                match introspect::introspect(
                    http,
                    introspection,
                    &self.client,
                    bearer,
                    &dummy,
                    &self.settings,
                )
                .await?
                {
                    Err(_) => done.push("introspection credentials accepted".to_owned()),
                    Ok(_) => {
                        return Err(BackendError::Protocol(
                            "introspection called a made-up token active".into(),
                        ))
                    }
                }
            }
            (_, Some(token_endpoint)) if self.client.id.is_some() => {
                let dummy = Secret::new("extauth-bridge-check-not-a-password");
                match grant::password_grant(
                    http,
                    token_endpoint,
                    &self.client,
                    "extauth-bridge-check",
                    &dummy,
                    &self.settings.scope,
                )
                .await?
                {
                    grant::Grant::Refused(_) => {
                        done.push("token endpoint accepts the client".to_owned())
                    }
                    grant::Grant::Token(_) => {
                        return Err(BackendError::Protocol(
                            "the token endpoint accepted a made-up password".into(),
                        ))
                    }
                }
            }
            _ => {}
        }
        Ok(done.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, Config, ConfigError};

    fn build(body: &str) -> Result<OAuth2Backend, ConfigError> {
        let text = format!("[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n{body}");
        let config = Config::parse(&text, "c.toml")?;
        match &config.backends[0] {
            BackendConfig::Oauth2(c) => OAuth2Backend::new(c)
                .map_err(|(k, m)| ConfigError::new("c.toml", format!("backend[0].{k}"), m)),
            _ => unreachable!(),
        }
    }

    fn key_of(body: &str) -> String {
        match build(body) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => e.key,
        }
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let issuer = "issuer = \"https://idp.example\"\n";
        assert!(build(&format!(
            "{issuer}client_id = \"c\"\nclient_auth = \"none\""
        ))
        .is_ok());
        assert_eq!(key_of(issuer), "backend[0].client_id");
        assert_eq!(
            key_of("client_id = \"c\"\nclient_auth = \"none\""),
            "backend[0].token_endpoint"
        );
        assert_eq!(
            key_of(&format!("{issuer}client_id = \"c\"")),
            "backend[0].client_secret"
        );
        assert_eq!(
            key_of(&format!(
                "{issuer}client_id = \"c\"\nclient_secret = \"s\"\nclient_secret_env = \"X\""
            )),
            "backend[0].client_secret"
        );
        assert_eq!(
            key_of(&format!(
                "{issuer}client_id = \"c\"\nclient_secret_env = \"EXTAUTH_TEST_UNSET_VARIABLE\""
            )),
            "backend[0].client_secret_env"
        );
        assert_eq!(
            key_of(&format!(
                "{issuer}mode = \"token\"\nvalidate = \"jwt\"\naudience = \"a\"\nalgorithms = [\"HS256\"]"
            )),
            "backend[0].algorithms"
        );
        assert_eq!(
            key_of(&format!("{issuer}mode = \"token\"\nvalidate = \"jwt\"")),
            "backend[0].audience"
        );
        for mode in ["token", "auto"] {
            let base = format!(
                "{issuer}client_id = \"c\"\nclient_auth = \"none\"\nmode = \"{mode}\"\n\
                 introspection_bearer = \"b\"\n"
            );
            for validate in ["introspection", "userinfo", "jwt"] {
                let v = format!("{base}validate = \"{validate}\"\n");
                assert_eq!(key_of(&v), "backend[0].audience", "{v}");
                assert_eq!(
                    key_of(&format!("{v}audience = \"\"")),
                    "backend[0].audience"
                );
                assert!(build(&format!("{v}audience = \"any\"")).is_ok(), "{v}");
                let bound = build(&format!("{v}audience = \"bridge\""));
                if validate == "userinfo" {
                    assert_eq!(
                        bound.err().map(|e| e.key).as_deref(),
                        Some("backend[0].audience")
                    );
                } else {
                    assert!(bound.is_ok(), "{v}");
                }
            }
        }
        // The password grant's own tokens are ours: no audience needed.
        assert!(build(&format!(
            "{issuer}client_id = \"c\"\nclient_auth = \"none\"\nverify = \"userinfo\""
        ))
        .is_ok());
        assert_eq!(
            key_of(&format!(
                "{issuer}client_id = \"c\"\nclient_auth = \"none\"\nmode = \"auto\"\nvalidate = \"jwt\""
            )),
            "backend[0].audience"
        );
        assert!(build(&format!(
            "{issuer}mode = \"token\"\nvalidate = \"jwt\"\naudience = \"a\""
        ))
        .is_ok());
        assert_eq!(
            key_of("mode = \"token\"\nvalidate = \"jwt\"\njwks_uri = \"https://idp.example/jwks\""),
            "backend[0].issuer"
        );
        assert_eq!(
            key_of(&format!(
                "{issuer}mode = \"token\"\nvalidate = \"introspection\""
            )),
            "backend[0].introspection_bearer"
        );
        assert_eq!(
            key_of("issuer = \"ftp://x\"\nmode = \"token\"\nvalidate = \"userinfo\""),
            "backend[0].issuer"
        );
        assert_eq!(
            key_of(&format!("{issuer}mode = \"tokens\"")),
            "backend[0].mode"
        );
        assert_eq!(
            key_of(&format!("{issuer}client_secret_cli = \"x\"")),
            "backend[0].client_secret_cli"
        );
    }

    #[test]
    fn secrets_from_a_file_lose_the_trailing_newline_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cr:et&+%\n").unwrap();
        let b = build(&format!(
            "issuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"",
            path.display()
        ))
        .unwrap();
        let secret = b.client.secret.as_ref().unwrap();
        assert_eq!(secret.expose(), "s3cr:et&+%");
        assert!(!format!("{:?}", b.client).contains("s3cr"));
    }

    #[test]
    fn loopback_hosts() {
        for (u, want) in [
            ("http://127.0.0.1:8000/o", true),
            ("http://[::1]/", true),
            ("http://LocalHost/", true),
            ("http://idp.example/", false),
            ("http://10.0.0.1/", false),
        ] {
            assert_eq!(is_loopback(&reqwest::Url::parse(u).unwrap()), want, "{u}");
        }
    }

    #[test]
    fn tokens_are_visible_ascii() {
        for good in [
            "secret-token:abc",
            "eyJ.a.b",
            "a~+/=",
            "!\"#$%&'()*,;<>?@[\\]^`{|}",
        ] {
            assert!(is_token_syntax(good), "{good:?}");
        }
        for bad in [
            "",
            "a b",
            "a\tb",
            "a\u{1}",
            "a\u{7f}",
            "caf\u{e9}",
            "a\r\nb",
        ] {
            assert!(!is_token_syntax(bad), "{bad:?}");
        }
        let issuer = "issuer = \"https://idp.example\"\nmode = \"token\"\naudience = \"a\"\n";
        assert_eq!(
            key_of(&format!("{issuer}introspection_bearer = \"x\\u0001y\"")),
            "backend[0].introspection_bearer"
        );
        assert!(build(&format!("{issuer}introspection_bearer = \"x:y\"")).is_ok());
    }

    #[test]
    fn form_urlencoding_of_client_credentials() {
        assert_eq!(form_urlencode("weird id:é"), "weird+id%3A%C3%A9");
        assert_eq!(form_urlencode("s3cr:et&+%"), "s3cr%3Aet%26%2B%25");
        assert_eq!(form_urlencode("plain-ID_1.x*"), "plain-ID_1.x*");
    }
}
