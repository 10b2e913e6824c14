//! The Kinesis adapter against kinesis-local: paging, lineage after real reshards, error
//! classification while the stream is `UPDATING`.
//!
//! Needs the emulators: `scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"`.

#![allow(clippy::unwrap_used)]

use crate::support::{POLL_DEADLINE, backend, calls, eventually, open_fence, sdk_config, unique};
use shardctl_controller::aws::{AwsOptions, RetryPolicy};
use shardctl_controller::backend::{BackendError, Kinesis, ShardMetric, StreamMode};
use shardctl_policies::{Shard, ShardMap, ShardState, StreamStatus};

/// Creates a provisioned stream with `shards` shards and waits until it is `ACTIVE`.
async fn create_stream(
    config: &aws_config::SdkConfig,
    kinesis: &impl Kinesis,
    shards: i32,
) -> String {
    let name = unique("shardctl-test");
    aws_sdk_kinesis::Client::new(config)
        .create_stream()
        .stream_name(&name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    wait_active(kinesis, &name).await;
    name
}

async fn wait_active(kinesis: &impl Kinesis, stream: &str) {
    eventually(&format!("{stream} to be ACTIVE"), POLL_DEADLINE, || async {
        match kinesis.describe_stream(stream).await {
            Ok(d) if d.status == StreamStatus::Active => Some(()),
            Ok(_) | Err(BackendError::NotFound { .. }) => None,
            Err(error) => panic!("describing {stream}: {error}"),
        }
    })
    .await;
}

async fn delete_stream(config: &aws_config::SdkConfig, name: &str) {
    let _ = aws_sdk_kinesis::Client::new(config)
        .delete_stream()
        .stream_name(name)
        .send()
        .await;
}

fn midpoint(shard: &Shard) -> u128 {
    let range = shard.hash_key_range;
    range.starting_hash_key + range.width_minus_one() / 2 + 1
}

fn by_id<'a>(shards: &'a [Shard], id: &str) -> &'a Shard {
    shards.iter().find(|s| s.shard_id == id).unwrap()
}

#[tokio::test]
async fn list_shards_pages_and_reports_lineage_after_a_split_and_a_merge() {
    let config = sdk_config().await;
    let page_size = 2;
    let (aws, telemetry) = backend(
        &config,
        AwsOptions {
            page_size: Some(page_size),
            ..AwsOptions::default()
        },
    );
    let kinesis = &aws.kinesis;
    let stream = create_stream(&config, kinesis, 3).await;

    let initial = kinesis.list_shards(&stream).await.unwrap();
    assert_eq!(initial.len(), 3);
    assert!(
        initial
            .iter()
            .all(|s| s.is_open() && s.parent_shard_id.is_none())
    );
    ShardMap::new(&initial).unwrap();

    // Split the first shard at its midpoint.
    let parent = initial[0].clone();
    let at = midpoint(&parent);
    kinesis
        .split_shard(&stream, &parent.shard_id, at, &open_fence())
        .await
        .unwrap();
    wait_active(kinesis, &stream).await;
    let after_split = kinesis.list_shards(&stream).await.unwrap();
    assert_eq!(after_split.len(), 5);
    assert_eq!(
        by_id(&after_split, &parent.shard_id).state,
        ShardState::Closed
    );
    let mut children: Vec<&Shard> = after_split
        .iter()
        .filter(|s| s.parent_shard_id.as_deref() == Some(parent.shard_id.as_str()))
        .collect();
    children.sort_by_key(|s| s.hash_key_range.starting_hash_key);
    assert_eq!(children.len(), 2);
    let (low, high) = (children[0].clone(), children[1].clone());
    assert!(low.is_open() && high.is_open());
    assert!(low.adjacent_parent_shard_id.is_none() && high.adjacent_parent_shard_id.is_none());
    assert_eq!(
        low.hash_key_range.starting_hash_key,
        parent.hash_key_range.starting_hash_key
    );
    assert_eq!(low.hash_key_range.ending_hash_key, at - 1);
    assert_eq!(high.hash_key_range.starting_hash_key, at);
    assert_eq!(
        high.hash_key_range.ending_hash_key,
        parent.hash_key_range.ending_hash_key
    );

    // Merge the two children back.
    kinesis
        .merge_shards(&stream, &low.shard_id, &high.shard_id, &open_fence())
        .await
        .unwrap();
    wait_active(kinesis, &stream).await;
    let pages_before = calls(&telemetry, "ListShards", "ok");
    let after_merge = kinesis.list_shards(&stream).await.unwrap();
    let pages = calls(&telemetry, "ListShards", "ok") - pages_before;
    println!(
        "ListShards pages for {} shards at MaxResults {page_size}: {pages}",
        after_merge.len()
    );
    assert_eq!(after_merge.len(), 6);
    assert!(
        pages >= 3,
        "6 shards at 2 per page need at least 3 pages, got {pages}"
    );
    let mut ids: Vec<&str> = after_merge.iter().map(|s| s.shard_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "a shard was listed twice across pages");
    let merged = after_merge
        .iter()
        .find(|s| s.adjacent_parent_shard_id.is_some())
        .unwrap();
    assert!(merged.is_open());
    assert_eq!(
        merged.parent_shard_id.as_deref(),
        Some(low.shard_id.as_str())
    );
    assert_eq!(
        merged.adjacent_parent_shard_id.as_deref(),
        Some(high.shard_id.as_str())
    );
    assert_eq!(merged.hash_key_range, parent.hash_key_range);
    for closed in [&parent.shard_id, &low.shard_id, &high.shard_id] {
        assert_eq!(
            by_id(&after_merge, closed).state,
            ShardState::Closed,
            "{closed}"
        );
    }
    let map = ShardMap::new(&after_merge).unwrap();
    assert_eq!(map.open_count(), 3);
    let ancestors: Vec<&str> = map
        .ancestors(&merged.shard_id)
        .iter()
        .map(|s| s.shard_id.as_str())
        .collect();
    assert!(
        ancestors.contains(&parent.shard_id.as_str()),
        "{ancestors:?}"
    );

    let described = kinesis.describe_stream(&stream).await.unwrap();
    assert_eq!(described.name, stream);
    assert_eq!(described.mode, StreamMode::Provisioned);
    assert_eq!(described.open_shard_count, 3);
    assert_eq!(calls(&telemetry, "SplitShard", "ok"), 1);
    assert_eq!(calls(&telemetry, "MergeShards", "ok"), 1);
    delete_stream(&config, &stream).await;
}

#[tokio::test]
async fn a_split_while_updating_is_resource_in_use_and_the_retry_layer_waits_it_out() {
    let config = sdk_config().await;
    let (once, once_telemetry) = backend(
        &config,
        AwsOptions {
            retry: RetryPolicy::no_retries(),
            ..AwsOptions::default()
        },
    );
    let (retrying, retrying_telemetry) = backend(&config, AwsOptions::default());
    let stream = create_stream(&config, &once.kinesis, 2).await;
    let shards = once.kinesis.list_shards(&stream).await.unwrap();

    once.kinesis
        .split_shard(
            &stream,
            &shards[0].shard_id,
            midpoint(&shards[0]),
            &open_fence(),
        )
        .await
        .unwrap();
    // The stream is UPDATING now: a second reshard is refused, and classified as such.
    let refused = once
        .kinesis
        .split_shard(
            &stream,
            &shards[1].shard_id,
            midpoint(&shards[1]),
            &open_fence(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            BackendError::ResourceInUse {
                api: "SplitShard",
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(refused.is_retriable());
    assert_eq!(calls(&once_telemetry, "SplitShard", "resource_in_use"), 1);

    // With retries, the same call succeeds once the stream is ACTIVE again.
    retrying
        .kinesis
        .split_shard(
            &stream,
            &shards[1].shard_id,
            midpoint(&shards[1]),
            &open_fence(),
        )
        .await
        .unwrap();
    let refusals = calls(&retrying_telemetry, "SplitShard", "resource_in_use");
    println!("SplitShard attempts refused while UPDATING before success: {refusals}");
    assert!(
        refusals >= 1,
        "the first attempt should have met the UPDATING window"
    );
    assert_eq!(calls(&retrying_telemetry, "SplitShard", "ok"), 1);

    wait_active(&once.kinesis, &stream).await;
    let after = once.kinesis.list_shards(&stream).await.unwrap();
    assert_eq!(after.iter().filter(|s| s.is_open()).count(), 4);
    assert_eq!(after.iter().filter(|s| !s.is_open()).count(), 2);
    delete_stream(&config, &stream).await;
}

#[tokio::test]
async fn invalid_reshards_and_missing_streams_are_classified() {
    let config = sdk_config().await;
    let (aws, _telemetry) = backend(&config, AwsOptions::default());
    let missing = unique("shardctl-missing");
    let error = aws.kinesis.describe_stream(&missing).await.unwrap_err();
    assert!(matches!(error, BackendError::NotFound { .. }), "{error:?}");
    let error = aws.kinesis.list_shards(&missing).await.unwrap_err();
    assert!(matches!(error, BackendError::NotFound { .. }), "{error:?}");

    let stream = create_stream(&config, &aws.kinesis, 3).await;
    let mut shards = aws.kinesis.list_shards(&stream).await.unwrap();
    shards.sort_by_key(|s| s.hash_key_range.starting_hash_key);
    // The first and the last shard are not adjacent: Kinesis refuses to merge them.
    let error = aws
        .kinesis
        .merge_shards(
            &stream,
            &shards[0].shard_id,
            &shards[2].shard_id,
            &open_fence(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BackendError::Invalid {
                api: "MergeShards",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    delete_stream(&config, &stream).await;
}

#[tokio::test]
async fn enhanced_monitoring_is_enabled_for_the_shard_metrics() {
    let config = sdk_config().await;
    let (aws, _telemetry) = backend(&config, AwsOptions::default());
    let stream = create_stream(&config, &aws.kinesis, 1).await;
    aws.kinesis
        .enable_shard_metrics(&stream, &ShardMetric::ALL)
        .await
        .unwrap();
    wait_active(&aws.kinesis, &stream).await;
    let mut enabled = aws
        .kinesis
        .describe_stream(&stream)
        .await
        .unwrap()
        .shard_level_metrics;
    enabled.sort();
    assert_eq!(
        enabled,
        [
            "IncomingBytes",
            "IncomingRecords",
            "WriteProvisionedThroughputExceeded"
        ]
    );
    delete_stream(&config, &stream).await;
}

#[tokio::test]
async fn records_are_sampled_from_a_timestamp_with_their_key_and_size() {
    let config = sdk_config().await;
    let (aws, telemetry) = backend(&config, AwsOptions::default());
    let stream = create_stream(&config, &aws.kinesis, 1).await;
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    let entries: Vec<_> = (0..30)
        .map(|i| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(format!("org-{}", i % 3))
                .data(aws_smithy_types::Blob::new(vec![b'x'; 100 + i]))
                .build()
                .unwrap()
        })
        .collect();
    let put = aws_sdk_kinesis::Client::new(&config)
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(put.failed_record_count(), Some(0));
    let shard = aws.kinesis.list_shards(&stream).await.unwrap()[0]
        .shard_id
        .clone();

    let sample = aws
        .kinesis
        .sample_records(&stream, &shard, since, 1_000)
        .await
        .unwrap();
    let expected: Vec<(String, u64)> = (0..30)
        .map(|i| (format!("org-{}", i % 3), (100 + i + 5) as u64))
        .collect();
    assert_eq!(sample, expected);

    let first = aws
        .kinesis
        .sample_records(&stream, &shard, since, 10)
        .await
        .unwrap();
    assert_eq!(first, expected[..10]);
    assert_eq!(
        aws.kinesis
            .sample_records(&stream, &shard, since, 0)
            .await
            .unwrap(),
        []
    );
    println!(
        "GetRecords calls for two samples: {}",
        calls(&telemetry, "GetRecords", "ok")
    );
    delete_stream(&config, &stream).await;
}
