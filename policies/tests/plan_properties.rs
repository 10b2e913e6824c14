//! Invariants of the planner over random streams, policies, histories and instants.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use shardctl_policies::budget;
use shardctl_policies::history::{OperationKind, OperationOutcome, OperationRecord};
use shardctl_policies::observation::{
    ConsumerGroupState, SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND,
};
use shardctl_policies::plan::PlannedOperation;
use shardctl_policies::policy::{
    Budget, ConsumerGroup, RatePolicy, RatePolicyKind, SelectPolicy, SplitPoint,
};
use shardctl_policies::shard_map::apply;
use shardctl_policies::{
    Checkpoint, HashRange, History, HumanDuration, MAX_HASH_KEY, Observation, Shard, ShardMap,
    ShardMetrics, ShardState, StreamPolicy, StreamStatus, plan,
};
use std::collections::{BTreeMap, HashSet};

const MINUTES: usize = 60;

fn base() -> DateTime<Utc> {
    "2026-11-02T00:00:00Z".parse().unwrap()
}

#[derive(Debug, Clone)]
struct Case {
    obs: Observation,
    history: History,
    policy: StreamPolicy,
    now: DateTime<Utc>,
}

fn series(level: f64, noise: Vec<(f64, bool)>, limit: f64) -> Vec<Option<f64>> {
    noise
        .into_iter()
        .map(|(n, missing)| (!missing).then_some(((level + n).max(0.0)) / 100.0 * limit * 60.0))
        .collect()
}

prop_compose! {
    fn metrics()(level in prop_oneof![0.0..15.0, 20.0..70.0, 75.0..110.0],
                 mut noise in proptest::collection::vec((-5.0..5.0f64, proptest::bool::weighted(0.03)), MINUTES),
                 mut throttle in proptest::collection::vec(prop_oneof![9 => Just(Some(0.0)), 1 => Just(Some(30.0)), 1 => Just(None)], MINUTES),
                 complete in proptest::bool::weighted(0.7),
                 calm in proptest::bool::weighted(0.8),
                 empty in proptest::bool::weighted(0.05)) -> ShardMetrics {
        if empty {
            return ShardMetrics::default();
        }
        if complete {
            noise.iter_mut().for_each(|n| n.1 = false);
        }
        if calm {
            throttle.iter_mut().for_each(|t| *t = Some(0.0));
        }
        ShardMetrics {
            incoming_bytes: series(level, noise.clone(), SHARD_BYTES_PER_SECOND),
            incoming_records: series(level * 0.7, noise, SHARD_RECORDS_PER_SECOND),
            write_provisioned_throughput_exceeded: throttle,
        }
    }
}

prop_compose! {
    fn shards()(cuts in proptest::collection::btree_set(1u128..MAX_HASH_KEY, 0..24),
                parents in proptest::collection::vec(any::<bool>(), 24))
               (metrics in proptest::collection::vec(metrics(), cuts.len() + 1),
                cuts in Just(cuts), parents in Just(parents)) -> Vec<Shard> {
        let mut starts: Vec<u128> = vec![0];
        starts.extend(cuts.iter().copied());
        let mut out: Vec<Shard> = Vec::new();
        for (i, start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(MAX_HASH_KEY, |n| n - 1);
            let mut s = Shard::open(format!("shardId-{i:012}"), HashRange::new(*start, end).unwrap());
            s.metrics = metrics[i].clone();
            out.push(s);
        }
        // Give some adjacent pairs a closed parent, as if they came from a split.
        let n = out.len();
        let mut i = 0;
        while i + 1 < n {
            if parents[i % parents.len()] {
                let range = out[i].hash_key_range.merge_with(&out[i + 1].hash_key_range).unwrap();
                let mut p = Shard::open(format!("shardId-{:012}", 1000 + i), range);
                p.state = ShardState::Closed;
                out[i].parent_shard_id = Some(p.shard_id.clone());
                out[i + 1].parent_shard_id = Some(p.shard_id.clone());
                out.push(p);
                i += 2;
            } else {
                i += 1;
            }
        }
        out
    }
}

fn rate_policies() -> impl Strategy<Value = Vec<RatePolicy>> {
    proptest::collection::vec(
        (
            prop_oneof![Just(RatePolicyKind::Shards), Just(RatePolicyKind::Percent)],
            1u32..6,
            1u64..30,
        )
            .prop_map(|(kind, value, mins)| RatePolicy {
                kind,
                value,
                period: HumanDuration::mins(mins),
            }),
        1..3,
    )
}

fn select() -> impl Strategy<Value = SelectPolicy> {
    prop_oneof![4 => Just(SelectPolicy::Max), 2 => Just(SelectPolicy::Min), 1 => Just(SelectPolicy::Disabled)]
}

prop_compose! {
    fn budgets()(list in proptest::collection::vec(
        (0u32..24, 1u64..600, proptest::option::of(0u32..3), proptest::option::of(0u32..3), proptest::option::of(1u32..40)), 0..3)) -> Vec<Budget> {
        list.into_iter().map(|(hour, mins, splits, merges, min)| Budget {
            name: Some(format!("b{hour}")),
            schedule: Some(format!("0 {hour} * * *").parse().unwrap()),
            duration: Some(HumanDuration::mins(mins)),
            splits, merges, min_shards: min,
        }).collect()
    }
}

prop_compose! {
    fn policy()(min in 1u32..20, span in 0u32..40, split_th in 50.0..100.0f64, merge_frac in 0.1..0.95f64,
                split_w in 1u64..15, merge_w in 1u64..40, ops in 1u32..6, delay in 0u64..5,
                split_rates in rate_policies(), merge_rates in rate_policies(),
                split_sel in select(), merge_sel in select(), budgets in budgets(),
                weighted in any::<bool>(), gated in any::<bool>(), throttling in any::<bool>(),
                split_cd in 0u64..20, merge_cd in 0u64..40) -> StreamPolicy {
        let mut p = StreamPolicy::with_defaults("s");
        p.min_shards = min;
        p.max_shards = min + span;
        p.max_operations_per_cycle = ops;
        p.metrics_delay = HumanDuration::mins(delay);
        p.split.threshold.incoming_bytes = split_th;
        p.split.threshold.incoming_records = split_th;
        p.split.stabilization_window = HumanDuration::mins(split_w);
        p.split.throttling_is_hot = throttling;
        p.split.policies = split_rates;
        p.split.select_policy = split_sel;
        p.split.cooldown = HumanDuration::mins(split_cd);
        p.split.split_point = if weighted { SplitPoint::TrafficWeighted } else { SplitPoint::Midpoint };
        p.merge.threshold.incoming_bytes = split_th * merge_frac;
        p.merge.threshold.incoming_records = split_th * merge_frac;
        p.merge.stabilization_window = HumanDuration::mins(merge_w);
        p.merge.policies = merge_rates;
        p.merge.select_policy = merge_sel;
        p.merge.cooldown = HumanDuration::mins(merge_cd);
        p.budgets = budgets.into_iter().map(|mut b| { b.min_shards = b.min_shards.map(|m| m.min(p.max_shards)); b }).collect();
        if gated {
            p.consumer_groups = vec![ConsumerGroup { name: "g".into(), lease_table: "g-leases".into() }];
        }
        p
    }
}

prop_compose! {
    fn case()(shards in shards(), policy in policy(), offset in 0i64..1440,
              status in prop_oneof![9 => Just(StreamStatus::Active), 1 => Just(StreamStatus::Updating)],
              ops in proptest::collection::vec((any::<bool>(), 0i64..120, prop_oneof![8 => Just(OperationOutcome::Succeeded), 1 => Just(OperationOutcome::Failed), 1 => Just(OperationOutcome::InFlight)]), 0..6),
              rows in proptest::collection::vec(0u8..4, 64)) -> Case {
        let now = base() + TimeDelta::minutes(offset);
        // Each shard's lease row: finished, under way, not started, or absent (never written, or
        // deleted by KCL's lease cleanup).
        let checkpoints: BTreeMap<String, Checkpoint> = shards.iter().enumerate()
            .filter_map(|(i, s)| {
                let c = match rows[i % 64] {
                    0 if !s.is_open() => Checkpoint::ShardEnd,
                    0 | 1 => Checkpoint::parse("1", 0).expect("sequence number"),
                    2 => Checkpoint::TrimHorizon,
                    _ => return None,
                };
                Some((s.shard_id.clone(), c))
            })
            .collect();
        let obs = Observation {
            stream_name: "s".into(),
            stream_status: status,
            observed_at: now,
            metrics_start: now - TimeDelta::minutes(MINUTES as i64),
            shards,
            consumer_groups: vec![ConsumerGroupState { name: "g".into(), lease_table: "g-leases".into(), error: None, checkpoints, unreadable: BTreeMap::new(), note: None }],
        };
        let history = History { operations: ops.into_iter().map(|(split, ago, outcome)| OperationRecord {
            kind: if split { OperationKind::Split } else { OperationKind::Merge },
            shard_ids: vec!["shardId-000000000000".into()],
            started_at: now - TimeDelta::minutes(ago),
            outcome,
        }).collect() };
        Case { obs, history, policy, now }
    }
}

fn minute_index(obs: &Observation, t: DateTime<Utc>) -> i64 {
    (t - obs.metrics_start).num_minutes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_safe(c in case()) {
        let d = plan(&c.policy, &c.obs, &c.history, c.now).unwrap();
        let map = ShardMap::new(&c.obs.shards).unwrap();
        let open = map.open_count() as i64;
        if std::env::var_os("PLAN_STATS").is_some() {
            eprintln!("STATS ops={} splits={} held={}", d.operations.len(), d.operations.iter().filter(|o| o.kind() == OperationKind::Split).count(), d.held.len());
        }

        // Deterministic.
        prop_assert_eq!(&d, &plan(&c.policy, &c.obs, &c.history, c.now).unwrap());

        // Applying the plan keeps the key space partitioned; every op is on an open shard.
        let after = apply(&c.obs.shards, &d.operations).unwrap();
        let after_map = ShardMap::new(&after).unwrap();

        // No shard is touched twice; merges are of adjacent open shards, lower first.
        let mut touched = HashSet::new();
        for op in &d.operations {
            for id in op.shard_ids() {
                prop_assert!(touched.insert(id.to_string()), "shard {} touched twice", id);
                prop_assert!(map.get(id).unwrap().is_open());
            }
            if let PlannedOperation::Merge { shard_id, adjacent_shard_id, .. } = op {
                let (a, b) = (map.get(shard_id).unwrap(), map.get(adjacent_shard_id).unwrap());
                prop_assert!(a.hash_key_range.is_adjacent_to(&b.hash_key_range));
            }
        }

        let splits = d.operations.iter().filter(|o| o.kind() == OperationKind::Split).count() as i64;
        let merges = d.operations.len() as i64 - splits;
        prop_assert_eq!(after_map.open_count() as i64, open + splits - merges);

        // Cycle cap, stream status and in-flight operations.
        prop_assert!(d.operations.len() <= c.policy.max_operations_per_cycle as usize);
        if c.obs.stream_status != StreamStatus::Active || c.history.in_flight().is_some() {
            prop_assert!(d.operations.is_empty());
        }

        // Min and max shards.
        let active = budget::evaluate(&c.policy.budgets, c.now);
        let min = active.min_shards.as_ref().map_or(c.policy.min_shards, |l| l.value.max(c.policy.min_shards));
        if splits > 0 {
            prop_assert!(open + splits <= c.policy.max_shards as i64);
        }
        if merges > 0 {
            prop_assert!(open + splits - merges >= min as i64);
        }

        // Budgets.
        if let Some(l) = &active.splits { prop_assert!(splits <= l.value as i64); }
        if let Some(l) = &active.merges { prop_assert!(merges <= l.value as i64); }
        if c.policy.split.select_policy == SelectPolicy::Disabled { prop_assert_eq!(splits, 0); }
        if c.policy.merge.select_policy == SelectPolicy::Disabled { prop_assert_eq!(merges, 0); }

        // Missing data never yields a merge: every minute of the window is known for both shards.
        let (ws, we) = (minute_index(&c.obs, d.merge_window.start), minute_index(&c.obs, d.merge_window.end));
        for op in &d.operations {
            if let PlannedOperation::Merge { shard_id, adjacent_shard_id, .. } = op {
                for id in [shard_id, adjacent_shard_id] {
                    let m = &map.get(id).unwrap().metrics;
                    for t in ws..we {
                        prop_assert!(t >= 0, "merge window before the first datapoint");
                        let t = t as usize;
                        prop_assert!(m.incoming_bytes.get(t).copied().flatten().is_some());
                        prop_assert!(m.incoming_records.get(t).copied().flatten().is_some());
                    }
                }
            }
        }

        // The drain gate: every ancestor of every touched shard is drained by the group.
        if !c.policy.consumer_groups.is_empty() {
            let g = &c.obs.consumer_groups[0];
            for id in &touched {
                for a in map.ancestors(id) {
                    // At SHARD_END, or its row is absent and a descendant is past its start
                    // (KCL's precondition for deleting a finished lease).
                    let row = g.checkpoints.get(&a.shard_id);
                    let cleaned_up = row.is_none() && c.obs.shards.iter().any(|d| {
                        map.ancestors(&d.shard_id).iter().any(|x| x.shard_id == a.shard_id)
                            && matches!(g.checkpoints.get(&d.shard_id),
                                Some(Checkpoint::Sequence { .. } | Checkpoint::ShardEnd | Checkpoint::Latest))
                    });
                    prop_assert!(row == Some(&Checkpoint::ShardEnd) || cleaned_up,
                        "{} planned past {} at {:?}", id, a.shard_id, row);
                }
            }
        }
    }
}
