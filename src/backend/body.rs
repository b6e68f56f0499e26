//! Size-capped reading of a backend's HTTP response body, shared by the HTTP and OAuth2
//! backends.
//!
//! Whatever answers in a backend's place (a captive portal, a misrouted proxy, an attacker
//! on a plain-http link) could otherwise make one login buffer an unbounded body. The body
//! is read in chunks and the read stops as soon as the cap is passed, so at most the cap
//! plus one chunk is held; a declared `Content-Length` over the cap is refused before
//! reading anything. Each backend turns the failure into its own error message.

/// Why [`read_capped`] returned no body.
pub enum BodyError {
    /// Longer than the cap (declared or read).
    OverLimit,
    /// The connection failed mid-body.
    Transport(reqwest::Error),
}

/// Reads the whole body of `response`, failing once it is over `limit` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::OverLimit);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::OverLimit);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
