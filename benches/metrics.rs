//! What the metrics cost per request: one `record` (a mutex, a hash lookup, a histogram
//! bucket), and one render of the file (done every `metrics_interval` off the request path).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use extauth_bridge::metrics::Metrics;

fn record(c: &mut Criterion) {
    let m = Metrics::new();
    c.bench_function("metrics_record", |b| {
        b.iter(|| {
            m.record(
                "auth",
                std::hint::black_box("local"),
                "yes",
                Duration::from_micros(1200),
            )
        })
    });
}

fn render(c: &mut Criterion) {
    // A busy process: every command × 3 backends × 5 outcomes.
    let m = Metrics::new();
    for command in ["auth", "isuser", "setpass", "tryregister", "removeuser"] {
        for backend in ["local", "api", "idp"] {
            for outcome in ["yes", "no", "unavailable", "timeout", "refused"] {
                m.record(command, backend, outcome, Duration::from_millis(3));
            }
        }
    }
    c.bench_function("metrics_render_75_series", |b| {
        b.iter(|| std::hint::black_box(m.render(4242)))
    });
}

criterion_group!(benches, record, render);
criterion_main!(benches);
