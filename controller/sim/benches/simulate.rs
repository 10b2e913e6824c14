//! How long a simulated day of a 64-shard stream takes: every strategy, 24 h of virtual time.
//!
//! `cargo bench -p shardctl-sim --bench simulate` (target: under 10 s in release for shardctl, whose
//! run includes the real reconcile cycle every minute).

use shardctl_sim::run::{OnDemandConfig, Prices, SimConfig, Strategy, UniformConfig, run_strategy};
use shardctl_sim::traffic::{TrafficModel, scenario};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let file = shardctl_policies::load_policy(
        include_str!("../../../policies/examples/telecom-org-events.yaml"),
        "telecom-org-events.yaml",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = file.spec.streams[0].clone();
    // hot-org-surge scaled to 64 shards: four times the traffic on four times the shards.
    let mut sc = scenario("hot-org-surge", 1)?;
    sc.initial_shards = 64;
    if let TrafficModel::Synthetic(t) = &mut sc.traffic {
        t.records_per_second *= 4.0;
    }
    let cfg = SimConfig {
        uniform: UniformConfig::for_policy(&policy),
        on_demand: OnDemandConfig::default(),
        prices: Prices::default(),
        evaluation_interval: Duration::from_secs(60),
        minutes: 24 * 60,
        seed: 1,
        scenario: sc,
        policy,
    };
    println!("simulated 24 h of a 64-shard stream (hot-org-surge x4):");
    let mut total = Duration::ZERO;
    for s in Strategy::ALL {
        let started = Instant::now();
        let o = run_strategy(&cfg, s, &mut |_, _, _| {})?;
        let took = started.elapsed();
        total += took;
        println!(
            "  {:<10} {:>8.3} s  ({} records offered, {} throttled, {} operations)",
            s.name(),
            took.as_secs_f64(),
            o.summary.offered_records,
            o.summary.throttled_records,
            o.summary.operations
        );
    }
    println!("  all four   {:>8.3} s", total.as_secs_f64());
    Ok(())
}
