//! From the command line to the built pieces, shared by the daemon and the operator commands:
//! where the configuration comes from and how the command line overrides it
//! ([`load_config`]), and the request handler built from it ([`build_handler`]: the router,
//! behind the credential cache when enabled). `check` and `query` use these so that they
//! load and route exactly as the daemon does.
//!
//! It must not start anything (runtime, logging, signals, the request loop) nor touch
//! stdin/stdout: its callers decide that. It must not import the daemon, the commands or
//! `app`: arrows point from them to here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::http::config::HttpBackendConfig;
use crate::cli::Cli;
use crate::config::SharedConfig;
use crate::config::{
    BackendConfig, Config, ConfigError, FileBackendConfig, CONFIG_ENV, DEFAULT_CONFIG_PATH,
};
use crate::router::{Handler, Router};
use crate::state::cache::CachingHandler;
use crate::state::generation::{GenerationHandler, Generations};
use crate::state::generation_file;
use crate::state::keyed::Keyer;
use crate::state::shared::cache::SharedCache;
use crate::state::shared::throttle::SharedThrottleStore;
use crate::state::shared::{SharedError, SharedStore};
use crate::state::throttle::ThrottlingHandler;

/// Exit status for configuration and usage errors.
pub const EXIT_CONFIG: u8 = 2;

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConfigSource {
    File(PathBuf),
    /// `--users` / `--http-url` alone: built-in defaults plus the shortcut.
    CommandLine,
    /// Nothing named and no default file.
    Missing,
}

/// `--config`, else `$EXTAUTH_BRIDGE_CONFIG` (`env`), else the default path if it exists
/// (`default_exists`, asked only then). A shortcut (`--users`, `--http-url`) skips the
/// default path: that file is written for the daemon the XMPP server starts, and an admin's
/// `--users users.txt` trial run must not quietly pick up its log file, pty mode, timeout
/// or cache. Named explicitly, a file still applies under a shortcut.
fn config_source(
    flag: Option<&Path>,
    env: Option<std::ffi::OsString>,
    shortcut: bool,
    default_exists: impl FnOnce() -> bool,
) -> ConfigSource {
    let explicit = flag
        .map(Path::to_path_buf)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from));
    match explicit {
        Some(path) => ConfigSource::File(path),
        None if shortcut => ConfigSource::CommandLine,
        None if default_exists() => ConfigSource::File(PathBuf::from(DEFAULT_CONFIG_PATH)),
        None => ConfigSource::Missing,
    }
}

/// The configuration as the daemon would use it: file (from `--config`, the environment or
/// the default path, see [`config_source`]), then command-line overrides. Returns it with
/// the name of its source.
pub fn load_config(cli: &Cli) -> Result<(Config, String), ConfigError> {
    let shortcut = cli.users.is_some() || cli.http_url.is_some();
    let source = config_source(
        cli.config.as_deref(),
        std::env::var_os(CONFIG_ENV),
        shortcut,
        || Path::new(DEFAULT_CONFIG_PATH).exists(),
    );
    let (mut config, source) = match source {
        ConfigSource::File(path) => (Config::load(&path)?, path.display().to_string()),
        ConfigSource::CommandLine => (Config::default(), "command line".to_owned()),
        ConfigSource::Missing => {
            return Err(ConfigError::new(
                DEFAULT_CONFIG_PATH,
                "(file)",
                format!(
                    "not found; use --config FILE, ${CONFIG_ENV}, --users FILE or --http-url URL"
                ),
            ))
        }
    };
    if let Some(p) = cli.protocol {
        config.protocol = p;
    }
    if let Some(t) = cli.timeout {
        config.timeout = t;
    }
    if let Some(l) = cli.log_level {
        config.log.level = l;
    }
    if let Some(f) = cli.log_format {
        config.log.format = f;
    }
    if let Some(t) = cli.log_target {
        config.log.target = t;
    }
    if let Some(p) = cli.pty {
        config.pty = p;
    }
    if let Some(f) = &cli.log_file {
        config.log.file = Some(f.clone());
    }
    if shortcut {
        // The shortcuts replace the configured backends and routes: the API first, then
        // the users file for whatever the API answers 501 to.
        config.backends.clear();
        config.routes.clear();
        if let Some(url) = &cli.http_url {
            config
                .backends
                .push(BackendConfig::Http(HttpBackendConfig::new("http", url)));
        }
        if let Some(users) = &cli.users {
            config.backends.push(BackendConfig::File(FileBackendConfig {
                name: "users".into(),
                path: users.clone(),
                breaker: None,
            }));
        }
    }
    config.validate(&source)?;
    Ok((config, source))
}

/// The stack `GenerationHandler(ThrottlingHandler(CachingHandler(Router)))`, each state
/// layer present when its table enables it. The throttle sits outside the cache, so that a
/// cached yes counts as a login; both share one [`Keyer`] and one [`Generations`]. With
/// `[shared]`, the keyer is the shared key's, and each layer keeps its state in the store
/// too, this process's own state being its fallback.
pub fn build_handler(config: &Config, source: &str) -> Result<Arc<dyn Handler>, ConfigError> {
    let generations = Arc::new(generations(config, source)?);
    let (keyer, store) = match &config.shared {
        Some(shared) => {
            let (keyer, store) = build_shared(shared, source)?;
            let store = store.with_generation_ttl(longest_fact(config));
            (keyer, Some(Arc::new(store)))
        }
        None => (Keyer::random(), None),
    };
    let mut handler: Box<dyn Handler> = Box::new(Router::from_config(config, source)?);
    if config.cache.enabled {
        let cache = CachingHandler::with_keyer(
            handler,
            &config.cache,
            keyer.clone(),
            Arc::clone(&generations),
        );
        handler = Box::new(match &store {
            Some(store) => cache.with_shared(SharedCache::new(
                Arc::clone(store),
                config.cache.ttl.max(config.cache.stale_if_error),
            )),
            None => cache,
        });
    }
    if config.throttle.enabled {
        let throttle = ThrottlingHandler::new(
            handler,
            &config.throttle,
            keyer.clone(),
            Arc::clone(&generations),
        );
        handler = Box::new(match &store {
            Some(store) => {
                let policy = throttle.local().policy().clone();
                let shared = SharedThrottleStore::new(Arc::clone(store), policy);
                throttle.with_shared(Arc::new(shared))
            }
            None => throttle,
        });
    }
    let outer = GenerationHandler::new(handler, generations);
    Ok(Arc::new(match &store {
        Some(store) => outer.with_shared(keyer, Arc::clone(store)),
        None => outer,
    }))
}

/// So that the layers above compose whichever are enabled (one indirect call per layer).
#[async_trait::async_trait]
impl Handler for Box<dyn Handler> {
    async fn handle(&self, request: &crate::request::Request) -> crate::outcome::Outcome {
        self.as_ref().handle(request).await
    }
}

/// The generations file the configuration names ([`generation_file::location`]), else
/// counters in memory. An unusable file is a configuration error naming the key that put
/// it there: never quietly per-process counters, which would serve a password changed
/// through another process.
pub fn generations(config: &Config, source: &str) -> Result<Generations, ConfigError> {
    match generation_file::location(config) {
        Some(at) => Generations::shared(&at.dir)
            .inspect(|g| tracing::debug!(generations = ?g, "account generations shared"))
            .map_err(|e| ConfigError::new(source, at.key, format!("generations file: {e}"))),
        None => Ok(Generations::in_memory()),
    }
}

/// The longest any state layer keeps a fact under an account's generation.
fn longest_fact(config: &Config) -> std::time::Duration {
    let (c, t) = (&config.cache, &config.throttle);
    c.ttl.max(c.stale_if_error).max(t.trusted_for).max(t.window)
}

/// `[shared]`: the keyer under the shared key, and the store's handle (not yet connected).
pub fn build_shared(
    shared: &SharedConfig,
    source: &str,
) -> Result<(Keyer, SharedStore), ConfigError> {
    let keyer = Keyer::from_shared_key(&shared.key_file)
        .map_err(|e| ConfigError::new(source, "shared.key_file", e.to_string()))?;
    let store = SharedStore::from_config(shared).map_err(|e| match e {
        SharedError::Config(key, why) => ConfigError::new(source, key, why),
        other => ConfigError::new(source, "shared.url", other.to_string()),
    })?;
    Ok((keyer, store))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(flag: Option<&str>, env: Option<&str>, shortcut: bool, exists: bool) -> ConfigSource {
        config_source(flag.map(Path::new), env.map(Into::into), shortcut, || {
            exists
        })
    }

    fn file(path: &str) -> ConfigSource {
        ConfigSource::File(PathBuf::from(path))
    }

    #[test]
    fn a_shortcut_never_reads_the_default_file() {
        assert_eq!(source(None, None, true, true), ConfigSource::CommandLine);
        assert_eq!(
            source(None, Some(""), true, true),
            ConfigSource::CommandLine
        );
        // Named explicitly, a file still applies.
        assert_eq!(source(Some("/c.toml"), None, true, true), file("/c.toml"));
        assert_eq!(source(None, Some("/e.toml"), true, true), file("/e.toml"));
    }

    #[test]
    fn without_a_shortcut_flag_then_environment_then_default() {
        let env = Some("/e.toml");
        assert_eq!(source(Some("/c.toml"), env, false, true), file("/c.toml"));
        assert_eq!(source(None, env, false, true), file("/e.toml"));
        assert_eq!(source(None, None, false, true), file(DEFAULT_CONFIG_PATH));
        assert_eq!(
            source(None, Some(""), false, true),
            file(DEFAULT_CONFIG_PATH)
        );
        assert_eq!(source(None, None, false, false), ConfigSource::Missing);
    }
}
