//! The throttle's rules against a scripted inner handler (the policy and the store) and
//! straight on the store with made-up times (lockout lengths, expiry, the memory bound).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::backend::BackendError;
use crate::state::generation::GenerationHandler;

fn config() -> ThrottleConfig {
    ThrottleConfig {
        enabled: true,
        max_failures: 3,
        ..ThrottleConfig::default()
    }
}

/// What the scripted backend does with the next requests.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Yes to the password in `Inner::right`, no to any other.
    Answer,
    Unavailable,
    Protocol,
    UnavailableThenNo,
    Timeout,
}

/// A backend stand-in that knows one right password and counts the calls it gets.
struct Inner {
    right: Mutex<String>,
    mode: Mutex<Mode>,
    calls: AtomicUsize,
}

impl Inner {
    fn new() -> Arc<Inner> {
        Arc::new(Inner {
            right: Mutex::new("right".into()),
            mode: Mutex::new(Mode::Answer),
            calls: AtomicUsize::new(0),
        })
    }
}

/// One request through `handler`, on a runtime of its own.
fn run(handler: &impl Handler, line: &str) -> Outcome {
    let request = Request::parse(line.as_bytes()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(handler.handle(&request))
}

#[async_trait]
impl Handler for Arc<Inner> {
    async fn handle(&self, request: &Request) -> Outcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match (request, mode) {
            (Request::SetPass(_, p), Mode::Answer) => {
                *self.right.lock().unwrap() = p.expose().to_owned();
                Outcome::answered("inner", true)
            }
            (Request::Auth(_, p), Mode::Answer) => {
                Outcome::answered("inner", p.expose() == *self.right.lock().unwrap())
            }
            (_, Mode::Answer) => Outcome::answered("inner", true),
            (_, Mode::Unavailable) => {
                Outcome::error("inner", BackendError::Unavailable("refused".into()))
            }
            (_, Mode::Protocol) => Outcome::error("inner", BackendError::Protocol("junk".into())),
            (_, Mode::UnavailableThenNo) => {
                Outcome::failed(Status::UnavailableThenNo("refused".into()))
            }
            (_, Mode::Timeout) => Outcome::failed(Status::Timeout),
        }
    }
}

struct Rig {
    inner: Arc<Inner>,
    handler: GenerationHandler<ThrottlingHandler<Arc<Inner>>>,
}

impl Rig {
    fn new(config: &ThrottleConfig) -> Rig {
        let inner = Inner::new();
        let generations = Arc::new(Generations::in_memory());
        let throttle = ThrottlingHandler::new(
            Arc::clone(&inner),
            config,
            Keyer::random(),
            Arc::clone(&generations),
        );
        Rig {
            inner,
            handler: GenerationHandler::new(throttle, generations),
        }
    }

    fn ask(&self, line: &str) -> Outcome {
        run(&self.handler, line)
    }

    /// The outcome word of an `auth` for `user` with `password`.
    fn auth(&self, user: &str, password: &str) -> &'static str {
        let o = self.ask(&format!("auth:{user}:example.net:{password}"));
        assert_eq!(o.answer, o.status == Status::Yes, "{o:?}");
        o.status.as_str()
    }

    fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }

    fn set(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
    }
}

#[test]
fn distinct_failures_lock_and_the_trusted_owner_still_gets_in() {
    let r = Rig::new(&config());
    assert_eq!(r.auth("romeo", "right"), "yes");
    for guess in ["a", "b"] {
        assert_eq!(r.auth("romeo", guess), "no");
    }
    assert_eq!(r.calls(), 3);
    assert_eq!(r.auth("romeo", "c"), "no");
    // Locked: unknown passwords never reach the backend, and are not counted.
    for guess in ["d", "e", "f", "g"] {
        assert_eq!(r.auth("romeo", guess), "throttled");
    }
    assert_eq!(r.calls(), 4);
    let o = r.ask("auth:ROMEO:example.net:h");
    assert!(
        matches!(o.status, Status::Throttled(ref why) if why.contains("5m")),
        "{o:?}"
    );
    // The owner's verified password is still checked, and logs in.
    assert_eq!(r.auth("romeo", "right"), "yes");
    assert_eq!(r.calls(), 5);
    // The lockout is per account: another one is untouched.
    assert_eq!(r.auth("juliet", "x"), "no");
    assert_eq!(r.calls(), 6);
}

#[test]
fn an_unverified_right_password_is_refused_during_a_lockout() {
    let r = Rig::new(&config());
    for guess in ["a", "b", "c"] {
        assert_eq!(r.auth("romeo", guess), "no");
    }
    assert_eq!(r.auth("romeo", "right"), "throttled");
    assert_eq!(r.calls(), 3);
}

#[test]
fn a_repeated_wrong_password_counts_once_and_is_not_sent_again() {
    let r = Rig::new(&config());
    assert_eq!(r.auth("romeo", "stale"), "no");
    for _ in 0..20 {
        assert_eq!(r.auth("romeo", "stale"), "repeated");
    }
    assert_eq!(r.calls(), 1);
    // Counted once: two more distinct ones are needed to lock.
    assert_eq!(r.auth("romeo", "b"), "no");
    assert_eq!(r.auth("romeo", "right"), "yes");
    assert_eq!(r.auth("romeo", "stale"), "repeated");
}

#[test]
fn only_a_backends_no_counts() {
    let r = Rig::new(&config());
    for mode in [
        Mode::Unavailable,
        Mode::Protocol,
        Mode::UnavailableThenNo,
        Mode::Timeout,
    ] {
        r.set(mode);
        for i in 0..10 {
            let o = r.ask(&format!("auth:romeo:example.net:w{i}"));
            assert!(!o.answer);
            assert_ne!(o.status.as_str(), "throttled");
        }
    }
    assert_eq!(r.calls(), 40);
    // Nor a refusal without a backend, nor any other command.
    r.set(Mode::Answer);
    for line in ["auth:romeo:example.net:", "isuser:romeo:example.net"] {
        for _ in 0..5 {
            r.ask(line);
        }
    }
    // Still nothing counted: a password seen during the outage is asked, not "repeated".
    assert_eq!(r.auth("romeo", "w0"), "no");
    assert_eq!(r.auth("romeo", "right"), "yes");
}

#[test]
fn a_password_change_outdates_what_was_remembered() {
    let r = Rig::new(&config());
    assert_eq!(r.auth("romeo", "right"), "yes");
    assert_eq!(r.auth("romeo", "next"), "no");
    assert_eq!(r.auth("romeo", "next"), "repeated");
    // After setpass, the password remembered as wrong is the right one: it is asked.
    assert!(r.ask("setpass:romeo:example.net:next").answer);
    assert_eq!(r.auth("romeo", "next"), "yes");
    // Lock the account; the old password, trusted before the change, is trusted no more.
    assert!(r.ask("setpass:romeo:example.net:third").answer);
    for guess in ["a", "b", "c"] {
        assert_eq!(r.auth("romeo", guess), "no");
    }
    let before = r.calls();
    assert_eq!(r.auth("romeo", "next"), "throttled");
    assert_eq!(r.calls(), before);
}

#[test]
fn a_cached_yes_counts_as_a_login() {
    let inner = Inner::new();
    let keyer = Keyer::random();
    let generations = Arc::new(Generations::in_memory());
    let cache = crate::state::cache::CachingHandler::with_keyer(
        Arc::clone(&inner),
        &crate::config::CacheConfig {
            enabled: true,
            ..Default::default()
        },
        keyer.clone(),
        Arc::clone(&generations),
    );
    let h = ThrottlingHandler::new(cache, &config(), keyer, Arc::clone(&generations));
    let run = |line: &str| run(&h, line).status;
    assert_eq!(run("auth:u:s:right"), Status::Yes);
    assert_eq!(run("auth:u:s:a"), Status::No);
    assert_eq!(run("auth:u:s:b"), Status::No);
    // A cached yes resets the count: two more failures do not lock.
    assert_eq!(run("auth:u:s:right"), Status::Cached);
    assert_eq!(run("auth:u:s:c"), Status::No);
    assert_eq!(run("auth:u:s:d"), Status::No);
    assert_eq!(run("auth:u:s:e"), Status::No);
    assert!(matches!(run("auth:u:s:f"), Status::Throttled(_)));
}

/// The store alone, at made-up times.
fn store(config: &ThrottleConfig) -> (MemoryStore, Keyer, Generation) {
    let g = Generations::in_memory().current(Slot::of("u", "s"));
    (
        MemoryStore::new(Policy::from_config(config), config.max_accounts),
        Keyer::random(),
        g,
    )
}

#[test]
fn lockouts_double_expire_and_reset_on_a_login() {
    let (s, k, g) = store(&config());
    let account = k.account("u", "s");
    let cred = |p: &str| k.credential("u", "s", &Secret::new(p));
    let t0 = Instant::now();
    let min = |m: u64| Duration::from_secs(60 * m);
    let lock = |at: Instant, tag: &str| {
        let mut started = None;
        for i in 0..3 {
            started = s.failure_now(account, cred(&format!("{tag}{i}")), g, at);
        }
        started
    };
    assert_eq!(lock(t0, "a"), Some(min(5)));
    let probe = cred("probe");
    assert_eq!(
        s.check_now(account, &probe, g, t0 + min(4)),
        Verdict::Locked { remaining: min(1) }
    );
    assert_eq!(s.check_now(account, &probe, g, t0 + min(5)), Verdict::Ask);
    assert_eq!(lock(t0 + min(6), "b"), Some(min(10)));
    assert_eq!(lock(t0 + min(20), "c"), Some(min(20)));
    // A successful login resets the doubling, not the lockout in force.
    s.success_now(account, cred("right"), g, t0 + min(21));
    assert!(matches!(
        s.check_now(account, &probe, g, t0 + min(21)),
        Verdict::Locked { .. }
    ));
    assert_eq!(lock(t0 + min(41), "d"), Some(min(5)));
    // Failures spread wider than the window do not add up.
    let (s, k, g) = store(&config());
    let account = k.account("u", "s");
    for i in 0..10u64 {
        let c = k.credential("u", "s", &Secret::new(format!("w{i}")));
        assert_eq!(s.failure_now(account, c, g, t0 + min(8 * i)), None);
    }
}

#[test]
fn trust_and_remembered_failures_expire() {
    let (s, k, g) = store(&config());
    let account = k.account("u", "s");
    let t0 = Instant::now();
    let right = k.credential("u", "s", &Secret::new("right"));
    let stale = k.credential("u", "s", &Secret::new("stale"));
    s.success_now(account, right, g, t0);
    s.failure_now(account, stale, g, t0);
    let window = Duration::from_secs(15 * 60);
    assert_eq!(
        s.check_now(account, &stale, g, t0 + window / 2),
        Verdict::Repeated
    );
    assert_eq!(s.check_now(account, &stale, g, t0 + window), Verdict::Ask);
    // Locked a week later: the trust has run out.
    let week = Duration::from_secs(7 * 24 * 3600);
    for p in ["a", "b", "c"] {
        s.failure_now(
            account,
            k.credential("u", "s", &Secret::new(p)),
            g,
            t0 + week,
        );
    }
    assert!(matches!(
        s.check_now(account, &right, g, t0 + week),
        Verdict::Locked { .. }
    ));
}

#[test]
fn remembered_failures_are_bounded_per_account() {
    let cfg = ThrottleConfig {
        max_failures: 1000,
        remembered_failures: 4,
        ..config()
    };
    let (s, k, g) = store(&cfg);
    let account = k.account("u", "s");
    let now = Instant::now();
    let cred = |i: usize| k.credential("u", "s", &Secret::new(format!("w{i}")));
    for i in 0..10 {
        s.failure_now(account, cred(i), g, now);
    }
    assert_eq!(s.check_now(account, &cred(9), g, now), Verdict::Repeated);
    assert_eq!(s.check_now(account, &cred(6), g, now), Verdict::Repeated);
    assert_eq!(s.check_now(account, &cred(5), g, now), Verdict::Ask);
}

#[test]
fn a_hundred_thousand_accounts_stay_within_max_accounts() {
    let cfg = ThrottleConfig {
        max_accounts: 1000,
        ..config()
    };
    let (s, k, g) = store(&cfg);
    let now = Instant::now();
    let pw = Secret::new("wrong");
    for i in 0..100_000 {
        let user = format!("user{i}");
        let account = k.account(&user, "s");
        s.failure_now(account, k.credential(&user, "s", &pw), g, now);
        if i % 10_000 == 0 {
            assert!(s.accounts() <= 1000, "{} at {i}", s.accounts());
        }
    }
    assert!(s.accounts() <= 1000, "{}", s.accounts());
    // The most recent are kept, the oldest gone.
    let last = k.account("user99999", "s");
    let cred = k.credential("user99999", "s", &pw);
    assert_eq!(s.check_now(last, &cred, g, now), Verdict::Repeated);
    let first = k.account("user0", "s");
    let cred = k.credential("user0", "s", &pw);
    assert_eq!(s.check_now(first, &cred, g, now), Verdict::Ask);
    // The README's figure: what one account holds at most, map overhead aside.
    let bytes = MemoryStore::bytes_per_account(10);
    eprintln!("at most {bytes} bytes per account");
    assert!((1200..=1600).contains(&bytes), "{bytes}");
}

/// A shared store that is down: every operation fails.
struct Down(AtomicUsize);

#[async_trait]
impl ThrottleStore for Down {
    async fn check(
        &self,
        _: AccountKey,
        _: CredentialKey,
        _: Generation,
        _: Instant,
    ) -> Result<Verdict, StoreError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Timeout)
    }
    async fn record_failure(
        &self,
        _: AccountKey,
        _: CredentialKey,
        _: Generation,
        _: Instant,
    ) -> Result<Option<Duration>, StoreError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn record_success(
        &self,
        _: AccountKey,
        _: CredentialKey,
        _: Generation,
        _: Instant,
    ) -> Result<(), StoreError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Timeout)
    }
}

#[test]
fn a_failing_shared_store_falls_back_to_local_state() {
    let inner = Inner::new();
    let down = Arc::new(Down(AtomicUsize::new(0)));
    let generations = Arc::new(Generations::in_memory());
    let h = ThrottlingHandler::new(Arc::clone(&inner), &config(), Keyer::random(), generations)
        .with_shared(Arc::clone(&down) as Arc<dyn ThrottleStore>);
    let run = |line: &str| run(&h, line).status;
    assert_eq!(run("auth:u:s:right"), Status::Yes);
    assert_eq!(run("auth:u:s:a"), Status::No);
    assert_eq!(run("auth:u:s:a"), Status::Repeated(Scope::Process));
    for p in ["b", "c"] {
        assert_eq!(run(&format!("auth:u:s:{p}")), Status::No);
    }
    assert!(matches!(run("auth:u:s:d"), Status::Throttled(_)));
    assert_eq!(run("auth:u:s:right"), Status::Yes);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 5);
    assert!(down.0.load(Ordering::SeqCst) >= 10);
}
