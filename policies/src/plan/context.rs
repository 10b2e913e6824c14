//! What do the candidate sources share? One [`Context`]: the policy, the open shards and their
//! assessments, the windows, the gates, and the [`Decision`] being built, plus the one way a
//! split candidate is accepted or held.

use super::assess::{self, PairHeat, Window};
use super::decision::{Decision, HeldCandidate, PlannedOperation, Reason};
use super::gates::Gates;
use super::split_point::split_key;
use crate::history::{History, OperationKind};
use crate::observation::Observation;
use crate::policy::StreamPolicy;
use crate::shard_map::{Shard, ShardMap};
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// Everything the candidate sources read and write while one plan is built. Each source adds
/// operations and held candidates to `decision` in turn; the gates' counters carry what earlier
/// sources accepted to the later ones.
pub(super) struct Context<'a> {
    /// The stream's policy.
    pub(super) policy: &'a StreamPolicy,
    /// Open shards in hash key order; `decision.shards[i]` is the assessment of `shards[i]`.
    pub(super) shards: Vec<&'a Shard>,
    /// The split window.
    pub(super) split_window: Window,
    /// The merge window.
    pub(super) merge_window: Window,
    /// The heat of each adjacent pair over the merge window: `pair_heats[i]` is `shards[i]`
    /// with `shards[i + 1]`.
    pub(super) pair_heats: Vec<PairHeat>,
    /// The gates, with the counters of what was accepted so far.
    pub(super) gates: Gates<'a>,
    /// Shards with a planned split: no later candidate may touch them.
    pub(super) splitting: HashSet<&'a str>,
    /// The decision being built: every field is final except `operations` and `held`.
    pub(super) decision: Decision,
}

impl<'a> Context<'a> {
    /// Assesses every open shard of `map` and sets up the gates; no candidate is decided yet.
    pub(super) fn new(
        policy: &'a StreamPolicy,
        obs: &'a Observation,
        map: &'a ShardMap<'a>,
        history: &History,
        now: DateTime<Utc>,
    ) -> Self {
        let (split_window, merge_window) = assess::windows(policy, obs, now);
        let shards: Vec<&Shard> = map.open_shards().collect();
        let (assessments, pair_heats) =
            assess::assess_open_shards(&shards, policy, &split_window, &merge_window);
        let gates = Gates::new(policy, obs, map, history, now);
        let decision = Decision {
            stream_name: obs.stream_name.clone(),
            evaluated_at: now,
            stream_status: obs.stream_status,
            open_shards: map.open_count(),
            min_shards: gates.min_shards,
            max_shards: policy.max_shards,
            split_window: assess::minute_window(obs, &split_window),
            merge_window: assess::minute_window(obs, &merge_window),
            operations: Vec::new(),
            held: Vec::new(),
            shards: assessments,
        };
        Context {
            policy,
            shards,
            split_window,
            merge_window,
            pair_heats,
            gates,
            splitting: HashSet::new(),
            decision,
        }
    }

    /// Passes a split of `shard` through the gates and the split point: planned if every gate
    /// lets it through, held with the first limit otherwise. `utilization` is the shard's own,
    /// for judging single hot keys.
    pub(super) fn try_split(&mut self, shard: &'a Shard, reason: Reason, utilization: f64) {
        let (gates, point) = (&self.gates, self.policy.split.split_point);
        let verdict = gates
            .common(OperationKind::Split)
            .and_then(|_| split_key(shard, point, utilization))
            .and_then(|k| gates.drain(&shard.shard_id).map(|_| k))
            .and_then(|k| gates.rest(OperationKind::Split).map(|_| k));
        match verdict {
            Ok((key, used, lower)) => {
                self.gates.splits += 1;
                self.splitting.insert(&shard.shard_id);
                self.decision.operations.push(PlannedOperation::Split {
                    shard_id: shard.shard_id.clone(),
                    hash_key_range: shard.hash_key_range,
                    new_starting_hash_key: key,
                    split_point: used,
                    lower_child_share: lower,
                    reason,
                });
            }
            Err(limit) => self.decision.held.push(HeldCandidate {
                action: OperationKind::Split,
                shard_ids: vec![shard.shard_id.clone()],
                wanted: reason,
                limit,
            }),
        }
    }
}
