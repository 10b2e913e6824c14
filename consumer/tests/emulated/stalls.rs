//! Workers whose calls stall: a worker paused past its lease, and one hung lease-table call.
//! Each worker talks to the emulators through its own [`FaultProxy`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shardctl_consumer::producer::{Event, Producer};
use shardctl_consumer::{Worker, WorkerConfig};

use crate::common::*;
use crate::proxy::WorkerLink;

const FAILOVER: Duration = Duration::from_secs(3);

fn config(stream: &str, table: &str, name: &str) -> WorkerConfig {
    WorkerConfig::new(stream, table)
        .with_worker_id(name)
        .with_failover(FAILOVER)
        .with_idle_poll_interval(Duration::from_millis(200))
}

async fn send_rounds(producer: &Producer, keys: &[String], rounds: std::ops::Range<u64>) {
    for round in rounds {
        let events = keys
            .iter()
            .map(|k| Event::new(k.clone(), payload(k, round)))
            .collect();
        producer.send(events).await.expect("produce");
    }
}

/// Regression (issue 11, item 3): the reader checked its tenure, then waited and fetched, and
/// dispatched what came back without a second look. A worker paused past its lease (every
/// request held) got its `GetRecords` answer after another worker had taken the shard over, and
/// processed that batch alongside it. Tenure is now checked right before each dispatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_never_dispatches_what_it_fetched() {
    let Some(aws) = aws().await else { return };
    let stream = unique("paused");
    let table = unique("paused-leases");
    create_stream(&aws.kinesis, &stream, 1).await;
    let log = Arc::new(Log::default());
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    let keys: Vec<String> = (0..4).map(|i| format!("org-{i}")).collect();

    let link_a = WorkerLink::start().await;
    let clients = link_a.clients().await;
    let a = Worker::start(
        config(&stream, &table, "a"),
        clients.kinesis,
        clients.dynamodb,
        Recorder::factory("a", &log, 4),
    )
    .await
    .expect("a starts");
    send_rounds(&producer, &keys, 0..5).await;
    eventually(
        "a processes the first events",
        Duration::from_secs(30),
        || async { (log.delivered_ids().len() >= 20).then_some(()) },
    )
    .await;
    let link_b = WorkerLink::start().await;
    let clients = link_b.clients().await;
    let b = Worker::start(
        config(&stream, &table, "b"),
        clients.kinesis,
        clients.dynamodb,
        Recorder::factory("b", &log, 4),
    )
    .await
    .expect("b starts");

    // a stops in its tracks: its next GetRecords is held with everything else it sends.
    link_a.pause();
    eventually("a's next read is held", Duration::from_secs(10), || async {
        (link_a.kinesis.held() >= 1).then_some(())
    })
    .await;
    send_rounds(&producer, &keys, 5..10).await;
    eventually(
        "b takes over and processes",
        Duration::from_secs(30),
        || async {
            let ids = log.delivered_ids().len();
            let by_b = log
                .deliveries
                .lock()
                .unwrap()
                .iter()
                .any(|d| d.worker == "b");
            (ids >= 40 && by_b).then_some(())
        },
    )
    .await;
    // a wakes up with its reads answered only now, long after its tenure ended.
    link_a.resume();
    eventually(
        "a lets go of the shard",
        Duration::from_secs(10),
        || async { a.held_shards().is_empty().then_some(()) },
    )
    .await;

    let overlaps = overlapping_processing(&log);
    assert!(overlaps.is_empty(), "{overlaps:#?}");
    let per_key: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 10)).collect();
    check_order_and_completeness(&log, &per_key);
    a.kill();
    b.shutdown().await;
}

/// Regression (issue 11, item 3): leases were renewed together, one join over calls without a
/// time bound, so one hung DynamoDB call stalled the renewal of every lease the worker held, all
/// of them expired, and the worker lost them all (here: to itself, re-reading from the last
/// checkpoints). Each lease is now renewed on its own and every lease-table call is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hung_lease_table_call_costs_no_lease() {
    let Some(aws) = aws().await else { return };
    let stream = unique("hung");
    let table = unique("hung-leases");
    create_stream(&aws.kinesis, &stream, 3).await;
    let log = Arc::new(Log::default());
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    let keys: Vec<String> = (0..6).map(|i| format!("org-{i}")).collect();
    let link = WorkerLink::start().await;
    let clients = link.clients().await;
    let worker = Worker::start(
        config(&stream, &table, "w"),
        clients.kinesis,
        clients.dynamodb,
        Recorder::factory("w", &log, 3),
    )
    .await
    .expect("worker starts");
    send_rounds(&producer, &keys, 0..3).await;
    eventually(
        "all three shards processing",
        Duration::from_secs(30),
        || async {
            (worker.held_shards().len() == 3 && log.delivered_ids().len() >= 18).then_some(())
        },
    )
    .await;
    let inits_before = log.inits.lock().unwrap().len();

    // The next renewal (its update expression is exactly this) hangs in the network.
    link.dynamodb.hang_next(r#""SET #counter = :next""#);
    eventually("a renewal hangs", Duration::from_secs(10), || async {
        (link.dynamodb.hung() == 1).then_some(())
    })
    .await;
    // Three failover times of traffic.
    for round in 3..12 {
        send_rounds(&producer, &keys, round..round + 1).await;
        tokio::time::sleep(FAILOVER / 3).await;
    }
    let inits = log.inits.lock().unwrap().clone();
    assert_eq!(
        inits.len(),
        inits_before,
        "leases were lost and taken again after one hung call: {inits:?}"
    );
    assert_eq!(worker.held_shards().len(), 3);
    eventually("every event", Duration::from_secs(30), || async {
        (log.delivered_ids().len() >= keys.len() * 12).then_some(())
    })
    .await;
    let per_key: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), 12)).collect();
    check_order_and_completeness(&log, &per_key);
    worker.shutdown().await;
}
