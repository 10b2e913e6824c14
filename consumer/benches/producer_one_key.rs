//! One partition key's produce rate against kinesis-local, with and without aggregation.
//!
//! The producer keeps per-key order by keeping one Kinesis record per key in flight, so one key
//! alone is capped at one record per `PutRecords` round trip; aggregated, that one record carries
//! the key's queued events (up to 51,200 bytes).
//!
//! ```text
//! scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
//! cargo bench -p shardctl-consumer --bench producer_one_key
//! ```
//!
//! Knobs: `ONE_KEY_EVENTS` (default 2000), `ONE_KEY_PAYLOAD` bytes (100).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::types::StreamStatus;
use shardctl_consumer::producer::{Event, Producer};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probe
    }
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_KINESIS").is_some(),
        "start the emulators: scripts/emulators.sh start && eval \"$(scripts/emulators.sh env)\""
    );
    let events = knob("ONE_KEY_EVENTS", 2000);
    let payload = vec![b'x'; knob("ONE_KEY_PAYLOAD", 100)];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let kinesis = aws_sdk_kinesis::Client::new(&config);
        let stream = format!("one-key-{}", std::process::id());
        kinesis
            .create_stream()
            .stream_name(&stream)
            .shard_count(1)
            .send()
            .await
            .expect("CreateStream");
        loop {
            let d = kinesis
                .describe_stream_summary()
                .stream_name(&stream)
                .send()
                .await
                .expect("DescribeStreamSummary");
            if d.stream_description_summary()
                .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        println!(
            "one key, {events} events of {} bytes, one shard",
            payload.len()
        );
        println!("| producer | Kinesis records | seconds | events/s |");
        println!("|---|---:|---:|---:|");
        for aggregate in [false, true] {
            let batch: Vec<Event> = (0..events)
                .map(|_| Event::new("org-surge", payload.clone()))
                .collect();
            let producer = Producer::new(kinesis.clone(), &stream).with_aggregation(aggregate);
            let started = Instant::now();
            let report = producer.send(batch).await.expect("send");
            let secs = started.elapsed().as_secs_f64();
            println!(
                "| {} | {} | {secs:.2} | {:.0} |",
                if aggregate {
                    "aggregating"
                } else {
                    "one record per round trip"
                },
                report.records,
                report.acknowledged as f64 / secs
            );
        }
        let _ = kinesis.delete_stream().stream_name(&stream).send().await;
    });
}
