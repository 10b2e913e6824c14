//! Is the stream below its minimum? The policy's `minShards`, or a higher one from an active
//! budget (pre-scaling ahead of a known peak), is reached by splitting the busiest remaining
//! shards that no hot split already took.

use super::assess::peak_utilization;
use super::context::Context;
use super::decision::{Reason, ShardHeat};

/// Proposes splits until the minimum in force is reached: the busiest shards first, then the
/// widest, then by shard id; stops early once a split is held and the minimum is met anyway.
pub(super) fn scheduled_minimum_splits(cx: &mut Context<'_>) {
    let shortfall = cx.gates.min_shards as i64 - cx.gates.open_after();
    if shortfall <= 0 {
        return;
    }
    let (shards, assessments) = (&cx.shards, &cx.decision.shards);
    let mut rest: Vec<usize> = (0..shards.len())
        .filter(|&i| {
            !cx.splitting.contains(shards[i].shard_id.as_str())
                && shards[i].hash_key_range.is_splittable()
        })
        .filter(|&i| assessments[i].state != ShardHeat::Hot)
        .collect();
    rest.sort_by(|&a, &b| {
        let ua = peak_utilization(&assessments[a]);
        let ub = peak_utilization(&assessments[b]);
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
            min_shards: cx.gates.min_shards,
            source: cx.gates.min_source.clone(),
            open_shards: cx.decision.open_shards,
        };
        let utilization = peak_utilization(&cx.decision.shards[i]).unwrap_or(0.0);
        let before = cx.gates.splits;
        cx.try_split(cx.shards[i], reason, utilization);
        if cx.gates.splits == before && cx.gates.open_after() >= cx.gates.min_shards as i64 {
            break;
        }
    }
}
