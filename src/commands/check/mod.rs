//! `extauth-bridge check`: is this configuration going to work under the XMPP server?
//!
//! It loads the configuration exactly as the daemon does, asks every backend to prove it is
//! usable (`Backend::check`), and looks at what differs between an admin's shell and the
//! server's account ([`findings`]): file permissions, the user we run as, where logs would
//! go, proxies in the environment. Every failure it can name gets a hint ([`hints`]).
//! Exit 0 when all is well, 1 when something is broken, 2 for a configuration error.

mod environment;
mod findings;
mod generations;
mod hints;
mod remember;
mod shared;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

use super::{millis, say, EXIT_ERROR, EXIT_NO, EXIT_OK};
use crate::cli::Cli;
use crate::config::Config;
use crate::logging::destination;
use crate::router::{build_backend, Router};
use crate::setup::load_config;
use environment::{file_permissions, proxy_environment, running_as, stdout_kind, user_name};
use findings::{
    breakers, config_found, describe, logs, metrics, relative_paths, routes, setpass_refusals,
    throttle, timing,
};
use hints::{backend_hint, hint};

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
    /// `false` only for `fail`: a backend with warnings works.
    pub ok: bool,
    pub level: Level,
    pub detail: String,
    /// What works but will make some requests fail (a read-only users file…).
    pub warnings: Vec<String>,
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
    findings.extend(setpass_refusals(&config));
    findings.extend(remember::remembered_accounts(&config));
    findings.extend(relative_paths(&source, &config));
    findings.push(timing(&config));
    findings.extend(breakers(&config));
    findings.push(logs(&config));
    findings.extend(metrics(&config));
    findings.extend(generations::generations(&config));
    findings.extend(throttle(&config));
    findings.extend(shared::shared(&config, &source));
    let backends = check_backends(&config, &source);
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
            b.level.word(),
            b.millis,
            b.detail
        ));
        for warning in &b.warnings {
            say(format_args!(
                "{:<9} {:<4}  {warning}",
                "",
                Level::Warn.word()
            ));
        }
        if let Some(hint) = b.hint {
            say(format_args!("{:<9} {:<4}  {hint}", "", "hint"));
        }
    }
    let verdict = match report.exit {
        EXIT_OK => {
            // Warnings do not fail the check (the daemon runs), but "all is well" above a
            // warning would tell the operator to stop reading.
            let warnings = report
                .findings
                .iter()
                .filter(|f| f.level == Level::Warn)
                .count()
                + report
                    .backends
                    .iter()
                    .map(|b| b.warnings.len() + usize::from(b.level == Level::Warn))
                    .sum::<usize>();
            match warnings {
                0 => "all is well".to_owned(),
                n => format!("usable, with {n} warning(s) above"),
            }
        }
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

fn check_backends(config: &Config, source: &str) -> Vec<BackendReport> {
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            return vec![BackendReport {
                name: "-".into(),
                kind: "-",
                ok: false,
                level: Level::Fail,
                detail: format!("cannot start the async runtime: {e}"),
                warnings: Vec::new(),
                millis: 0.0,
                hint: None,
            }]
        }
    };
    let timeout = config.timeout;
    let checks = config.backends.iter().enumerate().map(|(i, b)| async move {
        let started = Instant::now();
        let name = b.name().to_owned();
        let backend = match build_backend(b, i, source) {
            Ok(backend) => backend,
            Err(e) => {
                return BackendReport {
                    name,
                    kind: "-",
                    ok: false,
                    level: Level::Fail,
                    detail: e.to_string(),
                    warnings: Vec::new(),
                    millis: 0.0,
                    hint: None,
                }
            }
        };
        let result = tokio::time::timeout(timeout, backend.check_report()).await;
        let took = millis(started.elapsed());
        let (ok, detail, warnings) = match result {
            Ok(Ok(report)) => (true, report.detail, report.warnings),
            Ok(Err(e)) => (false, e.to_string(), Vec::new()),
            Err(_) => (
                false,
                format!(
                    "no answer within the request timeout ({})",
                    humantime::format_duration(timeout)
                ),
                Vec::new(),
            ),
        };
        let level = match (ok, warnings.is_empty()) {
            (false, _) => Level::Fail,
            (true, false) => Level::Warn,
            (true, true) => Level::Ok,
        };
        BackendReport {
            hint: if ok { None } else { backend_hint(&detail) },
            name,
            kind: backend.kind(),
            ok,
            level,
            detail,
            warnings,
            millis: took,
        }
    });
    let reports = runtime.block_on(futures_util::future::join_all(checks));
    // A check that timed out may still be stuck in a blocking thread (a users file on a
    // hung NFS mount, a FIFO): do not wait for it, as dropping the runtime would.
    runtime.shutdown_background();
    reports
}
