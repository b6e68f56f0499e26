//! What the HTTP and OAuth2 backends' clients share: one starting builder (no `Referer`),
//! and the connection counter the HTTP backend's retry relies on.
//! The reading of their errors is [`super::classify`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The client builder every backend starts from: its timeouts, our user agent, and no
/// `Referer` (on a redirect it would repeat the previous URL,
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
