//! Consumes a stream and prints each organisation's events in order.
//!
//! Against the emulators, a self-contained demo (creates a stream, produces 3 x 10 events, splits
//! a shard half-way, prints them as they are consumed, exits):
//!
//! ```text
//! scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
//! cargo run -p shardctl-consumer --example org_events -- --demo
//! ```
//!
//! Against an existing stream (until Ctrl-C; the lease table is created if missing):
//!
//! ```text
//! cargo run -p shardctl-consumer --example org_events -- STREAM LEASE_TABLE
//! ```
//!
//! Events are expected in the producer helper's envelope (`key` = organisation id); other records
//! are printed as raw bytes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::types::StreamStatus;
use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{Event, Producer, event_id, event_payload};
use shardctl_consumer::{Worker, WorkerConfig};

/// Prints records and counts them per organisation.
struct OrgPrinter {
    shard: String,
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl ShardProcessor for OrgPrinter {
    async fn initialize(&mut self, input: InitInput) {
        println!("[{}] start after {}", input.shard_id, input.checkpoint);
    }

    async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
        for record in &batch.records {
            let id = event_id(&record.data)
                .map(|u| u.to_string())
                .unwrap_or_default();
            println!(
                "[{}] {:<8} {:<28} {}",
                self.shard,
                record.partition_key,
                String::from_utf8_lossy(event_payload(&record.data)),
                id
            );
            if let Ok(mut seen) = self.seen.lock() {
                *seen.entry(record.partition_key.clone()).or_default() += 1;
            }
        }
        if let Err(e) = checkpointer.checkpoint().await {
            eprintln!("[{}] checkpoint failed: {e}", self.shard);
        }
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
        match checkpointer.checkpoint_shard_end().await {
            Ok(()) => println!("[{}] shard ended; its children may start", self.shard),
            Err(e) => eprintln!("[{}] SHARD_END checkpoint failed: {e}", self.shard),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let aws = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let seen: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();

    let demo = args.first().map(String::as_str) == Some("--demo");
    let (stream, table) = if demo {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        (format!("demo-{suffix}"), format!("demo-leases-{suffix}"))
    } else {
        match (args.first(), args.get(1)) {
            (Some(s), Some(t)) => (s.clone(), t.clone()),
            _ => anyhow::bail!("usage: org_events --demo | org_events STREAM LEASE_TABLE"),
        }
    };

    if demo {
        kinesis
            .create_stream()
            .stream_name(&stream)
            .shard_count(2)
            .send()
            .await?;
        wait_active(&kinesis, &stream).await?;
    }

    let printer_seen = Arc::clone(&seen);
    let worker = Worker::start(
        WorkerConfig::new(&stream, &table)
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(250)),
        kinesis.clone(),
        dynamodb,
        move |shard: &str| OrgPrinter {
            shard: shard.to_owned(),
            seen: Arc::clone(&printer_seen),
        },
    )
    .await?;

    if demo {
        let producer = Producer::new(kinesis.clone(), &stream);
        let orgs = ["acme", "globex", "initech"];
        for round in 0..10 {
            let events = orgs
                .iter()
                .map(|org| Event::new(*org, format!("{org} event #{round}")))
                .collect();
            producer.send(events).await?;
            if round == 4 {
                split_first_shard(&kinesis, &stream).await?;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let total: usize = seen.lock().map(|s| s.values().sum()).unwrap_or(0);
            if total >= 30 {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {total} of 30 events arrived"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        tokio::signal::ctrl_c().await?;
    }
    worker.shutdown().await;
    if let Ok(seen) = seen.lock() {
        for (org, n) in seen.iter() {
            println!("{org}: {n} events");
        }
    }
    if demo {
        kinesis.delete_stream().stream_name(&stream).send().await?;
    }
    Ok(())
}

async fn wait_active(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        let out = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await?;
        if out
            .stream_description_summary()
            .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("stream {stream} did not become ACTIVE")
}

async fn split_first_shard(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> anyhow::Result<()> {
    let shards = shardctl_consumer::shards::list_shards(kinesis, stream).await?;
    let Some(shard) = shards.iter().find(|s| !s.closed) else {
        return Ok(());
    };
    let start: u128 = shard.starting_hash_key.as_deref().unwrap_or("0").parse()?;
    let end: u128 = shard.ending_hash_key.as_deref().unwrap_or("0").parse()?;
    kinesis
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&shard.shard_id)
        .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
        .send()
        .await?;
    println!("-- split {} while producing --", shard.shard_id);
    wait_active(kinesis, stream).await
}
