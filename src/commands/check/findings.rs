//! The lines of the report about the configuration: which file, routes, timing, logs,
//! metrics, relative paths, inline secrets, refused password changes. The environment's
//! lines (user, stdout, proxies, permissions) are `environment.rs`.

use std::path::Path;
use std::time::Duration;

use super::{Finding, Level};
use crate::config::{Config, CONFIG_ENV, DEFAULT_CONFIG_PATH};
use crate::logging::{destination, Destination};

/// Prosody's default `external_auth_timeout`: a reply later than this is read as the answer
/// to the next query.
const PROSODY_TIMEOUT: Duration = Duration::from_secs(5);
/// ejabberd's fixed extauth timeout.
const EJABBERD_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn config_found(source: &str, config: &Config) -> Finding {
    let from = if std::env::var_os(CONFIG_ENV).is_some_and(|v| v == source) {
        format!(" (from ${CONFIG_ENV}: the XMPP server's environment must set it too)")
    } else if source == DEFAULT_CONFIG_PATH {
        " (the default path: what Prosody, which passes no arguments, uses)".to_owned()
    } else if Path::new(source).is_file() {
        format!(
            " (given with --config: Prosody passes no arguments, so there use {DEFAULT_CONFIG_PATH} \
             or set ${CONFIG_ENV})"
        )
    } else {
        String::new()
    };
    Finding {
        item: "config",
        level: Level::Ok,
        detail: format!(
            "{source}{from}: {} backend(s), {} route(s)",
            config.backends.len(),
            config.routes.len()
        ),
    }
}

/// Which backends answer for which domains: a domain no route covers is always refused.
pub(super) fn routes(config: &Config) -> Finding {
    let names = |v: &mut dyn Iterator<Item = &str>| v.collect::<Vec<_>>().join(", ");
    let detail = if config.routes.is_empty() {
        format!(
            "no [[route]]: every domain asks {} in order",
            names(&mut config.backends.iter().map(|b| b.name()))
        )
    } else {
        let each = config
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{} -> {}{}",
                    names(&mut r.domains.iter().map(String::as_str)),
                    names(&mut r.backends.iter().map(String::as_str)),
                    if r.on_unavailable == crate::config::OnUnavailable::Next {
                        " (on_unavailable = next)"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        format!("{each}; any other domain is refused")
    };
    Finding {
        item: "routes",
        level: Level::Ok,
        detail,
    }
}

/// ejabberd takes any reply to `setpass` as done (its `set_password` treats both booleans as
/// success, and caches the new password), so a refused change is shown to the user as a
/// changed password. Say so where a route can refuse one: a chain whose change stops at an
/// IdP (which cannot change passwords) is sure to; an HTTP API may (501, or its own refusal).
pub(super) fn setpass_refusals(config: &Config) -> Option<Finding> {
    use crate::config::BackendConfig;
    let chains: Vec<(String, Vec<&str>)> = if config.routes.is_empty() {
        let all = config.backends.iter().map(|b| b.name()).collect();
        vec![("every domain".to_owned(), all)]
    } else {
        config
            .routes
            .iter()
            .map(|r| {
                let names = r.backends.iter().map(String::as_str).collect();
                (r.domains.join(", "), names)
            })
            .collect()
    };
    let kind_of = |name: &str| config.backends.iter().find(|b| b.name() == name);
    let mut sure = Vec::new();
    let mut may = Vec::new();
    for (domains, names) in &chains {
        // The chain's first backend decides: an IdP stops every change (none is passed
        // below a backend that may hold the account); an API answers as it likes.
        match names.iter().find_map(|n| kind_of(n)) {
            Some(BackendConfig::Oauth2(c)) => sure.push(format!("{domains} (`{}`)", c.name)),
            Some(BackendConfig::Http(c)) => may.push(format!("{domains} (`{}`)", c.name)),
            _ => {}
        }
    }
    let advice = "under ejabberd a refused setpass is shown to the user as a changed password: \
                  remove mod_register from ejabberd's modules where the backend cannot change \
                  passwords (README: ejabberd, setpass)";
    if !sure.is_empty() {
        return Some(Finding {
            item: "setpass",
            level: Level::Warn,
            detail: format!(
                "refused for every account on {}: an OAuth2 IdP cannot change passwords; {advice}",
                sure.join("; ")
            ),
        });
    }
    (!may.is_empty()).then(|| Finding {
        item: "setpass",
        level: Level::Ok,
        detail: format!(
            "answered by an HTTP API on {} (0 when it answers 501 or refuses); {advice}",
            may.join("; ")
        ),
    })
}

/// The dotted keys of inline secrets in a TOML file (not their values).
pub fn inline_secrets(text: &str) -> Vec<String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if crate::config::is_secret_key(k)
                        && !v.is_table()
                        && !matches!(v, toml::Value::String(s) if s.is_empty())
                    {
                        out.push(key);
                    } else {
                        walk(&key, v, out);
                    }
                }
            }
            toml::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        walk("", &toml::Value::Table(table), &mut out);
    }
    out
}

/// Relative paths resolve against the working directory, which under the XMPP server is not
/// the admin's.
pub(super) fn relative_paths(source: &str, config: &Config) -> Option<Finding> {
    let mut found: Vec<String> = Vec::new();
    let mut note = |what: String, path: &Path| {
        if path.is_relative() {
            found.push(format!("{what} = {}", path.display()));
        }
    };
    // With --users/--http-url alone the source is "command line", not a path.
    if Path::new(source).is_file() {
        note("config file".into(), Path::new(source));
    }
    if let Some(f) = &config.log.file {
        note("log.file".into(), f);
    }
    // Irrefutable while `file` is the only backend kind; the others have no local path.
    #[allow(irrefutable_let_patterns)]
    for (i, b) in config.backends.iter().enumerate() {
        if let crate::config::BackendConfig::File(c) = b {
            note(format!("backend[{i}].path"), &c.path);
        }
    }
    (!found.is_empty()).then(|| Finding {
        item: "paths",
        level: Level::Warn,
        detail: format!(
            "relative: {}; under the XMPP server they resolve against its working directory, \
             not this one: use absolute paths",
            found.join(", ")
        ),
    })
}

/// Which backends have a circuit breaker, and how it is set (`check` shows its live state on
/// the backend's own line); nothing when none has one.
pub(super) fn breakers(config: &Config) -> Option<Finding> {
    let each = config
        .backends
        .iter()
        .filter_map(|b| {
            let c = b.breaker()?;
            Some(format!(
                "{}: open for {} after {} consecutive outage(s)",
                b.name(),
                humantime::format_duration(c.open_for),
                c.failures
            ))
        })
        .collect::<Vec<_>>();
    (!each.is_empty()).then(|| Finding {
        item: "breakers",
        level: Level::Ok,
        detail: each.join("; "),
    })
}

pub(super) fn timing(config: &Config) -> Finding {
    let t = config.timeout;
    let shown = humantime::format_duration(t);
    let protocol = format!("{:?}", config.protocol).to_lowercase();
    let (level, note) = if t >= EJABBERD_TIMEOUT {
        (
            Level::Warn,
            "not below ejabberd's fixed 30 s nor Prosody's 5 s external_auth_timeout: they give up \
             first (Prosody then reads the late reply as the next answer)",
        )
    } else if t >= PROSODY_TIMEOUT {
        (
            Level::Warn,
            "not below Prosody's default external_auth_timeout (5 s): a late reply is read as the \
             answer to the next query; keep it below, or raise external_auth_timeout",
        )
    } else {
        (Level::Ok, "below Prosody's 5 s and ejabberd's 30 s")
    };
    Finding {
        item: "protocol",
        level,
        detail: format!("{protocol}; timeout {shown} per request, {note}"),
    }
}

pub(super) fn describe(d: &Destination) -> String {
    match d {
        Destination::Stderr => "stderr".to_owned(),
        Destination::File(p) => p.display().to_string(),
        Destination::Journald(p) => format!("journald ({})", p.display()),
        Destination::Syslog(p) => format!("syslog ({})", p.display()),
        Destination::Nowhere => "nowhere".to_owned(),
    }
}

/// Whether we could append to `path` (or create it), without touching it.
pub(super) fn writable(path: &Path) -> bool {
    use rustix::fs::{access, Access};
    if path.exists() {
        return access(path, Access::WRITE_OK).is_ok();
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    access(dir, Access::WRITE_OK | Access::EXEC_OK).is_ok()
}

pub(super) fn logs(config: &Config) -> Finding {
    let normal = destination(&config.log, false);
    let pty = destination(&config.log, true);
    let mut detail = format!(
        "{} (under a Prosody pty: {}",
        describe(&normal),
        describe(&pty)
    );
    if pty == Destination::Nowhere {
        detail.push_str("; set log.file, or log.target = \"journald\" or \"syslog\", to keep them");
    }
    detail.push(')');
    let mut level = Level::Ok;
    for d in [&normal, &pty] {
        if let Destination::Journald(path) | Destination::Syslog(path) = d {
            // Not fatal for the daemon (it drops lines until a daemon listens), but the
            // operator asked for these logs.
            if !crate::logging::is_socket(path) && level == Level::Ok {
                level = Level::Warn;
                detail = format!(
                    "{detail}: no socket at {}: log lines would be dropped",
                    path.display()
                );
            }
        }
        if let Destination::File(path) = d {
            if !writable(path) {
                level = Level::Fail;
                detail = format!(
                    "{detail}: cannot write {} as this user; the daemon would exit with status 2",
                    path.display()
                );
                break;
            }
        }
    }
    Finding {
        item: "logs",
        level,
        detail,
    }
}

pub(super) fn metrics(config: &Config) -> Option<Finding> {
    let configured = config.metrics_file.as_deref()?;
    let example = crate::metrics::resolve_path(configured, std::process::id());
    let per_process = example != configured;
    let on_exit = match config.metrics_on_exit {
        crate::config::OnExit::Remove => "removed at exit",
        crate::config::OnExit::Keep => "kept at exit",
    };
    let mut detail = format!(
        "{} every {} ({on_exit}), e.g. {}",
        configured.display(),
        humantime::format_duration(config.metrics_interval),
        example.display()
    );
    let mut level = Level::Ok;
    if !writable(&example) {
        level = Level::Fail;
        detail.push_str("; cannot write there as this user (the file would never appear)");
    }
    if !per_process {
        level = level.max(Level::Warn);
        detail.push_str(
            "; the same file for every process: the pool's processes overwrite each other \
             (put {pid} in the name or name a directory)",
        );
    }
    if !matches!(example.extension(), Some(e) if e == "prom") {
        level = level.max(Level::Warn);
        detail.push_str("; node_exporter's textfile collector reads only *.prom files");
    }
    Some(Finding {
        item: "metrics",
        level,
        detail,
    })
}

/// `[throttle]` when it is on: its settings in one line.
pub(super) fn throttle(config: &Config) -> Option<Finding> {
    let t = &config.throttle;
    if !t.enabled {
        return None;
    }
    let d = humantime::format_duration;
    let per_account = crate::state::throttle::MemoryStore::bytes_per_account(t.remembered_failures)
        + crate::state::throttle::MAP_OVERHEAD;
    let mut detail = format!(
        "on: {} distinct wrong passwords within {} lock an account for {} (doubling up to {}); \
         passwords verified within {} still reach the backend; {} wrong ones remembered per \
         account, at most {} accounts (about {} KiB) per process",
        t.max_failures,
        d(t.window),
        d(t.lockout),
        d(t.max_lockout),
        d(t.trusted_for),
        t.remembered_failures,
        t.max_accounts,
        t.max_accounts.saturating_mul(per_account as u64) / 1024,
    );
    let mut level = Level::Ok;
    if t.remembered_failures < t.max_failures as usize {
        level = Level::Warn;
        detail.push_str(
            "; remembered_failures is below max_failures: a stale password forgotten before \
             the account locks is counted again",
        );
    }
    Some(Finding {
        item: "throttle",
        level,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secrets_are_found_by_key_name_not_value() {
        let text = r#"
timeout = "4s"
[[backend]]
name = "idp"
client_secret = "s3cret"
token_endpoint = "https://x/token"
client_secret_file = "/etc/x"
[[backend]]
name = "api"
credentials = ""
basic_auth = "user:pass"
[backend.auth]
password = "hunter2"
"#;
        assert_eq!(
            inline_secrets(text),
            [
                "backend[0].client_secret",
                "backend[1].auth.password",
                "backend[1].basic_auth"
            ]
        );
    }
}
