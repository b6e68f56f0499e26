//! Local validation of JWT access tokens against the issuer's JWKS: no network call per
//! login once the keys are cached.
//!
//! Checked: the signature (with a key from the JWKS chosen by `kid`, of the family the
//! header's `alg` belongs to), `alg` in the configured allow-list, `exp` (required), `nbf`,
//! `iss` (the configured issuer) and `aud` (`audience`, which the configuration requires
//! with `validate = "jwt"`), with 30 s of leeway for clocks.
//!
//! Never accepted: `alg: none` (it does not even parse: jsonwebtoken has no such
//! algorithm) and HMAC (`HS*`). With only public keys on our side, an HMAC token could be
//! "signed" by anyone with the public key as the secret: the classic algorithm confusion.
//! The allow-list cannot contain HS*, and symmetric (`oct`) JWKs are ignored.
//!
//! Key rotation: a token whose `kid` is not in the cached set triggers one refetch, at most
//! once per [`REFETCH_INTERVAL`], so a stream of made-up kids cannot turn us into a
//! denial-of-service amplifier against the IdP. The set is also refreshed every
//! `jwks_refresh`. A failed fetch is retried only after [`RETRY_AFTER_FAILURE`], the old
//! keys serving meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::body::{read_capped, MAX_DOCUMENT};
use super::client::RETRY_AFTER_FAILURE;
use super::identity::{Claims, Verdict};
use super::introspect::LEEWAY_SECS;
use crate::backend::{classify, status_error, BackendError};
use crate::secret::Secret;

/// The least time between two refetches caused by an unknown `kid`.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Parses the `algorithms` allow-list; HMAC and `none` are refused.
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Err("must list at least one algorithm".into());
    }
    names
        .iter()
        .map(|name| {
            let alg: Algorithm = name
                .parse()
                .map_err(|_| format!("unknown algorithm {name:?}"))?;
            if alg.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                return Err(format!(
                    "{name} is a shared-secret algorithm; only public-key algorithms are accepted"
                ));
            }
            Ok(alg)
        })
        .collect()
}

/// Three non-empty base64url segments, the first one a JSON object (`eyJ` is `{"`).
pub fn looks_like_jwt(s: &str) -> bool {
    let mut parts = s.split('.');
    let all_b64url = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(h), Some(c), Some(s), None) if h.starts_with("eyJ") && all_b64url(h) && all_b64url(c) && all_b64url(s)
    )
}

/// A usable verification key from the JWKS.
struct Key {
    kid: Option<String>,
    /// The `alg` the JWK is restricted to, if it says.
    alg: Option<String>,
    family: jsonwebtoken::AlgorithmFamily,
    key: DecodingKey,
}

struct KeySet {
    keys: Vec<Key>,
    fetched: Instant,
}

#[derive(Default)]
struct State {
    set: Option<Arc<KeySet>>,
    last_forced_refetch: Option<Instant>,
    /// After a failed fetch, no other is tried before this instant.
    retry_at: Option<Instant>,
}

pub struct JwksCache {
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    refresh: Duration,
    state: Mutex<State>,
}

impl JwksCache {
    pub fn new(
        algorithms: Vec<Algorithm>,
        issuer: Option<String>,
        audience: Option<String>,
        refresh: Duration,
    ) -> JwksCache {
        JwksCache {
            algorithms,
            issuer,
            audience,
            refresh,
            state: Mutex::new(State::default()),
        }
    }

    /// Fetches the JWKS now (for `check`); returns the number of usable keys.
    pub async fn refresh(&self, http: &reqwest::Client, uri: &str) -> Result<usize, BackendError> {
        let set = fetch(http, uri).await?;
        let n = set.keys.len();
        let mut state = self.state.lock().await;
        state.set = Some(Arc::new(set));
        state.retry_at = None;
        Ok(n)
    }

    /// The cached key set, fetched first when missing or older than `jwks_refresh`. With
    /// `unknown_kid`, refetched if the rate limit allows.
    ///
    /// A failed fetch is not retried for [`RETRY_AFTER_FAILURE`]: meanwhile logins go on
    /// with the old keys (or, with none yet, answer `0` at once). Without the pause every
    /// login would refetch from a failing IdP, each one waiting for it while holding the
    /// lock the others queue on.
    async fn keys(
        &self,
        http: &reqwest::Client,
        uri: &str,
        unknown_kid: bool,
    ) -> Result<Arc<KeySet>, BackendError> {
        let mut state = self.state.lock().await;
        let stale = state
            .set
            .as_ref()
            .map_or(true, |s| s.fetched.elapsed() >= self.refresh);
        let forced = unknown_kid
            && !stale
            && state
                .last_forced_refetch
                .map_or(true, |t| t.elapsed() >= REFETCH_INTERVAL);
        let backing_off = state.retry_at.is_some_and(|t| Instant::now() < t);
        if (stale || forced) && !backing_off {
            if forced {
                state.last_forced_refetch = Some(Instant::now());
            }
            match fetch(http, uri).await {
                Ok(set) => {
                    state.set = Some(Arc::new(set));
                    state.retry_at = None;
                }
                Err(e) => {
                    state.retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                    match &state.set {
                        Some(old) => {
                            tracing::warn!(jwks_uri = uri, error = %e, "JWKS refresh failed, keeping the previous keys");
                            return Ok(Arc::clone(old));
                        }
                        None => {
                            tracing::warn!(jwks_uri = uri, error = %e, "JWKS fetch failed");
                            return Err(e);
                        }
                    }
                }
            }
        }
        state.set.clone().ok_or_else(|| {
            BackendError::Unavailable(format!(
                "JWKS: the last fetch failed, next try within {} s",
                RETRY_AFTER_FAILURE.as_secs()
            ))
        })
    }

    /// Verifies `token`: `Ok(Ok(claims))` when valid, `Ok(Err(reason))` when not, `Err`
    /// when the keys could not be fetched.
    pub async fn verify(
        &self,
        http: &reqwest::Client,
        uri: &str,
        token: &Secret,
    ) -> Result<Verdict, BackendError> {
        let token = token.expose();
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(Err("not a JWT with a known algorithm"));
        };
        if !self.algorithms.contains(&header.alg) {
            return Ok(Err("JWT algorithm not allowed"));
        }
        let kid = header.kid.as_deref();
        let mut set = self.keys(http, uri, false).await?;
        if kid.is_some() && !set.keys.iter().any(|k| k.kid.as_deref() == kid) {
            set = self.keys(http, uri, true).await?;
        }
        let validation = self.validation(header.alg);
        let candidates = set.keys.iter().filter(|k| {
            (kid.is_none() || k.kid.as_deref() == kid)
                && k.family == header.alg.family()
                && k.alg
                    .as_deref()
                    .map_or(true, |a| a == format!("{:?}", header.alg))
        });
        let mut reason = "no key in the JWKS for this token";
        for k in candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => return Ok(Ok(data.claims)),
                Err(e) => {
                    reason = describe(e.kind());
                    if !matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) {
                        // The signature was good (or the token is malformed): another key
                        // will not change the verdict.
                        break;
                    }
                }
            }
        }
        Ok(Err(reason))
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "bad signature",
        K::ExpiredSignature => "token expired",
        K::ImmatureSignature => "token not yet valid",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::MissingRequiredClaim(_) => "missing required claim",
        K::InvalidAlgorithm => "algorithm does not match the key",
        _ => "invalid JWT",
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// Fetches and parses a JWKS, keeping the keys we can use for signature verification.
async fn fetch(http: &reqwest::Client, uri: &str) -> Result<KeySet, BackendError> {
    tracing::debug!(jwks_uri = uri, "fetching JWKS");
    let response = http
        .get(uri)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| classify("JWKS", e))?;
    let status = response.status();
    if !status.is_success() {
        // Only 502/503/504 are an outage (a route may fall through); any other status is
        // the IdP answering, badly.
        return Err(status_error(status, format!("JWKS: HTTP {status}")));
    }
    let body = read_capped(response, MAX_DOCUMENT, "JWKS").await?;
    Ok(KeySet {
        keys: parse_keys(&body)?,
        fetched: Instant::now(),
    })
}

/// The usable keys of a JWKS document.
fn parse_keys(body: &[u8]) -> Result<Vec<Key>, BackendError> {
    let raw: RawSet = serde_json::from_slice(body)
        .map_err(|_| BackendError::Protocol("JWKS: malformed".into()))?;
    Ok(raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(usable_key)
        .collect())
}

/// The fuzz target `oauth2_json`'s way into JWKS parsing: how many of the document's
/// entries are usable public signing keys (never an `oct` key: those are refused).
pub fn usable_keys_in(body: &[u8]) -> Result<usize, BackendError> {
    parse_keys(body).map(|keys| keys.len())
}

/// A public signing key, or `None` (encryption keys, symmetric keys, unknown kinds).
fn usable_key(jwk: Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => jsonwebtoken::AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => jsonwebtoken::AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => jsonwebtoken::AlgorithmFamily::Ed,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
        family,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_refuses_hmac_and_none() {
        assert!(parse_algorithms(&["RS256".into(), "EdDSA".into()]).is_ok());
        for bad in ["HS256", "HS512", "none", "None", "rs256x"] {
            assert!(parse_algorithms(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_algorithms(&[]).is_err());
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0."));
        assert!(!looks_like_jwt("iheartjuliet"));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("eyJ.a.b.c"));
        assert!(!looks_like_jwt("eyJ a.b.c"));
    }
}
