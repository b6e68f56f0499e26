//! The decoy ([`Decoy`]): a hash of a random password, verified against when the user does
//! not exist, so that an unknown user costs what a wrong password costs; made at the file's
//! typical cost, once per cost, by a task of its own (`DecoySlot`).
//!
//! It must not read the file (it is handed the cost), nor be made inside a request: that
//! request's deadline would throw the work away.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, Params};

use super::hash::{hash_password, HashCost};
use super::pool::blocking;
use crate::backend::BackendError;
use crate::secret::Secret;

/// A hash of a random password, verified against when the user does not exist, so an
/// unknown user costs the same as a wrong password. It is made with the cost of the file's
/// own hashes (the most common one): with the defaults instead, an unknown user would cost
/// more or less than a known one in a file of cheaper or dearer hashes, and tell them apart.
#[derive(Debug)]
pub struct Decoy {
    hash: String,
}

impl Decoy {
    /// Hashes a random password at `cost` (CPU-bound: on the blocking pool).
    pub fn new(cost: Option<HashCost>) -> Result<Decoy, BackendError> {
        if let Some(Err(reason)) = cost.as_ref().map(HashCost::within_limits) {
            return Err(BackendError::Internal(format!("decoy hash: {reason}")));
        }
        let random = SaltString::generate(&mut OsRng);
        let failed = |e: &dyn std::fmt::Display| BackendError::Internal(format!("decoy hash: {e}"));
        let hash = match &cost {
            None => hash_password(&Secret::new(random.as_str()))?,
            Some(HashCost::Bcrypt { cost }) => {
                bcrypt::hash(random.as_str(), *cost).map_err(|e| failed(&e))?
            }
            Some(HashCost::Argon2 {
                algorithm,
                version,
                m_cost,
                t_cost,
                p_cost,
                output_len,
            }) => {
                let params =
                    Params::new(*m_cost, *t_cost, *p_cost, *output_len).map_err(|e| failed(&e))?;
                let salt = SaltString::generate(&mut OsRng);
                Argon2::new(*algorithm, *version, params)
                    .hash_password(random.as_str().as_bytes(), &salt)
                    .map_err(|e| failed(&e))?
                    .to_string()
            }
        };
        Ok(Decoy { hash })
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// The decoy for one typical cost, made once by a task of its own on the blocking pool,
/// started when the file is read: not inside the request that needs it first. That
/// request's future is dropped at its deadline, and a decoy made there would be thrown away
/// with it, then made again by the next request, and the next: with a dear enough cost no
/// request would ever be answered. A request that finds it not ready waits (under its
/// deadline); the work goes on regardless, and the next request finds it made.
pub(super) struct DecoySlot {
    /// The cost it is made for (the file's typical one), whatever it had to fall back to.
    pub(super) cost: Option<HashCost>,
    made: tokio::sync::watch::Receiver<Option<Result<Arc<Decoy>, String>>>,
}

impl DecoySlot {
    /// Starts making the decoy for `cost`. Needs a Tokio runtime (every caller is a request).
    pub(super) fn start(cost: Option<HashCost>) -> DecoySlot {
        let (tx, made) = tokio::sync::watch::channel(None);
        let wanted = cost.clone();
        tokio::spawn(async move {
            // A cost the file's hashes use but that cannot be hashed with again (an odd
            // argon2 parameter): the default decoy, rather than no backend.
            let decoy = blocking(move || {
                Decoy::new(wanted).or_else(|e| {
                    tracing::warn!(error = %e, "users file: the decoy hash falls back to the default parameters");
                    Decoy::new(None)
                })
            })
            .await;
            // No receiver left (the backend was replaced) is fine.
            let _ = tx.send(Some(decoy.map(Arc::new).map_err(|e| e.to_string())));
        });
        DecoySlot { cost, made }
    }

    /// The decoy, once made.
    pub(super) async fn get(&self) -> Result<Arc<Decoy>, BackendError> {
        let mut made = self.made.clone();
        let made = made
            .wait_for(Option::is_some)
            .await
            .map_err(|_| BackendError::Internal("decoy hash: its worker ended".into()))?;
        match made.as_ref() {
            Some(Ok(decoy)) => Ok(Arc::clone(decoy)),
            Some(Err(e)) => Err(BackendError::Internal(format!("decoy hash: {e}"))),
            None => Err(BackendError::Internal("decoy hash: not made".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use argon2::password_hash::PasswordHash;
    use argon2::{Algorithm, Version};

    use super::*;
    use crate::backend::file::format::UsersFile;

    #[test]
    fn the_decoy_costs_what_the_files_hashes_cost() {
        let argon = |m, t, p| {
            let params = Params::new(m, t, p, None).unwrap();
            let salt = SaltString::generate(&mut OsRng);
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string()
        };
        let params_of = |hash: &str| Params::try_from(&PasswordHash::new(hash).unwrap()).unwrap();
        // Mostly cheap hashes (and one dearer, one bcrypt): the decoy is a cheap one.
        let text = format!(
            "a@h:{}\nb@h:{}\nc@h:{}\nd@h:{}\n",
            argon(256, 3, 1),
            argon(64, 1, 1),
            bcrypt::hash("pw", 4).unwrap(),
            argon(64, 1, 1),
        );
        let (users, _) = UsersFile::parse(&text);
        let decoy = Decoy::new(users.typical_cost()).unwrap();
        assert!(
            decoy.hash().starts_with("$argon2id$v=19$"),
            "{}",
            decoy.hash()
        );
        assert_eq!(
            params_of(decoy.hash()),
            params_of(users.hash_of("b", "h").unwrap())
        );
        assert_eq!(HashCost::of(decoy.hash()), users.typical_cost());
        // A tie: the first seen.
        let (users, _) = UsersFile::parse(format!(
            "a@h:{}\nb@h:{}\n",
            argon(128, 2, 1),
            argon(64, 1, 1)
        ));
        assert_eq!(
            params_of(Decoy::new(users.typical_cost()).unwrap().hash()),
            params_of(users.hash_of("a", "h").unwrap())
        );
        // An htpasswd-style file: a bcrypt decoy of the same cost.
        let (users, _) = UsersFile::parse(format!("a@h:{}\n", bcrypt::hash("pw", 5).unwrap()));
        let decoy = Decoy::new(users.typical_cost()).unwrap();
        assert_eq!(
            HashCost::of(decoy.hash()),
            Some(HashCost::Bcrypt { cost: 5 })
        );
        // No usable hash: what new entries get.
        let (users, _) = UsersFile::parse("# empty\n");
        let decoy = Decoy::new(users.typical_cost()).unwrap();
        let new_entry = hash_password(&Secret::new("pw")).unwrap();
        assert_eq!(HashCost::of(decoy.hash()), HashCost::of(&new_entry));
    }

    #[tokio::test]
    async fn the_decoy_is_made_once_even_when_the_first_wait_for_it_is_given_up() {
        // Dear enough to outlast the first waiter's (tiny) deadline.
        let cost = Some(HashCost::Argon2 {
            algorithm: Algorithm::Argon2id,
            version: Version::V0x13,
            m_cost: 32_768,
            t_cost: 4,
            p_cost: 1,
            output_len: Some(32),
        });
        let slot = DecoySlot::start(cost.clone());
        let early = tokio::time::timeout(Duration::from_millis(1), slot.get()).await;
        assert!(early.is_err(), "made in under a millisecond?");
        // The work went on without its first waiter: later ones get that one decoy.
        let first = slot.get().await.unwrap();
        let again = slot.get().await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(HashCost::of(first.hash()), cost);
    }

    #[tokio::test]
    async fn a_cost_that_cannot_be_hashed_again_falls_back_to_the_default_decoy() {
        // bcrypt cost 3 parses, but the bcrypt crate will not make such a hash (nor do the
        // limits let it be the file's typical cost any more): a decoy for it is the default
        // one, not an error for every request.
        let slot = DecoySlot::start(Some(HashCost::Bcrypt { cost: 3 }));
        let decoy = slot.get().await.unwrap();
        let new_entry = hash_password(&Secret::new("pw")).unwrap();
        assert_eq!(HashCost::of(decoy.hash()), HashCost::of(&new_entry));
    }
}
