//! One test per planner rule, on fixtures that read like the situation they test.
//!
//! Longer than 500 lines by choice: a table of thirty rules, one short test each, read top to
//! bottom like the planner's documentation; splitting it would scatter the fixtures they share.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, Utc};
use shardctl_policies::fixture::StreamFixture;
use shardctl_policies::history::{OperationKind, OperationOutcome, OperationRecord};
use shardctl_policies::observation::{HeavyKey, KeyBucket};
use shardctl_policies::plan::{Limit, PlannedOperation, Reason, SplitPointUsed};
use shardctl_policies::policy::{Budget, ConsumerGroup, SelectPolicy, SplitPoint};
use shardctl_policies::{
    Checkpoint, Decision, History, HumanDuration, KeyDistribution, PlanError, StreamPolicy,
    StreamStatus, plan,
};

fn now() -> DateTime<Utc> {
    // A Monday, 14:00 UTC.
    "2026-11-02T14:00:00Z".parse().unwrap()
}

fn policy() -> StreamPolicy {
    StreamPolicy::with_defaults("orders")
}

fn stream(shards: usize) -> StreamFixture {
    StreamFixture::new("orders", shards, 60, now())
}

fn run(policy: &StreamPolicy, f: StreamFixture) -> Decision {
    plan(policy, &f.build(), &History::default(), now()).unwrap()
}

fn run_with(policy: &StreamPolicy, f: StreamFixture, h: &History) -> Decision {
    plan(policy, &f.build(), h, now()).unwrap()
}

fn splits(d: &Decision) -> Vec<String> {
    d.operations
        .iter()
        .filter_map(|o| match o {
            PlannedOperation::Split { shard_id, .. } => Some(shard_id.clone()),
            _ => None,
        })
        .collect()
}

fn merges(d: &Decision) -> Vec<(String, String)> {
    d.operations
        .iter()
        .filter_map(|o| match o {
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                ..
            } => Some((shard_id.clone(), adjacent_shard_id.clone())),
            _ => None,
        })
        .collect()
}

fn held_limits(d: &Decision) -> Vec<&'static str> {
    d.held.iter().map(|h| h.limit.label()).collect()
}

fn op(kind: OperationKind, minutes_ago: i64, outcome: OperationOutcome) -> OperationRecord {
    OperationRecord {
        kind,
        shard_ids: vec!["shardId-000000000099".into()],
        started_at: now() - TimeDelta::minutes(minutes_ago),
        outcome,
    }
}

#[test]
fn a_sustained_hot_shard_is_split_at_the_midpoint_with_its_numbers() {
    let f = stream(4).hot(1);
    let range = f.range(1);
    let d = run(&policy(), f);
    assert_eq!(splits(&d), vec!["shardId-000000000001"]);
    let PlannedOperation::Split {
        new_starting_hash_key,
        split_point,
        reason,
        ..
    } = &d.operations[0]
    else {
        panic!("split expected")
    };
    assert_eq!(*new_starting_hash_key, range.midpoint_split_key().unwrap());
    assert_eq!(*split_point, SplitPointUsed::MidpointNoDistribution);
    let text = reason.to_string();
    assert!(text.contains("bytes peak 95% (split at 80%)"), "{text}");
    assert!(
        d.operations[0].to_string().contains("50/50"),
        "{}",
        d.operations[0]
    );
}

#[test]
fn a_shard_hot_only_briefly_is_not_split() {
    // Hot for the 3 most recent judged minutes only (window 5m ends 3m before now).
    let f = stream(4).utilization_in(1, 54..57, 95.0, 10.0);
    let d = run(&policy(), f);
    assert!(splits(&d).is_empty());
}

#[test]
fn minutes_inside_the_metrics_delay_are_not_judged() {
    // Hot only in the last 3 minutes, which CloudWatch has not completed yet.
    let f = stream(4).utilization_in(1, 57..60, 99.0, 99.0);
    let d = run(&policy(), f);
    assert!(splits(&d).is_empty());
    assert_eq!(d.split_window.end, now() - TimeDelta::minutes(3));
}

#[test]
fn throttling_is_evidence_of_heat_unless_turned_off() {
    let f = || {
        stream(4)
            .utilization(2, 60.0, 60.0)
            .throttled(2, 0..60, 250.0)
    };
    let d = run(&policy(), f());
    assert_eq!(splits(&d), vec!["shardId-000000000002"]);
    assert!(d.operations[0].to_string().contains("throttled in 5m"));
    let mut p = policy();
    p.split.throttling_is_hot = false;
    assert!(splits(&run(&p, f())).is_empty());
}

#[test]
fn a_hot_shard_with_a_few_missing_minutes_is_still_split_but_not_with_most_missing() {
    let d = run(&policy(), stream(4).hot(1).missing(1, 53..55));
    assert_eq!(splits(&d), vec!["shardId-000000000001"]);
    let d = run(&policy(), stream(4).hot(1).missing(1, 52..56));
    assert!(splits(&d).is_empty());
    assert_eq!(
        d.shards[1].state,
        shardctl_policies::plan::ShardHeat::Unknown
    );
}

#[test]
fn traffic_weighted_split_halves_the_observed_traffic() {
    let f = stream(4).hot(1);
    let r = f.range(1);
    // 80 % of the traffic sits in the lowest tenth of the range, the rest spread evenly.
    let tenth = r.key_at_fraction(0.1);
    let dist = KeyDistribution {
        buckets: vec![
            KeyBucket {
                starting_hash_key: r.starting_hash_key,
                ending_hash_key: tenth,
                weight: 80.0,
            },
            KeyBucket {
                starting_hash_key: tenth + 1,
                ending_hash_key: r.ending_hash_key,
                weight: 20.0,
            },
        ],
        heavy_keys: vec![],
    };
    let d = run(&policy(), f.key_distribution(1, dist));
    let PlannedOperation::Split {
        new_starting_hash_key,
        split_point,
        lower_child_share,
        ..
    } = &d.operations[0]
    else {
        panic!("split expected")
    };
    assert_eq!(*split_point, SplitPointUsed::TrafficWeighted);
    assert!(
        (lower_child_share - 0.5).abs() < 0.01,
        "{lower_child_share}"
    );
    let pos = r.fraction_below(*new_starting_hash_key);
    assert!((pos - 0.0625).abs() < 0.01, "split at {pos} of the range");
}

#[test]
fn a_heavy_key_goes_to_the_side_that_balances_best() {
    let f = stream(4).hot(1);
    let r = f.range(1);
    let heavy = r.key_at_fraction(0.3);
    let dist = KeyDistribution {
        buckets: vec![KeyBucket {
            starting_hash_key: r.starting_hash_key,
            ending_hash_key: r.ending_hash_key,
            weight: 55.0,
        }],
        heavy_keys: vec![HeavyKey {
            hash_key: heavy,
            partition_key: Some("org-acme".into()),
            weight: 45.0,
        }],
    };
    let d = run(&policy(), f.key_distribution(1, dist));
    let PlannedOperation::Split {
        new_starting_hash_key,
        lower_child_share,
        ..
    } = &d.operations[0]
    else {
        panic!("split expected")
    };
    // Below the heavy key lies 0.3 * 55 = 16.5; with the key, 61.5. A 61.5/38.5 split balances
    // better than 16.5/83.5, so the key goes to the lower child.
    assert_eq!(*new_starting_hash_key, heavy + 1);
    assert!(
        (lower_child_share - 0.615).abs() < 0.01,
        "{lower_child_share}"
    );
}

#[test]
fn a_key_hotter_than_a_shard_is_reported_not_split() {
    let f = stream(4)
        .utilization(1, 100.0, 30.0)
        .throttled(1, 0..60, 5000.0);
    let r = f.range(1);
    let dist = KeyDistribution {
        buckets: vec![],
        heavy_keys: vec![HeavyKey {
            hash_key: r.key_at_fraction(0.5),
            partition_key: Some("org-acme".into()),
            weight: 100.0,
        }],
    };
    let d = run(&policy(), f.key_distribution(1, dist));
    assert!(d.operations.is_empty());
    assert_eq!(held_limits(&d), vec!["unsplittable_hot_key"]);
    assert!(d.held[0].to_string().contains("org-acme"), "{}", d.held[0]);
}

#[test]
fn cold_adjacent_pairs_merge_coldest_first_without_sharing_a_shard() {
    // Shards 1, 2, 3 are cold; pair (2,3) is colder than (1,2).
    let f = stream(6).utilization(1, 10.0, 10.0).cold(2).cold(3);
    let mut p = policy();
    p.max_operations_per_cycle = 5;
    let d = run(&p, f);
    assert_eq!(
        merges(&d),
        vec![(
            "shardId-000000000002".to_string(),
            "shardId-000000000003".to_string()
        )]
    );
    assert!(d.operations[0].to_string().contains("cold together 30m"));
}

#[test]
fn a_pair_that_would_be_hot_again_is_not_merged() {
    // 25 % + 25 % = 50 % > 40 % merge threshold.
    let d = run(
        &policy(),
        stream(4)
            .utilization(1, 25.0, 5.0)
            .utilization(2, 25.0, 5.0),
    );
    assert!(merges(&d).is_empty());
}

#[test]
fn missing_data_never_merges() {
    let d = run(&policy(), stream(4).cold(1).cold(2).missing(2, 40..41));
    assert!(merges(&d).is_empty());
    assert_eq!(held_limits(&d), vec!["incomplete_data"]);
    assert!(
        d.held[0].to_string().contains("29 of 30 minutes"),
        "{}",
        d.held[0]
    );
    let d = run(&policy(), stream(4).cold(1).cold(2).no_metrics(2));
    assert!(merges(&d).is_empty());
}

#[test]
fn max_shards_stops_splits() {
    let mut p = policy();
    p.max_shards = 4;
    let d = run(&p, stream(4).hot(0));
    assert!(d.operations.is_empty());
    assert_eq!(held_limits(&d), vec!["max_shards"]);
}

#[test]
fn min_shards_stops_merges() {
    let mut p = policy();
    p.min_shards = 4;
    let d = run(&p, stream(4).cold(0).cold(1));
    assert!(d.operations.is_empty());
    assert_eq!(held_limits(&d), vec!["min_shards"]);
}

fn budget(schedule: &str, duration: u64) -> Budget {
    Budget {
        name: Some("b".into()),
        schedule: Some(schedule.parse().unwrap()),
        duration: Some(HumanDuration::mins(duration)),
        splits: None,
        merges: None,
        min_shards: None,
    }
}

#[test]
fn a_scheduled_minimum_splits_the_hottest_shards_only_while_active() {
    let mut p = policy();
    let mut b = budget("45 13 * * *", 120);
    b.min_shards = Some(6);
    p.budgets = vec![b];
    p.max_operations_per_cycle = 4;
    let f = || {
        stream(4)
            .utilization(2, 70.0, 10.0)
            .utilization(3, 60.0, 10.0)
    };
    let d = run(&p, f());
    assert_eq!(
        splits(&d),
        vec!["shardId-000000000002", "shardId-000000000003"]
    );
    assert!(matches!(
        &d.operations[0],
        PlannedOperation::Split {
            reason: Reason::BelowMinimum { min_shards: 6, .. },
            ..
        }
    ));
    p.budgets[0].schedule = Some("45 15 * * *".parse().unwrap());
    assert!(run(&p, f()).operations.is_empty());
}

#[test]
fn a_freeze_budget_holds_merges_and_says_until_when() {
    let mut p = policy();
    let mut b = budget("0 7 * * MON-FRI", 11 * 60);
    b.merges = Some(0);
    p.budgets = vec![b];
    let d = run(&p, stream(4).cold(0).cold(1));
    assert!(d.operations.is_empty());
    assert_eq!(
        d.held[0].limit.to_string(),
        "budget b allows 0 per cycle until 18:00"
    );
}

#[test]
fn cooldown_after_a_split_holds_merges() {
    let h = History {
        operations: vec![op(OperationKind::Split, 10, OperationOutcome::Succeeded)],
    };
    let d = run_with(&policy(), stream(4).cold(0).cold(1), &h);
    assert!(d.operations.is_empty());
    assert_eq!(
        d.held[0].limit.to_string(),
        "cooldown until 14:20 (after the last split)"
    );
    // A failed split does not start a cooldown.
    let h = History {
        operations: vec![op(OperationKind::Split, 10, OperationOutcome::Failed)],
    };
    assert_eq!(
        merges(&run_with(&policy(), stream(4).cold(0).cold(1), &h)).len(),
        1
    );
}

#[test]
fn rate_policies_limit_splits_per_period() {
    let mut p = policy();
    p.split.policies = vec![shardctl_policies::policy::RatePolicy {
        kind: shardctl_policies::policy::RatePolicyKind::Shards,
        value: 2,
        period: HumanDuration::mins(10),
    }];
    let h = History {
        operations: vec![
            op(OperationKind::Split, 8, OperationOutcome::Succeeded),
            op(OperationKind::Split, 4, OperationOutcome::Succeeded),
        ],
    };
    let d = run_with(&p, stream(4).hot(0), &h);
    assert!(d.operations.is_empty());
    assert_eq!(d.held[0].limit.label(), "rate_limit");
    assert!(
        d.held[0].limit.to_string().contains("next at 14:02"),
        "{}",
        d.held[0].limit
    );
}

#[test]
fn max_operations_per_cycle_holds_the_rest_hottest_first() {
    let f = stream(6)
        .utilization(0, 85.0, 10.0)
        .utilization(2, 99.0, 10.0)
        .utilization(4, 90.0, 10.0);
    let d = run(&policy(), f);
    assert_eq!(
        splits(&d),
        vec!["shardId-000000000002", "shardId-000000000004"]
    );
    assert_eq!(held_limits(&d), vec!["max_operations_per_cycle"]);
    assert_eq!(d.held[0].shard_ids, vec!["shardId-000000000000"]);
}

#[test]
fn nothing_happens_while_the_stream_is_updating() {
    let d = run(
        &policy(),
        stream(4)
            .hot(0)
            .cold(2)
            .cold(3)
            .status(StreamStatus::Updating),
    );
    assert!(d.operations.is_empty());
    assert_eq!(
        held_limits(&d),
        vec!["stream_not_active", "stream_not_active"]
    );
    assert!(d.held[0].limit.to_string().contains("UPDATING"));
}

#[test]
fn nothing_starts_while_an_operation_is_in_flight() {
    let h = History {
        operations: vec![op(OperationKind::Split, 1, OperationOutcome::InFlight)],
    };
    let d = run_with(&policy(), stream(4).hot(0), &h);
    assert!(d.operations.is_empty());
    assert_eq!(held_limits(&d), vec!["operation_in_flight"]);
}

#[test]
fn disabled_direction_is_held_with_that_reason() {
    let mut p = policy();
    p.split.select_policy = SelectPolicy::Disabled;
    let d = run(&p, stream(4).hot(0));
    assert_eq!(
        d.held[0].limit,
        Limit::Disabled {
            kind: OperationKind::Split
        }
    );
}

fn gated_policy() -> StreamPolicy {
    let mut p = policy();
    p.consumer_groups = vec![ConsumerGroup {
        name: "billing".into(),
        lease_table: "billing-leases".into(),
    }];
    p
}

#[test]
fn the_drain_gate_holds_children_of_undrained_parents() {
    // Shard 1 was split into 4 and 5; 4 is hot now.
    let f = stream(4).split_existing(1).hot(4);
    let parent = f.id(1);
    let d = run(
        &gated_policy(),
        f.clone().group(
            "billing",
            &[(1, Checkpoint::parse("4955", 0).expect("sequence number"))],
        ),
    );
    assert!(d.operations.is_empty());
    assert_eq!(
        d.held[0].limit.to_string(),
        format!("waiting for group billing to drain {parent} (checkpoint 4955)")
    );
    // No lease row for the parent is not "drained".
    let d = run(&gated_policy(), f.clone().group("billing", &[]));
    assert!(
        d.held[0].limit.to_string().contains("no lease"),
        "{}",
        d.held[0].limit
    );
    // No drain state at all for the group is not "drained" either.
    let d = run(&gated_policy(), f.clone());
    assert!(
        d.held[0]
            .limit
            .to_string()
            .contains("no drain state observed")
    );
    // Drained: the split goes ahead.
    let d = run(
        &gated_policy(),
        f.group("billing", &[(1, Checkpoint::ShardEnd)]),
    );
    assert_eq!(splits(&d).len(), 1);
}

/// Regression: KCL's lease cleanup deletes a finished parent's row once its children progressed;
/// the gate then held every split of the children for the parent's whole retention.
#[test]
fn kcl_lease_cleanup_of_a_finished_parent_does_not_freeze_the_lineage() {
    // Shard 1 was split into 4 and 5; 4 is hot; the parent's row is gone.
    let f = stream(4).split_existing(1).hot(4);
    let seq = Checkpoint::parse("49654910385420946271138209451022367872", 0).expect("sequence");
    // A child past TRIM_HORIZON is KCL's own evidence before it deletes: drained.
    let d = run(
        &gated_policy(),
        f.clone().group("billing", &[(5, seq.clone())]),
    );
    assert_eq!(splits(&d), vec![f.id(4)], "{:?}", d.held);
    // Children that have not started: the missing row is unknown, so the split waits.
    let d = run(
        &gated_policy(),
        f.clone().group(
            "billing",
            &[(4, Checkpoint::TrimHorizon), (5, Checkpoint::TrimHorizon)],
        ),
    );
    assert!(d.operations.is_empty());
    let limit = d.held[0].limit.to_string();
    assert!(
        limit.contains(&f.id(1)) && limit.contains("unknown"),
        "{limit}"
    );
}

#[test]
fn an_unreadable_lease_row_is_an_explained_hold_not_a_failed_stream() {
    let f = stream(4).split_existing(1).hot(4);
    let mut obs = f.clone().group("billing", &[]).build();
    obs.consumer_groups[0]
        .unreadable
        .insert(f.id(1), "attribute checkpoint is missing".into());
    let d = plan(&gated_policy(), &obs, &History::default(), now()).expect("a plan");
    assert!(d.operations.is_empty());
    let limit = d.held[0].limit.to_string();
    assert!(limit.contains("checkpoint is missing"), "{limit}");
    // An unrelated hot shard is still split.
    let mut obs = f.hot(0).group("billing", &[]).build();
    obs.consumer_groups[0].unreadable.insert(
        "shardId-000000000001".into(),
        "attribute checkpoint is missing".into(),
    );
    let d = plan(&gated_policy(), &obs, &History::default(), now()).expect("a plan");
    assert_eq!(splits(&d), vec!["shardId-000000000000"]);
}

#[test]
fn the_drain_gate_ignores_unrelated_shards() {
    let f = stream(4)
        .split_existing(1)
        .hot(0)
        .group("billing", &[(1, Checkpoint::TrimHorizon)]);
    let d = run(&gated_policy(), f);
    assert_eq!(splits(&d), vec!["shardId-000000000000"]);
}

#[test]
fn a_broken_shard_map_is_an_error_not_a_plan() {
    let mut obs = stream(4).hot(0).build();
    obs.shards[2].hash_key_range.starting_hash_key += 10;
    let err = plan(&policy(), &obs, &History::default(), now()).unwrap_err();
    assert!(matches!(err, PlanError::BrokenShardMap { .. }));
    assert!(
        err.to_string().contains("no open shard owns hash keys"),
        "{err}"
    );
}

#[test]
fn the_policy_must_match_the_stream() {
    let obs = StreamFixture::new("other", 2, 60, now()).build();
    assert!(matches!(
        plan(&policy(), &obs, &History::default(), now()),
        Err(PlanError::WrongStream { .. })
    ));
}

#[test]
fn midpoint_policy_ignores_key_distributions() {
    let mut p = policy();
    p.split.split_point = SplitPoint::Midpoint;
    let f = stream(2).hot(0);
    let r = f.range(0);
    let dist = KeyDistribution {
        buckets: vec![],
        heavy_keys: vec![HeavyKey {
            hash_key: r.key_at_fraction(0.1),
            partition_key: None,
            weight: 1.0,
        }],
    };
    let d = run(&p, f.key_distribution(0, dist));
    assert!(matches!(
        d.operations[0],
        PlannedOperation::Split {
            split_point: SplitPointUsed::Midpoint,
            ..
        }
    ));
}

#[test]
fn garbage_datapoints_are_unknown_not_numbers() {
    let mut obs = stream(4).cold(0).cold(1).build();
    obs.shards[0].metrics.incoming_bytes[40] = Some(f64::NAN);
    obs.shards[1].metrics.incoming_records[41] = Some(-5.0);
    let d = plan(&policy(), &obs, &History::default(), now()).unwrap();
    assert!(d.operations.is_empty());
    assert_eq!(held_limits(&d), vec!["incomplete_data"]);
}

#[test]
fn same_inputs_same_decision() {
    let f = stream(16).hot(3).hot(9).cold(12).cold(13);
    let a = run(&policy(), f.clone());
    let b = run(&policy(), f);
    assert_eq!(a, b);
}
