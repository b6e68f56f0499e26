//! What the HTTP and OAuth2 backends' clients share: one starting builder (no `Referer`,
//! bounded name resolution), and the connection counter the HTTP backend's retry relies on.
//! The reading of their errors is [`super::classify`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::{watch, Semaphore};

use super::BackendError;

/// What [`BuiltOnce`] builds with.
type Build<T> = Box<dyn FnOnce() -> Result<T, String> + Send>;

/// A value built once, on a thread of its own, the first time it is asked for: an HTTP
/// client, whose building reads the system's root certificates (and the OAuth2 backend's
/// `ca_file`) from disk. That must never run on the request thread, which the deadline
/// cannot interrupt: a hung mount would hold every reply past `timeout`. Every caller waits
/// for the one build as long as its own deadline lets it; one that gives up starts no other.
pub struct BuiltOnce<T> {
    build: std::sync::Mutex<Option<Build<T>>>,
    ready: std::sync::OnceLock<watch::Receiver<Option<Result<T, String>>>>,
}

impl<T: Clone + Send + Sync + 'static> BuiltOnce<T> {
    pub fn new(build: impl FnOnce() -> Result<T, String> + Send + 'static) -> BuiltOnce<T> {
        BuiltOnce {
            build: std::sync::Mutex::new(Some(Box::new(build))),
            ready: std::sync::OnceLock::new(),
        }
    }

    /// The value, once built; an error (the build's, or a thread that could not start) is
    /// `Internal`, the same for every caller.
    pub async fn get(&self) -> Result<T, BackendError> {
        let ready = self.ready.get_or_init(|| {
            let (tx, rx) = watch::channel(None);
            let build = self.build.lock().unwrap_or_else(|p| p.into_inner()).take();
            // Only a thread is started here; a spawn that fails drops `tx`, and the wait
            // below then reports it.
            let _ = std::thread::Builder::new()
                .name("client-build".into())
                .spawn(move || {
                    let built = build.map_or_else(|| Err("built already".to_owned()), |b| b());
                    let _ = tx.send(Some(built));
                });
            rx
        });
        let mut ready = ready.clone();
        let built = ready
            .wait_for(Option::is_some)
            .await
            .map_err(|_| BackendError::Internal("the HTTP client could not be built".into()))?;
        match built.as_ref() {
            Some(Ok(value)) => Ok(value.clone()),
            Some(Err(e)) => Err(BackendError::Internal(e.clone())),
            None => Err(BackendError::Internal(
                "the HTTP client is not built".into(),
            )),
        }
    }
}

/// How many name lookups one backend may have running (or queued) on the runtime's blocking
/// pool at once. getaddrinfo cannot be cancelled: a lookup stuck on a dead DNS server holds
/// its thread for the resolver's whole timeout (seconds), and the pool is small
/// ([`crate::memory::max_blocking_threads`]) and shared with password hashing and the users
/// file. Two lookups cover a backend's real need (one host, rarely two concurrent new
/// connections) and leave the pool to the others when its DNS hangs.
pub const DNS_LOOKUPS_PER_BACKEND: usize = 2;

/// The client builder every backend starts from: its timeouts, our user agent, a name
/// resolver of its own, and no `Referer` (on a redirect it would repeat the previous URL,
/// query string and so a GET `check_password`'s password included).
pub fn client_builder(
    connect_timeout: Duration,
    request_timeout: Duration,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("extauth-bridge/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .referer(false)
        .dns_resolver(Arc::new(LimitedResolver::new(connect_timeout)))
}

/// Why a name was not resolved. The host name is not a secret; it is in the message.
#[derive(Debug, thiserror::Error)]
enum DnsError {
    #[error("DNS: {0} lookups for this backend already running (is the DNS server answering?)")]
    Busy(usize),
    #[error("DNS lookup of {host}: {source}")]
    Lookup {
        host: String,
        source: std::io::Error,
    },
    #[error("DNS lookup of {0} did not finish")]
    Abandoned(String),
}

type Lookup = dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>> + Send + Sync;

/// A resolver that runs the system's lookups with at most [`DNS_LOOKUPS_PER_BACKEND`] at a
/// time per backend. A lookup that finds every permit taken waits at most `wait` and then
/// fails, which reqwest reports as a connect error (*unavailable*). The permit travels into
/// the blocking thread and is released when getaddrinfo returns, not when the request gives
/// up: that is what bounds the threads one backend can hold.
pub struct LimitedResolver {
    permits: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
    lookup: Arc<Lookup>,
}

impl LimitedResolver {
    pub fn new(wait: Duration) -> LimitedResolver {
        LimitedResolver::with_lookup(wait, DNS_LOOKUPS_PER_BACKEND, Arc::new(system_lookup))
    }

    fn with_lookup(wait: Duration, limit: usize, lookup: Arc<Lookup>) -> LimitedResolver {
        LimitedResolver {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            wait,
            lookup,
        }
    }
}

fn system_lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    // The port is the connector's business: it replaces this 0.
    (host, 0).to_socket_addrs().map(Iterator::collect)
}

impl Resolve for LimitedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let permits = Arc::clone(&self.permits);
        let (limit, wait) = (self.limit, self.wait);
        let lookup = Arc::clone(&self.lookup);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let permit = match tokio::time::timeout(wait, permits.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // Never closed; treated like a timeout all the same.
                Ok(Err(_)) | Err(_) => return Err(DnsError::Busy(limit).into()),
            };
            let looked_up = host.clone();
            let addrs = tokio::task::spawn_blocking(move || {
                let _held = permit;
                lookup(&looked_up)
            })
            .await
            .map_err(|_| DnsError::Abandoned(host.clone()))?
            .map_err(|source| DnsError::Lookup { host, source })?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A connector layer that counts the connections a client opens. The HTTP backend compares
/// the count before and after a request that failed: unchanged means the request went on a
/// kept-alive connection (which the server may have closed just then), so asking again is
/// not asking the same peer twice. Requests running concurrently can only make the count
/// change (no retry: fail closed), never hide a fresh connection.
#[derive(Clone, Default)]
pub struct CountConnections(pub Arc<AtomicU64>);

impl CountConnections {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<S> tower_layer::Layer<S> for CountConnections {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            count: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    count: Arc<AtomicU64>,
}

impl<S, R> tower_service::Service<R> for Counted<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Instant;

    fn runtime() -> tokio::runtime::Runtime {
        // The bridge's own runtime: one thread, a small blocking pool.
        tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(4)
            .enable_all()
            .build()
            .unwrap()
    }

    fn name(host: &str) -> Name {
        host.parse().unwrap()
    }

    /// A lookup that blocks until the test releases it, counting how many run at once.
    struct Stuck {
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        release: Arc<Mutex<mpsc::Receiver<()>>>,
    }

    fn stuck() -> (Stuck, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel();
        let s = Stuck {
            running: Arc::new(AtomicUsize::new(0)),
            most: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(Mutex::new(rx)),
        };
        (s, tx)
    }

    impl Stuck {
        fn lookup(&self) -> Arc<Lookup> {
            let (running, most) = (Arc::clone(&self.running), Arc::clone(&self.most));
            let release = Arc::clone(&self.release);
            Arc::new(move |_host: &str| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = release.lock().unwrap().recv();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(vec!["127.0.0.1:0".parse().unwrap()])
            })
        }
    }

    /// A backend whose DNS hangs holds at most its permits' worth of blocking threads, its
    /// further lookups fail after `wait` instead of queueing, even once their requests gave
    /// up; and another backend, and the blocking pool, are still served at once.
    #[test]
    fn a_stuck_resolver_holds_at_most_its_permits_and_starves_no_one() {
        let rt = runtime();
        let (stuck, release) = stuck();
        let hung = LimitedResolver::with_lookup(Duration::from_millis(100), 2, stuck.lookup());
        let healthy = LimitedResolver::new(Duration::from_millis(100));
        rt.block_on(async {
            // Ten logins' lookups, each abandoned by its request after 50 ms.
            for _ in 0..10 {
                let r =
                    tokio::time::timeout(Duration::from_millis(50), hung.resolve(name("a.test")))
                        .await;
                assert!(r.is_err(), "a stuck lookup answered");
            }
            let busy = tokio::time::timeout(Duration::from_secs(1), hung.resolve(name("a.test")))
                .await
                .expect("a lookup queued past its wait");
            let e = busy.err().expect("a lookup beyond the permits ran");
            assert!(e.to_string().contains("already running"), "{e}");
            assert!(stuck.most.load(Ordering::SeqCst) <= 2);
            // The blocking pool (4 threads) still has room for the file backend and hashing,
            // and another backend's lookups still run.
            let soon = Duration::from_secs(1);
            let pool = tokio::time::timeout(soon, tokio::task::spawn_blocking(|| ())).await;
            assert!(pool.is_ok(), "the blocking pool is starved");
            let other = tokio::time::timeout(soon, healthy.resolve(name("localhost"))).await;
            let addrs: Vec<SocketAddr> = other.expect("another backend starved").unwrap().collect();
            assert!(!addrs.is_empty());
        });
        assert_eq!(stuck.most.load(Ordering::SeqCst), 2);
        // Released, the permits come back.
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(5);
            while stuck.running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            release.send(()).unwrap();
            assert!(hung.resolve(name("a.test")).await.is_ok());
        });
    }

    #[test]
    fn a_failed_lookup_names_the_host_and_fails() {
        let rt = runtime();
        let r = LimitedResolver::with_lookup(
            Duration::from_millis(100),
            2,
            Arc::new(|_: &str| Err(std::io::Error::other("no such host"))),
        );
        let e = rt.block_on(r.resolve(name("nowhere.test"))).err().unwrap();
        assert!(e.to_string().contains("nowhere.test"), "{e}");
    }
}
