//! `plan` on streams of 100 to 20,000 shards with 60 minutes of metrics each.
//!
//! Run: `cargo bench -p shardctl-policies --bench plan`
#![allow(missing_docs)]

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shardctl_policies::fixture::StreamFixture;
use shardctl_policies::{History, Observation, StreamPolicy, plan};
use std::hint::black_box;

fn stream(shards: usize, now: DateTime<Utc>) -> Observation {
    let mut f = StreamFixture::new("bench", shards, 60, now);
    // A realistic mix: most shards moderate, every 50th hot, runs of cold ones, some gaps.
    for i in 0..shards {
        f = match i % 50 {
            0 => f.hot(i),
            10..=19 => f.cold(i),
            25 => f.missing(i, 30..35),
            _ => f.utilization(i, 30.0 + (i % 7) as f64 * 5.0, 20.0),
        };
    }
    f.build()
}

fn bench(c: &mut Criterion) {
    let now: DateTime<Utc> = "2026-11-02T14:00:00Z".parse().expect("time");
    let mut policy = StreamPolicy::with_defaults("bench");
    policy.max_shards = 40_000;
    let history = History::default();
    let mut group = c.benchmark_group("plan");
    for shards in [100usize, 1_000, 10_000, 20_000] {
        let obs = stream(shards, now);
        group.throughput(Throughput::Elements(shards as u64));
        group.bench_with_input(BenchmarkId::from_parameter(shards), &obs, |b, obs| {
            b.iter(|| plan(black_box(&policy), black_box(obs), &history, now).expect("plan"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
