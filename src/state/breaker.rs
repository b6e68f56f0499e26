//! The circuit breaker of one backend (`backend[].breaker`): after `failures` consecutive
//! *unavailable* results the backend is *open* for `open_for`, and every call is answered
//! `Unavailable` at once, with no network call, so that `on_unavailable = "next"` and
//! `stale_if_error` act at once instead of after a `request_timeout` per login. Then it is
//! *half-open*: one call is let through as a probe (concurrent callers are refused meanwhile);
//! any answer closes the breaker, an outage re-opens it.
//!
//! Owns two things: [`Machine`], the state machine, pure (the time is passed in, so it is
//! tested without sleeping), and [`BreakerBackend`], a [`Backend`] decorator that puts every
//! operation (questions and changes alike) through it. The decorator is applied where
//! backends are built ([`crate::router::build_backend`]): the router, the cache and the
//! request loop do not know it exists.
//!
//! Must not decide answers: it only ever turns a call into `Unavailable`, never into a yes or
//! a no, so a chain and the cache treat an open breaker exactly like the outage it stands
//! for (SPEC §10). What counts as an outage is [`BackendError::Unavailable`] only, which each
//! backend already reserves for a peer or network failure (refused, reset, TLS, timeout,
//! 502/503/504): a no, a 429, `Unsupported`, `Protocol` and `Internal` are answers of a
//! reachable backend and reset the count. A call dropped before it finished (the request
//! deadline expired around it) counts as an outage too: the backend did not answer in time,
//! and a cancelled probe must not leave the breaker half-open for ever.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::{Backend, BackendError, BackendResult, BreakerConfig, CheckReport};
use crate::request::Account;
use crate::secret::Secret;

/// Where a breaker is, with the value its gauge exports
/// (`extauth_bridge_breaker_state`: 0 closed, 1 open, 2 half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open,
    HalfOpen,
}

impl Phase {
    pub fn gauge(self) -> u8 {
        match self {
            Phase::Closed => 0,
            Phase::Open => 1,
            Phase::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `failures` consecutive outages so far.
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The probe is in flight.
    HalfOpen,
}

/// Leave to call the backend once, from [`Machine::admit`]; hand it back to
/// [`Machine::settle`] with the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The state the call was admitted in: a result that arrives after the breaker has moved
    /// on (a slow call admitted while closed that ends once it is open) changes nothing, so
    /// that a late failure cannot extend an open period and only the probe decides a half-open
    /// breaker.
    epoch: u64,
}

/// Why a call is refused without reaching the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Open: the next probe is let through after `left`.
    Open { left: Duration },
    /// Half-open, and the one probe is in flight.
    Probing,
}

impl Refusal {
    fn into_error(self) -> BackendError {
        BackendError::Unavailable(match self {
            Refusal::Open { left } => format!(
                "circuit breaker open (next probe in {:.1}s)",
                left.as_secs_f64()
            ),
            Refusal::Probing => "circuit breaker open (a probe is in flight)".to_owned(),
        })
    }
}

/// The breaker's state machine. Every transition returns the new [`Phase`], so that the
/// caller logs and exports each change exactly once.
#[derive(Debug)]
pub struct Machine {
    config: BreakerConfig,
    state: State,
    epoch: u64,
}

impl Machine {
    pub fn new(config: BreakerConfig) -> Machine {
        Machine {
            config,
            state: State::Closed { failures: 0 },
            epoch: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Closed { .. } => Phase::Closed,
            State::Open { .. } => Phase::Open,
            State::HalfOpen => Phase::HalfOpen,
        }
    }

    fn enter(&mut self, state: State) -> Option<Phase> {
        self.state = state;
        self.epoch += 1;
        Some(self.phase())
    }

    /// May a call go to the backend now? An open breaker whose `open_for` has passed
    /// becomes half-open here, and this call is its probe.
    pub fn admit(&mut self, now: Instant) -> (Result<Ticket, Refusal>, Option<Phase>) {
        let mut change = None;
        match self.state {
            State::Closed { .. } => {}
            State::Open { until } if now < until => {
                return (Err(Refusal::Open { left: until - now }), None);
            }
            State::Open { .. } => change = self.enter(State::HalfOpen),
            State::HalfOpen => return (Err(Refusal::Probing), None),
        }
        (Ok(Ticket { epoch: self.epoch }), change)
    }

    /// The result of an admitted call: `outage` for `Unavailable` (or a call that never
    /// finished), otherwise the backend answered.
    pub fn settle(&mut self, ticket: Ticket, outage: bool, now: Instant) -> Option<Phase> {
        if ticket.epoch != self.epoch {
            return None;
        }
        let open = State::Open {
            until: now + self.config.open_for,
        };
        match (self.state, outage) {
            (State::Closed { failures }, true) if failures + 1 >= self.config.failures => {
                self.enter(open)
            }
            (State::Closed { failures }, true) => {
                self.state = State::Closed {
                    failures: failures + 1,
                };
                None
            }
            (State::Closed { .. }, false) => {
                self.state = State::Closed { failures: 0 };
                None
            }
            (State::HalfOpen, true) => self.enter(open),
            (State::HalfOpen, false) => self.enter(State::Closed { failures: 0 }),
            // A ticket is only issued while closed or half-open, and the epoch changes on
            // every transition.
            (State::Open { .. }, _) => None,
        }
    }
}

/// A backend behind its circuit breaker.
pub struct BreakerBackend {
    inner: Arc<dyn Backend>,
    machine: Mutex<Machine>,
    config: BreakerConfig,
}

impl BreakerBackend {
    pub fn new(inner: Arc<dyn Backend>, config: BreakerConfig) -> BreakerBackend {
        crate::metrics::breaker_state(inner.name(), Phase::Closed.gauge());
        BreakerBackend {
            inner,
            machine: Mutex::new(Machine::new(config)),
            config,
        }
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `call` if the breaker lets it through, and feeds its result back.
    async fn guarded(&self, call: impl Future<Output = BackendResult>) -> BackendResult {
        let (admitted, change) = {
            let mut machine = self.lock();
            let (admitted, change) = machine.admit(Instant::now());
            self.export(change);
            (admitted, change)
        };
        self.log(change, None);
        let ticket = admitted.map_err(Refusal::into_error)?;
        let mut pending = Pending {
            breaker: self,
            ticket: Some(ticket),
        };
        let result = call.await;
        let why = match &result {
            Err(e @ BackendError::Unavailable(_)) => Some(e.to_string()),
            _ => None,
        };
        pending.settle(why);
        result
    }

    /// Sets the gauge while the machine is locked, so that two changes in a row cannot be
    /// exported in the wrong order.
    fn export(&self, change: Option<Phase>) {
        if let Some(phase) = change {
            crate::metrics::breaker_state(self.inner.name(), phase.gauge());
        }
    }

    fn log(&self, change: Option<Phase>, outage: Option<&str>) {
        let backend = self.inner.name();
        match change {
            None => {}
            Some(Phase::Open) => tracing::warn!(
                backend,
                breaker = "open",
                failures = self.config.failures,
                open_for_ms = u64::try_from(self.config.open_for.as_millis()).unwrap_or(u64::MAX),
                error = outage.unwrap_or("-"),
                "circuit breaker open: the backend is not asked until a probe succeeds"
            ),
            Some(Phase::HalfOpen) => tracing::info!(
                backend,
                breaker = "half-open",
                "circuit breaker half-open: one request probes the backend"
            ),
            Some(Phase::Closed) => tracing::info!(
                backend,
                breaker = "closed",
                "circuit breaker closed: the backend answered"
            ),
        }
    }
}

/// An admitted call not yet settled. Dropped unsettled (the request deadline cancelled the
/// call, or it panicked), it settles as an outage: otherwise a cancelled probe would leave
/// the breaker half-open, refusing every call for ever.
struct Pending<'a> {
    breaker: &'a BreakerBackend,
    ticket: Option<Ticket>,
}

impl Pending<'_> {
    /// `outage`: the error text of an outage, `None` for an answer.
    fn settle(&mut self, outage: Option<String>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let change = {
            let mut machine = self.breaker.lock();
            let change = machine.settle(ticket, outage.is_some(), Instant::now());
            self.breaker.export(change);
            change
        };
        self.breaker.log(change, outage.as_deref());
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.ticket.is_some() {
            self.settle(Some("no answer before the request deadline".to_owned()));
        }
    }
}

#[async_trait]
impl Backend for BreakerBackend {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn knows_its_accounts(&self) -> bool {
        self.inner.knows_its_accounts()
    }

    async fn authenticate(&self, account: &Account, password: &Secret) -> BackendResult {
        self.guarded(self.inner.authenticate(account, password))
            .await
    }

    async fn user_exists(&self, account: &Account) -> BackendResult {
        self.guarded(self.inner.user_exists(account)).await
    }

    /// `check` asks the backend itself, whatever the breaker says (an operator wants to
    /// know whether the backend works now), and reports the breaker's state with it.
    async fn check(&self) -> Result<String, BackendError> {
        Ok(self.check_report().await?.detail)
    }

    async fn check_report(&self) -> Result<CheckReport, BackendError> {
        let mut report = self.inner.check_report().await?;
        report.detail = format!(
            "{}; circuit breaker {} (opens for {} after {} consecutive outage(s))",
            report.detail,
            self.phase().as_str(),
            humantime::format_duration(self.config.open_for),
            self.config.failures
        );
        Ok(report)
    }

    async fn set_password(&self, account: &Account, password: &Secret) -> BackendResult {
        self.guarded(self.inner.set_password(account, password))
            .await
    }

    async fn register(&self, account: &Account, password: &Secret) -> BackendResult {
        self.guarded(self.inner.register(account, password)).await
    }

    async fn remove_user(&self, account: &Account) -> BackendResult {
        self.guarded(self.inner.remove_user(account)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config(failures: u32, open_for_ms: u64) -> BreakerConfig {
        BreakerConfig {
            failures,
            open_for: Duration::from_millis(open_for_ms),
        }
    }

    fn fail(m: &mut Machine, now: Instant) -> Option<Phase> {
        let ticket = m.admit(now).0.expect("admitted");
        m.settle(ticket, true, now)
    }

    #[test]
    fn opens_after_consecutive_outages_only() {
        let t0 = Instant::now();
        let mut m = Machine::new(config(3, 10_000));
        assert_eq!(fail(&mut m, t0), None);
        assert_eq!(fail(&mut m, t0), None);
        // An answer in between resets the count.
        let ticket = m.admit(t0).0.unwrap();
        assert_eq!(m.settle(ticket, false, t0), None);
        assert_eq!(fail(&mut m, t0), None);
        assert_eq!(fail(&mut m, t0), None);
        assert_eq!(m.phase(), Phase::Closed);
        assert_eq!(fail(&mut m, t0), Some(Phase::Open));
        let (refused, change) = m.admit(t0 + Duration::from_millis(9_999));
        assert_eq!(
            refused,
            Err(Refusal::Open {
                left: Duration::from_millis(1)
            })
        );
        assert_eq!(change, None);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let t0 = Instant::now();
        let mut m = Machine::new(config(1, 100));
        assert_eq!(fail(&mut m, t0), Some(Phase::Open));
        let t1 = t0 + Duration::from_millis(100);
        let (probe, change) = m.admit(t1);
        assert_eq!(change, Some(Phase::HalfOpen));
        let probe = probe.unwrap();
        // Concurrent callers during the probe are refused, at once.
        assert_eq!(m.admit(t1).0, Err(Refusal::Probing));
        assert_eq!(
            m.admit(t1 + Duration::from_secs(60)).0,
            Err(Refusal::Probing)
        );
        // An outage re-opens it for a new open_for from now.
        let t2 = t1 + Duration::from_millis(5);
        assert_eq!(m.settle(probe, true, t2), Some(Phase::Open));
        assert!(matches!(
            m.admit(t2 + Duration::from_millis(99)).0,
            Err(Refusal::Open { .. })
        ));
        let t3 = t2 + Duration::from_millis(100);
        let (probe, change) = m.admit(t3);
        assert_eq!(change, Some(Phase::HalfOpen));
        // Any answer closes it, and calls go through again.
        assert_eq!(m.settle(probe.unwrap(), false, t3), Some(Phase::Closed));
        assert!(m.admit(t3).0.is_ok());
    }

    #[test]
    fn late_results_of_an_earlier_state_change_nothing() {
        let t0 = Instant::now();
        let mut m = Machine::new(config(2, 100));
        let slow_failure = m.admit(t0).0.unwrap();
        let slow_success = m.admit(t0).0.unwrap();
        fail(&mut m, t0);
        assert_eq!(fail(&mut m, t0), Some(Phase::Open));
        // A call admitted while closed and ending now neither extends nor closes it.
        assert_eq!(m.settle(slow_success, false, t0), None);
        assert_eq!(
            m.settle(slow_failure, true, t0 + Duration::from_millis(50)),
            None
        );
        assert_eq!(m.phase(), Phase::Open);
        assert!(m.admit(t0 + Duration::from_millis(100)).0.is_ok());
    }

    /// Answers each call with the next scripted result, or hangs when told to.
    struct Scripted {
        calls: AtomicUsize,
        answer: Mutex<fn() -> BackendResult>,
        hang: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Backend for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn authenticate(&self, _: &Account, _: &Secret) -> BackendResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let answer = *self.answer.lock().unwrap();
            answer()
        }
        async fn user_exists(&self, _: &Account) -> BackendResult {
            Ok(true)
        }
        async fn check(&self) -> Result<String, BackendError> {
            Ok("scripted".into())
        }
    }

    fn scripted(answer: fn() -> BackendResult) -> Arc<Scripted> {
        Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            answer: Mutex::new(answer),
            hang: Default::default(),
        })
    }

    fn account() -> Account {
        Account {
            user: "u".into(),
            server: "s".into(),
        }
    }

    #[tokio::test]
    async fn a_no_and_a_rate_limit_never_open_it_an_outage_does() {
        let inner = scripted(|| Ok(false));
        let breaker = BreakerBackend::new(inner.clone(), config(2, 60_000));
        let (a, p) = (account(), Secret::new("p"));
        let rate_limited = || {
            Err(BackendError::Protocol(
                "check_password: unexpected HTTP 429".into(),
            ))
        };
        for answer in [(|| Ok(false)) as fn() -> BackendResult, rate_limited] {
            *inner.answer.lock().unwrap() = answer;
            for _ in 0..5 {
                assert!(!matches!(
                    breaker.authenticate(&a, &p).await,
                    Err(BackendError::Unavailable(_))
                ));
            }
            assert_eq!(breaker.phase(), Phase::Closed);
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 10);
        *inner.answer.lock().unwrap() = || Err(BackendError::Unavailable("refused".into()));
        for _ in 0..2 {
            let _ = breaker.authenticate(&a, &p).await;
        }
        assert_eq!(breaker.phase(), Phase::Open);
        // Open: refused at once, with no call, for every operation.
        let e = breaker.authenticate(&a, &p).await.unwrap_err();
        assert!(e.to_string().contains("circuit breaker open"), "{e}");
        assert!(breaker.user_exists(&a).await.is_err());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 12);
    }

    #[tokio::test]
    async fn a_probe_cancelled_by_the_deadline_reopens_it() {
        let inner = scripted(|| Err(BackendError::Unavailable("timed out".into())));
        let breaker = BreakerBackend::new(inner.clone(), config(1, 20));
        let (a, p) = (account(), Secret::new("p"));
        let _ = breaker.authenticate(&a, &p).await;
        assert_eq!(breaker.phase(), Phase::Open);
        tokio::time::sleep(Duration::from_millis(30)).await;
        inner.hang.store(true, Ordering::SeqCst);
        let deadline = Duration::from_millis(20);
        let cancelled = tokio::time::timeout(deadline, breaker.authenticate(&a, &p)).await;
        assert!(cancelled.is_err(), "the probe hangs until the deadline");
        // Not stuck half-open: open again, and the next probe goes through in time.
        assert_eq!(breaker.phase(), Phase::Open);
        tokio::time::sleep(Duration::from_millis(30)).await;
        inner.hang.store(false, Ordering::SeqCst);
        *inner.answer.lock().unwrap() = || Ok(true);
        assert!(breaker.authenticate(&a, &p).await.unwrap());
        assert_eq!(breaker.phase(), Phase::Closed);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }
}
