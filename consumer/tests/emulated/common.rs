//! Shared harness: AWS clients from the standard environment, stream helpers, a recording processor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{event_id, event_payload};
use shardctl_consumer::shards::{ShardInfo, list_shards};
use uuid::Uuid;

pub use shardctl_test_support::{START_EMULATORS, create_stream, eventually, unique, wait_active};

pub struct Aws {
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

/// Clients from the standard `AWS_ENDPOINT_URL_*` variables. Panics when they are missing, unless
/// `SHARDCTL_SKIP_EMULATOR_TESTS=1` opts out (then `None`: the test returns).
pub async fn aws() -> Option<Aws> {
    if std::env::var("SHARDCTL_SKIP_EMULATOR_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SHARDCTL_SKIP_EMULATOR_TESTS=1: emulator test skipped");
        return None;
    }
    let _ = *START;
    shardctl_test_support::require_endpoints(&["KINESIS", "DYNAMODB"]);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let config = shardctl_test_support::sdk_config().await;
    Some(Aws {
        kinesis: aws_sdk_kinesis::Client::new(&config),
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
    })
}

/// A worker configuration for tests on `stream` with its own lease table: 3 s failover, 200 ms
/// idle polls.
pub fn test_config(stream: &str) -> shardctl_consumer::WorkerConfig {
    shardctl_consumer::WorkerConfig::new(stream, unique("leases"))
        .with_failover(Duration::from_secs(3))
        .with_idle_poll_interval(Duration::from_millis(200))
}

/// The ARN of `stream`.
pub async fn stream_arn(k: &aws_sdk_kinesis::Client, stream: &str) -> String {
    k.describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn
}

pub async fn open_shards(k: &aws_sdk_kinesis::Client, stream: &str) -> Vec<ShardInfo> {
    let mut open: Vec<ShardInfo> = list_shards(k, stream)
        .await
        .expect("ListShards")
        .into_iter()
        .filter(|s| !s.closed)
        .collect();
    open.sort_by_key(|s| hash(&s.starting_hash_key));
    open
}

fn hash(k: &Option<String>) -> u128 {
    k.as_deref().and_then(|s| s.parse().ok()).expect("hash key")
}

/// Splits `shard` at its midpoint and waits for ACTIVE (retrying while the stream is busy).
pub async fn split(k: &aws_sdk_kinesis::Client, stream: &str, shard: &ShardInfo) {
    let start = hash(&shard.starting_hash_key);
    let end = hash(&shard.ending_hash_key);
    let mid = start + (end - start) / 2 + 1;
    eventually(
        &format!("SplitShard {}", shard.shard_id),
        Duration::from_secs(30),
        || async {
            match k
                .split_shard()
                .stream_name(stream)
                .shard_to_split(&shard.shard_id)
                .new_starting_hash_key(mid.to_string())
                .send()
                .await
            {
                Ok(_) => Some(()),
                Err(e)
                    if e.as_service_error().is_some_and(|s| {
                        s.is_resource_in_use_exception() || s.is_limit_exceeded_exception()
                    }) =>
                {
                    None
                }
                Err(e) => panic!(
                    "SplitShard: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(&e)
                ),
            }
        },
    )
    .await;
    wait_active(k, stream).await;
}

/// Merges two adjacent open shards and waits for ACTIVE.
pub async fn merge(k: &aws_sdk_kinesis::Client, stream: &str, a: &ShardInfo, b: &ShardInfo) {
    assert_eq!(
        hash(&a.ending_hash_key) + 1,
        hash(&b.starting_hash_key),
        "shards must be adjacent"
    );
    eventually(
        &format!("MergeShards {} {}", a.shard_id, b.shard_id),
        Duration::from_secs(30),
        || async {
            match k
                .merge_shards()
                .stream_name(stream)
                .shard_to_merge(&a.shard_id)
                .adjacent_shard_to_merge(&b.shard_id)
                .send()
                .await
            {
                Ok(_) => Some(()),
                Err(e)
                    if e.as_service_error().is_some_and(|s| {
                        s.is_resource_in_use_exception() || s.is_limit_exceeded_exception()
                    }) =>
                {
                    None
                }
                Err(e) => panic!(
                    "MergeShards: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(&e)
                ),
            }
        },
    )
    .await;
    wait_active(k, stream).await;
}

/// Payload of test events: `key:seq`.
pub fn payload(key: &str, seq: u64) -> String {
    format!("{key}:{seq}")
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub worker: String,
    pub shard: String,
    pub key: String,
    pub seq: u64,
    pub id: Option<Uuid>,
    pub at: Instant,
}

/// Everything the recording processors saw, across workers.
#[derive(Debug, Default)]
pub struct Log {
    pub deliveries: Mutex<Vec<Delivery>>,
    /// (worker, shard, when) of each `initialize`.
    pub inits: Mutex<Vec<(String, String, Instant)>>,
    /// shard -> when `SHARD_END` was checkpointed (the moment before the write).
    pub ended: Mutex<HashMap<String, Instant>>,
    /// Every `process_records` call.
    pub calls: Mutex<Vec<Call>>,
}

/// One `process_records` call of one processor instance.
#[derive(Debug, Clone)]
pub struct Call {
    pub worker: String,
    pub shard: String,
    /// The processor instance (one per lease acquisition).
    pub instance: u64,
    /// When the batch was dispatched (the call started).
    pub start: Instant,
    pub end: Instant,
}

impl Log {
    pub fn delivered_ids(&self) -> BTreeSet<Uuid> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .filter_map(|d| d.id)
            .collect()
    }
}

static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A processor that records deliveries and checkpoints every `every` records (so a lease that
/// moves without a handoff replays up to `every - 1` records). Like a careful application, it
/// stops handling a batch once a checkpoint says the lease is lost.
pub struct Recorder {
    pub worker: String,
    pub shard: String,
    pub log: Arc<Log>,
    pub every: usize,
    pub since_checkpoint: usize,
    pub instance: u64,
}

impl Recorder {
    pub fn factory(
        worker: &str,
        log: &Arc<Log>,
        every: usize,
    ) -> impl Fn(&str) -> Recorder + Send + Sync + 'static {
        let worker = worker.to_owned();
        let log = Arc::clone(log);
        move |shard: &str| Recorder {
            worker: worker.clone(),
            shard: shard.to_owned(),
            log: Arc::clone(&log),
            every,
            since_checkpoint: 0,
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl ShardProcessor for Recorder {
    async fn initialize(&mut self, input: InitInput) {
        self.log
            .inits
            .lock()
            .unwrap()
            .push((self.worker.clone(), input.shard_id, Instant::now()));
    }

    async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
        let started = Instant::now();
        for record in &batch.records {
            let text = String::from_utf8_lossy(event_payload(&record.data)).into_owned();
            let (key, seq) = text.split_once(':').expect("payload key:seq");
            self.log.deliveries.lock().unwrap().push(Delivery {
                worker: self.worker.clone(),
                shard: batch.shard_id.clone(),
                key: key.to_owned(),
                seq: seq.parse().expect("seq"),
                id: event_id(&record.data),
                at: Instant::now(),
            });
            self.since_checkpoint += 1;
            if self.since_checkpoint >= self.every {
                match checkpointer.checkpoint_at(record).await {
                    Ok(()) => self.since_checkpoint = 0,
                    Err(e) if e.label() == "lease_lost" => break,
                    Err(_) => {}
                }
            }
        }
        self.log.calls.lock().unwrap().push(Call {
            worker: self.worker.clone(),
            shard: batch.shard_id,
            instance: self.instance,
            start: started,
            end: Instant::now(),
        });
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
        let before = Instant::now();
        if checkpointer.checkpoint_shard_end().await.is_ok() {
            self.log
                .ended
                .lock()
                .unwrap()
                .insert(self.shard.clone(), before);
        }
    }
}

/// Checks per-key order: with duplicates removed (first delivery wins), each key's sequence is
/// 0, 1, 2, ... in delivery order, complete up to `per_key[key]`. Returns the duplicates.
pub fn check_order_and_completeness(log: &Log, per_key: &BTreeMap<String, u64>) -> Vec<Delivery> {
    let deliveries = log.deliveries.lock().unwrap().clone();
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for d in deliveries {
        let expected = next.entry(d.key.clone()).or_insert(0);
        if d.seq < *expected {
            duplicates.push(d);
            continue;
        }
        assert_eq!(
            d.seq, *expected,
            "key {} delivered seq {} before seq {} (shard {}, worker {})",
            d.key, d.seq, expected, d.shard, d.worker
        );
        *expected += 1;
    }
    for (key, count) in per_key {
        assert_eq!(
            next.get(key).copied().unwrap_or(0),
            *count,
            "events of key {key} missing"
        );
    }
    duplicates
}

/// Checks that no shard was initialized before each of its parents checkpointed `SHARD_END`.
pub async fn check_parents_before_children(k: &aws_sdk_kinesis::Client, stream: &str, log: &Log) {
    let shards = list_shards(k, stream).await.expect("ListShards");
    let ended = log.ended.lock().unwrap().clone();
    let inits = log.inits.lock().unwrap().clone();
    for shard in &shards {
        for (_, id, at) in inits.iter().filter(|(_, id, _)| *id == shard.shard_id) {
            for parent in &shard.parents {
                let parent_end = ended
                    .get(parent)
                    .unwrap_or_else(|| panic!("{id} started but parent {parent} never ended"));
                assert!(
                    parent_end < at,
                    "{id} started before its parent {parent} ended"
                );
            }
        }
    }
}

/// The processor-level overlap detector: for each shard, the span from the first to the last
/// batch dispatched to each processor instance. Two instances whose spans overlap processed one
/// shard at the same time. Returns a description of each overlap (none is the guarantee).
pub fn overlapping_processing(log: &Log) -> Vec<String> {
    let calls = log.calls.lock().unwrap().clone();
    let mut spans: BTreeMap<(String, u64), (String, Instant, Instant)> = BTreeMap::new();
    for c in &calls {
        let span = spans.entry((c.shard.clone(), c.instance)).or_insert((
            c.worker.clone(),
            c.start,
            c.start,
        ));
        span.1 = span.1.min(c.start);
        span.2 = span.2.max(c.start);
    }
    let mut by_shard: BTreeMap<&str, Vec<(&str, Instant, Instant)>> = BTreeMap::new();
    for ((shard, _), (worker, first, last)) in &spans {
        by_shard
            .entry(shard.as_str())
            .or_default()
            .push((worker.as_str(), *first, *last));
    }
    let mut overlaps = Vec::new();
    for (shard, mut spans) in by_shard {
        spans.sort_by_key(|s| s.1);
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                if b.1 <= a.2 {
                    let t = |i: Instant| i.saturating_duration_since(*START);
                    overlaps.push(format!(
                        "{shard}: {} dispatched batches from {:?} to {:?}, {} from {:?} to {:?} (since the first test started)",
                        a.0,
                        t(a.1),
                        t(a.2),
                        b.0,
                        t(b.1),
                        t(b.2),
                    ));
                }
            }
        }
    }
    overlaps
}

/// The clock [`overlapping_processing`] reports times against (the first test's start).
static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// What a run delivered, against what was produced.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Events delivered more than once (after a lease moved without a handoff).
    pub duplicates: usize,
    /// Events delivered before an earlier event of their key.
    pub order_violations: usize,
    /// Events produced and never delivered.
    pub lost: u64,
}

/// Counts, without panicking, what [`check_order_and_completeness`] asserts.
pub fn tally(log: &Log, per_key: &BTreeMap<String, u64>) -> Tally {
    let deliveries = log.deliveries.lock().unwrap().clone();
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut t = Tally::default();
    for d in deliveries {
        if !seen.insert((d.key.clone(), d.seq)) {
            t.duplicates += 1;
            continue;
        }
        let expected = next.entry(d.key.clone()).or_insert(0);
        if d.seq != *expected {
            t.order_violations += 1;
        }
        *expected = (*expected).max(d.seq + 1);
    }
    for (key, count) in per_key {
        let delivered = seen.iter().filter(|(k, _)| k == key).count() as u64;
        t.lost += count.saturating_sub(delivered);
    }
    t
}

/// Pairs of `process_records` calls of two instances on one shard that overlap in time (calls
/// that ran past their worker's tenure: a processor limit, not asserted).
pub fn overlapping_calls(log: &Log) -> usize {
    let calls = log.calls.lock().unwrap().clone();
    let mut n = 0;
    for (i, a) in calls.iter().enumerate() {
        for b in &calls[i + 1..] {
            if a.shard == b.shard && a.instance != b.instance && a.start < b.end && b.start < a.end
            {
                n += 1;
            }
        }
    }
    n
}
