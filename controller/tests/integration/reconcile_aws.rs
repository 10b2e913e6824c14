//! The reconcile cycle against the emulators: kinesis-local (Kinesis) and moto (DynamoDB,
//! CloudWatch), with shard-level metrics injected through `PutMetricData`.
//!
//! Longer than 500 lines by choice: ten scenarios of one cycle against one set of emulators, each
//! a situation an operator meets (hot shard, cold pair, missing metrics, held by a lagging
//! group, ...); the shared set-up is in `shardctl-test-support`.
#![allow(clippy::unwrap_used)]

use crate::support::*;
use shardctl_controller::aws::{Aws, AwsKinesis};
use shardctl_controller::backend::{
    BackendError, Backends, Fence, Kinesis, ShardMetric, StateStore, StreamDescription,
};
use shardctl_controller::reconcile::{
    Context, CycleSettings, DryRunExecutor, Executed, LiveExecutor,
};
use shardctl_policies::history::{OperationKind, OperationOutcome};
use shardctl_policies::plan::PlannedOperation;
use shardctl_policies::policy::ConsumerGroup;
use shardctl_policies::{HashKey, HumanDuration, Shard, ShardMap, StreamPolicy};
use std::time::Duration;

fn test_policy(stream: &str) -> StreamPolicy {
    let mut p = StreamPolicy::with_defaults(stream);
    p.metrics_delay = HumanDuration::mins(1);
    p.split.stabilization_window = HumanDuration::mins(3);
    p.merge.stabilization_window = HumanDuration::mins(5);
    p.merge.cooldown = HumanDuration::mins(30);
    p.max_operations_per_cycle = 2;
    p
}

fn settings() -> CycleSettings {
    CycleSettings {
        active_timeout: Duration::from_secs(30),
        active_poll: Duration::from_millis(100),
        ..CycleSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_hot_shard_is_split_recorded_and_its_cooldown_survives_a_restart() {
    let c = clients().await;
    let stream = unique("hot");
    create_stream(&c.kinesis, &stream, 3).await;
    let table = unique("state");
    let (svc, _) = services(&table).await;
    let shards = open_shards(&svc, &stream).await;
    put_utilization(&c, &stream, &shards[0].shard_id, 95.0, 10.0, 10, &[]).await;
    put_utilization(&c, &stream, &shards[1].shard_id, 5.0, 5.0, 10, &[]).await;
    put_utilization(&c, &stream, &shards[2].shard_id, 5.0, 5.0, 10, &[]).await;
    let mut policy = test_policy(&stream);
    policy.max_operations_per_cycle = 1;
    let token = lead(&svc, "replica-a").await;

    let report = svc
        .cycle(&policy, &LiveExecutor, Some(&token), &settings())
        .await
        .unwrap();
    let split = &shards[0].shard_id;
    assert!(
        matches!(&report.executed[..], [Executed::Done(PlannedOperation::Split { shard_id, .. })] if shard_id == split),
        "{:#?}",
        report.executed
    );
    // Splits come first; the cold pair waits for the next cycle.
    assert!(
        report
            .decision
            .held
            .iter()
            .any(|h| h.limit.label() == "max_operations_per_cycle"),
        "{:#?}",
        report.decision.held
    );

    // The stream is ACTIVE again and the key space is still covered, by 4 open shards.
    wait_active(&c.kinesis, &stream).await;
    let all = svc.kinesis.list_shards(&stream).await.unwrap();
    let map = ShardMap::new(&all).unwrap();
    assert_eq!(map.open_count(), 4);
    let children: Vec<_> = all
        .iter()
        .filter(|s| s.parent_shard_id.as_deref() == Some(split))
        .collect();
    assert_eq!(children.len(), 2);

    // The journal says what happened.
    let history = svc.history(&stream).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].record.kind, OperationKind::Split);
    assert_eq!(history[0].record.outcome, OperationOutcome::Succeeded);

    // A new process (fresh services over the same table) honours the merge cooldown that the
    // split started.
    let (restarted, _) = services(&table).await;
    let report = restarted
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    assert!(
        report.decision.operations.is_empty(),
        "{:#?}",
        report.decision.operations
    );
    assert!(
        report
            .decision
            .held
            .iter()
            .any(|h| h.limit.label() == "cooldown")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_pair_is_merged_but_a_pair_with_a_missing_minute_is_not() {
    let c = clients().await;
    let stream = unique("cold");
    create_stream(&c.kinesis, &stream, 4).await;
    let (svc, _) = services(&unique("state")).await;
    let shards = open_shards(&svc, &stream).await;
    put_utilization(&c, &stream, &shards[0].shard_id, 5.0, 5.0, 10, &[]).await;
    put_utilization(&c, &stream, &shards[1].shard_id, 6.0, 6.0, 10, &[]).await;
    // (1, 2) is too warm together; (2, 3) would be cold but shard 3 misses a minute.
    put_utilization(&c, &stream, &shards[2].shard_id, 36.0, 2.0, 10, &[]).await;
    put_utilization(&c, &stream, &shards[3].shard_id, 1.0, 1.0, 10, &[3]).await;
    let mut policy = test_policy(&stream);
    policy.merge.cooldown = HumanDuration::secs(0);
    let token = lead(&svc, "replica-a").await;
    let report = svc
        .cycle(&policy, &LiveExecutor, Some(&token), &settings())
        .await
        .unwrap();
    let merged: Vec<_> = report
        .executed
        .iter()
        .map(|e| match e {
            Executed::Done(PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                ..
            }) => (shard_id.clone(), adjacent_shard_id.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        merged,
        vec![(shards[0].shard_id.clone(), shards[1].shard_id.clone())]
    );
    let held: Vec<_> = report
        .decision
        .held
        .iter()
        .map(|h| (h.shard_ids.clone(), h.limit.label()))
        .collect();
    assert!(
        held.contains(&(
            vec![shards[2].shard_id.clone(), shards[3].shard_id.clone()],
            "incomplete_data"
        )),
        "{held:?}"
    );
    wait_active(&c.kinesis, &stream).await;
    assert_eq!(open_shards(&svc, &stream).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_operation_and_changes_nothing() {
    let c = clients().await;
    let stream = unique("dry");
    create_stream(&c.kinesis, &stream, 2).await;
    let table = unique("state");
    let (svc, telemetry) = services(&table).await;
    let before = svc.kinesis.list_shards(&stream).await.unwrap();
    put_utilization(&c, &stream, &before[0].shard_id, 97.0, 10.0, 10, &[]).await;
    let report = svc
        .cycle(&test_policy(&stream), &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    assert!(matches!(
        &report.executed[..],
        [Executed::DryRun(PlannedOperation::Split { .. })]
    ));
    assert_eq!(svc.kinesis.list_shards(&stream).await.unwrap(), before);
    assert!(
        !table_exists(&c, &table).await,
        "a dry run must not create the state table"
    );
    let metrics = telemetry.encode();
    assert!(!metrics.contains("api=\"SplitShard\""), "{metrics}");
    assert!(!metrics.contains("api=\"MergeShards\""), "{metrics}");
}

/// Kinesis whose reshard calls land, then never return: the process "dies" between the Kinesis
/// call and its bookkeeping.
#[derive(Clone)]
struct DiesAfterTheCall(AwsKinesis);

impl Kinesis for DiesAfterTheCall {
    async fn describe_stream(&self, stream: &str) -> Result<StreamDescription, BackendError> {
        self.0.describe_stream(stream).await
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, BackendError> {
        self.0.list_shards(stream).await
    }

    async fn split_shard(
        &self,
        stream: &str,
        shard_id: &str,
        key: HashKey,
        fence: &Fence,
    ) -> Result<(), BackendError> {
        self.0.split_shard(stream, shard_id, key, fence).await?;
        std::future::pending().await
    }

    async fn merge_shards(
        &self,
        stream: &str,
        shard_id: &str,
        adjacent: &str,
        fence: &Fence,
    ) -> Result<(), BackendError> {
        self.0
            .merge_shards(stream, shard_id, adjacent, fence)
            .await?;
        std::future::pending().await
    }

    async fn enable_shard_metrics(
        &self,
        stream: &str,
        metrics: &[ShardMetric],
    ) -> Result<(), BackendError> {
        self.0.enable_shard_metrics(stream, metrics).await
    }
}

/// AWS, but with [`DiesAfterTheCall`] for Kinesis.
enum Dying {}

impl Backends for Dying {
    type Kinesis = DiesAfterTheCall;
    type Metrics = <Aws as Backends>::Metrics;
    type Leases = <Aws as Backends>::Leases;
    type State = <Aws as Backends>::State;
    type Clock = <Aws as Backends>::Clock;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_call_and_its_record_never_repeats_the_operation() {
    let c = clients().await;
    let stream = unique("crash");
    create_stream(&c.kinesis, &stream, 2).await;
    let table = unique("state");
    let (svc, _) = services(&table).await;
    let shards = open_shards(&svc, &stream).await;
    put_utilization(&c, &stream, &shards[0].shard_id, 95.0, 10.0, 10, &[]).await;
    let policy = test_policy(&stream);
    let token = lead(&svc, "replica-a").await;

    let dying: Context<Dying> = Context {
        kinesis: DiesAfterTheCall(svc.kinesis.clone()),
        metrics: svc.metrics.clone(),
        leases: svc.leases.clone(),
        state: svc.state.clone(),
        clock: svc.clock,
        telemetry: svc.telemetry.clone(),
    };
    let crashed = tokio::time::timeout(
        Duration::from_secs(5),
        dying.cycle(&policy, &LiveExecutor, Some(&token), &settings()),
    )
    .await;
    assert!(crashed.is_err(), "the cycle should hang after the call");
    let journal = svc.history(&stream).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].record.outcome, OperationOutcome::InFlight);

    // Another replica takes over (the crashed one's lease lapsed). Until it has led for a lease
    // plus one reshard attempt, the crashed leader's last call could still land: the entry stays
    // in flight and holds the stream.
    wait_active(&c.kinesis, &stream).await;
    let (restarted, telemetry) = services(&table).await;
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(60);
    let mut successor = restarted
        .state
        .acquire_leadership("replica-b", Duration::from_secs(30), later)
        .await
        .unwrap()
        .expect("the crashed leader's lease lapsed");
    assert!(successor.fence > token.fence);
    let live = LiveExecutor;
    let report = restarted
        .cycle(&policy, &live, Some(&successor), &settings())
        .await
        .unwrap();
    assert!(report.resolved.is_empty(), "{:?}", report.resolved);
    assert!(report.executed.is_empty(), "{:#?}", report.executed);
    // A lease plus one attempt later: settled from the shard map, and not repeated.
    successor.acquired_at = tokio::time::Instant::now()
        .checked_sub(successor.ttl + successor.attempt_timeout())
        .unwrap();
    let report = restarted
        .cycle(&policy, &live, Some(&successor), &settings())
        .await
        .unwrap();
    assert_eq!(report.resolved.len(), 1);
    assert_eq!(report.resolved[0].1, OperationOutcome::Succeeded);
    assert!(report.executed.is_empty(), "{:#?}", report.executed);
    assert!(!telemetry.encode().contains("api=\"SplitShard\""));
    let all = restarted.kinesis.list_shards(&stream).await.unwrap();
    assert_eq!(
        ShardMap::new(&all).unwrap().open_count(),
        3,
        "exactly one split happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_gate_holds_children_until_the_parent_is_drained() {
    let c = clients().await;
    let stream = unique("gate");
    create_stream(&c.kinesis, &stream, 1).await;
    let (svc, _) = services(&unique("state")).await;
    let parent = open_shards(&svc, &stream).await.remove(0);
    let key = parent.hash_key_range.midpoint_split_key().unwrap();
    svc.kinesis
        .split_shard(&stream, &parent.shard_id, key, &open_fence())
        .await
        .unwrap();
    wait_active(&c.kinesis, &stream).await;
    let children = open_shards(&svc, &stream).await;
    put_utilization(&c, &stream, &children[0].shard_id, 96.0, 10.0, 10, &[]).await;
    put_utilization(&c, &stream, &children[1].shard_id, 50.0, 10.0, 10, &[]).await;
    let leases = unique("billing");
    lease_table(
        &c,
        &leases,
        &[
            (
                &parent.shard_id,
                "49654910385420946271138209451022367872543657233510891522",
            ),
            (&children[0].shard_id, "TRIM_HORIZON"),
            (&children[1].shard_id, "TRIM_HORIZON"),
        ],
    )
    .await;
    let mut policy = test_policy(&stream);
    policy.consumer_groups = vec![ConsumerGroup {
        name: "billing".into(),
        lease_table: leases.clone(),
    }];
    let report = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    assert!(report.decision.operations.is_empty());
    let reason = report.decision.held[0].limit.to_string();
    assert_eq!(
        reason,
        format!(
            "waiting for group billing to drain {} (checkpoint …233510891522)",
            parent.shard_id
        )
    );

    set_checkpoint(&c, &leases, &parent.shard_id, "SHARD_END").await;
    let report = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    assert_eq!(
        report.decision.operations.len(),
        1,
        "{:#?}",
        report.decision.held
    );

    // A lease table that does not exist is an error for the stream, not a silent pass.
    policy.consumer_groups[0].lease_table = unique("missing");
    let err = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap_err();
    assert_eq!(err.label(), "lease_table");
    assert!(
        err.to_string()
            .contains("consumer group billing cannot be read"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_act() {
    let c = clients().await;
    let stream = unique("fence");
    create_stream(&c.kinesis, &stream, 2).await;
    let table = unique("state");
    let (svc, _) = services(&table).await;
    let shards = open_shards(&svc, &stream).await;
    put_utilization(&c, &stream, &shards[0].shard_id, 95.0, 10.0, 10, &[]).await;
    svc.state.ensure().await.unwrap();
    let now = chrono::Utc::now();
    let old = svc
        .state
        .acquire_leadership(
            "old",
            Duration::from_secs(3),
            now - chrono::TimeDelta::seconds(10),
        )
        .await
        .unwrap()
        .unwrap();
    // Its lease lapsed; another replica took over.
    let new = svc
        .state
        .acquire_leadership("new", Duration::from_secs(30), now)
        .await
        .unwrap()
        .unwrap();
    assert!(new.fence > old.fence);
    let err = svc
        .cycle(
            &test_policy(&stream),
            &LiveExecutor,
            Some(&old),
            &settings(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.label(), "not_leader");
    assert_eq!(
        open_shards(&svc, &stream).await.len(),
        2,
        "nothing was split"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_shard_is_split_where_its_sampled_traffic_halves() {
    use shardctl_policies::key_sample::hash_key_of;
    use shardctl_policies::plan::SplitPointUsed;
    let c = clients().await;
    let stream = unique("weighted");
    create_stream(&c.kinesis, &stream, 1).await;
    let (svc, _) = services(&unique("state")).await;
    let shard = open_shards(&svc, &stream).await.remove(0);
    // One organisation writes 60 % of the records, 400 others the rest.
    let mut entries = Vec::new();
    for i in 0..1000 {
        let key = if i % 5 < 3 {
            "org-acme".to_string()
        } else {
            format!("org-{i}")
        };
        entries.push(
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(aws_smithy_types::Blob::new(vec![b'x'; 100]))
                .build()
                .unwrap(),
        );
    }
    for chunk in entries.chunks(500) {
        let out = c
            .kinesis
            .put_records()
            .stream_name(&stream)
            .set_records(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
    put_utilization(&c, &stream, &shard.shard_id, 95.0, 30.0, 10, &[]).await;
    let report = svc
        .cycle(&test_policy(&stream), &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    let Some(PlannedOperation::Split {
        new_starting_hash_key,
        split_point,
        lower_child_share,
        ..
    }) = report.decision.operations.first()
    else {
        panic!("a split: {:#?}", report.decision)
    };
    assert_eq!(*split_point, SplitPointUsed::TrafficWeighted);
    let acme = hash_key_of("org-acme");
    assert!(
        *new_starting_hash_key == acme || *new_starting_hash_key == acme + 1,
        "the split lands at the heavy key, not at {new_starting_hash_key}"
    );
    println!("split at org-acme's hash key; expected lower child share {lower_child_share:.2}");
}

/// Writes one row as the KCL serializer would (plus whatever non-lease rows KCL 3.5 keeps).
async fn put_row(
    c: &Clients,
    table: &str,
    row: &[(&str, aws_sdk_dynamodb::types::AttributeValue)],
) {
    let mut req = c.dynamodb.put_item().table_name(table);
    for (name, value) in row {
        req = req.item(*name, value.clone());
    }
    req.send().await.unwrap();
}

/// A KCL 3.5 lease row (`entityType` = `LEASE`), single- or multi-stream key.
fn kcl_lease(
    key: &str,
    checkpoint: &str,
    parents: &[&str],
) -> Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)> {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S, Ss};
    let mut row = vec![
        ("leaseKey", S(key.into())),
        ("leaseOwner", S("kcl-worker-1".into())),
        ("leaseCounter", N("41".into())),
        ("checkpoint", S(checkpoint.into())),
        ("checkpointSubSequenceNumber", N("0".into())),
        ("ownerSwitchesSinceCheckpoint", N("0".into())),
        ("throughputKBps", N("12.5".into())),
        ("entityType", S("LEASE".into())),
    ];
    if !parents.is_empty() {
        row.push((
            "parentShardId",
            Ss(parents.iter().map(|p| p.to_string()).collect()),
        ));
    }
    row
}

/// Stream with a split parent and two children, the first hot; an empty lease table; a policy
/// gated on it.
async fn split_stream_with_gate(
    c: &Clients,
    svc: &shardctl_controller::aws::AwsContext,
) -> (
    String,
    String,
    Vec<shardctl_policies::Shard>,
    String,
    StreamPolicy,
) {
    let stream = unique("kcl");
    create_stream(&c.kinesis, &stream, 1).await;
    let parent = open_shards(svc, &stream).await.remove(0);
    let key = parent.hash_key_range.midpoint_split_key().unwrap();
    svc.kinesis
        .split_shard(&stream, &parent.shard_id, key, &open_fence())
        .await
        .unwrap();
    wait_active(&c.kinesis, &stream).await;
    let children = open_shards(svc, &stream).await;
    put_utilization(c, &stream, &children[0].shard_id, 96.0, 10.0, 10, &[]).await;
    put_utilization(c, &stream, &children[1].shard_id, 50.0, 10.0, 10, &[]).await;
    let leases = unique("kcl-app");
    lease_table(c, &leases, &[]).await;
    let mut policy = test_policy(&stream);
    policy.consumer_groups = vec![ConsumerGroup {
        name: "kclapp".into(),
        lease_table: leases.clone(),
    }];
    (stream, parent.shard_id, children, leases, policy)
}

/// KCL 3.5+ keeps coordinator state and worker metrics in the lease table (rows shaped as
/// KCL's MigrationState, LeaderLock, StreamInfo and WorkerMetricStats write them). They are
/// skipped, not a failed stream; then KCL's lease cleanup deletes the finished parent and the
/// hot child is split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcl_3_5_table_with_coordinator_rows_gates_and_survives_lease_cleanup() {
    use aws_sdk_dynamodb::types::AttributeValue::{Bool, L, M, N, S};
    let c = clients().await;
    let (svc, _) = services(&unique("state")).await;
    let (stream, parent, children, leases, policy) = split_stream_with_gate(&c, &svc).await;
    let seq = "49654910385420946271138209451022367872543657233510891522";
    put_row(&c, &leases, &kcl_lease(&parent, seq, &[])).await;
    put_row(
        &c,
        &leases,
        &kcl_lease(&children[0].shard_id, "TRIM_HORIZON", &[&parent]),
    )
    .await;
    put_row(
        &c,
        &leases,
        &kcl_lease(&children[1].shard_id, "TRIM_HORIZON", &[&parent]),
    )
    .await;
    let history = L(vec![M(
        [("cv".to_string(), S("CLIENT_VERSION_2X".into()))].into()
    )]);
    put_row(
        &c,
        &leases,
        &[
            ("leaseKey", S("Migration3.0".into())),
            ("entityType", S("CLIENT_VERSION_MIGRATION".into())),
            ("cv", S("CLIENT_VERSION_3X".into())),
            ("mb", S("kcl-worker-1".into())),
            ("mts", N("1764547200000".into())),
            ("h", history),
        ],
    )
    .await;
    put_row(
        &c,
        &leases,
        &[
            ("leaseKey", S("TableMigration3.5".into())),
            ("entityType", S("TABLE_MIGRATION".into())),
            ("tm", S("TABLE_MIGRATION_STATUS_COMPLETE".into())),
        ],
    )
    .await;
    put_row(
        &c,
        &leases,
        &[
            ("leaseKey", S("Leader".into())),
            ("entityType", S("LEADER".into())),
            ("ownerName", S("kcl-worker-1".into())),
            ("leaseDuration", S("20000".into())),
            ("recordVersionNumber", S("9d2c".into())),
            ("isReleased", Bool(false)),
        ],
    )
    .await;
    put_row(
        &c,
        &leases,
        &[
            ("leaseKey", S(stream.clone())),
            ("entityType", S("STREAM".into())),
            ("streamId", S(stream.clone())),
        ],
    )
    .await;
    put_row(
        &c,
        &leases,
        &[
            ("leaseKey", S("kcl-worker-1".into())),
            ("entityType", S("WORKER_METRIC_STATS".into())),
            ("lut", N("1764547200".into())),
            (
                "sts",
                M([("C".to_string(), L(vec![N("12.5".into())]))].into()),
            ),
            ("sup", N("0".into())),
        ],
    )
    .await;

    let report = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    assert!(report.decision.operations.is_empty());
    assert_eq!(
        report.decision.held[0].limit.to_string(),
        format!("waiting for group kclapp to drain {parent} (checkpoint …233510891522)")
    );
    let observation = svc.observe(&policy).await.unwrap();
    let group = &observation.consumer_groups[0];
    assert_eq!(group.checkpoints.len(), 3, "{group:?}");
    assert!(
        group
            .note
            .as_deref()
            .unwrap_or("")
            .contains("5 non-lease rows skipped"),
        "{group:?}"
    );

    // The parent finishes, a child progresses, and KCL's LeaseCleanupManager deletes the
    // parent's row: the gate reads the child's checkpoint as KCL's own evidence.
    put_row(
        &c,
        &leases,
        &kcl_lease(&children[1].shard_id, seq, &[&parent]),
    )
    .await;
    c.dynamodb
        .delete_item()
        .table_name(&leases)
        .key("leaseKey", S(parent.clone()))
        .send()
        .await
        .unwrap();
    let report = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    assert_eq!(
        report.decision.operations.len(),
        1,
        "{:#?}",
        report.decision.held
    );
    assert_eq!(
        report.decision.operations[0].shard_ids(),
        vec![children[0].shard_id.as_str()]
    );
}

/// A multi-stream lease table: the gate reads the rows of its own stream (matched by account,
/// name and creation epoch) and ignores another stream's rows for the same shard ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_stream_table_is_read_for_its_own_stream_only() {
    let c = clients().await;
    let (svc, _) = services(&unique("state")).await;
    let (stream, parent, children, leases, policy) = split_stream_with_gate(&c, &svc).await;
    let summary = c
        .kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let summary = summary.stream_description_summary().unwrap();
    let account = summary.stream_arn().split(':').nth(4).unwrap().to_string();
    let epoch = summary.stream_creation_timestamp().secs();
    let ours = |shard: &str| format!("{account}:{stream}:{epoch}:{shard}");
    let theirs = |shard: &str| format!("{account}:other-stream:{epoch}:{shard}");
    // Another stream's lineage: the same shard ids, its parent far from drained.
    put_row(
        &c,
        &leases,
        &kcl_lease(&theirs(&parent), "TRIM_HORIZON", &[]),
    )
    .await;
    // An older stream of the same name (deleted and re-created) left rows too.
    let old = format!("{account}:{stream}:{}:{parent}", epoch - 86_400);
    put_row(&c, &leases, &kcl_lease(&old, "TRIM_HORIZON", &[])).await;
    // Ours: the parent is finished.
    put_row(&c, &leases, &kcl_lease(&ours(&parent), "SHARD_END", &[])).await;
    put_row(
        &c,
        &leases,
        &kcl_lease(&ours(&children[0].shard_id), "TRIM_HORIZON", &[&parent]),
    )
    .await;

    let report = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    assert_eq!(
        report.decision.operations.len(),
        1,
        "{:#?}",
        report.decision.held
    );
    let observation = svc.observe(&policy).await.unwrap();
    let group = &observation.consumer_groups[0];
    let note = group.note.as_deref().unwrap_or("");
    assert!(
        note.contains("multi-stream table") && note.contains("2 rows of other streams skipped"),
        "{note}"
    );

    // Without our parent's row, the other stream's rows do not count as ours: unknown, held.
    c.dynamodb
        .delete_item()
        .table_name(&leases)
        .key(
            "leaseKey",
            aws_sdk_dynamodb::types::AttributeValue::S(ours(&parent)),
        )
        .send()
        .await
        .unwrap();
    let report = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    assert!(report.decision.operations.is_empty());
    assert!(
        report.decision.held[0]
            .limit
            .to_string()
            .contains("unknown"),
        "{}",
        report.decision.held[0].limit
    );
}

/// Regression: a malformed row (a checkpoint with non-ASCII characters, a row without
/// `checkpoint`) failed the whole stream or panicked the planner. It is an explained hold for
/// the shard it concerns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lease_rows_hold_only_their_shards() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let c = clients().await;
    let (svc, _) = services(&unique("state")).await;
    let (_stream, parent, _children, leases, policy) = split_stream_with_gate(&c, &svc).await;
    put_row(&c, &leases, &kcl_lease(&parent, "４９６５４９１０３８５４２０９４６２７１１３８２０９４５１０２２３６７８７２５４３６５７２３３５１０８９１５２２", &[])).await;
    let report = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    let limit = report.decision.held[0].limit.to_string();
    assert!(
        limit.contains("lease row unreadable") && limit.contains("neither a sentinel"),
        "{limit}"
    );
    put_row(
        &c,
        &leases,
        &[
            ("leaseKey", S(parent.clone())),
            ("leaseCounter", N("3".into())),
        ],
    )
    .await;
    let report = svc
        .cycle(&policy, &DryRunExecutor, None, &settings())
        .await
        .unwrap();
    let limit = report.decision.held[0].limit.to_string();
    assert!(limit.contains("attribute checkpoint is missing"), "{limit}");
}
