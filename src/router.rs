//! Which backends answer for which domains, and how a chain of them decides.
//!
//! A request goes to the chain of the first `[[route]]` whose domain matches; without any
//! route, every domain uses every backend in file order. In a chain, `Unsupported` asks the
//! next backend; `Unavailable` answers `0` unless the route says `on_unavailable = "next"`;
//! a yes or a no is final.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Backend, BackendError, BackendResult};
use crate::config::{BackendConfig, Config, ConfigError, OnUnavailable};
use crate::request::{normalize_account, Account, Outcome, Request};
use crate::secret::Secret;

/// Answers one request. The request loop depends on this, not on backends or routes.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, request: &Request) -> Outcome;
}

/// A domain in a route: exact, or `*.example.org` for any subdomain of example.org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// Holds `.example.org`.
    Subdomains(String),
}

impl DomainPattern {
    pub fn parse(pattern: &str) -> Result<DomainPattern, String> {
        let p = normalize_account(pattern.trim()).into_owned();
        let valid = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && !s.ends_with('.')
                && !s.contains(['*', ':', '@', '/'])
                && !s.chars().any(char::is_whitespace)
        };
        if let Some(rest) = p.strip_prefix("*.") {
            if valid(rest) {
                return Ok(DomainPattern::Subdomains(format!(".{rest}")));
            }
        } else if valid(&p) {
            return Ok(DomainPattern::Exact(p));
        }
        Err(format!(
            "invalid domain pattern {pattern:?} (use \"example.org\" or \"*.example.org\")"
        ))
    }

    /// Compared after the one normalisation the cache and the users file use: with an
    /// ASCII-only comparison, `ÉTÉ.example` would miss the route of `été.example` and be
    /// answered by another route's backends.
    pub fn matches(&self, server: &str) -> bool {
        let server = normalize_account(server);
        match self {
            DomainPattern::Exact(d) => *server == **d,
            DomainPattern::Subdomains(suffix) => {
                server.len() > suffix.len() && server.ends_with(suffix.as_str())
            }
        }
    }
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

/// Builds a backend from its configuration. Kept here so that adding a backend kind means
/// touching this match and its own module, nothing else.
pub fn build_backend(
    config: &BackendConfig,
    index: usize,
    file: &str,
) -> Result<Arc<dyn Backend>, ConfigError> {
    Ok(match config {
        BackendConfig::File(c) => Arc::new(crate::backend::FileBackend::new(&c.name, &c.path)),
        BackendConfig::Http(c) => Arc::new(
            crate::backend::HttpBackend::new(c)
                .map_err(|(k, m)| ConfigError::new(file, format!("backend[{index}].{k}"), m))?,
        ),
        BackendConfig::Oauth2(c) => Arc::new(
            crate::backend::OAuth2Backend::new(c)
                .map_err(|(k, m)| ConfigError::new(file, format!("backend[{index}].{k}"), m))?,
        ),
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

impl Chain {
    /// Asks the backends in order until one gives a final answer. Returns the index of the
    /// backend that answered, with the outcome.
    async fn ask(&self, op: Op<'_>, account: &Account, from: usize) -> (Option<usize>, Outcome) {
        let mut last_error: Option<(usize, BackendError)> = None;
        for (i, backend) in self.backends.iter().enumerate().skip(from) {
            // Counted only once the next backend is really asked: a failure that ends the
            // chain is the request's own outcome, and counted as such.
            if let Some((j, e @ BackendError::Unavailable(_))) = &last_error {
                crate::metrics::passed_over(self.backends[*j].name(), e.kind());
            }
            match op.run(backend.as_ref(), account).await {
                Ok(answer) => return (Some(i), Outcome::answered(backend.name(), answer)),
                Err(BackendError::Unsupported) => {
                    last_error = Some((i, BackendError::Unsupported));
                }
                Err(e @ BackendError::Unavailable(_))
                    if self.on_unavailable == OnUnavailable::Next =>
                {
                    tracing::debug!(backend = backend.name(), error = %e, "backend unavailable, asking the next one");
                    last_error = Some((i, e));
                }
                Err(e) => return (None, Outcome::error(backend.name(), e)),
            }
        }
        match last_error {
            Some((i, e)) => (None, Outcome::error(self.backends[i].name(), e)),
            None => (None, Outcome::refused("no backend in the route")),
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
        let op = match request {
            Request::Auth(_, p) if p.is_empty() => return Outcome::refused("empty password"),
            Request::SetPass(_, p) | Request::TryRegister(_, p) if p.is_empty() => {
                return Outcome::refused("empty password")
            }
            Request::CertAuth(_) => return Outcome::refused("certauth is not supported"),
            Request::Auth(_, p) => Op::Authenticate(p),
            Request::IsUser(_) => Op::UserExists,
            Request::SetPass(_, p) => Op::SetPassword(p),
            Request::TryRegister(_, p) => Op::Register(p),
            Request::RemoveUser(_) => Op::RemoveUser,
            Request::RemoveUser3(_, p) => {
                if p.is_empty() {
                    return Outcome::refused("empty password");
                }
                // Remove from the backend that vouched for the password, nowhere else.
                let (who, auth) = chain.ask(Op::Authenticate(p), account, 0).await;
                let Some(i) = who.filter(|_| auth.answer) else {
                    return auth;
                };
                let single = Chain {
                    backends: vec![Arc::clone(&chain.backends[i])],
                    on_unavailable: OnUnavailable::Fail,
                };
                return single.ask(Op::RemoveUser, account, 0).await.1;
            }
        };
        chain.ask(op, account, 0).await.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Status;

    #[test]
    fn domain_patterns() {
        let exact = DomainPattern::parse("Example.net").unwrap();
        assert!(exact.matches("example.NET"));
        assert!(!exact.matches("sub.example.net"));
        let sub = DomainPattern::parse("*.example.org").unwrap();
        assert!(sub.matches("chat.example.org"));
        assert!(sub.matches("a.b.Example.org"));
        assert!(!sub.matches("example.org"));
        assert!(!sub.matches("badexample.org"));
        // Non-ASCII capitals fold the way the cache and the users file fold them.
        let accented = DomainPattern::parse("ÉTÉ.example").unwrap();
        assert!(accented.matches("été.example") && accented.matches("Été.EXAMPLE"));
        let accented = DomainPattern::parse("*.été.example").unwrap();
        assert!(accented.matches("chat.ÉTÉ.example"));
        for bad in ["", "*", "*.", "a*.b", "ex ample.org", "x@y", ".x"] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

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
