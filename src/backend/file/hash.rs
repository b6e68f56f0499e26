//! Password hashes: making one for a new entry ([`hash_password`], argon2id), verifying one
//! read from the file ([`verify_password`], argon2 or htpasswd-style bcrypt), and the limits
//! on what a stored hash may cost ([`HashCost`], [`ARGON2_MAX_M_KIB`] and its siblings).
//!
//! Synchronous and CPU-bound: callers run it on the blocking pool, under the hashing limit.
//! It must not know the file's format or where a hash came from, and puts no password in an
//! error.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::backend::BackendError;
use crate::secret::Secret;

/// Hashes a password the way every new users-file entry is hashed: argon2id with the
/// crate's defaults (19 MiB, 2 passes, 1 lane, the OWASP recommendation) and a random salt.
pub fn hash_password(password: &Secret) -> Result<String, BackendError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| BackendError::Internal(format!("hashing failed: {e}")))
}

/// The most password bytes bcrypt reads; the rest of a longer password is ignored by it.
pub const BCRYPT_MAX_PASSWORD: usize = 72;

/// htpasswd-style bcrypt, the one non-PHC format accepted.
fn is_bcrypt(hash: &str) -> bool {
    ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p))
}

/// Limits on the cost a stored hash may ask for. Its parameters are the file's, not ours:
/// verifying runs inside the request deadline (4 s by default), and the decoy is made at the
/// file's most common cost, so one line asking for 3 000 000 argon2 passes or bcrypt cost 31
/// would make every request time out. Measured with this crate on 2 shared cores: argon2id
/// 256 MiB × 4 passes 1.2 s, 64 MiB × 16 passes 0.9 s; bcrypt cost 13 0.8 s (14: 2.1 s).
///
/// They take in every setting found in the wild that fits a login path: OWASP's argon2id
/// ones (19 MiB × 2 … 46 MiB × 1), RFC 9106's second recommendation (64 MiB × 3, 4 lanes),
/// libsodium's "moderate" (256 MiB × 3), PHP's default (64 MiB × 4), Django's (100 MiB × 2,
/// 8 lanes), Keycloak's (7 MiB × 5), and htpasswd/PHP/Laravel bcrypt (cost 5 to 12). Not
/// RFC 9106's first recommendation (2 GiB × 1): 2 GiB per login per process of the pool.
pub const ARGON2_MAX_M_KIB: u32 = 262_144;
pub const ARGON2_MAX_T: u32 = 16;
pub const ARGON2_MAX_P: u32 = 8;
/// m × t, the memory passes one verification makes: its time is proportional to it (the
/// argon2 crate runs the lanes one after another, so p adds none), and 256 MiB × 16 passes,
/// each within its own limit, took 6.3 s.
pub const ARGON2_MAX_WORK_KIB: u64 = 1_048_576;
/// bcrypt costs accepted (the crate hashes nothing below 4).
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=13;

/// Why a stored hash is refused, for the log and `check` (never the hash itself).
const OVER_LIMITS: &str = "hash parameters outside the limits (argon2: m <= 262144 KiB, \
                           t <= 16, p <= 8, m*t <= 1048576; bcrypt: cost 4 to 13): no password \
                           is accepted for this account until it is set again";

/// `Err` with the reason when `hash` asks for more than the limits. A hash whose cost cannot
/// be read passes: it cannot be verified either, and verifying says so.
pub(super) fn within_limits(hash: &str) -> Result<(), &'static str> {
    HashCost::of(hash).map_or(Ok(()), |cost| cost.within_limits())
}

/// Checks a password against a stored hash. `Ok(false)` on mismatch; an error only when the
/// stored hash itself is unusable, or over the limits (see [`ARGON2_MAX_M_KIB`]).
pub fn verify_password(hash: &str, password: &Secret) -> Result<bool, BackendError> {
    // The users file refuses such lines already; this keeps any other caller bounded too.
    within_limits(hash).map_err(|reason| BackendError::Internal(reason.into()))?;
    if is_bcrypt(hash) {
        // bcrypt reads only the first 72 bytes of a password: any longer one that shares
        // them would match. A password over the limit never verifies; the hash is still
        // computed, so that it costs what a wrong password costs. (The crate's
        // `non_truncating_verify` would also refuse a password of exactly 72 bytes, which
        // bcrypt does hash whole, and lock such an htpasswd user out.)
        let matched = bcrypt::verify(password.expose(), hash)
            .map_err(|e| BackendError::Internal(format!("unusable bcrypt hash: {e}")))?;
        return Ok(matched && password.expose().len() <= BCRYPT_MAX_PASSWORD);
    }
    let parsed = PasswordHash::new(hash)
        .map_err(|e| BackendError::Internal(format!("unusable password hash: {e}")))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(BackendError::Internal(format!(
            "unsupported hash scheme {}",
            parsed.algorithm
        )));
    }
    // The verifier takes the algorithm and cost parameters from the hash itself and compares
    // in constant time.
    Ok(Argon2::default()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok())
}

/// What verifying a password against a stored hash costs: its scheme and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashCost {
    Argon2 {
        algorithm: Algorithm,
        version: Version,
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
        output_len: Option<usize>,
    },
    Bcrypt {
        cost: u32,
    },
}

impl HashCost {
    /// `Err` with the reason when this is more than [`ARGON2_MAX_M_KIB`] and its siblings
    /// allow.
    pub fn within_limits(&self) -> Result<(), &'static str> {
        let fits = match *self {
            HashCost::Argon2 {
                m_cost,
                t_cost,
                p_cost,
                ..
            } => {
                m_cost <= ARGON2_MAX_M_KIB
                    && t_cost <= ARGON2_MAX_T
                    && p_cost <= ARGON2_MAX_P
                    && u64::from(m_cost) * u64::from(t_cost) <= ARGON2_MAX_WORK_KIB
            }
            HashCost::Bcrypt { cost } => BCRYPT_COSTS.contains(&cost),
        };
        if fits {
            Ok(())
        } else {
            Err(OVER_LIMITS)
        }
    }

    /// The cost of a stored hash; `None` for one that cannot be verified anyway.
    pub fn of(hash: &str) -> Option<HashCost> {
        if is_bcrypt(hash) {
            let cost = hash.split('$').nth(2)?.parse().ok()?;
            return Some(HashCost::Bcrypt { cost });
        }
        let parsed = PasswordHash::new(hash).ok()?;
        let params = Params::try_from(&parsed).ok()?;
        Some(HashCost::Argon2 {
            algorithm: Algorithm::try_from(parsed.algorithm).ok()?,
            version: parsed
                .version
                .map_or(Ok(Version::default()), Version::try_from)
                .ok()?,
            m_cost: params.m_cost(),
            t_cost: params.t_cost(),
            p_cost: params.p_cost(),
            output_len: params.output_len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_and_bcrypt_verify() {
        let pw = Secret::new("pässwörd:✓");
        let hash = hash_password(&pw).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, &pw).unwrap());
        assert!(!verify_password(&hash, &Secret::new("wrong")).unwrap());
        let bc = bcrypt::hash("secret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        assert!(verify_password(&bc, &Secret::new("secret")).unwrap());
        assert!(!verify_password(&bc, &Secret::new("nope")).unwrap());
        assert!(verify_password("$md5$abc", &pw).is_err());
    }

    #[test]
    fn bcrypt_never_accepts_a_longer_password_that_shares_the_first_72_bytes() {
        let long = "a".repeat(72);
        let hash = bcrypt::hash(&long, 4).unwrap();
        assert!(verify_password(&hash, &Secret::new(long.clone())).unwrap());
        let longer = format!("{long}x");
        assert!(!verify_password(&hash, &Secret::new(longer.clone())).unwrap());
        // Nor does a hash whose own password was longer (made by a truncating hasher): no
        // password over 72 bytes ever verifies against bcrypt.
        let truncated = bcrypt::hash(&longer, 4).unwrap();
        assert!(!verify_password(&truncated, &Secret::new(longer)).unwrap());
    }
}
