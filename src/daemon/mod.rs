//! The daemon the XMPP server starts: the start-up order (pty set-up, allocator tuning,
//! configuration, logging, signals, runtime, metrics), then the request loop until end of
//! input or a stop signal, and the exit status. Reloading on SIGHUP is `reload.rs`'s.
//!
//! It builds its handler through [`crate::setup`] like the commands do; it picks the codec
//! from the configuration but decodes nothing itself, and reaches the backends only through
//! the handler it hands to the request loop. The commands must not import it.

use std::io;
use std::process::ExitCode;

use crate::cli::Cli;
use crate::protocol::WireCodec;
use crate::server::{serve, Ended, ServeOptions};
use crate::setup::{build_handler, load_config, EXIT_CONFIG};
use crate::signals::Signals;
use crate::stdio::{StdinReader, StdoutWriter};

mod reload;

use reload::SignalControl;

/// Reports a configuration error and returns exit status 2. Before logging is set up, stderr
/// is the only place a person will look, except under a Prosody pty: there stderr is the
/// protocol, and Prosody would read the message as a reply. The status alone tells Prosody.
fn config_failure(e: &dyn std::fmt::Display, under_pty: bool) -> ExitCode {
    if !under_pty {
        eprintln!("extauth-bridge: {e}");
    }
    ExitCode::from(EXIT_CONFIG)
}

pub(crate) fn run(cli: &'static Cli) -> ExitCode {
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
