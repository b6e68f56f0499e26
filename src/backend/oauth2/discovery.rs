//! Endpoint discovery: RFC 8414 authorization-server metadata and OpenID Connect discovery.
//!
//! Servers publish different fields in each document (django-oauth-toolkit has the
//! introspection endpoint only in RFC 8414's; some OIDC-only servers have no RFC 8414
//! document at all), so both are fetched and merged, RFC 8414 first. When one of them
//! fails (404, or a 401/403, a redirect, an HTML page) the other is used alone. A document
//! whose `issuer` is not exactly the configured one fails discovery as a whole: that is
//! the check that ties the endpoints to the issuer a token claims (RFC 8414 §3.3, OIDC
//! Discovery §4.3).
//!
//! Explicitly configured endpoints win over discovered ones; when they cover every endpoint
//! the configured mode needs, nothing is fetched. The merged result is cached for
//! `discovery_refresh`; when a refresh fails the old endpoints stay in use (and the failure
//! is logged).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::body::{read_capped, MAX_DOCUMENT};
use super::client::RETRY_AFTER_FAILURE;
use crate::backend::{classify, status_error, BackendError};

/// Where to send each kind of request. `None`: neither configured nor discovered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub token: Option<String>,
    pub introspection: Option<String>,
    pub userinfo: Option<String>,
    pub jwks_uri: Option<String>,
}

fn missing(what: &str) -> BackendError {
    BackendError::Internal(format!("no {what} configured or discovered"))
}

impl Endpoints {
    pub fn require_token(&self) -> Result<&str, BackendError> {
        self.token
            .as_deref()
            .ok_or_else(|| missing("token_endpoint"))
    }
    pub fn require_introspection(&self) -> Result<&str, BackendError> {
        self.introspection
            .as_deref()
            .ok_or_else(|| missing("introspection_endpoint"))
    }
    pub fn require_userinfo(&self) -> Result<&str, BackendError> {
        self.userinfo
            .as_deref()
            .ok_or_else(|| missing("userinfo_endpoint"))
    }
    pub fn require_jwks_uri(&self) -> Result<&str, BackendError> {
        self.jwks_uri.as_deref().ok_or_else(|| missing("jwks_uri"))
    }

    /// `self`, with the gaps filled from `other`.
    fn or(self, other: Endpoints) -> Endpoints {
        Endpoints {
            token: self.token.or(other.token),
            introspection: self.introspection.or(other.introspection),
            userinfo: self.userinfo.or(other.userinfo),
            jwks_uri: self.jwks_uri.or(other.jwks_uri),
        }
    }

    /// Is every endpoint in `needed` here?
    pub fn covers(&self, needed: Needed) -> bool {
        (!needed.token || self.token.is_some())
            && (!needed.introspection || self.introspection.is_some())
            && (!needed.userinfo || self.userinfo.is_some())
            && (!needed.jwks_uri || self.jwks_uri.is_some())
    }
}

/// The endpoints the configured `mode`, `verify` and `validate` use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needed {
    pub token: bool,
    pub introspection: bool,
    pub userinfo: bool,
    pub jwks_uri: bool,
}

/// The fields we use from either metadata document.
#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    introspection_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    jwks_uri: Option<String>,
}

/// The two metadata URLs of an issuer: RFC 8414 inserts the well-known segment before the
/// issuer's path, OIDC appends it.
pub fn metadata_urls(issuer: &str) -> Result<(String, String), String> {
    let url = reqwest::Url::parse(issuer).map_err(|e| format!("issuer is not a URL: {e}"))?;
    let path = url.path().trim_end_matches('/').to_owned();
    let mut rfc8414 = url.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    rfc8414.set_query(None);
    let mut oidc = url;
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    oidc.set_query(None);
    Ok((rfc8414.to_string(), oidc.to_string()))
}

struct Cached {
    endpoints: Arc<Endpoints>,
    fetched: Instant,
}

pub struct Discovery {
    /// The issuer to discover from; `None` when there is none, or when the configured
    /// endpoints already cover what is needed (its well-known URLs are then never asked:
    /// some issuers publish no metadata at all).
    issuer: Option<String>,
    explicit: Endpoints,
    needed: Needed,
    refresh: Duration,
    /// Held across a fetch, so concurrent requests wait for one fetch instead of each
    /// starting their own.
    cache: Mutex<Option<Cached>>,
}

impl Discovery {
    pub fn new(
        issuer: Option<String>,
        explicit: Endpoints,
        needed: Needed,
        refresh: Duration,
    ) -> Discovery {
        Discovery {
            issuer: issuer.filter(|_| !explicit.covers(needed)),
            explicit,
            needed,
            refresh,
            cache: Mutex::new(None),
        }
    }

    /// Are endpoints discovered (rather than all configured)?
    pub fn is_used(&self) -> bool {
        self.issuer.is_some()
    }

    /// The endpoints to use now: configured ones, completed by a cached or fresh discovery.
    pub async fn endpoints(&self, http: &reqwest::Client) -> Result<Arc<Endpoints>, BackendError> {
        let Some(issuer) = self.issuer.as_deref() else {
            return Ok(Arc::new(self.explicit.clone()));
        };
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if c.fetched.elapsed() < self.refresh {
                return Ok(Arc::clone(&c.endpoints));
            }
        }
        match self.fetch(http, issuer).await {
            Ok(endpoints) => {
                let endpoints = Arc::new(endpoints);
                *cache = Some(Cached {
                    endpoints: Arc::clone(&endpoints),
                    fetched: Instant::now(),
                });
                Ok(endpoints)
            }
            Err(e) => match cache.as_mut() {
                // Keep serving the old endpoints, and try again after a short pause rather
                // than on every request.
                Some(c) => {
                    tracing::warn!(issuer, error = %e, "discovery refresh failed, keeping the previous endpoints");
                    c.fetched =
                        Instant::now() - self.refresh + RETRY_AFTER_FAILURE.min(self.refresh);
                    Ok(Arc::clone(&c.endpoints))
                }
                None => {
                    tracing::warn!(issuer, error = %e, "discovery failed");
                    Err(e)
                }
            },
        }
    }

    /// Fetches discovery now (for `check`), replacing the cache.
    pub async fn refresh(&self, http: &reqwest::Client) -> Result<Arc<Endpoints>, BackendError> {
        self.cache.lock().await.take();
        self.endpoints(http).await
    }

    async fn fetch(&self, http: &reqwest::Client, issuer: &str) -> Result<Endpoints, BackendError> {
        let (rfc8414_url, oidc_url) = metadata_urls(issuer).map_err(BackendError::Internal)?;
        let (rfc8414, oidc) = tokio::join!(
            fetch_document(http, &rfc8414_url, issuer),
            fetch_document(http, &oidc_url, issuer)
        );
        let found = match (rfc8414, oidc) {
            (Ok(a), Ok(b)) => a.or(b),
            // A document for another issuer is a misconfiguration or a mix-up attempt:
            // nothing from this IdP is trusted then, the other document included.
            (Err(DocError::WrongIssuer(e)), _) | (_, Err(DocError::WrongIssuer(e))) => {
                return Err(e)
            }
            (Ok(a), Err(DocError::NotFound)) | (Err(DocError::NotFound), Ok(a)) => a,
            // Many servers answer the well-known URL they do not implement with a login
            // page, a 401/403 or a redirect instead of a 404: the valid document (whose
            // issuer matched) is used, and the other one's failure logged.
            // Unless an endpoint we need is missing from it: it may be in the failed one
            // (django-oauth-toolkit lists introspection only in RFC 8414 metadata), and a
            // failure that passes (a timeout, a 503) must not be cached as "no such
            // endpoint" until the next refresh.
            (Ok(a), Err(DocError::Failed(e))) | (Err(DocError::Failed(e)), Ok(a)) => {
                let merged = self.explicit.clone().or(a);
                if !merged.covers(self.needed) {
                    return Err(e);
                }
                tracing::warn!(issuer, error = %e, "one discovery document failed, using the other");
                return Ok(merged);
            }
            (Err(DocError::NotFound), Err(DocError::NotFound)) => {
                return Err(BackendError::Protocol(format!(
                    "no discovery document for issuer {issuer} ({rfc8414_url}, {oidc_url})"
                )))
            }
            (Err(DocError::Failed(e)), _) | (_, Err(DocError::Failed(e))) => return Err(e),
        };
        Ok(self.explicit.clone().or(found))
    }
}

pub enum DocError {
    NotFound,
    /// A valid document naming another issuer.
    WrongIssuer(BackendError),
    /// Unreachable, another status, or not a metadata document.
    Failed(BackendError),
}

async fn fetch_document(
    http: &reqwest::Client,
    url: &str,
    issuer: &str,
) -> Result<Endpoints, DocError> {
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| DocError::Failed(classify(url, e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(DocError::NotFound);
    }
    if !status.is_success() {
        // As everywhere: only the IdP or its proxy being down is an outage that a route
        // may fall through; any other status is the IdP answering, badly.
        return Err(DocError::Failed(status_error(
            status,
            format!("{url}: HTTP {status}"),
        )));
    }
    let body = read_capped(response, MAX_DOCUMENT, url)
        .await
        .map_err(DocError::Failed)?;
    parse_document(&body, url, issuer)
}

/// A metadata document fetched from `url`: its endpoints, when it names exactly `issuer`
/// and every endpoint is an http(s) URL without credentials. Pure, so that the fuzz target
/// `oauth2_json` can drive it.
pub fn parse_document(body: &[u8], url: &str, issuer: &str) -> Result<Endpoints, DocError> {
    let doc: Metadata = serde_json::from_slice(body).map_err(|e| {
        DocError::Failed(BackendError::Protocol(format!("{url}: bad metadata: {e}")))
    })?;
    if doc.issuer.as_deref() != Some(issuer) {
        return Err(DocError::WrongIssuer(BackendError::Protocol(format!(
            "{url}: issuer {} is not the configured {issuer:?}",
            doc.issuer
                .as_deref()
                .map_or("(missing)".to_owned(), shown_issuer)
        ))));
    }
    // Checked like configured URLs, before anything uses or logs them: a document cannot
    // smuggle `user:password@` (or a `file:` URL) into our requests and logs.
    for (field, value) in [
        ("token_endpoint", &doc.token_endpoint),
        ("introspection_endpoint", &doc.introspection_endpoint),
        ("userinfo_endpoint", &doc.userinfo_endpoint),
        ("jwks_uri", &doc.jwks_uri),
    ] {
        if let Some(Err(why)) = value.as_deref().map(super::client::endpoint_url) {
            return Err(DocError::Failed(BackendError::Protocol(format!(
                "{url}: {field} {why}"
            ))));
        }
    }
    Ok(Endpoints {
        token: doc.token_endpoint,
        introspection: doc.introspection_endpoint,
        userinfo: doc.userinfo_endpoint,
        jwks_uri: doc.jwks_uri,
    })
}

/// The issuer a document names, for the log: the IdP chose it, so it may carry
/// `user:password@` (dropped) or be long (cut).
fn shown_issuer(named: &str) -> String {
    match reqwest::Url::parse(named) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                // Cannot fail for a URL that had credentials: it has a host.
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            format!("{:?}", u.as_str().chars().take(200).collect::<String>())
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_issuer_is_logged_without_its_credentials() {
        let body = br#"{"issuer": "https://bridge:hunter2@evil.example/o"}"#;
        match parse_document(body, "https://idp.example/.wk", "https://idp.example/o") {
            Err(DocError::WrongIssuer(e)) => {
                let text = e.to_string();
                assert!(
                    !text.contains("hunter2") && !text.contains("bridge@"),
                    "{text}"
                );
                assert!(text.contains("evil.example"), "{text}");
            }
            _ => panic!("accepted"),
        }
    }

    #[test]
    fn well_known_urls() {
        assert_eq!(
            metadata_urls("https://idp.example/realms/xmpp").unwrap(),
            (
                "https://idp.example/.well-known/oauth-authorization-server/realms/xmpp".into(),
                "https://idp.example/realms/xmpp/.well-known/openid-configuration".into()
            )
        );
        assert_eq!(
            metadata_urls("http://127.0.0.1:8000/o/").unwrap(),
            (
                "http://127.0.0.1:8000/.well-known/oauth-authorization-server/o".into(),
                "http://127.0.0.1:8000/o/.well-known/openid-configuration".into()
            )
        );
        assert_eq!(
            metadata_urls("https://idp.example").unwrap(),
            (
                "https://idp.example/.well-known/oauth-authorization-server".into(),
                "https://idp.example/.well-known/openid-configuration".into()
            )
        );
    }
}
