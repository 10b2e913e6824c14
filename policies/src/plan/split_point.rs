//! Where is a shard split? The midpoint of its range, or the key that halves its observed
//! traffic when the policy asks for it and a key distribution is known; and the check that no
//! single key is too hot for any split to relieve.

use super::decision::SplitPointUsed;
use super::limits::Limit;
use crate::hash::{HashKey, HashRange};
use crate::policy::SplitPoint;
use crate::shard_map::Shard;

/// The split key for `shard` and the expected share of traffic below it.
pub(super) fn split_key(
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
