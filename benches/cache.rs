//! The credential cache: a hit, a miss, an insert (each includes computing the two keyed
//! hashes, as a request does). `cargo bench --bench cache`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

use extauth_bridge::config::CacheConfig;
use extauth_bridge::secret::Secret;
use extauth_bridge::state::cache::CredentialCache;

fn cache(c: &mut Criterion) {
    let config = CacheConfig {
        enabled: true,
        ttl: Duration::from_secs(3600),
        max_entries: 100_000,
        stale_if_error: Duration::ZERO,
    };
    let cache = CredentialCache::new(&config);
    let keyer = cache.keyer().clone();
    let password = Secret::new("correct horse battery staple");
    // A populated cache: 10 000 accounts.
    for i in 0..10_000 {
        let user = format!("user{i}");
        cache.remember(
            keyer.account(&user, "example.net"),
            keyer.credential(&user, "example.net", &password),
            Some("users"),
            Instant::now(),
            cache.epoch(),
        );
    }
    let mut g = c.benchmark_group("cache");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hit", |b| {
        b.iter(|| {
            let user = black_box("user42");
            let hit = cache.fresh(
                keyer.account(user, "example.net"),
                &keyer.credential(user, "example.net", &password),
                Instant::now(),
            );
            assert!(hit.is_some());
        })
    });
    g.bench_function("miss (wrong password)", |b| {
        let wrong = Secret::new("wrong");
        b.iter(|| {
            let user = black_box("user42");
            let hit = cache.fresh(
                keyer.account(user, "example.net"),
                &keyer.credential(user, "example.net", &wrong),
                Instant::now(),
            );
            assert!(hit.is_none());
        })
    });
    g.bench_function("insert", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let user = format!("new{}", i % 50_000);
            cache.remember(
                keyer.account(&user, "example.net"),
                keyer.credential(&user, "example.net", &password),
                Some("users"),
                Instant::now(),
                cache.epoch(),
            );
        })
    });
    g.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
