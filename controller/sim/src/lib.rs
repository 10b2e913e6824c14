//! A simulated provisioned Kinesis stream in virtual time, and policy backtests on it.
//!
//! The world ([`world`]) steps one second at a time: per-shard write limits enforced per second,
//! throttled records counted, resharding that keeps the stream `UPDATING` for a while, CloudWatch
//! datapoints that arrive minutes late, consumers that drain closed parents after a lag. It
//! implements the [`shardctl_controller::backend`] traits, so the **real** reconcile cycle runs against it.
//! Traffic ([`traffic`]) is organisations with Zipf popularity, daily cycles, surges and flash
//! crowds, or a recorded trace; [`workload`] the producers' retries, records above 1 MiB (each
//! shard's burst tank) and the consumer applications.
//! [`run`] compares shardctl with the baselines users pick instead ([`baselines`]: stream-level
//! autoscalers as documented by their authors; [`on_demand`]: on-demand Standard and Advantage),
//! on identical traffic, every cost line priced from [`prices`]; [`svg`] draws it; [`cli`] is
//! `shardctl simulate`.
//!
//! ```no_run
//! use shardctl_sim::{run, traffic};
//!
//! let policy = shardctl_policies::StreamPolicy::with_defaults("org-events");
//! let cfg = run::SimConfig {
//!     scenario: traffic::scenario("hot-org-surge", 1)?,
//!     uniform: run::UniformConfig::for_policy(&policy),
//!     on_demand: run::OnDemandConfig::default(),
//!     prices: run::Prices::default(),
//!     evaluation_interval: std::time::Duration::from_secs(60),
//!     minutes: 24 * 60,
//!     seed: 1,
//!     policy,
//! };
//! for outcome in run::compare(&cfg, &run::Strategy::ALL, &mut |_, _, _| {})? {
//!     println!("{}: {} throttled", outcome.summary.strategy.name(), outcome.summary.throttled_records);
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Everything is deterministic: a seeded generator, virtual time, no hash-map order in results.

pub mod backends;
pub mod baselines;
pub mod cli;
pub mod frontier;
pub mod on_demand;
pub mod prices;
pub mod run;
pub mod scenarios;
pub mod svg;
pub mod trace;
pub mod traffic;
pub mod tune;
pub mod workload;
pub mod world;

pub use cli::{SimulateArgs, run_simulate};
pub use run::{Sim, SimContext, context};
pub use tune::{TuneArgs, run_tune};
pub use world::SharedWorld;

use anyhow::Result;

/// A simulated stream named `stream` under built-in scenario `scenario` (see
/// [`traffic::scenario`]), and the context of the real control loop over it, for
/// `shardctl run --simulate`. The context's clock runs the world forward when the loop sleeps;
/// [`status_line`] describes it for progress output.
pub fn simulated_stream(
    scenario: &str,
    stream: &str,
    seed: u64,
) -> Result<(SimContext, SharedWorld)> {
    let scenario = traffic::scenario(scenario, seed)?;
    let world = SharedWorld::new(world::World::new(
        world::WorldConfig::new(stream),
        &scenario,
        seed,
    ));
    Ok((context(&world), world))
}

/// One line on the simulated stream: time, status, shards, throttling so far.
pub fn status_line(world: &SharedWorld) -> String {
    let w = world.lock();
    let t = w.totals;
    let pct = if t.offered_records == 0 {
        0.0
    } else {
        t.throttled_records as f64 * 100.0 / t.offered_records as f64
    };
    format!(
        "simulated {} {}: {} open shards, {} operations, {} of {} records throttled ({pct:.3}%), {:.1} shard-hours",
        w.now().format("%a %H:%M"),
        w.status(),
        w.open_count(),
        w.ops.len(),
        t.throttled_records,
        t.offered_records,
        t.shard_seconds as f64 / 3600.0,
    )
}

/// The first stream of the shipped example policy, for unit tests.
#[cfg(test)]
pub(crate) fn example_stream() -> shardctl_policies::StreamPolicy {
    shardctl_policies::load_policy(
        include_str!("../../../policies/examples/telecom-org-events.yaml"),
        "telecom-org-events.yaml",
    )
    .map(|f| f.spec.streams[0].clone())
    .unwrap_or_else(|e| panic!("the example policy is valid: {e}"))
}
