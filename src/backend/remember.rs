//! `remember_accounts = "FILE"`: a [`Backend`] decorator that writes every account its inner
//! backend lets log in to a users file, with a locked hash ([`LOCKED`]), so that a file
//! backend over FILE further down the chain can answer `isuser` for a backend that cannot
//! (an IdP; an HTTP API answering 501 to `user_exists`).
//!
//! It owns when an account is remembered (after an `authenticate` of the inner backend said
//! yes, and only then) and forgotten (after its `remove_user` said yes), the bounded,
//! deduplicated hand-over to the writer thread, the writer itself, and what `check` says
//! about FILE. It must not change or delay any answer: every
//! call returns exactly what the inner backend returned, and the hand-over never waits (a
//! full queue drops the account, and a later login of it tries again). It must not parse or
//! lock the file itself ([`crate::backend::file::store`] does, as for every other change of a
//! users file), and it keeps no password: the file gets `user@server:!`, nothing else.
//!
//! The writer is a thread, not a task: the request loop's runtime blocks reading its input
//! between requests, and a write that only progressed during requests could wait for hours.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use super::file::format::{storable, LOCKED};
use super::file::store::{lint, modify_file, Abandoned};
use super::{Backend, BackendError, BackendResult, CheckReport};
use crate::request::Account;
use crate::secret::Secret;
use crate::state::keyed::{AccountKey, Keyer};

/// Accounts waiting for the writer. A burst of first logins larger than this (a server
/// restarting with thousands of clients) drops the rest, each remembered at its next login.
const QUEUE: usize = 1024;
/// Accounts known to be in the file, or queued for it, per process. Beyond it the least
/// recently seen are forgotten, and cost one locked read of the file at their next login.
const MAX_KNOWN: u64 = 100_000;
/// How long an account stays known. An account removed from FILE (`users remove`) that still
/// logs in through the backend is written again after at most this long.
const KNOWN_FOR: Duration = Duration::from_secs(3600);
/// Most accounts written in one rewrite of the file.
const BATCH: usize = 256;

/// The accounts this process has seen log in, as keyed hashes ([`AccountKey`]), and the flag
/// that keeps a full queue to one warning until the writer catches up.
struct Known {
    keyer: Keyer,
    accounts: moka::sync::Cache<AccountKey, ()>,
    queue_full_warned: AtomicBool,
}

impl Known {
    fn key(&self, account: &Account) -> AccountKey {
        self.keyer.account(&account.user, &account.server)
    }

    /// Marks the account known; `true` when it was not (this caller hands it over).
    fn first(&self, account: &Account) -> bool {
        self.accounts
            .entry(self.key(account))
            .or_insert(())
            .is_fresh()
    }

    /// Forgets it: the write failed or was dropped, a later login tries again.
    fn forget(&self, account: &Account) {
        self.accounts.invalidate(&self.key(account));
    }
}

/// What the writer does with one account.
enum Job {
    Add(Account),
    Remove(Account),
}

impl Job {
    fn account(&self) -> &Account {
        match self {
            Job::Add(a) | Job::Remove(a) => a,
        }
    }
}

/// Wraps a backend that cannot list its accounts; see the module documentation.
pub struct RememberingBackend {
    inner: Arc<dyn Backend>,
    path: PathBuf,
    known: Arc<Known>,
    /// The writer, started with the first account to remember (`None`: it could not be).
    writer: OnceLock<Option<SyncSender<Job>>>,
}

impl RememberingBackend {
    pub fn new(inner: Arc<dyn Backend>, path: impl Into<PathBuf>) -> RememberingBackend {
        RememberingBackend {
            inner,
            path: path.into(),
            known: Arc::new(Known {
                keyer: Keyer::random(),
                accounts: moka::sync::Cache::builder()
                    .max_capacity(MAX_KNOWN)
                    .time_to_live(KNOWN_FOR)
                    .build(),
                queue_full_warned: AtomicBool::new(false),
            }),
            writer: OnceLock::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands a freshly logged-in account to the writer, never waiting for it.
    fn remember(&self, account: &Account) {
        if storable(account) && self.known.first(account) {
            self.hand_over(Job::Add(account.clone()));
        }
    }

    fn hand_over(&self, job: Job) {
        let writer = self.writer.get_or_init(|| self.start_writer());
        let Some(writer) = writer else {
            self.known.forget(job.account());
            return;
        };
        match writer.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                self.known.forget(job.account());
                crate::metrics::remembered(0, 1);
                if !self.known.queue_full_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        backend = self.inner.name(),
                        path = %self.path.display(),
                        "remember_accounts: the queue is full: accounts are not remembered (nor forgotten) until the writer catches up; each is at its next login"
                    );
                }
            }
            Err(TrySendError::Disconnected(job)) => self.known.forget(job.account()),
        }
    }

    fn start_writer(&self) -> Option<SyncSender<Job>> {
        let (sender, receiver) = sync_channel(QUEUE);
        let writer = Writer {
            backend: self.inner.name().to_owned(),
            path: self.path.clone(),
            known: Arc::clone(&self.known),
        };
        let started = std::thread::Builder::new()
            .name("remember-accounts".into())
            .spawn(move || writer.run(receiver));
        match started {
            Ok(_) => Some(sender),
            Err(e) => {
                tracing::warn!(
                    backend = self.inner.name(),
                    error = %e,
                    "remember_accounts: cannot start the writer thread; no account is remembered"
                );
                None
            }
        }
    }
}

/// The thread that adds accounts to FILE, a batch per rewrite; it ends once its backend is
/// dropped (a reload) and what was queued is written.
///
/// Never abandoned: a change given up at a request's deadline must not happen later, but
/// these were never part of a reply. A lock held for long (an admin's `users` command
/// waiting at a prompt does not hold it) only makes the queue fill up, which is logged.
struct Writer {
    backend: String,
    path: PathBuf,
    known: Arc<Known>,
}

impl Writer {
    fn run(self, receiver: Receiver<Job>) {
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            batch.extend(receiver.try_iter().take(BATCH - 1));
            self.write(&batch);
            // Log lines wait for the request loop's next flush, and it may sit idle for hours
            // after the login that queued this write (as `metrics/export.rs` does). Never
            // stdout, and never blocking: no reply is held up.
            crate::logging::flush();
        }
    }

    fn write(&self, batch: &[Job]) {
        let (mut added, mut removed) = (0usize, 0usize);
        // Under the lock, on the file as it is now: an account another process (or an
        // earlier run) wrote is not written again, and the file is not rewritten at all when
        // nothing in the batch changes it. Only locked entries are removed: an account the
        // admin gave a local password is the admin's.
        let result = modify_file(&self.path, &Abandoned::default(), |users| {
            for job in batch {
                match job {
                    Job::Add(a) => {
                        added += usize::from(users.insert(&a.user, &a.server, LOCKED.to_owned()));
                    }
                    Job::Remove(a) if users.is_locked(&a.user, &a.server) => {
                        removed += usize::from(users.remove(&a.user, &a.server));
                    }
                    Job::Remove(_) => {}
                }
            }
            Ok(added + removed > 0)
        });
        match result {
            Ok(_) => {
                self.known.queue_full_warned.store(false, Ordering::Relaxed);
                crate::metrics::remembered(added as u64, 0);
                if added + removed > 0 {
                    tracing::info!(
                        backend = self.backend.as_str(),
                        path = %self.path.display(),
                        added,
                        removed,
                        "remember_accounts: file updated"
                    );
                }
            }
            Err(e) => {
                // The logins were answered long ago, and stay answered: forget the accounts,
                // so that their next logins try again.
                for job in batch {
                    self.known.forget(job.account());
                }
                crate::metrics::remembered(0, batch.len() as u64);
                tracing::warn!(
                    backend = self.backend.as_str(),
                    path = %self.path.display(),
                    accounts = batch.len(),
                    error = %e,
                    "remember_accounts: cannot add the account(s) to the file (the logins succeeded)"
                );
            }
        }
    }
}

/// What `check` says of FILE: its account counts, whether this user can write it, and a
/// warning for what would make remembering fail.
fn file_report(path: &Path) -> (String, Vec<String>) {
    let shown = path.display();
    let dir = crate::fs::parent_dir(path);
    let can_write = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
    let mut warnings = Vec::new();
    let counts = match lint(path) {
        Ok((users, _)) => {
            let (all, locked) = users.entries().fold((0, 0), |(a, l), (_, locked)| {
                (a + 1, l + usize::from(locked))
            });
            format!("{all} account(s), {locked} remembered")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "remember_accounts: {shown} does not exist yet: the first login creates it, \
                 and until then the file backend over it fails every isuser; create it empty \
                 (owned by the XMPP server's account)"
            ));
            "missing".to_owned()
        }
        Err(e) => {
            warnings.push(format!("remember_accounts: cannot read {shown}: {e}"));
            "unreadable".to_owned()
        }
    };
    let writable = dir.is_dir() && can_write(&dir) && (!path.exists() || can_write(path));
    if !writable {
        warnings.push(format!(
            "remember_accounts: cannot write {shown} or its directory {} as this user: no \
             account will be remembered (logins still work)",
            dir.display()
        ));
    }
    let detail = format!(
        "remembers accounts in {shown} ({counts}; {})",
        if writable { "writable" } else { "read-only" }
    );
    (detail, warnings)
}

#[async_trait]
impl Backend for RememberingBackend {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn authenticate(&self, account: &Account, password: &Secret) -> BackendResult {
        let answer = self.inner.authenticate(account, password).await;
        // The answer is decided; remembering only queues, and never changes it.
        if matches!(answer, Ok(true)) {
            self.remember(account);
        }
        answer
    }

    async fn user_exists(&self, account: &Account) -> BackendResult {
        self.inner.user_exists(account).await
    }

    fn knows_its_accounts(&self) -> bool {
        self.inner.knows_its_accounts()
    }

    async fn check(&self) -> Result<String, BackendError> {
        self.check_report().await.map(|r| r.detail)
    }

    async fn check_report(&self) -> Result<CheckReport, BackendError> {
        let mut report = self.inner.check_report().await?;
        let path = self.path.clone();
        // File access off the runtime thread: FILE may be on a hung mount.
        let (detail, warnings) = tokio::task::spawn_blocking(move || file_report(&path))
            .await
            .map_err(|e| BackendError::Internal(format!("remember_accounts check: {e}")))?;
        report.detail = format!("{}; {detail}", report.detail);
        report.warnings.extend(warnings);
        Ok(report)
    }

    async fn set_password(&self, account: &Account, password: &Secret) -> BackendResult {
        self.inner.set_password(account, password).await
    }

    async fn register(&self, account: &Account, password: &Secret) -> BackendResult {
        self.inner.register(account, password).await
    }

    async fn remove_user(&self, account: &Account) -> BackendResult {
        let answer = self.inner.remove_user(account).await;
        // Gone from the backend: its remembered entry must not keep saying it exists.
        if matches!(answer, Ok(true)) {
            self.known.forget(account);
            self.hand_over(Job::Remove(account.clone()));
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    use super::*;
    use crate::backend::FileBackend;

    fn account(user: &str) -> Account {
        Account {
            user: user.into(),
            server: "h".into(),
        }
    }

    fn eventually(what: &str, test: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !test() {
            assert!(Instant::now() < deadline, "not within 10 s: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The inner backend is a real one (a users file holding the passwords); FILE is another.
    fn setup() -> (tempfile::TempDir, RememberingBackend, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let passwords = dir.path().join("passwords");
        let hash = bcrypt::hash("pw", 4).unwrap();
        fs::write(&passwords, format!("a@h:{hash}\nb@h:{hash}\n")).unwrap();
        let remembered = dir.path().join("remembered");
        fs::write(&remembered, "# remembered accounts\n").unwrap();
        let inner = Arc::new(FileBackend::new("idp", &passwords));
        let backend = RememberingBackend::new(inner, &remembered);
        (dir, backend, remembered)
    }

    #[tokio::test]
    async fn a_login_is_remembered_once_locked_and_a_removal_forgets_it() {
        let (_dir, backend, file) = setup();
        let read = || fs::read_to_string(&file).unwrap();
        let pw = Secret::new("pw");
        assert!(matches!(
            backend
                .authenticate(&account("a"), &Secret::new("wrong"))
                .await,
            Ok(false)
        ));
        assert!(matches!(
            backend.authenticate(&account("A"), &pw).await,
            Ok(true)
        ));
        eventually("a@h remembered", || read().contains("a@h:!\n"));
        assert_eq!(read(), "# remembered accounts\na@h:!\n");
        let before = fs::metadata(&file).unwrap();
        // Known in memory: no second write. Known in the file only (a fresh process, the
        // same FILE): looked at under the lock, not rewritten either.
        assert!(matches!(
            backend.authenticate(&account("a"), &pw).await,
            Ok(true)
        ));
        let other = RememberingBackend::new(Arc::clone(&backend.inner), &file);
        assert!(matches!(
            other.authenticate(&account("a"), &pw).await,
            Ok(true)
        ));
        assert!(matches!(
            backend.authenticate(&account("b"), &pw).await,
            Ok(true)
        ));
        eventually("b@h remembered", || read().contains("b@h:!\n"));
        let a_again = fs::metadata(&file).unwrap();
        assert_ne!(a_again.ino(), before.ino(), "b's write is a rewrite");
        // Now the fresh process's look at `a` is certainly done (its writer went first or
        // found `a` there): nothing but b's write changed the file since.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(read(), "# remembered accounts\na@h:!\nb@h:!\n");
        let quiet = fs::metadata(&file).unwrap();
        assert_eq!(
            (quiet.ino(), quiet.mtime_nsec()),
            (a_again.ino(), a_again.mtime_nsec())
        );

        // Removed through the backend: the locked entry goes too.
        assert!(matches!(backend.remove_user(&account("a")).await, Ok(true)));
        eventually("a@h forgotten", || !read().contains("a@h"));
        assert_eq!(read(), "# remembered accounts\nb@h:!\n");
    }

    #[tokio::test]
    async fn an_unwritable_file_changes_no_answer() {
        let (dir, backend, _) = setup();
        // Under a regular file: no one can create it, root included.
        let blocker = dir.path().join("not-a-directory");
        fs::write(&blocker, "").unwrap();
        let file = blocker.join("remembered");
        let backend = RememberingBackend::new(Arc::clone(&backend.inner), &file);
        let pw = Secret::new("pw");
        for _ in 0..3 {
            let started = Instant::now();
            assert!(matches!(
                backend.authenticate(&account("a"), &pw).await,
                Ok(true)
            ));
            assert!(started.elapsed() < Duration::from_secs(1));
            std::thread::sleep(Duration::from_millis(50));
        }
        let report = backend.check_report().await.unwrap();
        assert!(report.detail.contains("read-only"), "{}", report.detail);
        assert!(!report.warnings.is_empty());
    }

    #[test]
    fn a_full_queue_drops_without_waiting() {
        let (_dir, backend, _) = setup();
        // No writer thread: the queue is the channel of a receiver nobody reads.
        let (sender, _receiver) = sync_channel(1);
        backend.writer.set(Some(sender)).unwrap();
        backend.remember(&account("a"));
        let started = Instant::now();
        backend.remember(&account("b"));
        assert!(started.elapsed() < Duration::from_millis(100));
        // Dropped, so forgotten: its next login tries again.
        assert!(backend.known.first(&account("b")));
        assert!(!backend.known.first(&account("a")));
    }
}
