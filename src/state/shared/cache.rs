//! The shared tier of the positive cache: what one node learnt (this credential was
//! answered yes, when, by which backend) made visible to every node, and the invalidation
//! of an account that every node sees on its next request.
//!
//! Per account a hash `cache:{account}` (field `{credential}` → `{unix_ms}|{backend}`,
//! expiring after the cache lifetime) and a counter `gen:{account}`. A lookup reads both in
//! one round trip; a store is a Lua script that writes only if the counter is still the one
//! the lookup saw, so an answer computed across a `setpass` on another node is never
//! shared. A change (`setpass`, `removeuser`, `removeuser3`, `tryregister`) bumps the
//! counter and deletes the hash, atomically.
//!
//! Must not decide: a failure is returned, and the caller answers from local state.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{SharedError, SharedStore};
use crate::state::keyed::{AccountKey, CredentialKey};

/// Most credentials kept per account in the store (as in the local cache): a full hash is
/// dropped before the next one is added, so one user cannot grow it.
const PER_ACCOUNT: usize = 8;

/// Writes the entry only if the account's generation is still the one the lookup saw, and
/// keeps that generation alive at least as long as the entry.
const REMEMBER: &str = r"
local gen = redis.call('GET', KEYS[1]) or '0'
if gen ~= ARGV[1] then return 0 end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if gen ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
return 1
";

/// What the store holds for one credential, and the account's generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub generation: String,
    /// Age and backend of a stored yes for this credential.
    pub entry: Option<(Duration, String)>,
}

/// The shared positive cache.
pub struct SharedCache {
    store: Arc<SharedStore>,
    /// How long entries live in the store (the local cache's lifetime).
    lifetime: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `{unix_ms}|{backend}` → age and backend. An entry from more than a second in the future
/// (another node's clock is ahead) is not trusted to be fresh.
fn parse_entry(value: &str, now: u64) -> Option<(Duration, String)> {
    let (stored, backend) = value.split_once('|')?;
    let stored: u64 = stored.parse().ok()?;
    if stored > now + 1000 {
        return None;
    }
    Some((
        Duration::from_millis(now.saturating_sub(stored)),
        backend.to_owned(),
    ))
}

impl SharedCache {
    pub fn new(store: Arc<SharedStore>, lifetime: Duration) -> SharedCache {
        SharedCache {
            store,
            lifetime: lifetime.max(Duration::from_millis(1)),
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The account's generation and this credential's entry, in one round trip.
    pub async fn lookup(
        &self,
        account: &AccountKey,
        credential: &CredentialKey,
    ) -> Result<View, SharedError> {
        let keys = self.store.keys();
        let (gen_key, cache_key) = (keys.generation(account), keys.cache(account));
        let field = credential.hex();
        let (generation, value): (Option<String>, Option<String>) = self
            .store
            .run("lookup", |mut c| async move {
                ::redis::pipe()
                    .cmd("GET")
                    .arg(&gen_key)
                    .cmd("HGET")
                    .arg(&cache_key)
                    .arg(&field)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(View {
            generation: generation.unwrap_or_else(|| "0".to_owned()),
            entry: value.and_then(|v| parse_entry(&v, now_ms())),
        })
    }

    /// Shares a yes, unless the account changed since `seen` was looked up.
    pub async fn remember(
        &self,
        account: &AccountKey,
        credential: &CredentialKey,
        backend: Option<&str>,
        seen: &View,
    ) -> Result<bool, SharedError> {
        let keys = self.store.keys();
        let (gen_key, cache_key) = (keys.generation(account), keys.cache(account));
        let field = credential.hex();
        let value = format!("{}|{}", now_ms(), backend.unwrap_or(""));
        let generation = seen.generation.clone();
        let lifetime = self.lifetime.as_millis() as u64;
        let gen_ttl = self.store.generation_ttl().as_millis() as u64;
        self.store
            .run("remember", |mut c| async move {
                ::redis::Script::new(REMEMBER)
                    .key(gen_key)
                    .key(cache_key)
                    .arg(generation)
                    .arg(field)
                    .arg(value)
                    .arg(lifetime)
                    .arg(PER_ACCOUNT)
                    .arg(gen_ttl)
                    .invoke_async::<i64>(&mut c)
                    .await
                    .map(|stored| stored == 1)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_future_ones_are_not_fresh() {
        assert_eq!(
            parse_entry("1000|users", 1500),
            Some((Duration::from_millis(500), "users".to_owned()))
        );
        assert_eq!(parse_entry("1000|", 1000).unwrap().1, "");
        assert_eq!(parse_entry("5000|b", 1000), None);
        assert_eq!(parse_entry("x|b", 1000), None);
        assert_eq!(parse_entry("1000", 1000), None);
    }
}
