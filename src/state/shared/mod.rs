//! State shared by every node through Redis/Valkey (`[shared]`): the store handle, its
//! deadline and outage tracking ([`SharedStore`]), the connection (`redis.rs`), the key
//! names (`keys.rs`) and the shared tier of the positive cache (`cache.rs`).
//!
//! The store never decides alone: every operation has `[shared].timeout` (and, being
//! awaited inside the request, never outlives the request's deadline); any failure is an
//! `Err` that the caller answers from per-process state, as without `[shared]`. An outage
//! is logged once when it starts (warn) and once when it ends (info), not per request.
//!
//! Phase 2 (the throttle's Redis implementation) reuses this: a `ThrottleStore` impl holds
//! an `Arc<SharedStore>` and runs its Lua scripts through [`SharedStore::run`], with its key
//! names added to [`keys::Keys`]; nothing here knows about the cache.
//!
//! Must not hold a password, a token or an unkeyed hash in anything it stores, nor block
//! past its deadline.

pub mod cache;
pub mod keys;
mod redis;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;

use crate::config::SharedConfig;
pub use keys::Keys;

/// After a failed connect, requests fall back at once for this long before trying again,
/// so an unreachable store costs one connect attempt a second, not one per login.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// How long a connect (TCP, TLS, AUTH, SELECT) may take. It runs as a task of its own: a
/// request waits for it only within its own `timeout`, and falls back if it is not done, so
/// a store farther away than one operation's timeout still gets connected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the connection stands.
enum Link {
    /// Not connected; no new attempt before the instant, if any.
    Idle(Option<Instant>),
    Connecting(tokio::task::JoinHandle<Result<ConnectionManager, SharedError>>),
    Up(ConnectionManager),
}

/// Why a store operation gave no answer. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("{0}: {1}")]
    Config(&'static str, String),
    #[error("store error: {0}")]
    Store(String),
    #[error("no answer within shared.timeout")]
    Timeout,
    #[error("not connected (retrying)")]
    Down,
}

impl From<::redis::RedisError> for SharedError {
    fn from(e: ::redis::RedisError) -> Self {
        SharedError::Store(e.to_string())
    }
}

/// The handle on the store, shared by everything that keeps state in it.
pub struct SharedStore {
    client: ::redis::Client,
    keys: Keys,
    timeout: Duration,
    /// The connection, made on first use; an async lock, so one task connects.
    link: tokio::sync::Mutex<Link>,
    /// Whether the last operation failed: the outage state that is logged on change.
    down: AtomicBool,
}

impl SharedStore {
    /// Reads the password and CA file and builds the client; does not connect.
    pub fn from_config(config: &SharedConfig) -> Result<SharedStore, SharedError> {
        Ok(SharedStore {
            client: redis::client(config)?,
            keys: Keys::new(&config.key_prefix),
            timeout: config.timeout,
            link: tokio::sync::Mutex::new(Link::Idle(None)),
            down: AtomicBool::new(false),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The live connection, starting a connect if there is none (and none failed in the
    /// last [`RECONNECT_EVERY`]). Awaits a connect in progress; the caller's timeout bounds
    /// that wait, and the connect goes on without it.
    async fn connection(&self) -> Result<ConnectionManager, SharedError> {
        let mut link = self.link.lock().await;
        if let Link::Idle(retry) = &*link {
            if retry.is_some_and(|t| Instant::now() < t) {
                return Err(SharedError::Down);
            }
            let (client, timeout) = (self.client.clone(), self.timeout);
            *link = Link::Connecting(tokio::spawn(async move {
                redis::connect(&client, timeout, CONNECT_TIMEOUT).await
            }));
        }
        let result = match &mut *link {
            Link::Up(c) => return Ok(c.clone()),
            Link::Connecting(task) => task.await,
            Link::Idle(_) => return Err(SharedError::Down),
        };
        match result {
            Ok(Ok(c)) => {
                *link = Link::Up(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                *link = Link::Idle(Some(Instant::now() + RECONNECT_EVERY));
                Err(e)
            }
            Err(join) => {
                *link = Link::Idle(Some(Instant::now() + RECONNECT_EVERY));
                Err(SharedError::Store(format!("connect task failed: {join}")))
            }
        }
    }

    /// Runs one operation (`kind` names it in metrics) under `[shared].timeout`, connecting
    /// first if need be; records its result and the outage state.
    pub async fn run<T, F, Fut>(&self, kind: &'static str, op: F) -> Result<T, SharedError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, ::redis::RedisError>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, async {
            let connection = self.connection().await?;
            op(connection).await.map_err(SharedError::from)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(SharedError::Timeout),
        };
        crate::metrics::shared_op(
            kind,
            if result.is_ok() { "ok" } else { "error" },
            started.elapsed(),
        );
        self.note(&result);
        result
    }

    /// Logs a change of the outage state, once each way.
    fn note<T>(&self, result: &Result<T, SharedError>) {
        match result {
            Ok(_) => {
                if self.down.swap(false, Ordering::AcqRel) {
                    tracing::info!(outcome = "shared_back", "shared store reachable again");
                }
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        outcome = "shared_down",
                        error = %e,
                        "shared store unavailable: answering from per-process state"
                    );
                }
            }
        }
    }

    /// `check`'s probe: writes, reads and deletes a key; the round trip of the three.
    pub async fn probe(&self) -> Result<Duration, SharedError> {
        let key = self.keys.probe();
        let started = Instant::now();
        let value: Option<String> = self
            .run("probe", |mut c| async move {
                ::redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg("probe")
                    .arg("EX")
                    .arg(10)
                    .ignore()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("DEL")
                    .arg(&key)
                    .ignore()
                    .query_async::<(Option<String>,)>(&mut c)
                    .await
                    .map(|(v,)| v)
            })
            .await?;
        match value.as_deref() {
            Some("probe") => Ok(started.elapsed()),
            _ => Err(SharedError::Store("the probe key read back wrong".into())),
        }
    }
}
