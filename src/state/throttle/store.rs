//! The throttle's state behind one interface: what a store must answer and record about an
//! account, so that the in-memory store shipped here and a shared one (Redis, issue 15) are
//! two implementations of the same three operations, not two copies of the handler.
//!
//! Each operation is one atomic read-modify-write on one account: a store that keeps the
//! state elsewhere can do it in one round trip (a Lua script, a `MULTI`). Operations see
//! only keyed hashes ([`AccountKey`], [`CredentialKey`]) and the account's [`Generation`]
//! as the caller read it *before* asking the backend, so nothing a store holds is a
//! password or an unkeyed hash of one, and a fact remembered across a password change is
//! stored under an out-of-date generation and never used.
//!
//! Must not decide anything beyond the [`Verdict`]: the handler turns it into an answer.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::config::ThrottleConfig;
use crate::state::generation::Generation;
use crate::state::keyed::{AccountKey, CredentialKey};

/// What to do with an `auth` request before any backend is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ask the backend (no lockout, or a lockout this credential is trusted through).
    Ask,
    /// The account is locked for `remaining` and this credential is not trusted: `0`.
    Locked { remaining: Duration },
    /// A backend said no to this credential less than `window` ago: `0`, not counted again.
    Repeated,
}

/// A store could not be read or written. The handler then falls back to the in-memory
/// store for that request: shared state never decides alone.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("throttle store unavailable: {0}")]
    Unavailable(String),
    #[error("throttle store did not answer within its timeout")]
    Timeout,
}

/// The throttle's rules, from `[throttle]`: the same for every store.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    pub max_lockout: Duration,
    pub trusted_for: Duration,
    pub remembered_failures: usize,
}

impl Policy {
    pub fn from_config(config: &ThrottleConfig) -> Policy {
        Policy {
            max_failures: config.max_failures.max(1),
            window: config.window,
            lockout: config.lockout,
            max_lockout: config.max_lockout.max(config.lockout),
            trusted_for: config.trusted_for,
            remembered_failures: config.remembered_failures.max(1),
        }
    }

    /// The length of the account's lockout number `earlier + 1`: `lockout`, doubled for
    /// each earlier one, never above `max_lockout`.
    pub fn lockout_after(&self, earlier: u32) -> Duration {
        let factor = 1u32 << earlier.min(31);
        self.lockout.saturating_mul(factor).min(self.max_lockout)
    }
}

/// The per-account state of the throttle, wherever it lives.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Whether this credential may be sent to a backend now.
    async fn check(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Result<Verdict, StoreError>;

    /// A backend said no to this credential. Returns the length of the lockout this failure
    /// started, if it started one.
    async fn record_failure(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Result<Option<Duration>, StoreError>;

    /// A backend (or the cache, for it) said yes: the failures and the doubling are reset
    /// and the credential is trusted for `trusted_for`.
    async fn record_success(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        generation: Generation,
        now: Instant,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_double_up_to_the_cap() {
        let p = Policy::from_config(&ThrottleConfig::default());
        let minutes = |n| p.lockout_after(n).as_secs() / 60;
        assert_eq!(
            (minutes(0), minutes(1), minutes(2), minutes(3)),
            (5, 10, 20, 40)
        );
        assert_eq!(minutes(4), 60);
        assert_eq!(minutes(u32::MAX), 60);
    }
}
