//! Per-account state: what the bridge remembers between requests, and its one home.
//!
//! - [`keyed`]: the keyed hashes of a credential and of an account (HMAC-SHA256 under a
//!   per-process random key), the only form in which state ever refers to a user or a
//!   password;
//! - [`cache`]: the positive-result credential cache, a [`crate::router::Handler`] wrapper
//!   over one bounded LRU map (moka) of such keys;
//! - [`generation`]: a counter per account slot that a password change bumps, so that a
//!   remembered fact about a credential can tell it is out of date;
//! - [`generation_file`]: those counters in a file mapped by every process of the machine;
//! - [`breaker`]: the circuit breaker of one backend, a [`crate::backend::Backend`]
//!   decorator over a pure state machine;
//! - [`throttle`]: failure throttling per account, a [`crate::router::Handler`] wrapper over
//!   a [`throttle::ThrottleStore`] (in memory: one bounded LRU map of the same keys).
//!
//! State lives in the process's memory, except the generations file (counters only) and
//! [`shared`], the optional Redis/Valkey store several nodes share; nothing here holds a
//! password or a user name in clear.

pub mod breaker;
pub mod cache;
pub mod generation;
pub mod generation_file;
pub mod keyed;
pub mod shared;
pub mod throttle;
