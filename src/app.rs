//! Glue between the command line, the configuration, logging and the request loop.
//! `main.rs` calls [`main`]; everything here returns an exit code instead of exiting, so the
//! pieces stay testable.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};
use crate::protocol::WireCodec;
use crate::router::Handler;
use crate::secret::Secret;
use crate::server::{serve, Control, Ended, Reloaded, ServeOptions};
use crate::setup::{build_handler, load_config, EXIT_CONFIG};
use crate::signals::Signals;
use crate::stdio::{StdinReader, StdoutWriter};

pub fn main() -> ExitCode {
    // Leaked: the daemon prepares reloads on a thread of their own (see `SignalControl`),
    // which needs the command line for as long as the process runs, and it is parsed once.
    let cli: &'static Cli = Box::leak(Box::new(Cli::parse()));
    let code = match cli.command {
        Some(Command::HashPassword) => hash_password_command(),
        Some(Command::Check { json }) => crate::commands::check::run(cli, json),
        Some(Command::Query {
            request,
            ref user,
            ref server,
        }) => crate::commands::query::run(cli, request, user, server),
        Some(Command::Users { ref action }) => crate::commands::users::run(action),
        Some(Command::Generate { ref what }) => crate::commands::generate::run(what),
        Some(Command::Run) | None => run(cli),
    };
    // Log lines are written by a thread of their own (see logging.rs): give it a moment to
    // write the last ones before the process ends.
    crate::logging::finish();
    code
}

/// Reports a configuration error and returns exit status 2. Before logging is set up, stderr
/// is the only place a person will look, except under a Prosody pty: there stderr is the
/// protocol, and Prosody would read the message as a reply. The status alone tells Prosody.
fn config_failure(e: &dyn std::fmt::Display, under_pty: bool) -> ExitCode {
    if !under_pty {
        eprintln!("extauth-bridge: {e}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn run(cli: &'static Cli) -> ExitCode {
    // Prosody's pty (see pty.rs). What the command line and detection say is known before
    // the configuration is read, and reading it opens a file: close inherited descriptors and
    // keep panics off stderr first.
    let detected = crate::pty::detect();
    let early_pty = cli.pty.unwrap_or_default().enabled(detected);
    if early_pty {
        crate::pty::close_inherited_fds();
    }
    crate::logging::install_panic_hook(early_pty);
    limit_allocator_retention();
    let (config, source) = match load_config(cli) {
        Ok(c) => c,
        Err(e) => return config_failure(&e, early_pty),
    };
    let under_pty = config.pty.enabled(detected);
    if under_pty && !early_pty {
        // `pty = "on"` in the file: nothing of ours is open yet, it is not too late.
        crate::pty::close_inherited_fds();
        crate::logging::install_panic_hook(true);
    }
    let drained = if under_pty {
        match crate::pty::prepare_stdin() {
            Ok(d) => Some(d),
            Err(e) => {
                // With echo on, every query would come back ahead of its reply: answering
                // would be worse than not running. Prosody sees the failure status.
                let _ = crate::logging::init(&config.log, true);
                tracing::error!(error = %e, "pty: cannot switch stdin to raw mode");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    if let Err(e) = crate::logging::init(&config.log, under_pty) {
        return config_failure(&e.config_error(&source), under_pty);
    }
    if let Some(d) = drained {
        if d.bytes > 0 {
            tracing::warn!(
                lines = d.lines,
                bytes = d.bytes,
                partial_line = d.partial_line,
                "pty: discarded the queries waiting at start-up, unanswered (written while echo \
                 was on, their echo was taken as the reply)"
            );
        } else {
            tracing::debug!("pty mode: raw, nothing was waiting");
        }
    }
    let handler = match build_handler(&config, &source) {
        Ok(r) => r,
        Err(e) => {
            if under_pty {
                // stderr is off limits: the log (a file, if configured) is all there is.
                tracing::error!(error = %e, "invalid configuration");
            }
            return config_failure(&e, under_pty);
        }
    };
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            crate::logging::flush();
            return ExitCode::FAILURE;
        }
    };
    // One thread serves requests (a blocking read, then the request); CPU-bound work and file
    // access go to a small blocking pool. See BENCHMARKS.md for the measurements behind it.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(crate::signals::block_in_this_thread)
        .max_blocking_threads(crate::memory::max_blocking_threads())
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            crate::logging::flush();
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source,
        protocol = ?config.protocol,
        pty = under_pty,
        backends = config.backends.len(),
        "started"
    );
    let options = ServeOptions {
        timeout: config.timeout,
        max_in_flight: config.max_in_flight,
    };
    let codec = WireCodec::new(config.protocol, config.max_line);
    let metrics_settings = crate::metrics::Settings::from_config(&config);
    let metrics = crate::metrics::Exporter::start(metrics_settings.clone());
    let mut control = SignalControl {
        signals: &signals,
        cli,
        running: config,
        metrics,
        metrics_settings,
        runtime: runtime.handle().clone(),
        preparing: None,
        again: false,
    };
    let result = serve(
        &runtime,
        codec,
        crate::pty::SkipPartialLine::new(
            StdinReader::new(Some(&signals)),
            drained.is_some_and(|d| d.partial_line),
        ),
        StdoutWriter,
        handler,
        options,
        &mut control,
    );
    let metrics = control.metrics;
    // Dropping a runtime waits for its blocking tasks, and one may still be busy after its
    // request was answered `0` at the deadline (an argon2 check, a DNS lookup; a users-file
    // change gives up on its own once abandoned): exit promptly anyway, nothing is waiting
    // for their results.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    metrics.finish();
    let code = match result {
        Ok(Ended::EndOfInput) => {
            tracing::info!("end of input, exiting");
            ExitCode::SUCCESS
        }
        // Both logged by the loop. After a codec failure, status 0 still: Prosody starts a
        // new process on the next query only after a clean exit.
        Ok(Ended::Stopped | Ended::CodecFailed) => ExitCode::SUCCESS,
        // The server closed its end: nobody is left to answer.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "request loop failed");
            ExitCode::FAILURE
        }
    };
    crate::logging::flush();
    code
}

/// Keeps memory flat across password checks.
///
/// An argon2id verification allocates its whole memory cost (19 MiB by default) and frees
/// it. glibc raises its mmap threshold after the first such free, so later blocks come from
/// a per-thread arena and stay resident: measured, a bridge grew from 3 MiB to 237 MiB
/// after 50 logins. A fixed threshold sends every large block to mmap, so it is returned to
/// the kernel the moment the check ends, and page-fault cost (about 1 ms per check) is the
/// price.
fn limit_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Stop on SIGTERM/SIGINT, reload the configuration on SIGHUP.
///
/// A reload applies what can change between two requests: backends, routes, the cache
/// (which starts empty), `timeout`, `max_in_flight`, `log.level` and the metrics settings
/// (the exporter is restarted). The rest is fixed at start-up (see [`restart_only_changes`]) and a change
/// to it is logged as needing a restart.
///
/// The new configuration is read, parsed and built on a thread of its own, and swapped in
/// between two requests only once it is complete. Reading it opens files (the configuration,
/// secret files, users files) and any of them may block for as long as it likes: a FIFO
/// nobody writes, a hung network mount. On the request thread that would hold every reply
/// past the deadline (SPEC §10), since the runtime cannot interrupt a blocking call. Until
/// the new configuration is ready, requests are answered with the old one; a reload that
/// never completes is never applied (each further SIGHUP says it is still waiting), and a
/// SIGHUP that comes while one is being prepared starts one more after it, so the latest
/// edit is what ends up applied.
struct SignalControl<'a> {
    signals: &'a Signals,
    cli: &'static Cli,
    /// The configuration the process started with: what the restart-only settings still are.
    running: Config,
    metrics: crate::metrics::Exporter,
    metrics_settings: crate::metrics::Settings,
    /// Entered by the reload thread: building a handler may need the runtime's context.
    runtime: tokio::runtime::Handle,
    /// The reload being prepared, and when it started.
    preparing: Option<(Receiver<Prepared>, Instant)>,
    /// A SIGHUP came while one was being prepared: start another once it is done.
    again: bool,
}

/// What the reload thread hands over: the configuration and the handler built from it.
type Prepared = Result<(Config, Arc<dyn Handler>), ConfigError>;

impl SignalControl<'_> {
    /// Starts preparing a reload on its own thread.
    fn start_reload(&mut self) {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let (cli, runtime) = (self.cli, self.runtime.clone());
        let spawned = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                // Signals belong to the request thread, which waits for them.
                crate::signals::block_in_this_thread();
                let _context = runtime.enter();
                let loaded = load_config(cli).and_then(|(config, source)| {
                    build_handler(&config, &source).map(|handler| (config, handler))
                });
                // The request loop may have ended meanwhile: nobody to tell, fine.
                let _ = done.send(loaded);
                // The loop may be waiting for input: let it apply the result now.
                crate::signals::wake();
            });
        match spawned {
            Ok(_) => {
                tracing::info!("reloading the configuration");
                self.preparing = Some((result, Instant::now()));
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed (cannot start a thread), keeping the previous configuration");
            }
        }
    }

    /// Applies a prepared configuration.
    fn apply(&mut self, config: Config, handler: Arc<dyn Handler>) -> Reloaded {
        let fixed = restart_only_changes(&self.running, &config);
        if !fixed.is_empty() {
            tracing::warn!(
                keys = fixed.join(", ").as_str(),
                "changed in the configuration but needs a restart: the running values stay"
            );
        }
        if config.log.level != self.running.log.level {
            // Said under the old level: "configuration reloaded" below comes under the new.
            tracing::info!(from = ?self.running.log.level, to = ?config.log.level, "log level");
            if crate::logging::set_level(config.log.level) {
                self.running.log.level = config.log.level;
            }
        }
        let metrics_settings = crate::metrics::Settings::from_config(&config);
        if !same_metrics_settings(&self.metrics_settings, &metrics_settings) {
            // The old exporter ends as at exit (its file removed or kept as configured), the
            // new one starts like at start-up; the counters are the process's and go on.
            let new = crate::metrics::Exporter::start(metrics_settings.clone());
            let old = std::mem::replace(&mut self.metrics, new);
            old.replace_for_reload(&self.metrics);
            self.metrics_settings = metrics_settings;
        }
        tracing::info!(
            timeout_ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
            max_in_flight = config.max_in_flight,
            "configuration reloaded (backends, routes, cache, which starts empty, timeout, \
             max_in_flight, log level, metrics)"
        );
        Reloaded {
            handler,
            options: ServeOptions {
                timeout: config.timeout,
                max_in_flight: config.max_in_flight,
            },
        }
    }
}

impl Control for SignalControl<'_> {
    fn should_stop(&self) -> bool {
        self.signals.shutdown_requested()
    }

    /// Never blocks: starts a reload on SIGHUP, hands over one that is ready.
    fn reload(&mut self) -> Option<Reloaded> {
        if self.signals.take_reload() {
            match &self.preparing {
                Some((_, since)) => {
                    tracing::warn!(
                        waiting_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "a reload is still being prepared (a file it reads does not answer?): \
                         requests go on with the running configuration, another reload follows \
                         once it is done"
                    );
                    self.again = true;
                }
                None => self.start_reload(),
            }
        }
        let (result, _) = self.preparing.as_ref()?;
        let prepared = match result.try_recv() {
            Ok(prepared) => prepared,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err(ConfigError::new(
                "(reload)",
                "(thread)",
                "the reload thread ended without a result".to_owned(),
            )),
        };
        self.preparing = None;
        if std::mem::take(&mut self.again) {
            self.start_reload();
        }
        match prepared {
            Ok((config, handler)) => Some(self.apply(config, handler)),
            Err(e) => {
                tracing::error!(error = %e, "reload failed, keeping the previous configuration");
                None
            }
        }
    }
}

/// The keys whose new value a reload cannot apply, among those that differ. The wire
/// protocol and `max_line` live in the codec, which may already have committed to a framing;
/// pty mode was set up before the configuration was read; where and how logs are written
/// belongs to the global subscriber, installed once (only its level filter reloads).
fn restart_only_changes(running: &Config, loaded: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.log, &loaded.log);
    [
        ("protocol", running.protocol != loaded.protocol),
        ("max_line", running.max_line != loaded.max_line),
        ("pty", running.pty != loaded.pty),
        ("log.format", a.format != b.format),
        ("log.target", a.target != b.target),
        ("log.file", a.file != b.file),
        ("log.socket", a.socket != b.socket),
        ("log.facility", a.facility != b.facility),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

fn same_metrics_settings(a: &crate::metrics::Settings, b: &crate::metrics::Settings) -> bool {
    a.file == b.file
        && a.interval == b.interval
        && a.on_exit == b.on_exit
        && a.summary_interval == b.summary_interval
}

fn hash_password_command() -> ExitCode {
    // Wiped on drop, like the Secret made from it.
    let mut line = zeroize::Zeroizing::new(String::new());
    if let Err(e) = io::stdin().lock().read_line(&mut line) {
        eprintln!("extauth-bridge: cannot read the password: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let trimmed = line.strip_suffix('\n').unwrap_or(line.as_str());
    let password = Secret::new(trimmed.strip_suffix('\r').unwrap_or(trimmed));
    drop(line);
    if password.is_empty() {
        eprintln!("extauth-bridge: empty password");
        return ExitCode::from(EXIT_CONFIG);
    }
    match crate::backend::file::hash::hash_password(&password) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_settings_that_need_a_restart() {
        let running = Config::default();
        let mut loaded = Config {
            timeout: std::time::Duration::from_secs(1),
            max_in_flight: 3,
            metrics_file: Some("/tmp/m.prom".into()),
            ..Config::default()
        };
        assert!(restart_only_changes(&running, &loaded).is_empty());
        loaded.protocol = crate::protocol::Protocol::Ejabberd;
        loaded.pty = crate::pty::PtyMode::On;
        loaded.log.level = crate::config::LogLevel::Trace;
        loaded.log.file = Some("/tmp/x.log".into());
        assert_eq!(
            restart_only_changes(&running, &loaded),
            ["protocol", "pty", "log.file"]
        );
    }
}
