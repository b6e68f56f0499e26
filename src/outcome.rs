//! How a request was answered: the reply on the wire and why, for the log line and metrics.
//!
//! Sits between [`crate::request`] (what was asked) and [`crate::backend`] (whose errors it
//! records), so that neither of those imports the other's way: backends know `Account`,
//! requests know nothing of backends. Must not hold a secret, nor decide an answer: it only
//! records one.

use crate::backend::BackendError;
use crate::request::BadRequest;

/// How a request was answered, for the log line and metrics.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What goes on the wire.
    pub answer: bool,
    /// The backend that decided, if one did.
    pub backend: Option<String>,
    pub status: Status,
}

/// Where the state that decided an answer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This process's memory.
    Process,
    /// The store every node shares (`[shared]`).
    Shared,
}

impl Scope {
    pub fn describe(self) -> &'static str {
        match self {
            Scope::Process => "in this process",
            Scope::Shared => "in the shared store, on every node",
        }
    }
}

/// Why the answer is what it is. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A backend said yes.
    Yes,
    /// Answered `1` from the credential cache: a backend said yes to the same credential less
    /// than `cache.ttl` ago. `backend` names that backend.
    Cached,
    /// Answered `1` from the shared store (`[shared]`): a backend said yes to the same
    /// credential, through any node, less than `cache.ttl` ago. `backend` names it.
    SharedCached,
    /// Answered `1` from the credential cache because the backend is unavailable: a backend
    /// said yes less than `cache.stale_if_error` ago. Holds the backend's error and the age.
    Stale(String),
    /// A backend said no.
    No,
    /// Answered `0` without asking a backend: the account is locked out (`[throttle]`) and
    /// this credential is not one verified for it recently. Holds how long the lockout lasts.
    Throttled(String),
    /// Answered `0` without asking a backend: a backend said no to this very credential
    /// less than `throttle.window` ago (a client retrying a stale password), as remembered
    /// where the scope says.
    Repeated(Scope),
    /// Answered `0` without asking a backend (empty password, no route, certauth…).
    Refused(&'static str),
    /// A backend failed: its error kind and message.
    Error(&'static str, String),
    /// A backend was unavailable and one below it said no. Counted as the outage
    /// (`unavailable`): the backend that may hold the account never answered, so it is no
    /// wrong password. Yet no cached yes may stand in for it (`stale_if_error`): a backend
    /// that holds credentials did answer, and said no. Holds the outage's message.
    UnavailableThenNo(String),
    /// The request deadline expired.
    Timeout,
    /// Request handling panicked; answered `0`.
    Panic,
    /// The frame was not a valid request.
    Invalid(BadRequest),
}

impl Status {
    /// A short stable word for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Yes => "yes",
            Status::Cached => "cached",
            Status::SharedCached => "cached_shared",
            Status::Stale(_) => "stale",
            Status::No => "no",
            Status::Throttled(_) => "throttled",
            Status::Repeated(_) => "repeated",
            Status::Refused(_) => "refused",
            Status::Error(kind, _) => kind,
            Status::UnavailableThenNo(_) => "unavailable",
            Status::Timeout => "timeout",
            Status::Panic => "panic",
            Status::Invalid(_) => "invalid",
        }
    }
}

impl Outcome {
    pub fn answered(backend: &str, answer: bool) -> Outcome {
        Outcome {
            answer,
            backend: Some(backend.to_owned()),
            status: if answer { Status::Yes } else { Status::No },
        }
    }

    pub fn refused(reason: &'static str) -> Outcome {
        Outcome {
            answer: false,
            backend: None,
            status: Status::Refused(reason),
        }
    }

    pub fn error(backend: &str, error: BackendError) -> Outcome {
        Outcome {
            answer: false,
            backend: Some(backend.to_owned()),
            status: Status::Error(error.kind(), error.to_string()),
        }
    }

    pub fn failed(status: Status) -> Outcome {
        Outcome {
            answer: false,
            backend: None,
            status,
        }
    }
}
