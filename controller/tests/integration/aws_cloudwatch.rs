//! The CloudWatch adapter against moto: datapoints injected with `PutMetricData` are read back
//! per shard and minute, and the number of `GetMetricData` calls is the minimum.
//!
//! No emulator publishes Kinesis' shard-level metrics, so the test harness writes them into
//! `AWS/Kinesis` itself (real CloudWatch refuses writes to `AWS/` namespaces; only tests do this).
//!
//! Needs the emulators: `scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"`.

#![allow(clippy::unwrap_used)]

use crate::support::{backend, calls, sdk_config, unique};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use chrono::{DateTime, DurationRound, Utc};
use shardctl_controller::aws::AwsOptions;
use shardctl_controller::backend::Metrics;
use std::time::Instant;

/// One injected datapoint.
struct Point {
    stream: String,
    shard: &'static str,
    metric: &'static str,
    minute: i64,
    value: f64,
}

async fn put(config: &aws_config::SdkConfig, start: DateTime<Utc>, points: &[Point]) {
    let client = aws_sdk_cloudwatch::Client::new(config);
    let data: Vec<MetricDatum> = points
        .iter()
        .map(|p| {
            let at = start + chrono::Duration::minutes(p.minute) + chrono::Duration::seconds(5);
            MetricDatum::builder()
                .metric_name(p.metric)
                .dimensions(
                    Dimension::builder()
                        .name("StreamName")
                        .value(&p.stream)
                        .build(),
                )
                .dimensions(Dimension::builder().name("ShardId").value(p.shard).build())
                .timestamp(aws_smithy_types::DateTime::from_millis(
                    at.timestamp_millis(),
                ))
                .value(p.value)
                .build()
        })
        .collect();
    client
        .put_metric_data()
        .namespace("AWS/Kinesis")
        .set_metric_data(Some(data))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn injected_shard_metrics_are_read_back_per_minute_with_missing_minutes_as_none() {
    let config = sdk_config().await;
    let (aws, telemetry) = backend(&config, AwsOptions::default());
    let stream = unique("shardctl-metrics");
    let other_stream = unique("shardctl-other");
    let start = (Utc::now() - chrono::Duration::minutes(30))
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    let p = |shard, metric, minute, value| Point {
        stream: stream.clone(),
        shard,
        metric,
        minute,
        value,
    };
    let a = "shardId-000000000000";
    let b = "shardId-000000000001";
    let quiet = "shardId-000000000002";
    let mut points = vec![
        p(a, "IncomingBytes", 0, 100.0),
        p(a, "IncomingBytes", 1, 200.0),
        // minute 2 missing
        p(a, "IncomingBytes", 3, 400.0),
        p(a, "IncomingBytes", 4, 500.0),
        p(a, "IncomingRecords", 0, 1.0),
        p(a, "IncomingRecords", 4, 5.0),
        p(a, "WriteProvisionedThroughputExceeded", 2, 7.0),
        p(b, "IncomingBytes", 2, 50.0),
        // Outside the window: before it and after it.
        p(a, "IncomingBytes", -1, 999.0),
        p(a, "IncomingBytes", 5, 999.0),
    ];
    // The same shard id in another stream must not leak in.
    points.push(Point {
        stream: other_stream,
        shard: a,
        metric: "IncomingBytes",
        minute: 2,
        value: 999.0,
    });
    put(&config, start, &points).await;

    let shards = [a.to_string(), b.to_string(), quiet.to_string()];
    let metrics = aws
        .metrics
        .shard_metrics(&stream, &shards, start, 5)
        .await
        .unwrap();
    assert_eq!(metrics.len(), 3);
    let ma = &metrics[a];
    assert_eq!(
        ma.incoming_bytes,
        [Some(100.0), Some(200.0), None, Some(400.0), Some(500.0)]
    );
    assert_eq!(
        ma.incoming_records,
        [Some(1.0), None, None, None, Some(5.0)]
    );
    assert_eq!(
        ma.write_provisioned_throughput_exceeded,
        [None, None, Some(7.0), None, None]
    );
    let mb = &metrics[b];
    assert_eq!(mb.incoming_bytes, [None, None, Some(50.0), None, None]);
    assert_eq!(mb.incoming_records, [None; 5]);
    let mq = &metrics[quiet];
    for series in [
        &mq.incoming_bytes,
        &mq.incoming_records,
        &mq.write_provisioned_throughput_exceeded,
    ] {
        assert_eq!(series, &[None; 5]);
    }
    assert_eq!(calls(&telemetry, "GetMetricData", "ok"), 1);
}

#[tokio::test]
async fn get_metric_data_calls_per_cycle_are_ceil_of_shards_times_three_over_500() {
    let config = sdk_config().await;
    let stream = unique("shardctl-batching");
    let start = (Utc::now() - chrono::Duration::minutes(15))
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    for shards in [10usize, 500, 2_000] {
        let (aws, telemetry) = backend(&config, AwsOptions::default());
        let ids: Vec<String> = (0..shards).map(|i| format!("shardId-{i:012}")).collect();
        let started = Instant::now();
        let metrics = aws
            .metrics
            .shard_metrics(&stream, &ids, start, 10)
            .await
            .unwrap();
        let made = calls(&telemetry, "GetMetricData", "ok");
        let expected = (shards * 3).div_ceil(500) as u64;
        println!(
            "GetMetricData calls for {shards} shards: {made} (ceil({shards}*3/500) = {expected}) in {:?}",
            started.elapsed()
        );
        assert_eq!(made, expected, "{shards} shards");
        assert_eq!(metrics.len(), shards);
        assert!(metrics.values().all(|m| m.incoming_bytes == [None; 10]));
    }
}
