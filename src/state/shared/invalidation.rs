//! The invalidation of an account on every node: a change (`setpass`, `tryregister`,
//! `removeuser`, `removeuser3`) bumps the account's shared generation `gen:{account}` and
//! drops its shared cache entries, atomically. Every fact the store keeps about a
//! credential is checked against that generation (the cache's writes are conditional on
//! it, the throttle's entries are tagged with it), so each node sees the change at its
//! next request for the account.
//!
//! A change made while the store is unreachable is not lost: the account is kept in a
//! bounded list and invalidated again, in the background, as soon as the store answers,
//! so that what another node shared before the change cannot come back with the store.
//!
//! Must not delay a change beyond one `[shared].timeout` per attempt, nor decide anything.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{SharedError, SharedStore};
use crate::state::keyed::AccountKey;

/// Most accounts whose invalidation waits for the store. Each is 32 bytes; past it, the
/// change is logged as not shared (other nodes notice it when their entries expire).
const MAX_PENDING: usize = 100_000;

/// How often the background task retries while invalidations wait (the store's own rest
/// after a failure spaces its real attempts to one a second).
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Bumps an account's generation and drops its cache hash, in one transaction.
async fn invalidate_now(store: &SharedStore, account: &AccountKey) -> Result<(), SharedError> {
    let keys = store.keys();
    let (gen_key, cache_key) = (keys.generation(account), keys.cache(account));
    let gen_ttl = store.generation_ttl().as_millis() as u64;
    store
        .run("invalidate", |mut c| async move {
            ::redis::pipe()
                .atomic()
                .cmd("INCR")
                .arg(&gen_key)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&gen_key)
                .arg(gen_ttl)
                .ignore()
                .cmd("DEL")
                .arg(&cache_key)
                .ignore()
                .query_async::<()>(&mut c)
                .await
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
            tokio::spawn(async move { this.retry().await });
        }
    }

    /// Accounts whose invalidation still waits for the store.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn retry(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RETRY_EVERY).await;
            let waiting: Vec<AccountKey> = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            for account in waiting {
                if invalidate_now(&self.store, &account).await.is_err() {
                    break;
                }
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&account);
            }
            // Cleared under the lock, so an invalidation queued meanwhile either is seen by
            // this loop or starts a task of its own.
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                self.retrying.store(false, Ordering::Release);
                tracing::info!("changes made during the shared store's outage are shared now");
                return;
            }
        }
    }
}
