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
//!
//! This file owns [`FileBackend`]: when the file is re-read and which decoy goes with it,
//! how each account operation runs (on which thread, under which limit), and `check`'s
//! report. It must not parse or render lines, hash, or lock and rewrite the file itself:
//! - [`format`](mod@format): the lines, parse and render, what is wrong with a line;
//! - [`hash`]: making and verifying hashes, the limits on a stored hash's cost;
//! - [`decoy`]: the hash an unknown user is verified against;
//! - [`store`]: reading the file, the lock, the atomic rewrite, owners and hand-over;
//! - `pool`: the blocking-pool limits (hashing per process, one permit at a time).

pub mod decoy;
pub mod format;
pub mod hash;
mod pool;
pub mod store;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Backend, BackendError, BackendResult, CheckReport};
use crate::fs::parent_dir;
use crate::request::Account;
use crate::secret::Secret;
use decoy::DecoySlot;
use format::{storable, BadKind, BadLine, UsersFile};
use hash::{hash_password, verify_password};
use pool::{blocking, limited};
use store::{lint, load, lock_warning, modify_file, AbandonOnDrop, Abandoned, Stamp};

/// Most warnings `check` lists for one file: a file with hundreds of repeated lines needs
/// the first few named to be understood, not all of them.
const MAX_WARNINGS: usize = 10;

pub struct FileBackend {
    name: String,
    path: PathBuf,
    cached: Mutex<Option<Loaded>>,
    /// This backend's share of the blocking pool for file access: one thread. A file on a
    /// hung mount blocks the worker that touches it for good (the deadline answers the
    /// request, but cannot stop the thread), so without a bound every request to it would
    /// take another pool thread until none was left for any backend. With it, the file's
    /// later requests wait here, on this backend alone, and time out. One is enough: the
    /// accesses are short, and a change runs alone (`server::answer::changes_accounts`) anyway.
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
            warnings.extend(lock_warning(&path));
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
        let path = self.path.clone();
        self.modify(move |users| {
            // A locked entry is an account remembered from another backend (an IdP holds its
            // password): a password set here would give it a second, local one that the IdP
            // knows nothing of. Refused; `users passwd` is the admin's way.
            if users.is_locked(&account.user, &account.server) {
                tracing::warn!(
                    path = %path.display(),
                    user = account.user.as_str(),
                    server = account.server.as_str(),
                    "users file: setpass refused: the account is locked (remembered from another backend)"
                );
                return Ok(false);
            }
            Ok(users.set_hash(&account.user, &account.server, hash))
        })
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
    use super::hash::{within_limits, HashCost};
    use super::*;

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

    /// A locked entry (remembered from another backend) never authenticates, whatever the
    /// password, and costs what a missing account costs (the decoy): no timing oracle. It
    /// exists for `isuser`, and a password cannot be set for it here.
    #[tokio::test]
    async fn a_locked_entry_never_authenticates_and_costs_the_decoy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let good = bcrypt::hash("pw", 9).unwrap();
        let text = format!("known@h:{good}\nlocked@h:!\nstar@h:*\nold@h:!{good}\n");
        fs::write(&path, &text).unwrap();
        let backend = FileBackend::new("users", &path);
        let account = |user: &str| Account {
            user: user.into(),
            server: "h".into(),
        };
        let timed = |user: &'static str, password: &'static str| {
            let backend = &backend;
            async move {
                let started = std::time::Instant::now();
                let answer = backend
                    .authenticate(&account(user), &Secret::new(password))
                    .await;
                (answer, started.elapsed())
            }
        };
        // Warm: the decoy is made with the first read.
        assert!(matches!(timed("known", "pw").await.0, Ok(true)));
        for user in ["locked", "star", "old"] {
            for password in ["!", "*", "", "pw", "!pw"] {
                let (answer, _) = timed(user, password).await;
                assert!(
                    matches!(answer, Ok(false)),
                    "{user} {password:?}: {answer:?}"
                );
            }
            assert!(matches!(
                backend.user_exists(&account(user)).await,
                Ok(true)
            ));
        }
        let median = |mut v: Vec<std::time::Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let (mut locked, mut missing) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            locked.push(timed("locked", "!").await.1);
            missing.push(timed("nobody", "!").await.1);
        }
        let (locked, missing) = (median(locked), median(missing));
        // bcrypt cost 9 is tens of milliseconds: a locked entry skipping the decoy would
        // answer in microseconds.
        assert!(
            locked * 2 > missing && missing * 2 > locked,
            "locked {locked:?}, missing {missing:?}"
        );
        // setpass on a locked entry: refused, nothing written.
        assert!(matches!(
            backend
                .set_password(&account("locked"), &Secret::new("new"))
                .await,
            Ok(false)
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        // A removal works as for any account.
        assert!(matches!(
            backend.remove_user(&account("locked")).await,
            Ok(true)
        ));
        assert!(matches!(
            backend.user_exists(&account("locked")).await,
            Ok(false)
        ));
    }
}
