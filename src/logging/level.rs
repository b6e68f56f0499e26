//! The reloadable level filter: installs the global subscriber behind it, and lets a SIGHUP
//! change `log.level` while the daemon runs ([`set_level`]). Does not choose or open any
//! destination.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use super::panic::LOGGING_READY;
use crate::config::LogLevel;

pub(super) fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// The level filter of the installed subscriber, changeable while it runs: a SIGHUP that
/// changes `log.level` takes effect at once (an operator raising it to `debug` to watch a
/// problem should not have to restart the XMPP server's pool for it).
static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();

type Filtered = Layered<reload::Layer<LevelFilter, Registry>, Registry>;

/// Installs `output` as the global subscriber behind a reloadable level filter. A second
/// install (tests, other subcommands) keeps the first subscriber, and its filter.
pub(super) fn install(filter: LevelFilter, output: impl Layer<Filtered> + Send + Sync + 'static) {
    let (filter, handle) = reload::Layer::new(filter);
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(handle);
    }
    LOGGING_READY.store(true, Ordering::SeqCst);
}

/// Applies a new `log.level` to the running subscriber. Returns `false` when there is none
/// to change (logging goes nowhere, or was installed by someone else).
pub fn set_level(new: LogLevel) -> bool {
    LEVEL
        .get()
        .is_some_and(|handle| handle.modify(|filter| *filter = level(new)).is_ok())
}
