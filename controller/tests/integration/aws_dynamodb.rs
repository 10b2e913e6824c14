//! The DynamoDB adapters against moto: KCL lease tables read across pages, and the state
//! store's leader lease with fencing and its operation journal.
//!
//! Needs the emulators: `scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"`.

#![allow(clippy::unwrap_used)]

use crate::support::{backend, calls, create_hash_table, sdk_config, unique};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{TimeZone, Utc};
use shardctl_controller::aws::{AwsOptions, DynamoStateStore};
use shardctl_controller::backend::{BackendError, LeaseTables, StateStore};
use shardctl_lease::StreamFilter;
use shardctl_policies::{Checkpoint, OperationKind, OperationOutcome, OperationRecord};
use std::time::Duration;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

#[tokio::test]
async fn kcl_lease_table_checkpoints_are_read_across_scan_pages() {
    let config = sdk_config().await;
    let (aws, telemetry) = backend(
        &config,
        AwsOptions {
            page_size: Some(10),
            ..AwsOptions::default()
        },
    );
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("shardctl-leases");
    create_hash_table(&client, &table, "leaseKey").await;
    let checkpoint = |i: usize| match i % 4 {
        0 => "SHARD_END".to_string(),
        1 => "TRIM_HORIZON".to_string(),
        2 => "LATEST".to_string(),
        _ => format!("4963{i:052}"),
    };
    for i in 0..25 {
        client
            .put_item()
            .table_name(&table)
            .item("leaseKey", s(format!("shardId-{i:012}")))
            .item("leaseOwner", s("worker-1"))
            .item("leaseCounter", AttributeValue::N((i * 7).to_string()))
            .item("checkpoint", s(checkpoint(i)))
            .item("checkpointSubSequenceNumber", AttributeValue::N("0".into()))
            .item(
                "ownerSwitchesSinceCheckpoint",
                AttributeValue::N("0".into()),
            )
            .item(
                "parentShardId",
                AttributeValue::Ss(vec!["shardId-000000000099".into()]),
            )
            .send()
            .await
            .unwrap();
    }

    let rows = aws
        .lease_tables
        .rows(&table, &StreamFilter::named("orders"))
        .await
        .unwrap();
    assert!(rows.malformed.is_empty(), "{:?}", rows.malformed);
    let checkpoints = rows.checkpoints();
    assert_eq!(checkpoints.len(), 25);
    assert_eq!(checkpoints["shardId-000000000000"], Checkpoint::ShardEnd);
    assert_eq!(checkpoints["shardId-000000000001"], Checkpoint::TrimHorizon);
    assert_eq!(checkpoints["shardId-000000000002"], Checkpoint::Latest);
    assert_eq!(
        checkpoints["shardId-000000000003"],
        Checkpoint::parse(&checkpoint(3), 0).unwrap()
    );
    let pages = calls(&telemetry, "Scan", "ok");
    println!("Scan pages for 25 leases at Limit 10: {pages}");
    assert!(
        pages >= 3,
        "25 leases at 10 per page need at least 3 pages, got {pages}"
    );
}

#[tokio::test]
async fn a_missing_lease_table_is_not_found() {
    let config = sdk_config().await;
    let (aws, _telemetry) = backend(&config, AwsOptions::default());
    let table = unique("shardctl-no-such-table");
    let error = aws
        .lease_tables
        .rows(&table, &StreamFilter::named("orders"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BackendError::NotFound { api: "Scan", message } if message.contains(&table)),
        "{error:?}"
    );
}

fn state_store(config: &aws_config::SdkConfig, table: &str) -> DynamoStateStore {
    let (aws, _telemetry) = backend(
        config,
        AwsOptions {
            state_table: table.to_string(),
            page_size: Some(2),
            ..AwsOptions::default()
        },
    );
    aws.state
}

#[tokio::test]
async fn leadership_is_exclusive_fenced_and_released() {
    let config = sdk_config().await;
    let table = unique("shardctl-state");
    let store = state_store(&config, &table);
    store.ensure().await.unwrap();
    store.ensure().await.unwrap();
    leadership_contract(&store).await;
}

/// The simulator's state store keeps the same contract as DynamoDB's (it bumped the fence when
/// the same owner re-acquired and restarted it at 1 after a release).
#[tokio::test]
async fn the_simulator_s_state_store_keeps_the_same_contract() {
    let store = shardctl_sim::world::MemoryStateStore::default();
    leadership_contract(&store).await;
}

/// One contract, run against every state store.
async fn leadership_contract<S: StateStore>(store: &S) {
    assert_eq!(store.leader_record().await.unwrap(), None);
    let ttl = Duration::from_secs(10);
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
    let secs = |n: i64| t0 + chrono::Duration::seconds(n);

    let a = store
        .acquire_leadership("replica-a", ttl, t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.owner.as_str(), a.fence), ("replica-a", 1));
    assert_eq!(a.expires_at, secs(10));

    // B cannot take an unexpired lease.
    assert_eq!(
        store
            .acquire_leadership("replica-b", ttl, secs(5))
            .await
            .unwrap(),
        None
    );
    // A renews: same fence, later expiry; acquiring again as A keeps the fence too.
    let a = store
        .renew_leadership(&a, ttl, secs(6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.fence, a.expires_at), (1, secs(16)));
    assert_eq!(
        store
            .acquire_leadership("replica-b", ttl, secs(15))
            .await
            .unwrap(),
        None
    );
    let a_again = store
        .acquire_leadership("replica-a", ttl, secs(7))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_again.fence, 1);

    // A stops renewing; once its lease expired, B takes over with a higher fence.
    let b = store
        .acquire_leadership("replica-b", ttl, secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.owner.as_str(), b.fence), ("replica-b", 2));
    // The deposed A can neither renew nor journal.
    assert_eq!(
        store.renew_leadership(&a, ttl, secs(31)).await.unwrap(),
        None
    );
    let record = OperationRecord {
        kind: OperationKind::Split,
        shard_ids: vec!["shardId-000000000001".into()],
        started_at: secs(31),
        outcome: OperationOutcome::InFlight,
    };
    let error = store.begin("orders", &record, &a).await.unwrap_err();
    assert!(
        matches!(
            error,
            BackendError::ConditionFailed {
                api: "TransactWriteItems",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(store.history("orders", t0).await.unwrap().is_empty());
    // Releasing a lease one no longer holds changes nothing.
    store.release_leadership(&a).await.unwrap();
    assert_eq!(
        store
            .acquire_leadership("replica-a", ttl, secs(32))
            .await
            .unwrap(),
        None
    );

    // B releases on shutdown: the record keeps its fence and shows the release; A takes over
    // at once, with the next fence.
    store.release_leadership(&b).await.unwrap();
    let released = store.leader_record().await.unwrap().unwrap();
    assert_eq!((released.owner.as_str(), released.fence), ("replica-b", 2));
    assert!(released.expires_at <= chrono::DateTime::<Utc>::UNIX_EPOCH);
    let a = store
        .acquire_leadership("replica-a", ttl, secs(33))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.fence, 3);
    // B's old token is fenced off for good.
    assert_eq!(
        store.renew_leadership(&b, ttl, secs(34)).await.unwrap(),
        None
    );
    assert!(matches!(
        store.begin("orders", &record, &b).await,
        Err(BackendError::ConditionFailed { .. })
    ));
    // A journals; finishing twice is refused (the second outcome would overwrite the first).
    let id = store.begin("orders", &record, &a).await.unwrap();
    store
        .finish("orders", &id, OperationOutcome::Succeeded)
        .await
        .unwrap();
    assert!(matches!(
        store.finish("orders", &id, OperationOutcome::Failed).await,
        Err(BackendError::ConditionFailed { .. })
    ));
    let history = store.history("orders", t0).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].record.outcome, OperationOutcome::Succeeded);
    assert_eq!(history[0].fence, Some(3));
}

#[tokio::test]
async fn the_journal_round_trips_oldest_first_across_pages() {
    let config = sdk_config().await;
    let table = unique("shardctl-state");
    let store = state_store(&config, &table);
    store.ensure().await.unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
    let leader = store
        .acquire_leadership("replica-a", Duration::from_secs(10), t0)
        .await
        .unwrap()
        .unwrap();
    let record = |kind, shard_ids: &[&str], minute: i64| OperationRecord {
        kind,
        shard_ids: shard_ids.iter().map(|s| s.to_string()).collect(),
        started_at: t0 + chrono::Duration::minutes(minute) + chrono::Duration::nanoseconds(7),
        outcome: OperationOutcome::InFlight,
    };
    let split = record(OperationKind::Split, &["shardId-000000000000"], 1);
    let merge = record(
        OperationKind::Merge,
        &["shardId-000000000002", "shardId-000000000001"],
        2,
    );
    let later = record(OperationKind::Split, &["shardId-000000000003"], 3);
    // Journalled out of order: history sorts by start time.
    let merge_id = store.begin("orders", &merge, &leader).await.unwrap();
    let split_id = store.begin("orders", &split, &leader).await.unwrap();
    let later_id = store.begin("orders", &later, &leader).await.unwrap();
    store.begin("payments", &split, &leader).await.unwrap();
    store
        .finish("orders", &split_id, OperationOutcome::Succeeded)
        .await
        .unwrap();
    store
        .finish("orders", &merge_id, OperationOutcome::Failed)
        .await
        .unwrap();

    let history = store.history("orders", t0).await.unwrap();
    let ids: Vec<&str> = history.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [&split_id, &merge_id, &later_id]);
    assert_eq!(
        history[0].record,
        OperationRecord {
            outcome: OperationOutcome::Succeeded,
            ..split.clone()
        }
    );
    assert_eq!(
        history[1].record,
        OperationRecord {
            outcome: OperationOutcome::Failed,
            ..merge.clone()
        }
    );
    assert_eq!(history[2].record, later);

    // `since` is inclusive and filters older entries out.
    let recent = store.history("orders", merge.started_at).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].id, merge_id);
    assert_eq!(store.history("payments", t0).await.unwrap().len(), 1);

    // `finish` is conditional on the entry still being in flight: a missing entry, or one
    // settled already (by another leader, from the shard map), is not overwritten.
    let error = store
        .finish("orders", "no-such-entry", OperationOutcome::Succeeded)
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackendError::ConditionFailed { .. }),
        "{error:?}"
    );
    let error = store
        .finish("orders", &merge_id, OperationOutcome::Succeeded)
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackendError::ConditionFailed { .. }),
        "{error:?}"
    );
    let history = store.history("orders", t0).await.unwrap();
    assert_eq!(history[1].record.outcome, OperationOutcome::Failed);
    assert_eq!(history[1].fence, Some(leader.fence));
}

#[tokio::test]
async fn a_state_table_with_another_key_schema_is_refused() {
    let config = sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("shardctl-foreign");
    create_hash_table(&client, &table, "leaseKey").await;
    let error = state_store(&config, &table).ensure().await.unwrap_err();
    assert!(matches!(error, BackendError::Invalid { .. }), "{error:?}");
    assert!(error.to_string().contains("another table"), "{error}");
}
