//! Stream-level autoscalers as their users configure them: they watch the stream's CloudWatch
//! metrics and change the shard count of the whole stream. Static provisioning needs no code (the
//! world simply runs); on-demand mode is in [`crate::on_demand`].
//!
//! Two named tools, each with the settings its own documentation gives:
//!
//! - **scaling-utils**: [amazon-kinesis-scaling-utils](https://github.com/awslabs/amazon-kinesis-scaling-utils)
//!   (`StreamMonitor`, README "Using scale percentage" example, read 2026-12-01 at commit
//!   23ba220): every `checkInterval` (300 s) it reads the last `max(scaleUp.scaleAfterMins,
//!   scaleDown.scaleAfterMins)` one-minute datapoints of PUT **and** GET; a minute above
//!   `scaleThresholdPct` (75) is high, one below 25 (or missing) is low. Scale up when 5 minutes
//!   are high (for PUT or GET) by `scalePct` 150 (adding 150 % of the shards), down when 15 are
//!   low (for both) by 25 %; `coolOffMins` 15 after a scale-up before the next scale-up, 60 after
//!   a scale-down before the next scale-down. It calls `UpdateShardCount` and, when that is
//!   refused (target outside 0.5x..2x, or the 10 calls per 24 h used up), falls back to
//!   `SplitShard`/`MergeShards` one shard at a time until the target count is reached.
//! - **lambda-sample**: the AWS sample [kinesis-auto-scaling](https://github.com/aws-samples/kinesis-auto-scaling)
//!   (CloudWatch alarms + Lambda, `kinesis_scaling_cf.yaml`, read 2026-12-01 at commit e1e52f8):
//!   five-minute datapoints of the stream's `IncomingBytes`/`IncomingRecords` over its shards'
//!   limits (missing data is 0); scale up (double, `UpdateShardCount`) when 5 of the last 5
//!   datapoints are at or above 75 % (25 minutes), down (halve) when 57 of the last 60 are below
//!   25 % (285 of 300 minutes). No fallback: a refused call is an error and nothing happens.
//!
//! Both see datapoints only after the same CloudWatch delay as shardctl.

use crate::run::{Progress, SimConfig, Strategy};
use crate::world::{MIB, SHARD_RECORDS, World};
use serde::Serialize;
use shardctl_policies::StreamPolicy;
use shardctl_policies::shard_map::shard_id;

/// How a scaling action changes the shard count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum Step {
    /// Add (scale up) or remove (scale down) this percentage of the current shards, rounded up.
    Percent(f64),
    /// Add or remove this many shards.
    Count(usize),
}

impl Step {
    fn apply(self, shards: usize, up: bool) -> usize {
        let delta = match self {
            Step::Percent(p) => (shards as f64 * p.max(0.0) / 100.0).ceil() as usize,
            Step::Count(n) => n,
        }
        .max(1);
        if up {
            shards.saturating_add(delta)
        } else {
            shards.saturating_sub(delta).max(1)
        }
    }
}

/// A stream-level autoscaler's settings (see the module docs for the two presets).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UniformConfig {
    /// Scale up when utilisation is above this (%).
    pub up_threshold: f64,
    /// Datapoints above it (within `up_window`) before scaling up.
    pub up_after: u64,
    /// Datapoints looked at for scaling up.
    pub up_window: u64,
    /// Scale down when utilisation is below this (%).
    pub down_threshold: f64,
    /// Datapoints below it (within `down_window`) before scaling down.
    pub down_after: u64,
    /// Datapoints looked at for scaling down.
    pub down_window: u64,
    /// Minutes per datapoint.
    pub period_minutes: u64,
    /// Minutes between checks.
    pub check_minutes: u64,
    /// Minutes after a scale-up before the next scale-up.
    pub up_cool_off_minutes: u64,
    /// Minutes after a scale-down before the next scale-down.
    pub down_cool_off_minutes: u64,
    /// How a scale-up changes the count.
    pub up_step: Step,
    /// How a scale-down changes the count.
    pub down_step: Step,
    /// Also scale on reads (GET): up if reads or writes say up, down only if both say down.
    pub reads: bool,
    /// When `UpdateShardCount` is refused, reach the target by splits and merges.
    pub split_merge_fallback: bool,
    /// Fewest shards.
    pub min_shards: usize,
    /// Most shards.
    pub max_shards: usize,
}

impl UniformConfig {
    /// amazon-kinesis-scaling-utils with its README's example settings and the policy's bounds.
    pub fn for_policy(policy: &StreamPolicy) -> Self {
        UniformConfig::scaling_utils(policy)
    }

    /// amazon-kinesis-scaling-utils with its README's example settings ("Using scale
    /// percentage") and the policy's min/max shards.
    pub fn scaling_utils(policy: &StreamPolicy) -> Self {
        UniformConfig {
            up_threshold: 75.0,
            up_after: 5,
            up_window: 15,
            down_threshold: 25.0,
            down_after: 15,
            down_window: 15,
            period_minutes: 1,
            check_minutes: 5,
            up_cool_off_minutes: 15,
            down_cool_off_minutes: 60,
            up_step: Step::Percent(150.0),
            down_step: Step::Percent(25.0),
            reads: true,
            split_merge_fallback: true,
            min_shards: policy.min_shards.max(1) as usize,
            max_shards: policy.max_shards.max(1) as usize,
        }
    }

    /// The AWS Lambda sample (kinesis-auto-scaling) with its shipped settings and the policy's
    /// min/max shards.
    pub fn lambda_sample(policy: &StreamPolicy) -> Self {
        UniformConfig {
            up_threshold: 75.0,
            up_after: 5,
            up_window: 5,
            down_threshold: 25.0,
            down_after: 57,
            down_window: 60,
            period_minutes: 5,
            check_minutes: 5,
            up_cool_off_minutes: 0,
            down_cool_off_minutes: 0,
            up_step: Step::Percent(100.0),
            down_step: Step::Percent(50.0),
            reads: false,
            split_merge_fallback: false,
            min_shards: policy.min_shards.max(1) as usize,
            max_shards: policy.max_shards.max(1) as usize,
        }
    }
}

/// Stream utilisation (%) of datapoint `p` (periods of `period` minutes ending at minute `last`
/// inclusive, `p = 0` the newest) for writes and, with `reads_per_record`, reads; `None` when
/// the period is before the start.
fn datapoint(w: &World, last: u64, p: u64, period: u64, shards: usize) -> Option<(f64, f64)> {
    let end = (last + 1).checked_sub(p * period)?;
    let start = end.checked_sub(period)?;
    let (mut bytes, mut records) = (0.0, 0u64);
    for m in start..end {
        let s = w.stream_minutes.get(m as usize)?;
        bytes += s.accepted_bytes;
        records += s.accepted_records;
    }
    let secs = (period * 60) as f64;
    let n = shards.max(1) as f64;
    let write = (bytes / (secs * MIB * n)).max(records as f64 / (secs * SHARD_RECORDS as f64 * n));
    // GET limits per shard: 2 MiB/s and (scaling-utils) 2,000 records/s.
    let read = (bytes / (secs * 2.0 * MIB * n)).max(records as f64 / (secs * 2000.0 * n));
    Some((write * 100.0, read * 100.0))
}

/// The vote of one operation type: (up, down).
fn votes(u: &UniformConfig, w: &World, last: u64, shards: usize, reads: f64) -> (bool, bool) {
    let count = |window: u64, f: &dyn Fn(f64) -> bool| -> (u64, u64) {
        let (mut w_n, mut r_n) = (0, 0);
        for p in 0..window {
            // Missing datapoints count as 0 (below every threshold).
            let (wr, rd) = datapoint(w, last, p, u.period_minutes, shards).unwrap_or((0.0, 0.0));
            w_n += u64::from(f(wr));
            r_n += u64::from(f(rd * reads));
        }
        (w_n, r_n)
    };
    let (up_w, up_r) = count(u.up_window, &|x| x >= u.up_threshold);
    let (down_w, down_r) = count(u.down_window, &|x| x < u.down_threshold);
    let up = up_w >= u.up_after || (u.reads && up_r >= u.up_after);
    let down = down_w >= u.down_after && (!u.reads || down_r >= u.down_after);
    (up, down && !up)
}

/// One split (widest open shard at its midpoint) or merge (the adjacent pair narrowest together)
/// towards `target` shards, as scaling-utils' `scaleStream` does one shard at a time.
fn fallback_step(w: &mut World, target: usize) -> bool {
    let width = |w: &World, n: usize| {
        let r = w.shards()[n].range;
        r.ending_hash_key - r.starting_hash_key
    };
    let open = w.open.clone();
    let result = if open.len() < target {
        let Some(&n) = open.iter().max_by_key(|&&n| (width(w, n), usize::MAX - n)) else {
            return false;
        };
        match w.shards()[n].range.midpoint_split_key() {
            Some(key) => w.split(&shard_id(n), key),
            None => return false,
        }
    } else if open.len() > target {
        let Some(pair) = open
            .windows(2)
            .min_by_key(|p| width(w, p[0]).saturating_add(width(w, p[1])))
        else {
            return false;
        };
        w.merge(&shard_id(pair[0]), &shard_id(pair[1]))
    } else {
        return false;
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "simulated fallback reshard refused");
            false
        }
    }
}

/// Runs a stream-level autoscaler with settings `u` on `w` until `end` seconds.
pub(crate) fn run_uniform(
    w: &mut World,
    cfg: &SimConfig,
    u: &UniformConfig,
    strategy: Strategy,
    end: u64,
    progress: Progress<'_>,
) {
    // Only polling applications use the shared GetRecords limits; with none, reads never ask
    // for more shards.
    let reads = f64::from(cfg.scenario.readers.polling);
    let (mut last_up, mut last_down): (Option<u64>, Option<u64>) = (None, None);
    let mut fallback: Option<usize> = None;
    let check = u.check_minutes.max(1) * 60;
    let mut next_check = check;
    let mut next_report = 3600;
    while w.elapsed() < end {
        if let Some(target) = fallback {
            // The tool blocks in `scaleStream` until the target is reached.
            if w.status() == shardctl_policies::StreamStatus::Active
                && (w.open_count() == target || !fallback_step(w, target))
            {
                fallback = None;
                next_check = w.elapsed() + check;
            }
            w.advance_to((w.elapsed() + 10).min(end));
        } else {
            w.advance_to(next_check.min(end));
        }
        let now = w.elapsed();
        if now >= next_report {
            progress(strategy, now / 60, cfg.minutes);
            next_report += 3600;
        }
        if fallback.is_some() || now < next_check {
            continue;
        }
        next_check = now + check;
        if w.status() != shardctl_policies::StreamStatus::Active {
            continue;
        }
        let Some(last) = (0..now / 60).rev().find(|&m| w.minute_published(m)) else {
            continue;
        };
        let shards = w.open_count();
        let (up, down) = votes(u, w, last, shards, reads);
        let cooled = |at: Option<u64>, minutes: u64| at.is_none_or(|t| now >= t + minutes * 60);
        let target = if up && shards < u.max_shards && cooled(last_up, u.up_cool_off_minutes) {
            last_up = Some(now);
            u.up_step.apply(shards, true).min(u.max_shards)
        } else if down && shards > u.min_shards && cooled(last_down, u.down_cool_off_minutes) {
            last_down = Some(now);
            u.down_step.apply(shards, false).max(u.min_shards)
        } else {
            continue;
        };
        if let Err(e) = w.update_shard_count(target) {
            tracing::debug!(error = %e, "simulated UpdateShardCount refused");
            if u.split_merge_fallback {
                fallback = Some(target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_add_and_remove_a_rounded_up_share() {
        assert_eq!(Step::Percent(150.0).apply(16, true), 40);
        assert_eq!(Step::Percent(25.0).apply(16, false), 12);
        assert_eq!(Step::Percent(100.0).apply(16, true), 32);
        assert_eq!(Step::Percent(50.0).apply(5, false), 2);
        assert_eq!(Step::Count(1).apply(1, false), 1);
        assert_eq!(Step::Count(3).apply(4, true), 7);
    }

    #[test]
    fn presets_follow_their_documentation() {
        let p = StreamPolicy::with_defaults("s");
        let su = UniformConfig::scaling_utils(&p);
        assert_eq!((su.up_after, su.down_after, su.down_window), (5, 15, 15));
        assert_eq!((su.up_cool_off_minutes, su.down_cool_off_minutes), (15, 60));
        assert!(su.reads && su.split_merge_fallback);
        let l = UniformConfig::lambda_sample(&p);
        assert_eq!(l.up_after * l.period_minutes, 25);
        assert_eq!(
            (
                l.down_after * l.period_minutes,
                l.down_window * l.period_minutes
            ),
            (285, 300)
        );
        assert!(!l.split_merge_fallback);
    }
}
