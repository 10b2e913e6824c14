//! Order across a reshard while the fleet lags behind it: the listing a worker holds is up to a
//! shard-sync interval old, and a merge child can get a lease row before its other parent has one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::shards::ShardInfo;
use shardctl_consumer::store::LeaseStore;
use shardctl_consumer::{Checkpoint, Worker, WorkerConfig};
use tokio::sync::watch;

use crate::common::*;

/// A [`Recorder`] that holds one shard back in `initialize` until a gate opens: a consumer
/// lagging on that shard while the rest of the stream moves on.
struct Gated {
    inner: Recorder,
    gate: Option<watch::Receiver<bool>>,
}

impl ShardProcessor for Gated {
    async fn initialize(&mut self, input: InitInput) {
        if let Some(gate) = &mut self.gate {
            let _ = gate.wait_for(|open| *open).await;
        }
        self.inner.initialize(input).await;
    }
    async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
        self.inner.process_records(batch, checkpointer).await;
    }
    async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
        self.inner.shard_ended(checkpointer).await;
    }
}

fn low(s: &ShardInfo) -> u128 {
    s.starting_hash_key.as_deref().unwrap().parse().unwrap()
}

/// Puts `key:seq` with an explicit hash key, so the test decides which shard gets it.
async fn put(aws: &Aws, stream: &str, key: &str, hash: u128, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        aws.kinesis
            .put_record()
            .stream_name(stream)
            .partition_key(key)
            .explicit_hash_key(hash.to_string())
            .data(Blob::new(payload(key, seq)))
            .send()
            .await
            .expect("PutRecord");
    }
}

/// Regression (issue 11, item 1): shard a is split into b and c, and c is merged with x into d,
/// while the worker is still held back on a and its listing predates both reshards. When x
/// ends, d's row appears with parents c and x; c has no row and is missing from the stale
/// listing. It used to count as gone: d ran before c and before a, its grandparent, and the
/// events of a key in c's range came out of order. c must wait for evidence that cannot be stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_child_waits_for_its_grandparent_while_the_listing_is_stale() {
    let Some(aws) = aws().await else { return };
    let stream = unique("lagging");
    let table = unique("lagging-leases");
    create_stream(&aws.kinesis, &stream, 2).await;
    let open = open_shards(&aws.kinesis, &stream).await;
    let (a, x) = (open[0].clone(), open[1].clone());

    let log = Arc::new(Log::default());
    let (gate, gate_rx) = watch::channel(false);
    let recorder = Recorder::factory("w", &log, 1);
    let lagging = a.shard_id.clone();
    // The default shard-sync interval (60 s): the worker's listing is the one it started with.
    let worker = Worker::start(
        WorkerConfig::new(&stream, &table)
            .with_worker_id("w")
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200)),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        move |shard: &str| Gated {
            inner: recorder(shard),
            gate: (shard == lagging).then(|| gate_rx.clone()),
        },
    )
    .await
    .expect("worker starts");

    // Keys by where they land: kb in b's range, kc in c's (then d's), kx in x's (then d's).
    let a_mid = low(&a) + (low(&x) - 1 - low(&a)) / 2 + 1;
    let (kb, kc, kx) = (low(&a) + 1, a_mid + 1, low(&x) + 1);
    for (key, hash) in [("kb", kb), ("kc", kc), ("kx", kx)] {
        put(&aws, &stream, key, hash, 0..3).await;
    }
    split(&aws.kinesis, &stream, &a).await;
    let open = open_shards(&aws.kinesis, &stream).await;
    let c = open
        .iter()
        .find(|s| s.parents.contains(&a.shard_id) && low(s) == a_mid)
        .expect("c")
        .clone();
    for (key, hash) in [("kb", kb), ("kc", kc), ("kx", kx)] {
        put(&aws, &stream, key, hash, 3..6).await;
    }
    merge(&aws.kinesis, &stream, &c, &x).await;
    for (key, hash) in [("kb", kb), ("kc", kc), ("kx", kx)] {
        put(&aws, &stream, key, hash, 6..9).await;
    }

    // x is read to its end while a is held back.
    let store = LeaseStore::new(aws.dynamodb.clone(), &table);
    eventually("x reaches SHARD_END", Duration::from_secs(30), || {
        let store = store.clone();
        let id = x.shard_id.clone();
        async move {
            let lease = store.get(&id).await.ok().flatten()?;
            (lease.checkpoint == Checkpoint::ShardEnd).then_some(())
        }
    })
    .await;
    // Several lease rounds in which d could (wrongly) start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    gate.send_replace(true);

    eventually("all 27 events", Duration::from_secs(60), || async {
        (log.deliveries.lock().unwrap().len() >= 27).then_some(())
    })
    .await;
    let per_key: BTreeMap<String, u64> = ["kb", "kc", "kx"]
        .iter()
        .map(|k| (k.to_string(), 9))
        .collect();
    let duplicates = check_order_and_completeness(&log, &per_key);
    assert!(duplicates.is_empty(), "{duplicates:?}");
    check_parents_before_children(&aws.kinesis, &stream, &log).await;
    worker.shutdown().await;
}
