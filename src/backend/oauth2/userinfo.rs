//! The OpenID Connect userinfo endpoint: `GET` with the token as bearer credentials.
//!
//! 200 with a JSON object → the claims; 401/403 → the token is not (or no longer) valid.
//! Anything else is an error. Some servers return a signed JWT here (`application/jwt`);
//! that is refused as a protocol error rather than trusted unverified.

use super::identity::{Claims, Verdict};
use crate::backend::{classify, status_error, BackendError};
use crate::secret::Secret;

pub async fn fetch(
    http: &reqwest::Client,
    endpoint: &str,
    token: &Secret,
) -> Result<Verdict, BackendError> {
    let response = http
        .get(endpoint)
        .bearer_auth(token.expose())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| classify("userinfo", e))?;
    let status = response.status();
    match status.as_u16() {
        200 => {}
        401 | 403 => return Ok(Err("userinfo refused the token")),
        // Only a gateway's "down" falls through: a 500 is the IdP's answer to this token.
        _ => return Err(status_error(status, format!("userinfo: HTTP {status}"))),
    }
    let body = super::body::read_capped(response, super::body::MAX_RESPONSE, "userinfo").await?;
    parse_claims(&body).map(Ok)
}

/// The claims of a 200 userinfo response (also the fuzz target `oauth2_json`'s way in).
pub fn parse_claims(body: &[u8]) -> Result<Claims, BackendError> {
    serde_json::from_slice(body)
        .map_err(|_| BackendError::Protocol("userinfo: not a JSON object".into()))
}
