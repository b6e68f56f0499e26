//! Which backends answer for which domains, and how a chain of them decides.
//!
//! A request goes to the chain of the first `[[route]]` whose domain matches; without any
//! route, every domain uses every backend in file order. In a chain, a question (`auth`,
//! `isuser`) asks the next backend on `Unsupported`, and on `Unavailable` when the route says
//! `on_unavailable = "next"`; a yes or a no is final. A change (`setpass`, `tryregister`,
//! `removeuser`) is never made below a backend that holds or may hold the account: an outage
//! never passes it down, and `Unsupported` passes it only past a backend that says it does not
//! hold the account (SPEC §10: a chain never creates below what it cannot see).

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Backend, BackendError, BackendResult};
use crate::config::{BackendConfig, Config, ConfigError, DomainPattern, OnUnavailable};
use crate::outcome::{Outcome, Status};
use crate::request::{Account, Request};
use crate::secret::Secret;

/// Answers one request. The request loop depends on this, not on backends or routes.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, request: &Request) -> Outcome;
}

struct Route {
    domains: Vec<DomainPattern>,
    chain: Chain,
}

#[derive(Clone)]
struct Chain {
    backends: Vec<Arc<dyn Backend>>,
    on_unavailable: OnUnavailable,
}

/// Builds a backend from its configuration, behind its circuit breaker when it has one
/// ([`crate::state::breaker`]). Kept here so that adding a backend kind means
/// touching this match and its own module, nothing else.
pub fn build_backend(
    config: &BackendConfig,
    index: usize,
    file: &str,
) -> Result<Arc<dyn Backend>, ConfigError> {
    let built: Arc<dyn Backend> = match config {
        BackendConfig::File(c) => Arc::new(crate::backend::FileBackend::new(&c.name, &c.path)),
        BackendConfig::Http(c) => Arc::new(
            crate::backend::HttpBackend::new(c)
                .map_err(|(k, m)| ConfigError::new(file, format!("backend[{index}].{k}"), m))?,
        ),
        BackendConfig::Oauth2(c) => Arc::new(
            crate::backend::OAuth2Backend::new(c)
                .map_err(|(k, m)| ConfigError::new(file, format!("backend[{index}].{k}"), m))?,
        ),
    };
    // Decorators, so the router never learns of them: the breaker next to the backend
    // (an open one answers before any network call), the remembering outside it (it sees
    // the answer the chain gets).
    let built: Arc<dyn Backend> = match config.breaker() {
        Some(breaker) => Arc::new(crate::state::breaker::BreakerBackend::new(built, *breaker)),
        None => built,
    };
    Ok(match config.remember_accounts() {
        Some(path) => Arc::new(crate::backend::RememberingBackend::new(built, path)),
        None => built,
    })
}

pub struct Router {
    routes: Vec<Route>,
    /// Used when the configuration has no `[[route]]` at all.
    default_chain: Option<Chain>,
}

impl Router {
    /// Builds the backends and routes of a validated configuration.
    pub fn from_config(config: &Config, file: &str) -> Result<Router, ConfigError> {
        if config.backends.is_empty() {
            return Err(ConfigError::new(
                file,
                "backend",
                "no [[backend]] configured (or use --users FILE)",
            ));
        }
        let mut built = Vec::new();
        for (i, b) in config.backends.iter().enumerate() {
            built.push((b.name().to_owned(), build_backend(b, i, file)?));
        }
        let find = |name: &str| {
            built
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| Arc::clone(b))
        };
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let domains = r
                .domains
                .iter()
                .map(|d| DomainPattern::parse(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::new(file, format!("route[{i}].domains"), e))?;
            let backends = r
                .backends
                .iter()
                .map(|n| {
                    find(n).ok_or_else(|| {
                        ConfigError::new(
                            file,
                            format!("route[{i}].backends"),
                            format!("no backend named {n:?}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(Route {
                domains,
                chain: Chain {
                    backends,
                    on_unavailable: r.on_unavailable,
                },
            });
        }
        let default_chain = routes.is_empty().then(|| Chain {
            backends: built.iter().map(|(_, b)| Arc::clone(b)).collect(),
            on_unavailable: OnUnavailable::Fail,
        });
        Ok(Router {
            routes,
            default_chain,
        })
    }

    /// A router with one chain for every domain: what `--users` and tests use.
    pub fn single_chain(backends: Vec<Arc<dyn Backend>>, on_unavailable: OnUnavailable) -> Router {
        Router {
            routes: Vec::new(),
            default_chain: Some(Chain {
                backends,
                on_unavailable,
            }),
        }
    }

    fn chain_for(&self, server: &str) -> Option<&Chain> {
        self.routes
            .iter()
            .find(|r| r.domains.iter().any(|d| d.matches(server)))
            .map(|r| &r.chain)
            .or(self.default_chain.as_ref())
    }
}

/// Which operation to run on each backend of a chain.
#[derive(Clone, Copy)]
enum Op<'a> {
    Authenticate(&'a Secret),
    UserExists,
    SetPassword(&'a Secret),
    Register(&'a Secret),
    RemoveUser,
}

impl Op<'_> {
    async fn run(self, backend: &dyn Backend, account: &Account) -> BackendResult {
        match self {
            Op::Authenticate(p) => backend.authenticate(account, p).await,
            Op::UserExists => backend.user_exists(account).await,
            Op::SetPassword(p) => backend.set_password(account, p).await,
            Op::Register(p) => backend.register(account, p).await,
            Op::RemoveUser => backend.remove_user(account).await,
        }
    }
}

/// What a chain's question came to: the outcome, the backend that decided (if one did), and
/// whether a backend before it was unavailable and passed over.
struct Answer {
    by: Option<usize>,
    outcome: Outcome,
    passed_unavailable: bool,
}

impl Chain {
    /// Asks a question (`auth`, `isuser`) of the backends in order until one gives a final
    /// answer. `Unsupported` asks the next one; `Unavailable` too when the route says
    /// `on_unavailable = "next"`.
    ///
    /// A *no* below a backend that was unavailable is not a no: the backend that may hold the
    /// account never answered. It is reported as that backend's outage (still `0`), so that
    /// logs, metrics and the throttle never count an outage as a wrong password or a missing
    /// account; but as [`Status::UnavailableThenNo`], never as a plain outage, so that no
    /// cached yes is served in its place (the backend below holds credentials and refused
    /// this one). A *yes* below it stands: that backend holds the credential itself.
    async fn ask(&self, op: Op<'_>, account: &Account) -> Answer {
        let mut last_error: Option<(usize, BackendError)> = None;
        let mut unavailable: Option<(usize, BackendError)> = None;
        for (i, backend) in self.backends.iter().enumerate() {
            // Counted only once the next backend is really asked: a failure that ends the
            // chain is the request's own outcome, and counted as such.
            if let Some((j, e @ BackendError::Unavailable(_))) = &last_error {
                crate::metrics::passed_over(self.backends[*j].name(), e.kind());
            }
            match op.run(backend.as_ref(), account).await {
                Ok(answer) => {
                    if let (false, Some((j, outage))) = (answer, &unavailable) {
                        return Answer {
                            by: None,
                            outcome: Outcome {
                                answer: false,
                                backend: Some(self.backends[*j].name().to_owned()),
                                status: Status::UnavailableThenNo(format!(
                                    "{outage}; `{}` below it said no",
                                    backend.name()
                                )),
                            },
                            passed_unavailable: true,
                        };
                    }
                    return Answer {
                        by: Some(i),
                        outcome: Outcome::answered(backend.name(), answer),
                        passed_unavailable: unavailable.is_some(),
                    };
                }
                Err(BackendError::Unsupported) => {
                    last_error = Some((i, BackendError::Unsupported));
                }
                Err(BackendError::Unavailable(why))
                    if self.on_unavailable == OnUnavailable::Next =>
                {
                    tracing::debug!(backend = backend.name(), error = %why, "backend unavailable, asking the next one");
                    last_error = Some((i, BackendError::Unavailable(why.clone())));
                    unavailable.get_or_insert((i, BackendError::Unavailable(why)));
                }
                Err(e) => {
                    return Answer {
                        by: None,
                        outcome: Outcome::error(backend.name(), e),
                        passed_unavailable: unavailable.is_some(),
                    }
                }
            }
        }
        let outcome = match unavailable.or(last_error) {
            Some((i, e)) => Outcome::error(self.backends[i].name(), e),
            None => Outcome::refused("no backend in the route"),
        };
        Answer {
            by: None,
            outcome,
            passed_unavailable: false,
        }
    }

    /// Runs a change (`setpass`, `tryregister`, `removeuser`) on the first backend that
    /// supports it, under two rules that keep a chain from creating or changing, below, an
    /// account that a backend above it holds:
    ///
    /// - *unavailable* never passes a change down, whatever `on_unavailable` says: during an
    ///   API outage, `tryregister:alice` must not create `alice` in the users file behind it
    ///   (and so hand whoever registered her the API's alice at every later outage), and a
    ///   `setpass` must not land in a file the API never reads;
    /// - `Unsupported` passes it down only when that backend proves it does not hold the
    ///   account: it can list its accounts ([`Backend::knows_its_accounts`]) and its
    ///   `user_exists` says no. An IdP, which may hold any name, stops the change there.
    async fn change(&self, op: Op<'_>, account: &Account) -> Outcome {
        for (i, backend) in self.backends.iter().enumerate() {
            match op.run(backend.as_ref(), account).await {
                Ok(answer) => return Outcome::answered(backend.name(), answer),
                Err(BackendError::Unsupported) if i + 1 < self.backends.len() => {
                    if let Err(refusal) = self.does_not_hold(i, account).await {
                        return refusal;
                    }
                }
                Err(e) => return Outcome::error(backend.name(), e),
            }
        }
        match self.backends.last() {
            Some(b) => Outcome::error(b.name(), BackendError::Unsupported),
            None => Outcome::refused("no backend in the route"),
        }
    }

    /// Runs `op` on backend `i` alone: its answer, or its error.
    async fn run_one(&self, i: usize, op: Op<'_>, account: &Account) -> Outcome {
        let backend = &self.backends[i];
        match op.run(backend.as_ref(), account).await {
            Ok(answer) => Outcome::answered(backend.name(), answer),
            Err(e) => Outcome::error(backend.name(), e),
        }
    }

    /// `Ok` when backend `i` provably does not hold the account, so that a change may be
    /// made below it; otherwise the outcome to answer (always `0`).
    async fn does_not_hold(&self, i: usize, account: &Account) -> Result<(), Outcome> {
        let backend = &self.backends[i];
        if !backend.knows_its_accounts() {
            return Err(Outcome::refused(
                "a backend above may hold the account and cannot change it: not passed down",
            ));
        }
        match backend.user_exists(account).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(Outcome::refused(
                "the account is held by a backend that cannot change it: not passed down",
            )),
            Err(BackendError::Unsupported) => Err(Outcome::refused(
                "a backend above cannot tell whether it holds the account: not passed down",
            )),
            Err(e) => Err(Outcome::error(backend.name(), e)),
        }
    }
}

#[async_trait]
impl Handler for Router {
    async fn handle(&self, request: &Request) -> Outcome {
        let account = request.account();
        let Some(chain) = self.chain_for(&account.server) else {
            return Outcome::refused("no route for this domain");
        };
        match request {
            Request::Auth(_, p)
            | Request::SetPass(_, p)
            | Request::TryRegister(_, p)
            | Request::RemoveUser3(_, p)
                if p.is_empty() =>
            {
                Outcome::refused("empty password")
            }
            Request::CertAuth(_) => Outcome::refused("certauth is not supported"),
            Request::Auth(_, p) => chain.ask(Op::Authenticate(p), account).await.outcome,
            Request::IsUser(_) => chain.ask(Op::UserExists, account).await.outcome,
            Request::SetPass(_, p) => chain.change(Op::SetPassword(p), account).await,
            Request::TryRegister(_, p) => chain.change(Op::Register(p), account).await,
            Request::RemoveUser(_) => chain.change(Op::RemoveUser, account).await,
            Request::RemoveUser3(_, p) => {
                // Remove from the backend that vouched for the password, nowhere else, and
                // only under the rules of `change`: not below an outage, and not below a
                // backend that may hold the account too.
                let auth = chain.ask(Op::Authenticate(p), account).await;
                let Some(i) = auth.by.filter(|_| auth.outcome.answer) else {
                    return auth.outcome;
                };
                if auth.passed_unavailable {
                    return Outcome::refused(
                        "a backend above was unavailable: a removal is not passed down",
                    );
                }
                for j in 0..i {
                    if let Err(refusal) = chain.does_not_hold(j, account).await {
                        return refusal;
                    }
                }
                chain.run_one(i, Op::RemoveUser, account).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;

    struct Fixed(&'static str, Result<bool, fn() -> BackendError>);

    #[async_trait]
    impl Backend for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn authenticate(&self, _: &Account, _: &Secret) -> BackendResult {
            self.1.map_err(|f| f())
        }
        async fn user_exists(&self, _: &Account) -> BackendResult {
            self.1.map_err(|f| f())
        }
        async fn check(&self) -> Result<String, BackendError> {
            Ok("fixed".into())
        }
    }

    fn auth() -> Request {
        Request::parse(b"auth:romeo:example.net:pw").unwrap()
    }

    fn run(router: &Router, req: &Request) -> Outcome {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(router.handle(req))
    }

    #[test]
    fn unsupported_falls_through_unavailable_fails_closed() {
        let unsupported = Arc::new(Fixed("a", Err(|| BackendError::Unsupported)));
        let down = Arc::new(Fixed("b", Err(|| BackendError::Unavailable("down".into()))));
        let yes = Arc::new(Fixed("c", Ok(true)));

        let r = Router::single_chain(vec![unsupported.clone(), yes.clone()], OnUnavailable::Fail);
        let o = run(&r, &auth());
        assert!(o.answer);
        assert_eq!(o.backend.as_deref(), Some("c"));

        let r = Router::single_chain(vec![down.clone(), yes.clone()], OnUnavailable::Fail);
        let o = run(&r, &auth());
        assert!(!o.answer);
        assert!(matches!(o.status, Status::Error("unavailable", _)));

        let r = Router::single_chain(vec![down, yes], OnUnavailable::Next);
        assert!(run(&r, &auth()).answer);

        let r = Router::single_chain(vec![unsupported], OnUnavailable::Fail);
        assert!(!run(&r, &auth()).answer);
    }

    /// A backend whose every operation gives one answer, that counts its calls, and that
    /// says whether it knows its accounts.
    struct Scripted {
        name: &'static str,
        answer: fn() -> BackendResult,
        exists: fn() -> BackendResult,
        knows: bool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Scripted {
        fn new(name: &'static str, answer: fn() -> BackendResult) -> Scripted {
            Scripted {
                name,
                answer,
                exists: answer,
                knows: true,
                calls: Default::default(),
            }
        }
        fn calls(&self) -> usize {
            self.calls.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn reply(&self, f: fn() -> BackendResult) -> BackendResult {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            f()
        }
    }

    #[async_trait]
    impl Backend for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        fn knows_its_accounts(&self) -> bool {
            self.knows
        }
        async fn authenticate(&self, _: &Account, _: &Secret) -> BackendResult {
            self.reply(self.answer)
        }
        async fn user_exists(&self, _: &Account) -> BackendResult {
            self.reply(self.exists)
        }
        async fn check(&self) -> Result<String, BackendError> {
            Ok("scripted".into())
        }
        async fn set_password(&self, _: &Account, _: &Secret) -> BackendResult {
            self.reply(self.answer)
        }
        async fn register(&self, _: &Account, _: &Secret) -> BackendResult {
            self.reply(self.answer)
        }
        async fn remove_user(&self, _: &Account) -> BackendResult {
            self.reply(self.answer)
        }
    }

    fn down() -> BackendResult {
        Err(BackendError::Unavailable("connection refused".into()))
    }
    fn unsupported() -> BackendResult {
        Err(BackendError::Unsupported)
    }
    fn yes() -> BackendResult {
        Ok(true)
    }
    fn no() -> BackendResult {
        Ok(false)
    }

    const CHANGES: [&[u8]; 4] = [
        b"tryregister:alice:example.net:attacker-pw",
        b"setpass:alice:example.net:attacker-pw",
        b"removeuser:alice:example.net",
        b"removeuser3:alice:example.net:pw",
    ];

    #[test]
    fn an_outage_never_passes_a_change_down() {
        for frame in CHANGES {
            let api = Arc::new(Scripted::new("api", down));
            let file = Arc::new(Scripted::new("file", yes));
            let r = Router::single_chain(vec![api, file.clone()], OnUnavailable::Next);
            let o = run(&r, &Request::parse(frame).unwrap());
            assert!(!o.answer, "{}", String::from_utf8_lossy(frame));
            let asked = if frame.starts_with(b"removeuser3") {
                1 // the password check may fall through; the removal must not
            } else {
                0
            };
            assert_eq!(file.calls(), asked, "{}", String::from_utf8_lossy(frame));
        }
    }

    #[test]
    fn a_change_is_never_made_below_a_backend_that_may_hold_the_account() {
        for frame in CHANGES {
            let name = String::from_utf8_lossy(frame).into_owned();
            // An IdP: cannot change accounts, answers isuser by policy (here: "no").
            let mut idp = Scripted::new("idp", unsupported);
            idp.exists = no;
            idp.knows = false;
            if frame.starts_with(b"removeuser3") {
                idp.answer = unsupported;
            }
            let file = Arc::new(Scripted::new("file", yes));
            let r = Router::single_chain(vec![Arc::new(idp), file.clone()], OnUnavailable::Next);
            let o = run(&r, &Request::parse(frame).unwrap());
            assert!(!o.answer, "{name}");
            assert!(
                matches!(o.status, Status::Refused(_)),
                "{name}: {:?}",
                o.status
            );

            // An API that holds the account but cannot change it (501).
            let mut api = Scripted::new("api", unsupported);
            api.exists = yes;
            let file = Arc::new(Scripted::new("file", yes));
            let r = Router::single_chain(vec![Arc::new(api), file.clone()], OnUnavailable::Next);
            assert!(!run(&r, &Request::parse(frame).unwrap()).answer, "{name}");

            // An API that cannot say whether it holds the account (isuser 501 too).
            let api = Arc::new(Scripted::new("api", unsupported));
            let r = Router::single_chain(vec![api, file.clone()], OnUnavailable::Next);
            assert!(!run(&r, &Request::parse(frame).unwrap()).answer, "{name}");

            // An API that says it does not hold the account: the file below may change it.
            let mut api = Scripted::new("api", unsupported);
            api.exists = no;
            let file = Arc::new(Scripted::new("file", yes));
            let r = Router::single_chain(vec![Arc::new(api), file.clone()], OnUnavailable::Fail);
            let o = run(&r, &Request::parse(frame).unwrap());
            assert!(o.answer, "{name}: {:?}", o.status);
            assert_eq!(o.backend.as_deref(), Some("file"));
        }
    }

    #[test]
    fn a_no_below_an_outage_is_reported_as_the_outage() {
        for frame in [
            &b"isuser:alice:example.net"[..],
            b"auth:alice:example.net:pw",
        ] {
            let api = Arc::new(Scripted::new("api", down));
            let file = Arc::new(Scripted::new("file", no));
            let r = Router::single_chain(vec![api, file.clone()], OnUnavailable::Next);
            let o = run(&r, &Request::parse(frame).unwrap());
            assert!(!o.answer);
            assert_eq!(file.calls(), 1);
            assert_eq!(o.backend.as_deref(), Some("api"));
            // Counted as the outage, but not one a cached yes may stand in for.
            assert!(
                matches!(o.status, Status::UnavailableThenNo(_)),
                "{:?}",
                o.status
            );
            assert_eq!(o.status.as_str(), "unavailable");
            // A yes below the outage stands: the file holds that credential itself.
            let api = Arc::new(Scripted::new("api", down));
            let file = Arc::new(Scripted::new("file", yes));
            let r = Router::single_chain(vec![api, file], OnUnavailable::Next);
            assert!(run(&r, &Request::parse(frame).unwrap()).answer);
        }
    }

    #[test]
    fn empty_password_and_certauth_never_reach_a_backend() {
        let panics = Arc::new(Fixed("x", Ok(true)));
        let r = Router::single_chain(vec![panics], OnUnavailable::Fail);
        let o = run(&r, &Request::parse(b"auth:romeo:example.net:").unwrap());
        assert!(!o.answer);
        assert!(o.backend.is_none());
        assert!(!run(&r, &Request::parse(b"certauth:romeo:example.net").unwrap()).answer);
    }
}
