//! What every request to the IdP shares: our client credentials and how they are sent
//! ([`Client`]), the form POST that wipes its copy of a credential ([`send_form`]), the
//! backend's HTTP client, the rules an endpoint URL and a token must follow, and the retry
//! pause after a failed fetch. No OAuth2 flow lives here (see the grant, introspect,
//! userinfo, discovery and jwt modules), and nothing here reads the configuration.

use std::path::Path;
use std::time::Duration;

use super::body;
use super::config::ClientAuth;
use crate::backend::BackendError;
use crate::secret::Secret;

/// After a failed discovery or JWKS fetch, how long before the next try. Meanwhile the
/// previous endpoints or keys serve; logins do not each wait on a failing IdP.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

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
    let response = response.map_err(|e| crate::backend::classify(what, e))?;
    let status = response.status();
    let body = body::read_capped(response, body::MAX_RESPONSE, what).await?;
    Ok((status, body))
}

/// Builds the backend's HTTP client: rustls with the system roots plus `ca_file`, no
/// redirects (credentials must not travel to another host), bounded timeouts.
pub(super) fn build_http_client(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_urlencoding_of_client_credentials() {
        assert_eq!(form_urlencode("weird id:é"), "weird+id%3A%C3%A9");
        assert_eq!(form_urlencode("s3cr:et&+%"), "s3cr%3Aet%26%2B%25");
        assert_eq!(form_urlencode("plain-ID_1.x*"), "plain-ID_1.x*");
    }
}
