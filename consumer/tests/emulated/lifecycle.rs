//! Processor lifecycle: `shard_ended` without `SHARD_END`, graceful shutdown handing shards over.
//!
//! Longer than 500 lines by choice: each test drives a real worker fleet through one lifecycle
//! transition end to end, and the processors recording what they saw are shared by all of them.

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

/// A worker that shuts down checkpoints and releases; another worker takes over without waiting
/// for an expiry (the rows are free at once) and resumes exactly at the checkpoint: no record
/// twice, none lost. How long the takeover took is a benchmark's business, not asserted here.
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
    // Released, not left to expire: no lease is a's any more, so b takes them at its next round.
    let store = LeaseStore::new(aws.dynamodb.clone(), &table);
    for lease in store.scan().await.unwrap().leases {
        assert_ne!(
            lease.lease_owner.as_deref(),
            Some("a"),
            "{} still a's after its shutdown",
            lease.lease_key
        );
    }
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
    b.shutdown().await;
}

/// A listed parent without a lease row, whose children have rows that have not started: the
/// children's rows are no evidence that it was read (KCL counts the missing row as drained, which
/// breaks order). Shard sync creates its row, as KCL's shard syncer does for the ancestors of a
/// lease still at `TRIM_HORIZON`, and it is read before its children: nothing skipped, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_parent_without_a_row_is_read_before_its_children() {
    let Some(aws) = aws().await else { return };
    let stream = unique("orphans");
    let table = unique("leases");
    create_stream(&aws.kinesis, &stream, 1).await;
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    let keys: Vec<String> = (0..4).map(|i| format!("org-{i}")).collect();
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
    send(0..3).await;
    let parent = open_shards(&aws.kinesis, &stream).await.remove(0);
    split(&aws.kinesis, &stream, &parent).await;
    send(3..6).await;
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
    let worker = Worker::start(
        WorkerConfig::new(&stream, &table)
            .with_failover(Duration::from_secs(2))
            .with_idle_poll_interval(Duration::from_millis(200)),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        Recorder::factory("w", &log, 1),
    )
    .await
    .unwrap();
    eventually("every event", Duration::from_secs(30), || async {
        (log.deliveries.lock().unwrap().len() >= 24).then_some(())
    })
    .await;
    let per_key: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 6)).collect();
    assert!(check_order_and_completeness(&log, &per_key).is_empty());
    check_parents_before_children(&aws.kinesis, &stream, &log).await;
    let row = store.get(&parent.shard_id).await.unwrap();
    assert!(
        row.is_some_and(|l| l.is_finished()),
        "the parent's row was created and read to SHARD_END"
    );
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

#[derive(Default)]
struct Attempts {
    /// (what, the error's label or "ok")
    results: Mutex<Vec<(&'static str, &'static str)>>,
    delivered: Mutex<Vec<String>>,
}

/// Tries checkpoints an application must not be able to write, in its first batch.
struct Misbehaves(Arc<Attempts>);

impl ShardProcessor for Misbehaves {
    async fn initialize(&mut self, _: InitInput) {}
    async fn process_records(&mut self, batch: RecordBatch, c: &Checkpointer) {
        let first = {
            let mut d = self.0.delivered.lock().unwrap();
            let first = d.is_empty();
            d.extend(batch.records.iter().map(|r| r.sequence_number.clone()));
            first
        };
        if !first || batch.records.len() < 3 {
            return;
        }
        let label = |r: Result<(), shardctl_consumer::processor::CheckpointError>| match r {
            Ok(()) => "ok",
            Err(e) => e.label(),
        };
        let last = batch.records.last().unwrap().sequence_number.clone();
        let tries = [
            (
                "at the third record",
                c.checkpoint_at(&batch.records[2]).await,
            ),
            (
                "back at the first",
                c.checkpoint_at(&batch.records[0]).await,
            ),
            (
                "past the last delivered",
                c.checkpoint_sequence(&format!("{last}0")).await,
            ),
            ("not a number", c.checkpoint_sequence("12ab").await),
        ];
        let mut results = self.0.results.lock().unwrap();
        for (what, r) in tries {
            results.push((what, label(r)));
        }
    }
    async fn shard_ended(&mut self, c: &Checkpointer) {
        let _ = c.checkpoint_shard_end().await;
    }
}

/// Regression (issue 11, item 3): the checkpointer wrote any sequence number, backwards or past
/// what the processor was given (and even text that is no sequence number, which left an
/// unreadable row). KCL refuses the first two; so does this library, with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_backwards_or_past_what_was_delivered_are_refused() {
    let Some(aws) = aws().await else { return };
    let stream = unique("badcheckpoints");
    let table = unique("badcheckpoints-leases");
    create_stream(&aws.kinesis, &stream, 1).await;
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    producer
        .send(
            (0..5)
                .map(|i| Event::new("org", payload("org", i)))
                .collect(),
        )
        .await
        .unwrap();
    let attempts = Arc::new(Attempts::default());
    let a = Arc::clone(&attempts);
    let worker = Worker::start(
        WorkerConfig::new(&stream, &table)
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200)),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        move |_: &str| Misbehaves(Arc::clone(&a)),
    )
    .await
    .unwrap();
    eventually("the first batch", Duration::from_secs(30), || async {
        (attempts.results.lock().unwrap().len() == 4).then_some(())
    })
    .await;
    let results = attempts.results.lock().unwrap().clone();
    assert_eq!(
        results,
        [
            ("at the third record", "ok"),
            ("back at the first", "checkpoint_backwards"),
            ("past the last delivered", "checkpoint_beyond_delivered"),
            ("not a number", "invalid_sequence_number"),
        ]
    );
    let third = attempts.delivered.lock().unwrap()[2].clone();
    let shard = open_shards(&aws.kinesis, &stream).await.remove(0);
    let lease = LeaseStore::new(aws.dynamodb.clone(), &table)
        .get(&shard.shard_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.checkpoint.as_str(), third);
    worker.shutdown().await;
}

/// Regression (issue 11, item 3): the last checkpoint of a stolen lease (graceful handoff) was
/// conditional on `checkpointOwner` alone. Once the counter has moved in a way the previous owner
/// does not know of, its view of the lease is stale and it must not write; it was allowed to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_checkpoint_is_refused_once_the_lease_counter_moved() {
    let Some(aws) = aws().await else { return };
    let stream = unique("handoffcounter");
    let table = unique("handoffcounter-leases");
    create_stream(&aws.kinesis, &stream, 1).await;
    let log = Arc::new(Log::default());
    // Checkpoints only when asked to stop (the default `shutdown_requested`).
    let worker = Worker::start(
        WorkerConfig::new(&stream, &table)
            .with_worker_id("victim")
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200)),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        Recorder::factory("victim", &log, 1_000_000),
    )
    .await
    .unwrap();
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    producer
        .send(
            (0..5)
                .map(|i| Event::new("org", payload("org", i)))
                .collect(),
        )
        .await
        .unwrap();
    eventually("5 events", Duration::from_secs(30), || async {
        (log.deliveries.lock().unwrap().len() >= 5).then_some(())
    })
    .await;
    let shard = open_shards(&aws.kinesis, &stream).await.remove(0);
    // In one write: the lease is handed to "thief" with the marker naming the victim, and the
    // counter moves (a write the victim did not make).
    aws.dynamodb
        .update_item()
        .table_name(&table)
        .key(
            "leaseKey",
            aws_sdk_dynamodb::types::AttributeValue::S(shard.shard_id.clone()),
        )
        .update_expression("SET #o = :thief, #cpo = :victim, #c = #c + :one")
        .condition_expression("#o = :victim AND attribute_not_exists(#cpo)")
        .expression_attribute_names("#o", "leaseOwner")
        .expression_attribute_names("#cpo", "checkpointOwner")
        .expression_attribute_names("#c", "leaseCounter")
        .expression_attribute_values(
            ":thief",
            aws_sdk_dynamodb::types::AttributeValue::S("thief".into()),
        )
        .expression_attribute_values(
            ":victim",
            aws_sdk_dynamodb::types::AttributeValue::S("victim".into()),
        )
        .expression_attribute_values(
            ":one",
            aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
        )
        .send()
        .await
        .expect("hand the lease over");
    eventually("the victim lets go", Duration::from_secs(15), || async {
        worker.held_shards().is_empty().then_some(())
    })
    .await;
    let lease = LeaseStore::new(aws.dynamodb.clone(), &table)
        .get(&shard.shard_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lease.checkpoint,
        Checkpoint::TrimHorizon,
        "the previous owner checkpointed on a lease counter it did not know"
    );
    assert_eq!(lease.checkpoint_owner.as_deref(), Some("victim"));
    worker.kill();
}
