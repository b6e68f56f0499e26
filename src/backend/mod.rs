//! Identity backends. Each one answers the five account operations for some domains; the
//! [`crate::router`] chains them and turns every error into a `0`.

pub mod body;
pub mod breaker_config;
pub mod file;
pub mod http;
pub(crate) mod net;
pub mod oauth2;
pub mod remember;

use async_trait::async_trait;

use crate::request::Account;
use crate::secret::Secret;

pub use breaker_config::BreakerConfig;
pub use file::FileBackend;
pub use http::HttpBackend;
pub use oauth2::OAuth2Backend;
pub use remember::RememberingBackend;

/// Why a backend gave no yes/no answer. Messages never contain a password, token or secret.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot do this operation (HTTP 501, an IdP asked to list users):
    /// the next backend in the chain is asked.
    #[error("operation not supported")]
    Unsupported,
    /// The backend could not be reached or did not answer in time. The answer is `0`
    /// (fail closed) unless the route says to try the next backend.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something we do not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Local trouble: a file that cannot be read or written, a lock that cannot be taken.
    #[error("{0}")]
    Internal(String),
}

/// A reqwest failure as one line for logs: its message and every underlying cause ("error
/// sending request: client error (Connect): tcp connect error: Connection refused"), without
/// the URL: for a GET `check_password` its query string carries the password, and the top
/// message alone ("error sending request") leaves an operator guessing.
pub(crate) fn transport_failure(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The one reading of a reqwest failure, for every backend (SPEC §10: *unavailable* means the
/// peer or the network failed). `what` names the call in the message, which never holds the
/// URL (a GET `check_password` carries the password in its query string).
///
/// | reqwest says | meaning | result |
/// |---|---|---|
/// | `is_timeout()` | connect or answer too slow | `Unavailable` |
/// | `is_connect()` | DNS, TCP connect (refused, reset, unreachable), TLS handshake | `Unavailable` |
/// | `is_builder()` | the request cannot be built from this input (URL, header value) | `Protocol` |
/// | `is_redirect()` | a redirect the policy refused | `Protocol` |
/// | `is_body()`, `is_decode()` | the answer broke off or is malformed mid-body | `Protocol` |
/// | `is_request()` and anything else | connected, request sent, no valid answer (closed, garbage, oversized headers) | `Protocol` |
///
/// Only a failure to reach the peer lets a chain try its next backend: the rest is either
/// caused by what the client sent (a password that makes the URL too long: the client would
/// choose the fall-through) or an answer, and a bad answer is still an answer (a WAF that
/// drops a throttled guess must not hand it to the users file behind the API).
pub(crate) fn classify(what: &str, e: reqwest::Error) -> BackendError {
    let (reachable, kind) = if e.is_timeout() {
        (false, "timed out")
    } else if e.is_connect() {
        (false, "cannot connect")
    } else if e.is_builder() {
        (true, "the request cannot be built from this input")
    } else if e.is_redirect() {
        (true, "redirect refused")
    } else if e.is_body() || e.is_decode() {
        (true, "reading the response failed")
    } else {
        (true, "no valid response")
    };
    let text = format!("{what}: {kind}: {}", transport_failure(e));
    if reachable {
        BackendError::Protocol(text)
    } else {
        BackendError::Unavailable(text)
    }
}

/// The statuses that say the peer cannot be reached rather than that it answered: 502 and
/// 504 (a proxy or load balancer whose upstream is down or too slow) and 503 (the service,
/// or the proxy, says it is out of service). Every other status is an answer.
///
/// 429 is not one of them: a rate limit is the API's defence against password guessing, and
/// treating it as unavailable would let a guesser who trips it go on against the next backend
/// of the chain (`on_unavailable = "next"`) or against the credential cache's stale answers.
pub(crate) fn unavailable_status(status: reqwest::StatusCode) -> bool {
    use reqwest::StatusCode;
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The error for a status that is no success: `Unavailable` for 502/503/504
/// ([`unavailable_status`]), `Protocol` for any other, so that only a peer that is down lets
/// a route fall through.
pub(crate) fn status_error(status: reqwest::StatusCode, why: String) -> BackendError {
    if unavailable_status(status) {
        BackendError::Unavailable(why)
    } else {
        BackendError::Protocol(why)
    }
}

impl BackendError {
    /// A short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Unsupported => "unsupported",
            BackendError::Unavailable(_) => "unavailable",
            BackendError::Protocol(_) => "protocol",
            BackendError::Internal(_) => "internal",
        }
    }
}

pub type BackendResult = Result<bool, BackendError>;

/// What [`Backend::check_report`] found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// What was verified, as [`Backend::check`] says it.
    pub detail: String,
    /// What works but will make some requests fail or surprise (a read-only users file, an
    /// account listed twice): the backend is usable, the operator should still look.
    pub warnings: Vec<String>,
}

/// One identity store. Every operation answers `Ok(true)`/`Ok(false)` or says why it could not.
///
/// The request loop puts a deadline around every call, so an implementation need not
/// guard against hanging forever, but it should still set its own connect/read timeouts
/// so that it releases resources promptly.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The name given in the configuration, used in logs.
    fn name(&self) -> &str;

    /// A short word for the kind of backend (`file`, `http`, `oauth2`), used in logs.
    fn kind(&self) -> &'static str;

    async fn authenticate(&self, account: &Account, password: &Secret) -> BackendResult;

    async fn user_exists(&self, account: &Account) -> BackendResult;

    /// Whether [`Backend::user_exists`] tells which accounts this backend holds. A router
    /// passes a change (`tryregister`, `setpass`, `removeuser`) that this backend does not
    /// support down the chain only when this is true and `user_exists` says no. An IdP, which
    /// answers `isuser` by policy and may hold any name, returns false.
    fn knows_its_accounts(&self) -> bool {
        true
    }

    /// Verifies that the backend is usable, for `extauth-bridge check`: reach it the way a
    /// request would (read the file, connect, fetch discovery…) without needing a real
    /// user's password. Returns a short human description of what was verified.
    async fn check(&self) -> Result<String, BackendError>;

    /// [`Backend::check`] with warnings, for `extauth-bridge check`. Backends with nothing
    /// to warn about keep this default.
    async fn check_report(&self) -> Result<CheckReport, BackendError> {
        Ok(CheckReport {
            detail: self.check().await?,
            warnings: Vec::new(),
        })
    }

    async fn set_password(&self, _account: &Account, _password: &Secret) -> BackendResult {
        Err(BackendError::Unsupported)
    }

    async fn register(&self, _account: &Account, _password: &Secret) -> BackendResult {
        Err(BackendError::Unsupported)
    }

    async fn remove_user(&self, _account: &Account) -> BackendResult {
        Err(BackendError::Unsupported)
    }
}
