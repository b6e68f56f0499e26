//! Getting the metrics out: the per-process file (path resolution, atomic writes, sweeping
//! the files of dead processes) and the background thread that writes it and logs the
//! summary. See the module above for why it is a file per process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::global;
use crate::config::OnExit;

/// The metrics settings of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// As configured: a file name (with `{pid}`) or a directory.
    pub file: Option<PathBuf>,
    pub interval: Duration,
    pub on_exit: OnExit,
    /// Zero: a summary at exit only.
    pub summary_interval: Duration,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Settings {
        Settings {
            file: config.metrics_file.clone(),
            interval: config.metrics_interval,
            on_exit: config.metrics_on_exit,
            summary_interval: config.metrics_summary_interval,
        }
    }
}

/// The configured path as a pattern with `{pid}`: as written, or for a directory
/// `DIR/extauth-bridge-{pid}.prom`. `None` for a fixed file name.
fn template(configured: &Path) -> Option<PathBuf> {
    #[cfg(debug_assertions)]
    crate::fs::test_hooks::stall(configured);
    let text = configured.to_string_lossy();
    if text.contains("{pid}") {
        Some(configured.to_path_buf())
    } else if configured.is_dir() || text.ends_with('/') {
        Some(configured.join("extauth-bridge-{pid}.prom"))
    } else {
        None
    }
}

/// The file this process writes: `{pid}` replaced; a directory gets
/// `extauth-bridge-{pid}.prom` inside it; a fixed name is used as it is.
pub fn resolve_path(configured: &Path, pid: u32) -> PathBuf {
    match template(configured) {
        Some(t) => PathBuf::from(t.to_string_lossy().replace("{pid}", &pid.to_string())),
        None => configured.to_path_buf(),
    }
}

/// Writes `contents` to `path` via a temp file in the same directory and a rename, so a
/// scrape never reads half a file. Readable by all: node_exporter runs as its own user.
/// The temp file is made by [`crate::fs::replace_atomically`], which never opens what is
/// already at its name: the directory may be writable by other accounts.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    crate::fs::replace_atomically(path, contents.as_bytes(), 0o644, |_| Ok(()), || true).map(|_| ())
}

/// Removes the files of processes that no longer exist, for a `{pid}` pattern or a
/// directory. Files of live processes (and anything not matching) are left alone.
fn sweep_dead(configured: &Path, own: &Path) {
    let Some(template) = template(configured) else {
        return;
    };
    let (Some(dir), Some(name)) = (template.parent(), template.file_name()) else {
        return;
    };
    let name = name.to_string_lossy();
    // `{pid}` in a directory name rather than the file name: nothing to sweep.
    let Some((prefix, suffix)) = name.split_once("{pid}") else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let Some(pid) = file_name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .and_then(|digits| digits.parse::<i32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let gone = match rustix::process::Pid::from_raw(pid) {
            Some(p) => matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            ),
            None => false,
        };
        if gone && path != own {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "removed the metrics file of a dead process")
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot remove a stale metrics file")
                }
            }
        }
    }
}

/// What the writer thread does with the file as it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// Write the final numbers (`metrics_on_exit = "keep"`).
    Write,
    /// Remove it (`metrics_on_exit = "remove"`).
    Remove,
    /// Leave it as it is: the exporter replacing this one at a reload writes it too.
    Untouched,
}

struct Shared {
    /// Set by [`Exporter::stop`]: the thread is to end, and what it does with the file first.
    stop: Mutex<Option<Leaving>>,
    wake: Condvar,
    /// Set by the thread as it ends (whatever way it ends).
    ended: Mutex<bool>,
    ended_wake: Condvar,
}

/// Serialises the writes and the final removal of every exporter of the process: an old
/// exporter's thread, stuck on a slow file system when a reload started the new one, must
/// not write the same file (through the same temp file name) at the same time.
static WRITING: Mutex<()> = Mutex::new(());

/// How long stopping at exit waits for the writer thread (a reload does not wait). Its work
/// is one small write, so this is only reached when the file system hangs: then the thread
/// is left behind (it ends with the process) rather than hold up the exit.
const STOP_WAIT: Duration = Duration::from_millis(500);

/// Marks the thread ended when dropped, so a panic in it counts too.
struct EndedOnDrop<'a>(&'a Shared);

impl Drop for EndedOnDrop<'_> {
    fn drop(&mut self) {
        *self.0.ended.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.ended_wake.notify_all();
    }
}

/// The background writer: started with the daemon, finished at its exit.
pub struct Exporter {
    settings: Settings,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Starts the writer thread (the file is first written one interval from now, so a
    /// process spawned for a single request leaves no trace).
    ///
    /// Nothing here touches the file system, not even to see whether the configured path
    /// is a directory ([`resolve_path`]): this runs on the request thread at a reload. The
    /// thread resolves the path.
    pub fn start(settings: Settings) -> Exporter {
        let shared = Arc::new(Shared {
            stop: Mutex::new(None),
            wake: Condvar::new(),
            ended: Mutex::new(false),
            ended_wake: Condvar::new(),
        });
        let thread = {
            let (settings, shared) = (settings.clone(), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || {
                    let _ended = EndedOnDrop(&shared);
                    let pid = std::process::id();
                    let path = settings.file.as_deref().map(|f| resolve_path(f, pid));
                    run_thread(&settings, path.as_deref(), &shared)
                })
                .map_err(|e| tracing::warn!(error = %e, "cannot start the metrics thread"))
                .ok()
        };
        Exporter {
            settings,
            shared,
            thread,
        }
    }

    /// Stops the thread, logs the final summary, and writes or removes the file.
    pub fn finish(self) {
        self.stop("at exit", false, STOP_WAIT);
    }

    /// [`finish`](Self::finish) for an exporter that a SIGHUP replaces with `next`: the
    /// process carries on, so its summary does not say "at exit", and a file that `next`
    /// writes too is left to it (removing it would leave the new exporter's file missing
    /// until its first interval).
    pub fn replace_for_reload(self, next: &Exporter) {
        // The same setting in the same process: the same file.
        let shared_file = self.settings.file.is_some() && self.settings.file == next.settings.file;
        // Not waited for at all: this runs on the request thread, and the old writer does
        // its last write or removal on its own thread (serialised with the new one's by
        // `WRITING`), so a reply is never held up by it, not even for `STOP_WAIT`.
        self.stop("before a reload", shared_file, Duration::ZERO);
    }

    /// The file is written or removed by the thread itself, never here: this runs on the
    /// request thread at a reload, and a metrics directory on a hung mount must not delay
    /// a reply (nor the exit) by more than [`STOP_WAIT`].
    fn stop(mut self, when: &'static str, leave_file: bool, wait: Duration) {
        let leaving = match self.settings.on_exit {
            _ if leave_file => Leaving::Untouched,
            OnExit::Keep => Leaving::Write,
            OnExit::Remove => Leaving::Remove,
        };
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(leaving);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take().filter(|_| !wait.is_zero()) {
            let ended = self.shared.ended.lock().unwrap_or_else(|p| p.into_inner());
            let (ended, _) = self
                .shared
                .ended_wake
                .wait_timeout_while(ended, wait, |ended| !*ended)
                .unwrap_or_else(|p| p.into_inner());
            if *ended {
                drop(ended);
                let _ = t.join();
            } else {
                // Dropping the handle detaches the thread.
                tracing::warn!(
                    metrics_file = %self.settings.file.as_deref().unwrap_or(Path::new("")).display(),
                    waited_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "the metrics writer is stuck (a file system that does not answer?): left behind"
                );
            }
        }
        global().summary().log(when);
    }
}

/// Writes the metrics file now, under [`WRITING`].
fn write_now(path: &Path) -> std::io::Result<()> {
    let _guard = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    write_atomically(path, &global().render(std::process::id()))
}

/// What the thread does as it ends.
fn leave(path: Option<&Path>, leaving: Leaving) {
    let Some(path) = path else {
        return;
    };
    let result = match leaving {
        Leaving::Untouched => return,
        Leaving::Write => write_now(path),
        Leaving::Remove => {
            let _guard = WRITING.lock().unwrap_or_else(|p| p.into_inner());
            match std::fs::remove_file(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "metrics file at exit");
    }
}

fn run_thread(settings: &Settings, path: Option<&Path>, shared: &Shared) {
    if let (Some(configured), Some(own)) = (settings.file.as_deref(), path) {
        sweep_dead(configured, own);
    }
    let now = Instant::now();
    let mut next_write = path.map(|_| now + settings.interval);
    let mut next_summary =
        (!settings.summary_interval.is_zero()).then(|| now + settings.summary_interval);
    let mut failing = false;
    loop {
        let Some(next) = [next_write, next_summary].into_iter().flatten().min() else {
            return;
        };
        let stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
        let wait = next.saturating_duration_since(Instant::now());
        let (stop, _) = shared
            .wake
            .wait_timeout_while(stop, wait, |stop| stop.is_none())
            .unwrap_or_else(|p| p.into_inner());
        if let Some(leaving) = *stop {
            drop(stop);
            leave(path, leaving);
            return;
        }
        drop(stop);
        let now = Instant::now();
        if let (Some(at), Some(path)) = (next_write, path) {
            if now >= at {
                match write_now(path) {
                    Ok(()) => failing = false,
                    // Once per failure streak, not every interval.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(path = %path.display(), error = %e, "cannot write the metrics file");
                    }
                    Err(_) => {}
                }
                next_write = Some(now + settings.interval);
            }
        }
        if let Some(at) = next_summary {
            if now >= at {
                global().summary().log("since start");
                next_summary = Some(now + settings.summary_interval);
            }
        }
        // Log lines are held until the request loop flushes them after its next reply; the
        // loop may sit idle for hours, and a summary (or a warning) that only appears with the
        // next login would be of little use. Written from here, they go to the log, never to
        // stdout, so no reply is held up.
        crate::logging::flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_with_the_same_file_leaves_it_to_the_new_exporter() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.prom");
        let settings = |interval_ms| Settings {
            file: Some(file.clone()),
            interval: Duration::from_millis(interval_ms),
            on_exit: OnExit::Remove,
            summary_interval: Duration::ZERO,
        };
        let old = Exporter::start(settings(20));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file.exists() {
            assert!(Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Only the interval changed: same file, which the old one must not remove.
        let new = Exporter::start(settings(3_600_000));
        old.replace_for_reload(&new);
        assert!(file.exists());
        new.finish();
        assert!(!file.exists(), "removed at exit, as configured");
    }

    #[test]
    fn a_link_planted_at_the_temp_name_is_not_followed() {
        // The textfile directory may be writable by others, and the temp name is
        // predictable: a symbolic link there once overwrote a users file with metrics.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.prom");
        let victim = dir.path().join("users");
        std::fs::write(&victim, "romeo@example.net:$argon2id$keep\n").unwrap();
        // Both names the writer has used for its temp file.
        let pid = std::process::id();
        for planted in [".m.prom.tmp".to_owned(), format!(".m.prom.{pid}.tmp")] {
            std::os::unix::fs::symlink(&victim, dir.path().join(planted)).unwrap();
        }
        write_atomically(&file, "extauth_bridge_up 1\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "romeo@example.net:$argon2id$keep\n"
        );
        let written = std::fs::symlink_metadata(&file).unwrap();
        assert!(written.file_type().is_file(), "{written:?}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "extauth_bridge_up 1\n"
        );
    }

    #[test]
    fn paths_resolve_per_process() {
        assert_eq!(
            resolve_path(Path::new("/x/extauth-bridge-{pid}.prom"), 7),
            PathBuf::from("/x/extauth-bridge-7.prom")
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_path(dir.path(), 7),
            dir.path().join("extauth-bridge-7.prom")
        );
        assert_eq!(
            resolve_path(Path::new("/x/m.prom"), 7),
            PathBuf::from("/x/m.prom")
        );
    }

    #[test]
    fn files_of_dead_processes_are_swept_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("eb-{pid}.prom");
        // pid_max is at most 2^22: this one cannot be alive.
        let dead = dir.path().join("eb-4194305.prom");
        let live = dir.path().join(format!("eb-{}.prom", std::process::id()));
        let other = dir.path().join("eb-notapid.prom");
        for f in [&dead, &live, &other] {
            std::fs::write(f, "x").unwrap();
        }
        sweep_dead(&template, &dir.path().join("eb-1.prom"));
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }
}
