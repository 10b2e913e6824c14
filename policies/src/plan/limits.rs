//! What held a candidate back? [`Limit`], its fixed metric label, and [`Limit::LABELS`], the one
//! list of every label (for metrics that must report zero for limits that held nothing).

use crate::hash::{HashKey, decimal};
use crate::history::OperationKind;
use crate::observation::StreamStatus;
use crate::policy::SelectPolicy;
use chrono::{DateTime, Utc};
use serde::Serialize;

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
    /// Every value [`Limit::label`] can return, once each, in the order the variants are
    /// declared. Metrics iterate it to report a zero for every limit that held nothing.
    pub const LABELS: [&'static str; 13] = [
        "stream_not_active",
        "operation_in_flight",
        "disabled",
        "unsplittable_hot_key",
        "single_key_range",
        "drain_pending",
        "budget",
        "cooldown",
        "max_shards",
        "min_shards",
        "rate_limit",
        "max_operations_per_cycle",
        "incomplete_data",
    ];

    /// A fixed label for metrics (`shardctl_held_candidates{reason=...}`); always one of
    /// [`Limit::LABELS`].
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// One value of every variant, in declaration order.
    fn one_of_each() -> Vec<Limit> {
        let t = DateTime::<Utc>::UNIX_EPOCH;
        vec![
            Limit::StreamNotActive {
                status: StreamStatus::Updating,
            },
            Limit::OperationInFlight {
                kind: OperationKind::Split,
                shard_ids: vec!["a".to_string()],
                since: t,
            },
            Limit::Disabled {
                kind: OperationKind::Merge,
            },
            Limit::UnsplittableHotKey {
                hash_key: 7,
                partition_key: None,
                utilization: 120.0,
            },
            Limit::SingleKeyRange,
            Limit::DrainPending {
                group: "billing".to_string(),
                shard_id: "p".to_string(),
                detail: "checkpoint behind".to_string(),
            },
            Limit::Budget {
                budget: "business-hours".to_string(),
                allowed: 0,
                until: None,
            },
            Limit::Cooldown {
                until: t,
                after: OperationKind::Split,
            },
            Limit::MaxShards { max: 8 },
            Limit::MinShards {
                min: 1,
                source: "policy".to_string(),
            },
            Limit::RateLimit {
                next_at: None,
                select_policy: SelectPolicy::Max,
            },
            Limit::MaxOperationsPerCycle { max: 1 },
            Limit::IncompleteData {
                known_minutes: 3,
                window_minutes: 5,
            },
        ]
    }

    /// The variant's position in declaration order. Exhaustive on purpose: a new variant does
    /// not compile until it has an arm here, a value in [`one_of_each`] and a label in
    /// [`Limit::LABELS`].
    fn position(limit: &Limit) -> usize {
        match limit {
            Limit::StreamNotActive { .. } => 0,
            Limit::OperationInFlight { .. } => 1,
            Limit::Disabled { .. } => 2,
            Limit::UnsplittableHotKey { .. } => 3,
            Limit::SingleKeyRange => 4,
            Limit::DrainPending { .. } => 5,
            Limit::Budget { .. } => 6,
            Limit::Cooldown { .. } => 7,
            Limit::MaxShards { .. } => 8,
            Limit::MinShards { .. } => 9,
            Limit::RateLimit { .. } => 10,
            Limit::MaxOperationsPerCycle { .. } => 11,
            Limit::IncompleteData { .. } => 12,
        }
    }

    #[test]
    fn labels_lists_every_variant_label_once_in_declaration_order() {
        let all = one_of_each();
        let positions: Vec<usize> = all.iter().map(position).collect();
        let expected: Vec<usize> = (0..Limit::LABELS.len()).collect();
        assert_eq!(positions, expected, "one value of each variant, in order");
        for limit in &all {
            assert!(
                Limit::LABELS.contains(&limit.label()),
                "{} is missing from Limit::LABELS",
                limit.label()
            );
        }
        let labels: Vec<&str> = all.iter().map(Limit::label).collect();
        assert_eq!(labels, Limit::LABELS);
        let unique: HashSet<&str> = Limit::LABELS.into_iter().collect();
        assert_eq!(unique.len(), Limit::LABELS.len(), "duplicate label");
    }
}
