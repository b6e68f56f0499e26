//! Keyed hashes of credentials and accounts: how state refers to a user or a password.
//!
//! A [`Keyer`] holds a random key made at start-up and never written anywhere; a
//! [`CredentialKey`] (user, server, password) or an [`AccountKey`] (user and server,
//! folded as the users file folds them) can only be made through it. The fields are
//! length-prefixed and tagged, so no two inputs meet by shifting a separator.
//!
//! Must not expose a digest's bytes, compare one in variable time, or keep the input:
//! whatever holds these keys (the cache, later the throttle and breaker) learns nothing a
//! dictionary attack could use without the per-process key.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::request::normalize_account;
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Makes cache keys. Holds the per-process HMAC key; there is no other way to a key.
#[derive(Clone)]
pub struct Keyer {
    /// Keyed once; cloned per use, which skips re-deriving the inner and outer pads.
    mac: HmacSha256,
}

/// The keyed hash of one (user, server, password). Only a [`Keyer`] makes one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialKey([u8; 32]);

/// The keyed hash of one account (user and server, case-folded). Only a [`Keyer`] makes one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountKey([u8; 32]);

/// Lower-case hex of a digest, for key names in the shared store. The bytes are a keyed
/// hash: without the shared key they tell nothing about the user or the password.
fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AccountKey {
    pub(crate) fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl CredentialKey {
    pub(crate) fn hex(&self) -> String {
        hex(&self.0)
    }

    /// Constant-time: the comparison must not tell how many leading bytes matched.
    pub fn matches(&self, other: &CredentialKey) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

// The digests are not secret the way a password is, but there is no reason to print them.
impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(..)")
    }
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKey(..)")
    }
}

/// Why `[shared].key_file` cannot be used. Never holds any of the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SharedKeyError {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("must hold 64 hex digits (write one with `extauth-bridge generate shared-key FILE`)")]
    Format,
}

/// Domain separation between the two kinds of key.
const CREDENTIAL_TAG: u8 = 1;
const ACCOUNT_TAG: u8 = 2;

/// Feeds `tag` and each field, length-prefixed (u64 big-endian), to `sink`. The encoding is
/// injective: no two different field lists give the same bytes, whatever the fields contain,
/// so `a:b` + `c` never meets `a` + `b:c`. Streamed, so the password is never copied.
fn encode_fields(tag: u8, fields: &[&[u8]], sink: &mut impl FnMut(&[u8])) {
    sink(&[tag]);
    for field in fields {
        sink(&(field.len() as u64).to_be_bytes());
        sink(field);
    }
}

impl Keyer {
    /// A keyer with a fresh random key from the operating system's generator.
    pub fn random() -> Keyer {
        let mut key = [0u8; 32];
        rand::Fill::fill(&mut key, &mut rand::rng());
        let keyer = Keyer::from_key(&key);
        zeroize::Zeroize::zeroize(&mut key);
        keyer
    }

    /// The keyer of every node sharing a store: its key read from `[shared].key_file`
    /// (64 hex digits, as `generate shared-key` writes them; surrounding white space ignored).
    pub fn from_shared_key(path: &std::path::Path) -> Result<Keyer, SharedKeyError> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| SharedKeyError::Read(e.to_string()))?,
        );
        let digits = text.trim().as_bytes();
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(SharedKeyError::Format);
        }
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        for (byte, pair) in key.iter_mut().zip(digits.chunks(2)) {
            let nibble = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
        Ok(Keyer::from_key(&key))
    }

    fn from_key(key: &[u8; 32]) -> Keyer {
        Keyer {
            // HMAC accepts keys of any length; this cannot fail.
            mac: <HmacSha256 as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
        }
    }

    fn digest(&self, tag: u8, fields: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        encode_fields(tag, fields, &mut |bytes| mac.update(bytes));
        mac.finalize().into_bytes().into()
    }

    pub fn credential(&self, user: &str, server: &str, password: &Secret) -> CredentialKey {
        CredentialKey(self.digest(
            CREDENTIAL_TAG,
            &[
                user.as_bytes(),
                server.as_bytes(),
                password.expose().as_bytes(),
            ],
        ))
    }

    /// Case-folded, so that evicting `Romeo` also forgets what was cached for `romeo`:
    /// evicting too much is harmless, too little is not.
    /// The folding is the users file's ([`normalize_account`]), so every spelling the file
    /// takes for one account is one group here.
    pub fn account(&self, user: &str, server: &str) -> AccountKey {
        AccountKey(self.digest(
            ACCOUNT_TAG,
            &[
                normalize_account(user).as_bytes(),
                normalize_account(server).as_bytes(),
            ],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_fields(tag, fields, &mut |b| out.extend_from_slice(b));
        out
    }

    #[test]
    fn shifted_field_boundaries_never_collide() {
        type Fields<'a> = &'a [&'a [u8]];
        let cases: &[(Fields, Fields)] = &[
            (&[b"a-b", b"c"], &[b"a", b"b-c"]),
            (&[b"a:b", b"c", b"p"], &[b"a", b"b:c", b"p"]),
            (&[b"u", b"s", b"p:q"], &[b"u", b"s:p", b"q"]),
            (&[b"", b"ab"], &[b"a", b"b"]),
            (&[b"a\0\0\0\0\0\0\0\x01b", b""], &[b"a", b"b"]),
        ];
        let keyer = Keyer::random();
        for (left, right) in cases {
            assert_ne!(encoded(1, left), encoded(1, right));
            let l: Vec<&str> = left
                .iter()
                .map(|f| std::str::from_utf8(f).unwrap())
                .collect();
            let r: Vec<&str> = right
                .iter()
                .map(|f| std::str::from_utf8(f).unwrap())
                .collect();
            if l.len() == 3 {
                assert_ne!(
                    keyer.credential(l[0], l[1], &Secret::new(l[2])),
                    keyer.credential(r[0], r[1], &Secret::new(r[2]))
                );
            } else {
                assert_ne!(keyer.account(l[0], l[1]), keyer.account(r[0], r[1]));
            }
        }
        // The same fields under the two tags differ too.
        assert_ne!(
            encoded(CREDENTIAL_TAG, &[b"a"]),
            encoded(ACCOUNT_TAG, &[b"a"])
        );
    }

    #[test]
    fn keys_depend_on_the_per_process_key() {
        let pw = Secret::new("pw");
        let (a, b) = (Keyer::random(), Keyer::random());
        assert_ne!(a.credential("u", "s", &pw), b.credential("u", "s", &pw));
        assert_ne!(a.account("u", "s"), b.account("u", "s"));
        assert_eq!(a.credential("u", "s", &pw), a.credential("u", "s", &pw));
        // Under a known key the digest is exactly HMAC-SHA256 of the encoding, so the only
        // way to a key is through the secret (CredentialKey's field is private to this
        // module, and Keyer's key is not readable).
        let key = [7u8; 32];
        let keyer = Keyer::from_key(&key);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
        mac.update(&encoded(CREDENTIAL_TAG, &[b"u", b"s", b"pw"]));
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(keyer.credential("u", "s", &pw).0, expected);
        // And the password does not appear in the key.
        assert!(!expected.windows(2).any(|w| w == b"pw"));
        assert_eq!(
            format!("{:?}", keyer.credential("u", "s", &pw)),
            "CredentialKey(..)"
        );
    }

    #[test]
    fn a_shared_key_file_gives_every_node_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{}\n", "07".repeat(32))).unwrap();
        let (a, b) = (
            Keyer::from_shared_key(&path).unwrap(),
            Keyer::from_shared_key(&path).unwrap(),
        );
        let pw = Secret::new("pw");
        assert_eq!(a.credential("u", "s", &pw), b.credential("u", "s", &pw));
        let known = Keyer::from_key(&[7u8; 32]).account("u", "s");
        assert_eq!(a.account("u", "s").hex(), known.hex());
        assert_eq!(known.hex().len(), 64);
        for bad in ["", "07", &"zz".repeat(32), &"07".repeat(33)] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(
                Keyer::from_shared_key(&path),
                Err(SharedKeyError::Format)
            ));
        }
    }

    #[test]
    fn account_keys_ignore_case_credential_keys_do_not() {
        let k = Keyer::random();
        assert_eq!(
            k.account("Romeo", "Example.NET"),
            k.account("romeo", "example.net")
        );
        // A titlecase letter (not upper case) is folded too, as the users file folds it.
        assert_eq!(k.account("ǅemo", "s"), k.account("ǆemo", "s"));
        assert_eq!(k.account("Ǆemo", "s"), k.account("ǆemo", "s"));
        let pw = Secret::new("pw");
        assert_ne!(
            k.credential("Romeo", "s", &pw),
            k.credential("romeo", "s", &pw)
        );
    }
}
