//! Kinesis on-demand mode, Standard and Advantage, on the same records as the provisioned
//! strategies.
//!
//! Capacity (both modes): twice the highest write rate of the previous 30 days, at least 4 MiB/s
//! and 4,000 records/s (AWS: "up to double the previous peak within the last 30 days"). The 30
//! days before the run are taken to be like its first day without surges and crowds; a new peak
//! raises the capacity only `ramp_minutes` later (AWS: within 15 minutes). A stream's write
//! capacity never exceeds `max_write_mib_per_second` (10 GiB/s in US East (N. Virginia), US West
//! (Oregon) and Europe (Ireland), 200 MiB/s elsewhere). Every partition key is still bound by one
//! shard's 1 MiB/s and 1,000 records/s.
//!
//! Advantage (an account-level mode since November 2025) has no per-stream-hour charge and lower
//! per-GB prices in exchange for a minimum throughput commitment: "at least 25MiB/s of data ingest
//! and 25MiB/s of data retrieval across all on-demand streams", for at least 24 hours; "if your
//! account's data usage is below the requirement, you'll be charged the difference as a
//! shortfall, but it will still be at the same discounted rate"
//! (<https://docs.aws.amazon.com/streams/latest/dev/how-do-i-size-a-stream.html>, read
//! 2026-12-04). Both shortfalls are charged, for the share of the commitment the stream carries.
//! Its streams can be pre-warmed to a write throughput (`warm_mib_per_second`, no extra charge),
//! which then counts as capacity from the start.

use crate::prices::Costs;
use crate::run::{Progress, SimConfig, Strategy, Summary, percent, relief};
use crate::traffic::{Burst, MinuteRates, Offered};
use crate::workload::{LargeDraws, Retries};
use crate::world::{MIB, SHARD_RECORDS};
use serde::Serialize;

/// Bytes per GB as AWS bills data.
const GB: f64 = 1e9;

/// The on-demand model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandConfig {
    /// Minutes before a new peak raises the capacity (15).
    pub ramp_minutes: u64,
    /// Minimum write capacity in MiB/s (4).
    pub min_mib_per_second: f64,
    /// Minimum write capacity in records/s (4,000).
    pub min_records_per_second: f64,
    /// Highest write capacity of one stream in MiB/s (10,240: US East (N. Virginia), US West
    /// (Oregon), Europe (Ireland); 200 in other regions), and 1,000 records/s per MiB/s.
    pub max_write_mib_per_second: f64,
    /// Advantage: the account's minimum throughput commitment in MiB/s, of ingest and of
    /// retrieval each (25).
    pub advantage_commitment_mib_per_second: f64,
    /// Advantage: the share (0..1) of the account's commitment this stream carries: 1 when it is
    /// the only on-demand stream, 0 when others already use the whole commitment (1).
    pub advantage_commitment_share: f64,
    /// Advantage: warm throughput set on the stream in MiB/s (none).
    pub warm_mib_per_second: Option<f64>,
}

impl Default for OnDemandConfig {
    fn default() -> Self {
        OnDemandConfig {
            ramp_minutes: 15,
            min_mib_per_second: 4.0,
            min_records_per_second: 4000.0,
            max_write_mib_per_second: 10_240.0,
            advantage_commitment_mib_per_second: 25.0,
            advantage_commitment_share: 1.0,
            warm_mib_per_second: None,
        }
    }
}

/// What an on-demand run used: records, bytes and the peak utilisation.
#[derive(Debug, Default)]
struct Usage {
    offered: u64,
    accepted: u64,
    throttled: u64,
    gb_in: f64,
    gb_read_once: f64,
    peak_util: f64,
    per_minute: Vec<(u64, u64)>,
}

fn simulate(cfg: &SimConfig, advantage: bool, progress: Progress<'_>) -> Usage {
    let o = cfg.on_demand;
    let strategy = if advantage {
        Strategy::OnDemandAdvantage
    } else {
        Strategy::OnDemand
    };
    let traffic = &cfg.scenario.traffic;
    let start = cfg.scenario.start;
    let producers = cfg.scenario.producers;
    let mut rates = MinuteRates::default();
    // The 30 days before: like the first day without surges and crowds.
    let (mut peak_bytes, mut peak_records) = (0.0f64, 0.0f64);
    for m in 0..cfg.minutes.min(24 * 60) {
        traffic.rates(m, start, false, &mut rates);
        peak_bytes = peak_bytes.max(rates.total_bytes());
        peak_records = peak_records.max(rates.total_records());
    }
    let warm = if advantage {
        o.warm_mib_per_second
    } else {
        None
    };
    let mut burst = Burst::new(cfg.seed);
    let mut offered = Offered::default();
    let mut u = Usage::default();
    let mut minute_accepted: Vec<(f64, f64)> = Vec::new();
    // Records (count, mean size) waiting to be sent again.
    let mut retries: Retries<(u64, f64)> = Retries::new(&producers);
    let mut large = LargeDraws::new(&cfg.scenario.large_records, cfg.seed);
    let size = |b: f64, r: f64| if r > 0.0 { b / r } else { 0.0 };
    for m in 0..cfg.minutes {
        traffic.rates(m, start, true, &mut rates);
        if let Some(old) = m.checked_sub(o.ramp_minutes)
            && let Some(&(b, r)) = minute_accepted.get(old as usize)
        {
            peak_bytes = peak_bytes.max(b);
            peak_records = peak_records.max(r);
        }
        let max_bytes = o.max_write_mib_per_second * MIB;
        let warm_bytes = warm.unwrap_or(0.0) * MIB;
        let cap_bytes = (2.0 * peak_bytes)
            .max(o.min_mib_per_second * MIB)
            .max(warm_bytes)
            .min(max_bytes);
        let cap_records = (2.0 * peak_records)
            .max(o.min_records_per_second)
            .max(warm_bytes / MIB * 1000.0)
            .min(o.max_write_mib_per_second * 1000.0);
        u.peak_util = u.peak_util.max(
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
            // Retried records are ordinary writes again (bound by their key's partition in
            // reality; here part of the stream's load).
            for (n, sz) in retries.due() {
                sources.push((n, n, sz));
            }
            let want_records: u64 = sources.iter().map(|s| s.1).sum();
            let want_bytes: f64 = sources.iter().map(|s| s.1 as f64 * s.2).sum();
            let scale = (cap_records / want_records.max(1) as f64)
                .min(cap_bytes / want_bytes.max(1.0))
                .min(1.0);
            let (mut offered_s, mut accepted, mut thr_bytes) = (0u64, 0u64, 0.0);
            for (n, admissible, sz) in sources {
                offered_s += n;
                let a = if scale >= 1.0 {
                    admissible
                } else {
                    ((admissible as f64) * scale).floor() as u64
                };
                accepted += a;
                thr_bytes += (n - a) as f64 * sz;
                mab += a as f64 * sz;
                let billed = (sz / 1024.0).ceil().max(1.0) * 1024.0;
                u.gb_in += a as f64 * billed / GB;
                u.gb_read_once += a as f64 * sz / GB;
            }
            // Large records: on-demand "handles the large record burst capacity transparently"
            // (https://docs.aws.amazon.com/streams/latest/dev/large-records.html), so they are
            // taken and billed like any write.
            if let Some((_, sz)) = large.second() {
                offered_s += 1;
                accepted += 1;
                mab += sz;
                u.gb_in += (sz / 1024.0).ceil() * 1024.0 / GB;
                u.gb_read_once += sz / GB;
            }
            let throttled = offered_s - accepted;
            retries.later(throttled, |again| (again, thr_bytes / throttled as f64));
            mar += accepted as f64;
            mo += offered_s;
            mt += throttled;
        }
        u.offered += mo;
        u.throttled += mt;
        u.accepted += mo - mt;
        u.per_minute.push((mo, mt));
        minute_accepted.push((mab / 60.0, mar / 60.0));
        if (m + 1) % 60 == 0 {
            progress(strategy, m + 1, cfg.minutes);
        }
    }
    u
}

/// Runs on-demand Standard (`advantage` false) or Advantage.
pub(crate) fn run_on_demand(cfg: &SimConfig, advantage: bool, progress: Progress<'_>) -> Summary {
    let u = simulate(cfg, advantage, progress);
    let p = &cfg.prices;
    let o = &cfg.on_demand;
    let readers = cfg.scenario.readers;
    let polling_gb = u.gb_read_once * f64::from(readers.polling);
    let efo_gb = u.gb_read_once * f64::from(readers.enhanced_fan_out);
    let costs = if advantage {
        // The commitment runs for at least 24 hours.
        let secs = (cfg.minutes * 60).max(24 * 3600) as f64;
        let committed_gb = o.advantage_commitment_mib_per_second * MIB * secs / GB
            * o.advantage_commitment_share.clamp(0.0, 1.0);
        Costs {
            on_demand_data_in: u.gb_in * p.on_demand_advantage_gb_in,
            on_demand_data_out: polling_gb * p.on_demand_advantage_gb_out
                + efo_gb * p.on_demand_advantage_efo_gb_out,
            on_demand_commitment: (committed_gb - u.gb_in).max(0.0) * p.on_demand_advantage_gb_in
                + (committed_gb - polling_gb - efo_gb).max(0.0) * p.on_demand_advantage_gb_out,
            ..Costs::default()
        }
    } else {
        Costs {
            on_demand_stream_hours: cfg.minutes as f64 / 60.0 * p.on_demand_stream_hour,
            on_demand_data_in: u.gb_in * p.on_demand_gb_in,
            on_demand_data_out: polling_gb * p.on_demand_gb_out + efo_gb * p.on_demand_efo_gb_out,
            ..Costs::default()
        }
    };
    Summary {
        strategy: if advantage {
            Strategy::OnDemandAdvantage
        } else {
            Strategy::OnDemand
        },
        offered_records: u.offered,
        accepted_records: u.accepted,
        throttled_records: u.throttled,
        throttled_percent: percent(u.throttled, u.offered),
        shard_hours: None,
        cost_usd: costs.total(),
        costs,
        operations: 0,
        relief: relief(&u.per_minute, cfg.scenario.surge),
        peak_utilisation_percent: u.peak_util,
        final_shards: None,
        max_shards: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Prices, UniformConfig};
    use crate::traffic::scenario;
    use std::time::Duration;

    fn cfg(minutes: u64) -> SimConfig {
        let policy = shardctl_policies::StreamPolicy::with_defaults("s");
        SimConfig {
            scenario: scenario("flash-crowd", 1).expect("scenario"),
            uniform: UniformConfig::for_policy(&policy),
            on_demand: OnDemandConfig::default(),
            prices: Prices::default(),
            evaluation_interval: Duration::from_secs(60),
            minutes,
            seed: 1,
            policy,
        }
    }

    #[test]
    fn advantage_charges_no_stream_hours_and_the_unused_commitment() {
        let c = cfg(60);
        let std = run_on_demand(&c, false, &mut |_, _, _| {});
        let adv = run_on_demand(&c, true, &mut |_, _, _| {});
        assert_eq!(std.costs.on_demand_stream_hours, 0.04);
        assert_eq!(adv.costs.on_demand_stream_hours, 0.0);
        // Same records, 60 % lower per GB.
        assert_eq!(std.throttled_records, adv.throttled_records);
        let ratio = adv.costs.on_demand_data_in / std.costs.on_demand_data_in;
        assert!((ratio - 0.4).abs() < 1e-9, "{ratio}");
        // 16 shards at 40 % is ~6.4 MiB/s: far below 25 MiB/s for 24 h.
        assert!(adv.costs.on_demand_commitment > 50.0, "{:?}", adv.costs);
        // The retrieval commitment is unused too: a second reading application fills part of it
        // and lowers the shortfall by exactly what it reads, at the retrieval price.
        let mut two = c.clone();
        two.scenario.readers.polling = 2;
        let adv2 = run_on_demand(&two, true, &mut |_, _, _| {});
        let more_read = adv2.costs.on_demand_data_out - adv.costs.on_demand_data_out;
        assert!(more_read > 0.0);
        let less_shortfall = adv.costs.on_demand_commitment - adv2.costs.on_demand_commitment;
        assert!(
            (less_shortfall - more_read).abs() < 1e-9,
            "{less_shortfall} vs {more_read}"
        );
        let mut shared = c.clone();
        shared.on_demand.advantage_commitment_share = 0.0;
        let marginal = run_on_demand(&shared, true, &mut |_, _, _| {});
        assert_eq!(marginal.costs.on_demand_commitment, 0.0);
    }

    #[test]
    fn warm_throughput_and_the_regional_cap_change_capacity() {
        // The crowd at noon: 2.5x a steady 40 % of 16 shards is above twice the old peak.
        let mut c = cfg(13 * 60);
        let cold = run_on_demand(&c, true, &mut |_, _, _| {});
        c.on_demand.warm_mib_per_second = Some(40.0);
        let warm = run_on_demand(&c, true, &mut |_, _, _| {});
        assert!(warm.throttled_records < cold.throttled_records);
        c.on_demand.warm_mib_per_second = None;
        c.on_demand.max_write_mib_per_second = 4.0;
        let capped = run_on_demand(&c, false, &mut |_, _, _| {});
        assert!(capped.throttled_records > cold.throttled_records);
    }

    #[test]
    fn retried_records_are_offered_again() {
        let mut c = cfg(13 * 60);
        c.on_demand.max_write_mib_per_second = 4.0;
        let once = run_on_demand(&c, false, &mut |_, _, _| {});
        c.scenario.producers.retry_share = 0.5;
        let again = run_on_demand(&c, false, &mut |_, _, _| {});
        assert!(again.offered_records > once.offered_records);
        assert_eq!(
            again.offered_records,
            again.accepted_records + again.throttled_records
        );
    }
}
