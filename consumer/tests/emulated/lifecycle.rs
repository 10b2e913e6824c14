//! Processor lifecycle: `shard_ended` without `SHARD_END`, graceful shutdown handing shards over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{Event, Producer};
use shardctl_consumer::store::LeaseStore;
use shardctl_consumer::{Checkpoint, Lease, Worker, WorkerConfig};

use crate::common::*;

#[derive(Default)]
struct Forgetful {
    /// shard -> times `shard_ended` was called
    ended_calls: Mutex<BTreeMap<String, Vec<Instant>>>,
    inits: Mutex<Vec<(String, Instant)>>,
    records: Mutex<usize>,
}

/// Forgets to checkpoint `SHARD_END` the first time it is told a shard ended.
struct ForgetsOnce {
    shared: Arc<Forgetful>,
    shard: String,
}

impl ShardProcessor for ForgetsOnce {
    async fn initialize(&mut self, input: InitInput) {
        self.shared
            .inits
            .lock()
            .unwrap()
            .push((input.shard_id, Instant::now()));
    }
    async fn process_records(&mut self, batch: RecordBatch, c: &Checkpointer) {
        *self.shared.records.lock().unwrap() += batch.records.len();
        c.checkpoint().await.unwrap();
    }
    async fn shard_ended(&mut self, c: &Checkpointer) {
        let calls = {
            let mut map = self.shared.ended_calls.lock().unwrap();
            let calls = map.entry(self.shard.clone()).or_default();
            calls.push(Instant::now());
            calls.len()
        };
        if calls >= 2 {
            c.checkpoint_shard_end().await.unwrap();
        }
    }
}

/// A processor that returns from `shard_ended` without checkpointing is asked again, and the
/// children wait until it finally does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_ended_is_repeated_until_shard_end_is_checkpointed_and_children_wait() {
    let Some(aws) = aws().await else { return };
    let stream = unique("forgetful");
    create_stream(&aws.kinesis, &stream, 1).await;
    let shared = Arc::new(Forgetful::default());
    let s = Arc::clone(&shared);
    let worker = Worker::start(
        WorkerConfig::new(&stream, unique("leases"))
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200)),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        move |shard: &str| ForgetsOnce {
            shared: Arc::clone(&s),
            shard: shard.to_owned(),
        },
    )
    .await
    .unwrap();
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    producer
        .send(
            (0..10)
                .map(|i| Event::new("org", payload("org", i)))
                .collect(),
        )
        .await
        .unwrap();
    let parent = open_shards(&aws.kinesis, &stream).await.remove(0);
    split(&aws.kinesis, &stream, &parent).await;
    producer
        .send(
            (10..20)
                .map(|i| Event::new("org", payload("org", i)))
                .collect(),
        )
        .await
        .unwrap();
    eventually("all 20 events", Duration::from_secs(30), || async {
        (*shared.records.lock().unwrap() >= 20).then_some(())
    })
    .await;

    let calls = shared.ended_calls.lock().unwrap()[&parent.shard_id].clone();
    assert!(calls.len() >= 2, "shard_ended called {} times", calls.len());
    let children_started: Vec<Instant> = shared
        .inits
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s != parent.shard_id)
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(children_started.len(), 2, "both children start");
    for at in children_started {
        assert!(
            at > calls[1],
            "a child started before its parent checkpointed SHARD_END"
        );
    }
    worker.shutdown().await;
}

/// A worker that shuts down checkpoints and releases; another worker takes over at once (no
/// failover wait) and resumes exactly at the checkpoint: no record twice, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_shards_over_at_the_checkpoint() {
    let Some(aws) = aws().await else { return };
    let stream = unique("handover");
    let table = unique("leases");
    create_stream(&aws.kinesis, &stream, 2).await;
    let log = Arc::new(Log::default());
    let failover = Duration::from_secs(3);
    let config = |name: &str| {
        WorkerConfig::new(&stream, &table)
            .with_worker_id(name)
            .with_failover(failover)
            .with_idle_poll_interval(Duration::from_millis(200))
    };
    // Checkpoints only when the lease moves (every = large).
    let a = Worker::start(
        config("a"),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        Recorder::factory("a", &log, 1_000_000),
    )
    .await
    .unwrap();
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    let keys: Vec<String> = (0..6).map(|i| format!("org-{i}")).collect();
    let send = |range: std::ops::Range<u64>| {
        let producer = producer.clone();
        let keys = keys.clone();
        async move {
            for round in range {
                let events = keys
                    .iter()
                    .map(|k| Event::new(k.clone(), payload(k, round)))
                    .collect();
                producer.send(events).await.unwrap();
            }
        }
    };
    send(0..10).await;
    eventually("first 60 events", Duration::from_secs(30), || async {
        (log.delivered_ids().len() >= 60).then_some(())
    })
    .await;
    let b = Worker::start(
        config("b"),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        Recorder::factory("b", &log, 1_000_000),
    )
    .await
    .unwrap();
    a.shutdown().await;
    let shut_down = Instant::now();
    send(10..20).await;
    eventually("all 120 events", Duration::from_secs(30), || async {
        (log.delivered_ids().len() >= 120).then_some(())
    })
    .await;
    eventually("b holds both shards", Duration::from_secs(10), || async {
        (b.held_shards().len() == 2).then_some(())
    })
    .await;

    let per_key: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 20)).collect();
    let duplicates = check_order_and_completeness(&log, &per_key);
    assert!(
        duplicates.is_empty(),
        "{} records processed twice across the handover",
        duplicates.len()
    );
    let last_b_init = log
        .inits
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, _, _)| w == "b")
        .map(|(_, _, at)| *at)
        .max()
        .unwrap();
    assert!(
        last_b_init < shut_down + failover / 2,
        "released leases were taken only after {:?}",
        last_b_init.saturating_duration_since(shut_down)
    );
    b.shutdown().await;
}

/// Unlike KCL, a parent whose lease row is missing while the stream still lists it is not
/// drained: its children wait (and a warning says why) until the row shows `SHARD_END`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_wait_while_a_listed_parent_has_no_lease_row() {
    let Some(aws) = aws().await else { return };
    let stream = unique("orphans");
    let table = unique("leases");
    create_stream(&aws.kinesis, &stream, 1).await;
    let parent = open_shards(&aws.kinesis, &stream).await.remove(0);
    split(&aws.kinesis, &stream, &parent).await;
    let children: Vec<_> = open_shards(&aws.kinesis, &stream).await;
    assert_eq!(children.len(), 2);

    // A table with the children's rows but no row for their (still listed) parent.
    let store = LeaseStore::new(aws.dynamodb.clone(), &table);
    store.ensure_table().await.unwrap();
    for child in &children {
        let lease = Lease::new(child.shard_id.clone(), Checkpoint::TrimHorizon)
            .with_parents([parent.shard_id.clone()]);
        assert!(store.create_if_absent(&lease).await.unwrap());
    }
    let log = Arc::new(Log::default());
    let failover = Duration::from_secs(2);
    let worker = Worker::start(
        WorkerConfig::new(&stream, &table)
            .with_failover(failover)
            .with_idle_poll_interval(Duration::from_millis(200)),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        Recorder::factory("w", &log, 1),
    )
    .await
    .unwrap();
    eventually("children leased", Duration::from_secs(10), || async {
        (worker.held_shards().len() == 2).then_some(())
    })
    .await;
    // Asserting that something does not happen needs a window: several lease rounds.
    tokio::time::sleep(failover).await;
    assert!(
        log.inits.lock().unwrap().is_empty(),
        "a child started although its parent is unknown"
    );
    assert!(
        store.get(&parent.shard_id).await.unwrap().is_none(),
        "shard sync must not resurrect the parent"
    );

    // Once the parent's row says SHARD_END, both children start.
    assert!(
        store
            .create_if_absent(&Lease::new(parent.shard_id.clone(), Checkpoint::ShardEnd))
            .await
            .unwrap()
    );
    eventually("children started", Duration::from_secs(10), || async {
        (log.inits.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    worker.shutdown().await;
}

/// Finished leases are deleted under KCL's precondition (every child started, no parent row
/// left), shard sync never recreates them, and the shared drain rule (the controller's gate)
/// still reads the deleted parent as drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_leases_are_cleaned_up_and_still_read_as_drained() {
    let Some(aws) = aws().await else { return };
    let stream = unique("cleanup");
    let table = unique("cleanup-leases");
    create_stream(&aws.kinesis, &stream, 1).await;
    let log = Arc::new(crate::common::Log::default());
    let config = WorkerConfig::new(&stream, &table)
        .with_worker_id("w1")
        .with_failover(Duration::from_secs(3))
        .with_idle_poll_interval(Duration::from_millis(200))
        .with_shard_sync_interval(Duration::from_secs(1))
        .with_lease_cleanup_interval(Some(Duration::from_millis(500)));
    let worker = Worker::start(
        config,
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        crate::common::Recorder::factory("w1", &log, 1),
    )
    .await
    .expect("worker starts");
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    let send = |round: u64| {
        let events = (0..4)
            .map(|k| {
                let key = format!("org-{k}");
                let p = payload(&key, round);
                Event::new(key, p)
            })
            .collect();
        producer.send(events)
    };
    send(0).await.expect("produce");
    let parent = open_shards(&aws.kinesis, &stream).await.remove(0);
    split(&aws.kinesis, &stream, &parent).await;
    for round in 1..4 {
        send(round).await.expect("produce");
    }
    let store = LeaseStore::new(aws.dynamodb.clone(), &table);
    eventually(
        "the parent's finished lease is cleaned up",
        Duration::from_secs(60),
        || {
            let store = store.clone();
            let id = parent.shard_id.clone();
            async move { store.get(&id).await.ok().flatten().is_none().then_some(()) }
        },
    )
    .await;
    let per_key: BTreeMap<String, u64> = (0..4).map(|k| (format!("org-{k}"), 4)).collect();
    eventually("every event delivered", Duration::from_secs(60), || {
        let n = log.deliveries.lock().unwrap().len();
        async move { (n >= 16).then_some(()) }
    })
    .await;
    assert!(check_order_and_completeness(&log, &per_key).is_empty());

    // Two more shard syncs: the deleted parent is not recreated.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scan = store.scan().await.expect("scan");
    assert!(
        scan.leases.iter().all(|l| l.lease_key != parent.shard_id),
        "the finished parent was recreated: {:?}",
        scan.leases
    );
    // The controller's gate reads the table with the same rule: the parent is drained.
    let listed = shardctl_consumer::shards::list_shards(&aws.kinesis, &stream)
        .await
        .expect("list");
    let lineage = shardctl_consumer::drain::lineage_of(&listed);
    let items = aws
        .dynamodb
        .scan()
        .table_name(&table)
        .send()
        .await
        .expect("scan");
    let rows = shardctl_lease::TableRows::read(
        shardctl_lease::StreamFilter::named(&stream),
        items
            .items()
            .iter()
            .map(shardctl_lease::sdk::from_sdk)
            .collect::<Vec<_>>()
            .iter(),
    );
    let state = shardctl_lease::DrainView::new(&lineage, &rows).state(&parent.shard_id);
    assert!(
        matches!(state, shardctl_lease::DrainState::CleanedUp { .. }),
        "{state:?}"
    );
    worker.shutdown().await;
}

/// Regression: an `AT_TIMESTAMP` lease (KCL stores only the sentinel) was taken and released in
/// a loop without being read. With the application's instant configured, reading starts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_timestamp_lease_starts_at_the_configured_instant() {
    let Some(aws) = aws().await else { return };
    let stream = unique("attimestamp");
    let table = unique("attimestamp-leases");
    create_stream(&aws.kinesis, &stream, 1).await;
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    let send = |round: u64| producer.send(vec![Event::new("org-0", payload("org-0", round))]);
    for round in 0..3 {
        send(round).await.expect("produce");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for round in 3..6 {
        send(round).await.expect("produce");
    }
    let log = Arc::new(crate::common::Log::default());
    let mut config = WorkerConfig::new(&stream, &table)
        .with_worker_id("w1")
        .with_failover(Duration::from_secs(3))
        .with_idle_poll_interval(Duration::from_millis(200));
    config.initial_position = shardctl_consumer::shards::InitialPosition::AtTimestamp(from);
    let worker = Worker::start(
        config,
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        crate::common::Recorder::factory("w1", &log, 1000),
    )
    .await
    .expect("worker starts");
    eventually(
        "the records after the instant",
        Duration::from_secs(30),
        || {
            let n = log.deliveries.lock().unwrap().len();
            async move { (n >= 3).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seqs: Vec<u64> = log
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let store = LeaseStore::new(aws.dynamodb.clone(), &table);
    let scan = store.scan().await.expect("scan");
    assert_eq!(scan.leases.len(), 1);
    worker.shutdown().await;
}
