//! The credential cache: a hit, a miss, an insert (each includes computing the two keyed
//! hashes and the account's generation slot, as a request does), and what pool-wide
//! invalidation adds to a hit: the hit with the generations in memory and in the shared
//! file, and the generation check alone. `cargo bench --bench cache`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

use extauth_bridge::config::CacheConfig;
use extauth_bridge::secret::Secret;
use extauth_bridge::state::cache::CredentialCache;
use extauth_bridge::state::generation::{Generations, Slot};

/// A populated cache over `generations`: 10 000 accounts.
fn populated(generations: &Arc<Generations>, password: &Secret) -> CredentialCache {
    let config = CacheConfig {
        enabled: true,
        ttl: Duration::from_secs(3600),
        max_entries: 100_000,
        stale_if_error: Duration::ZERO,
    };
    let cache = CredentialCache::new(&config, Arc::clone(generations));
    let keyer = cache.keyer().clone();
    for i in 0..10_000 {
        let user = format!("user{i}");
        let slot = Slot::of(&user, "example.net");
        cache.remember(
            keyer.account(&user, "example.net"),
            slot,
            keyer.credential(&user, "example.net", password),
            Some("users"),
            Instant::now(),
            cache.generation(slot),
        );
    }
    cache
}

fn cache(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let password = Secret::new("correct horse battery staple");
    let in_memory = Arc::new(Generations::in_memory());
    let shared = Arc::new(Generations::shared(dir.path()).expect("generations file"));
    let mut g = c.benchmark_group("cache");
    g.throughput(Throughput::Elements(1));
    for (name, generations) in [("in memory", &in_memory), ("file", &shared)] {
        let cache = populated(generations, &password);
        let keyer = cache.keyer().clone();
        g.bench_function(format!("hit, generations {name}"), |b| {
            b.iter(|| {
                let user = black_box("user42");
                let hit = cache.fresh(
                    keyer.account(user, "example.net"),
                    Slot::of(user, "example.net"),
                    &keyer.credential(user, "example.net", &password),
                    Instant::now(),
                );
                assert!(hit.is_some());
            })
        });
        g.bench_function(format!("generation check alone, {name}"), |b| {
            let then = generations.current(Slot::of("user42", "example.net"));
            b.iter(|| {
                let slot = Slot::of(black_box("user42"), "example.net");
                assert!(generations.is_current(slot, then));
            })
        });
    }
    let cache = populated(&shared, &password);
    let keyer = cache.keyer().clone();
    g.bench_function("miss (wrong password)", |b| {
        let wrong = Secret::new("wrong");
        b.iter(|| {
            let user = black_box("user42");
            let hit = cache.fresh(
                keyer.account(user, "example.net"),
                Slot::of(user, "example.net"),
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
            let slot = Slot::of(&user, "example.net");
            cache.remember(
                keyer.account(&user, "example.net"),
                slot,
                keyer.credential(&user, "example.net", &password),
                Some("users"),
                Instant::now(),
                cache.generation(slot),
            );
        })
    });
    g.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
