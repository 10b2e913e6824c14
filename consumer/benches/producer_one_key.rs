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

use shardctl_consumer::producer::{Event, Producer};
use shardctl_test_support::{create_stream, knob, require_endpoints, sdk_config};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probe
    }
    require_endpoints(&["KINESIS"]);
    let events = knob("ONE_KEY_EVENTS", 2000) as usize;
    let payload = vec![b'x'; knob("ONE_KEY_PAYLOAD", 100) as usize];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let kinesis = aws_sdk_kinesis::Client::new(&sdk_config().await);
        let stream = format!("one-key-{}", std::process::id());
        create_stream(&kinesis, &stream, 1).await;
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
