//! The connection to Redis/Valkey: a [`redis::Client`] built from `[shared]` (URL, password
//! from a file or the environment, the CA for `rediss://`), and the reconnecting
//! [`ConnectionManager`] made from it on first use.
//!
//! Must not connect while building (the handler is built outside the async runtime, and a
//! store that is down at start-up must not stop the bridge from starting), nor keep the
//! password anywhere but inside the client.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo};

use super::SharedError;
use crate::config::SharedConfig;
use crate::secret::Secret;

/// The store's client, not yet connected.
pub fn client(config: &SharedConfig) -> Result<Client, SharedError> {
    let password = crate::secret::resolve(
        [
            "shared.password",
            "shared.password_file",
            "shared.password_env",
        ],
        None,
        config.password_file.as_deref(),
        config.password_env.as_deref(),
    )
    .map_err(|(key, why)| SharedError::Config(key, why))?;
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        // redis-rs's message may quote the URL; ours holds no credentials (checked).
        .map_err(|e| SharedError::Config("shared.url", e.to_string()))?;
    info.redis.password = password.map(|p: Secret| p.expose().to_owned());
    match &config.ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| {
                SharedError::Config(
                    "shared.ca_file",
                    format!("cannot read {}: {e}", ca.display()),
                )
            })?;
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        None => Client::open(info),
    }
    .map_err(|e| SharedError::Config("shared.url", e.to_string()))
}

/// Connects (within `connect_timeout`; replies within `timeout`). The manager reconnects by
/// itself after a broken connection: a failed operation triggers it, a later one uses it.
pub async fn connect(
    client: &Client,
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<ConnectionManager, SharedError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(timeout)
        // One try per request: a retry loop would outlast the request's deadline.
        .set_number_of_retries(0);
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(SharedError::from)
}
