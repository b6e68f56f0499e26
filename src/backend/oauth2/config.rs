//! The `[[backend]]` table with `type = "oauth2"` as it is written in TOML: the option enums,
//! [`OAuth2BackendConfig`] and its defaults. Plain data: nothing here reads a file or the
//! environment, checks one key against another or talks to the IdP; that is
//! `validate.rs` (`OAuth2Backend::new`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::identity::{UsernameCase, UsernameMapping};
use crate::secret::Secret;

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
        deserialize_with = "crate::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub request_timeout: Duration,
    #[serde(
        default = "default_refresh",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub discovery_refresh: Duration,
    #[serde(
        default = "default_refresh",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub jwks_refresh: Duration,
    /// A users file that every account logging in through this backend is added to, locked
    /// (`crate::backend::RememberingBackend`), so a file backend over it answers `isuser`.
    pub remember_accounts: Option<PathBuf>,
    /// The circuit breaker around this backend; off unless set.
    #[serde(default)]
    pub breaker: Option<crate::backend::BreakerConfig>,
}

pub(super) fn default_scope() -> String {
    "openid".to_owned()
}
pub(super) fn default_username_field() -> String {
    "preferred_username".to_owned()
}
fn yes() -> bool {
    true
}
/// Accepted when `algorithms` is not configured.
pub const DEFAULT_ALGORITHMS: &[&str] = &["RS256", "PS256", "ES256", "EdDSA"];

fn default_algorithms() -> Vec<String> {
    DEFAULT_ALGORITHMS.iter().map(|s| (*s).to_owned()).collect()
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

/// A configuration problem: the key within this backend's table, and what is wrong. The
/// router turns it into a [`crate::config::ConfigError`] naming the file and `backend[i]`.
pub type KeyError = (String, String);

/// `audience = "any"`: the operator's explicit choice to accept a token issued to any
/// client of the IdP (and so a reserved word, never compared with a real `aud`).
pub const ANY_AUDIENCE: &str = "any";
