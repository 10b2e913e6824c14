//! The strategies compared on identical traffic, and their summaries.
//!
//! - **shardctl**: the real [`Context::cycle`] with the [`LiveExecutor`] every evaluation
//!   interval of the policy, in virtual time, against the simulated backends.
//! - **static**: the stream stays at the scenario's provisioned shard count.
//! - **uniform**: stream-level autoscaling as amazon-kinesis-scaling-utils and the AWS samples
//!   do it (see [`UniformConfig`]), by `UpdateShardCount` with uniform scaling.
//! - **on-demand**: Kinesis on-demand mode (see [`OnDemandConfig`]).

use crate::traffic::{Burst, MinuteRates, Offered, Scenario};
use crate::world::{
    MIB, MemoryStateStore, OpKind, SHARD_RECORDS, SharedWorld, SimClock, SimKinesis, SimLeases,
    SimMetrics, World, WorldConfig,
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

/// Published prices, in USD. One place; override for other regions or new price lists.
///
/// Defaults: Amazon Kinesis Data Streams, US East (N. Virginia), from
/// <https://aws.amazon.com/kinesis/data-streams/pricing/> (standard retention of 24 h, no
/// enhanced fan-out).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    /// Provisioned mode: per shard-hour (0.015).
    pub shard_hour: f64,
    /// Provisioned mode: per million PUT payload units of 25 KB (0.014).
    pub put_payload_units_per_million: f64,
    /// On-demand mode: per stream-hour (0.04).
    pub on_demand_stream_hour: f64,
    /// On-demand mode: per GB written, each record rounded up to 1 KB (0.08).
    pub on_demand_gb_in: f64,
    /// On-demand mode: per GB read (0.04).
    pub on_demand_gb_out: f64,
    /// How many times each record is read (consumer applications), for on-demand reads (1).
    pub reads_per_record: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            shard_hour: 0.015,
            put_payload_units_per_million: 0.014,
            on_demand_stream_hour: 0.04,
            on_demand_gb_in: 0.08,
            on_demand_gb_out: 0.04,
            reads_per_record: 1.0,
        }
    }
}

/// Stream-level autoscaling as users configure amazon-kinesis-scaling-utils (or the AWS
/// Application Auto Scaling sample): utilisation is the stream's `IncomingBytes` /
/// `IncomingRecords` over the capacity of all shards, whichever is higher.
///
/// Defaults: scale up by 100 % (doubling) when utilisation is above 75 % for 5 consecutive
/// minutes, down by 50 % when below 25 % for 30 minutes; cool-off 5 minutes after scaling up and
/// 30 minutes after scaling down; the same min/max shards as the shardctl policy; the same
/// CloudWatch delay as every strategy. The thresholds are scaling-utils' documented example; the
/// windows match the shardctl policy's split and merge windows so neither side waits longer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UniformConfig {
    /// Scale up above this utilisation (%).
    pub up_threshold: f64,
    /// Minutes above it before scaling up.
    pub up_after_minutes: u64,
    /// Scale down below this utilisation (%).
    pub down_threshold: f64,
    /// Minutes below it before scaling down.
    pub down_after_minutes: u64,
    /// Minutes after a scale-up before the next action.
    pub up_cool_off_minutes: u64,
    /// Minutes after a scale-down before the next action.
    pub down_cool_off_minutes: u64,
    /// Fewest shards.
    pub min_shards: usize,
    /// Most shards.
    pub max_shards: usize,
}

impl UniformConfig {
    /// The defaults with the policy's bounds.
    pub fn for_policy(policy: &StreamPolicy) -> Self {
        UniformConfig {
            up_threshold: 75.0,
            up_after_minutes: 5,
            down_threshold: 25.0,
            down_after_minutes: 30,
            up_cool_off_minutes: 5,
            down_cool_off_minutes: 30,
            min_shards: policy.min_shards.max(1) as usize,
            max_shards: policy.max_shards.max(1) as usize,
        }
    }
}

/// Kinesis on-demand mode: write capacity is twice the highest write rate seen before (AWS:
/// "up to double the previous peak within the last 30 days"), at least 4 MiB/s and 4,000
/// records/s; traffic above it within `ramp_minutes` of a new peak is throttled. Every key is still
/// bound by one partition's 1 MiB/s and 1,000 records/s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandConfig {
    /// Minutes before a new peak raises the capacity (15).
    pub ramp_minutes: u64,
    /// Minimum write capacity in MiB/s (4).
    pub min_mib_per_second: f64,
    /// Minimum write capacity in records/s (4,000).
    pub min_records_per_second: f64,
}

impl Default for OnDemandConfig {
    fn default() -> Self {
        OnDemandConfig {
            ramp_minutes: 15,
            min_mib_per_second: 4.0,
            min_records_per_second: 4000.0,
        }
    }
}

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// shardctl with the given policy.
    Shardctl,
    /// Fixed shard count.
    Static,
    /// Stream-level uniform doubling/halving.
    Uniform,
    /// Kinesis on-demand mode.
    OnDemand,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 4] = [
        Strategy::Shardctl,
        Strategy::Uniform,
        Strategy::Static,
        Strategy::OnDemand,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Shardctl => "shardctl",
            Strategy::Static => "static",
            Strategy::Uniform => "uniform",
            Strategy::OnDemand => "on-demand",
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
    /// The uniform baseline.
    pub uniform: UniformConfig,
    /// The on-demand model.
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
    /// Cost in USD at the given prices.
    pub cost_usd: f64,
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

fn relief(per_minute: &[(u64, u64)], surge: Option<(u64, u64)>) -> Relief {
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

fn world_summary(strategy: Strategy, w: &World, cfg: &SimConfig) -> Summary {
    let t = w.totals;
    let shard_hours = t.shard_seconds as f64 / 3600.0;
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
        cost_usd: shard_hours * cfg.prices.shard_hour
            + t.payload_units / 1e6 * cfg.prices.put_payload_units_per_million,
        operations: w.ops.len(),
        relief: relief(&per_minute, cfg.scenario.surge),
        peak_utilisation_percent: peak * 100.0,
        final_shards: Some(w.open_count()),
        max_shards: w.stream_minutes.iter().map(|m| m.open_shards).max(),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
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
    let new_world = || {
        World::new(
            WorldConfig::new(cfg.policy.name.clone()),
            &cfg.scenario,
            cfg.seed,
        )
    };
    match strategy {
        Strategy::Static => {
            let mut w = new_world();
            while w.elapsed() < end {
                w.advance_to((w.elapsed() + 3600).min(end));
                progress(strategy, w.elapsed() / 60, cfg.minutes);
            }
            let summary = world_summary(strategy, &w, cfg);
            Ok(Outcome {
                summary,
                world: Some(w),
            })
        }
        Strategy::Uniform => {
            let mut w = new_world();
            run_uniform(&mut w, cfg, end, progress);
            let summary = world_summary(strategy, &w, cfg);
            Ok(Outcome {
                summary,
                world: Some(w),
            })
        }
        Strategy::Shardctl => {
            let shared = SharedWorld::new(new_world());
            run_shardctl(&shared, cfg, end, progress)?;
            let w = std::mem::replace(&mut *shared.lock(), new_world());
            let summary = world_summary(strategy, &w, cfg);
            Ok(Outcome {
                summary,
                world: Some(w),
            })
        }
        Strategy::OnDemand => Ok(Outcome {
            summary: run_on_demand(cfg, progress),
            world: None,
        }),
    }
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

fn run_uniform(w: &mut World, cfg: &SimConfig, end: u64, progress: Progress<'_>) {
    let u = cfg.uniform;
    let mut cool_until = 0u64;
    while w.elapsed() < end {
        w.advance_to((w.elapsed() + 60).min(end));
        let now = w.elapsed();
        if now.is_multiple_of(3600) {
            progress(Strategy::Uniform, now / 60, cfg.minutes);
        }
        if now < cool_until || w.status() != shardctl_policies::StreamStatus::Active {
            continue;
        }
        // The newest published stream-level minutes, against the shards open now.
        let published = (0..now / 60).rev().find(|&m| w.minute_published(m));
        let Some(last) = published else { continue };
        let shards = w.open_count();
        let util = |m: u64| w.stream_minutes[m as usize].accepted_utilisation(shards) * 100.0;
        let all = |n: u64, f: &dyn Fn(f64) -> bool| {
            n > 0 && last + 1 >= n && (last + 1 - n..=last).all(|m| f(util(m)))
        };
        let target = if all(u.up_after_minutes, &|x| x > u.up_threshold) && shards < u.max_shards {
            Some(((shards * 2).min(u.max_shards), u.up_cool_off_minutes))
        } else if all(u.down_after_minutes, &|x| x < u.down_threshold) && shards > u.min_shards {
            Some((
                shards.div_ceil(2).max(u.min_shards),
                u.down_cool_off_minutes,
            ))
        } else {
            None
        };
        if let Some((target, cool)) = target {
            match w.update_shard_count(target) {
                Ok(()) => cool_until = now + cool * 60,
                Err(e) => tracing::debug!(error = %e, "simulated UpdateShardCount refused"),
            }
        }
    }
}

fn run_on_demand(cfg: &SimConfig, progress: Progress<'_>) -> Summary {
    let o = cfg.on_demand;
    let p = cfg.prices;
    let traffic = &cfg.scenario.traffic;
    let start = cfg.scenario.start;
    let mut rates = MinuteRates::default();
    // Yesterday's peak: the same day without surges and crowds.
    let (mut peak_bytes, mut peak_records) = (0.0f64, 0.0f64);
    for m in 0..cfg.minutes {
        traffic.rates(m, start, false, &mut rates);
        peak_bytes = peak_bytes.max(rates.total_bytes());
        peak_records = peak_records.max(rates.total_records());
    }
    // The same per-second records as the provisioned strategies.
    let mut burst = Burst::new(cfg.seed);
    let mut offered = Offered::default();
    let mut per_minute: Vec<(u64, u64)> = Vec::new();
    let mut minute_accepted: Vec<(f64, f64)> = Vec::new();
    let (mut offered_t, mut accepted_t, mut throttled_t) = (0u64, 0u64, 0u64);
    let (mut gb_in, mut gb_out) = (0.0, 0.0);
    let mut peak_util = 0.0f64;
    let size = |b: f64, r: f64| if r > 0.0 { b / r } else { 0.0 };
    for m in 0..cfg.minutes {
        traffic.rates(m, start, true, &mut rates);
        // Capacity follows peaks at least `ramp_minutes` old.
        if let Some(old) = m.checked_sub(o.ramp_minutes)
            && let Some(&(b, r)) = minute_accepted.get(old as usize)
        {
            peak_bytes = peak_bytes.max(b);
            peak_records = peak_records.max(r);
        }
        let cap_bytes = (2.0 * peak_bytes).max(o.min_mib_per_second * MIB);
        let cap_records = (2.0 * peak_records).max(o.min_records_per_second);
        peak_util = peak_util.max(
            (rates.total_bytes() / cap_bytes).max(rates.total_records() / cap_records) * 100.0,
        );
        let bucket_size: Vec<f64> = rates
            .bucket_records
            .iter()
            .zip(&rates.bucket_bytes)
            .map(|(&r, &b)| size(b, r))
            .collect();
        let (mut mo, mut mt, mut mab, mut mar) = (0u64, 0u64, 0.0, 0.0);
        for _ in 0..60 {
            burst.second(&rates, &mut offered);
            // Light keys as one source; each heavy key is bound by one partition's limits.
            let light: u64 = offered.bucket_records.iter().sum();
            let light_bytes: f64 = offered
                .bucket_records
                .iter()
                .zip(&bucket_size)
                .map(|(&n, &s)| n as f64 * s)
                .sum();
            let mut sources: Vec<(u64, u64, f64)> =
                vec![(light, light, size(light_bytes, light as f64))];
            for (k, &n) in offered.heavy_records.iter().enumerate() {
                let sz = size(rates.heavy_bytes[k], rates.heavy_records[k]);
                let cap = SHARD_RECORDS.min((MIB / sz.max(1.0)).floor() as u64);
                sources.push((n, n.min(cap), sz));
            }
            let want_records: u64 = sources.iter().map(|s| s.1).sum();
            let want_bytes: f64 = sources.iter().map(|s| s.1 as f64 * s.2).sum();
            let scale = (cap_records / want_records.max(1) as f64)
                .min(cap_bytes / want_bytes.max(1.0))
                .min(1.0);
            let (mut offered_s, mut accepted) = (0u64, 0u64);
            for (n, admissible, sz) in sources {
                offered_s += n;
                let a = if scale >= 1.0 {
                    admissible
                } else {
                    ((admissible as f64) * scale).floor() as u64
                };
                accepted += a;
                mab += a as f64 * sz;
                let billed = (sz / 1024.0).ceil().max(1.0) * 1024.0;
                gb_in += a as f64 * billed / 1e9;
                gb_out += a as f64 * sz / 1e9 * p.reads_per_record;
            }
            mar += accepted as f64;
            mo += offered_s;
            mt += offered_s - accepted;
        }
        offered_t += mo;
        throttled_t += mt;
        accepted_t += mo - mt;
        per_minute.push((mo, mt));
        minute_accepted.push((mab / 60.0, mar / 60.0));
        if (m + 1) % 60 == 0 {
            progress(Strategy::OnDemand, m + 1, cfg.minutes);
        }
    }
    let hours = cfg.minutes as f64 / 60.0;
    Summary {
        strategy: Strategy::OnDemand,
        offered_records: offered_t,
        accepted_records: accepted_t,
        throttled_records: throttled_t,
        throttled_percent: percent(throttled_t, offered_t),
        shard_hours: None,
        cost_usd: hours * p.on_demand_stream_hour
            + gb_in * p.on_demand_gb_in
            + gb_out * p.on_demand_gb_out,
        operations: 0,
        relief: relief(&per_minute, cfg.scenario.surge),
        peak_utilisation_percent: peak_util,
        final_shards: None,
        max_shards: None,
    }
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
