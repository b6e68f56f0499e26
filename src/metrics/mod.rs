//! Request metrics: counters and latency histograms per command, deciding backend and
//! outcome, plus cache hits and misses; written in the Prometheus text format to a file per
//! process, and summarised in one log line on an interval and at exit.
//!
//! Why a file and not a port: the XMPP servers run a pool of bridge processes that come and
//! go (ejabberd restarts one on every timeout), so a listening port per process would be
//! unscrapeable. node_exporter's textfile collector reads every `*.prom` file in a directory;
//! each process writes its own (`{pid}` in `metrics_file`, or a directory), atomically
//! (temp file + rename), and labels every series with `pid` so that the files never clash.
//! Aggregate with `sum without (pid) (...)`.
//!
//! A process removes its file at a clean exit (`metrics_on_exit = "remove"`, the default):
//! node_exporter would otherwise export a dead process's series forever, and a pool that is
//! restarted often would pile up files. Files left behind by processes that were killed are
//! removed by the next process that starts writing to the same directory.
//!
//! The request loop blocks in `read(2)` between requests, so the periodic writer is a plain
//! background thread; the counters live behind one mutex taken once per request.

mod export;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use export::{resolve_path, write_atomically, Exporter, Settings};

/// Upper bounds of the latency buckets, in seconds. From well under a cache hit to past
/// Prosody's 5 s and up to ejabberd's 30 s.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label value used when there is no command (an invalid frame) or no backend.
pub const NONE: &str = "none";

#[derive(Debug, Clone, Default)]
struct Series {
    count: u64,
    sum_seconds: f64,
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [u64; BUCKETS.len() + 1],
}

impl Series {
    fn observe(&mut self, seconds: f64) {
        self.count += 1;
        self.sum_seconds += seconds;
        let i = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i] += 1;
    }
}

/// (command, outcome) → backend → series. Nested so that recording needs no allocation
/// once a backend has been seen.
type Table = HashMap<(&'static str, &'static str), HashMap<String, Series>>;

/// All counters of this process.
pub struct Metrics {
    requests: Mutex<Table>,
    /// (backend, error kind) → failures a chain passed over to ask its next backend. The
    /// request itself is counted once, under the backend that decided it; without this, an
    /// API that is down behind `on_unavailable = "next"` would not show up at all.
    passed_over: Mutex<BTreeMap<(String, &'static str), u64>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// `remember_accounts`: accounts added to their file, and accounts not added (the write
    /// failed, or the queue was full).
    remembered: AtomicU64,
    remember_failures: AtomicU64,
    /// backend → its circuit breaker's state (0 closed, 1 open, 2 half-open); only the
    /// backends that have a breaker.
    breakers: Mutex<BTreeMap<String, u8>>,
    throttle_lockouts: AtomicU64,
    /// Shared-store operations (`[shared]`): (kind, result) → round trips.
    shared_ops: Mutex<BTreeMap<(&'static str, &'static str), Series>>,
    /// Requests answered from per-process state because the shared store failed.
    shared_fallbacks: AtomicU64,
    started: SystemTime,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Records one answered request (called by the request loop next to its log line).
pub fn record(command: &'static str, backend: Option<&str>, outcome: &'static str, took: Duration) {
    GLOBAL.record(command, backend.unwrap_or(NONE), outcome, took);
}

/// A backend failed and its chain asked the next one (`on_unavailable = "next"`).
pub fn passed_over(backend: &str, kind: &'static str) {
    GLOBAL.passed_over(backend, kind);
}

/// A request answered from the cache.
pub fn cache_hit() {
    GLOBAL.cache_hits.fetch_add(1, Ordering::Relaxed);
}

/// A cacheable request the cache could not answer.
pub fn cache_miss() {
    GLOBAL.cache_misses.fetch_add(1, Ordering::Relaxed);
}

/// `remember_accounts`: `added` accounts written to their file, `failed` not written.
pub fn remembered(added: u64, failed: u64) {
    GLOBAL.remembered.fetch_add(added, Ordering::Relaxed);
    GLOBAL
        .remember_failures
        .fetch_add(failed, Ordering::Relaxed);
}

/// A backend's circuit breaker is now in `state` (0 closed, 1 open, 2 half-open).
pub fn breaker_state(backend: &str, state: u8) {
    GLOBAL.breaker_state(backend, state);
}

/// An account was locked out by the throttle (its throttled answers are counted as
/// requests with `outcome="throttled"`).
pub fn throttle_lockout() {
    GLOBAL.throttle_lockouts.fetch_add(1, Ordering::Relaxed);
}

/// One shared-store operation (`kind`: lookup, remember, invalidate, probe…) and its result.
pub fn shared_op(kind: &'static str, result: &'static str, took: Duration) {
    let mut ops = GLOBAL.shared_ops.lock().unwrap_or_else(|p| p.into_inner());
    ops.entry((kind, result))
        .or_default()
        .observe(took.as_secs_f64());
}

/// A request answered from per-process state because the shared store failed.
pub fn shared_fallback() {
    GLOBAL.shared_fallbacks.fetch_add(1, Ordering::Relaxed);
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: Mutex::new(HashMap::new()),
            passed_over: Mutex::new(BTreeMap::new()),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            remembered: AtomicU64::new(0),
            remember_failures: AtomicU64::new(0),
            breakers: Mutex::new(BTreeMap::new()),
            throttle_lockouts: AtomicU64::new(0),
            shared_ops: Mutex::new(BTreeMap::new()),
            shared_fallbacks: AtomicU64::new(0),
            started: SystemTime::now(),
        }
    }

    pub fn record(
        &self,
        command: &'static str,
        backend: &str,
        outcome: &'static str,
        took: Duration,
    ) {
        let mut table = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let by_backend = table.entry((command, outcome)).or_default();
        let seconds = took.as_secs_f64();
        match by_backend.get_mut(backend) {
            Some(series) => series.observe(seconds),
            None => {
                let mut series = Series::default();
                series.observe(seconds);
                by_backend.insert(backend.to_owned(), series);
            }
        }
    }

    pub fn passed_over(&self, backend: &str, kind: &'static str) {
        let mut counts = self.passed_over.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((backend.to_owned(), kind)).or_default() += 1;
    }

    pub fn breaker_state(&self, backend: &str, state: u8) {
        let mut states = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        states.insert(backend.to_owned(), state);
    }

    /// A copy of the table sorted by labels, so output is stable.
    fn snapshot(&self) -> Vec<((&'static str, String, &'static str), Series)> {
        let table = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<_> = table
            .iter()
            .flat_map(|(&(command, outcome), by_backend)| {
                by_backend
                    .iter()
                    .map(move |(backend, s)| ((command, backend.clone(), outcome), s.clone()))
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    /// The Prometheus text exposition format (version 0.0.4), every series labelled `pid`.
    pub fn render(&self, pid: u32) -> String {
        let rows = self.snapshot();
        let mut out = String::new();
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP extauth_bridge_info Always 1; the version as a label.\n\
             # TYPE extauth_bridge_info gauge\n\
             extauth_bridge_info{{pid=\"{pid}\",version=\"{}\"}} 1\n\
             # HELP extauth_bridge_start_time_seconds When this bridge process started (Unix time).\n\
             # TYPE extauth_bridge_start_time_seconds gauge\n\
             extauth_bridge_start_time_seconds{{pid=\"{pid}\"}} {started:.3}",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP extauth_bridge_requests_total Requests answered, by command, deciding backend and outcome.\n\
             # TYPE extauth_bridge_requests_total counter"
        );
        for ((command, backend, outcome), s) in &rows {
            let labels = labels(pid, command, backend, outcome);
            let _ = writeln!(out, "extauth_bridge_requests_total{{{labels}}} {}", s.count);
        }
        let _ = writeln!(
            out,
            "# HELP extauth_bridge_request_duration_seconds Time from a request's start to its answer.\n\
             # TYPE extauth_bridge_request_duration_seconds histogram"
        );
        for ((command, backend, outcome), s) in &rows {
            let labels = labels(pid, command, backend, outcome);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "extauth_bridge_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "extauth_bridge_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 extauth_bridge_request_duration_seconds_sum{{{labels}}} {}\n\
                 extauth_bridge_request_duration_seconds_count{{{labels}}} {}",
                s.count, s.sum_seconds, s.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP extauth_bridge_backend_passed_over_total Backend failures a chain passed over to ask its next backend (on_unavailable = \"next\"), by failing backend and error kind.\n\
             # TYPE extauth_bridge_backend_passed_over_total counter"
        );
        for ((backend, kind), n) in self
            .passed_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "extauth_bridge_backend_passed_over_total{{pid=\"{pid}\",backend=\"{}\",kind=\"{}\"}} {n}",
                escape(backend),
                escape(kind)
            );
        }
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        if !breakers.is_empty() {
            let _ = writeln!(
                out,
                "# HELP extauth_bridge_breaker_state Circuit breaker of each backend that has one: 0 closed, 1 open, 2 half-open.\n\
                 # TYPE extauth_bridge_breaker_state gauge"
            );
        }
        for (backend, state) in breakers.iter() {
            let _ = writeln!(
                out,
                "extauth_bridge_breaker_state{{pid=\"{pid}\",backend=\"{}\"}} {state}",
                escape(backend)
            );
        }
        drop(breakers);
        for (name, help, value) in [
            (
                "extauth_bridge_cache_hits_total",
                "Requests answered from the credential cache.",
                &self.cache_hits,
            ),
            (
                "extauth_bridge_cache_misses_total",
                "Cacheable requests the credential cache could not answer.",
                &self.cache_misses,
            ),
            (
                "extauth_bridge_remembered_accounts_total",
                "Accounts remember_accounts added to its file.",
                &self.remembered,
            ),
            (
                "extauth_bridge_remember_failures_total",
                "Accounts remember_accounts could not add (write failed, queue full); retried at their next login.",
                &self.remember_failures,
            ),
            (
                "extauth_bridge_throttle_lockouts_total",
                "Accounts locked out by [throttle] after max_failures distinct wrong passwords.",
                &self.throttle_lockouts,
            ),
            (
                "extauth_bridge_shared_fallbacks_total",
                "Requests answered from per-process state because the shared store failed.",
                &self.shared_fallbacks,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{pid=\"{pid}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        self.render_shared(&mut out, pid);
        out
    }

    /// `extauth_bridge_shared_op_duration_seconds`: a histogram per (kind, result), whose
    /// `_count` is the operations counter.
    fn render_shared(&self, out: &mut String, pid: u32) {
        let name = "extauth_bridge_shared_op_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Shared-store operations and their round trips, by kind and result.\n# TYPE {name} histogram"
        );
        let ops = self.shared_ops.lock().unwrap_or_else(|p| p.into_inner());
        for ((kind, result), s) in ops.iter() {
            let labels = format!("pid=\"{pid}\",kind=\"{kind}\",result=\"{result}\"");
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"+Inf\"}} {}\n{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}",
                s.count, s.sum_seconds, s.count
            );
        }
    }

    /// One line for the log: totals since start.
    pub fn summary(&self) -> Summary {
        let rows = self.snapshot();
        let mut by_outcome: BTreeMap<&str, u64> = BTreeMap::new();
        let (mut requests, mut seconds) = (0u64, 0.0f64);
        for ((_, _, outcome), s) in &rows {
            *by_outcome.entry(outcome).or_default() += s.count;
            requests += s.count;
            seconds += s.sum_seconds;
        }
        let outcomes = by_outcome
            .iter()
            .map(|(o, n)| format!("{o}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        Summary {
            requests,
            outcomes,
            mean_ms: if requests == 0 {
                0.0
            } else {
                (seconds / requests as f64 * 1e4).round() / 10.0
            },
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub requests: u64,
    /// `yes=10 no=2 timeout=1`
    pub outcomes: String,
    pub mean_ms: f64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl Summary {
    pub(crate) fn log(&self, when: &'static str) {
        tracing::info!(
            requests = self.requests,
            outcomes = self.outcomes.as_str(),
            mean_latency_ms = self.mean_ms,
            cache_hits = self.cache_hits,
            cache_misses = self.cache_misses,
            "summary {when}"
        );
    }
}

fn labels(pid: u32, command: &str, backend: &str, outcome: &str) -> String {
    format!(
        "pid=\"{pid}\",command=\"{}\",backend=\"{}\",outcome=\"{}\"",
        escape(command),
        escape(backend),
        escape(outcome)
    )
}

/// Label values escape `\`, `"` and newlines.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_labels_escaped() {
        let m = Metrics::new();
        m.record("auth", "lo\"cal", "yes", Duration::from_micros(300));
        m.record("auth", "lo\"cal", "yes", Duration::from_millis(30));
        m.record("auth", "lo\"cal", "yes", Duration::from_secs(60));
        let text = m.render(42);
        let labels = r#"pid="42",command="auth",backend="lo\"cal",outcome="yes""#;
        assert!(text.contains(&format!("extauth_bridge_requests_total{{{labels}}} 3")));
        for (le, n) in [
            ("0.0005", 1),
            ("0.025", 1),
            ("0.05", 2),
            ("10", 2),
            ("+Inf", 3),
        ] {
            let line = format!(
                "extauth_bridge_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert_eq!(m.summary().outcomes, "yes=3");
    }
}
