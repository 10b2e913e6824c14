//! What did the planner decide? The [`Decision`] for one stream at one instant, and the values
//! it is made of: planned operations, held candidates with the reason they were wanted, and the
//! assessment of every open shard.
//!
//! These types are data only; how they read to an operator is in `display.rs`, what held a
//! candidate back is [`Limit`].

use super::limits::Limit;
use crate::hash::{HashKey, HashRange, decimal};
use crate::history::OperationKind;
use crate::observation::StreamStatus;
use chrono::{DateTime, Utc};
use serde::Serialize;

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

impl Decision {
    /// The shards whose planned split uses the midpoint only because no key distribution was
    /// known ([`SplitPointUsed::MidpointNoDistribution`]), in plan order.
    ///
    /// This is the planner's half of the two-phase protocol for `splitPoint: trafficWeighted`.
    /// `plan()` does no I/O, so it cannot sample records itself; instead it names the shards it
    /// would split better with a sample. The shell then:
    ///
    /// 1. samples these shards' records (it may sample fewer, at its own cost limit),
    /// 2. fills [`Shard::key_distribution`](crate::shard_map::Shard::key_distribution) of each
    ///    sampled shard in the observation,
    /// 3. plans again on the filled observation, with the same history and `now`.
    ///
    /// The second plan is final: act on it, and do not sample again for it, even if it still
    /// names shards here (a sample may have been empty or failed, and the midpoint then stands).
    /// An empty list means there is nothing to sample and the first plan is final.
    pub fn wants_key_samples(&self) -> Vec<&str> {
        self.operations
            .iter()
            .filter_map(|op| match op {
                PlannedOperation::Split {
                    shard_id,
                    split_point: SplitPointUsed::MidpointNoDistribution,
                    ..
                } => Some(shard_id.as_str()),
                _ => None,
            })
            .collect()
    }
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
    /// Traffic-weighted was asked for but no key distribution was known: see
    /// [`Decision::wants_key_samples`].
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

#[cfg(test)]
mod tests {
    use super::*;

    fn split(id: &str, split_point: SplitPointUsed) -> PlannedOperation {
        PlannedOperation::Split {
            shard_id: id.to_string(),
            hash_key_range: HashRange::FULL,
            new_starting_hash_key: 1,
            split_point,
            lower_child_share: 0.5,
            reason: Reason::ColdWhereKnown { window_minutes: 0 },
        }
    }

    fn decision(operations: Vec<PlannedOperation>) -> Decision {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        Decision {
            stream_name: "orders".to_string(),
            evaluated_at: t,
            stream_status: StreamStatus::Active,
            open_shards: 4,
            min_shards: 1,
            max_shards: 8,
            split_window: MinuteWindow { start: t, end: t },
            merge_window: MinuteWindow { start: t, end: t },
            operations,
            held: Vec::new(),
            shards: Vec::new(),
        }
    }

    #[test]
    fn wants_key_samples_names_midpoint_splits_without_a_distribution_in_plan_order() {
        let d = decision(vec![
            split("c", SplitPointUsed::MidpointNoDistribution),
            split("a", SplitPointUsed::Midpoint),
            PlannedOperation::Merge {
                shard_id: "d".to_string(),
                adjacent_shard_id: "e".to_string(),
                hash_key_range: HashRange::FULL,
                reason: Reason::ColdWhereKnown { window_minutes: 0 },
            },
            split("b", SplitPointUsed::TrafficWeighted),
            split("f", SplitPointUsed::MidpointNoDistribution),
        ]);
        assert_eq!(d.wants_key_samples(), vec!["c", "f"]);
        assert!(decision(Vec::new()).wants_key_samples().is_empty());
    }
}
