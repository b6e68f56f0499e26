//! The configuration file (TOML): its types and their defaults, as plain data.
//!
//! Owns what each key means and what it is when unset, down to the value types of keys
//! (`DomainPattern`, `OnUnavailable`, durations). Unknown keys are errors: a typo in a
//! security setting must not silently fall back to a default.
//!
//! Must not build anything (backends, the router and the cache are built from a `Config`
//! elsewhere) nor import the router, the state or the request loop: they import it. (The
//! `[[backend]]` tables of type `http` and `oauth2`, and a few enums, are still defined
//! next to the code they configure.) Reading the file, the checks that types alone cannot
//! make and the errors that name file and key are in `validate.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::Protocol;
use crate::request::normalize_account;

mod shared;
mod validate;

pub use shared::{SharedConfig, DEFAULT_KEY_PREFIX};

pub use validate::{is_secret_key, ConfigError};

/// Where the configuration is looked for when neither `--config` nor the environment says.
/// Prosody starts us with no arguments at all, so this default matters.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/extauth-bridge/config.toml";
/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "EXTAUTH_BRIDGE_CONFIG";
/// Below Prosody's 5 s `external_auth_timeout`, so a slow backend costs one login, not the
/// alignment of every later reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Longest accepted line in the line protocol, in bytes.
    #[serde(default = "default_max_line")]
    pub max_line: usize,
    /// How many requests already read may run at once (read-ahead; see `server/answer.rs`).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub log: LogConfig,
    /// Prosody pty mode: `auto` (detect), `on`, `off`.
    #[serde(default)]
    pub pty: crate::pty::PtyMode,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub throttle: ThrottleConfig,
    /// `[shared]`: the store several nodes share (Redis/Valkey); absent: per-process state.
    #[serde(default)]
    pub shared: Option<SharedConfig>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Prometheus text file written by each process (`{pid}` is replaced), or a directory
    /// for `extauth-bridge-{pid}.prom` files. Unset: no file. See `metrics/export.rs`.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    #[serde(
        default = "default_metrics_interval",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub metrics_interval: Duration,
    #[serde(default)]
    pub metrics_on_exit: OnExit,
    /// How often to log a one-line summary of the metrics; `0s`: at exit only.
    #[serde(
        default = "default_summary_interval",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub metrics_summary_interval: Duration,
    /// The directory of the generations file shared by every process of the pool (see
    /// `state/generation_file.rs`); unset: the first users file's directory, if any.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            protocol: Protocol::default(),
            timeout: DEFAULT_TIMEOUT,
            max_line: default_max_line(),
            max_in_flight: default_max_in_flight(),
            log: LogConfig::default(),
            pty: crate::pty::PtyMode::default(),
            cache: CacheConfig::default(),
            throttle: ThrottleConfig::default(),
            shared: None,
            backends: Vec::new(),
            routes: Vec::new(),
            metrics_file: None,
            metrics_interval: default_metrics_interval(),
            metrics_on_exit: OnExit::default(),
            metrics_summary_interval: default_summary_interval(),
            state_dir: None,
        }
    }
}

fn default_metrics_interval() -> Duration {
    Duration::from_secs(15)
}

fn default_summary_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_max_in_flight() -> usize {
    64
}

fn default_max_line() -> usize {
    crate::protocol::line::DEFAULT_MAX_LINE
}

/// What to do with the metrics file when the process exits cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Remove it: a dead process's series should not be exported forever.
    #[default]
    Remove,
    /// Write the final numbers and leave the file.
    Keep,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub level: LogLevel,
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default)]
    pub target: LogTarget,
    pub file: Option<PathBuf>,
    /// The journald or syslog socket; unset: the target's usual path (see `logging/mod.rs`).
    pub socket: Option<PathBuf>,
    /// Syslog facility, for `syslog` (and `SYSLOG_FACILITY=` in the journal).
    #[serde(default)]
    pub facility: Facility,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// stderr, except under a Prosody pty, where stderr is the protocol: then the log file
    /// when one is configured, else the journal when its socket exists, else nowhere.
    #[default]
    Auto,
    Stderr,
    File,
    /// The systemd journal's native protocol (datagrams to its socket).
    Journald,
    /// A syslog datagram to `/dev/log`.
    Syslog,
    None,
}

/// Syslog facilities a login bridge may sensibly log under. `authpriv` by default: its lines
/// name users and their outcomes, which is what that facility (kept readable by root only
/// on most systems) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Auth,
    #[default]
    Authpriv,
    Daemon,
    User,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility's number (RFC 5424 §6.2.1).
    pub fn code(self) -> u8 {
        match self {
            Facility::User => 1,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Authpriv => 10,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// One `[[backend]]` table; `type` selects the kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BackendConfig {
    File(FileBackendConfig),
    Http(crate::backend::http::config::HttpBackendConfig),
    #[serde(rename = "oauth2")]
    Oauth2(Box<crate::backend::oauth2::config::OAuth2BackendConfig>),
}

impl BackendConfig {
    pub fn name(&self) -> &str {
        match self {
            BackendConfig::File(c) => &c.name,
            BackendConfig::Http(c) => &c.name,
            BackendConfig::Oauth2(c) => &c.name,
        }
    }

    /// `remember_accounts`: the users file its logins are remembered in. Not a key of the
    /// file backend, which knows its accounts.
    pub fn remember_accounts(&self) -> Option<&std::path::Path> {
        match self {
            BackendConfig::File(_) => None,
            BackendConfig::Http(c) => c.remember_accounts.as_deref(),
            BackendConfig::Oauth2(c) => c.remember_accounts.as_deref(),
        }
    }

    /// The circuit breaker configured around this backend, if any.
    pub fn breaker(&self) -> Option<&crate::backend::BreakerConfig> {
        match self {
            BackendConfig::File(c) => c.breaker.as_ref(),
            BackendConfig::Http(c) => c.breaker.as_ref(),
            BackendConfig::Oauth2(c) => c.breaker.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackendConfig {
    pub name: String,
    pub path: PathBuf,
    /// The circuit breaker around this backend; off unless set.
    #[serde(default)]
    pub breaker: Option<crate::backend::BreakerConfig>,
}

/// One `[[route]]` table: which backends serve which domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub domains: Vec<String>,
    pub backends: Vec<String>,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

/// What a chain does when a backend cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Answer `0`: an outage must never let the next backend decide in its place by accident.
    #[default]
    Fail,
    /// Ask the next backend in the chain.
    Next,
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

/// The `[cache]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default)]
    pub enabled: bool,
    /// How long a positive answer is served without asking the backend.
    #[serde(
        default = "default_ttl",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub ttl: Duration,
    /// Most credentials remembered (least recently used go first).
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// How old a positive answer may be and still be served while the backend is unavailable.
    /// `0` (the default) never serves a stale answer.
    #[serde(default, deserialize_with = "crate::duration::deserialize")]
    pub stale_if_error: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            ttl: default_ttl(),
            max_entries: default_max_entries(),
            stale_if_error: Duration::ZERO,
        }
    }
}

fn default_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_max_entries() -> u64 {
    10_000
}

/// The `[throttle]` table: failure throttling per account (see `state/throttle/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Distinct wrong passwords within `window` that lock the account.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(
        default = "default_window",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub window: Duration,
    /// The first lockout; each further one doubles it, up to `max_lockout`.
    #[serde(
        default = "default_lockout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub lockout: Duration,
    #[serde(
        default = "default_max_lockout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub max_lockout: Duration,
    /// How long a verified credential still reaches the backend during a lockout.
    #[serde(
        default = "default_trusted_for",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub trusted_for: Duration,
    /// Wrong passwords remembered per account (answered `0` unasked when repeated).
    #[serde(default = "default_remembered_failures")]
    pub remembered_failures: usize,
    /// Most accounts remembered (least recently used go first).
    #[serde(default = "default_max_accounts")]
    pub max_accounts: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            enabled: false,
            max_failures: default_max_failures(),
            window: default_window(),
            lockout: default_lockout(),
            max_lockout: default_max_lockout(),
            trusted_for: default_trusted_for(),
            remembered_failures: default_remembered_failures(),
            max_accounts: default_max_accounts(),
        }
    }
}

fn default_max_failures() -> u32 {
    5
}

fn default_window() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_lockout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_max_lockout() -> Duration {
    Duration::from_secs(3600)
}

fn default_trusted_for() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_remembered_failures() -> usize {
    10
}

/// At most about 1.7 KiB each (README "Throttling"): 17 MiB per process at worst.
fn default_max_accounts() -> u64 {
    10_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
protocol = "ejabberd"
timeout = "2500ms"
[log]
level = "debug"
format = "json"
target = "file"
file = "/tmp/x.log"
[[backend]]
name = "local"
type = "file"
path = "/etc/extauth-bridge/users"
[[route]]
domains = ["example.net", "*.example.org"]
backends = ["local"]
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.protocol, Protocol::Ejabberd);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.backends[0].name(), "local");
        assert_eq!(c.routes[0].on_unavailable, OnUnavailable::Fail);
    }

    #[test]
    fn defaults() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.protocol, Protocol::Auto);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.log.target, LogTarget::Auto);
        assert_eq!(c.log.facility, Facility::Authpriv);
        assert_eq!(c.log.socket, None);
    }

    #[test]
    fn journald_and_syslog_targets() {
        let c = Config::parse(
            "[log]\ntarget = \"syslog\"\nfacility = \"auth\"\nsocket = \"/tmp/log.sock\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.log.target, LogTarget::Syslog);
        assert_eq!(c.log.facility.code(), 4);
        assert_eq!(c.log.socket.as_deref(), Some(Path::new("/tmp/log.sock")));
        let c = Config::parse("[log]\ntarget = \"journald\"\n", "t.toml").unwrap();
        assert_eq!(c.log.target, LogTarget::Journald);

        let e = Config::parse("[log]\nfacility = \"kern\"\n", "a.toml").unwrap_err();
        assert_eq!(e.key, "log.facility", "{e}");
        let e = Config::parse("[log]\nsocket = \"\"\n", "a.toml").unwrap_err();
        assert_eq!(e.key, "log.socket", "{e}");
    }

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
}
