//! Building the backend's reqwest client on first use (`ClientSettings`): timeouts, root
//! certificates, and the redirect policy that keeps the password within the API's origin.
//! Nothing here sends a request or reads the configuration.

use std::time::Duration;

use reqwest::Client;

use super::config::CheckPasswordMethod;
use crate::backend::net::CountConnections;
use crate::backend::BackendError;

/// What the client is built from, kept until first use.
pub(super) struct ClientSettings {
    pub(super) connect_timeout: Duration,
    pub(super) request_timeout: Duration,
    pub(super) follow_redirects: bool,
    pub(super) check_password_method: CheckPasswordMethod,
    pub(super) extra_roots: Vec<reqwest::Certificate>,
    /// Whether to load the system's root certificates: not for a plain-http API (redirects
    /// never leave its origin), since loading them is the costly part of building.
    pub(super) native_roots: bool,
}

impl ClientSettings {
    pub(super) fn build(&self, connections: &CountConnections) -> Result<Client, BackendError> {
        let redirects = if self.follow_redirects {
            same_origin_redirects(self.check_password_method)
        } else {
            reqwest::redirect::Policy::none()
        };
        let mut builder =
            crate::backend::net::client_builder(self.connect_timeout, self.request_timeout)
                .redirect(redirects)
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                .tls_built_in_native_certs(self.native_roots)
                .connector_layer(connections.clone());
        for cert in &self.extra_roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder
            .build()
            .map_err(|e| BackendError::Internal(format!("cannot build the HTTP client: {e}")))
    }
}

/// Most redirects followed for one call.
const MAX_REDIRECTS: usize = 5;

/// Why a redirect was not followed. The messages hold no URL: a `Location` may repeat the
/// query string, password included.
#[derive(Debug, thiserror::Error)]
enum RedirectRefused {
    #[error("redirect to another origin (scheme, host or port): not followed, it would carry the password there")]
    OtherOrigin,
    #[error(
        "HTTP {0} would turn the POST into a GET without its form: the change would not be made"
    )]
    WouldDropBody(u16),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooMany,
}

/// `follow_redirects = true`: follow a redirect only within the API's own origin (same
/// scheme, host and port), where the password and the Basic credentials already go. Another
/// host or port could be anyone's (an open redirect on the API's site), and `https` → `http`
/// would send them in clear; reqwest itself only drops `Authorization` on a host or port
/// change and re-sends a 307's body anywhere. A POST (a change, or `check_password` sent as
/// POST) follows only 307 and 308, which keep the method and the form: a 301, 302 or 303
/// makes it a bodiless GET, whose 200 would report a change that never happened.
fn same_origin_redirects(check_password: CheckPasswordMethod) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let previous = attempt.previous();
        // The first URL is the call's own, `{base}/{method}`; when in doubt, a POST.
        let posted = previous
            .first()
            .and_then(|url| url.path_segments()?.next_back())
            .map_or(true, |method| match method {
                "user_exists" => false,
                "check_password" => check_password == CheckPasswordMethod::Post,
                _ => true,
            });
        let status = attempt.status().as_u16();
        if previous.len() > MAX_REDIRECTS {
            attempt.error(RedirectRefused::TooMany)
        } else if previous
            .last()
            .map_or(true, |from| from.origin() != attempt.url().origin())
        {
            attempt.error(RedirectRefused::OtherOrigin)
        } else if posted && !matches!(status, 307 | 308) {
            attempt.error(RedirectRefused::WouldDropBody(status))
        } else {
            attempt.follow()
        }
    })
}
