//! Glue between the command line, the configuration, logging and the request loop.
//! `main.rs` calls [`main`]; everything here returns an exit code instead of exiting, so the
//! pieces stay testable.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::{
    BackendConfig, Config, ConfigError, FileBackendConfig, CONFIG_ENV, DEFAULT_CONFIG_PATH,
};
use crate::protocol::WireCodec;
use crate::router::{Handler, Router};
use crate::secret::Secret;
use crate::server::{serve, Control, ServeOptions};
use crate::signals::Signals;
use crate::stdio::{StdinReader, StdoutWriter};

/// Exit status for configuration and usage errors.
pub const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword) => hash_password_command(),
        Some(Command::Check { json }) => crate::commands::check::run(&cli, json),
        Some(Command::Query {
            request,
            ref user,
            ref server,
        }) => crate::commands::query::run(&cli, request, user, server),
        Some(Command::Users { ref action }) => crate::commands::users::run(action),
        Some(Command::Generate { ref what }) => crate::commands::generate::run(what),
        Some(Command::Run) | None => run(&cli),
    }
}

/// The configuration as the daemon would use it: file (from `--config`, the environment or
/// the default path), then command-line overrides. Returns it with the name of its source.
pub fn load_config(cli: &Cli) -> Result<(Config, String), ConfigError> {
    let explicit = cli.config.clone().or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let shortcut = cli.users.is_some();
    let (mut config, source) = match explicit {
        Some(path) => (Config::load(&path)?, path.display().to_string()),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => (
            Config::load(Path::new(DEFAULT_CONFIG_PATH))?,
            DEFAULT_CONFIG_PATH.to_owned(),
        ),
        None if shortcut => (Config::default(), "command line".to_owned()),
        None => {
            return Err(ConfigError::new(
                DEFAULT_CONFIG_PATH,
                "(file)",
                format!("not found; use --config FILE, ${CONFIG_ENV} or --users FILE"),
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
    if let Some(f) = &cli.log_file {
        config.log.file = Some(f.clone());
    }
    if let Some(users) = &cli.users {
        config.backends = vec![BackendConfig::File(FileBackendConfig {
            name: "users".into(),
            path: users.clone(),
        })];
        config.routes.clear();
    }
    config.validate(&source)?;
    Ok((config, source))
}

fn config_failure(e: &dyn std::fmt::Display) -> ExitCode {
    // Before logging is set up, stderr is the only place a person will look.
    eprintln!("extauth-bridge: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn run(cli: &Cli) -> ExitCode {
    let (config, source) = match load_config(cli) {
        Ok(c) => c,
        Err(e) => return config_failure(&e),
    };
    if let Err(e) = crate::logging::init(&config.log, false) {
        return config_failure(&e);
    }
    let router = match Router::from_config(&config, &source) {
        Ok(r) => r,
        Err(e) => return config_failure(&e),
    };
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source,
        protocol = ?config.protocol,
        backends = config.backends.len(),
        "started"
    );
    let options = ServeOptions {
        timeout: config.timeout,
        ..ServeOptions::default()
    };
    let codec = WireCodec::new(config.protocol, config.max_line);
    let metrics = crate::metrics::Exporter::start(crate::metrics::Settings::from_config(&config));
    let mut control = SignalControl {
        signals: &signals,
        cli,
    };
    let result = serve(
        &runtime,
        codec,
        StdinReader::new(Some(&signals)),
        StdoutWriter,
        Arc::new(router),
        options,
        &mut control,
    );
    metrics.finish();
    match result {
        Ok(()) => {
            tracing::info!("end of input, exiting");
            ExitCode::SUCCESS
        }
        // The server closed its end: nobody is left to answer.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "request loop failed");
            ExitCode::FAILURE
        }
    }
}

/// Stop on SIGTERM/SIGINT, reload backends and routes on SIGHUP.
struct SignalControl<'a> {
    signals: &'a Signals,
    cli: &'a Cli,
}

impl Control for SignalControl<'_> {
    fn should_stop(&self) -> bool {
        self.signals.shutdown_requested()
    }

    fn reload(&mut self) -> Option<Arc<dyn Handler>> {
        if !self.signals.take_reload() {
            return None;
        }
        let loaded = load_config(self.cli)
            .and_then(|(config, source)| Router::from_config(&config, &source));
        match loaded {
            Ok(router) => {
                tracing::info!(
                    "configuration reloaded (backends and routes; restart for other settings)"
                );
                Some(Arc::new(router))
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed, keeping the previous configuration");
                None
            }
        }
    }
}

fn hash_password_command() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = io::stdin().lock().read_line(&mut line) {
        eprintln!("extauth-bridge: cannot read the password: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let password = Secret::new(trimmed.strip_suffix('\r').unwrap_or(trimmed));
    drop(line);
    if password.is_empty() {
        eprintln!("extauth-bridge: empty password");
        return ExitCode::from(EXIT_CONFIG);
    }
    match crate::backend::file::hash_password(&password) {
        Ok(hash) => {
            let mut stdout = io::stdout().lock();
            // stdout-ok: the hash is this command's output.
            if writeln!(stdout, "{hash}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("extauth-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
