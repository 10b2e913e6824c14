//! The consumer's metrics, read from the application's registry as Prometheus would scrape them.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use shardctl_consumer::producer::{Event, Producer};
use shardctl_consumer::{ConsumerMetrics, Worker, WorkerConfig};

use crate::common::*;

/// The value of the series `name{labels}` (`labels` as encoded, e.g. `shard="..."`), or of
/// every series of `name` summed when `labels` is empty.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = line.rsplit_once(' ')?;
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n == name && (labels.is_empty() || l == labels) {
            *found.get_or_insert(0.0) += v.parse::<f64>().ok()?;
        }
    }
    found
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_records_bytes_checkpoint_age_and_leases_are_reported() {
    let Some(aws) = aws().await else { return };
    let stream = unique("metrics");
    create_stream(&aws.kinesis, &stream, 2).await;
    let mut registry = Registry::default();
    let metrics = ConsumerMetrics::register(&mut registry);
    let log = Arc::new(Log::default());
    let worker = Worker::start(
        WorkerConfig::new(&stream, unique("leases"))
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200))
            .with_metrics(metrics),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        Recorder::factory("m", &log, 5),
    )
    .await
    .unwrap();
    let events: Vec<Event> = (0..40)
        .map(|i| {
            Event::new(
                format!("org-{}", i % 4),
                payload(&format!("org-{}", i % 4), i / 4),
            )
        })
        .collect();
    let bytes: u64 = events
        .iter()
        .map(|e| shardctl_consumer::producer::encode_event(e.id, &e.payload).len() as u64)
        .sum();
    Producer::new(aws.kinesis.clone(), &stream)
        .send(events)
        .await
        .unwrap();
    eventually("40 records counted", Duration::from_secs(30), || async {
        let text = scrape(&registry);
        (value(&text, "shardctl_consumer_records_processed_total", "") == Some(40.0)).then_some(())
    })
    .await;
    // Renewals every second measure the checkpoint age.
    let text = eventually("two checkpoint ages", Duration::from_secs(10), || async {
        let text = scrape(&registry);
        (text
            .matches("shardctl_consumer_checkpoint_age_seconds{")
            .count()
            == 2)
            .then_some(text)
    })
    .await;
    assert_eq!(value(&text, "shardctl_consumer_leases_held", ""), Some(2.0));
    assert_eq!(
        value(&text, "shardctl_consumer_bytes_processed_total", ""),
        Some(bytes as f64)
    );
    for shard in open_shards(&aws.kinesis, &stream).await {
        let label = format!("shard=\"{}\"", shard.shard_id);
        let behind = value(&text, "shardctl_consumer_millis_behind_latest", &label);
        assert!(
            behind.is_some_and(|b| b >= 0.0),
            "{label}: {behind:?}\n{text}"
        );
    }
    assert_eq!(
        value(&text, "shardctl_consumer_lease_steals_total", ""),
        Some(0.0)
    );
    worker.shutdown().await;
    let text = scrape(&registry);
    assert_eq!(
        value(&text, "shardctl_consumer_leases_held", ""),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "shardctl_consumer_records_processed_total", ""),
        None,
        "a released shard's series go: {text}"
    );
}
