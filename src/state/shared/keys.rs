//! The names of everything the bridge keeps in the shared store, in one place so that the
//! README's table and the code cannot drift apart.
//!
//! Every name is `{key_prefix}{kind}:{hex}` where `hex` is a keyed hash
//! ([`crate::state::keyed`]) under the shared key: no user name, no password and no unkeyed
//! hash of either ever reaches the store. Must not hash anything itself.
//!
//! | key | type | holds | TTL |
//! |-----|------|-------|-----|
//! | `cache:{account}` | hash | field `{credential}` → `{unix_ms}\|{backend}` | cache lifetime |
//! | `gen:{account}` | string | counter, `INCR`ed by every change of the account | longest-lived fact + 1 min, renewed by every write under it |
//! | `throttle:{account}` | hash | the throttle's state of the account (see `throttle.rs`) | longest throttle period + 1 min |
//! | `probe:{pid}` | string | `check`'s round-trip probe | 10 s |

use crate::state::keyed::AccountKey;

/// Builds key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The account's positive-cache hash.
    pub fn cache(&self, account: &AccountKey) -> String {
        format!("{}cache:{}", self.prefix, account.hex())
    }

    /// The account's generation counter.
    pub fn generation(&self, account: &AccountKey) -> String {
        format!("{}gen:{}", self.prefix, account.hex())
    }

    /// The account's throttle state.
    pub fn throttle(&self, account: &AccountKey) -> String {
        format!("{}throttle:{}", self.prefix, account.hex())
    }

    /// `check`'s probe key: per process, so two checks never meet.
    pub fn probe(&self) -> String {
        format!("{}probe:{}", self.prefix, std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::keyed::Keyer;

    #[test]
    fn names_carry_the_prefix_and_only_hex() {
        let k = Keys::new("p:");
        let account = Keyer::random().account("romeo", "example.net");
        let name = k.cache(&account);
        assert!(name.starts_with("p:cache:"));
        assert!(!name.contains("romeo"));
        assert!(name["p:cache:".len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit()));
        assert_ne!(k.generation(&account), name);
    }
}
