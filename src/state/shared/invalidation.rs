//! The invalidation of an account on every node: a change (`setpass`, `tryregister`,
//! `removeuser`, `removeuser3`) bumps the account's shared generation `gen:{account}` and
//! drops its shared cache entries, atomically. Every fact the store keeps about a
//! credential is checked against that generation (the cache's writes are conditional on
//! it, the throttle's entries are tagged with it), so each node sees the change at its
//! next request for the account.
//!
//! A change made while the store is unreachable is not lost: the account is kept in a
//! bounded list and invalidated again as soon as the store answers, so that what another
//! node shared before the change is not served once the store is back (or, after a
//! partition, while it never went away for the other node). The retries run on a thread
//! of their own with a blocking connection: the request runtime runs only while requests
//! are in hand, and an idle node must still replay its changes.
//!
//! Must not delay a change beyond one `[shared].timeout` per attempt, nor decide anything.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{SharedError, SharedStore};
use crate::state::keyed::AccountKey;

/// Most accounts whose invalidation waits for the store. Each is 32 bytes; past it, the
/// change is logged as not shared (other nodes notice it when their entries expire).
const MAX_PENDING: usize = 100_000;

/// How often the retry thread tries again while invalidations wait.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// The retry thread's deadlines for a connect and for one reply: it delays no request.
const RETRY_CONNECT: Duration = Duration::from_secs(2);
const RETRY_REPLY: Duration = Duration::from_secs(1);

/// Bumps an account's generation and drops its cache hash, in one transaction.
fn invalidation(store: &SharedStore, account: &AccountKey) -> ::redis::Pipeline {
    let keys = store.keys();
    let gen_key = keys.generation(account);
    let mut pipe = ::redis::pipe();
    pipe.atomic()
        .cmd("INCR")
        .arg(&gen_key)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&gen_key)
        .arg(store.generation_ttl().as_millis() as u64)
        .ignore()
        .cmd("DEL")
        .arg(keys.cache(account))
        .ignore();
    pipe
}

async fn invalidate_now(store: &SharedStore, account: &AccountKey) -> Result<(), SharedError> {
    let pipe = invalidation(store, account);
    store
        .run("invalidate", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
}

/// Invalidates accounts in the store, remembering those it could not reach.
pub struct SharedInvalidation {
    store: Arc<SharedStore>,
    pending: Mutex<HashSet<AccountKey>>,
    /// Whether a retry task is running.
    retrying: AtomicBool,
}

impl SharedInvalidation {
    pub fn new(store: Arc<SharedStore>) -> Arc<SharedInvalidation> {
        Arc::new(SharedInvalidation {
            store,
            pending: Mutex::new(HashSet::new()),
            retrying: AtomicBool::new(false),
        })
    }

    /// Every node forgets the account; if the store does not answer, it is retried until
    /// it does.
    pub async fn invalidate(self: &Arc<Self>, account: AccountKey) {
        if invalidate_now(&self.store, &account).await.is_ok() {
            return;
        }
        crate::metrics::shared_fallback();
        self.queue(account);
    }

    /// Leaves the account to the retry thread (no waiting: callable from `Drop`).
    pub fn queue(self: &Arc<Self>, account: AccountKey) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_PENDING && !pending.contains(&account) {
                tracing::error!(
                    pending = pending.len(),
                    "shared store unreachable and too many changes waiting: this change reaches \
                     other nodes only when their cache entries expire"
                );
                return;
            }
            pending.insert(account);
        }
        if !self.retrying.swap(true, Ordering::AcqRel) {
            let this = Arc::clone(self);
            let started = std::thread::Builder::new()
                .name("shared-invalidation".into())
                .spawn(move || this.retry());
            if let Err(e) = started {
                self.retrying.store(false, Ordering::Release);
                tracing::error!(error = %e, "cannot start the shared invalidation retry thread");
            }
        }
    }

    /// Accounts whose invalidation still waits for the store.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Until nothing waits: one blocking connection, every waiting account invalidated
    /// through it, again every [`RETRY_EVERY`] after a failure.
    fn retry(self: Arc<Self>) {
        let mut connection: Option<::redis::Connection> = None;
        loop {
            std::thread::sleep(RETRY_EVERY);
            let waiting: Vec<AccountKey> = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            for account in waiting {
                let started = Instant::now();
                let result = self.retry_one(&mut connection, &account);
                let outcome = if result.is_ok() { "ok" } else { "error" };
                crate::metrics::shared_op("invalidate_retry", outcome, started.elapsed());
                if result.is_err() {
                    connection = None;
                    break;
                }
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&account);
            }
            // Decided under the lock, so an invalidation queued meanwhile either is seen
            // by this loop or starts a thread of its own.
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                self.retrying.store(false, Ordering::Release);
                tracing::info!(
                    "changes made while the shared store was unreachable are shared now"
                );
                return;
            }
        }
    }

    fn retry_one(
        &self,
        connection: &mut Option<::redis::Connection>,
        account: &AccountKey,
    ) -> Result<(), ::redis::RedisError> {
        if connection.is_none() {
            let c = self
                .store
                .client()
                .get_connection_with_timeout(RETRY_CONNECT)?;
            c.set_read_timeout(Some(RETRY_REPLY))?;
            c.set_write_timeout(Some(RETRY_REPLY))?;
            *connection = Some(c);
        }
        let Some(c) = connection.as_mut() else {
            return Ok(());
        };
        invalidation(&self.store, account).query::<()>(c)
    }
}
