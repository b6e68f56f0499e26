//! The `[[backend]]` table with `type = "http"` ([`HttpBackendConfig`]), its defaults and the
//! checks that need no file or environment ([`HttpBackendConfig::validate`]), plus the HTTP
//! Basic credentials it names, read from their source at start-up. Nothing here sends a
//! request.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::url::BaseUrl;
use crate::request::Account;
use crate::secret::Secret;

/// A `[[backend]]` table with `type = "http"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBackendConfig {
    pub name: String,
    /// Base URL; the method name is appended after a `/`. `$host` is replaced by the
    /// request's server.
    pub url: String,
    /// HTTP Basic credentials, `user:pass`.
    pub credentials: Option<Secret>,
    /// A file whose first line is `user:pass`.
    pub credentials_file: Option<PathBuf>,
    /// An environment variable holding `user:pass`.
    pub credentials_env: Option<String>,
    #[serde(default)]
    pub check_password_method: CheckPasswordMethod,
    #[serde(default)]
    pub follow_redirects: bool,
    /// Extra trusted CA certificates (PEM), on top of the system's roots.
    pub ca_file: Option<PathBuf>,
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub request_timeout: Duration,
    /// Largest response body read, in bytes; a longer one is an error.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// The account `extauth-bridge check` asks `user_exists` about, `user@domain`.
    pub check_account: Option<String>,
    /// A users file that every account logging in through this backend is added to, locked
    /// (`crate::backend::RememberingBackend`), for an API that cannot answer `user_exists`.
    pub remember_accounts: Option<PathBuf>,
    /// The circuit breaker around this backend; off unless set.
    #[serde(default)]
    pub breaker: Option<crate::backend::BreakerConfig>,
}

/// How `check_password` is sent. POST keeps passwords out of web-server access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CheckPasswordMethod {
    #[default]
    Get,
    Post,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Below the request loop's 4 s deadline, so a slow API is reported as a timeout of the
/// API (and its connection dropped) rather than as the loop's deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A yes/no API never needs more than a few bytes; 64 KiB tolerates chatty error pages.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY
}

/// A configuration problem: the key (relative to the backend table) and what is wrong.
pub type KeyError = (&'static str, String);

impl HttpBackendConfig {
    /// A backend with every optional key at its default: what `--http-url` builds.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        HttpBackendConfig {
            name: name.into(),
            url: url.into(),
            credentials: None,
            credentials_file: None,
            credentials_env: None,
            check_password_method: CheckPasswordMethod::default(),
            follow_redirects: false,
            ca_file: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            check_account: None,
            remember_accounts: None,
            breaker: None,
        }
    }

    /// Checks what can be checked without touching files or the environment.
    pub fn validate(&self) -> Result<(), KeyError> {
        BaseUrl::parse(&self.url).map_err(|e| ("url", e))?;
        let sources = [
            self.credentials.is_some(),
            self.credentials_file.is_some(),
            self.credentials_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err((
                "credentials",
                "give at most one of credentials, credentials_file, credentials_env".into(),
            ));
        }
        if let Some(c) = &self.credentials {
            BasicCredentials::parse(c.expose()).map_err(|e| ("credentials", e))?;
        }
        if self.connect_timeout.is_zero() {
            return Err(("connect_timeout", "must be greater than zero".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(("request_timeout", "must be greater than zero".into()));
        }
        if self.max_body < 16 {
            return Err(("max_body", "must be at least 16 bytes".into()));
        }
        if let Some(a) = &self.check_account {
            split_account(a).ok_or(("check_account", "must be user@domain".into()))?;
        }
        Ok(())
    }
}

pub(super) fn split_account(jid: &str) -> Option<Account> {
    let (user, server) = jid.rsplit_once('@')?;
    (!user.is_empty() && !server.is_empty()).then(|| Account {
        user: user.to_owned(),
        server: server.to_owned(),
    })
}

/// HTTP Basic credentials, split once at construction.
#[derive(Clone)]
pub(super) struct BasicCredentials {
    pub(super) user: Secret,
    pub(super) password: Secret,
}

impl BasicCredentials {
    fn parse(text: &str) -> Result<BasicCredentials, String> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(BasicCredentials {
                user: Secret::new(user),
                password: Secret::new(password),
            }),
            _ => Err("must be \"user:password\"".into()),
        }
    }

    /// Reads the configured source: the value itself, a file's first line, or a variable.
    pub(super) fn load(config: &HttpBackendConfig) -> Result<Option<BasicCredentials>, KeyError> {
        const KEYS: [&str; 3] = ["credentials", "credentials_file", "credentials_env"];
        let Some(text) = crate::secret::resolve(
            KEYS,
            config.credentials.as_ref(),
            config.credentials_file.as_deref(),
            config.credentials_env.as_deref(),
        )?
        else {
            return Ok(None);
        };
        let key = if config.credentials_file.is_some() {
            KEYS[1]
        } else if config.credentials_env.is_some() {
            KEYS[2]
        } else {
            KEYS[0]
        };
        BasicCredentials::parse(text.expose().lines().next().unwrap_or(""))
            .map(Some)
            .map_err(|e| (key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::http::HttpBackend;

    fn config(extra: &str) -> Result<HttpBackendConfig, String> {
        let text = format!("name = \"api\"\nurl = \"https://api.example.org/auth\"\n{extra}");
        toml::from_str(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = config("").unwrap();
        assert_eq!(c.check_password_method, CheckPasswordMethod::Get);
        assert!(!c.follow_redirects);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.max_body, DEFAULT_MAX_BODY);
        c.validate().unwrap();
        assert!(config("check_password_method = \"POST\"").is_ok());
        assert!(config("check_password_method = \"PUT\"").is_err());
        assert!(config("colour = 1").is_err());
    }

    #[test]
    fn credentials_sources_are_exclusive_and_well_formed() {
        let c = config("credentials = \"a:b\"\ncredentials_env = \"X\"").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "credentials");
        let c = config("credentials = \"nocolon\"").unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.0, "credentials");
        assert!(!e.1.contains("nocolon"), "the value must not be echoed");
        let c = config("credentials_env = \"EXTAUTH_BRIDGE_TEST_UNSET_VAR\"").unwrap();
        assert_eq!(HttpBackend::new(&c).err().unwrap().0, "credentials_env");
        let c = config("ca_file = \"/nonexistent/ca.pem\"").unwrap();
        assert_eq!(HttpBackend::new(&c).err().unwrap().0, "ca_file");
        let c = config("check_account = \"nodomain\"").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "check_account");
    }

    #[test]
    fn debug_never_shows_credentials() {
        let c = config("credentials = \"api:s3cr3t\"").unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
