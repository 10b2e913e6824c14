//! The planner: `plan(policy, observation, history, now) -> Decision`.
//!
//! Pure and deterministic. It assesses every open shard over the policy's windows, proposes
//! splits for hot shards (and for scheduled minimums) and merges for cold adjacent pairs, then
//! passes each candidate through the gates in a fixed order. Candidates that pass become
//! [`PlannedOperation`]s with their reason; the others become [`HeldCandidate`]s with the first
//! [`Limit`] that stopped them.
//!
//! One file per question:
//!
//! - `hot_splits`, `scheduled`, `cold_merges`: the candidate sources, called in that order;
//! - `context`: what they share (inputs, windows, gates, the decision being built);
//! - `assess`: how each shard and adjacent pair looked over the windows;
//! - `split_point`: where a shard is split;
//! - `gates`: whether a candidate may go ahead, and if not, which [`Limit`] holds it;
//! - `decision`, `limits`, `display`: the answer, what held candidates back, and how both read.
//!
//! With `splitPoint: trafficWeighted`, planning is two-phase: see
//! [`Decision::wants_key_samples`].

mod assess;
mod cold_merges;
mod context;
mod decision;
mod display;
mod gates;
mod hot_splits;
mod limits;
mod scheduled;
mod split_point;

pub use decision::{
    Decision, HeldCandidate, MinuteWindow, PlannedOperation, Reason, ShardAssessment, ShardHeat,
    SplitPointUsed,
};
pub use limits::Limit;
// `apply` is about the shard map, not the planner; re-exported so `plan::apply` still works.
pub use crate::shard_map::{ApplyError, apply};

use crate::history::History;
use crate::observation::Observation;
use crate::policy::StreamPolicy;
use crate::shard_map::{ShardMap, ShardMapError};
use chrono::{DateTime, Utc};
use cold_merges::cold_merges;
use context::Context;
use hot_splits::hot_splits;
use scheduled::scheduled_minimum_splits;

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

/// Plans the next operations for one stream.
///
/// Pure: the result depends only on the arguments. A broken shard map is an error, never a plan.
/// Candidates come from three sources, in priority order; each sees what the earlier ones
/// accepted (shards being split, operations counted against the limits).
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
    let mut cx = Context::new(policy, obs, &map, history, now);
    hot_splits(&mut cx);
    scheduled_minimum_splits(&mut cx);
    cold_merges(&mut cx);
    Ok(cx.decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::StreamFixture;
    use crate::observation::{KeyBucket, KeyDistribution};

    /// The two-phase protocol of [`Decision::wants_key_samples`], end to end.
    #[test]
    fn a_traffic_weighted_split_asks_for_samples_once_then_uses_them() {
        let now = "2026-11-02T14:00:00Z".parse().expect("instant");
        let policy = StreamPolicy::with_defaults("orders"); // splitPoint: trafficWeighted
        let f = StreamFixture::new("orders", 4, 60, now).hot(1).hot(3);
        let first = plan(&policy, &f.clone().build(), &History::default(), now).expect("plan");
        assert_eq!(
            first.wants_key_samples(),
            vec!["shardId-000000000001", "shardId-000000000003"]
        );

        // The shell samples shard 1 only (shard 3's sample came back empty).
        let r = f.range(1);
        let dist = KeyDistribution {
            buckets: vec![KeyBucket {
                starting_hash_key: r.starting_hash_key,
                ending_hash_key: r.key_at_fraction(0.5),
                weight: 1.0,
            }],
            heavy_keys: vec![],
        };
        let second = plan(
            &policy,
            &f.key_distribution(1, dist).build(),
            &History::default(),
            now,
        )
        .expect("plan");
        assert_eq!(second.wants_key_samples(), vec!["shardId-000000000003"]);
        let used: Vec<SplitPointUsed> = second
            .operations
            .iter()
            .filter_map(|op| match op {
                PlannedOperation::Split { split_point, .. } => Some(*split_point),
                PlannedOperation::Merge { .. } => None,
            })
            .collect();
        assert_eq!(
            used,
            vec![
                SplitPointUsed::TrafficWeighted,
                SplitPointUsed::MidpointNoDistribution
            ]
        );
    }
}
