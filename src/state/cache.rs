//! The positive-result credential cache (`[cache]`, off by default).
//!
//! What it remembers: that a given (user, server, password) was answered *yes* by `auth`,
//! when, and by which backend. Never the password: an entry is found by
//! HMAC-SHA256 under a random key made at start-up and never written anywhere, so neither a
//! memory dump nor a core file yields anything a dictionary attack could be run against
//! without that key as well.
//!
//! How it is organised: entries are grouped per account, under a second keyed hash of the
//! (case-folded) user and server. That makes "forget everything about this user" (after
//! `setpass`, `removeuser`, `removeuser3`) one exact removal, and lets `max_entries` count
//! credentials (the group's size is its weight in moka).
//!
//! [`CachingHandler`] wraps any [`Handler`] (the router), so neither the request loop nor the
//! router knows the cache exists:
//! - `auth`: a fresh entry (younger than `ttl`) answers `1` at once ([`Status::Cached`]);
//!   otherwise the inner handler is asked, and a *yes* is remembered;
//! - when the inner handler says the backend is **unavailable** (not when it says no), an
//!   entry younger than `stale_if_error` answers `1` ([`Status::Stale`], logged as a warning);
//! - `setpass`, `removeuser`, `removeuser3`: the account's entries are dropped before and after
//!   the inner handler runs, whatever it answered (a timed-out `setpass` may still have
//!   changed the password), and an `auth` that was already running when they started does
//!   not store its answer.
//!
//! Each bridge process has its own cache: a password changed through another process of the
//! pool, or outside the bridge, is noticed when the entry expires (`ttl`).
//!
//! With `[shared]`, the shared store ([`super::shared::cache`]) is asked first and is the
//! only tier while it answers; this process's entries are then only its fallback during a
//! store outage, and only while younger than [`LOCAL_FALLBACK`] (a `setpass` on another node
//! while the store is down cannot reach them: this bounds how long they may outlive it).
//!
//! Must not hash anything itself (keys come from [`super::keyed`]), cache a negative answer,
//! or decide anything the inner handler would not have: it only answers sooner, or, within
//! `stale_if_error`, during an outage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::keyed::{AccountKey, CredentialKey, Keyer};
use super::shared::cache::SharedCache;
use crate::config::CacheConfig;
use crate::outcome::{Outcome, Status};
use crate::request::Request;
use crate::router::Handler;
use crate::secret::Secret;

/// Most credentials remembered per account: several app passwords or tokens of one user
/// may be in use at once, but a user must not be able to fill the cache alone.
const PER_ACCOUNT: usize = 8;

/// With `[shared]`, how old a local entry may be and still answer while the store is down.
pub const LOCAL_FALLBACK: Duration = Duration::from_secs(30);

/// One remembered positive answer.
#[derive(Clone)]
struct Entry {
    credential: CredentialKey,
    stored: Instant,
    backend: Option<Arc<str>>,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub age: Duration,
    pub backend: Option<Arc<str>>,
}

/// The cache proper: keyed hashes to "yes, at this time, from this backend".
pub struct CredentialCache {
    keyer: Keyer,
    /// Per account, its remembered credentials (copy-on-write: a lookup never locks).
    entries: moka::sync::Cache<AccountKey, Arc<[Entry]>>,
    ttl: Duration,
    stale_if_error: Duration,
    /// Bumped by every eviction; an answer computed across one is not stored.
    evictions: AtomicU64,
}

impl CredentialCache {
    pub fn new(config: &CacheConfig) -> CredentialCache {
        CredentialCache::with_keyer(config, Keyer::random())
    }

    fn with_keyer(config: &CacheConfig, keyer: Keyer) -> CredentialCache {
        // Entries live as long as either use of them: fresh hits or stale serving.
        let lifetime = config
            .ttl
            .max(config.stale_if_error)
            .max(Duration::from_millis(1));
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_entries.max(1))
            .weigher(|_: &AccountKey, v: &Arc<[Entry]>| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .time_to_live(lifetime)
            .build();
        CredentialCache {
            keyer,
            entries,
            ttl: config.ttl,
            stale_if_error: config.stale_if_error,
            evictions: AtomicU64::new(0),
        }
    }

    pub fn keyer(&self) -> &Keyer {
        &self.keyer
    }

    /// The entry for this credential, if one is younger than `max_age` at `now`.
    fn find(
        &self,
        account: AccountKey,
        credential: &CredentialKey,
        now: Instant,
        max_age: Duration,
    ) -> Option<Hit> {
        let group = self.entries.get(&account)?;
        group
            .iter()
            .find(|e| e.credential.matches(credential))
            .map(|e| Hit {
                age: now.saturating_duration_since(e.stored),
                backend: e.backend.clone(),
            })
            .filter(|hit| hit.age < max_age)
    }

    /// A fresh positive answer for this credential.
    pub fn fresh(
        &self,
        account: AccountKey,
        credential: &CredentialKey,
        now: Instant,
    ) -> Option<Hit> {
        self.find(account, credential, now, self.ttl)
    }

    /// A positive answer young enough to serve while the backend is unavailable.
    pub fn stale(
        &self,
        account: AccountKey,
        credential: &CredentialKey,
        now: Instant,
    ) -> Option<Hit> {
        if self.stale_if_error.is_zero() {
            return None;
        }
        self.find(account, credential, now, self.stale_if_error)
    }

    /// The eviction count, to pass to [`CredentialCache::remember`] after asking the backend.
    pub fn epoch(&self) -> u64 {
        self.evictions.load(Ordering::Acquire)
    }

    /// Remembers a positive answer obtained since `epoch`, unless an eviction happened since.
    pub fn remember(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        backend: Option<&str>,
        now: Instant,
        epoch: u64,
    ) {
        let lifetime = self.ttl.max(self.stale_if_error);
        let old = self.entries.get(&account);
        let mut group: Vec<Entry> = old
            .iter()
            .flat_map(|g| g.iter())
            .filter(|e| {
                e.credential != credential && now.saturating_duration_since(e.stored) < lifetime
            })
            .cloned()
            .collect();
        if group.len() >= PER_ACCOUNT {
            group.remove(0);
        }
        group.push(Entry {
            credential,
            stored: now,
            backend: backend.map(Arc::from),
        });
        // Checked last: an eviction that raced with this insert bumps the epoch first, then
        // removes; one that came before is seen here.
        if self.epoch() != epoch {
            return;
        }
        self.entries.insert(account, group.into());
        if self.epoch() != epoch {
            self.entries.invalidate(&account);
        }
    }

    /// Forgets every credential of the account.
    pub fn evict(&self, account: AccountKey) {
        self.evictions.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(&account);
    }
}

/// A [`Handler`] that answers from the cache where it may and asks `inner` otherwise.
pub struct CachingHandler<H> {
    inner: H,
    cache: CredentialCache,
    shared: Option<SharedCache>,
}

impl<H: Handler> CachingHandler<H> {
    pub fn new(inner: H, config: &CacheConfig) -> Self {
        CachingHandler {
            inner,
            cache: CredentialCache::new(config),
            shared: None,
        }
    }

    /// With `[shared]`: keyed by the shared key, the store as the first tier.
    pub fn with_shared(inner: H, config: &CacheConfig, keyer: Keyer, shared: SharedCache) -> Self {
        CachingHandler {
            inner,
            cache: CredentialCache::with_keyer(config, keyer),
            shared: Some(shared),
        }
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    async fn auth(&self, request: &Request, password: &Secret) -> Outcome {
        let a = request.account();
        let account = self.cache.keyer().account(&a.user, &a.server);
        let credential = self.cache.keyer().credential(&a.user, &a.server, password);
        let seen = match &self.shared {
            Some(shared) => match shared.lookup(&account, &credential).await {
                Ok(view) => Some(view),
                Err(_) => {
                    crate::metrics::shared_fallback();
                    None
                }
            },
            None => None,
        };
        if let Some(view) = &seen {
            if let Some((age, backend)) = view.entry.clone().filter(|e| e.0 < self.cache.ttl) {
                crate::metrics::cache_hit();
                let backend = Some(Arc::from(backend)).filter(|b: &Arc<str>| !b.is_empty());
                return from_cache(Hit { age, backend }, Status::SharedCached);
            }
        } else {
            let max_age = match self.shared {
                Some(_) => self.cache.ttl.min(LOCAL_FALLBACK),
                None => self.cache.ttl,
            };
            if let Some(hit) = self
                .cache
                .find(account, &credential, Instant::now(), max_age)
            {
                crate::metrics::cache_hit();
                return from_cache(hit, Status::Cached);
            }
        }
        crate::metrics::cache_miss();
        let epoch = self.cache.epoch();
        let outcome = self.inner.handle(request).await;
        match &outcome.status {
            Status::Yes if outcome.answer => {
                self.cache.remember(
                    account,
                    credential,
                    outcome.backend.as_deref(),
                    Instant::now(),
                    epoch,
                );
                if let (Some(shared), Some(view)) = (&self.shared, &seen) {
                    // A failure is logged by the store; the answer stands.
                    let backend = outcome.backend.as_deref();
                    let _ = shared.remember(&account, &credential, backend, view).await;
                }
                outcome
            }
            Status::Error("unavailable", message) => {
                match self.cache.stale(account, &credential, Instant::now()) {
                    Some(hit) => {
                        let reason = format!(
                            "backend unavailable ({message}); served a cached answer {} ms old",
                            hit.age.as_millis()
                        );
                        from_cache(hit, Status::Stale(reason))
                    }
                    None => outcome,
                }
            }
            _ => outcome,
        }
    }
}

impl<H> CachingHandler<H> {
    /// Every node forgets the account (when the store answers; its outage is logged there).
    async fn invalidate_shared(&self, account: &AccountKey) {
        if let Some(shared) = &self.shared {
            if shared.invalidate(account).await.is_err() {
                crate::metrics::shared_fallback();
            }
        }
    }
}

fn from_cache(hit: Hit, status: Status) -> Outcome {
    Outcome {
        answer: true,
        backend: hit.backend.map(|b| b.to_string()),
        status,
    }
}

#[async_trait]
impl<H: Handler> Handler for CachingHandler<H> {
    async fn handle(&self, request: &Request) -> Outcome {
        match request {
            Request::Auth(_, password) if !password.is_empty() => {
                self.auth(request, password).await
            }
            Request::SetPass(..)
            | Request::RemoveUser(..)
            | Request::RemoveUser3(..)
            | Request::TryRegister(..) => {
                let a = request.account();
                let account = self.cache.keyer().account(&a.user, &a.server);
                self.cache.evict(account);
                self.invalidate_shared(&account).await;
                let outcome = self.inner.handle(request).await;
                self.cache.evict(account);
                self.invalidate_shared(&account).await;
                outcome
            }
            _ => self.inner.handle(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    fn config(ttl_s: u64, stale_s: u64) -> CacheConfig {
        CacheConfig {
            enabled: true,
            ttl: Duration::from_secs(ttl_s),
            max_entries: 100,
            stale_if_error: Duration::from_secs(stale_s),
        }
    }

    #[test]
    fn expiry_and_stale_window_use_the_age() {
        let cache = CredentialCache::new(&config(60, 600));
        let k = cache.keyer().clone();
        let (acct, cred) = (
            k.account("u", "s"),
            k.credential("u", "s", &Secret::new("p")),
        );
        let t0 = Instant::now();
        cache.remember(acct, cred, Some("b"), t0, cache.epoch());
        assert!(cache
            .fresh(acct, &cred, t0 + Duration::from_secs(59))
            .is_some());
        assert!(cache
            .fresh(acct, &cred, t0 + Duration::from_secs(60))
            .is_none());
        assert!(cache
            .stale(acct, &cred, t0 + Duration::from_secs(599))
            .is_some());
        assert!(cache
            .stale(acct, &cred, t0 + Duration::from_secs(600))
            .is_none());
        let wrong = k.credential("u", "s", &Secret::new("q"));
        assert!(cache.fresh(acct, &wrong, t0).is_none());
        assert!(cache.stale(acct, &wrong, t0).is_none());
    }

    #[test]
    fn eviction_during_a_backend_call_keeps_its_answer_out() {
        let cache = CredentialCache::new(&config(60, 0));
        let k = cache.keyer().clone();
        let (acct, cred) = (
            k.account("u", "s"),
            k.credential("u", "s", &Secret::new("p")),
        );
        let epoch = cache.epoch();
        cache.evict(acct);
        cache.remember(acct, cred, None, Instant::now(), epoch);
        assert!(cache.fresh(acct, &cred, Instant::now()).is_none());
    }

    #[test]
    fn one_account_cannot_fill_the_cache() {
        let cache = CredentialCache::new(&config(60, 0));
        let k = cache.keyer().clone();
        let acct = k.account("u", "s");
        let now = Instant::now();
        for i in 0..20 {
            let cred = k.credential("u", "s", &Secret::new(format!("p{i}")));
            cache.remember(acct, cred, None, now, cache.epoch());
        }
        let last = k.credential("u", "s", &Secret::new("p19"));
        let first = k.credential("u", "s", &Secret::new("p0"));
        assert!(cache.fresh(acct, &last, now).is_some());
        assert!(cache.fresh(acct, &first, now).is_none());
        assert_eq!(cache.entries.get(&acct).unwrap().len(), PER_ACCOUNT);
    }

    /// A backend stand-in whose answer the test sets, counting the calls it gets.
    struct Scripted {
        answer: Mutex<Result<bool, &'static str>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn set(&self, answer: Result<bool, &'static str>) {
            *self.answer.lock().unwrap() = answer;
        }
    }

    #[async_trait]
    impl Handler for Arc<Scripted> {
        async fn handle(&self, request: &Request) -> Outcome {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = *self.answer.lock().unwrap();
            match (request, answer) {
                (Request::Auth(_, p), Ok(yes)) => {
                    Outcome::answered("inner", yes && p.expose() == "right")
                }
                (_, Ok(yes)) => Outcome::answered("inner", yes),
                (_, Err("unavailable")) => Outcome::error(
                    "inner",
                    BackendError::Unavailable("connection refused".into()),
                ),
                (_, Err(_)) => Outcome::error("inner", BackendError::Protocol("garbage".into())),
            }
        }
    }

    fn setup(cfg: CacheConfig) -> (Arc<Scripted>, CachingHandler<Arc<Scripted>>) {
        let inner = Arc::new(Scripted {
            answer: Mutex::new(Ok(true)),
            calls: AtomicUsize::new(0),
        });
        (Arc::clone(&inner), CachingHandler::new(inner, &cfg))
    }

    fn ask(h: &CachingHandler<Arc<Scripted>>, line: &str) -> Outcome {
        let request = Request::parse(line.as_bytes()).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(h.handle(&request))
    }

    #[test]
    fn hit_serves_without_asking_and_wrong_passwords_always_ask() {
        let (inner, h) = setup(config(60, 0));
        let o = ask(&h, "auth:u:s:right");
        assert_eq!((o.answer, &o.status), (true, &Status::Yes));
        let o = ask(&h, "auth:u:s:right");
        assert_eq!((o.answer, &o.status), (true, &Status::Cached));
        assert_eq!(o.backend.as_deref(), Some("inner"));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        for _ in 0..3 {
            let o = ask(&h, "auth:u:s:wrong");
            assert_eq!((o.answer, &o.status), (false, &Status::No));
        }
        // A password that differs by a byte misses.
        assert!(!ask(&h, "auth:u:s:right ").answer);
        // Another spelling of the user is a different credential: asked, not served.
        assert_eq!(ask(&h, "auth:U:s:right").status, Status::Yes);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 6);
        // isuser is never cached.
        ask(&h, "isuser:u:s");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn negative_answers_are_not_cached() {
        let (inner, h) = setup(config(60, 0));
        inner.set(Ok(false));
        assert!(!ask(&h, "auth:u:s:right").answer);
        inner.set(Ok(true));
        let o = ask(&h, "auth:u:s:right");
        assert_eq!(o.status, Status::Yes);
    }

    #[test]
    fn setpass_and_removeuser_evict_that_user_only() {
        for change in [
            "setpass:u:s:new",
            "removeuser:u:s",
            "removeuser3:u:s:right",
            "setpass:U:S:new",
        ] {
            let (inner, h) = setup(config(60, 0));
            ask(&h, "auth:u:s:right");
            ask(&h, "auth:other:s:right");
            assert_eq!(ask(&h, "auth:u:s:right").status, Status::Cached);
            ask(&h, change);
            // The backend now says no to the old password: it must be asked.
            inner.set(Ok(false));
            let o = ask(&h, "auth:u:s:right");
            assert_eq!(
                (o.answer, &o.status),
                (false, &Status::No),
                "after {change}"
            );
            assert_eq!(
                ask(&h, "auth:other:s:right").status,
                Status::Cached,
                "after {change}"
            );
        }
    }

    #[test]
    fn a_failed_setpass_still_evicts() {
        let (inner, h) = setup(config(60, 0));
        ask(&h, "auth:u:s:right");
        inner.set(Err("unavailable"));
        ask(&h, "setpass:u:s:new");
        inner.set(Ok(false));
        assert!(!ask(&h, "auth:u:s:right").answer);
    }

    #[test]
    fn stale_only_when_unavailable_and_enabled() {
        let (inner, h) = setup(config(60, 600));
        ask(&h, "auth:u:s:right");
        // Age the entry past `ttl` but within `stale_if_error`.
        let k = h.cache.keyer().clone();
        let acct = k.account("u", "s");
        let cred = k.credential("u", "s", &Secret::new("right"));
        let old = Instant::now() - Duration::from_secs(120);
        h.cache.evict(acct);
        h.cache
            .remember(acct, cred, Some("inner"), old, h.cache.epoch());
        inner.set(Err("unavailable"));
        let o = ask(&h, "auth:u:s:right");
        assert!(o.answer);
        assert!(matches!(o.status, Status::Stale(ref why) if why.contains("connection refused")));
        assert_eq!(o.status.as_str(), "stale");
        // A wrong password is not served stale.
        assert!(!ask(&h, "auth:u:s:wrong").answer);
        // Another kind of error is not a reason to serve stale.
        inner.set(Err("protocol"));
        assert!(!ask(&h, "auth:u:s:right").answer);
        // The backend saying no is final.
        inner.set(Ok(false));
        assert!(!ask(&h, "auth:u:s:right").answer);
        // Older than the window: not served.
        let older = Instant::now() - Duration::from_secs(601);
        h.cache.evict(acct);
        h.cache
            .remember(acct, cred, Some("inner"), older, h.cache.epoch());
        inner.set(Err("unavailable"));
        assert!(!ask(&h, "auth:u:s:right").answer);
    }

    #[test]
    fn stale_off_by_default() {
        let (inner, h) = setup(config(60, 0));
        let k = h.cache.keyer().clone();
        let acct = k.account("u", "s");
        let cred = k.credential("u", "s", &Secret::new("right"));
        h.cache.remember(
            acct,
            cred,
            None,
            Instant::now() - Duration::from_secs(61),
            0,
        );
        inner.set(Err("unavailable"));
        let o = ask(&h, "auth:u:s:right");
        assert!(!o.answer);
        assert_eq!(o.status.as_str(), "unavailable");
    }
}
