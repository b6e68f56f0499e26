//! The throttle's state in the shared store: the second [`ThrottleStore`], so that failures
//! spread over every node of a service count against one budget and a lockout holds on all.
//!
//! Per account one hash `throttle:{account}`:
//!
//! | field | value |
//! |-------|-------|
//! | `n`, `ws` | failures counted in the window, and the window's start (unix ms) |
//! | `lu`, `lk` | locked until (unix ms); lockouts since the last login (the doubling) |
//! | `w:{credential}` | `{generation}\|{unix ms}`: a wrong password, for `window` |
//! | `t:{credential}` | `{generation}\|{unix ms}`: a trusted password, for `trusted_for` |
//!
//! Each operation is one Lua script, so a read-modify-write is atomic across nodes. Times
//! are the store's clock (`TIME`), so nodes whose clocks disagree still share one window.
//! Remembered credentials are tagged with the account's shared generation `gen:{account}`
//! ([`super::invalidation`]) read inside the script, and used only while it is current: a
//! change on any node outdates them. (A login whose backend answer straddles a change on
//! another node is tagged with the new generation; such a fact only spares a lockout or
//! answers a wrong password without asking, never answers yes.) The hash expires after the
//! longest throttle period; the per-account lists are bounded as in memory.
//!
//! The `now` and `generation` the trait passes are this process's and are not used: the
//! store's clock and generation are the ones every node shares. Must not decide anything
//! the in-memory store would not.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Script;

use super::{SharedError, SharedStore};
use crate::state::generation::Generation;
use crate::state::keyed::{AccountKey, CredentialKey};
use crate::state::throttle::{Policy, StoreError, ThrottleStore, Verdict, TRUSTED_PER_ACCOUNT};

/// What every script starts with: the store's time in ms, the account's generation, and
/// whether a remembered `{generation}|{ms}` is current and younger than a bound.
const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gen = redis.call('GET', KEYS[2]) or '0'
local function at_of(entry)
  if not entry then return nil end
  local sep = string.find(entry, '|', 1, true)
  if not sep or string.sub(entry, 1, sep - 1) ~= gen then return nil end
  return tonumber(string.sub(entry, sep + 1))
end
local function holds(entry, max_age)
  local at = at_of(entry)
  return at ~= nil and now - at < max_age
end
-- Drops the fields with this prefix that no longer hold (and `except`); returns how many
-- are kept and the oldest of them.
local function prune(prefix, max_age, except)
  local all = redis.call('HGETALL', KEYS[1])
  local kept, oldest, oldest_at = 0, nil, nil
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == prefix then
      if f == except or not holds(all[i + 1], max_age) then
        redis.call('HDEL', KEYS[1], f)
      else
        kept = kept + 1
        local at = at_of(all[i + 1])
        if oldest_at == nil or at < oldest_at then oldest, oldest_at = f, at end
      end
    end
  end
  return kept, oldest
end
local function keep(ttl_ms, gen_ttl_ms)
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  if gen ~= '0' then redis.call('PEXPIRE', KEYS[2], gen_ttl_ms) end
end
";

/// ARGV: credential, trusted_for ms, window ms → {0} ask, {1, remaining ms} locked, {2}
/// repeated. Reads only.
const CHECK: &str = r"
local v = redis.call('HMGET', KEYS[1], 'lu', 't:' .. ARGV[1], 'w:' .. ARGV[1])
local locked_until = tonumber(v[1])
if locked_until and locked_until > now and not holds(v[2], tonumber(ARGV[2])) then
  return {1, locked_until - now}
end
if holds(v[3], tonumber(ARGV[3])) then return {2, 0} end
return {0, 0}
";

/// ARGV: credential, window, remembered_failures, max_failures, lockout, max_lockout,
/// ttl, generation ttl (ms) → the length of the lockout this failure started, or 0.
const FAILURE: &str = r"
local wf = 'w:' .. ARGV[1]
local window = tonumber(ARGV[2])
redis.call('HDEL', KEYS[1], 't:' .. ARGV[1])
if holds(redis.call('HGET', KEYS[1], wf), window) then return 0 end
local kept, oldest = prune('w:', window, wf)
if kept >= tonumber(ARGV[3]) and oldest then redis.call('HDEL', KEYS[1], oldest) end
redis.call('HSET', KEYS[1], wf, gen .. '|' .. now)
local ws = tonumber(redis.call('HGET', KEYS[1], 'ws'))
local n = tonumber(redis.call('HGET', KEYS[1], 'n')) or 0
if ws == nil or now - ws >= window then ws = now; n = 0 end
n = n + 1
local started = 0
if n < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'n', n, 'ws', ws)
else
  local lk = tonumber(redis.call('HGET', KEYS[1], 'lk')) or 0
  started = math.min(tonumber(ARGV[5]) * 2 ^ math.min(lk, 31), tonumber(ARGV[6]))
  redis.call('HSET', KEYS[1], 'lu', now + started, 'lk', lk + 1, 'n', 0)
  redis.call('HDEL', KEYS[1], 'ws')
end
keep(ARGV[7], ARGV[8])
return started
";

/// ARGV: credential, trusted_for, ttl, generation ttl, trusted per account. A lockout in
/// force stays (as in memory).
const SUCCESS: &str = r"
local tf = 't:' .. ARGV[1]
redis.call('HSET', KEYS[1], 'n', 0, 'lk', 0)
redis.call('HDEL', KEYS[1], 'ws', 'w:' .. ARGV[1])
local kept, oldest = prune('t:', tonumber(ARGV[2]), tf)
if kept >= tonumber(ARGV[5]) and oldest then redis.call('HDEL', KEYS[1], oldest) end
redis.call('HSET', KEYS[1], tf, gen .. '|' .. now)
keep(ARGV[3], ARGV[4])
return 0
";

static CHECK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[PRELUDE, CHECK].concat()));
static FAILURE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&[PRELUDE, FAILURE].concat()));
static SUCCESS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&[PRELUDE, SUCCESS].concat()));

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<SharedError> for StoreError {
    fn from(e: SharedError) -> Self {
        match e {
            SharedError::Timeout => StoreError::Timeout,
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// The throttle's state in Redis/Valkey.
pub struct SharedThrottleStore {
    store: Arc<SharedStore>,
    policy: Policy,
}

impl SharedThrottleStore {
    pub fn new(store: Arc<SharedStore>, policy: Policy) -> SharedThrottleStore {
        SharedThrottleStore { store, policy }
    }

    /// How long an untouched account's hash lives: longer than anything in it matters.
    fn ttl(&self) -> u64 {
        let p = &self.policy;
        ms(p.trusted_for.max(p.window).max(p.max_lockout) + Duration::from_secs(60))
    }

    fn keys(&self, account: &AccountKey) -> (String, String) {
        let keys = self.store.keys();
        (keys.throttle(account), keys.generation(account))
    }
}

#[async_trait]
impl ThrottleStore for SharedThrottleStore {
    async fn check(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        _generation: Generation,
        _now: Instant,
    ) -> Result<Verdict, StoreError> {
        let (key, gen_key) = self.keys(&account);
        let (trusted_for, window) = (ms(self.policy.trusted_for), ms(self.policy.window));
        let (code, remaining): (i64, i64) = self
            .store
            .run("throttle_check", |mut c| async move {
                CHECK_SCRIPT
                    .key(key)
                    .key(gen_key)
                    .arg(credential.hex())
                    .arg(trusted_for)
                    .arg(window)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match code {
            1 => Verdict::Locked {
                remaining: Duration::from_millis(remaining.max(1).unsigned_abs()),
            },
            2 => Verdict::Repeated,
            _ => Verdict::Ask,
        })
    }

    async fn record_failure(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        _generation: Generation,
        _now: Instant,
    ) -> Result<Option<Duration>, StoreError> {
        let (key, gen_key) = self.keys(&account);
        let p = &self.policy;
        let args = [
            ms(p.window),
            p.remembered_failures as u64,
            u64::from(p.max_failures),
            ms(p.lockout),
            ms(p.max_lockout),
            self.ttl(),
            ms(self.store.generation_ttl()),
        ];
        let started: i64 = self
            .store
            .run("throttle_failure", |mut c| async move {
                let mut invocation = FAILURE_SCRIPT.key(key);
                invocation.key(gen_key).arg(credential.hex());
                for a in args {
                    invocation.arg(a);
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok((started > 0).then(|| Duration::from_millis(started.unsigned_abs())))
    }

    async fn record_success(
        &self,
        account: AccountKey,
        credential: CredentialKey,
        _generation: Generation,
        _now: Instant,
    ) -> Result<(), StoreError> {
        let (key, gen_key) = self.keys(&account);
        let args = [
            ms(self.policy.trusted_for),
            self.ttl(),
            ms(self.store.generation_ttl()),
            TRUSTED_PER_ACCOUNT as u64,
        ];
        self.store
            .run("throttle_success", |mut c| async move {
                let mut invocation = SUCCESS_SCRIPT.key(key);
                invocation.key(gen_key).arg(credential.hex());
                for a in args {
                    invocation.arg(a);
                }
                invocation.invoke_async::<i64>(&mut c).await
            })
            .await?;
        Ok(())
    }
}
