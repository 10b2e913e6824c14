//! Shared harness: AWS clients from the standard environment, stream helpers, a recording processor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::types::StreamStatus;
use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{event_id, event_payload};
use shardctl_consumer::shards::{ShardInfo, list_shards};
use uuid::Uuid;

pub const START_EMULATORS: &str =
    "start the emulators: scripts/emulators.sh start && eval \"$(scripts/emulators.sh env)\"";

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
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_KINESIS").is_some()
            && std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        "{START_EMULATORS}"
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    Some(Aws {
        kinesis: aws_sdk_kinesis::Client::new(&config),
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
    })
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_active(k: &aws_sdk_kinesis::Client, stream: &str) {
    eventually(
        &format!("stream {stream} ACTIVE"),
        Duration::from_secs(30),
        || async {
            let out = k
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await
                .ok()?;
            (out.stream_description_summary()?.stream_status() == &StreamStatus::Active)
                .then_some(())
        },
    )
    .await;
}

pub async fn create_stream(k: &aws_sdk_kinesis::Client, stream: &str, shards: i32) {
    k.create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await
        .expect("CreateStream");
    wait_active(k, stream).await;
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
    /// (worker, shard, start, end) of each `process_records` call.
    pub calls: Mutex<Vec<(String, String, Instant, Instant)>>,
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

/// A processor that records deliveries and checkpoints every `every` records (so a lease that
/// moves without a handoff replays up to `every - 1` records).
pub struct Recorder {
    pub worker: String,
    pub shard: String,
    pub log: Arc<Log>,
    pub every: usize,
    pub since_checkpoint: usize,
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
            if self.since_checkpoint >= self.every
                && checkpointer.checkpoint_at(record).await.is_ok()
            {
                self.since_checkpoint = 0;
            }
        }
        self.log.calls.lock().unwrap().push((
            self.worker.clone(),
            batch.shard_id,
            started,
            Instant::now(),
        ));
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
