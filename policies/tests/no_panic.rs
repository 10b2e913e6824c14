//! No observation, snapshot or instant makes the planner panic: random snapshots shaped like
//! `examples/snapshots/*.json` with extreme values (huge, negative, NaN and infinite metrics,
//! timestamps at both ends of the calendar, odd shard ids and hash keys, unicode) go through
//! snapshot parsing and `plan()` at a random `now`, which returns `Ok` or `Err` and never panics.
//!
//! `PROPTEST_CASES` sets the number of cases; `scripts/fuzz.sh` runs these for much longer.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::sample::select;
use shardctl_policies::history::{OperationKind, OperationOutcome, OperationRecord};
use shardctl_policies::observation::{ConsumerGroupState, HeavyKey, KeyBucket};
use shardctl_policies::shard_map::apply;
use shardctl_policies::{
    Checkpoint, HashRange, History, KeyDistribution, MAX_HASH_KEY, Observation, PolicyFile, Shard,
    ShardMetrics, ShardState, Snapshot, StreamPolicy, StreamStatus, load_policy, plan,
};
use std::collections::BTreeMap;

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn base() -> DateTime<Utc> {
    "2026-11-02T14:00:00Z".parse().unwrap()
}

/// Instants near the examples most of the time, anywhere chrono can represent the rest.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    prop_oneof![
        6 => (-3_000i64..3_000).prop_map(|m| base() + TimeDelta::minutes(m)),
        2 => (min.timestamp()..=max.timestamp())
            .prop_map(move |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or(min)),
        1 => select(vec![min, max, DateTime::<Utc>::UNIX_EPOCH]),
        1 => (0i64..120).prop_map(move |m| max - TimeDelta::minutes(m)),
        1 => (0i64..120).prop_map(move |m| min + TimeDelta::minutes(m)),
    ]
}

/// A per-minute sum: plausible, missing, or anything a float can be.
fn datapoint() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        2 => Just(None),
        6 => (0.0..1.2e8f64).prop_map(Some),
        1 => any::<f64>().prop_map(Some),
        1 => select(vec![
            f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN, -0.0,
            f64::MIN_POSITIVE, -1.0, 1e300, 5e-324,
        ])
        .prop_map(Some),
    ]
}

fn series() -> impl Strategy<Value = Vec<Option<f64>>> {
    prop_oneof![
        4 => proptest::collection::vec(datapoint(), 0..130),
        1 => (datapoint(), 0usize..400).prop_map(|(v, n)| vec![v; n]),
    ]
}

fn metrics() -> impl Strategy<Value = ShardMetrics> {
    (series(), series(), series()).prop_map(|(b, r, t)| ShardMetrics {
        incoming_bytes: b,
        incoming_records: r,
        write_provisioned_throughput_exceeded: t,
    })
}

fn hash_key() -> impl Strategy<Value = u128> {
    prop_oneof![
        any::<u128>(),
        0u128..4,
        (MAX_HASH_KEY - 4)..=MAX_HASH_KEY,
        Just(1u128 << 127),
    ]
}

fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..1e6f64,
        1 => any::<f64>(),
        1 => select(vec![f64::NAN, f64::INFINITY, f64::MAX, -1.0, 0.0, 1e308]),
    ]
}

fn key_distribution() -> impl Strategy<Value = KeyDistribution> {
    (
        proptest::collection::vec((hash_key(), hash_key(), weight()), 0..10),
        proptest::collection::vec(
            (hash_key(), proptest::option::of("\\PC{0,20}"), weight()),
            0..4,
        ),
    )
        .prop_map(|(buckets, heavy)| KeyDistribution {
            buckets: buckets
                .into_iter()
                .map(|(a, b, w)| KeyBucket {
                    starting_hash_key: a.min(b),
                    ending_hash_key: if w.is_sign_negative() { a } else { a.max(b) },
                    weight: w,
                })
                .collect(),
            heavy_keys: heavy
                .into_iter()
                .map(|(k, name, w)| HeavyKey {
                    hash_key: k,
                    partition_key: name,
                    weight: w,
                })
                .collect(),
        })
}

fn shard_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(String::new()),
        1 => "\\PC{0,16}",
        1 => select(vec!["shardId-18446744073709551615", "shardId-", "-", "shardId-999999999999999999999"])
            .prop_map(String::from),
    ]
}

/// One shard as listed, before its range is known.
#[derive(Debug, Clone)]
struct ShardSeed {
    name: String,
    metrics: ShardMetrics,
    distribution: Option<KeyDistribution>,
    closed: bool,
    parent: Option<usize>,
    odd_range: Option<(u128, u128)>,
}

fn shard_seed() -> impl Strategy<Value = ShardSeed> {
    (
        shard_name(),
        metrics(),
        proptest::option::weighted(0.3, key_distribution()),
        proptest::bool::weighted(0.03),
        proptest::option::weighted(0.3, 0usize..32),
        proptest::option::weighted(0.01, (hash_key(), hash_key())),
    )
        .prop_map(
            |(name, metrics, distribution, closed, parent, odd_range)| ShardSeed {
                name,
                metrics,
                distribution,
                closed,
                parent,
                odd_range,
            },
        )
}

/// Shards that mostly tile the key space (cuts anywhere, single-key shards included), with
/// closed parents, odd names and, now and then, a range that breaks the map.
fn shards() -> impl Strategy<Value = Vec<Shard>> {
    (
        proptest::collection::btree_set(hash_key().prop_filter("inside", |k| *k > 0), 0..12),
        proptest::collection::vec(shard_seed(), 13),
    )
        .prop_map(|(cuts, seeds)| {
            let mut starts = vec![0u128];
            starts.extend(cuts);
            let mut out: Vec<Shard> = Vec::new();
            for (i, start) in starts.iter().enumerate() {
                let end = starts.get(i + 1).map_or(MAX_HASH_KEY, |n| n - 1);
                let seed = &seeds[i];
                let range = match seed.odd_range {
                    Some((a, b)) => HashRange {
                        starting_hash_key: a,
                        ending_hash_key: b,
                    },
                    None => HashRange::new(*start, end).unwrap(),
                };
                let id = if seed.name.is_empty() {
                    format!("shardId-{i:012}")
                } else {
                    format!("{}{i}", seed.name)
                };
                let mut s = Shard::open(id, range);
                s.metrics = seed.metrics.clone();
                s.key_distribution = seed.distribution.clone();
                if seed.closed {
                    s.state = ShardState::Closed;
                }
                out.push(s);
            }
            // Parents: closed shards over the same ranges, or dangling ids.
            let n = out.len();
            for i in 0..n {
                if let Some(p) = seeds[i].parent {
                    let parent_id = if p < 16 {
                        let mut parent = out[i].clone();
                        parent.shard_id = format!("parent-{p}-{i}");
                        parent.state = ShardState::Closed;
                        parent.metrics = ShardMetrics::default();
                        out.push(parent.clone());
                        parent.shard_id
                    } else {
                        format!("gone-{p}")
                    };
                    out[i].parent_shard_id = Some(parent_id);
                    if p % 3 == 0 && i + 1 < n {
                        out[i].adjacent_parent_shard_id = Some(out[i + 1].shard_id.clone());
                    }
                }
            }
            out
        })
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    let sequence = |digits: BoxedStrategy<String>| {
        (digits, prop_oneof![3 => Just(0u64), 1 => any::<u64>()]).prop_map(|(n, sub)| {
            Checkpoint::Sequence {
                sequence_number: n,
                sub_sequence_number: sub,
            }
        })
    };
    prop_oneof![
        2 => Just(Checkpoint::ShardEnd),
        1 => Just(Checkpoint::TrimHorizon),
        1 => Just(Checkpoint::Latest),
        1 => Just(Checkpoint::AtTimestamp),
        3 => sequence("[0-9]{1,60}".boxed()),
        // Not a sequence number a table can hold (parsing refuses it), but the type allows it.
        1 => sequence("\\PC{0,70}".boxed()),
    ]
}

fn history(ids: Vec<String>) -> impl Strategy<Value = History> {
    let id = prop_oneof![
        3 => select(ids),
        1 => "\\PC{0,12}",
    ];
    proptest::collection::vec(
        (
            any::<bool>(),
            proptest::collection::vec(id, 0..3),
            instant(),
            select(vec![
                OperationOutcome::Succeeded,
                OperationOutcome::Failed,
                OperationOutcome::InFlight,
            ]),
        ),
        0..8,
    )
    .prop_map(|ops| History {
        operations: ops
            .into_iter()
            .map(|(split, shard_ids, started_at, outcome)| OperationRecord {
                kind: if split {
                    OperationKind::Split
                } else {
                    OperationKind::Merge
                },
                shard_ids,
                started_at,
                outcome,
            })
            .collect(),
    })
}

fn groups(ids: Vec<String>) -> impl Strategy<Value = Vec<ConsumerGroupState>> {
    let id = prop_oneof![
        4 => select(ids),
        1 => "\\PC{0,12}",
    ];
    proptest::collection::vec(
        (
            select(vec!["billing", "fraud-detection", "g", "other"]),
            proptest::option::weighted(0.1, "\\PC{0,30}"),
            proptest::collection::vec((id.clone(), checkpoint()), 0..16),
            proptest::collection::vec((id, "\\PC{0,30}"), 0..2),
            proptest::option::weighted(0.1, "\\PC{0,30}"),
        ),
        0..3,
    )
    .prop_map(|gs| {
        gs.into_iter()
            .map(
                |(name, error, checkpoints, unreadable, note)| ConsumerGroupState {
                    name: name.to_string(),
                    lease_table: format!("{name}-leases"),
                    error,
                    checkpoints: checkpoints.into_iter().collect::<BTreeMap<_, _>>(),
                    unreadable: unreadable.into_iter().collect::<BTreeMap<_, _>>(),
                    note,
                },
            )
            .collect()
    })
}

/// The example policies' streams and a few shapes of their own, all valid.
fn policies() -> Vec<StreamPolicy> {
    let mut out = Vec::new();
    for text in [
        include_str!("../examples/telecom-org-events.yaml"),
        include_str!("../examples/night-merge-only.yaml"),
    ] {
        let file: PolicyFile = load_policy(text, "example").unwrap();
        out.extend(file.spec.streams);
    }
    let longest = load_policy(
        "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  evaluationInterval: 1h\n  streams:\n    - name: s\n      metricsDelay: 30m\n      split:\n        stabilizationWindow: 24h\n        cooldown: 24h\n        policies: [{type: Percent, value: 4294967295, period: 24h}]\n      merge:\n        stabilizationWindow: 1m\n        cooldown: 24h\n        policies: [{type: Shards, value: 4294967295, period: 1m}]\n      budgets:\n        - {schedule: \"@yearly\", duration: 366d, minShards: 200}\n        - {schedule: \"0 0 29 2 *\", duration: 366d, splits: 0}\n        - {merges: 1}\n      consumerGroups: [{name: g, leaseTable: g-leases}]\n",
        "longest",
    )
    .unwrap();
    out.extend(longest.spec.streams);
    out.push(StreamPolicy::with_defaults("s"));
    out
}

#[derive(Debug, Clone)]
struct Case {
    policy: StreamPolicy,
    snapshot: Snapshot,
    now: DateTime<Utc>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        select(policies()),
        shards(),
        instant(),
        (-200i64..200, 0u8..10),
        select(vec![
            StreamStatus::Active,
            StreamStatus::Active,
            StreamStatus::Active,
            StreamStatus::Updating,
            StreamStatus::Creating,
            StreamStatus::Deleting,
        ]),
        proptest::bool::weighted(0.95),
        (0i64..600, 0u8..10),
    )
        .prop_flat_map(
            |(
                policy,
                shards,
                observed_at,
                (start_back, wild_start),
                status,
                same_name,
                (later, wild_now),
            )| {
                let ids: Vec<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
                (
                    Just((policy, shards, observed_at, status, same_name)),
                    history(ids.clone()),
                    groups(ids),
                    instant(),
                    instant(),
                    Just((start_back, wild_start, later, wild_now)),
                )
            },
        )
        .prop_map(
            |(
                (policy, shards, observed_at, status, same_name),
                history,
                consumer_groups,
                wild_start,
                wild_now,
                (start_back, ws, later, wn),
            )| {
                let metrics_start = if ws == 0 {
                    wild_start
                } else {
                    observed_at
                        .checked_sub_signed(TimeDelta::minutes(start_back))
                        .unwrap_or(observed_at)
                };
                let now = if wn == 0 {
                    wild_now
                } else {
                    observed_at
                        .checked_add_signed(TimeDelta::seconds(later))
                        .unwrap_or(observed_at)
                };
                let stream_name = if same_name {
                    policy.name.clone()
                } else {
                    "another-stream".to_string()
                };
                let observation = Observation {
                    stream_name,
                    stream_status: status,
                    observed_at,
                    metrics_start,
                    shards,
                    consumer_groups,
                };
                Case {
                    policy,
                    snapshot: Snapshot::new(observation, history),
                    now,
                }
            },
        )
}

/// Plans, and checks what a caller does with the decision: print it, serialise it, apply it.
fn plan_and_use(policy: &StreamPolicy, snapshot: &Snapshot, now: DateTime<Utc>) {
    let obs = &snapshot.observation;
    let result = plan(policy, obs, &snapshot.history, now);
    if std::env::var_os("FUZZ_STATS").is_some() {
        match &result {
            Ok(d) => eprintln!("STATS ok ops={} held={}", d.operations.len(), d.held.len()),
            Err(e) => eprintln!("STATS err {}", e.label()),
        }
    }
    let Ok(decision) = result else {
        return;
    };
    for op in &decision.operations {
        let _ = op.to_string();
    }
    for held in &decision.held {
        let _ = held.to_string();
    }
    serde_json::to_string(&decision).unwrap();
    // The operations of a plan always apply to the shards they were planned on.
    apply(&obs.shards, &decision.operations).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(1500),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random observations straight into `plan()`, with floats JSON cannot carry (NaN, ±inf).
    #[test]
    fn observations_never_panic_the_planner(c in case()) {
        plan_and_use(&c.policy, &c.snapshot, c.now);
    }

    /// The same snapshots written as JSON and read back the way `shardctl plan --snapshot` reads
    /// them, with a few bytes changed.
    #[test]
    fn snapshot_files_never_panic(c in case(),
                                  edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                                  cut in proptest::option::weighted(0.1, any::<prop::sample::Index>())) {
        let json = serde_json::to_string_pretty(&c.snapshot).unwrap();
        let mut bytes = json.into_bytes();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(snapshot) = serde_json::from_str::<Snapshot>(&text) {
            plan_and_use(&c.policy, &snapshot, c.now);
        }
    }

    /// The example snapshots with bytes changed, planned at any instant.
    #[test]
    fn mutated_example_snapshots_never_panic(telecom in any::<bool>(),
                                             edits in proptest::collection::vec((any::<prop::sample::Index>(), select(b"0123456789-+.eE\",:[]{}nul \xff".to_vec())), 1..6),
                                             now in instant()) {
        let text = if telecom {
            include_str!("../examples/snapshots/telecom-hot-org.json")
        } else {
            include_str!("../examples/snapshots/audit-idle.json")
        };
        let mut bytes = text.as_bytes().to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(snapshot) = serde_json::from_str::<Snapshot>(&text) {
            for mut policy in policies() {
                policy.name = snapshot.observation.stream_name.clone();
                plan_and_use(&policy, &snapshot, now);
            }
        }
    }
}
