//! Failure throttling per account (`[throttle]`, off by default).
//!
//! The XMPP servers send no client address, so the unit is the account (`user@server`, as
//! the users file folds it). [`ThrottlingHandler`] wraps any [`Handler`] (the cache over the
//! router) and acts on `auth` alone:
//! - after `max_failures` *distinct* wrong passwords within `window`, the account is locked
//!   for `lockout` (doubling per further lockout up to `max_lockout`; a successful login
//!   resets the doubling): an `auth` is answered `0` unasked ([`Status::Throttled`]);
//! - the owner is not locked out: a credential a backend (or the cache) said yes to within
//!   `trusted_for` still reaches the backend during a lockout, and can log in;
//! - a wrong password seen again within `window` is answered `0` unasked and not counted
//!   again ([`Status::Repeated`]), so a device retrying a stale password neither locks its
//!   owner out here nor trips an IdP's own brute-force lockout;
//! - only a backend's no ([`Status::No`]) counts: an outage, a timeout, a refusal without a
//!   backend (empty password), an invalid frame never do.
//!
//! It sits outside the cache, so a cached yes counts as a login, and inside
//! [`GenerationHandler`](super::generation::GenerationHandler): the account's generation is
//! read before the backend is asked and stored with every remembered credential, so after a
//! `setpass` a trusted old password is no longer trusted and a password remembered as wrong
//! is asked again.
//!
//! The state lives behind [`ThrottleStore`]; this process's [`MemoryStore`] is always kept
//! and is the fallback of a shared store ([`ThrottlingHandler::with_shared`]): a shared
//! store that fails is logged once per change and this request uses local state.
//!
//! Must not hash anything itself (keys come from [`super::keyed`]), call a backend for a
//! throttled or repeated credential, or turn anything but a backend's no into a failure.

mod memory;
mod store;

pub use memory::{MemoryStore, MAP_OVERHEAD, TRUSTED_PER_ACCOUNT};
pub use store::{Policy, StoreError, ThrottleStore, Verdict};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::generation::{Generation, Generations, Slot};
use super::keyed::{AccountKey, CredentialKey, Keyer};
use crate::config::ThrottleConfig;
use crate::outcome::{Outcome, Scope, Status};
use crate::request::Request;
use crate::router::Handler;
use crate::secret::Secret;

/// A [`Handler`] that refuses what the throttle refuses and asks `inner` otherwise.
pub struct ThrottlingHandler<H> {
    inner: H,
    keyer: Keyer,
    generations: Arc<Generations>,
    local: MemoryStore,
    shared: Option<Arc<dyn ThrottleStore>>,
    /// Whether the shared store failed last time, so its outage is logged once per change.
    shared_down: AtomicBool,
}

/// One `auth` as the stores see it.
#[derive(Clone, Copy)]
struct Subject {
    account: AccountKey,
    credential: CredentialKey,
    generation: Generation,
}

impl<H: Handler> ThrottlingHandler<H> {
    /// `keyer` is the process's one keyer (the cache's too); `generations` the counters the
    /// [`GenerationHandler`](super::generation::GenerationHandler) outside this one bumps.
    pub fn new(
        inner: H,
        config: &ThrottleConfig,
        keyer: Keyer,
        generations: Arc<Generations>,
    ) -> Self {
        ThrottlingHandler {
            inner,
            keyer,
            generations,
            local: MemoryStore::new(Policy::from_config(config), config.max_accounts),
            shared: None,
            shared_down: AtomicBool::new(false),
        }
    }

    /// Keeps the state in `store` as well; the local store answers when it fails.
    pub fn with_shared(mut self, store: Arc<dyn ThrottleStore>) -> Self {
        self.shared = Some(store);
        self
    }

    pub fn local(&self) -> &MemoryStore {
        &self.local
    }

    /// Notes whether the shared store answered; logs a change of that once.
    fn shared_answered<T>(&self, result: Result<T, StoreError>) -> Option<T> {
        match result {
            Ok(value) => {
                if self.shared_down.swap(false, Ordering::AcqRel) {
                    tracing::debug!("throttle store reachable again");
                }
                Some(value)
            }
            Err(e) => {
                crate::metrics::shared_fallback();
                // The store logs its outage itself, once (a warning); this is for debugging.
                if !self.shared_down.swap(true, Ordering::AcqRel) {
                    tracing::debug!(error = %e, "throttle store failed; using this process's state");
                }
                None
            }
        }
    }

    /// The verdict, and where the state that gave it lives.
    async fn check(&self, s: Subject, now: Instant) -> (Verdict, Scope) {
        if let Some(shared) = &self.shared {
            let result = shared
                .check(s.account, s.credential, s.generation, now)
                .await;
            if let Some(verdict) = self.shared_answered(result) {
                return (verdict, Scope::Shared);
            }
        }
        let verdict = self
            .local
            .check_now(s.account, &s.credential, s.generation, now);
        (verdict, Scope::Process)
    }

    /// Recorded locally always, so that the fallback knows what the shared store knows.
    async fn failure(&self, s: Subject, now: Instant) -> Option<Duration> {
        let local = self
            .local
            .failure_now(s.account, s.credential, s.generation, now);
        match &self.shared {
            Some(shared) => {
                let result = shared
                    .record_failure(s.account, s.credential, s.generation, now)
                    .await;
                self.shared_answered(result).unwrap_or(local)
            }
            None => local,
        }
    }

    async fn success(&self, s: Subject, now: Instant) {
        self.local
            .success_now(s.account, s.credential, s.generation, now);
        if let Some(shared) = &self.shared {
            let result = shared
                .record_success(s.account, s.credential, s.generation, now)
                .await;
            self.shared_answered(result);
        }
    }

    async fn auth(&self, request: &Request, password: &Secret) -> Outcome {
        let a = request.account();
        let subject = Subject {
            account: self.keyer.account(&a.user, &a.server),
            credential: self.keyer.credential(&a.user, &a.server, password),
            // Read before the backend is asked: an answer computed across a password change
            // is stored under the old generation, and so never used.
            generation: self.generations.current(Slot::of(&a.user, &a.server)),
        };
        let (verdict, scope) = self.check(subject, Instant::now()).await;
        match verdict {
            Verdict::Ask => {}
            Verdict::Locked { remaining } => {
                // Rounded up: "4m 59s" for a fresh 5m lockout reads like a bug.
                let whole = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
                let remaining = Duration::from_secs(whole);
                return Outcome::failed(Status::Throttled(format!(
                    "account locked for {} more after repeated wrong passwords (a lockout {})",
                    humantime::format_duration(remaining),
                    scope.describe()
                )));
            }
            Verdict::Repeated => return Outcome::failed(Status::Repeated(scope)),
        }
        let outcome = self.inner.handle(request).await;
        match outcome.status {
            Status::Yes | Status::Cached | Status::SharedCached if outcome.answer => {
                self.success(subject, Instant::now()).await;
            }
            Status::No => {
                if let Some(length) = self.failure(subject, Instant::now()).await {
                    crate::metrics::throttle_lockout();
                    tracing::warn!(
                        user = a.user.as_str(),
                        server = a.server.as_str(),
                        lockout_s = length.as_secs(),
                        "account locked: too many distinct wrong passwords within throttle.window"
                    );
                }
            }
            // Outages, timeouts, refusals, stale answers: neither a failure nor a login.
            _ => {}
        }
        outcome
    }
}

#[async_trait]
impl<H: Handler> Handler for ThrottlingHandler<H> {
    async fn handle(&self, request: &Request) -> Outcome {
        match request {
            // An empty password is refused below without a backend: nothing to count.
            Request::Auth(_, password) if !password.is_empty() => {
                self.auth(request, password).await
            }
            _ => self.inner.handle(request).await,
        }
    }
}

#[cfg(test)]
mod tests;
