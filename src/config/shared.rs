//! The `[shared]` table: where the store that several nodes share (Redis or Valkey) is, how
//! to log in to it, and the secret that keys every credential hash on all nodes.
//!
//! Plain data and its checks. Must not connect to anything or read the files it names
//! (that is `state/shared/`), and must never hold the store's password: only where it is.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[shared]`: off when absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    /// `redis://host:port/db`, `rediss://host:port/db` (TLS), `redis+unix:///path` or
    /// `unix:///path` (a Unix socket; `?db=N` selects the database). No password in it.
    /// Required (checked, not typed, so every other key can be read with its default).
    #[serde(default)]
    pub url: String,
    /// PEM file of the certificate authority that signed the store's certificate
    /// (`rediss://`); unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// File holding the store's password (`requirepass` or an ACL user's).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the store's password.
    pub password_env: Option<String>,
    /// Put before every key, so several services can share one database.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Longest one store operation may take before the request falls back to local state.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// The secret (64 hex digits) that keys every credential and account hash: the same file
    /// on every node, so that they find each other's entries. `generate shared-key FILE`.
    /// Required, as `url`.
    #[serde(default)]
    pub key_file: PathBuf,
}

pub const DEFAULT_KEY_PREFIX: &str = "extauth-bridge:";

fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_millis(50)
}

impl SharedConfig {
    /// What types alone cannot check; returns the offending key (under `shared.`) and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.key_file.as_os_str().is_empty() {
            return Err((
                "shared.key_file",
                "required with [shared] (write one with `extauth-bridge generate shared-key FILE`)"
                    .to_owned(),
            ));
        }
        let (scheme, rest) = self.url.split_once("://").ok_or((
            "shared.url",
            "must look like redis://host:port/db, rediss://… or redis+unix:///path".to_owned(),
        ))?;
        let unix = matches!(scheme, "redis+unix" | "unix" | "valkey+unix");
        if !unix && !matches!(scheme, "redis" | "rediss" | "valkey" | "valkeys") {
            return Err((
                "shared.url",
                format!("unknown scheme {scheme:?} (use redis, rediss or redis+unix)"),
            ));
        }
        // A password inline in the URL would be in the config file, in `check --json`, in
        // ps output of whoever templated it: refused, like every other inline secret.
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority.contains('@') || rest.contains("password=") {
            return Err((
                "shared.url",
                "must not hold credentials; use shared.password_file or shared.password_env"
                    .to_owned(),
            ));
        }
        if self.ca_file.is_some() && !matches!(scheme, "rediss" | "valkeys") {
            return Err(("shared.ca_file", "only used with rediss://".to_owned()));
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err((
                "shared.password_file",
                "give only one of shared.password_file, shared.password_env".to_owned(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(("shared.timeout", "must be greater than zero".to_owned()));
        }
        if self.key_prefix.is_empty() || self.key_prefix.chars().any(char::is_whitespace) {
            return Err((
                "shared.key_prefix",
                "must be non-empty and without spaces".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> SharedConfig {
        SharedConfig {
            url: url.to_owned(),
            ca_file: None,
            password_file: None,
            password_env: None,
            key_prefix: default_key_prefix(),
            timeout: default_timeout(),
            key_file: "/k".into(),
        }
    }

    #[test]
    fn urls_with_credentials_or_unknown_schemes_are_refused() {
        for ok in [
            "redis://127.0.0.1:6379/0",
            "rediss://store.example:6380/2",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock?db=3",
        ] {
            assert!(with_url(ok).check().is_ok(), "{ok}");
        }
        for bad in [
            "redis://:hunter2@127.0.0.1/0",
            "redis://u:p@h/0",
            "redis+unix:///s?password=p",
            "http://h/",
            "127.0.0.1:6379",
        ] {
            let (key, why) = with_url(bad).check().unwrap_err();
            assert_eq!(key, "shared.url");
            assert!(!why.contains("hunter2") && !why.contains(":p@"), "{why}");
        }
    }
}
