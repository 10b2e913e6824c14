//! Shared set-up of the integration tests: emulator endpoints, unique names, streams with
//! injected shard-level metrics, KCL lease tables.
#![allow(dead_code, clippy::unwrap_used)]

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use shardctl_controller::aws::{AwsContext, context as aws_context};
use shardctl_controller::backend::{Kinesis, StateStore};
use shardctl_controller::telemetry::Telemetry;
use shardctl_policies::Shard;
use std::time::{Duration, Instant};

/// Fails loudly when the emulators are not configured.
pub fn require_emulators() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_KINESIS").is_some(),
        "start the emulators: scripts/emulators.sh start && eval \"$(scripts/emulators.sh env)\""
    );
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..8)
            .unwrap_or("x")
    )
}

/// SDK clients for test set-up (the product code builds its own).
pub struct Clients {
    pub kinesis: aws_sdk_kinesis::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

pub async fn clients() -> Clients {
    require_emulators();
    let config = shardctl_controller::aws::load_sdk_config().await;
    Clients {
        kinesis: aws_sdk_kinesis::Client::new(&config),
        cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
    }
}

pub async fn services(state_table: &str) -> (AwsContext, Telemetry) {
    require_emulators();
    let telemetry = Telemetry::new();
    (aws_context(state_table, &telemetry).await, telemetry)
}

/// Polls `f` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a provisioned stream and waits for `ACTIVE`.
pub async fn create_stream(c: &Clients, name: &str, shards: i32) {
    c.kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    wait_active(c, name).await;
}

pub async fn wait_active(c: &Clients, name: &str) {
    eventually("stream ACTIVE", Duration::from_secs(30), || async {
        let s = c
            .kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .ok()?;
        let status = s.stream_description_summary()?.stream_status().clone();
        (status == aws_sdk_kinesis::types::StreamStatus::Active).then_some(())
    })
    .await
}

/// Open shards in key order, through the product's adapter.
pub async fn open_shards(services: &AwsContext, stream: &str) -> Vec<Shard> {
    let mut shards: Vec<Shard> = services
        .kinesis
        .list_shards(stream)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.is_open())
        .collect();
    shards.sort_by_key(|s| s.hash_key_range.starting_hash_key);
    shards
}

/// The start of the current minute.
pub fn this_minute() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_second(0).unwrap().with_nanosecond(0).unwrap()
}

/// Injects per-minute `IncomingBytes` / `IncomingRecords` / throttling for one shard at the given
/// utilisation over the `minutes` minutes before the current one, skipping `missing` minutes
/// (counted back from the most recent).
pub async fn put_utilization(
    c: &Clients,
    stream: &str,
    shard: &str,
    bytes_pct: f64,
    records_pct: f64,
    minutes: i64,
    missing: &[i64],
) {
    let end = this_minute();
    let mut data = Vec::new();
    for ago in 1..=minutes {
        if missing.contains(&ago) {
            continue;
        }
        let t = end - TimeDelta::minutes(ago);
        let ts = aws_smithy_types::DateTime::from_secs(t.timestamp());
        for (name, value, unit) in [
            (
                "IncomingBytes",
                bytes_pct / 100.0 * 1024.0 * 1024.0 * 60.0,
                StandardUnit::Bytes,
            ),
            (
                "IncomingRecords",
                records_pct / 100.0 * 1000.0 * 60.0,
                StandardUnit::Count,
            ),
            (
                "WriteProvisionedThroughputExceeded",
                0.0,
                StandardUnit::Count,
            ),
        ] {
            data.push(
                MetricDatum::builder()
                    .metric_name(name)
                    .dimensions(
                        Dimension::builder()
                            .name("StreamName")
                            .value(stream)
                            .build(),
                    )
                    .dimensions(Dimension::builder().name("ShardId").value(shard).build())
                    .timestamp(ts)
                    .value(value)
                    .unit(unit)
                    .build(),
            );
        }
    }
    for chunk in data.chunks(500) {
        c.cloudwatch
            .put_metric_data()
            .namespace("AWS/Kinesis")
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
    }
}

/// Creates a KCL-shaped lease table with the given (shard id, checkpoint) rows.
pub async fn lease_table(c: &Clients, table: &str, rows: &[(&str, &str)]) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    c.dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    for (shard, checkpoint) in rows {
        set_checkpoint(c, table, shard, checkpoint).await;
    }
}

pub async fn set_checkpoint(c: &Clients, table: &str, shard: &str, checkpoint: &str) {
    c.dynamodb
        .put_item()
        .table_name(table)
        .item("leaseKey", AttributeValue::S(shard.to_string()))
        .item("leaseOwner", AttributeValue::S("worker-1".into()))
        .item("leaseCounter", AttributeValue::N("7".into()))
        .item("checkpoint", AttributeValue::S(checkpoint.to_string()))
        .item("checkpointSubSequenceNumber", AttributeValue::N("0".into()))
        .item(
            "ownerSwitchesSinceCheckpoint",
            AttributeValue::N("0".into()),
        )
        .send()
        .await
        .unwrap();
}

/// Takes the leader lease for a test replica.
pub async fn lead(services: &AwsContext, owner: &str) -> shardctl_controller::backend::LeaderToken {
    services.state.ensure().await.unwrap();
    services
        .state
        .acquire_leadership(owner, Duration::from_secs(30), Utc::now())
        .await
        .unwrap()
        .expect("nobody else leads a fresh table")
}

/// Whether a DynamoDB table exists.
pub async fn table_exists(c: &Clients, table: &str) -> bool {
    c.dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .is_ok()
}

/// A fence open for an hour (tests that reshard without a leadership task).
#[allow(dead_code)]
pub fn open_fence() -> shardctl_controller::backend::Fence {
    shardctl_controller::backend::Fence::fixed(&shardctl_controller::backend::LeaderToken::new(
        "test",
        1,
        Utc::now(),
        Duration::from_secs(3600),
        tokio::time::Instant::now(),
    ))
}
