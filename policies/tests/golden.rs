//! Golden tests: the example snapshots are built from fixtures (so they cannot rot), and the
//! decisions on them are compared with committed JSON. Run with `UPDATE_GOLDEN=1` to rewrite
//! both after an intended change, and review the diff.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, Utc};
use shardctl_policies::fixture::StreamFixture;
use shardctl_policies::history::{OperationKind, OperationOutcome, OperationRecord};
use shardctl_policies::observation::{HeavyKey, KeyBucket};
use shardctl_policies::{Checkpoint, History, KeyDistribution, Snapshot, load_policy, plan};
use std::path::Path;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// org-events on a Monday at 14:00 UTC: shard 2 runs hot (organisation `acme` surging, 45 % of
/// its traffic), shard 6 is hot too but billing has not finished its parent, shards 4 and 5 are
/// cold but business hours freeze merges, and shard 0 misses a few datapoints.
pub fn telecom_snapshot() -> Snapshot {
    let now = at("2026-11-02T14:00:00Z");
    let f = StreamFixture::new("org-events", 4, 60, now)
        .split_existing(1)
        .split_existing(3)
        .utilization(0, 48.0, 40.0)
        .missing(0, 55..58)
        .utilization(2, 92.0, 35.0)
        .throttled(2, 50..57, 1200.0)
        .cold(4)
        .utilization(5, 6.0, 4.0)
        .utilization(6, 95.0, 60.0)
        .utilization(7, 30.0, 20.0);
    let r = f.range(2);
    let acme = r.key_at_fraction(0.62);
    let dist = KeyDistribution {
        buckets: (0..8)
            .map(|b| KeyBucket {
                starting_hash_key: r.key_at_fraction(b as f64 / 8.0) + (b > 0) as u128,
                ending_hash_key: r.key_at_fraction((b + 1) as f64 / 8.0),
                weight: 55.0 / 8.0,
            })
            .collect(),
        heavy_keys: vec![HeavyKey {
            hash_key: acme,
            partition_key: Some("org-acme".into()),
            weight: 45.0,
        }],
    };
    let f = f
        .key_distribution(2, dist)
        .group(
            "billing",
            &[
                (1, Checkpoint::ShardEnd),
                (
                    3,
                    Checkpoint::parse(
                        "49654910385420946271138209451022367872543657233510891522",
                        0,
                    )
                    .expect("sequence number"),
                ),
            ],
        )
        .group(
            "fraud-detection",
            &[(1, Checkpoint::ShardEnd), (3, Checkpoint::ShardEnd)],
        );
    let obs = f.build();
    let history = History {
        operations: [(1, 110), (3, 80)]
            .iter()
            .map(|&(i, ago)| OperationRecord {
                kind: OperationKind::Split,
                shard_ids: vec![obs.shards[i].shard_id.clone()],
                started_at: now - TimeDelta::minutes(ago),
                outcome: OperationOutcome::Succeeded,
            })
            .collect(),
    };
    Snapshot::new(obs, history)
}

/// audit-log at 03:00 UTC: six shards, all idle for two hours.
pub fn audit_snapshot() -> Snapshot {
    let now = at("2026-11-03T03:00:00Z");
    let mut f = StreamFixture::new("audit-log", 6, 120, now);
    for i in 0..6 {
        f = f.utilization(i, 3.0 + i as f64, 2.0);
    }
    Snapshot::new(f.build(), History::default())
}

fn check(path: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
    assert!(
        expected == actual,
        "{} differs from what the code produces; run `UPDATE_GOLDEN=1 cargo test -p shardctl-policies --test golden` and review the diff",
        path.display()
    );
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

#[test]
fn telecom_example_snapshot_and_decision() {
    let snap = telecom_snapshot();
    check("examples/snapshots/telecom-hot-org.json", &pretty(&snap));
    let policy = load_policy(
        include_str!("../examples/telecom-org-events.yaml"),
        "telecom",
    )
    .unwrap();
    let stream = policy.stream("org-events").unwrap();
    let d = plan(
        stream,
        &snap.observation,
        &snap.history,
        snap.observation.observed_at,
    )
    .unwrap();
    // What the example is meant to show, checked directly rather than only by the golden file:
    assert_eq!(d.operations.len(), 1, "{:#?}", d.operations);
    assert!(
        d.operations[0]
            .to_string()
            .starts_with("split shardId-000000000002")
    );
    let limits: Vec<_> = d.held.iter().map(|h| h.limit.label()).collect();
    assert_eq!(limits, vec!["drain_pending", "budget"]);
    check("tests/golden/telecom-hot-org.decision.json", &pretty(&d));
}

#[test]
fn night_policy_merges_at_night_and_holds_by_day() {
    let snap = audit_snapshot();
    check("examples/snapshots/audit-idle.json", &pretty(&snap));
    let policy = load_policy(include_str!("../examples/night-merge-only.yaml"), "night").unwrap();
    let stream = policy.stream("audit-log").unwrap();
    let night = plan(
        stream,
        &snap.observation,
        &snap.history,
        snap.observation.observed_at,
    )
    .unwrap();
    assert_eq!(night.operations.len(), 1);
    check(
        "tests/golden/audit-idle.night.decision.json",
        &pretty(&night),
    );
    let day_time = at("2026-11-03T09:00:00Z");
    let mut obs = snap.observation.clone();
    obs.observed_at = day_time;
    obs.metrics_start += TimeDelta::hours(6);
    let day = plan(stream, &obs, &snap.history, day_time).unwrap();
    assert!(day.operations.is_empty());
    assert!(day.held.iter().all(|h| h.limit.label() == "budget"));
}

#[test]
fn committed_json_schemas_match_the_types() {
    use shardctl_policies::schema;
    check(
        "schema/policy.schema.json",
        &schema::render(&schema::policy_schema()),
    );
    check(
        "schema/snapshot.schema.json",
        &schema::render(&schema::snapshot_schema()),
    );
}

#[test]
fn committed_policy_reference_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy-reference.md");
    let actual = shardctl_policies::schema::policy_reference_markdown();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "docs/policy-reference.md is stale; run `UPDATE_GOLDEN=1 cargo test -p shardctl-policies --test golden`"
    );
}
