//! Account generations: a number per account that changes whenever the account's password
//! may have changed, so that anything remembered about its credentials (a cached yes, a
//! trusted credential, a remembered wrong password) can tell it is out of date.
//!
//! Whatever remembers a fact about a credential stores the account's generation next to
//! it, and uses the fact only while [`Generations::current`] still returns that number. A
//! `setpass`, `removeuser` or `removeuser3` calls [`Generations::bump`] before and after it
//! runs. Reading is one atomic load: this is checked on every cache hit.
//!
//! The counters live in this process's memory ([`Generations::in_memory`]) or in a file
//! every bridge process of the machine maps ([`Generations::shared`], see
//! [`super::generation_file`]): then a change through one process of an ejabberd pool is
//! seen by all of them at their next lookup.
//!
//! Accounts map to a fixed number of slots by an *unkeyed* hash of the account as the users
//! file folds it ([`normalize_account`]): every process of a pool must find the same slot
//! for one account, and must not need a shared secret to do so. Two accounts may share a
//! slot; a bump then also invalidates the other one, which only costs it one more backend
//! call. A slot holds a counter, never a name, so the slots tell nothing but "some account
//! whose hash lands here changed".
//!
//! Must not decide anything: it only says whether a remembered fact is still current.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::keyed::{AccountKey, Keyer};
use super::shared::invalidation::SharedInvalidation;
use super::shared::SharedStore;

use super::generation_file::{self, GenerationsFileError, Mapping};
use crate::outcome::Outcome;
use crate::request::{normalize_account, Request};
use crate::router::Handler;

/// How many slots the generations have. A power of two; 8 bytes each (512 KiB, touched
/// lazily by the kernel, so a small pool pays for the pages its accounts land on).
pub const SLOTS: usize = 1 << 16;

/// An account's generation at the time a fact about it was remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

/// Where an account's counter lives. Made once per request and reused for every lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(usize);

impl Slot {
    /// The slot of `user@server`, the same in every process and every version of the bridge
    /// (SHA-256 of the length-prefixed folded fields: no per-process key, no std hasher
    /// whose algorithm may change between releases).
    pub fn of(user: &str, server: &str) -> Slot {
        let mut hash = Sha256::new();
        for field in [normalize_account(user), normalize_account(server)] {
            hash.update((field.len() as u64).to_be_bytes());
            hash.update(field.as_bytes());
        }
        let digest = hash.finalize();
        let index = u64::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ]);
        Slot((index as usize) & (SLOTS - 1))
    }

    pub fn index(self) -> usize {
        self.0
    }
}

/// The counters: in this process's memory, or in the generations file every process of
/// the machine maps ([`super::generation_file`]).
pub struct Generations {
    slots: Slots,
}

/// Where the counters are, not their values (65 536 numbers help nobody in a log).
impl std::fmt::Debug for Generations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.path() {
            Some(path) => write!(f, "Generations(file {})", path.display()),
            None => f.write_str("Generations(in memory)"),
        }
    }
}

enum Slots {
    Memory(Box<[AtomicU64]>),
    File(Mapping, PathBuf),
}

impl Generations {
    /// Counters seen by this process only: right for a single process, and where no
    /// directory is configured.
    pub fn in_memory() -> Generations {
        Generations {
            slots: Slots::Memory((0..SLOTS).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    /// The counters of the generations file in `dir`, shared with every process that maps
    /// it; the file is created when missing. An error is never papered over with
    /// per-process counters: the caller refuses to start.
    pub fn shared(dir: &Path) -> Result<Generations, GenerationsFileError> {
        Generations::mapped(dir, true)
    }

    /// The generations file in `dir` if a bridge has made one, never creating it: for the
    /// `users` command, which changes a users file behind the bridges' backs.
    pub fn existing(dir: &Path) -> Result<Option<Generations>, GenerationsFileError> {
        match Generations::mapped(dir, false) {
            Err(GenerationsFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    fn mapped(dir: &Path, create: bool) -> Result<Generations, GenerationsFileError> {
        let file = generation_file::open(dir, create)?;
        let path = dir.join(generation_file::FILE_NAME);
        let mapping = Mapping::new(&file).map_err(|source| GenerationsFileError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Generations {
            slots: Slots::File(mapping, path),
        })
    }

    /// The generations file, when the counters are shared.
    pub fn path(&self) -> Option<&Path> {
        match &self.slots {
            Slots::Memory(_) => None,
            Slots::File(_, path) => Some(path),
        }
    }

    fn slot(&self, slot: Slot) -> &AtomicU64 {
        let slots = match &self.slots {
            Slots::Memory(slots) => slots,
            Slots::File(mapping, _) => mapping.slots(),
        };
        &slots[slot.0]
    }

    /// The account's generation now.
    pub fn current(&self, slot: Slot) -> Generation {
        Generation(self.slot(slot).load(Ordering::Acquire))
    }

    /// Marks every fact remembered about the account (and its slot's neighbours) as out
    /// of date, in every process sharing the counters.
    pub fn bump(&self, slot: Slot) {
        self.slot(slot).fetch_add(1, Ordering::AcqRel);
    }

    /// Whether a fact remembered at `then` still holds.
    pub fn is_current(&self, slot: Slot, then: Generation) -> bool {
        self.current(slot) == then
    }
}

/// A [`Handler`] that bumps the account's generation before and after every request that
/// may change or create its password (`setpass`, `tryregister`, `removeuser`,
/// `removeuser3`), whatever the answer: a timed-out `setpass` may still have changed the
/// password. Before, so that a fact remembered while the change runs is already out of date;
/// after, so that one remembered from an answer computed across the change is too. The
/// outermost state layer, so the cache and the throttle below it see the new generation.
///
/// With `[shared]` it also bumps the account's generation in the store, at the same two
/// points, so that every node sees the change ([`SharedInvalidation`]).
pub struct GenerationHandler<H> {
    inner: H,
    generations: Arc<Generations>,
    shared: Option<(Keyer, Arc<SharedInvalidation>)>,
}

impl<H: Handler> GenerationHandler<H> {
    pub fn new(inner: H, generations: Arc<Generations>) -> Self {
        GenerationHandler {
            inner,
            generations,
            shared: None,
        }
    }

    /// Bumps the shared generation too; `keyer` must be the shared key's.
    pub fn with_shared(mut self, keyer: Keyer, store: Arc<SharedStore>) -> Self {
        self.shared = Some((keyer, SharedInvalidation::new(store)));
        self
    }

    async fn bump(&self, slot: Slot, request: &Request) {
        self.generations.bump(slot);
        if let Some((keyer, shared)) = &self.shared {
            let a = request.account();
            shared.invalidate(keyer.account(&a.user, &a.server)).await;
        }
    }
}

/// The bump after a change, made even when the request's deadline drops the change's
/// future halfway: the backend may still apply it, and an answer remembered meanwhile (on
/// any node) must not outlive it. Disarmed once the awaited bump has run.
struct BumpAfter<'a> {
    generations: &'a Generations,
    slot: Slot,
    shared: Option<(&'a Arc<SharedInvalidation>, AccountKey)>,
    armed: bool,
}

impl Drop for BumpAfter<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.generations.bump(self.slot);
            if let Some((shared, account)) = self.shared {
                shared.queue(account);
            }
        }
    }
}

#[async_trait]
impl<H: Handler> Handler for GenerationHandler<H> {
    async fn handle(&self, request: &Request) -> Outcome {
        match request {
            Request::SetPass(..)
            | Request::TryRegister(..)
            | Request::RemoveUser(..)
            | Request::RemoveUser3(..) => {
                let a = request.account();
                let slot = Slot::of(&a.user, &a.server);
                let mut after = BumpAfter {
                    generations: &self.generations,
                    slot,
                    shared: self
                        .shared
                        .as_ref()
                        .map(|(keyer, shared)| (shared, keyer.account(&a.user, &a.server))),
                    armed: true,
                };
                self.bump(slot, request).await;
                let outcome = self.inner.handle(request).await;
                self.bump(slot, request).await;
                after.armed = false;
                outcome
            }
            _ => self.inner.handle(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bump_outdates_the_account_under_every_spelling() {
        let g = Generations::in_memory();
        let slot = Slot::of("Romeo", "Example.NET");
        assert_eq!(slot, Slot::of("romeo", "example.net"));
        let then = g.current(slot);
        assert!(g.is_current(slot, then));
        g.bump(Slot::of("ROMEO", "example.net"));
        assert!(!g.is_current(slot, then));
    }

    #[test]
    fn slots_spread_and_do_not_shift_fields() {
        assert_ne!(Slot::of("ab", "c"), Slot::of("a", "bc"));
        let distinct: std::collections::HashSet<usize> = (0..1000)
            .map(|i| Slot::of(&format!("user{i}"), "example.net").index())
            .collect();
        assert!(distinct.len() > 980, "{}", distinct.len());
    }

    /// Records the account's generation as the inner handler sees it.
    struct Seen(Arc<Generations>, std::sync::Mutex<Vec<Generation>>);

    #[async_trait]
    impl Handler for Arc<Seen> {
        async fn handle(&self, request: &Request) -> Outcome {
            let a = request.account();
            let g = self.0.current(Slot::of(&a.user, &a.server));
            self.1.lock().unwrap().push(g);
            Outcome::answered("inner", true)
        }
    }

    #[test]
    fn changes_bump_before_and_after_questions_do_not() {
        let generations = Arc::new(Generations::in_memory());
        let seen = Arc::new(Seen(Arc::clone(&generations), Default::default()));
        let h = GenerationHandler::new(Arc::clone(&seen), Arc::clone(&generations));
        let slot = Slot::of("u", "s");
        let run = |line: &str| {
            let request = Request::parse(line.as_bytes()).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(h.handle(&request));
        };
        let start = generations.current(slot);
        run("auth:u:s:pw");
        run("isuser:u:s");
        assert!(generations.is_current(slot, start));
        for change in [
            "setpass:u:s:new",
            "tryregister:u:s:pw",
            "removeuser:u:s",
            "removeuser3:u:s:pw",
        ] {
            let before = generations.current(slot);
            run(change);
            let during = *seen.1.lock().unwrap().last().unwrap();
            assert_ne!(during, before, "{change}: not bumped before");
            assert!(
                !generations.is_current(slot, during),
                "{change}: not bumped after"
            );
        }
    }

    /// A backend call that never returns, as one the request's deadline cuts off.
    struct Hangs(Arc<Generations>, std::sync::Mutex<Option<Generation>>);

    #[async_trait]
    impl Handler for Arc<Hangs> {
        async fn handle(&self, request: &Request) -> Outcome {
            let a = request.account();
            *self.1.lock().unwrap() = Some(self.0.current(Slot::of(&a.user, &a.server)));
            std::future::pending().await
        }
    }

    #[test]
    fn a_change_cut_off_by_the_deadline_is_still_bumped_after() {
        let generations = Arc::new(Generations::in_memory());
        let hangs = Arc::new(Hangs(Arc::clone(&generations), Default::default()));
        let h = GenerationHandler::new(Arc::clone(&hangs), Arc::clone(&generations));
        let request = Request::parse(b"setpass:u:s:new").unwrap();
        let cut = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(Duration::from_millis(20), h.handle(&request)).await
            });
        assert!(cut.is_err());
        // What was remembered while the change ran (under this generation) is dead.
        let during = hangs.1.lock().unwrap().unwrap();
        assert!(!generations.is_current(Slot::of("u", "s"), during));
    }
}
