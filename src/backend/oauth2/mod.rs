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
//!
//! Layout, in the order the data flows: [`config`] (the TOML table, plain data) →
//! `validate.rs` (`OAuth2Backend::new`: the table becomes [`settings::Settings`], the client
//! credentials, discovery and the JWKS cache) → this file (the backend: the mode dispatch and
//! the flows, asking [`grant`], [`introspect`], [`userinfo`] and [`jwt`]) → [`identity`]. The
//! shared request plumbing is [`client`]. No configuration is read or checked here.

pub mod body;
pub mod client;
pub mod config;
pub mod discovery;
pub mod grant;
pub mod identity;
pub mod introspect;
pub mod jwt;
pub mod settings;
pub mod userinfo;
mod validate;

use std::sync::Arc;

use async_trait::async_trait;

use super::net::BuiltOnce;
use super::{Backend, BackendError, BackendResult, CheckReport};
use crate::request::Account;
use crate::secret::Secret;

use client::{is_token_syntax, Client};
use config::{IsUserPolicy, Mode, UsernameFormat, Validate, Verify};
use discovery::{Discovery, Endpoints};
use jwt::JwksCache;
use settings::Settings;

pub struct OAuth2Backend {
    name: String,
    settings: Settings,
    client: Client,
    introspection_bearer: Option<Secret>,
    http: BuiltOnce<reqwest::Client>,
    discovery: Discovery,
    jwks: JwksCache,
}

impl OAuth2Backend {
    /// The HTTP client, built on first use, off the request thread ([`BuiltOnce`]: it reads
    /// `ca_file` and the system's roots): one per backend, connections kept alive.
    async fn http(&self) -> Result<reqwest::Client, BackendError> {
        self.http.get().await
    }

    /// The endpoints, from the configuration or discovery.
    async fn endpoints(&self) -> Result<Arc<Endpoints>, BackendError> {
        self.discovery.endpoints(&self.http().await?).await
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
        let http = &self.http().await?;
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
            &self.http().await?,
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
                userinfo::fetch(&self.http().await?, endpoints.require_userinfo()?, token).await?
            }
            Validate::Jwt => {
                let endpoints = self.endpoints().await?;
                self.jwks
                    .verify(&self.http().await?, endpoints.require_jwks_uri()?, token)
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
        let http = &self.http().await?;
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
