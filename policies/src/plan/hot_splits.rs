//! Which hot shards should be split? Every shard hot for the whole split window is a
//! candidate, hottest first (relative to the split thresholds), ties broken by shard id.

use super::assess::peak_utilization;
use super::context::Context;
use super::decision::{Reason, ShardAssessment, ShardHeat};

/// Proposes a split of every hot shard, hottest first, each passed through the gates.
pub(super) fn hot_splits(cx: &mut Context<'_>) {
    let th = &cx.policy.split.threshold;
    let assessments = &cx.decision.shards;
    let mut hot: Vec<usize> = (0..cx.shards.len())
        .filter(|&i| assessments[i].state == ShardHeat::Hot)
        .collect();
    let heat = |a: &ShardAssessment| {
        let b = a.bytes_peak.unwrap_or(0.0) / th.incoming_bytes;
        let r = a.records_peak.unwrap_or(0.0) / th.incoming_records;
        b.max(r)
    };
    hot.sort_by(|&a, &b| {
        heat(&assessments[b])
            .total_cmp(&heat(&assessments[a]))
            .then_with(|| cx.shards[a].shard_id.cmp(&cx.shards[b].shard_id))
    });
    for i in hot {
        let (shard, a) = (cx.shards[i], &cx.decision.shards[i]);
        let reason = Reason::Hot {
            bytes_peak: a.bytes_peak,
            records_peak: a.records_peak,
            bytes_threshold: cx.policy.split.threshold.incoming_bytes,
            records_threshold: cx.policy.split.threshold.incoming_records,
            throttled_minutes: a.throttled_minutes,
            known_minutes: a.known_minutes,
            window_minutes: cx.split_window.minutes(),
        };
        // The shard's own utilisation, for judging single keys: the higher of the two metrics;
        // throttling means it needed more than 100 %.
        let utilization = peak_utilization(a).unwrap_or(0.0);
        cx.try_split(shard, reason, utilization);
    }
}
