//! Per-account state: what the bridge remembers between requests, and its one home.
//!
//! - [`keyed`]: the keyed hashes of a credential and of an account (HMAC-SHA256 under a
//!   per-process random key), the only form in which state ever refers to a user or a
//!   password;
//! - [`cache`]: the positive-result credential cache, a [`crate::router::Handler`] wrapper
//!   over one bounded LRU map (moka) of such keys;
//! - [`generation`]: a counter per account slot that a password change bumps, so that a
//!   remembered fact about a credential can tell it is out of date.
//!
//! The per-account throttle and the per-backend breaker belong here too, on the same keys
//! and the same kind of map. State lives in the process's memory only: nothing here writes
//! a file or talks to the network (except [`shared`], the optional Redis/Valkey store), and
//! nothing here holds a password or a user name in clear.

pub mod cache;
pub mod generation;
pub mod keyed;
pub mod shared;
