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
//! - every entry carries the account's [`Generation`] read *before* the backend was asked,
//!   and is served (fresh or stale) only while that generation is current. A `setpass`,
//!   `removeuser` or `removeuser3` bumps it ([`super::generation::GenerationHandler`], the
//!   layer above), so an entry of the old password, and the answer of an `auth` that was
//!   already running across the change, are dead at once. With the generations file that
//!   holds for a change through any bridge process of the machine;
//! - the same changes also drop the account's entries here, whatever they answered: only
//!   to free the memory, correctness comes from the generations.
//!
//! A password changed outside the bridge (or through a process that shares no generations
//! file) is noticed when the entry expires (`ttl`).
//!
//! With `[shared]`, the shared store ([`super::shared::cache`]) is asked first and is the
//! only tier while it answers. When it does not, the backend is asked: a `setpass` through
//! another node cannot reach this process's entries, so they answer only under
//! `stale_if_error` (the backend unavailable too), and only while younger than
//! [`LOCAL_FALLBACK`].
//!
//! Must not hash anything itself (keys come from [`super::keyed`]), cache a negative answer,
//! or decide anything the inner handler would not have: it only answers sooner, or, within
//! `stale_if_error`, during an outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::generation::{Generation, Generations, Slot};
use super::keyed::{AccountKey, CredentialKey, Keyer};
use super::shared::cache::{SharedCache, View};
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
    /// The account's generation before the backend was asked; served only while current.
    generation: Generation,
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
    generations: Arc<Generations>,
}

impl CredentialCache {
    pub fn new(config: &CacheConfig, generations: Arc<Generations>) -> CredentialCache {
        CredentialCache::with_keyer(config, Keyer::random(), generations)
    }

    fn with_keyer(
        config: &CacheConfig,
        keyer: Keyer,
        generations: Arc<Generations>,
    ) -> CredentialCache {
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
            generations,
        }
    }

    pub fn keyer(&self) -> &Keyer {
        &self.keyer
    }

    /// The account's generation now: read before asking the backend, passed to
    /// [`CredentialCache::remember`].
    pub fn generation(&self, slot: Slot) -> Generation {
        self.generations.current(slot)
    }

    /// The entry for this credential, if one is younger than `max_age` at `now` and its
    /// account has not changed since it was stored.
    fn find(
        &self,
        account: AccountKey,
        slot: Slot,
        credential: &CredentialKey,
        now: Instant,
        max_age: Duration,
    ) -> Option<Hit> {
        let group = self.entries.get(&account)?;
        group
            .iter()
            .find(|e| e.credential.matches(credential))
            .filter(|e| self.generations.is_current(slot, e.generation))
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
        slot: Slot,
        credential: &CredentialKey,
        now: Instant,
    ) -> Option<Hit> {
        self.find(account, slot, credential, now, self.ttl)
    }

    /// A positive answer young enough to serve while the backend is unavailable.
    pub fn stale(
        &self,
        account: AccountKey,
        slot: Slot,
        credential: &CredentialKey,
        now: Instant,
    ) -> Option<Hit> {
        if self.stale_if_error.is_zero() {
            return None;
        }
        self.find(account, slot, credential, now, self.stale_if_error)
    }

    /// Remembers a positive answer obtained by asking the backend after reading the
    /// account's `generation`, unless the account changed since: an answer computed across
    /// a change is not stored, and one stored across it is never served.
    pub fn remember(
        &self,
        account: AccountKey,
        slot: Slot,
        credential: CredentialKey,
        backend: Option<&str>,
        now: Instant,
        generation: Generation,
    ) {
        if !self.generations.is_current(slot, generation) {
            return;
        }
        let lifetime = self.ttl.max(self.stale_if_error);
        let old = self.entries.get(&account);
        let mut group: Vec<Entry> = old
            .iter()
            .flat_map(|g| g.iter())
            .filter(|e| {
                e.credential != credential
                    && e.generation == generation
                    && now.saturating_duration_since(e.stored) < lifetime
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
            generation,
        });
        self.entries.insert(account, group.into());
    }

    /// Forgets one credential of the account.
    pub fn forget(&self, account: AccountKey, credential: &CredentialKey) {
        if let Some(group) = self.entries.get(&account) {
            if group.iter().any(|e| e.credential.matches(credential)) {
                let kept: Vec<Entry> = group
                    .iter()
                    .filter(|e| !e.credential.matches(credential))
                    .cloned()
                    .collect();
                self.entries.insert(account, kept.into());
            }
        }
    }

    /// Forgets every credential of the account (memory only: what is stale is already
    /// unservable by its generation).
    pub fn evict(&self, account: AccountKey) {
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
    /// `generations` must be the ones the [`super::generation::GenerationHandler`] above
    /// this handler bumps.
    pub fn new(inner: H, config: &CacheConfig, generations: Arc<Generations>) -> Self {
        CachingHandler::with_keyer(inner, config, Keyer::random(), generations)
    }

    /// With the process's one keyer, shared with the throttle.
    pub fn with_keyer(
        inner: H,
        config: &CacheConfig,
        keyer: Keyer,
        generations: Arc<Generations>,
    ) -> Self {
        CachingHandler {
            inner,
            cache: CredentialCache::with_keyer(config, keyer, generations),
            shared: None,
        }
    }

    /// With `[shared]`: the store as the first tier (the keyer must be the shared key's).
    pub fn with_shared(mut self, shared: SharedCache) -> Self {
        self.shared = Some(shared);
        self
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    async fn auth(&self, request: &Request, password: &Secret) -> Outcome {
        let a = request.account();
        let account = self.cache.keyer().account(&a.user, &a.server);
        let credential = self.cache.keyer().credential(&a.user, &a.server, password);
        let slot = Slot::of(&a.user, &a.server);
        // Read before anything is asked: an answer computed across a change is not kept.
        let generation = self.cache.generation(slot);
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
        match &seen {
            Some(view) => {
                if let Some((age, backend)) = view.entry.clone().filter(|e| e.0 < self.cache.ttl) {
                    crate::metrics::cache_hit();
                    let backend = Some(Arc::from(backend)).filter(|b: &Arc<str>| !b.is_empty());
                    return from_cache(Hit { age, backend }, Status::SharedCached);
                }
                // The store, which every node's changes reach, has no yes for it: neither
                // may this process's copy answer later, during an outage.
                self.cache.forget(account, &credential);
            }
            // With `[shared]` and the store not answering, this process's entries do not
            // answer while the backend can: a change through another node cannot reach them.
            None if self.shared.is_some() => {}
            None => {
                let now = Instant::now();
                if let Some(hit) = self
                    .cache
                    .find(account, slot, &credential, now, self.cache.ttl)
                {
                    crate::metrics::cache_hit();
                    return from_cache(hit, Status::Cached);
                }
            }
        }
        crate::metrics::cache_miss();
        let outcome = self.inner.handle(request).await;
        match &outcome.status {
            Status::Yes if outcome.answer => {
                self.cache.remember(
                    account,
                    slot,
                    credential,
                    outcome.backend.as_deref(),
                    Instant::now(),
                    generation,
                );
                if let (Some(shared), Some(view)) = (&self.shared, &seen) {
                    // A failure is logged by the store; the answer stands.
                    let backend = outcome.backend.as_deref();
                    let _ = shared.remember(&account, &credential, backend, view).await;
                }
                outcome
            }
            Status::Error("unavailable", message) => {
                match self.stale(account, slot, &credential, seen.as_ref()) {
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
    /// How old a local entry may be to answer in place of one of `window`: with `[shared]`,
    /// at most [`LOCAL_FALLBACK`], since a change through another node cannot reach it.
    fn local_limit(&self, window: Duration) -> Duration {
        match self.shared {
            Some(_) => window.min(LOCAL_FALLBACK),
            None => window,
        }
    }

    /// A yes young enough to serve while the backend is unavailable: the store's, when it
    /// answered the lookup, else this process's.
    fn stale(
        &self,
        account: AccountKey,
        slot: Slot,
        credential: &CredentialKey,
        seen: Option<&View>,
    ) -> Option<Hit> {
        let window = self.cache.stale_if_error;
        if window.is_zero() {
            return None;
        }
        match seen {
            Some(view) => {
                view.entry
                    .clone()
                    .filter(|(age, _)| *age < window)
                    .map(|(age, backend)| Hit {
                        age,
                        backend: Some(Arc::from(backend)).filter(|b: &Arc<str>| !b.is_empty()),
                    })
            }
            None => {
                let max_age = self.local_limit(window);
                self.cache
                    .find(account, slot, credential, Instant::now(), max_age)
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
                let outcome = self.inner.handle(request).await;
                self.cache.evict(account);
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn generations() -> Arc<Generations> {
        Arc::new(Generations::in_memory())
    }

    /// The slot of `u@s`, the account most tests use.
    fn slot() -> Slot {
        Slot::of("u", "s")
    }

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
        let cache = CredentialCache::new(&config(60, 600), generations());
        let k = cache.keyer().clone();
        let (acct, cred) = (
            k.account("u", "s"),
            k.credential("u", "s", &Secret::new("p")),
        );
        let t0 = Instant::now();
        cache.remember(acct, slot(), cred, Some("b"), t0, cache.generation(slot()));
        assert!(cache
            .fresh(acct, slot(), &cred, t0 + Duration::from_secs(59))
            .is_some());
        assert!(cache
            .fresh(acct, slot(), &cred, t0 + Duration::from_secs(60))
            .is_none());
        assert!(cache
            .stale(acct, slot(), &cred, t0 + Duration::from_secs(599))
            .is_some());
        assert!(cache
            .stale(acct, slot(), &cred, t0 + Duration::from_secs(600))
            .is_none());
        let wrong = k.credential("u", "s", &Secret::new("q"));
        assert!(cache.fresh(acct, slot(), &wrong, t0).is_none());
        assert!(cache.stale(acct, slot(), &wrong, t0).is_none());
    }

    #[test]
    fn a_change_during_a_backend_call_or_after_a_store_kills_the_entry() {
        let g = generations();
        let cache = CredentialCache::new(&config(60, 600), Arc::clone(&g));
        let k = cache.keyer().clone();
        let (acct, cred) = (
            k.account("u", "s"),
            k.credential("u", "s", &Secret::new("p")),
        );
        // Asked before a change, answered after it: not stored.
        let before = cache.generation(slot());
        g.bump(slot());
        cache.remember(acct, slot(), cred, None, Instant::now(), before);
        assert!(cache.entries.get(&acct).is_none());
        // Stored, then the account changes (another process's bump, no eviction here):
        // neither fresh nor stale from then on.
        let now = Instant::now();
        cache.remember(acct, slot(), cred, None, now, cache.generation(slot()));
        assert!(cache.fresh(acct, slot(), &cred, now).is_some());
        g.bump(slot());
        assert!(cache.fresh(acct, slot(), &cred, now).is_none());
        assert!(cache.stale(acct, slot(), &cred, now).is_none());
    }

    /// Two bridge processes of a pool, as far as the state goes: each its own cache and
    /// keyer, one generations file.
    #[test]
    fn a_change_through_one_stack_is_seen_by_another_sharing_the_file() {
        use crate::state::generation::GenerationHandler;
        let dir = tempfile::tempdir().unwrap();
        let stack = || {
            let g = Arc::new(Generations::shared(dir.path()).unwrap());
            let (inner, cached) = setup_with(config(600, 0), Arc::clone(&g));
            (inner, GenerationHandler::new(cached, g))
        };
        let ((inner_a, a), (inner_b, b)) = (stack(), stack());
        let run = |h: &GenerationHandler<CachingHandler<Arc<Scripted>>>, line: &str| {
            let request = Request::parse(line.as_bytes()).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(h.handle(&request))
        };
        run(&b, "auth:u:s:right");
        assert_eq!(run(&b, "auth:u:s:right").status, Status::Cached);
        run(&a, "setpass:u:s:new");
        inner_b.set(Ok(false));
        let o = run(&b, "auth:u:s:right");
        assert_eq!((o.answer, &o.status), (false, &Status::No));
        assert_eq!(inner_a.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn one_account_cannot_fill_the_cache() {
        let cache = CredentialCache::new(&config(60, 0), generations());
        let k = cache.keyer().clone();
        let acct = k.account("u", "s");
        let now = Instant::now();
        for i in 0..20 {
            let cred = k.credential("u", "s", &Secret::new(format!("p{i}")));
            cache.remember(acct, slot(), cred, None, now, cache.generation(slot()));
        }
        let last = k.credential("u", "s", &Secret::new("p19"));
        let first = k.credential("u", "s", &Secret::new("p0"));
        assert!(cache.fresh(acct, slot(), &last, now).is_some());
        assert!(cache.fresh(acct, slot(), &first, now).is_none());
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
        setup_with(cfg, generations())
    }

    fn setup_with(
        cfg: CacheConfig,
        generations: Arc<Generations>,
    ) -> (Arc<Scripted>, CachingHandler<Arc<Scripted>>) {
        let inner = Arc::new(Scripted {
            answer: Mutex::new(Ok(true)),
            calls: AtomicUsize::new(0),
        });
        (
            Arc::clone(&inner),
            CachingHandler::new(inner, &cfg, generations),
        )
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
        h.cache.remember(
            acct,
            slot(),
            cred,
            Some("inner"),
            old,
            h.cache.generation(slot()),
        );
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
        h.cache.remember(
            acct,
            slot(),
            cred,
            Some("inner"),
            older,
            h.cache.generation(slot()),
        );
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
            slot(),
            cred,
            None,
            Instant::now() - Duration::from_secs(61),
            h.cache.generation(slot()),
        );
        inner.set(Err("unavailable"));
        let o = ask(&h, "auth:u:s:right");
        assert!(!o.answer);
        assert_eq!(o.status.as_str(), "unavailable");
    }
}
