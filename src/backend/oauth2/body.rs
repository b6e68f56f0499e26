//! Size-capped reading of IdP responses.
//!
//! Every body the backend reads comes through here: an IdP (or whatever answers in its
//! place: a captive portal, a misrouted proxy, an attacker on a plain-http link) could
//! otherwise make one login buffer an unbounded body. The body is read in chunks and the
//! read stops as soon as the cap is passed, so at most the cap plus one chunk is held; a
//! declared `Content-Length` over the cap is refused before reading anything. Going over is
//! a protocol error: the login is answered `0` and the reason logged.

use crate::backend::{transport_failure, BackendError};

/// Token, introspection and userinfo responses: a token or a handful of claims, a few KiB
/// at most. 64 KiB is the HTTP backend's default `max_body` too.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Discovery documents and the JWKS. Large IdPs publish long metadata (tens of KiB with
/// every supported algorithm and claim listed) and JWKS with many keys during rotations
/// (each RSA key with its certificate chain is a few KiB), so they get more room.
pub const MAX_DOCUMENT: usize = 256 * 1024;

/// Reads the whole body of `response`, failing once it is over `limit` bytes. `what`
/// names the request in the error (never a URL with a credential: none of ours has one).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, BackendError> {
    let too_big = || BackendError::Protocol(format!("{what}: response body over {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BackendError::Unavailable(format!("{what}: {}", transport_failure(e))))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
