//! The strategies compared on identical traffic, and their summaries.
//!
//! - **shardctl**: the real [`Context::cycle`] with the [`LiveExecutor`] every evaluation
//!   interval of the policy, in virtual time, against the simulated backends.
//! - **scaling-utils**, **lambda-sample**: stream-level autoscaling as
//!   amazon-kinesis-scaling-utils and the AWS Lambda sample do it with their documented settings
//!   (see [`crate::baselines`]).
//! - **static**: the stream stays at the scenario's provisioned shard count.
//! - **on-demand**, **on-demand-advantage**: Kinesis on-demand mode, Standard and Advantage (see
//!   [`crate::on_demand`]).

pub use crate::baselines::{Step, UniformConfig};
pub use crate::on_demand::OnDemandConfig;
pub use crate::prices::{Costs, Prices};

use crate::baselines::run_uniform;
use crate::on_demand::run_on_demand;
use crate::traffic::Scenario;
use crate::world::{
    MemoryStateStore, OpKind, SharedWorld, SimClock, SimKinesis, SimLeases, SimMetrics, World,
    WorldConfig,
};
use anyhow::{Context as _, Result};
use serde::Serialize;
use shardctl_controller::backend::Backends;
use shardctl_controller::daemon::{self, Leadership, Replica};
use shardctl_controller::leadership::LeaseSettings;
use shardctl_controller::reconcile::{Context, CycleSettings, LiveExecutor};
use shardctl_controller::telemetry::Telemetry;
use shardctl_policies::policy::{ApiVersion, PolicyKind, PolicySpec};
use shardctl_policies::{HumanDuration, PolicyFile, StreamPolicy};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// shardctl with the given policy.
    Shardctl,
    /// amazon-kinesis-scaling-utils with its README's settings (`SimConfig::uniform`).
    #[value(alias = "uniform")]
    ScalingUtils,
    /// The AWS Lambda autoscaling sample with its shipped settings.
    LambdaSample,
    /// Fixed shard count.
    Static,
    /// Kinesis on-demand mode, Standard.
    OnDemand,
    /// Kinesis on-demand mode, Advantage (with its minimum throughput commitment).
    OnDemandAdvantage,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 6] = [
        Strategy::Shardctl,
        Strategy::ScalingUtils,
        Strategy::LambdaSample,
        Strategy::Static,
        Strategy::OnDemand,
        Strategy::OnDemandAdvantage,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Shardctl => "shardctl",
            Strategy::ScalingUtils => "scaling-utils",
            Strategy::LambdaSample => "lambda-sample",
            Strategy::Static => "static",
            Strategy::OnDemand => "on-demand",
            Strategy::OnDemandAdvantage => "on-demand-advantage",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// The shardctl policy of the simulated stream.
    pub policy: StreamPolicy,
    /// How often shardctl evaluates.
    pub evaluation_interval: Duration,
    /// Simulated minutes.
    pub minutes: u64,
    /// Seed of the randomness.
    pub seed: u64,
    /// Prices.
    pub prices: Prices,
    /// The scaling-utils baseline (the lambda-sample baseline is
    /// [`UniformConfig::lambda_sample`] of the policy).
    pub uniform: UniformConfig,
    /// The on-demand model, Standard and Advantage.
    pub on_demand: OnDemandConfig,
}

/// How long the surge took to relieve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "minutes")]
pub enum Relief {
    /// The scenario has no surge.
    NoSurge,
    /// Throttling (> 0.1 % of a minute's records) ended this many minutes after the surge began.
    After(u64),
    /// Still throttling when the surge ended.
    Never,
}

impl std::fmt::Display for Relief {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Relief::NoSurge => f.write_str("-"),
            Relief::After(m) => write!(f, "{m}m"),
            Relief::Never => f.write_str("never"),
        }
    }
}

/// One strategy's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The strategy.
    pub strategy: Strategy,
    /// Records producers offered.
    pub offered_records: u64,
    /// Records accepted.
    pub accepted_records: u64,
    /// Records throttled.
    pub throttled_records: u64,
    /// Throttled share of offered records (%).
    pub throttled_percent: f64,
    /// Shard-hours (provisioned strategies).
    pub shard_hours: Option<f64>,
    /// Cost in USD at the given prices: the sum of `costs`.
    pub cost_usd: f64,
    /// The cost line by line.
    pub costs: Costs,
    /// Resharding API calls (`SplitShard`, `MergeShards`, `UpdateShardCount`).
    pub operations: usize,
    /// Time from the surge to relief.
    pub relief: Relief,
    /// Highest per-shard (on-demand: stream) offered load over capacity in any minute (%).
    pub peak_utilisation_percent: f64,
    /// Open shards at the end (provisioned strategies).
    pub final_shards: Option<usize>,
    /// Most open shards at any time.
    pub max_shards: Option<usize>,
}

/// One strategy's run: its summary and, for provisioned strategies, the world to plot.
#[derive(Debug)]
pub struct Outcome {
    /// The summary.
    pub summary: Summary,
    /// The final world (provisioned strategies).
    pub world: Option<World>,
}

pub(crate) fn relief(per_minute: &[(u64, u64)], surge: Option<(u64, u64)>) -> Relief {
    let Some((start, end)) = surge else {
        return Relief::NoSurge;
    };
    let end = end.min(per_minute.len() as u64);
    let last = (start..end).rev().find(|&m| {
        let (offered, throttled) = per_minute[m as usize];
        throttled as f64 > 0.001 * offered as f64
    });
    match last {
        None => Relief::After(0),
        Some(m) if m + 1 >= end => Relief::Never,
        Some(m) => Relief::After(m + 1 - start),
    }
}

/// The summary of a provisioned run in world `w`.
pub fn world_summary(strategy: Strategy, w: &World, cfg: &SimConfig) -> Summary {
    let t = w.totals;
    let shard_hours = t.shard_seconds as f64 / 3600.0;
    let mut costs = Costs::provisioned(&cfg.prices, shard_hours, t.payload_units)
        .with_enhanced_fan_out(
            &cfg.prices,
            cfg.scenario.readers.enhanced_fan_out,
            shard_hours,
            t.accepted_bytes / 1e9,
        );
    if strategy == Strategy::Shardctl {
        costs = costs.with_shardctl_reads(
            &cfg.prices,
            shard_hours,
            cfg.evaluation_interval.as_secs_f64(),
        );
    }
    let per_minute: Vec<(u64, u64)> = w
        .stream_minutes
        .iter()
        .map(|m| (m.offered_records, m.throttled_records))
        .collect();
    let peak = w
        .shards()
        .iter()
        .flat_map(|s| s.minutes.iter())
        .map(|m| m.offered_utilisation(1))
        .fold(0.0, f64::max);
    Summary {
        strategy,
        offered_records: t.offered_records,
        accepted_records: t.accepted_records,
        throttled_records: t.throttled_records,
        throttled_percent: percent(t.throttled_records, t.offered_records),
        shard_hours: Some(shard_hours),
        cost_usd: costs.total(),
        costs,
        operations: w.ops.len(),
        relief: relief(&per_minute, cfg.scenario.surge),
        peak_utilisation_percent: peak * 100.0,
        final_shards: Some(w.open_count()),
        max_shards: w.stream_minutes.iter().map(|m| m.open_shards).max(),
    }
}

pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Progress callback: (strategy, simulated minutes done, of).
pub type Progress<'a> = &'a mut dyn FnMut(Strategy, u64, u64);

/// Runs one strategy.
pub fn run_strategy(
    cfg: &SimConfig,
    strategy: Strategy,
    progress: Progress<'_>,
) -> Result<Outcome> {
    let end = cfg.minutes * 60;
    let new_world = || world_for(cfg, &cfg.scenario);
    match strategy {
        Strategy::Static => {
            let mut w = new_world();
            while w.elapsed() < end {
                w.advance_to((w.elapsed() + 3600).min(end));
                progress(strategy, w.elapsed() / 60, cfg.minutes);
            }
            Ok(provisioned(strategy, w, cfg))
        }
        Strategy::ScalingUtils | Strategy::LambdaSample => {
            let u = if strategy == Strategy::ScalingUtils {
                cfg.uniform
            } else {
                UniformConfig::lambda_sample(&cfg.policy)
            };
            Ok(provisioned(
                strategy,
                uniform_world(cfg, &u, strategy, progress),
                cfg,
            ))
        }
        Strategy::Shardctl => {
            let shared = SharedWorld::new(new_world());
            run_shardctl(&shared, cfg, end, progress)?;
            let w = std::mem::replace(&mut *shared.lock(), new_world());
            Ok(provisioned(strategy, w, cfg))
        }
        Strategy::OnDemand | Strategy::OnDemandAdvantage => Ok(Outcome {
            summary: run_on_demand(cfg, strategy == Strategy::OnDemandAdvantage, progress),
            world: None,
        }),
    }
}

fn provisioned(strategy: Strategy, w: World, cfg: &SimConfig) -> Outcome {
    Outcome {
        summary: world_summary(strategy, &w, cfg),
        world: Some(w),
    }
}

/// A fresh world of `cfg`'s stream on `scenario`'s traffic.
fn world_for(cfg: &SimConfig, scenario: &Scenario) -> World {
    World::new(
        WorldConfig::new(cfg.policy.name.clone()),
        scenario,
        cfg.seed,
    )
}

/// The world after a stream-level autoscaler with settings `u` ran for the whole simulation.
fn uniform_world(
    cfg: &SimConfig,
    u: &UniformConfig,
    strategy: Strategy,
    progress: Progress<'_>,
) -> World {
    let mut w = world_for(cfg, &cfg.scenario);
    run_uniform(&mut w, cfg, u, strategy, cfg.minutes * 60, progress);
    w
}

/// Runs a stream-level autoscaler with settings `u` (reported as scaling-utils).
pub fn run_uniform_with(cfg: &SimConfig, u: &UniformConfig) -> Summary {
    let w = uniform_world(cfg, u, Strategy::ScalingUtils, &mut |_, _, _| {});
    world_summary(Strategy::ScalingUtils, &w, cfg)
}

/// Runs static provisioning at `shards` shards.
pub fn run_static_with(cfg: &SimConfig, shards: usize) -> Summary {
    let mut scenario = cfg.scenario.clone();
    scenario.initial_shards = shards.max(1);
    let mut w = world_for(cfg, &scenario);
    w.advance_to(cfg.minutes * 60);
    world_summary(Strategy::Static, &w, cfg)
}

/// The simulator as the controller's [`Backends`]: the world behind Kinesis, CloudWatch, the
/// lease tables and the clock, and an in-memory state table.
#[derive(Debug)]
pub enum Sim {}

impl Backends for Sim {
    type Kinesis = SimKinesis;
    type Metrics = SimMetrics;
    type Leases = SimLeases;
    type State = MemoryStateStore;
    type Clock = SimClock;
}

/// The context of `shardctl run` over a simulated stream.
pub type SimContext = Context<Sim>;

/// The context over `world`: simulated Kinesis, CloudWatch, lease tables and clock, and an
/// in-memory state table. The clock's `sleep` runs the world forward.
pub fn context(world: &SharedWorld) -> SimContext {
    Context {
        kinesis: SimKinesis(world.clone()),
        metrics: SimMetrics(world.clone()),
        leases: SimLeases(world.clone()),
        state: MemoryStateStore::default(),
        clock: SimClock(world.clone()),
        telemetry: Telemetry::new(),
    }
}

/// Runs shardctl's own loop driver ([`shardctl_controller::daemon::run`], as `shardctl run` does) against the
/// simulated world: the same wake-ups (every evaluation interval and every budget start), the
/// same leadership and fencing, the live executor. The world's clock moves when the loop sleeps.
fn run_shardctl(
    world: &SharedWorld,
    cfg: &SimConfig,
    end: u64,
    progress: Progress<'_>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the simulation runtime")?;
    let svc = Arc::new(context(world));
    let policy = PolicyFile {
        api_version: ApiVersion::V1Alpha1,
        kind: PolicyKind::ScalingPolicy,
        metadata: None,
        spec: PolicySpec {
            evaluation_interval: HumanDuration(cfg.evaluation_interval),
            streams: vec![cfg.policy.clone()],
        },
    };
    rt.block_on(async {
        let (_policy_tx, policy_rx) = watch::channel(Arc::new(policy.clone()));
        let stop_policy = policy;
        let (stop_tx, stop_rx) = watch::channel(world.lock().elapsed() >= end);
        let mut last_hour = 0;
        let on_pass = |pass: &daemon::Pass| {
            for (_, result) in pass {
                if let Err(e) = result {
                    tracing::debug!(error = %e, label = e.label(), "simulated cycle failed");
                }
            }
            let elapsed = world.lock().elapsed();
            if elapsed / 3600 > last_hour {
                last_hour = elapsed / 3600;
                progress(Strategy::Shardctl, elapsed.min(end) / 60, cfg.minutes);
            }
            // Stop before the loop would sleep to a wake at or past the end.
            let now = world.lock().now();
            let next = daemon::next_wake(&stop_policy, now);
            let until_next = u64::try_from((next - now).num_seconds()).unwrap_or(u64::MAX);
            if elapsed.saturating_add(until_next) >= end {
                stop_tx.send_replace(true);
            }
        };
        let replica = Replica {
            ctx: svc,
            executor: LiveExecutor,
            // The world's clock moves only when the loop sleeps: one lease for the whole run.
            leadership: Leadership::Once(LeaseSettings {
                owner: "shardctl-simulator".to_string(),
                ttl: Duration::from_secs(end.saturating_add(24 * 3600)),
            }),
            settings: CycleSettings::default(),
            progress: Arc::new(daemon::Progress::default()),
            once: false,
        };
        replica
            .serve(policy_rx, stop_rx, on_pass)
            .await
            .context("the simulated state table refused leadership")?;
        // The loop stopped before a wake at or past the end; the world runs to the end.
        let mut w = world.lock();
        if w.elapsed() < end {
            w.advance_to(end);
        }
        Ok::<(), anyhow::Error>(())
    })
}

/// Runs every strategy in `strategies` on the same traffic.
pub fn compare(
    cfg: &SimConfig,
    strategies: &[Strategy],
    progress: Progress<'_>,
) -> Result<Vec<Outcome>> {
    strategies
        .iter()
        .map(|&s| run_strategy(cfg, s, progress))
        .collect()
}

/// Counts of splits, merges and resizes in a world's operations.
pub fn op_counts(w: &World) -> (usize, usize, usize) {
    w.ops.iter().fold((0, 0, 0), |(s, m, r), op| match op.kind {
        OpKind::Split { .. } => (s + 1, m, r),
        OpKind::Merge { .. } => (s, m + 1, r),
        OpKind::Resize { .. } => (s, m, r + 1),
    })
}
