//! The daemon's [`crate::server::Control`]: stop on SIGTERM/SIGINT, and on SIGHUP prepare
//! the new configuration and handler on a thread of their own and hand them to the request
//! loop once ready; which settings a reload can apply and which need a restart.
//!
//! It must never block the request thread (a reload that hangs is never applied), and it
//! builds the new handler only through [`crate::setup`], as at start-up.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use crate::cli::Cli;
use crate::config::{Config, ConfigError};
use crate::router::Handler;
use crate::server::{Control, Reloaded, ServeOptions};
use crate::setup::{build_handler, load_config};
use crate::signals::Signals;

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
pub(super) struct SignalControl<'a> {
    pub(super) signals: &'a Signals,
    pub(super) cli: &'static Cli,
    /// The configuration the process started with: what the restart-only settings still are.
    pub(super) running: Config,
    pub(super) metrics: crate::metrics::Exporter,
    pub(super) metrics_settings: crate::metrics::Settings,
    /// Entered by the reload thread: building a handler may need the runtime's context.
    pub(super) runtime: tokio::runtime::Handle,
    /// The reload being prepared, and when it started.
    pub(super) preparing: Option<(Receiver<Prepared>, Instant)>,
    /// A SIGHUP came while one was being prepared: start another once it is done.
    pub(super) again: bool,
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
