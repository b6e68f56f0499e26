//! `extauth-bridge check`: is this configuration going to work under the XMPP server?
//!
//! It loads the configuration exactly as the daemon does, asks every backend to prove it is
//! usable (`Backend::check`), and looks at what differs between an admin's shell and the
//! server's account: file permissions, the user we run as, where logs would go, proxies in
//! the environment. Exit 0 when all is well, 1 when something is broken, 2 for a
//! configuration error.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{millis, say, EXIT_ERROR, EXIT_NO, EXIT_OK};
use crate::app::load_config;
use crate::cli::Cli;
use crate::config::{Config, ConfigError, CONFIG_ENV, DEFAULT_CONFIG_PATH};
use crate::logging::{destination, Destination};
use crate::router::{build_backend, Router};

/// Prosody's default `external_auth_timeout`: a reply later than this is read as the answer
/// to the next query.
const PROSODY_TIMEOUT: Duration = Duration::from_secs(5);
/// ejabberd's fixed extauth timeout.
const EJABBERD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report about the configuration or the environment.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub item: &'static str,
    pub level: Level,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct BackendReport {
    pub name: String,
    pub kind: &'static str,
    pub ok: bool,
    pub detail: String,
    pub millis: f64,
    /// What to try, for a failure whose cause is recognisable.
    pub hint: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ConfigErrorReport {
    pub file: String,
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
    pub hint: &'static str,
}

/// The settings in force, for machines (`--json`); the human report has them in its lines.
#[derive(Debug, Serialize)]
pub struct Effective {
    pub protocol: String,
    pub timeout_ms: u128,
    pub log: String,
    pub log_under_pty: String,
    pub metrics_file: Option<String>,
    pub uid: u32,
    pub user: String,
    pub stdout_is_terminal: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub exit: u8,
    pub version: &'static str,
    pub config_file: Option<String>,
    pub config_error: Option<ConfigErrorReport>,
    pub effective: Option<Effective>,
    pub findings: Vec<Finding>,
    pub backends: Vec<BackendReport>,
}

pub fn run(cli: &Cli, json: bool) -> ExitCode {
    super::init_command_logging(cli);
    let report = build_report(cli);
    if json {
        match serde_json::to_string(&report) {
            Ok(text) => say(format_args!("{text}")),
            Err(e) => return super::fail(EXIT_ERROR, e),
        }
    } else {
        print_human(&report);
    }
    ExitCode::from(report.exit)
}

pub fn build_report(cli: &Cli) -> Report {
    let mut findings = vec![running_as(), stdout_kind()];
    findings.extend(proxy_environment());
    let loaded = load_config(cli).and_then(|(config, source)| {
        // Building the router checks what validation alone does not (at least one backend,
        // every backend constructible), exactly as at daemon start.
        Router::from_config(&config, &source).map(|_| (config, source))
    });
    let (config, source) = match loaded {
        Ok(c) => c,
        Err(e) => {
            if e.key == "(file)" || Path::new(&e.file).is_file() {
                findings.extend(file_permissions(Path::new(&e.file)));
            }
            return Report {
                ok: false,
                exit: EXIT_ERROR,
                version: env!("CARGO_PKG_VERSION"),
                config_file: Some(e.file.clone()),
                config_error: Some(ConfigErrorReport {
                    hint: hint(&e),
                    file: e.file,
                    key: e.key,
                    line: e.line,
                    message: e.message,
                }),
                effective: None,
                findings,
                backends: Vec::new(),
            };
        }
    };
    let config_path = Path::new(&source);
    findings.insert(0, config_found(&source, &config));
    if config_path.is_file() {
        findings.extend(file_permissions(config_path));
    }
    findings.push(routes(&config));
    findings.extend(relative_paths(&source, &config));
    findings.push(timing(&config));
    findings.push(logs(&config));
    findings.extend(metrics(&config));
    let backends = check_backends(&config);
    let broken = backends.iter().any(|b| !b.ok) || findings.iter().any(|f| f.level == Level::Fail);
    Report {
        ok: !broken,
        exit: if broken { EXIT_NO } else { EXIT_OK },
        version: env!("CARGO_PKG_VERSION"),
        effective: Some(effective(&config)),
        config_file: Some(source),
        config_error: None,
        findings,
        backends,
    }
}

fn effective(config: &Config) -> Effective {
    let uid = rustix::process::geteuid().as_raw();
    Effective {
        protocol: format!("{:?}", config.protocol).to_lowercase(),
        timeout_ms: config.timeout.as_millis(),
        log: describe(&destination(&config.log, false)),
        log_under_pty: describe(&destination(&config.log, true)),
        metrics_file: config.metrics_file.as_deref().map(|f| {
            crate::metrics::resolve_path(f, std::process::id())
                .display()
                .to_string()
        }),
        uid,
        user: user_name(uid),
        stdout_is_terminal: rustix::termios::isatty(rustix::stdio::stdout()),
    }
}

fn print_human(report: &Report) {
    if let Some(e) = &report.config_error {
        let line = e.line.map(|l| format!(" line {l}")).unwrap_or_default();
        say(format_args!(
            "{:<9} {:<4}  {}{line}: key `{}`: {}",
            "config",
            Level::Fail.word(),
            e.file,
            e.key,
            e.message
        ));
        say(format_args!("{:<9} {:<4}  {}", "", "hint", e.hint));
    }
    for f in &report.findings {
        say(format_args!(
            "{:<9} {:<4}  {}",
            f.item,
            f.level.word(),
            f.detail
        ));
    }
    let width = report
        .backends
        .iter()
        .map(|b| b.name.len() + b.kind.len() + 3)
        .max()
        .unwrap_or(0);
    for b in &report.backends {
        let label = format!("{} ({})", b.name, b.kind);
        say(format_args!(
            "{:<9} {:<4}  {label:<width$}  {:>8.1} ms  {}",
            "backend",
            if b.ok { Level::Ok } else { Level::Fail }.word(),
            b.millis,
            b.detail
        ));
        if let Some(hint) = b.hint {
            say(format_args!("{:<9} {:<4}  {hint}", "", "hint"));
        }
    }
    let verdict = match report.exit {
        EXIT_OK => "all is well".to_owned(),
        EXIT_ERROR => "configuration error: the daemon would exit with status 2".to_owned(),
        _ => {
            let failed = report.backends.iter().filter(|b| !b.ok).count();
            let other = report
                .findings
                .iter()
                .filter(|f| f.level == Level::Fail)
                .count();
            format!(
                "{failed} of {} backend(s) failed, {other} other problem(s)",
                report.backends.len()
            )
        }
    };
    say(format_args!(
        "{:<9} {:<4}  {verdict}",
        "result",
        if report.ok { "ok" } else { "FAIL" }
    ));
}

/// What to do about a configuration error, from its key and message.
pub fn hint(e: &ConfigError) -> &'static str {
    let m = e.message.as_str();
    let has = |s: &str| m.contains(s);
    if e.key == "(file)" && (has("not found") || has("No such file")) {
        "create it (see examples/config.toml) or name it with --config FILE or $EXTAUTH_BRIDGE_CONFIG; \
         Prosody passes no arguments, so under Prosody only the default path or the environment work"
    } else if has("Permission denied") {
        "make it readable by the XMPP server's account, e.g. chgrp prosody FILE && chmod 640 FILE, \
         and check every directory above it is searchable"
    } else if has("unknown field") {
        "a misspelt or misplaced key: the Keys table in README.md lists every key"
    } else if has("missing field") {
        "this key is required here: see the Keys table in README.md"
    } else if has("unknown variant") {
        "use one of the values the message lists"
    } else if has("invalid duration") {
        "write durations like \"4s\", \"500ms\" or \"1m 30s\""
    } else if has("duplicate backend name") {
        "give every [[backend]] its own name"
    } else if has("no backend named") {
        "a route's backends must be names of [[backend]] tables, spelt the same"
    } else if has("no [[backend]]") {
        "add a [[backend]] table (see examples/config.toml) or run with --users FILE"
    } else if has("domain pattern") {
        "domains are \"example.org\" or \"*.example.org\" (any subdomain)"
    } else if has("invalid type") {
        "the value has the wrong type: strings need quotes, lists need [ ]"
    } else if e.line.is_some() {
        "a TOML syntax error at that line: check quotes, brackets and `=`"
    } else {
        "see the Keys table in README.md"
    }
}

fn config_found(source: &str, config: &Config) -> Finding {
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
fn routes(config: &Config) -> Finding {
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

/// Keys whose values are secrets when written inline: `client_secret`, `password`, `bearer_token`…
fn is_secret_key(key: &str) -> bool {
    ["secret", "password", "token", "credentials"]
        .iter()
        .any(|s| key.ends_with(s))
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
                    if matches!(v, toml::Value::String(s) if !s.is_empty()) && is_secret_key(k) {
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

fn file_permissions(path: &Path) -> Option<Finding> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    let owner = format!(
        "owner {}, group {}",
        user_name(meta.uid()),
        group_name(meta.gid())
    );
    let secrets = std::fs::read_to_string(path)
        .map(|t| inline_secrets(&t))
        .unwrap_or_default();
    let (level, detail) = if mode & 0o002 != 0 {
        (
            Level::Fail,
            format!("mode {mode:04o} ({owner}): anyone can change it, and with it who gets in; chmod o-w"),
        )
    } else if mode & 0o004 != 0 && !secrets.is_empty() {
        (
            Level::Fail,
            format!(
                "mode {mode:04o} ({owner}): world-readable and holds secrets ({}); chmod 640 and \
                 chgrp it to the XMPP server's group, or move the secrets to files or the environment",
                secrets.join(", ")
            ),
        )
    } else {
        let secrets = if secrets.is_empty() {
            "no inline secrets".to_owned()
        } else {
            format!("inline secrets ({}) not world-readable", secrets.join(", "))
        };
        (Level::Ok, format!("mode {mode:04o} ({owner}); {secrets}"))
    };
    Some(Finding {
        item: "perms",
        level,
        detail,
    })
}

/// The name for a uid or gid from /etc/passwd or /etc/group (no NSS: this is a diagnostic,
/// a number will do when the name is elsewhere).
fn id_name(db: &str, id: u32) -> String {
    std::fs::read_to_string(db)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let n = fields.nth(1)?;
                (n.parse::<u32>().ok()? == id).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

fn user_name(uid: u32) -> String {
    id_name("/etc/passwd", uid)
}

fn group_name(gid: u32) -> String {
    id_name("/etc/group", gid)
}

/// Relative paths resolve against the working directory, which under the XMPP server is not
/// the admin's.
fn relative_paths(source: &str, config: &Config) -> Option<Finding> {
    let mut found: Vec<String> = Vec::new();
    let mut note = |what: String, path: &Path| {
        if path.is_relative() {
            found.push(format!("{what} = {}", path.display()));
        }
    };
    note("config file".into(), Path::new(source));
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

fn running_as() -> Finding {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let name = user_name(uid);
    if uid == 0 {
        Finding {
            item: "user",
            level: Level::Warn,
            detail: "root (uid 0): permission problems the XMPP server's account would hit are \
                     hidden; run as that account too, e.g. sudo -u prosody extauth-bridge check"
                .to_owned(),
        }
    } else {
        Finding {
            item: "user",
            level: Level::Ok,
            detail: format!(
                "{name} (uid {uid}, gid {gid}); the XMPP server runs us as its own account"
            ),
        }
    }
}

fn stdout_kind() -> Finding {
    let stdout = rustix::stdio::stdout();
    let detail = if rustix::termios::isatty(stdout) {
        "a terminal here; under the server it is a pipe (ejabberd) or a pty (Prosody) carrying \
         nothing but replies"
    } else {
        "not a terminal (a pipe or file); the daemon writes nothing there but replies"
    };
    Finding {
        item: "stdout",
        level: Level::Ok,
        detail: detail.to_owned(),
    }
}

/// Proxies set in this shell are used by the HTTP client; the server's environment
/// usually has none (or others).
fn proxy_environment() -> Option<Finding> {
    let set: Vec<&str> = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ]
    .into_iter()
    .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    .collect();
    (!set.is_empty()).then(|| Finding {
        item: "env",
        level: Level::Warn,
        detail: format!(
            "{} set in this environment: HTTP backends use it here, but the XMPP server's \
             environment may differ",
            set.join(", ")
        ),
    })
}

fn timing(config: &Config) -> Finding {
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

fn describe(d: &Destination) -> String {
    match d {
        Destination::Stderr => "stderr".to_owned(),
        Destination::File(p) => p.display().to_string(),
        Destination::Nowhere => "nowhere".to_owned(),
    }
}

/// Whether we could append to `path` (or create it), without touching it.
fn writable(path: &Path) -> bool {
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

fn logs(config: &Config) -> Finding {
    let normal = destination(&config.log, false);
    let pty = destination(&config.log, true);
    let mut detail = format!(
        "{} (under a Prosody pty: {}",
        describe(&normal),
        describe(&pty)
    );
    if pty == Destination::Nowhere {
        detail.push_str("; set log.file to keep them");
    }
    detail.push(')');
    let mut level = Level::Ok;
    for d in [&normal, &pty] {
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

fn metrics(config: &Config) -> Option<Finding> {
    let configured = config.metrics_file.as_deref()?;
    let example = crate::metrics::resolve_path(configured, std::process::id());
    let per_process = example != configured;
    let on_exit = match config.metrics_on_exit {
        crate::metrics::OnExit::Remove => "removed at exit",
        crate::metrics::OnExit::Keep => "kept at exit",
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

/// What to try for a backend failure, from the words of its error.
fn backend_hint(detail: &str) -> Option<&'static str> {
    let d = detail.to_lowercase();
    let has = |s: &str| d.contains(s);
    Some(if has("permission denied") {
        "the XMPP server's account must be able to read it (and write it for setpass/tryregister/\
         removeuser): check owner, group and mode, and every directory above; run check as that account"
    } else if has("no such file") {
        "the path does not exist here; use an absolute path, and check it on the XMPP server's host"
    } else if has("no answer within") || has("timed out") || has("timeout") {
        "too slow or unreachable: check the network path from this host and account, or raise `timeout` \
         (staying below the XMPP server's own timeout)"
    } else if has("connection refused") || has("connect") || has("dns") || has("resolve") {
        "not reachable from here: check host, port, DNS, firewall and proxy variables as the XMPP \
         server's account"
    } else if has("certificate") || has("tls") {
        "TLS failed: check the server's certificate chain, or configure the CA file the backend needs"
    } else if has("line ") {
        "fix or remove the lines named: the daemon ignores them, so those accounts cannot log in"
    } else {
        return None;
    })
}

fn check_backends(config: &Config) -> Vec<BackendReport> {
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            return vec![BackendReport {
                name: "-".into(),
                kind: "-",
                ok: false,
                detail: format!("cannot start the async runtime: {e}"),
                millis: 0.0,
                hint: None,
            }]
        }
    };
    let timeout = config.timeout;
    let checks = config.backends.iter().map(|b| async move {
        let started = Instant::now();
        let name = b.name().to_owned();
        let backend = match build_backend(b) {
            Ok(backend) => backend,
            Err(e) => {
                return BackendReport {
                    name,
                    kind: "-",
                    ok: false,
                    detail: e.to_string(),
                    millis: 0.0,
                    hint: None,
                }
            }
        };
        let result = tokio::time::timeout(timeout, backend.check()).await;
        let took = millis(started.elapsed());
        let (ok, detail) = match result {
            Ok(Ok(detail)) => (true, detail),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (
                false,
                format!(
                    "no answer within the request timeout ({})",
                    humantime::format_duration(timeout)
                ),
            ),
        };
        BackendReport {
            hint: if ok { None } else { backend_hint(&detail) },
            name,
            kind: backend.kind(),
            ok,
            detail,
            millis: took,
        }
    });
    let reports = runtime.block_on(futures_util::future::join_all(checks));
    // A check that timed out may still be stuck in a blocking thread (a users file on a
    // hung NFS mount, a FIFO): do not wait for it, as dropping the runtime would.
    runtime.shutdown_background();
    reports
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
[backend.auth]
password = "hunter2"
"#;
        assert_eq!(
            inline_secrets(text),
            ["backend[0].client_secret", "backend[1].auth.password"]
        );
    }

    #[test]
    fn every_config_error_gets_a_specific_hint() {
        for (text, expect) in [
            ("timeout = \"4 parsecs\"", "durations"),
            ("colour = 1", "misspelt"),
            ("[[backend]]\nname='a'\ntype='file'\n", "required"),
            ("[[backend]]\nname='a'\ntype='ldap'\n", "values"),
            (
                "[[route]]\ndomains=['x']\nbackends=['nope']\n",
                "names of [[backend]]",
            ),
            ("timeout = 4", "wrong type"),
            ("[log\n", "syntax"),
        ] {
            let e = Config::parse(text, "c.toml").unwrap_err();
            assert!(hint(&e).contains(expect), "{text:?}: {e} -> {}", hint(&e));
        }
        // Tests run as root, where permissions cannot fail: the message is built here.
        let e = ConfigError::new(
            "/etc/x.toml",
            "(file)",
            "cannot read: Permission denied (os error 13)",
        );
        assert!(hint(&e).contains("readable by the XMPP server's account"));
        let e = ConfigError::new("/etc/x.toml", "(file)", "not found; use --config FILE");
        assert!(hint(&e).contains("Prosody passes no arguments"));
    }
}
