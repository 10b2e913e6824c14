//! The planner: `plan(policy, observation, history, now) -> Decision`.
//!
//! Pure and deterministic. It assesses every open shard over the policy's windows, proposes
//! splits for hot shards (and for scheduled minimums) and merges for cold adjacent pairs, then
//! passes each candidate through the gates in a fixed order. Candidates that pass become
//! [`PlannedOperation`]s with their reason; the others become [`HeldCandidate`]s with the first
//! [`Limit`] that stopped them.

use crate::budget::{self, BudgetLimit};
use crate::duration::add_minutes_saturating;
use crate::hash::{HashKey, HashRange, decimal};
use crate::history::{History, OperationKind};
use crate::observation::{
    Observation, SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND, StreamStatus,
};
use crate::policy::{SelectPolicy, SplitPoint, StreamPolicy};
use crate::rate;
use crate::shard_map::{Shard, ShardMap, ShardMapError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shardctl_lease::{DrainView, Lineage};
use std::fmt;

/// Why no plan could be made at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The listed shards do not form a valid map.
    #[error("stream {stream}: the shard map is broken, refusing to plan: {source}")]
    BrokenShardMap {
        /// The stream.
        stream: String,
        /// What is wrong with the map.
        source: ShardMapError,
    },
    /// The observation is of another stream than the policy.
    #[error("the observation is of stream `{observed}` but the policy is for `{policy}`")]
    WrongStream {
        /// The policy's stream.
        policy: String,
        /// The observed stream.
        observed: String,
    },
}

impl PlanError {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            PlanError::BrokenShardMap { .. } => "broken_shard_map",
            PlanError::WrongStream { .. } => "wrong_stream",
        }
    }
}

/// The planner's answer for one stream at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The stream.
    pub stream_name: String,
    /// The instant planned for.
    pub evaluated_at: DateTime<Utc>,
    /// The stream status seen.
    pub stream_status: StreamStatus,
    /// Open shards now.
    pub open_shards: usize,
    /// The minimum in force (policy or budget).
    pub min_shards: u32,
    /// The maximum in force.
    pub max_shards: u32,
    /// The metric minutes evaluated: `[windowStart, windowEnd)` for splits and merges.
    pub split_window: MinuteWindow,
    /// The merge window.
    pub merge_window: MinuteWindow,
    /// Operations to run, in order.
    pub operations: Vec<PlannedOperation>,
    /// Candidates held back, each with the limit that stopped it.
    pub held: Vec<HeldCandidate>,
    /// Every open shard's assessment, in hash key order.
    pub shards: Vec<ShardAssessment>,
}

/// A window of whole metric minutes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MinuteWindow {
    /// First minute (inclusive).
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
}

/// How one open shard looked over the windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardAssessment {
    /// The shard.
    pub shard_id: String,
    /// Its hash key range.
    pub hash_key_range: HashRange,
    /// Peak `IncomingBytes` utilisation (% of 1 MiB/s) in the split window; `None` if unknown.
    pub bytes_peak: Option<f64>,
    /// Peak `IncomingRecords` utilisation (% of 1,000/s) in the split window.
    pub records_peak: Option<f64>,
    /// Minutes with throttled writes in the split window.
    pub throttled_minutes: u32,
    /// Minutes of the split window with enough data to judge.
    pub known_minutes: u32,
    /// The verdict.
    pub state: ShardHeat,
}

/// The planner's verdict on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ShardHeat {
    /// Hot for the whole split window.
    Hot,
    /// Known and not hot.
    Normal,
    /// Not enough data to say.
    Unknown,
}

/// One operation to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum PlannedOperation {
    /// `SplitShard`.
    #[serde(rename_all = "camelCase")]
    Split {
        /// The shard to split.
        shard_id: String,
        /// Its range.
        hash_key_range: HashRange,
        /// `NewStartingHashKey`: the first key of the upper child.
        #[serde(with = "decimal")]
        new_starting_hash_key: HashKey,
        /// How the key was chosen.
        split_point: SplitPointUsed,
        /// The expected share of the shard's traffic that goes to the lower child.
        lower_child_share: f64,
        /// Why.
        reason: Reason,
    },
    /// `MergeShards`.
    #[serde(rename_all = "camelCase")]
    Merge {
        /// The lower shard (`ShardToMerge`).
        shard_id: String,
        /// The upper shard (`AdjacentShardToMerge`).
        adjacent_shard_id: String,
        /// The merged range.
        hash_key_range: HashRange,
        /// Why.
        reason: Reason,
    },
}

impl PlannedOperation {
    /// The kind of operation.
    pub fn kind(&self) -> OperationKind {
        match self {
            PlannedOperation::Split { .. } => OperationKind::Split,
            PlannedOperation::Merge { .. } => OperationKind::Merge,
        }
    }

    /// The shards the operation closes.
    pub fn shard_ids(&self) -> Vec<&str> {
        match self {
            PlannedOperation::Split { shard_id, .. } => vec![shard_id],
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                ..
            } => vec![shard_id, adjacent_shard_id],
        }
    }
}

/// How a split key was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SplitPointUsed {
    /// The middle of the range.
    Midpoint,
    /// The point that halves observed traffic.
    TrafficWeighted,
    /// Traffic-weighted was asked for but no key distribution was known.
    MidpointNoDistribution,
}

/// Why an operation was wanted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Reason {
    /// The shard was hot for the whole split window.
    #[serde(rename_all = "camelCase")]
    Hot {
        /// Peak bytes utilisation (%).
        bytes_peak: Option<f64>,
        /// Peak records utilisation (%).
        records_peak: Option<f64>,
        /// Split threshold for bytes (%).
        bytes_threshold: f64,
        /// Split threshold for records (%).
        records_threshold: f64,
        /// Minutes with throttled writes.
        throttled_minutes: u32,
        /// Minutes judged.
        known_minutes: u32,
        /// Minutes in the window.
        window_minutes: u32,
    },
    /// The stream is below its minimum shard count.
    #[serde(rename_all = "camelCase")]
    BelowMinimum {
        /// The minimum in force.
        min_shards: u32,
        /// Where it comes from: `policy` or the budget's label.
        source: String,
        /// Open shards now.
        open_shards: usize,
    },
    /// The pair was cold together for the whole merge window.
    #[serde(rename_all = "camelCase")]
    Cold {
        /// Peak combined bytes utilisation of the pair (% of one shard).
        bytes_peak: f64,
        /// Peak combined records utilisation.
        records_peak: f64,
        /// Merge threshold for bytes.
        bytes_threshold: f64,
        /// Merge threshold for records.
        records_threshold: f64,
        /// Minutes in the window, all known.
        window_minutes: u32,
    },
    /// Every known minute of the pair was cold together, but not every minute was known.
    #[serde(rename_all = "camelCase")]
    ColdWhereKnown {
        /// Minutes in the window.
        window_minutes: u32,
    },
}

/// A candidate the planner would have acted on but a limit held back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldCandidate {
    /// Split or merge.
    pub action: OperationKind,
    /// The shard(s) concerned.
    pub shard_ids: Vec<String>,
    /// Why it was a candidate.
    pub wanted: Reason,
    /// What held it back.
    pub limit: Limit,
}

/// What held a candidate back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Limit {
    /// The stream is not `ACTIVE`.
    StreamNotActive {
        /// The status seen.
        status: StreamStatus,
    },
    /// An earlier operation is not known to have finished.
    #[serde(rename_all = "camelCase")]
    OperationInFlight {
        /// Its kind.
        kind: OperationKind,
        /// Its shards.
        shard_ids: Vec<String>,
        /// When it started.
        since: DateTime<Utc>,
    },
    /// `selectPolicy: Disabled`.
    Disabled {
        /// The direction.
        kind: OperationKind,
    },
    /// One key alone is hotter than a whole shard: no split can relieve it.
    #[serde(rename_all = "camelCase")]
    UnsplittableHotKey {
        /// The key's hash key.
        #[serde(with = "decimal")]
        hash_key: HashKey,
        /// The partition key, when known.
        partition_key: Option<String>,
        /// The key's own utilisation of a shard (%).
        utilization: f64,
    },
    /// The shard owns a single hash key.
    SingleKeyRange,
    /// A consumer group has not drained an ancestor.
    #[serde(rename_all = "camelCase")]
    DrainPending {
        /// The group.
        group: String,
        /// The undrained ancestor.
        shard_id: String,
        /// What the group's lease says.
        detail: String,
    },
    /// An active budget allows no more operations of this kind.
    Budget {
        /// The budget's label.
        budget: String,
        /// What it allows per cycle.
        allowed: u32,
        /// When its window ends.
        until: Option<DateTime<Utc>>,
    },
    /// Too soon after an operation of the other kind.
    Cooldown {
        /// When the cooldown ends.
        until: DateTime<Utc>,
        /// The operation that started it.
        after: OperationKind,
    },
    /// The stream is at its maximum.
    MaxShards {
        /// The maximum.
        max: u32,
    },
    /// The stream is at its minimum.
    MinShards {
        /// The minimum.
        min: u32,
        /// `policy` or the budget's label.
        source: String,
    },
    /// The rate policies allow no more operations now.
    #[serde(rename_all = "camelCase")]
    RateLimit {
        /// When one becomes available, if known.
        next_at: Option<DateTime<Utc>>,
        /// How the policies combine.
        select_policy: SelectPolicy,
    },
    /// `maxOperationsPerCycle` reached.
    MaxOperationsPerCycle {
        /// The limit.
        max: u32,
    },
    /// Not enough metric minutes are known to merge.
    #[serde(rename_all = "camelCase")]
    IncompleteData {
        /// Minutes known for both shards.
        known_minutes: u32,
        /// Minutes needed.
        window_minutes: u32,
    },
}

impl Limit {
    /// A fixed label for metrics (`shardctl_held_candidates{reason=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            Limit::StreamNotActive { .. } => "stream_not_active",
            Limit::OperationInFlight { .. } => "operation_in_flight",
            Limit::Disabled { .. } => "disabled",
            Limit::UnsplittableHotKey { .. } => "unsplittable_hot_key",
            Limit::SingleKeyRange => "single_key_range",
            Limit::DrainPending { .. } => "drain_pending",
            Limit::Budget { .. } => "budget",
            Limit::Cooldown { .. } => "cooldown",
            Limit::MaxShards { .. } => "max_shards",
            Limit::MinShards { .. } => "min_shards",
            Limit::RateLimit { .. } => "rate_limit",
            Limit::MaxOperationsPerCycle { .. } => "max_operations_per_cycle",
            Limit::IncompleteData { .. } => "incomplete_data",
        }
    }
}

fn hm(t: &DateTime<Utc>) -> String {
    t.format("%H:%M").to_string()
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::StreamNotActive { status } => {
                write!(f, "stream is {status}; waiting for ACTIVE")
            }
            Limit::OperationInFlight {
                kind,
                shard_ids,
                since,
            } => write!(
                f,
                "{kind} of {} in flight since {}",
                shard_ids.join("+"),
                since.format("%H:%M:%S")
            ),
            Limit::Disabled { kind } => write!(f, "{kind}s disabled (selectPolicy: Disabled)"),
            Limit::UnsplittableHotKey {
                hash_key,
                partition_key,
                utilization,
            } => {
                match partition_key {
                    Some(k) => write!(f, "hot key `{k}`")?,
                    None => write!(f, "hot hash key {hash_key}")?,
                }
                write!(
                    f,
                    " alone needs {utilization:.0}% of a shard; splitting cannot relieve it"
                )
            }
            Limit::SingleKeyRange => write!(f, "the shard owns a single hash key"),
            Limit::DrainPending {
                group,
                shard_id,
                detail,
            } => write!(
                f,
                "waiting for group {group} to drain {shard_id} ({detail})"
            ),
            Limit::Budget {
                budget,
                allowed,
                until,
            } => {
                write!(f, "budget {budget} allows {allowed} per cycle")?;
                match until {
                    Some(t) => write!(f, " until {}", hm(t)),
                    None => Ok(()),
                }
            }
            Limit::Cooldown { until, after } => {
                write!(f, "cooldown until {} (after the last {after})", hm(until))
            }
            Limit::MaxShards { max } => write!(f, "at maxShards ({max})"),
            Limit::MinShards { min, source } => write!(f, "at minShards ({min}, {source})"),
            Limit::RateLimit {
                next_at,
                select_policy,
            } => {
                write!(f, "rate limit reached (selectPolicy {select_policy:?})")?;
                match next_at {
                    Some(t) => write!(f, "; next at {}", hm(t)),
                    None => Ok(()),
                }
            }
            Limit::MaxOperationsPerCycle { max } => {
                write!(f, "maxOperationsPerCycle ({max}) reached; next cycle")
            }
            Limit::IncompleteData {
                known_minutes,
                window_minutes,
            } => write!(
                f,
                "only {known_minutes} of {window_minutes} minutes known for both shards; never merging on missing data"
            ),
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("unknown".to_string(), |v| format!("{v:.0}%"))
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Hot {
                bytes_peak,
                records_peak,
                bytes_threshold,
                records_threshold,
                throttled_minutes,
                known_minutes,
                window_minutes,
            } => {
                write!(
                    f,
                    "hot {known_minutes}/{window_minutes}m: bytes peak {} (split at {bytes_threshold:.0}%), records peak {} (split at {records_threshold:.0}%)",
                    pct(*bytes_peak),
                    pct(*records_peak)
                )?;
                if *throttled_minutes > 0 {
                    write!(f, ", throttled in {throttled_minutes}m")?;
                }
                Ok(())
            }
            Reason::BelowMinimum {
                min_shards,
                source,
                open_shards,
            } => write!(
                f,
                "{open_shards} open shards below minShards {min_shards} ({source})"
            ),
            Reason::Cold {
                bytes_peak,
                records_peak,
                bytes_threshold,
                records_threshold,
                window_minutes,
            } => write!(
                f,
                "cold together {window_minutes}m: bytes peak {bytes_peak:.0}% (merge at {bytes_threshold:.0}%), records peak {records_peak:.0}% (merge at {records_threshold:.0}%)"
            ),
            Reason::ColdWhereKnown { window_minutes } => {
                write!(f, "every known minute of {window_minutes}m cold together")
            }
        }
    }
}

impl fmt::Display for PlannedOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlannedOperation::Split {
                shard_id,
                new_starting_hash_key,
                lower_child_share,
                reason,
                ..
            } => write!(
                f,
                "split {shard_id} at {new_starting_hash_key} ({:.0}/{:.0}): {reason}",
                lower_child_share * 100.0,
                (1.0 - lower_child_share) * 100.0
            ),
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                reason,
                ..
            } => write!(f, "merge {shard_id} + {adjacent_shard_id}: {reason}"),
        }
    }
}

impl fmt::Display for HeldCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} held: {} (wanted: {})",
            self.action,
            self.shard_ids.join(" + "),
            self.limit,
            self.wanted
        )
    }
}

/// Per-minute utilisation of one shard, from its raw sums.
#[derive(Clone, Copy)]
struct Minute {
    bytes: Option<f64>,
    records: Option<f64>,
    throttled: Option<f64>,
}

const BYTES_PER_MINUTE: f64 = SHARD_BYTES_PER_SECOND * 60.0;
const RECORDS_PER_MINUTE: f64 = SHARD_RECORDS_PER_SECOND * 60.0;

/// A finite, non-negative datapoint; anything else (NaN, negative) is treated as unknown.
fn sane(v: Option<&Option<f64>>) -> Option<f64> {
    v.copied().flatten().filter(|x| x.is_finite() && *x >= 0.0)
}

fn minute(shard: &Shard, index: i64) -> Minute {
    if index < 0 {
        return Minute {
            bytes: None,
            records: None,
            throttled: None,
        };
    }
    let i = index as usize;
    let m = &shard.metrics;
    Minute {
        bytes: sane(m.incoming_bytes.get(i)).map(|b| b / BYTES_PER_MINUTE * 100.0),
        records: sane(m.incoming_records.get(i)).map(|r| r / RECORDS_PER_MINUTE * 100.0),
        throttled: sane(m.write_provisioned_throughput_exceeded.get(i)),
    }
}

struct Window {
    start: i64,
    end: i64,
}

impl Window {
    fn minutes(&self) -> u32 {
        u32::try_from(self.end.saturating_sub(self.start)).unwrap_or(u32::MAX)
    }

    /// The minutes of the window that series of `len` minutes can know: the others are unknown
    /// in every series, so skipping them changes nothing, and a window far from the data (an
    /// extreme `now`) costs nothing.
    fn with_data(&self, len: usize) -> std::ops::Range<i64> {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let start = self.start.clamp(0, len);
        start..self.end.clamp(start, len)
    }
}

/// The longest metric series of `shards`.
fn series_len<'a>(shards: impl IntoIterator<Item = &'a Shard>) -> usize {
    shards
        .into_iter()
        .map(|s| {
            let m = &s.metrics;
            m.incoming_bytes
                .len()
                .max(m.incoming_records.len())
                .max(m.write_provisioned_throughput_exceeded.len())
        })
        .max()
        .unwrap_or(0)
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn assess(shard: &Shard, policy: &StreamPolicy, w: &Window) -> ShardAssessment {
    let th = &policy.split.threshold;
    let (mut hot, mut cool, mut throttled_minutes) = (0u32, 0u32, 0u32);
    let (mut bytes_peak, mut records_peak) = (None, None);
    for i in w.with_data(series_len([shard])) {
        let m = minute(shard, i);
        bytes_peak = max_opt(bytes_peak, m.bytes);
        records_peak = max_opt(records_peak, m.records);
        let throttled = m.throttled.is_some_and(|t| t > 0.0);
        throttled_minutes += throttled as u32;
        let is_hot = m.bytes.is_some_and(|b| b >= th.incoming_bytes)
            || m.records.is_some_and(|r| r >= th.incoming_records)
            || (policy.split.throttling_is_hot && throttled);
        if is_hot {
            hot += 1;
        } else if m.bytes.is_some() && m.records.is_some() {
            cool += 1;
        }
    }
    let known = hot + cool;
    let state = if u64::from(known) * 2 < u64::from(w.minutes()) {
        ShardHeat::Unknown
    } else if cool == 0 {
        ShardHeat::Hot
    } else {
        ShardHeat::Normal
    };
    ShardAssessment {
        shard_id: shard.shard_id.clone(),
        hash_key_range: shard.hash_key_range,
        bytes_peak,
        records_peak,
        throttled_minutes,
        known_minutes: known,
        state,
    }
}

/// The combined peaks of a pair over the merge window, or how many minutes were fully known.
enum PairHeat {
    Cold { bytes_peak: f64, records_peak: f64 },
    NotCold,
    Incomplete { known: u32 },
}

fn pair_heat(a: &Shard, b: &Shard, policy: &StreamPolicy, w: &Window) -> PairHeat {
    let th = &policy.merge.threshold;
    let (mut bytes_peak, mut records_peak) = (0.0f64, 0.0f64);
    let mut known = 0;
    for i in w.with_data(series_len([a, b])) {
        let (ma, mb) = (minute(a, i), minute(b, i));
        if ma.throttled.is_some_and(|t| t > 0.0) || mb.throttled.is_some_and(|t| t > 0.0) {
            return PairHeat::NotCold;
        }
        // A known value already above the threshold decides, whatever else is missing.
        let bytes = ma.bytes.zip(mb.bytes).map(|(x, y)| x + y);
        let records = ma.records.zip(mb.records).map(|(x, y)| x + y);
        if ma.bytes.is_some_and(|x| x > th.incoming_bytes)
            || mb.bytes.is_some_and(|x| x > th.incoming_bytes)
            || ma.records.is_some_and(|x| x > th.incoming_records)
            || mb.records.is_some_and(|x| x > th.incoming_records)
        {
            return PairHeat::NotCold;
        }
        if let (Some(bytes), Some(records)) = (bytes, records) {
            known += 1;
            bytes_peak = bytes_peak.max(bytes);
            records_peak = records_peak.max(records);
            if bytes > th.incoming_bytes || records > th.incoming_records {
                return PairHeat::NotCold;
            }
        }
    }
    if known < w.minutes() {
        PairHeat::Incomplete { known }
    } else {
        PairHeat::Cold {
            bytes_peak,
            records_peak,
        }
    }
}

/// The split key for `shard` and the expected share of traffic below it.
fn split_key(
    shard: &Shard,
    point: SplitPoint,
    utilization: f64,
) -> Result<(HashKey, SplitPointUsed, f64), Limit> {
    let range = shard.hash_key_range;
    let Some(mid) = range.midpoint_split_key() else {
        return Err(Limit::SingleKeyRange);
    };
    let midpoint = (mid, SplitPointUsed::Midpoint, range.fraction_below(mid));
    let dist = match (point, &shard.key_distribution) {
        (SplitPoint::Midpoint, _) => return Ok(midpoint),
        (SplitPoint::TrafficWeighted, None) => {
            return Ok((mid, SplitPointUsed::MidpointNoDistribution, midpoint.2));
        }
        (SplitPoint::TrafficWeighted, Some(d)) => d,
    };
    // Segments of traffic inside the shard's range: buckets (spread evenly) and heavy keys (points).
    let mut segments: Vec<(HashKey, HashKey, f64, Option<&str>)> = Vec::new();
    for b in &dist.buckets {
        let (lo, hi) = (
            b.starting_hash_key.max(range.starting_hash_key),
            b.ending_hash_key.min(range.ending_hash_key),
        );
        if lo > hi
            || !(b.weight.is_finite() && b.weight > 0.0)
            || b.starting_hash_key > b.ending_hash_key
        {
            continue;
        }
        let bucket = HashRange::new(b.starting_hash_key, b.ending_hash_key).unwrap_or(range);
        let share = bucket.fraction_below(hi) - bucket.fraction_below(lo)
            + 1.0 / (bucket.width_minus_one() as f64 + 1.0);
        segments.push((lo, hi, b.weight * share.clamp(0.0, 1.0), None));
    }
    for k in &dist.heavy_keys {
        if range.contains(k.hash_key) && k.weight.is_finite() && k.weight > 0.0 {
            segments.push((k.hash_key, k.hash_key, k.weight, k.partition_key.as_deref()));
        }
    }
    let total: f64 = segments.iter().map(|s| s.2).sum();
    // Weights so large that they add up to infinity say nothing about where the traffic is.
    if !(total.is_finite() && total > 0.0) {
        return Ok((mid, SplitPointUsed::MidpointNoDistribution, midpoint.2));
    }
    // A single key hotter than a whole shard cannot be relieved by any split.
    if let Some(&(key, _, w, name)) = segments
        .iter()
        .filter(|s| s.0 == s.1)
        .max_by(|a, b| a.2.total_cmp(&b.2))
    {
        let key_util = w / total * utilization;
        if key_util >= 100.0 {
            return Err(Limit::UnsplittableHotKey {
                hash_key: key,
                partition_key: name.map(str::to_string),
                utilization: key_util,
            });
        }
    }
    // Traffic strictly below `key`: monotone in `key`, so the halving key is found by bisection.
    let below = |key: HashKey| -> f64 {
        segments
            .iter()
            .map(|&(lo, hi, w, _)| {
                if hi < key {
                    w
                } else if lo >= key {
                    0.0
                } else {
                    HashRange::new(lo, hi).map_or(0.0, |seg| w * seg.fraction_below(key))
                }
            })
            .sum()
    };
    let half = total / 2.0;
    let (mut lo, mut hi) = (range.starting_hash_key + 1, range.ending_hash_key);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) >= half {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // `lo` is the first key with at least half below it; one key lower may balance better
    // (a heavy key sits on one side or the other, never in between).
    let mut key = lo;
    if key - 1 > range.starting_hash_key
        && (below(key - 1) - half).abs() < (below(key) - half).abs()
    {
        key -= 1;
    }
    let lower = below(key) / total;
    Ok((key, SplitPointUsed::TrafficWeighted, lower))
}

/// Counters shared by the gates while candidates are accepted in priority order.
struct Gates<'a> {
    policy: &'a StreamPolicy,
    obs: &'a Observation,
    map: &'a ShardMap<'a>,
    blanket: Option<Limit>,
    budgets: budget::ActiveBudgets,
    min_shards: u32,
    min_source: String,
    split_rate: rate::Allowance,
    merge_rate: rate::Allowance,
    split_cooldown: Option<DateTime<Utc>>,
    merge_cooldown: Option<DateTime<Utc>>,
    splits: u32,
    merges: u32,
    /// The stream's lineage, when a consumer group gates resharding.
    lineage: Option<Lineage>,
}

impl Gates<'_> {
    fn ops(&self) -> u32 {
        self.splits + self.merges
    }

    fn open_after(&self) -> i64 {
        self.map.open_count() as i64 + self.splits as i64 - self.merges as i64
    }

    /// The drain gate: every listed ancestor of `shard_id` must be drained for every consumer
    /// group, by the one rule of [`shardctl_lease::DrainView`].
    fn drain(&self, shard_id: &str) -> Result<(), Limit> {
        let Some(lineage) = &self.lineage else {
            return Ok(());
        };
        for group in &self.policy.consumer_groups {
            let state = self
                .obs
                .consumer_groups
                .iter()
                .find(|g| g.name == group.name);
            let hold = match state {
                Some(s) if s.error.is_none() => DrainView::new(lineage, &s.rows())
                    .first_undrained_ancestor(shard_id)
                    .map(|(ancestor, state)| (ancestor, state.to_string())),
                other => {
                    let detail = match other.and_then(|s| s.error.as_deref()) {
                        Some(e) => format!("lease table unreadable: {e}"),
                        None => "no drain state observed".to_string(),
                    };
                    lineage
                        .ancestors(shard_id)
                        .first()
                        .map(|a| ((*a).to_string(), detail))
                }
            };
            if let Some((ancestor, detail)) = hold {
                return Err(Limit::DrainPending {
                    group: group.name.clone(),
                    shard_id: ancestor,
                    detail,
                });
            }
        }
        Ok(())
    }

    fn common(&self, kind: OperationKind) -> Result<(), Limit> {
        if let Some(l) = &self.blanket {
            return Err(l.clone());
        }
        let select = match kind {
            OperationKind::Split => self.policy.split.select_policy,
            OperationKind::Merge => self.policy.merge.select_policy,
        };
        if select == SelectPolicy::Disabled {
            return Err(Limit::Disabled { kind });
        }
        Ok(())
    }

    fn budget_limit(limit: &Option<BudgetLimit>, used: u32) -> Result<(), Limit> {
        match limit {
            Some(l) if used >= l.value => Err(Limit::Budget {
                budget: l.budget.clone(),
                allowed: l.value,
                until: l.until,
            }),
            _ => Ok(()),
        }
    }

    fn rest(&self, kind: OperationKind) -> Result<(), Limit> {
        let (budget, used, cooldown, allowance, select) = match kind {
            OperationKind::Split => (
                &self.budgets.splits,
                self.splits,
                self.split_cooldown,
                self.split_rate,
                self.policy.split.select_policy,
            ),
            OperationKind::Merge => (
                &self.budgets.merges,
                self.merges,
                self.merge_cooldown,
                self.merge_rate,
                self.policy.merge.select_policy,
            ),
        };
        Self::budget_limit(budget, used)?;
        if let Some(until) = cooldown {
            return Err(Limit::Cooldown {
                until,
                after: match kind {
                    OperationKind::Split => OperationKind::Merge,
                    OperationKind::Merge => OperationKind::Split,
                },
            });
        }
        match kind {
            OperationKind::Split if self.open_after() >= self.policy.max_shards as i64 => {
                return Err(Limit::MaxShards {
                    max: self.policy.max_shards,
                });
            }
            OperationKind::Merge if self.open_after() <= self.min_shards as i64 => {
                return Err(Limit::MinShards {
                    min: self.min_shards,
                    source: self.min_source.clone(),
                });
            }
            _ => {}
        }
        if used >= allowance.remaining {
            return Err(Limit::RateLimit {
                next_at: allowance.next_at,
                select_policy: select,
            });
        }
        if self.ops() >= self.policy.max_operations_per_cycle {
            return Err(Limit::MaxOperationsPerCycle {
                max: self.policy.max_operations_per_cycle,
            });
        }
        Ok(())
    }
}

fn window_ending(end: i64, length: usize) -> Window {
    Window {
        start: end.saturating_sub(i64::try_from(length).unwrap_or(i64::MAX)),
        end,
    }
}

fn minute_window(obs: &Observation, w: &Window) -> MinuteWindow {
    MinuteWindow {
        start: add_minutes_saturating(obs.metrics_start, w.start),
        end: add_minutes_saturating(obs.metrics_start, w.end),
    }
}

/// Why a planned operation cannot be applied to a list of shards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The shard is not listed.
    #[error("shard {0} does not exist")]
    UnknownShard(String),
    /// The shard is closed.
    #[error("shard {0} is closed")]
    ClosedShard(String),
    /// The split key is outside the shard.
    #[error("split key {key} is not strictly inside shard {shard}")]
    BadSplitKey {
        /// The shard.
        shard: String,
        /// The key.
        key: HashKey,
    },
    /// The two shards are not adjacent.
    #[error("shards {0} and {1} are not adjacent")]
    NotAdjacent(String, String),
}

/// Applies `ops` to `shards` the way Kinesis would: a split closes its shard and opens two
/// children, a merge closes both shards and opens one child. New shards are named after the
/// highest existing shard number, as Kinesis does.
pub fn apply(shards: &[Shard], ops: &[PlannedOperation]) -> Result<Vec<Shard>, ApplyError> {
    let mut out = shards.to_vec();
    let mut next = out
        .iter()
        .filter_map(|s| s.shard_id.rsplit('-').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |n| n.saturating_add(1));
    let find_open = |out: &[Shard], id: &str| -> Result<usize, ApplyError> {
        let i = out
            .iter()
            .position(|s| s.shard_id == id)
            .ok_or_else(|| ApplyError::UnknownShard(id.to_string()))?;
        if out[i].is_open() {
            Ok(i)
        } else {
            Err(ApplyError::ClosedShard(id.to_string()))
        }
    };
    for op in ops {
        match op {
            PlannedOperation::Split {
                shard_id,
                new_starting_hash_key,
                ..
            } => {
                let i = find_open(&out, shard_id)?;
                let (lo, hi) = out[i]
                    .hash_key_range
                    .split_at(*new_starting_hash_key)
                    .ok_or_else(|| ApplyError::BadSplitKey {
                        shard: shard_id.clone(),
                        key: *new_starting_hash_key,
                    })?;
                out[i].state = crate::shard_map::ShardState::Closed;
                for range in [lo, hi] {
                    let mut child = Shard::open(crate::shard_map::shard_id(next), range);
                    child.parent_shard_id = Some(shard_id.clone());
                    out.push(child);
                    next = next.saturating_add(1);
                }
            }
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                ..
            } => {
                let (a, b) = (
                    find_open(&out, shard_id)?,
                    find_open(&out, adjacent_shard_id)?,
                );
                let (ra, rb) = (out[a].hash_key_range, out[b].hash_key_range);
                let merged = ra
                    .merge_with(&rb)
                    .or_else(|| rb.merge_with(&ra))
                    .ok_or_else(|| {
                        ApplyError::NotAdjacent(shard_id.clone(), adjacent_shard_id.clone())
                    })?;
                out[a].state = crate::shard_map::ShardState::Closed;
                out[b].state = crate::shard_map::ShardState::Closed;
                let mut child = Shard::open(crate::shard_map::shard_id(next), merged);
                child.parent_shard_id = Some(shard_id.clone());
                child.adjacent_parent_shard_id = Some(adjacent_shard_id.clone());
                out.push(child);
                next = next.saturating_add(1);
            }
        }
    }
    Ok(out)
}

/// Plans the next operations for one stream.
///
/// Pure: the result depends only on the arguments. A broken shard map is an error, never a plan.
pub fn plan(
    policy: &StreamPolicy,
    obs: &Observation,
    history: &History,
    now: DateTime<Utc>,
) -> Result<Decision, PlanError> {
    if policy.name != obs.stream_name {
        return Err(PlanError::WrongStream {
            policy: policy.name.clone(),
            observed: obs.stream_name.clone(),
        });
    }
    let map = ShardMap::new(&obs.shards).map_err(|source| PlanError::BrokenShardMap {
        stream: obs.stream_name.clone(),
        source,
    })?;

    // The last complete minute is the one ending at or before `now - metricsDelay`.
    let evaluable_until = policy.metrics_delay.before(now);
    let end = (evaluable_until - obs.metrics_start).num_minutes();
    let split_w = window_ending(end, policy.split.stabilization_window.whole_minutes_ceil());
    let merge_w = window_ending(end, policy.merge.stabilization_window.whole_minutes_ceil());

    // One pass in key order: each shard is assessed, and paired with its lower neighbour while
    // both are still in cache.
    let shards: Vec<&Shard> = map.open_shards().collect();
    let mut assessments = Vec::with_capacity(shards.len());
    let mut pair_heats = Vec::with_capacity(shards.len());
    for (i, s) in shards.iter().enumerate() {
        assessments.push(assess(s, policy, &split_w));
        if i > 0 {
            pair_heats.push(pair_heat(shards[i - 1], s, policy, &merge_w));
        }
    }

    let active = budget::evaluate(&policy.budgets, now);
    let (min_shards, min_source) = match &active.min_shards {
        Some(l) if l.value > policy.min_shards => (
            l.value.min(policy.max_shards),
            format!("budget {}", l.budget),
        ),
        _ => (policy.min_shards, "policy".to_string()),
    };
    let blanket = if obs.stream_status != StreamStatus::Active {
        Some(Limit::StreamNotActive {
            status: obs.stream_status,
        })
    } else {
        history.in_flight().map(|op| Limit::OperationInFlight {
            kind: op.kind,
            shard_ids: op.shard_ids.clone(),
            since: op.started_at,
        })
    };
    let cooldown = |last: Option<DateTime<Utc>>, d: crate::HumanDuration| {
        last.map(|t| d.after(t)).filter(|until| *until > now)
    };
    let open = map.open_count();
    let mut gates = Gates {
        policy,
        obs,
        map: &map,
        blanket,
        budgets: active,
        min_shards,
        min_source,
        split_rate: rate::allowance(
            policy.split.select_policy,
            &policy.split.policies,
            OperationKind::Split,
            history,
            open,
            now,
        ),
        merge_rate: rate::allowance(
            policy.merge.select_policy,
            &policy.merge.policies,
            OperationKind::Merge,
            history,
            open,
            now,
        ),
        split_cooldown: cooldown(history.last(OperationKind::Merge), policy.split.cooldown),
        merge_cooldown: cooldown(history.last(OperationKind::Split), policy.merge.cooldown),
        splits: 0,
        merges: 0,
        lineage: (!policy.consumer_groups.is_empty()).then(|| {
            Lineage::new(
                obs.shards
                    .iter()
                    .map(|s| (s.shard_id.as_str(), s.parents())),
            )
        }),
    };

    let mut operations = Vec::new();
    let mut held = Vec::new();
    let mut splitting = std::collections::HashSet::new();

    // 1. Hot shards, hottest first.
    let mut hot: Vec<usize> = (0..shards.len())
        .filter(|&i| assessments[i].state == ShardHeat::Hot)
        .collect();
    let heat = |a: &ShardAssessment| {
        let th = &policy.split.threshold;
        let b = a.bytes_peak.unwrap_or(0.0) / th.incoming_bytes;
        let r = a.records_peak.unwrap_or(0.0) / th.incoming_records;
        b.max(r)
    };
    hot.sort_by(|&a, &b| {
        heat(&assessments[b])
            .total_cmp(&heat(&assessments[a]))
            .then_with(|| shards[a].shard_id.cmp(&shards[b].shard_id))
    });
    for i in hot {
        let (shard, a) = (shards[i], &assessments[i]);
        let reason = Reason::Hot {
            bytes_peak: a.bytes_peak,
            records_peak: a.records_peak,
            bytes_threshold: policy.split.threshold.incoming_bytes,
            records_threshold: policy.split.threshold.incoming_records,
            throttled_minutes: a.throttled_minutes,
            known_minutes: a.known_minutes,
            window_minutes: split_w.minutes(),
        };
        // The shard's own utilisation, for judging single keys: the higher of the two metrics;
        // throttling means it needed more than 100 %.
        let utilization = max_opt(a.bytes_peak, a.records_peak).unwrap_or(0.0);
        try_split(
            &mut gates,
            shard,
            reason,
            utilization,
            &mut operations,
            &mut held,
            &mut splitting,
        );
    }

    // 2. Scheduled or policy minimum: split the hottest remaining shards until it is reached.
    let shortfall = gates.min_shards as i64 - gates.open_after();
    if shortfall > 0 {
        let mut rest: Vec<usize> = (0..shards.len())
            .filter(|&i| {
                !splitting.contains(shards[i].shard_id.as_str())
                    && shards[i].hash_key_range.is_splittable()
            })
            .filter(|&i| assessments[i].state != ShardHeat::Hot)
            .collect();
        rest.sort_by(|&a, &b| {
            let ua = max_opt(assessments[a].bytes_peak, assessments[a].records_peak);
            let ub = max_opt(assessments[b].bytes_peak, assessments[b].records_peak);
            ub.unwrap_or(-1.0)
                .total_cmp(&ua.unwrap_or(-1.0))
                .then_with(|| {
                    shards[b]
                        .hash_key_range
                        .width_minus_one()
                        .cmp(&shards[a].hash_key_range.width_minus_one())
                })
                .then_with(|| shards[a].shard_id.cmp(&shards[b].shard_id))
        });
        for &i in rest.iter().take(shortfall as usize) {
            let reason = Reason::BelowMinimum {
                min_shards: gates.min_shards,
                source: gates.min_source.clone(),
                open_shards: open,
            };
            let a = &assessments[i];
            let utilization = max_opt(a.bytes_peak, a.records_peak).unwrap_or(0.0);
            let before = gates.splits;
            try_split(
                &mut gates,
                shards[i],
                reason,
                utilization,
                &mut operations,
                &mut held,
                &mut splitting,
            );
            if gates.splits == before && gates.open_after() >= gates.min_shards as i64 {
                break;
            }
        }
    }

    // 3. Cold adjacent pairs, coldest first, no shard in two merges.
    let mut pairs = Vec::new();
    for (w, heat) in pair_heats.into_iter().enumerate() {
        let (a, b) = (shards[w], shards[w + 1]);
        if splitting.contains(a.shard_id.as_str()) || splitting.contains(b.shard_id.as_str()) {
            continue;
        }
        match heat {
            PairHeat::Cold {
                bytes_peak,
                records_peak,
            } => pairs.push((w, bytes_peak, records_peak)),
            PairHeat::Incomplete { known } => held.push(HeldCandidate {
                action: OperationKind::Merge,
                shard_ids: vec![a.shard_id.clone(), b.shard_id.clone()],
                wanted: Reason::ColdWhereKnown {
                    window_minutes: merge_w.minutes(),
                },
                limit: Limit::IncompleteData {
                    known_minutes: known,
                    window_minutes: merge_w.minutes(),
                },
            }),
            PairHeat::NotCold => {}
        }
    }
    let mth = &policy.merge.threshold;
    let coldness =
        |(_, b, r): &(usize, f64, f64)| (b / mth.incoming_bytes).max(r / mth.incoming_records);
    pairs.sort_by(|x, y| coldness(x).total_cmp(&coldness(y)).then(x.0.cmp(&y.0)));
    let mut used = vec![false; shards.len()];
    for (w, bytes_peak, records_peak) in pairs {
        if used[w] || used[w + 1] {
            continue;
        }
        let (a, b) = (shards[w], shards[w + 1]);
        let reason = Reason::Cold {
            bytes_peak,
            records_peak,
            bytes_threshold: mth.incoming_bytes,
            records_threshold: mth.incoming_records,
            window_minutes: merge_w.minutes(),
        };
        let verdict = gates
            .common(OperationKind::Merge)
            .and_then(|_| gates.drain(&a.shard_id))
            .and_then(|_| gates.drain(&b.shard_id))
            .and_then(|_| gates.rest(OperationKind::Merge));
        match verdict {
            Ok(()) => {
                used[w] = true;
                used[w + 1] = true;
                gates.merges += 1;
                let range = a
                    .hash_key_range
                    .merge_with(&b.hash_key_range)
                    .unwrap_or(a.hash_key_range);
                operations.push(PlannedOperation::Merge {
                    shard_id: a.shard_id.clone(),
                    adjacent_shard_id: b.shard_id.clone(),
                    hash_key_range: range,
                    reason,
                });
            }
            Err(limit) => held.push(HeldCandidate {
                action: OperationKind::Merge,
                shard_ids: vec![a.shard_id.clone(), b.shard_id.clone()],
                wanted: reason,
                limit,
            }),
        }
    }

    Ok(Decision {
        stream_name: obs.stream_name.clone(),
        evaluated_at: now,
        stream_status: obs.stream_status,
        open_shards: open,
        min_shards: gates.min_shards,
        max_shards: policy.max_shards,
        split_window: minute_window(obs, &split_w),
        merge_window: minute_window(obs, &merge_w),
        operations,
        held,
        shards: assessments,
    })
}

fn try_split<'s>(
    gates: &mut Gates<'_>,
    shard: &'s Shard,
    reason: Reason,
    utilization: f64,
    operations: &mut Vec<PlannedOperation>,
    held: &mut Vec<HeldCandidate>,
    splitting: &mut std::collections::HashSet<&'s str>,
) {
    let verdict = gates
        .common(OperationKind::Split)
        .and_then(|_| split_key(shard, gates.policy.split.split_point, utilization))
        .and_then(|k| gates.drain(&shard.shard_id).map(|_| k))
        .and_then(|k| gates.rest(OperationKind::Split).map(|_| k));
    match verdict {
        Ok((key, used, lower)) => {
            gates.splits += 1;
            splitting.insert(&shard.shard_id);
            operations.push(PlannedOperation::Split {
                shard_id: shard.shard_id.clone(),
                hash_key_range: shard.hash_key_range,
                new_starting_hash_key: key,
                split_point: used,
                lower_child_share: lower,
                reason,
            });
        }
        Err(limit) => held.push(HeldCandidate {
            action: OperationKind::Split,
            shard_ids: vec![shard.shard_id.clone()],
            wanted: reason,
            limit,
        }),
    }
}
