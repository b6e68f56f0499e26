//! State shared by every node through Redis/Valkey (`[shared]`): the store handle, its
//! deadline and outage tracking ([`SharedStore`]), the connection (`redis.rs`), the key
//! names (`keys.rs`) and the shared tier of the positive cache (`cache.rs`).
//!
//! The store never decides alone: every operation has `[shared].timeout` (and, being
//! awaited inside the request, never outlives the request's deadline); any failure is an
//! `Err` that the caller answers from per-process state, as without `[shared]`. An outage
//! is logged once when it starts (warn) and once when it ends (info), not per request.
//!
//! After an operation fails, the store is left alone for [`RECONNECT_EVERY`]: operations in
//! that time fail at once (`Down`), then one operation probes it. So a store that blackholes
//! costs one request one `timeout` a second, not every request one `timeout` per operation.
//!
//! Three users, none knowing the others: the shared tier of the cache (`cache.rs`), the
//! throttle's shared state (`throttle.rs`, a [`ThrottleStore`](crate::state::throttle::ThrottleStore))
//! and the invalidation of an account on every node (`invalidation.rs`, bumping the
//! account's shared generation, which every stored fact is checked against).
//!
//! Must not hold a password, a token or an unkeyed hash in anything it stores, nor block
//! past its deadline.

pub mod cache;
pub mod invalidation;
pub mod keys;
mod redis;
pub mod throttle;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// While the store is down: until when (ms since `epoch`) operations fail at once; 0
    /// when it is up. The operation that moves it on first is the probe.
    resting_until: AtomicU64,
    epoch: Instant,
    /// How long an account's generation key lives: longer than anything stored under it.
    generation_ttl: Duration,
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
            resting_until: AtomicU64::new(0),
            epoch: Instant::now(),
            generation_ttl: Duration::from_secs(3600),
        })
    }

    /// Sets how long generation keys live: at least as long as the longest-lived fact any
    /// user of the store keeps under a generation (plus a margin), so that a counter never
    /// expires back to a value an old fact was stored under.
    pub fn with_generation_ttl(mut self, longest_fact: Duration) -> SharedStore {
        self.generation_ttl = longest_fact + Duration::from_secs(60);
        self
    }

    pub fn generation_ttl(&self) -> Duration {
        self.generation_ttl
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether an operation may go to the store now: it is up, or its rest is over and this
    /// operation is the one probe.
    fn may_try(&self) -> bool {
        let until = self.resting_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        let next = now + RECONNECT_EVERY.as_millis() as u64;
        self.resting_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The client, for a user that needs a connection of its own (a blocking one on
    /// another thread).
    pub fn client(&self) -> &::redis::Client {
        &self.client
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
        if !self.may_try() {
            crate::metrics::shared_op(kind, "skipped", Duration::ZERO);
            return Err(SharedError::Down);
        }
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
            match &result {
                Ok(_) => "ok",
                Err(SharedError::Timeout) => "timeout",
                Err(_) => "error",
            },
            started.elapsed(),
        );
        match &result {
            Ok(_) => self.resting_until.store(0, Ordering::Release),
            Err(_) => {
                let until = self.now_ms() + RECONNECT_EVERY.as_millis() as u64;
                self.resting_until.store(until.max(1), Ordering::Release);
            }
        }
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
