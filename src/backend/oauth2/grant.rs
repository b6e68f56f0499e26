//! The resource owner password credentials grant (RFC 6749 §4.3).
//!
//! 200 with a bearer `access_token` → the token (then the caller confirms whose it is);
//! 400/401 `invalid_grant` → a wrong password, unknown or inactive user: `0`. Anything else
//! (`invalid_client`, `unauthorized_client`, a 5xx, garbage) is an error: answered `0` too,
//! but logged as a problem to fix rather than a failed login.

use serde::Deserialize;

use super::client::Client;
use crate::backend::BackendError;
use crate::secret::Secret;

pub enum Grant {
    Token(Secret),
    /// The IdP said no to these credentials; the reason is for the log.
    Refused(&'static str),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<Secret>,
    token_type: Option<String>,
}

/// The `error` member of an OAuth2 error response.
#[derive(Deserialize)]
pub struct ErrorResponse {
    pub error: Option<String>,
}

/// An OAuth2 `error` code made safe to log: error codes are a small ASCII vocabulary, and
/// anything else (an HTML page, an echo of the request) is not printed.
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorResponse>(body)
        .ok()
        .and_then(|r| r.error)
        .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or_else(|| "(no error code)".to_owned())
}

/// The access token of a 200 token response: present, visible ASCII, of type bearer.
/// Pure, so that the fuzz target `oauth2_json` can drive it.
pub fn parse_token_response(body: &[u8]) -> Result<Secret, BackendError> {
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| BackendError::Protocol("token endpoint: malformed JSON".into()))?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| BackendError::Protocol("token endpoint: no access_token".into()))?;
    // It goes into an `Authorization` header next (userinfo) or an introspection: one
    // that cannot be built must be the IdP's protocol error, not an outage.
    if !super::client::is_token_syntax(token.expose()) {
        return Err(BackendError::Protocol(
            "token endpoint: access_token is not visible ASCII".into(),
        ));
    }
    if !parsed
        .token_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(BackendError::Protocol(
            "token endpoint: token_type is not bearer".into(),
        ));
    }
    Ok(token)
}

pub async fn password_grant(
    http: &reqwest::Client,
    token_endpoint: &str,
    client: &Client,
    username: &str,
    password: &Secret,
    scope: &str,
) -> Result<Grant, BackendError> {
    let mut form: Vec<(&'static str, String)> = vec![
        ("grant_type", "password".to_owned()),
        ("username", username.to_owned()),
        ("password", password.expose().to_owned()),
    ];
    if !scope.is_empty() {
        form.push(("scope", scope.to_owned()));
    }
    let request = client.apply(http.post(token_endpoint), &mut form);
    let (status, body) = super::client::send_form(request, form, "token endpoint").await?;
    if status == reqwest::StatusCode::OK {
        return parse_token_response(&body).map(Grant::Token);
    }
    let code = error_code(&body);
    match (status.as_u16(), code.as_str()) {
        (400 | 401, "invalid_grant") => Ok(Grant::Refused("invalid_grant")),
        // Only a gateway's "down" falls through: a 500 is the IdP's answer to this password.
        _ => Err(crate::backend::status_error(
            status,
            format!("token endpoint: HTTP {status} {code}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_error_codes_are_logged() {
        assert_eq!(error_code(br#"{"error":"invalid_grant"}"#), "invalid_grant");
        assert_eq!(
            error_code(br#"{"error":"bad password hunter2 for romeo"}"#),
            "(no error code)"
        );
        assert_eq!(error_code(b"<html>"), "(no error code)");
    }
}
