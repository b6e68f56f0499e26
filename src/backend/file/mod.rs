//! The users file: the embedded default backend, so the bridge works with no server at all.
//!
//! One account per line, `user@domain:HASH`, where HASH is a PHC string: argon2id for every
//! hash we write, bcrypt (`$2y$`/`$2b$`/`$2a$`, htpasswd style) accepted for reading. Blank
//! lines and `#` comments are kept when the file is rewritten.
//!
//! Several bridge processes share the file (the XMPP servers run a pool), so:
//! - the file is re-read whenever its identity, size or times change (one `stat` per request);
//! - writers take an advisory lock on a sibling `.lock` file, re-read the file under the lock,
//!   and replace it atomically (temp file in the same directory, fsync, rename, fsync of the
//!   directory). Readers never lock: a rename is atomic, they see the old or the new file.
//! - a writer hashes before it takes the lock, so the lock is held for file I/O only; and
//!   it gives up waiting, and writes nothing, once its request was answered `0` at the
//!   deadline ([`Abandoned`]).
//!
//! Hashing is CPU-bound (argon2id takes tens of milliseconds by design), so it runs on the
//! blocking pool where the request deadline can still fire around it. So does every file
//! access (the per-request `stat` included: on a hung mount it may never return), one at a
//! time per backend, so a stuck file holds one pool thread and starves nothing else.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;

use super::{Backend, BackendError, BackendResult, CheckReport};
use crate::fs::parent_dir;
// Accounts are indexed under `account_key`, the one folding the cache uses too: the servers
// nodeprep/nameprep JIDs before asking, and an admin-edited file may not have.
use crate::request::{account_key, normalize_account, Account};
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
fn within_limits(hash: &str) -> Result<(), &'static str> {
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
struct DecoySlot {
    /// The cost it is made for (the file's typical one), whatever it had to fall back to.
    cost: Option<HashCost>,
    made: tokio::sync::watch::Receiver<Option<Result<Arc<Decoy>, String>>>,
}

impl DecoySlot {
    /// Starts making the decoy for `cost`. Needs a Tokio runtime (every caller is a request).
    fn start(cost: Option<HashCost>) -> DecoySlot {
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
    async fn get(&self) -> Result<Arc<Decoy>, BackendError> {
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

/// The longest account line read: a bare JID is at most 2047 bytes (RFC 7622: 1023 each for
/// the localpart and domainpart), a PHC string a few hundred. What is longer is not an account,
/// and is not worth parsing as one.
const MAX_ENTRY_LINE: usize = 4096;

/// Most warnings `check` lists for one file: a file with hundreds of repeated lines needs
/// the first few named to be understood, not all of them.
const MAX_WARNINGS: usize = 10;

/// Characters that would break the `user@domain:HASH` line format.
/// Also what RFC 7622 allows a localpart or domainpart (1023 bytes, as written to the file),
/// so that every entry we write stays under [`MAX_ENTRY_LINE`] and reads back.
pub fn storable(account: &Account) -> bool {
    let bad = |c: char| c == ':' || c == '@' || c == '#' || c.is_whitespace() || c.is_control();
    let fits = |part: &str| normalize_account(part).len() <= 1023;
    !account.user.contains(bad)
        && !account.server.contains(bad)
        && fits(&account.user)
        && fits(&account.server)
}

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A parsed users file, keeping every line so a rewrite changes only what it must.
#[derive(Debug, Default, Clone)]
pub struct UsersFile {
    lines: Vec<Line>,
    index: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
enum Line {
    Entry {
        key: String,
        hash: String,
        /// Its hash asks for more than the limits: the account exists (`isuser`, and no
        /// one can register it again), but no password verifies. Kept, so that a rewrite
        /// does not lose it; a new password replaces it.
        refused: bool,
    },
    /// A later entry for an account the file already has: never used, written back
    /// unchanged, and dropped when that account is changed or removed, so it can never
    /// come back to life as the account's entry.
    Duplicate { key: String, raw: Vec<u8> },
    /// Blank, comment or malformed: written back unchanged, byte for byte (it may not even
    /// be UTF-8: an admin's Latin-1 comment must survive a rewrite).
    Other(Vec<u8>),
}

/// A line that could not be used, by number; its content is not kept (it may be a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub number: usize,
    pub reason: &'static str,
    pub kind: BadKind,
}

/// What is wrong with a [`BadLine`], and so how loud `check` is about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// Not an account line: ignored by the daemon; `check` fails on it.
    Malformed,
    /// A comment that is not UTF-8: ignored and kept as it is; a warning.
    Comment,
    /// An account whose hash is over the limits: it exists, no password verifies; a warning.
    Refused,
    /// A second entry for an account; holds the line of the first one, which is the one
    /// used. A warning.
    Duplicate(usize),
}

impl BadLine {
    /// Whether `check` only warns about it (the file works as the admin meant).
    pub fn is_warning(&self) -> bool {
        self.kind != BadKind::Malformed
    }
}

/// The lines of a file, cut at `\n` (no empty last line), as bytes: one line that is not
/// UTF-8 must not make the whole file unreadable. A `\r` before the `\n` stays in the line,
/// so that a line kept as it is comes back byte for byte (and a rewrite of a rewrite changes
/// nothing); parsing an entry trims it like any other white space.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let pieces = (!bytes.is_empty()).then(|| body.split(|&b| b == b'\n'));
    pieces.into_iter().flatten()
}

impl UsersFile {
    /// Parses a file's bytes. Every line is kept, whatever it holds; the ones that are not
    /// usable entries are returned as [`BadLine`]s.
    pub fn parse(bytes: impl AsRef<[u8]>) -> (UsersFile, Vec<BadLine>) {
        let mut file = UsersFile::default();
        let mut bad = Vec::new();
        for (i, raw) in split_lines(bytes.as_ref()).enumerate() {
            let Ok(line) = std::str::from_utf8(raw) else {
                // No account can be read from it (the servers send UTF-8 names): ignored,
                // and written back as it is. A comment is harmless, anything else is a
                // malformed line like any other.
                let comment = raw.trim_ascii_start().starts_with(b"#");
                bad.push(BadLine {
                    number: i + 1,
                    reason: "not UTF-8",
                    kind: if comment {
                        BadKind::Comment
                    } else {
                        BadKind::Malformed
                    },
                });
                file.lines.push(Line::Other(raw.to_vec()));
                continue;
            };
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                file.lines.push(Line::Other(raw.to_vec()));
                continue;
            }
            const TOO_LONG: &str = "longer than an account line can be (4096 bytes)";
            let entry = if trimmed.len() > MAX_ENTRY_LINE {
                Err(TOO_LONG)
            } else {
                // Measured as it is written back too: lower case can be longer (`İ`), and
                // a line that grew past the limit would be lost at the next rewrite.
                parse_entry(trimmed).and_then(|(user, server, hash)| {
                    let key = account_key(user, server);
                    if key.len() + 1 + hash.len() > MAX_ENTRY_LINE {
                        Err(TOO_LONG)
                    } else {
                        Ok((key, hash))
                    }
                })
            };
            match entry {
                Ok((key, hash)) => {
                    // One `Line` per line of text, so an index is a line number minus one.
                    if let Some(&first) = file.index.get(&key) {
                        bad.push(BadLine {
                            number: i + 1,
                            reason: "duplicate account (the first entry is used; a password \
                                     change or removal applies to every entry)",
                            kind: BadKind::Duplicate(first + 1),
                        });
                        file.lines.push(Line::Duplicate {
                            key,
                            raw: raw.to_vec(),
                        });
                        continue;
                    }
                    let refused = within_limits(hash).err();
                    if let Some(reason) = refused {
                        bad.push(BadLine {
                            number: i + 1,
                            reason,
                            kind: BadKind::Refused,
                        });
                    }
                    file.index.insert(key.clone(), file.lines.len());
                    file.lines.push(Line::Entry {
                        key,
                        hash: hash.to_owned(),
                        refused: refused.is_some(),
                    });
                }
                Err(reason) => {
                    bad.push(BadLine {
                        number: i + 1,
                        reason,
                        kind: BadKind::Malformed,
                    });
                    file.lines.push(Line::Other(raw.to_vec()));
                }
            }
        }
        (file, bad)
    }

    pub fn hash_of(&self, user: &str, server: &str) -> Option<&str> {
        let i = *self.index.get(&account_key(user, server))?;
        match &self.lines[i] {
            Line::Entry {
                hash,
                refused: false,
                ..
            } => Some(hash),
            Line::Entry { refused: true, .. } | Line::Duplicate { .. } | Line::Other(_) => None,
        }
    }

    pub fn contains(&self, user: &str, server: &str) -> bool {
        self.index.contains_key(&account_key(user, server))
    }

    /// The most common cost among the accounts' hashes (the first seen, on a tie); `None`
    /// when no hash is usable. Refused hashes do not count: a file of hostile lines must not
    /// make the decoy as dear as they are.
    pub fn typical_cost(&self) -> Option<HashCost> {
        let mut counts: Vec<(HashCost, usize)> = Vec::new();
        for line in &self.lines {
            let Line::Entry {
                hash,
                refused: false,
                ..
            } = line
            else {
                continue;
            };
            let Some(cost) = HashCost::of(hash) else {
                continue;
            };
            match counts.iter_mut().find(|(c, _)| *c == cost) {
                Some((_, n)) => *n += 1,
                None => counts.push((cost, 1)),
            }
        }
        // max_by_key keeps the last of equals: look from the end for the first seen.
        counts
            .into_iter()
            .rev()
            .max_by_key(|(_, n)| *n)
            .map(|(c, _)| c)
    }

    /// Accounts in file order, as `user@domain`, each once.
    pub fn accounts(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry { key, .. } => Some(key.as_str()),
            Line::Duplicate { .. } | Line::Other(_) => None,
        })
    }

    /// Sets the hash of an existing account, dropping its duplicate entries.
    /// `false` if there is no such account.
    pub fn set_hash(&mut self, user: &str, server: &str, new_hash: String) -> bool {
        let key = account_key(user, server);
        let Some(&i) = self.index.get(&key) else {
            return false;
        };
        if let Line::Entry { hash, refused, .. } = &mut self.lines[i] {
            *refused = within_limits(&new_hash).is_err();
            *hash = new_hash;
        }
        self.drop_duplicates_of(&key);
        true
    }

    /// Adds an account. `false` if it exists already.
    pub fn insert(&mut self, user: &str, server: &str, hash: String) -> bool {
        let key = account_key(user, server);
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key.clone(), self.lines.len());
        let refused = within_limits(&hash).is_err();
        self.lines.push(Line::Entry { key, hash, refused });
        true
    }

    /// Removes an account, every entry of it. `false` if there was none.
    pub fn remove(&mut self, user: &str, server: &str) -> bool {
        let key = account_key(user, server);
        if self.index.remove(&key).is_none() {
            return false;
        }
        self.lines
            .retain(|l| !matches!(l, Line::Entry { key: k, .. } if *k == key));
        self.drop_duplicates_of(&key);
        true
    }

    /// Drops the duplicate entries of `key` and re-indexes what remains.
    fn drop_duplicates_of(&mut self, key: &str) {
        self.lines
            .retain(|l| !matches!(l, Line::Duplicate { key: k, .. } if k == key));
        self.index = self
            .lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Line::Entry { key, .. } => Some((key.clone(), i)),
                Line::Duplicate { .. } | Line::Other(_) => None,
            })
            .collect();
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in &self.lines {
            match line {
                Line::Entry { key, hash, .. } => {
                    out.extend_from_slice(key.as_bytes());
                    out.push(b':');
                    out.extend_from_slice(hash.as_bytes());
                }
                Line::Duplicate { raw, .. } | Line::Other(raw) => out.extend_from_slice(raw),
            }
            out.push(b'\n');
        }
        out
    }
}

fn parse_entry(line: &str) -> Result<(&str, &str, &str), &'static str> {
    let (jid, hash) = line.split_once(':').ok_or("expected user@domain:HASH")?;
    let (user, server) = jid
        .rsplit_once('@')
        .ok_or("expected user@domain before ':'")?;
    if user.is_empty() || server.is_empty() {
        return Err("empty user or domain");
    }
    if !hash.starts_with('$') {
        return Err("hash is not a PHC string (argon2id) or bcrypt hash");
    }
    Ok((user, server, hash))
}

/// Reads and parses the file at `path`, returning its stamp too.
fn load(path: &Path) -> io::Result<(UsersFile, Stamp)> {
    #[cfg(debug_assertions)]
    crate::fs::test_hooks::stall(path);
    load_from(File::open(path)?, path).map(|(users, meta)| (users, Stamp::of(&meta)))
}

/// Opens the file to be changed: never through a symbolic link. The directory is writable
/// by the XMPP server's account, which could replace the file by a link to one it cannot
/// read; a change run as root would read that and write its lines back as the new users
/// file. (A rename replaces a link, not its target, so a change through one never worked
/// anyway.)
fn open_for_change(path: &Path) -> io::Result<File> {
    #[cfg(debug_assertions)]
    crate::fs::test_hooks::stall(path);
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other(
                "it is a symbolic link: changes are made only to the file itself \
                 (configure the path of the real file)",
            ),
            _ => e,
        })
}

/// Reads and parses an opened users file (`path` for the log), with its metadata.
fn load_from(file: File, path: &Path) -> io::Result<(UsersFile, fs::Metadata)> {
    let meta = file.metadata()?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut &file, &mut bytes)?;
    let (users, bad) = UsersFile::parse(&bytes);
    for b in &bad {
        match b.kind {
            BadKind::Duplicate(first) => tracing::warn!(
                path = %path.display(),
                line = b.number,
                first,
                "users file: second entry for an account ignored (the first is used; a \
                 password change or removal applies to both)"
            ),
            BadKind::Malformed | BadKind::Comment => {
                tracing::warn!(path = %path.display(), line = b.number, reason = b.reason, "users file: line ignored")
            }
            BadKind::Refused => {
                tracing::warn!(path = %path.display(), line = b.number, reason = b.reason, "users file: hash refused")
            }
        }
    }
    Ok((users, meta))
}

/// Parses a users file and reports its malformed lines, for `check` and tests.
pub fn lint(path: &Path) -> io::Result<(UsersFile, Vec<BadLine>)> {
    Ok(UsersFile::parse(fs::read(path)?))
}

/// Set when the request that asked for a change has been abandoned: its deadline fired, it
/// was answered `0` and its future dropped. The blocking worker doing the change cannot be
/// stopped from outside, so it looks at this flag and gives up instead of writing later
/// what the server was already told did not happen.
#[derive(Debug, Clone, Default)]
pub struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Sets the flag when dropped: held by the request's future, which is dropped at the deadline.
struct AbandonOnDrop(Abandoned);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// How often a writer waiting for the lock looks again. Short next to a writer's hold time
/// (read, write, fsync, rename: hashing happens before the lock is taken).
const LOCK_POLL: Duration = Duration::from_millis(5);

/// The advisory lock's file: `{path}.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// Run as root (`extauth-bridge users …`), the lock file we just created is root's with
/// mode 0600, and the daemon, running as the XMPP server's account, could never open it:
/// every change would fail from then on. Give it the users file's owner and group, and the
/// file's group permissions (a daemon that writes the file as a member of its group must
/// open the lock too). Not root, we cannot give it away.
///
/// Only ever called with a lock this process has just created (`O_CREAT|O_EXCL`), and it
/// changes that file through its descriptor: whatever the name points to by now, what is
/// handed over is the empty file we made. An existing lock is never handed over, whatever
/// it looks like: the directory is writable by the XMPP server's account, which can make
/// the name a hard link to a file it wants (`/etc/shadow`), and any check of the link count
/// or the inode behind the name is a race it can win (the link's other name removed between
/// the open and the check), or even legitimately pass (an old copy of a file that was
/// replaced by a rename has one link left, the one planted here).
fn hand_over_lock(created: &File, path: &Path) -> io::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    // No users file yet (the command is creating it): root's too, until the admin gives
    // both away, as the command says.
    let Ok(users) = fs::metadata(path) else {
        return Ok(());
    };
    let mine = created.metadata()?;
    let mode = 0o600 | (users.mode() & 0o060);
    if (mine.uid(), mine.gid()) != (users.uid(), users.gid()) {
        rustix::fs::fchown(
            created,
            Some(rustix::fs::Uid::from_raw(users.uid())),
            Some(rustix::fs::Gid::from_raw(users.gid())),
        )?;
    }
    if mine.mode() & 0o7777 != mode {
        created.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Opens the lock file, creating it if there is none; `true` when this call created it
/// (then, and only then, [`hand_over_lock`] may give it away).
///
/// O_NOFOLLOW: the directory is writable by the XMPP server's account, which could put a
/// symbolic link here. O_NONBLOCK: a FIFO here would block the open forever.
fn open_lock(lock: &Path) -> io::Result<(File, bool)> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // Created and removed by others in between, each attempt can miss; a few are plenty
    // for a name that only the bridge itself (and an attacker) ever removes.
    for _ in 0..8 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags)
            .open(lock)
        {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            Err(_) => {}
        }
        match OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(lock)
        {
            Ok(file) => return Ok((file, false)),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
    }
    Err(io::Error::other(format!(
        "{} keeps appearing and disappearing",
        lock.display()
    )))
}

/// For `check` run as root, which opens any lock: a lock that is not the users file's
/// owner's may be one the XMPP server's account cannot open (left by an older `users`
/// command run as root, or created by one before the users file existed). Not root,
/// opening it as this user was the test.
fn foreign_lock(opened: &File, lock: &Path, path: &Path) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let (mine, users) = (opened.metadata().ok()?, fs::metadata(path).ok()?);
    ((mine.uid(), mine.gid()) != (users.uid(), users.gid())).then(|| {
        format!(
            "the lock {} belongs to {}:{}, the users file to {}:{}: the XMPP server's account \
             may not be able to open it, and then setpass, tryregister and removeuser fail; \
             chown it to the users file's owner (an existing lock is never given away \
             automatically: it may be a planted link)",
            lock.display(),
            mine.uid(),
            mine.gid(),
            users.uid(),
            users.gid()
        )
    })
}

/// Gives the temp file of a rewrite the replaced file's owner and group, before the rename:
/// run as root on a file owned by the XMPP server's account, the new file would otherwise be
/// root's (and unreadable by the daemon) from the rename on. Not root, only a group we are
/// in can be kept; failing that the file becomes ours, as any rewrite by us makes it.
fn keep_owner(tmp: &File, old: &fs::Metadata, path: &Path) -> io::Result<()> {
    let mine = tmp.metadata()?;
    if (mine.uid(), mine.gid()) == (old.uid(), old.gid()) {
        return Ok(());
    }
    let group = Some(rustix::fs::Gid::from_raw(old.gid()));
    let both = rustix::fs::fchown(tmp, Some(rustix::fs::Uid::from_raw(old.uid())), group);
    // Not root: at least the group, which is how a server's account usually shares the file.
    if let Err(e) = both.or_else(|_| rustix::fs::fchown(tmp, None, group)) {
        tracing::warn!(
            path = %path.display(),
            error = %e,
            owner = old.uid(),
            group = old.gid(),
            "users file: the rewritten file cannot keep its owner and group"
        );
    }
    Ok(())
}

/// Holds the advisory lock on `{path}.lock` until dropped.
struct WriteLock {
    _file: File,
}

impl WriteLock {
    /// Waits for the lock until it is ours (`Some`) or the request is abandoned (`None`).
    /// A blocking `flock` could not be given up at the deadline, so this polls a
    /// non-blocking one.
    fn acquire(path: &Path, abandoned: &Abandoned) -> io::Result<Option<WriteLock>> {
        use rustix::fs::{flock, FlockOperation};
        let lock = lock_path(path);
        let (file, created) = open_lock(&lock)?;
        #[cfg(debug_assertions)]
        crate::fs::test_hooks::after_lock_open();
        // A FIFO or a device planted here: nothing to lock with.
        if !file.metadata()?.file_type().is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                lock.display()
            )));
        }
        if created {
            if let Err(e) = hand_over_lock(&file, path) {
                // Our change can go ahead; the daemon's later ones will fail, which `check`
                // and the `users` command report.
                tracing::warn!(lock = %lock.display(), error = %e, "users file lock: cannot give it the users file's owner");
            }
        }
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(WriteLock { _file: file })),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(e.into()),
            }
            if abandoned.is_set() {
                return Ok(None);
            }
            std::thread::sleep(LOCK_POLL);
        }
    }
}

/// Replaces `path` with `contents` atomically ([`crate::fs::replace_atomically`]: a temp
/// file created anew, never one planted at its name, fsync, rename, fsync of the directory).
/// The old file's permissions are kept (0600 for a new one), and its owner ([`keep_owner`]).
/// The rename is the moment the change happens: it is skipped, and `false` returned, when
/// the request has been abandoned by then.
fn write_atomically(
    path: &Path,
    contents: &[u8],
    old: Option<&fs::Metadata>,
    abandoned: &Abandoned,
) -> io::Result<bool> {
    let mode = old
        .as_ref()
        .map_or(0o600, |m| m.permissions().mode() & 0o7777);
    crate::fs::replace_atomically(
        path,
        contents,
        mode,
        |tmp| match old {
            Some(old) => keep_owner(tmp, old, path),
            None => Ok(()),
        },
        || !abandoned.is_set(),
    )
}

/// Applies `change` to the file on disk under the write lock and returns its answer.
/// Nothing is written when the change answers `false`, nor once `abandoned` is set: the
/// request was answered `0` by then, and the file must say the same.
///
/// `change` runs under the lock, which every writer of the file waits for: hash passwords
/// before calling this, not inside `change`.
pub fn modify_file(
    path: &Path,
    abandoned: &Abandoned,
    change: impl FnOnce(&mut UsersFile) -> Result<bool, BackendError>,
) -> Result<bool, BackendError> {
    let io_err = |what: &str, e: io::Error| {
        BackendError::Internal(format!("users file {}: {what}: {e}", path.display()))
    };
    let gave_up = || {
        tracing::warn!(
            path = %path.display(),
            "users file change abandoned: the request's deadline passed (it was answered 0); nothing written"
        );
        BackendError::Unavailable("request abandoned at its deadline".into())
    };
    let Some(_lock) = WriteLock::acquire(path, abandoned).map_err(|e| io_err("cannot lock", e))?
    else {
        return Err(gave_up());
    };
    // The replaced file's metadata comes from what was read, through the descriptor: its
    // owner and mode are what the new file keeps.
    let (mut users, old) = match open_for_change(path).and_then(|f| load_from(f, path)) {
        Ok((users, meta)) => (users, Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (UsersFile::default(), None),
        Err(e) => return Err(io_err("cannot read", e)),
    };
    if !change(&mut users)? {
        return Ok(false);
    }
    if !write_atomically(path, &users.render(), old.as_ref(), abandoned)
        .map_err(|e| io_err("cannot write", e))?
    {
        return Err(gave_up());
    }
    Ok(true)
}

/// Runs CPU-bound work (hashing) on the blocking pool, under the process-wide limit.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    // At most one hash per core at a time: more gains nothing, and each argon2 run holds
    // its memory cost (19 MiB with the defaults) while it lasts, so a piped file of
    // requests must not start dozens at once. Only hashing counts here: file access,
    // which may block for good, has its own limit per backend (`file_io`), so a hung
    // file can neither take these permits nor be queued behind them.
    static HASHING: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    let permits = HASHING.get_or_init(|| {
        Arc::new(tokio::sync::Semaphore::new(
            crate::memory::hashing_parallelism(),
        ))
    });
    limited(permits, f).await
}

/// Runs `f` on the blocking pool once a permit of `permits` is free. The permit is
/// taken before the thread (so what waits is a future, which the deadline drops, not a
/// pool thread) and moves into the worker: a request whose deadline expired stops
/// waiting, but its work still counts until it really ends.
async fn limited<T: Send + 'static>(
    permits: &Arc<tokio::sync::Semaphore>,
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(|e| BackendError::Internal(format!("worker limit: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let result = f();
        drop(permit);
        result
    })
    .await
    .map_err(|e| BackendError::Internal(format!("worker failed: {e}")))?
}

pub struct FileBackend {
    name: String,
    path: PathBuf,
    cached: Mutex<Option<Loaded>>,
    /// This backend's share of the blocking pool for file access: one thread. A file on a
    /// hung mount blocks the worker that touches it for good (the deadline answers the
    /// request, but cannot stop the thread), so without a bound every request to it would
    /// take another pool thread until none was left for any backend. With it, the file's
    /// later requests wait here, on this backend alone, and time out. One is enough: the
    /// accesses are short, and a change runs alone (`server::changes_accounts`) anyway.
    file_io: Arc<tokio::sync::Semaphore>,
}

/// The file as last read, with the decoy made (or being made) for its hashes.
#[derive(Clone)]
struct Loaded {
    users: Arc<UsersFile>,
    decoy: Arc<DecoySlot>,
    stamp: Stamp,
}

impl FileBackend {
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        FileBackend {
            name: name.into(),
            path: path.into(),
            cached: Mutex::new(None),
            file_io: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current contents and decoy, re-read if the file changed since the last look.
    ///
    /// The `stat`, and the read when the file changed, run off the request thread
    /// ([`Self::file_access`]): on a hung network mount even a `stat` may never return, and
    /// the single-threaded runtime could not answer at the deadline while one blocks it. So
    /// a file that blocks costs its own requests their deadline, nothing more.
    ///
    /// The decoy is started here, with the file ([`DecoySlot`]), not by the first unknown
    /// user's request (which would then cost more than a wrong password). It is kept across
    /// re-reads while the file's typical cost stays the same, so a rewrite does not cost the
    /// next request a hash.
    async fn current(&self) -> Result<(Arc<UsersFile>, Arc<DecoySlot>), BackendError> {
        let shown = self.path.display().to_string();
        let io_err = move |e: io::Error| BackendError::Internal(format!("users file {shown}: {e}"));
        let previous = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let known = previous.as_ref().map(|loaded| loaded.stamp);
        let path = self.path.clone();
        let reread = self
            .file_access(move || {
                #[cfg(debug_assertions)]
                crate::fs::test_hooks::stall(&path);
                let stamp = Stamp::of(&fs::metadata(&path).map_err(&io_err)?);
                if known == Some(stamp) {
                    return Ok(None);
                }
                load(&path).map(Some).map_err(&io_err)
            })
            .await?;
        // `None` ("unchanged") only ever comes back for the stamp of a previous read.
        let Some((users, stamp)) = reread else {
            if let Some(loaded) = previous {
                return Ok((loaded.users, loaded.decoy));
            }
            return Err(BackendError::Internal("users file: not read yet".into()));
        };
        let cost = users.typical_cost();
        let decoy = match previous {
            Some(loaded) if loaded.decoy.cost == cost => loaded.decoy,
            _ => Arc::new(DecoySlot::start(cost)),
        };
        let users = Arc::new(users);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Loaded {
            users: Arc::clone(&users),
            decoy: Arc::clone(&decoy),
            stamp,
        });
        Ok((users, decoy))
    }

    /// Runs file access of this backend on the blocking pool, one at a time
    /// (see `file_io`).
    async fn file_access<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        limited(&self.file_io, f).await
    }

    /// Runs a change of the file as this backend's file access, outside the hashing limit
    /// (it does not hash). If this future is dropped at the deadline, the worker is told to
    /// give up (or, still waiting for its turn, never starts).
    async fn modify(
        &self,
        change: impl FnOnce(&mut UsersFile) -> Result<bool, BackendError> + Send + 'static,
    ) -> BackendResult {
        let path = self.path.clone();
        let abandoned = Abandoned::default();
        let _on_drop = AbandonOnDrop(abandoned.clone());
        self.file_access(move || modify_file(&path, &abandoned, change))
            .await
    }

    /// Hashes a new password on the blocking pool, before the write lock is taken.
    async fn new_hash(password: &Secret) -> Result<String, BackendError> {
        let password = password.clone();
        blocking(move || hash_password(&password)).await
    }

    /// Whether the account is in the file as last read; `None` if the file cannot be read
    /// now (missing: a registration creates it), in which case the change under the lock
    /// decides.
    async fn known(&self, account: &Account) -> Option<bool> {
        let (users, _) = self.current().await.ok()?;
        Some(users.contains(&account.user, &account.server))
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    async fn authenticate(&self, account: &Account, password: &Secret) -> BackendResult {
        let (users, decoy) = self.current().await?;
        // Every login waits for it, not only an unknown user's: right after a (re-)read, a
        // known user waiting less would tell the two apart.
        let decoy = decoy.get().await?;
        let stored = users
            .hash_of(&account.user, &account.server)
            .map(str::to_owned);
        let password = password.clone();
        blocking(move || match stored {
            Some(hash) => verify_password(&hash, &password),
            None => {
                // Same work as a wrong password, then no.
                let _ = verify_password(decoy.hash(), &password);
                Ok(false)
            }
        })
        .await
    }

    async fn user_exists(&self, account: &Account) -> BackendResult {
        let (users, _) = self.current().await?;
        Ok(users.contains(&account.user, &account.server))
    }

    async fn check(&self) -> Result<String, BackendError> {
        self.check_report().await.map(|r| r.detail)
    }

    async fn check_report(&self) -> Result<CheckReport, BackendError> {
        let path = self.path.clone();
        // File access, not hashing: a hung file must not hold a hashing permit.
        self.file_access(move || {
            let shown = path.display().to_string();
            let (users, bad) = lint(&path)
                .map_err(|e| BackendError::Internal(format!("users file {shown}: {e}")))?;
            let malformed: Vec<&BadLine> = bad.iter().filter(|b| !b.is_warning()).collect();
            if let Some(b) = malformed.first() {
                return Err(BackendError::Internal(format!(
                    "users file {shown} line {}: {} ({} bad line(s) in all)",
                    b.number,
                    b.reason,
                    malformed.len()
                )));
            }
            // Only warnings are left in `bad`, in line order.
            let mut warnings: Vec<String> = bad
                .iter()
                .take(MAX_WARNINGS)
                .map(|b| match b.kind {
                    BadKind::Duplicate(first) => format!(
                        "line {} repeats the account of line {first}: the first entry is \
                         used, and a password change or removal applies to both; delete one",
                        b.number
                    ),
                    BadKind::Comment => format!(
                        "line {}: a comment that is not UTF-8: ignored, and kept as it is",
                        b.number
                    ),
                    BadKind::Refused | BadKind::Malformed => {
                        format!("line {}: {}", b.number, b.reason)
                    }
                })
                .collect();
            if bad.len() > MAX_WARNINGS {
                warnings.push(format!(
                    "{} more line(s) like these",
                    bad.len() - MAX_WARNINGS
                ));
            }
            let dir = parent_dir(&path);
            let writable = rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK).is_ok()
                && rustix::fs::access(&path, rustix::fs::Access::WRITE_OK).is_ok();
            if !writable {
                // Logins work; whether changes should is the admin's decision, so a warning.
                warnings.push(format!(
                    "read-only as this user (cannot write {shown} or its directory {}): \
                     setpass, tryregister and removeuser will fail",
                    dir.display()
                ));
            }
            // A lock this user cannot open makes every change fail, whatever the file's
            // own permissions say; typically left by a `users` command run as root.
            // Non-blocking, should the path be a FIFO nobody reads.
            let lock = lock_path(&path);
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
                .open(&lock)
            {
                Ok(opened) => warnings.extend(foreign_lock(&opened, &lock, &path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warnings.push(format!(
                    "cannot open the lock {} for writing as this user ({e}): setpass, \
                     tryregister and removeuser will fail; give it the users file's owner",
                    lock.display()
                )),
            }
            Ok(CheckReport {
                detail: format!(
                    "{} account(s) in {shown}; {}",
                    users.accounts().count(),
                    if writable {
                        "writable (setpass/tryregister/removeuser work)"
                    } else {
                        "read-only"
                    }
                ),
                warnings,
            })
        })
        .await
    }

    async fn set_password(&self, account: &Account, password: &Secret) -> BackendResult {
        if password.is_empty() || !storable(account) {
            return Ok(false);
        }
        // Not worth a hash when there is no such account; asked again under the lock.
        if self.known(account).await == Some(false) {
            return Ok(false);
        }
        let hash = Self::new_hash(password).await?;
        let account = account.clone();
        self.modify(move |users| Ok(users.set_hash(&account.user, &account.server, hash)))
            .await
    }

    async fn register(&self, account: &Account, password: &Secret) -> BackendResult {
        if password.is_empty() || !storable(account) {
            return Ok(false);
        }
        if self.known(account).await == Some(true) {
            return Ok(false);
        }
        let hash = Self::new_hash(password).await?;
        let account = account.clone();
        self.modify(move |users| Ok(users.insert(&account.user, &account.server, hash)))
            .await
    }

    async fn remove_user(&self, account: &Account) -> BackendResult {
        let account = account.clone();
        self.modify(move |users| Ok(users.remove(&account.user, &account.server)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a rewrite would write, as text (the tests' files are UTF-8).
    fn rendered(users: &UsersFile) -> String {
        String::from_utf8(users.render()).unwrap()
    }

    #[test]
    fn parse_keeps_comments_and_reports_bad_lines() {
        let text = "# accounts\nromeo@example.net:$argon2id$x\n\nbroken line\njuliet@EXAMPLE.net:$2y$10$abc\nromeo@example.net:$argon2id$dup\n";
        let (users, bad) = UsersFile::parse(text);
        assert_eq!(users.hash_of("romeo", "example.net"), Some("$argon2id$x"));
        assert_eq!(users.hash_of("Juliet", "example.NET"), Some("$2y$10$abc"));
        assert_eq!(bad.iter().map(|b| b.number).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(bad[0].kind, BadKind::Malformed);
        assert_eq!(bad[1].kind, BadKind::Duplicate(2));
        assert_eq!(rendered(&users), "# accounts\nromeo@example.net:$argon2id$x\n\nbroken line\njuliet@example.net:$2y$10$abc\nromeo@example.net:$argon2id$dup\n");
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_bad_line_kept_byte_for_byte() {
        let text = b"# Gr\xfc\xdfe\r\na@h:$x\nm\xfcller@h:$y\n\xff\xfe\nb@h:$z";
        let (mut users, bad) = UsersFile::parse(text);
        assert_eq!(users.accounts().collect::<Vec<_>>(), ["a@h", "b@h"]);
        let kinds: Vec<_> = bad.iter().map(|b| (b.number, b.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, BadKind::Comment),
                (3, BadKind::Malformed),
                (4, BadKind::Malformed)
            ]
        );
        assert!(bad[0].is_warning() && !bad[1].is_warning());
        // Kept with its `\r`; the last line needs no `\n`.
        assert_eq!(
            users.render(),
            b"# Gr\xfc\xdfe\r\na@h:$x\nm\xfcller@h:$y\n\xff\xfe\nb@h:$z\n"
        );
        assert!(users.set_hash("a", "h", "$new".into()));
        assert_eq!(
            users.render(),
            b"# Gr\xfc\xdfe\r\na@h:$new\nm\xfcller@h:$y\n\xff\xfe\nb@h:$z\n"
        );
        // An entry's own `\r` is white space around it.
        let (users, bad) = UsersFile::parse(b"a@h:$x\r\n");
        assert!(bad.is_empty());
        assert_eq!(users.hash_of("a", "h"), Some("$x"));
        assert!(UsersFile::parse(b"").0.render().is_empty());
        // Short enough as written, too long once lower-cased (`İ` is 2 bytes, `i̇` 3).
        let grows = format!("{}@h:$x\n", "İ".repeat(MAX_ENTRY_LINE / 2 - 4));
        let (users, bad) = UsersFile::parse(&grows);
        assert_eq!(
            (users.accounts().count(), bad[0].kind),
            (0, BadKind::Malformed)
        );
        assert!(!storable(&Account {
            user: "a".repeat(1024),
            server: "h".into()
        }));
        let long = format!("{}@h:$x\n", "a".repeat(MAX_ENTRY_LINE));
        let (users, bad) = UsersFile::parse(&long);
        assert_eq!(users.accounts().count(), 0);
        assert_eq!(bad[0].kind, BadKind::Malformed);
        assert_eq!(users.render(), long.as_bytes());
        assert_eq!(UsersFile::parse(b"\n\n").0.render(), b"\n\n");
    }

    #[test]
    fn insert_remove_keep_index_consistent() {
        let (mut users, _) = UsersFile::parse("a@h:$x\nb@h:$y\nc@h:$z\n");
        assert!(users.remove("a", "h"));
        assert!(!users.remove("a", "h"));
        assert_eq!(users.hash_of("c", "h"), Some("$z"));
        assert!(users.insert("d", "h", "$w".into()));
        assert!(!users.insert("d", "h", "$w".into()));
        assert!(users.set_hash("b", "h", "$new".into()));
        assert_eq!(rendered(&users), "b@h:$new\nc@h:$z\nd@h:$w\n");
    }

    #[test]
    fn a_repeated_account_is_changed_and_removed_with_all_its_entries() {
        let text = "a@h:$1\nb@h:$b\nA@h:$2\n# c\na@H:$3\n";
        let (users, bad) = UsersFile::parse(text);
        assert_eq!(users.hash_of("a", "h"), Some("$1"));
        assert_eq!(users.accounts().collect::<Vec<_>>(), ["a@h", "b@h"]);
        let dups: Vec<_> = bad.iter().map(|b| (b.number, b.kind)).collect();
        assert_eq!(
            dups,
            [(3, BadKind::Duplicate(1)), (5, BadKind::Duplicate(1))]
        );
        // Untouched, the repeats are written back as they were.
        assert_eq!(rendered(&users), text);

        let mut removed = users.clone();
        assert!(removed.remove("a", "h"));
        assert_eq!(rendered(&removed), "b@h:$b\n# c\n");
        let (reread, bad) = UsersFile::parse(removed.render());
        assert!(!reread.contains("a", "h") && bad.is_empty());

        let mut changed = users;
        assert!(changed.set_hash("a", "h", "$new".into()));
        assert_eq!(rendered(&changed), "a@h:$new\nb@h:$b\n# c\n");
        assert!(changed.remove("b", "h"));
        assert!(changed.insert("d", "h", "$d".into()));
        assert_eq!(changed.hash_of("d", "h"), Some("$d"));
        assert_eq!(rendered(&changed), "a@h:$new\n# c\nd@h:$d\n");
    }

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
    async fn the_decoy_is_made_with_the_file_and_kept_while_its_cost_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        fs::write(&path, format!("a@h:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
        let backend = FileBackend::new("users", &path);
        // Known to the backend before any unknown user asks.
        let (_, first) = backend.current().await.unwrap();
        assert_eq!(first.cost, Some(HashCost::Bcrypt { cost: 4 }));
        // Rewritten (to another size: a change the stamp sees even within one clock tick),
        // same cost: the same decoy, no new hash.
        fs::write(&path, format!("bb@h:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
        let (users, again) = backend.current().await.unwrap();
        assert!(users.contains("bb", "h"));
        assert!(Arc::ptr_eq(&first, &again));
        // Another cost: a new decoy.
        fs::write(&path, format!("ccc@h:{}\n", bcrypt::hash("pw", 5).unwrap())).unwrap();
        let (_, other) = backend.current().await.unwrap();
        assert_eq!(
            HashCost::of(other.get().await.unwrap().hash()),
            Some(HashCost::Bcrypt { cost: 5 })
        );
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

    #[tokio::test]
    async fn hashes_over_the_limits_are_accounts_no_password_opens_nor_the_decoys_cost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let bcrypt3 = "$2b$03$abcdefghijklmnopqrstuuVu4t4bIMnt8gyaUFhJ2Flkrf0gkO9Dq";
        let bcrypt31 = "$2b$31$abcdefghijklmnopqrstuuVu4t4bIMnt8gyaUFhJ2Flkrf0gkO9Dq";
        let argon = |m: u32, t: u32, p: u32| {
            format!("$argon2id$v=19$m={m},t={t},p={p}$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        };
        let good = hash_password(&Secret::new("pw")).unwrap();
        let over = [
            bcrypt3.to_owned(),
            bcrypt31.to_owned(),
            argon(8, 3_000_000, 1),
            argon(262_145, 1, 1),
            argon(262_144, 5, 1),
            argon(128, 1, 9),
            argon(64, 17, 1),
        ];
        let mut text = String::new();
        for (i, hash) in over.iter().enumerate() {
            text.push_str(&format!("u{i}@h:{hash}\nv{i}@h:{hash}\n"));
        }
        text.push_str(&format!("c@h:{good}\n"));
        let (users, bad) = UsersFile::parse(&text);
        assert_eq!(bad.len(), 2 * over.len());
        assert!(bad
            .iter()
            .all(|b| b.kind == BadKind::Refused && b.is_warning()));
        assert!(bad.iter().all(|b| !b.reason.contains('$')));
        assert_eq!(users.typical_cost(), HashCost::of(&good));
        assert!(users.contains("u2", "h") && users.hash_of("u2", "h").is_none());
        for hash in &over {
            assert!(verify_password(hash, &Secret::new("pw")).is_err(), "{hash}");
        }
        // At the limits: accepted.
        for hash in [argon(262_144, 4, 8), argon(65_536, 16, 1)] {
            assert_eq!(within_limits(&hash), Ok(()), "{hash}");
        }
        assert_eq!(within_limits(&bcrypt::hash("pw", 4).unwrap()), Ok(()));
        assert_eq!(
            within_limits(bcrypt31.replace("$31$", "$13$").as_str()),
            Ok(())
        );
        assert!(within_limits(bcrypt31.replace("$31$", "$14$").as_str()).is_err());

        fs::write(&path, &text).unwrap();
        let backend = FileBackend::new("users", &path);
        let account = |user: &str| Account {
            user: user.into(),
            server: "h".into(),
        };
        let pw = Secret::new("pw");
        assert!(matches!(
            backend.authenticate(&account("c"), &pw).await,
            Ok(true)
        ));
        assert!(matches!(
            backend.authenticate(&account("u2"), &pw).await,
            Ok(false)
        ));
        assert!(matches!(
            backend.authenticate(&account("nobody"), &pw).await,
            Ok(false)
        ));
        assert!(matches!(
            backend.user_exists(&account("u2")).await,
            Ok(true)
        ));
        // A new password makes the account usable again.
        let mut users = users;
        assert!(users.set_hash("u2", "h", good.clone()));
        assert_eq!(users.hash_of("u2", "h"), Some(good.as_str()));
    }

    #[test]
    fn links_planted_where_the_lock_and_temp_file_go_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        fs::write(&path, "a@h:$x\n").unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let pid = std::process::id();
        let tmp = dir.path().join(format!(".users.{pid}.tmp"));

        // A symbolic link at the temp file's name: removed, not written through.
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let abandoned = Abandoned::default();
        let added = modify_file(&path, &abandoned, |u| Ok(u.insert("b", "h", "$y".into())));
        assert!(matches!(added, Ok(true)), "{added:?}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(fs::read_to_string(&path).unwrap().contains("b@h:$y"));
        assert!(!tmp.exists());

        // A symbolic link as the lock: the change fails, the target is untouched.
        let lock = dir.path().join("users.lock");
        fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let before = fs::metadata(&victim).unwrap();
        let refused = modify_file(&path, &abandoned, |u| Ok(u.insert("c", "h", "$z".into())));
        assert!(refused.is_err(), "{refused:?}");
        let after = fs::metadata(&victim).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (before.uid(), before.gid(), before.mode())
        );
        assert!(!fs::read_to_string(&path).unwrap().contains("c@h"));

        // A hard link as the lock, the victim someone else's: used for locking, never
        // handed over (root only: not root, nothing is handed over anyway).
        fs::remove_file(&lock).unwrap();
        fs::hard_link(&victim, &lock).unwrap();
        if rustix::process::geteuid().is_root() {
            let set_owner = |p: &Path, id| {
                let (uid, gid) = (rustix::fs::Uid::from_raw(id), rustix::fs::Gid::from_raw(id));
                rustix::fs::chown(p, Some(uid), Some(gid)).unwrap()
            };
            set_owner(&path, 65534);
            set_owner(&victim, 4321);
        }
        let before = fs::metadata(&victim).unwrap();
        let added = modify_file(&path, &abandoned, |u| Ok(u.insert("d", "h", "$w".into())));
        assert!(matches!(added, Ok(true)), "{added:?}");
        let after = fs::metadata(&victim).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (before.uid(), before.gid(), before.mode())
        );
    }

    #[test]
    fn an_abandoned_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        fs::write(&path, "a@h:$x\n").unwrap();
        // The deadline passes while the change is being made, after the lock was taken.
        let abandoned = Abandoned::default();
        let result = modify_file(&path, &abandoned, |users| {
            abandoned.set();
            Ok(users.insert("b", "h", "$y".into()))
        });
        assert!(
            matches!(result, Err(BackendError::Unavailable(_))),
            "{result:?}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "a@h:$x\n");
        // No temp file left behind: only the file and its lock.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["users", "users.lock"]);

        // Waiting for a lock held elsewhere: given up once abandoned.
        let held = File::open(dir.path().join("users.lock")).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let abandoned = Abandoned::default();
        let waiter = {
            let (path, abandoned) = (path.clone(), abandoned.clone());
            std::thread::spawn(move || {
                modify_file(&path, &abandoned, |users| {
                    Ok(users.insert("b", "h", "$y".into()))
                })
            })
        };
        abandoned.set();
        let result = waiter.join().unwrap();
        assert!(
            matches!(result, Err(BackendError::Unavailable(_))),
            "{result:?}"
        );
        drop(held);
        assert_eq!(fs::read_to_string(&path).unwrap(), "a@h:$x\n");
    }

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
