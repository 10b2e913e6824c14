//! The baselines shardctl is compared with, as their users configure them: stream-level uniform
//! scaling (amazon-kinesis-scaling-utils, the AWS samples) and Kinesis on-demand mode. Static
//! provisioning needs no code: the world simply runs.

use crate::prices::Costs;
use crate::run::{Progress, SimConfig, Strategy, Summary, percent, relief};
use crate::traffic::{Burst, MinuteRates, Offered};
use crate::world::{MIB, SHARD_RECORDS, World};
use serde::Serialize;
use shardctl_policies::StreamPolicy;

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
    /// How many times each record is read (consumer applications), for on-demand reads (1).
    pub reads_per_record: f64,
}

impl Default for OnDemandConfig {
    fn default() -> Self {
        OnDemandConfig {
            ramp_minutes: 15,
            min_mib_per_second: 4.0,
            min_records_per_second: 4000.0,
            reads_per_record: 1.0,
        }
    }
}

pub(crate) fn run_uniform(w: &mut World, cfg: &SimConfig, end: u64, progress: Progress<'_>) {
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

pub(crate) fn run_on_demand(cfg: &SimConfig, progress: Progress<'_>) -> Summary {
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
                gb_out += a as f64 * sz / 1e9 * o.reads_per_record;
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
    let costs = Costs {
        on_demand_stream_hours: hours * p.on_demand_stream_hour,
        on_demand_data_in: gb_in * p.on_demand_gb_in,
        on_demand_data_out: gb_out * p.on_demand_gb_out,
        ..Costs::default()
    };
    Summary {
        strategy: Strategy::OnDemand,
        offered_records: offered_t,
        accepted_records: accepted_t,
        throttled_records: throttled_t,
        throttled_percent: percent(throttled_t, offered_t),
        shard_hours: None,
        cost_usd: costs.total(),
        costs,
        operations: 0,
        relief: relief(&per_minute, cfg.scenario.surge),
        peak_utilisation_percent: peak_util,
        final_shards: None,
        max_shards: None,
    }
}
