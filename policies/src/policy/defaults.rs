//! Every default value of the policy file, in one place.

use super::*;

/// How often the controller evaluates each stream.
pub const EVALUATION_INTERVAL: HumanDuration = HumanDuration::secs(60);
/// How far behind real time shard-level metrics are assumed complete.
pub const METRICS_DELAY: HumanDuration = HumanDuration::mins(3);
/// The fewest open shards.
pub const MIN_SHARDS: u32 = 1;
/// The most open shards.
pub const MAX_SHARDS: u32 = 200;
/// Operations started per evaluation, per stream.
pub const MAX_OPERATIONS_PER_CYCLE: u32 = 2;
/// Split when a shard sustains this share (%) of its write limit.
pub const SPLIT_UTILIZATION: f64 = 80.0;
/// How long a shard must stay hot before it is split.
pub const SPLIT_WINDOW: HumanDuration = HumanDuration::mins(5);
/// Time after the last merge before a split may start.
pub const SPLIT_COOLDOWN: HumanDuration = HumanDuration::secs(0);
/// Merge when two adjacent shards together stay below this share (%) of one shard's limit.
pub const MERGE_UTILIZATION: f64 = 40.0;
/// How long a pair must stay cold before it is merged.
pub const MERGE_WINDOW: HumanDuration = HumanDuration::mins(30);
/// Time after the last split before a merge may start.
pub const MERGE_COOLDOWN: HumanDuration = HumanDuration::mins(30);

/// Splits: 4 shards or 50 % per 5 minutes, whichever allows more.
pub fn split_rate() -> Vec<RatePolicy> {
    vec![
        RatePolicy {
            kind: RatePolicyKind::Shards,
            value: 4,
            period: HumanDuration::mins(5),
        },
        RatePolicy {
            kind: RatePolicyKind::Percent,
            value: 50,
            period: HumanDuration::mins(5),
        },
    ]
}

/// Merges: 2 per 15 minutes.
pub fn merge_rate() -> Vec<RatePolicy> {
    vec![RatePolicy {
        kind: RatePolicyKind::Shards,
        value: 2,
        period: HumanDuration::mins(15),
    }]
}
