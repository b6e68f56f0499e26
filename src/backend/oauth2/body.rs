//! The caps on IdP responses. Every body the backend reads comes through here, read by
//! the shared [`crate::backend::body::read_capped`]; going over is a protocol error: the
//! login is answered `0` and the reason logged.

use crate::backend::body::BodyError;
use crate::backend::{classify, BackendError};

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
    response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, BackendError> {
    crate::backend::body::read_capped(response, limit)
        .await
        .map_err(|e| match e {
            BodyError::OverLimit => {
                BackendError::Protocol(format!("{what}: response body over {limit} bytes"))
            }
            BodyError::Transport(e) => classify(what, e),
        })
}
