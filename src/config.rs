//! The configuration file (TOML) and its validation.
//!
//! Every error names the file and the key, on one line, because the person reading it is
//! usually looking at an XMPP server's log, not at our terminal. Unknown keys are errors:
//! a typo in a security setting must not silently fall back to a default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::protocol::Protocol;

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
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Longest accepted line in the line protocol, in bytes.
    #[serde(default = "default_max_line")]
    pub max_line: usize,
    /// How many requests already read may run at once (read-ahead; see `server.rs`).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub log: LogConfig,
    /// Prosody pty mode: `auto` (detect), `on`, `off`.
    #[serde(default)]
    pub pty: crate::pty::PtyMode,
    #[serde(default)]
    pub cache: crate::cache::CacheConfig,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Prometheus text file written by each process (`{pid}` is replaced), or a directory
    /// for `extauth-bridge-{pid}.prom` files. Unset: no file. See `metrics.rs`.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    #[serde(default = "default_metrics_interval", deserialize_with = "duration")]
    pub metrics_interval: Duration,
    #[serde(default)]
    pub metrics_on_exit: crate::metrics::OnExit,
    /// How often to log a one-line summary of the metrics; `0s`: at exit only.
    #[serde(default = "default_summary_interval", deserialize_with = "duration")]
    pub metrics_summary_interval: Duration,
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
            cache: crate::cache::CacheConfig::default(),
            backends: Vec::new(),
            routes: Vec::new(),
            metrics_file: None,
            metrics_interval: default_metrics_interval(),
            metrics_on_exit: crate::metrics::OnExit::default(),
            metrics_summary_interval: default_summary_interval(),
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
    /// The journald or syslog socket; unset: the target's usual path (see `logging.rs`).
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackendConfig {
    pub name: String,
    pub path: PathBuf,
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

/// Parses durations such as `4s`, `500ms`, `1m 30s`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

/// A configuration error: always names the file and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error in {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        write!(f, ": key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(file: &str, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            key: key.into(),
            line: None,
            message: one_line(&message.into()),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&file, "(file)", format!("cannot read: {e}")))?;
        Config::parse(&text, &file)
    }

    /// Parses and validates configuration text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let err =
                    locate_in_arrays(text, file).unwrap_or_else(|| toml_error(text, file, &e));
                return Err(without_secret_values(err, text));
            }
        };
        config.validate(file)?;
        Ok(config)
    }

    /// Checks what types alone cannot: names unique and known, required companions present.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                file,
                "timeout",
                "must be greater than zero",
            ));
        }
        if self.max_line < 64 {
            return Err(ConfigError::new(
                file,
                "max_line",
                "must be at least 64 bytes",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new(
                file,
                "max_in_flight",
                "must be at least 1",
            ));
        }
        if let Err((key, why)) = self.cache.check() {
            return Err(ConfigError::new(file, key, why));
        }
        if self.metrics_interval.is_zero() {
            return Err(ConfigError::new(
                file,
                "metrics_interval",
                "must be greater than zero",
            ));
        }
        if self.log.target == LogTarget::File && self.log.file.is_none() {
            return Err(ConfigError::new(
                file,
                "log.file",
                "required when log.target = \"file\"",
            ));
        }
        if self
            .log
            .socket
            .as_ref()
            .is_some_and(|s| s.as_os_str().is_empty())
        {
            return Err(ConfigError::new(file, "log.socket", "must not be empty"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let key = format!("backend[{i}].name");
            if b.name().is_empty() {
                return Err(ConfigError::new(file, key, "must not be empty"));
            }
            if !names.insert(b.name()) {
                return Err(ConfigError::new(
                    file,
                    key,
                    format!("duplicate backend name {:?}", b.name()),
                ));
            }
            if let BackendConfig::Http(c) = b {
                c.validate()
                    .map_err(|(k, m)| ConfigError::new(file, format!("backend[{i}].{k}"), m))?;
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.domains.is_empty() {
                return Err(ConfigError::new(
                    file,
                    format!("route[{i}].domains"),
                    "must list at least one domain",
                ));
            }
            for d in &r.domains {
                if let Err(why) = crate::router::DomainPattern::parse(d) {
                    return Err(ConfigError::new(file, format!("route[{i}].domains"), why));
                }
            }
            if r.backends.is_empty() {
                return Err(ConfigError::new(
                    file,
                    format!("route[{i}].backends"),
                    "must list at least one backend",
                ));
            }
            for name in &r.backends {
                if !names.contains(name.as_str()) {
                    return Err(ConfigError::new(
                        file,
                        format!("route[{i}].backends"),
                        format!("no backend named {name:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether a configuration key holds a secret when its value is written inline:
/// `client_secret`, `password`, `bearer_token`, `credentials`… (not `client_secret_file` or
/// `password_env`, which name where the secret is).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.rsplit('.').next().unwrap_or(key);
    [
        "secret",
        "password",
        "token",
        "credentials",
        "basic_auth",
        "api_key",
        "bearer",
    ]
    .iter()
    .any(|s| key.ends_with(s))
}

/// Shown instead of a serde message that would quote a secret's value.
const SECRET_VALUE_HIDDEN: &str = "invalid value (the value of a secret key is never shown)";

/// A parse error never quotes a secret: serde's messages quote the offending value
/// ("invalid type: integer `98127346519283`, expected a string"), whatever its type, and the
/// error reaches the terminal, `check --json` and the log of a failed reload. An error on a
/// secret key keeps only what was expected; and any secret value that appears in a message
/// about some other key (a culprit not found, a key named wrongly) is cut out too.
fn without_secret_values(mut err: ConfigError, text: &str) -> ConfigError {
    let about_the_value =
        !err.message.starts_with("missing field") && !err.message.starts_with("unknown field");
    if is_secret_key(&err.key) && about_the_value {
        err.message = match err.message.split_once(", expected ") {
            Some((_, expected)) => format!("{SECRET_VALUE_HIDDEN}; expected {expected}"),
            None => SECRET_VALUE_HIDDEN.to_owned(),
        };
    }
    for value in secret_values(text) {
        // Very short values would cut ordinary words; the key rule above covers those.
        if value.len() >= 4 && err.message.contains(&value) {
            err.message = err.message.replace(&value, "<secret>");
        }
    }
    err
}

/// The values of every secret key in `text`, as the TOML reader sees it (any type), as text.
fn secret_values(text: &str) -> Vec<String> {
    fn render(value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(items) => items.iter().for_each(|v| render(v, out)),
            toml::Value::Table(t) => t.values().for_each(|v| render(v, out)),
            toml::Value::Integer(i) => out.push(i.to_string()),
            toml::Value::Float(f) => out.push(f.to_string()),
            toml::Value::Boolean(b) => out.push(b.to_string()),
            toml::Value::Datetime(d) => out.push(d.to_string()),
        }
    }
    fn walk(value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    if is_secret_key(k) {
                        render(v, out);
                    } else {
                        walk(v, out);
                    }
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        walk(&toml::Value::Table(table), &mut out);
    }
    out
}

/// Turns a TOML error into one line that names the key, found from the error's span.
fn toml_error(text: &str, file: &str, err: &toml::de::Error) -> ConfigError {
    let message = one_line(err.message());
    let Some(span) = err.span() else {
        return ConfigError::new(file, "(file)", message);
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let table = table_at(text, start);
    let key = if let Some(field) = between(&message, "missing field `", "`") {
        join_key(&table, field)
    } else if let Some(field) = between(&message, "unknown field `", "`") {
        join_key(&table, field)
    } else {
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        match line.split_once('=') {
            Some((k, _)) if !line.trim_start().starts_with('[') => {
                join_key(&table, k.trim().trim_matches('"'))
            }
            _ if table.is_empty() => "(top level)".to_owned(),
            _ => table,
        }
    };
    ConfigError {
        file: file.to_owned(),
        key,
        line: Some(line_no),
        message,
    }
}

/// An error inside one `[[backend]]` or `[[route]]` table: the whole array shares one span,
/// so each element is deserialized on its own to find which one is wrong.
fn locate_in_arrays(text: &str, file: &str) -> Option<ConfigError> {
    fn check<T: serde::de::DeserializeOwned>(v: &toml::Value) -> Option<String> {
        T::deserialize(v.clone())
            .err()
            .map(|e| one_line(e.message()))
    }
    let table: toml::Table = text.parse().ok()?;
    type Check = fn(&toml::Value) -> Option<String>;
    let arrays: [(&str, Check); 2] = [
        ("backend", check::<BackendConfig>),
        ("route", check::<RouteConfig>),
    ];
    for (name, check) in arrays {
        let Some(toml::Value::Array(items)) = table.get(name) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let Some(message) = check(item) else { continue };
            let element = format!("{name}[{i}]");
            let key = between(&message, "missing field `", "`")
                .or_else(|| between(&message, "unknown field `", "`"))
                .or_else(|| culprit(item, &message, check))
                .map_or_else(|| element.clone(), |field| join_key(&element, field));
            let header = format!("[[{name}]]");
            let line = text
                .lines()
                .enumerate()
                .filter(|(_, l)| l.trim().replace(' ', "") == header)
                .nth(i)
                .map(|(n, _)| n + 1);
            return Some(ConfigError {
                file: file.to_owned(),
                key,
                line,
                message,
            });
        }
    }
    None
}

/// A bad value (not a missing or unknown key) in an array element: the error carries no
/// key, so find the key whose removal cures the error (or only makes it missing).
fn culprit<'a>(
    item: &'a toml::Value,
    message: &str,
    check: fn(&toml::Value) -> Option<String>,
) -> Option<&'a str> {
    let table = item.as_table()?;
    table
        .keys()
        .map(String::as_str)
        .filter(|key| *key != "type")
        .find(|key| {
            let mut without = table.clone();
            without.remove(*key);
            match check(&toml::Value::Table(without)) {
                None => true,
                Some(m) => m != message && between(&m, "missing field `", "`") == Some(key),
            }
        })
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let rest = &s[s.find(open)? + open.len()..];
    Some(&rest[..rest.find(close)?])
}

fn join_key(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// The table header in force at byte `pos`, with array-of-tables indices: `backend[1]`.
fn table_at(text: &str, pos: usize) -> String {
    let mut current = String::new();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if offset > pos {
            break;
        }
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = counts.entry(name.clone()).or_insert(0);
            current = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_owned();
        }
        offset += line.len();
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn errors_name_file_and_key() {
        let e = Config::parse("timeout = \"4 parsecs\"\n", "a.toml").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("timeout", Some(1)));
        assert!(e
            .to_string()
            .starts_with("config error in a.toml line 1: key `timeout`"));

        let e = Config::parse("[log]\nlevel = \"loud\"\n", "a.toml").unwrap_err();
        assert_eq!(e.key, "log.level");

        let e = Config::parse("[log]\ncolour = true\n", "a.toml").unwrap_err();
        assert_eq!(e.key, "log.colour");

        let e = Config::parse(
            "[[backend]]\nname='a'\ntype='file'\npath='/x'\n[[backend]]\nname='b'\ntype='file'\n",
            "a.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "backend[1].path", "{e}");

        let e = Config::parse(
            "[[backend]]\nname='a'\ntype='file'\npath=7\n[[backend]]\nname='b'\ntype='file'\n",
            "a.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "backend[0].path", "{e}");

        let e = Config::parse(
            "[[backend]]\nname='a'\ntype='file'\npath='/x'\n[[route]]\ndomains=['x']\nbackends=['b']\n",
            "a.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "route[0].backends");
        assert!(!e.to_string().contains('\n'));
    }
}
