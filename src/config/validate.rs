//! Validation of a parsed configuration, and the one error type that comes out of it.
//!
//! Every error names the file and the key, on one line, because the person reading it is
//! usually looking at an XMPP server's log, not at our terminal: a TOML error is located
//! (its key found from its span, or by deserializing each `[[backend]]`/`[[route]]` element
//! on its own), and a message never quotes the value of a secret key.
//!
//! Must not change or fill in the configuration: what it reads is what the types say.

use std::fmt;
use std::path::Path;

use super::{
    BackendConfig, CacheConfig, Config, DomainPattern, LogTarget, RouteConfig, ThrottleConfig,
};

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
        if let Err((key, why)) = self.throttle.check() {
            return Err(ConfigError::new(file, key, why));
        }
        if let Some(shared) = &self.shared {
            if let Err((key, why)) = shared.check() {
                return Err(ConfigError::new(file, key, why));
            }
            // A login makes up to four store round trips (throttle check, cache lookup, and
            // recording the answer in both): together they must leave the backend most of the deadline, or a
            // slow store could turn a right password into a timeout.
            if shared.timeout.saturating_mul(5) > self.timeout {
                return Err(ConfigError::new(
                    file,
                    "shared.timeout",
                    format!(
                        "must be at most a fifth of timeout ({}): a login makes up to four \
                         store round trips within it",
                        humantime::format_duration(self.timeout)
                    ),
                ));
            }
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
        if self
            .state_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(ConfigError::new(file, "state_dir", "must not be empty"));
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
            if let Some(Err((k, m))) = b.breaker().map(|c| c.check()) {
                return Err(ConfigError::new(
                    file,
                    format!("backend[{i}].breaker.{k}"),
                    m,
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
                if let Err(why) = DomainPattern::parse(d) {
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

impl CacheConfig {
    /// What types alone cannot check; returns the offending key and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.enabled {
            return Ok(());
        }
        if self.ttl.is_zero() {
            return Err((
                "cache.ttl",
                "must be greater than zero when the cache is enabled",
            ));
        }
        if self.max_entries == 0 {
            return Err((
                "cache.max_entries",
                "must be at least 1 when the cache is enabled",
            ));
        }
        Ok(())
    }
}

impl ThrottleConfig {
    /// What types alone cannot check; returns the offending key and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.enabled {
            return Ok(());
        }
        let positive = [
            ("throttle.window", self.window.is_zero()),
            ("throttle.lockout", self.lockout.is_zero()),
            ("throttle.trusted_for", self.trusted_for.is_zero()),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err((key, "must be greater than zero when throttling is enabled"));
        }
        if self.max_lockout < self.lockout {
            return Err((
                "throttle.max_lockout",
                "must not be shorter than throttle.lockout",
            ));
        }
        let at_least_one = [
            ("throttle.max_failures", self.max_failures == 0),
            (
                "throttle.remembered_failures",
                self.remembered_failures == 0,
            ),
            ("throttle.max_accounts", self.max_accounts == 0),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, zero)| *zero) {
            return Err((key, "must be at least 1 when throttling is enabled"));
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
                .map(str::to_owned)
                .or_else(|| between(&message, "unknown field `", "`").map(|f| nested(item, f)))
                .or_else(|| culprit(item, &message, check).map(|k| inner_culprit(item, k, check)))
                .map_or_else(|| element.clone(), |field| join_key(&element, &field));
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

/// Where an unknown `field` is in an array element: at its top, or in one of its inline
/// tables (`breaker = { failurs = 3 }` is `breaker.failurs`).
fn nested(item: &toml::Value, field: &str) -> String {
    let in_table = |(k, v): (&String, &toml::Value)| {
        v.as_table()
            .filter(|t| t.contains_key(field))
            .map(|_| format!("{k}.{field}"))
    };
    match item.as_table() {
        Some(t) if !t.contains_key(field) => t.iter().find_map(in_table),
        _ => None,
    }
    .unwrap_or_else(|| field.to_owned())
}

/// The culprit `key` of an element, or, when it is an inline table, the key in it whose
/// removal cures the element (`breaker.open_for` rather than `breaker`).
fn inner_culprit(
    item: &toml::Value,
    key: &str,
    check: fn(&toml::Value) -> Option<String>,
) -> String {
    let Some(inner) = item.get(key).and_then(toml::Value::as_table) else {
        return key.to_owned();
    };
    inner
        .keys()
        .find(|k| {
            let mut element = item.clone();
            if let Some(toml::Value::Table(t)) = element.get_mut(key) {
                t.remove(*k);
            }
            check(&element).is_none()
        })
        .map_or_else(|| key.to_owned(), |k| format!("{key}.{k}"))
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
    use std::time::Duration;

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

    #[test]
    fn config_defaults_and_checks() {
        let c = CacheConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.stale_if_error, Duration::ZERO);
        assert!(c.check().is_ok());
        let c = CacheConfig {
            enabled: true,
            ttl: Duration::ZERO,
            ..CacheConfig::default()
        };
        assert_eq!(c.check().unwrap_err().0, "cache.ttl");
    }

    #[test]
    fn throttle_checks_name_the_key() {
        let ok = ThrottleConfig {
            enabled: true,
            ..ThrottleConfig::default()
        };
        assert!(ok.check().is_ok());
        let short = ThrottleConfig {
            max_lockout: Duration::from_secs(1),
            ..ok.clone()
        };
        assert_eq!(short.check().unwrap_err().0, "throttle.max_lockout");
        let none = ThrottleConfig {
            max_accounts: 0,
            ..ok.clone()
        };
        assert_eq!(none.check().unwrap_err().0, "throttle.max_accounts");
        let e = Config::parse("[throttle]\nenabled = true\nwindow = \"0s\"\n", "t.toml")
            .and_then(|c| c.validate("t.toml").map(|_| c))
            .unwrap_err();
        assert_eq!(e.key, "throttle.window");
    }
}
