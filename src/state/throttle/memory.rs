//! The in-memory [`ThrottleStore`]: one bounded LRU map (moka) from an account's keyed hash
//! to its failures, lockout and remembered credentials, each behind its own mutex so that an
//! operation is one atomic read-modify-write on one account.
//!
//! The store the bridge ships, and the fallback of a shared one: it never fails.
//!
//! Memory is bounded twice: `max_accounts` accounts (least recently used go first), and per
//! account at most `remembered_failures` wrong and [`TRUSTED_PER_ACCOUNT`] trusted
//! credentials, 56 bytes each ([`MemoryStore::bytes_per_account`] gives the bound the README
//! quotes). Must not hold anything but keyed hashes, generations and times.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::store::{Policy, StoreError, ThrottleStore, Verdict};
use crate::state::generation::Generation;
use crate::state::keyed::{AccountKey, CredentialKey};

/// Most credentials trusted per account: a user's devices and app passwords, but one user
/// must not be able to grow their entry without bound.
pub const TRUSTED_PER_ACCOUNT: usize = 8;

/// moka's own bookkeeping per entry (its copy of the key, timer and queue nodes), roughly:
/// added to [`MemoryStore::bytes_per_account`] where a whole-process figure is shown.
pub const MAP_OVERHEAD: usize = 200;

/// A credential a backend answered, when, and under which generation of the account.
#[derive(Clone, Copy)]
struct Remembered {
    credential: CredentialKey,
    generation: Generation,
    at: Instant,
}

impl Remembered {
    /// The same credential, under the account's current generation, younger than `max_age`.
    fn holds(
        &self,
        credential: &CredentialKey,
        now_gen: Generation,
        now: Instant,
        max_age: Duration,
    ) -> bool {
        self.credential.matches(credential)
            && self.generation == now_gen
            && now.saturating_duration_since(self.at) < max_age
    }
}

/// Everything the throttle knows about one account.
#[derive(Default)]
struct Account {
    /// Distinct wrong passwords, oldest first, at most `remembered_failures`.
    wrong: VecDeque<Remembered>,
    /// Credentials a backend said yes to, at most [`TRUSTED_PER_ACCOUNT`].
    trusted: Vec<Remembered>,
    /// Failures counted in the window that started at `window_start`.
    failures: u32,
    window_start: Option<Instant>,
    locked_until: Option<Instant>,
    /// Lockouts since the last successful login: each doubles the next.
    lockouts: u32,
}

impl Account {
    fn check(
        &self,
        policy: &Policy,
        credential: &CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Verdict {
        if let Some(until) = self.locked_until.filter(|until| *until > now) {
            let trusted = self
                .trusted
                .iter()
                .any(|r| r.holds(credential, generation, now, policy.trusted_for));
            if !trusted {
                return Verdict::Locked {
                    remaining: until - now,
                };
            }
        }
        let repeated = self
            .wrong
            .iter()
            .any(|r| r.holds(credential, generation, now, policy.window));
        if repeated {
            Verdict::Repeated
        } else {
            Verdict::Ask
        }
    }

    fn record_failure(
        &mut self,
        policy: &Policy,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Option<Duration> {
        // A credential a backend now refuses is trusted no more (changed at the IdP).
        self.trusted.retain(|r| !r.credential.matches(&credential));
        // Two requests with one wrong password in flight at once: the second counts not.
        if self
            .wrong
            .iter()
            .any(|r| r.holds(&credential, generation, now, policy.window))
        {
            return None;
        }
        self.wrong.retain(|r| {
            !r.credential.matches(&credential)
                && r.generation == generation
                && now.saturating_duration_since(r.at) < policy.window
        });
        if self.wrong.len() >= policy.remembered_failures {
            self.wrong.pop_front();
        }
        self.wrong.push_back(Remembered {
            credential,
            generation,
            at: now,
        });
        // The window starts at the first failure counted in it (a fixed window, so that the
        // state is two numbers, not a list of times).
        let expired = self.window_start.map_or(true, |start| {
            now.saturating_duration_since(start) >= policy.window
        });
        if expired {
            self.window_start = Some(now);
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures < policy.max_failures {
            return None;
        }
        let length = policy.lockout_after(self.lockouts);
        self.lockouts = self.lockouts.saturating_add(1);
        self.locked_until = Some(now + length);
        self.failures = 0;
        self.window_start = None;
        Some(length)
    }

    /// Resets the count and the doubling. A lockout in force stays: the owner's own device
    /// logging in must not hand a guesser a fresh budget at once.
    fn record_success(
        &mut self,
        policy: &Policy,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) {
        self.failures = 0;
        self.window_start = None;
        self.lockouts = 0;
        self.wrong.retain(|r| !r.credential.matches(&credential));
        self.trusted.retain(|r| {
            !r.credential.matches(&credential)
                && r.generation == generation
                && now.saturating_duration_since(r.at) < policy.trusted_for
        });
        if self.trusted.len() >= TRUSTED_PER_ACCOUNT {
            self.trusted.remove(0);
        }
        self.trusted.push(Remembered {
            credential,
            generation,
            at: now,
        });
    }
}

/// The throttle's state in this process's memory.
pub struct MemoryStore {
    policy: Policy,
    accounts: moka::sync::Cache<AccountKey, Arc<Mutex<Account>>>,
}

impl MemoryStore {
    pub fn new(policy: Policy, max_accounts: u64) -> MemoryStore {
        // An account untouched for longer than anything it remembers holds nothing of use.
        let idle = policy
            .trusted_for
            .max(policy.window)
            .max(policy.max_lockout);
        let accounts = moka::sync::Cache::builder()
            .max_capacity(max_accounts.max(1))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_idle(idle.max(Duration::from_millis(1)))
            .build();
        MemoryStore { policy, accounts }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The most one account's entry holds, in bytes, map overhead aside (the README quotes
    /// it with the default `remembered_failures`).
    /// The wrong list grows by doubling, so its buffer is rounded up to a power of two.
    pub fn bytes_per_account(remembered_failures: usize) -> usize {
        let remembered = std::mem::size_of::<Remembered>();
        std::mem::size_of::<AccountKey>()
            + std::mem::size_of::<Mutex<Account>>()
            + (remembered_failures.next_power_of_two() + TRUSTED_PER_ACCOUNT) * remembered
    }

    /// Accounts held now (after moka's pending maintenance).
    pub fn accounts(&self) -> u64 {
        self.accounts.run_pending_tasks();
        self.accounts.entry_count()
    }

    fn with<T>(&self, account: AccountKey, f: impl FnOnce(&mut Account) -> T) -> T {
        let entry = self.accounts.get_with(account, Default::default);
        let mut state = entry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    pub fn check_now(
        &self,
        account: AccountKey,
        credential: &CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Verdict {
        // A lookup creates nothing: an account never refused costs no memory.
        match self.accounts.get(&account) {
            Some(entry) => entry.lock().unwrap_or_else(|p| p.into_inner()).check(
                &self.policy,
                credential,
                generation,
                now,
            ),
            None => Verdict::Ask,
        }
    }

    pub fn failure_now(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Option<Duration> {
        self.with(account, |a| {
            a.record_failure(&self.policy, credential, generation, now)
        })
    }

    pub fn success_now(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) {
        self.with(account, |a| {
            a.record_success(&self.policy, credential, generation, now)
        })
    }
}

#[async_trait]
impl ThrottleStore for MemoryStore {
    async fn check(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Result<Verdict, StoreError> {
        Ok(self.check_now(account, &credential, generation, now))
    }

    async fn record_failure(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Result<Option<Duration>, StoreError> {
        Ok(self.failure_now(account, credential, generation, now))
    }

    async fn record_success(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.success_now(account, credential, generation, now);
        Ok(())
    }
}
