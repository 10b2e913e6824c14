//! End-to-end throughput against the emulators: produce a backlog with the producer helper, then
//! time one worker draining it through the lease table and `GetRecords` to a counting processor.
//!
//! ```text
//! scripts/emulators.sh start && eval "$(scripts/emulators.sh env)"
//! cargo bench -p shardctl-consumer --bench e2e_throughput
//! ```
//!
//! kinesis-local spends about 1.3 ms of CPU per record on `PutRecords` (26 s for 20,000 records
//! here), so producing the backlog takes most of the run; the figure that matters is the consume
//! rate.
//!
//! Environment knobs: `E2E_RECORDS` (default 20000), `E2E_SHARDS` (4), `E2E_KEYS` (400),
//! `E2E_PAYLOAD` bytes (100).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{Event, Producer};
use shardctl_consumer::{Worker, WorkerConfig};
use shardctl_test_support::{create_stream, knob, require_endpoints, sdk_config};

struct Count(Arc<AtomicU64>, Arc<OnceLock<Instant>>);

impl ShardProcessor for Count {
    async fn initialize(&mut self, _: InitInput) {}
    async fn process_records(&mut self, batch: RecordBatch, c: &Checkpointer) {
        self.1.get_or_init(Instant::now);
        self.0
            .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        let _ = c.checkpoint().await;
    }
    async fn shard_ended(&mut self, c: &Checkpointer) {
        let _ = c.checkpoint_shard_end().await;
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probe
    }
    require_endpoints(&["KINESIS", "DYNAMODB"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let records = knob("E2E_RECORDS", 20_000);
    let shards = knob("E2E_SHARDS", 4) as i32;
    let keys = knob("E2E_KEYS", 400);
    let payload = vec![b'x'; knob("E2E_PAYLOAD", 100) as usize];
    let config = sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let stream = format!("e2e-{suffix}");
    let table = format!("e2e-leases-{suffix}");
    create_stream(&kinesis, &stream, shards).await;

    let producer = Producer::new(kinesis.clone(), &stream);
    let events: Vec<Event> = (0..records)
        .map(|i| Event::new(format!("org-{:04}", i % keys), payload.clone()))
        .collect();
    let started = Instant::now();
    let report = producer.send(events).await.expect("produce");
    let produce_secs = started.elapsed().as_secs_f64();
    println!(
        "produce: {records} records ({} B payload, {keys} keys) in {produce_secs:.2} s = {:.0} records/s ({} PutRecords calls)",
        payload.len(),
        records as f64 / produce_secs,
        report.calls
    );

    let count = Arc::new(AtomicU64::new(0));
    let first: Arc<OnceLock<Instant>> = Arc::default();
    let c = Arc::clone(&count);
    let f = Arc::clone(&first);
    let started = Instant::now();
    let worker = Worker::start(
        WorkerConfig::new(&stream, &table)
            .with_failover(Duration::from_secs(10))
            .with_idle_poll_interval(Duration::from_millis(200)),
        kinesis,
        dynamodb,
        move |_: &str| Count(Arc::clone(&c), Arc::clone(&f)),
    )
    .await
    .expect("worker");
    let deadline = Instant::now() + Duration::from_secs(300);
    while count.load(Ordering::Relaxed) < records {
        assert!(
            Instant::now() < deadline,
            "consumed only {}",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consume_secs = started.elapsed().as_secs_f64();
    let draining_secs = first
        .get()
        .map_or(consume_secs, |f| f.elapsed().as_secs_f64());
    println!(
        "consume: {records} records from {shards} shards by one worker in {consume_secs:.2} s = {:.0} records/s including worker start; {:.0} records/s from the first batch on (checkpoint per batch)",
        records as f64 / consume_secs,
        records as f64 / draining_secs
    );
    worker.shutdown().await;
}
