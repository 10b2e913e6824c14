//! Enhanced fan-out (`SubscribeToShard`) against kinesis-local: two workers read through one
//! registered stream consumer across a split and a merge, per-key order holds, parents finish
//! before children, and the workers really hold subscriptions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use shardctl_consumer::producer::{Event, Producer};
use shardctl_consumer::{Retrieval, Worker, WorkerConfig};

use crate::common::*;

const KEYS: usize = 8;

async fn produce(producer: &Producer, per_key: &mut BTreeMap<String, u64>, rounds: u64) {
    let mut events = Vec::new();
    for _ in 0..rounds {
        for k in 0..KEYS {
            let key = format!("org-{k}");
            let n = per_key.entry(key.clone()).or_default();
            events.push(Event::new(key.clone(), payload(&key, *n)));
            *n += 1;
        }
    }
    producer.send(events).await.expect("produce");
}

/// Whether a subscription of `consumer_arn` to `shard` is open elsewhere: Kinesis refuses a
/// second one with `ResourceInUseException`.
async fn subscription_open(
    kinesis: &aws_sdk_kinesis::Client,
    consumer_arn: &str,
    shard: &str,
) -> bool {
    let position = StartingPosition::builder()
        .r#type(ShardIteratorType::Latest)
        .build()
        .unwrap();
    let out = match kinesis
        .subscribe_to_shard()
        .consumer_arn(consumer_arn)
        .shard_id(shard)
        .starting_position(position)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            return e
                .as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception());
        }
    };
    let mut events = out.event_stream;
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Err(e)) => e
            .as_service_error()
            .is_some_and(|s| s.is_resource_in_use_exception()),
        Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(_)))) => false,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_keeps_per_key_order_across_a_split_and_a_merge() {
    let Some(aws) = aws().await else { return };
    let stream = unique("efo");
    let table = unique("leases");
    let consumer_name = unique("efo-app");
    create_stream(&aws.kinesis, &stream, 2).await;
    let log = Arc::new(Log::default());
    let start = |name: &'static str| {
        let config = WorkerConfig::new(&stream, &table)
            .with_worker_id(name)
            .with_failover(Duration::from_secs(3))
            .with_shard_sync_interval(Duration::from_secs(2))
            .with_fan_out(Some(&consumer_name));
        assert_eq!(
            config.retrieval,
            Retrieval::FanOut {
                consumer_name: consumer_name.clone()
            }
        );
        Worker::start(
            config,
            aws.kinesis.clone(),
            aws.dynamodb.clone(),
            Recorder::factory(name, &log, 10),
        )
    };
    let a = start("efo-a").await.expect("worker a");
    let b = start("efo-b")
        .await
        .expect("worker b: reuses the registered consumer");

    let producer = Producer::new(aws.kinesis.clone(), &stream);
    let mut per_key = BTreeMap::new();
    produce(&producer, &mut per_key, 20).await;
    let shards = open_shards(&aws.kinesis, &stream).await;
    split(&aws.kinesis, &stream, &shards[0]).await;
    produce(&producer, &mut per_key, 20).await;
    let children = open_shards(&aws.kinesis, &stream).await;
    merge(&aws.kinesis, &stream, &children[0], &children[1]).await;
    produce(&producer, &mut per_key, 20).await;

    let total: u64 = per_key.values().sum();
    eventually("every event delivered", Duration::from_secs(90), || async {
        let delivered: std::collections::BTreeSet<(String, u64)> = log
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| (d.key.clone(), d.seq))
            .collect();
        (delivered.len() as u64 >= total).then_some(())
    })
    .await;

    // The workers read through subscriptions of the registered consumer: a second one to an
    // open shard is refused while theirs is open.
    let consumers = aws
        .kinesis
        .list_stream_consumers()
        .stream_arn(stream_arn(&aws.kinesis, &stream).await)
        .send()
        .await
        .unwrap();
    let arns: Vec<String> = consumers
        .consumers()
        .iter()
        .filter(|c| c.consumer_name == consumer_name)
        .map(|c| c.consumer_arn.clone())
        .collect();
    assert_eq!(
        arns.len(),
        1,
        "one stream consumer, registered once and reused"
    );
    let merged = open_shards(&aws.kinesis, &stream).await;
    eventually(
        "a worker's subscription to an open shard",
        Duration::from_secs(20),
        || async {
            for shard in &merged {
                if subscription_open(&aws.kinesis, &arns[0], &shard.shard_id).await {
                    return Some(());
                }
            }
            None
        },
    )
    .await;

    a.shutdown().await;
    b.shutdown().await;
    check_order_and_completeness(&log, &per_key);
    check_parents_before_children(&aws.kinesis, &stream, &log).await;
}
