//! Lease safety under contention, live against the emulators.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardctl_consumer::producer::{Event, Producer};
use shardctl_consumer::store::LeaseStore;
use shardctl_consumer::{Checkpoint, Lease, Worker, WorkerConfig};

use crate::common::*;

/// Many tasks race conditional takes on the same rows: each (lease, counter) is won once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_takes_on_the_lease_table_have_one_winner_per_counter() {
    let Some(aws) = aws().await else { return };
    let store = LeaseStore::new(aws.dynamodb.clone(), unique("race"));
    store.ensure_table().await.unwrap();
    for i in 0..3 {
        assert!(
            store
                .create_if_absent(&Lease::new(format!("shard-{i}"), Checkpoint::TrimHorizon))
                .await
                .unwrap()
        );
    }
    // A second create of the same key is refused.
    assert!(
        !store
            .create_if_absent(&Lease::new("shard-0", Checkpoint::TrimHorizon))
            .await
            .unwrap()
    );

    let wins: Arc<Mutex<Vec<(String, u64, String)>>> = Arc::default();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            let wins = Arc::clone(&wins);
            tokio::spawn(async move {
                let me = format!("w{w}");
                for _ in 0..10 {
                    let scan = store.scan().await.unwrap();
                    for lease in scan.leases {
                        match store
                            .take(
                                &lease.lease_key,
                                lease.lease_counter,
                                lease.lease_owner.as_deref(),
                                &me,
                            )
                            .await
                        {
                            Ok(counter) => {
                                wins.lock()
                                    .unwrap()
                                    .push((lease.lease_key, counter, me.clone()))
                            }
                            Err(e) => assert!(e.is_condition_failed(), "unexpected error {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let wins = wins.lock().unwrap().clone();
    let mut seen = HashSet::new();
    for (key, counter, who) in &wins {
        assert!(
            seen.insert((key.clone(), *counter)),
            "{key} counter {counter} won twice (last by {who})"
        );
    }
    // The table agrees with the last winner of each lease.
    let scan = store.scan().await.unwrap();
    for lease in scan.leases {
        let last = wins
            .iter()
            .filter(|(k, _, _)| *k == lease.lease_key)
            .max_by_key(|(_, c, _)| *c)
            .unwrap();
        assert_eq!(lease.lease_counter, last.1);
        assert_eq!(lease.lease_owner.as_deref(), Some(last.2.as_str()));
    }
    assert!(wins.len() >= 3);
}

/// Five workers join one by one while events flow: leases are taken and stolen (with graceful
/// handoff), yet no two workers ever process the same shard at the same time, every event arrives
/// in per-key order, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_joining_mid_stream_never_process_a_shard_concurrently() {
    let Some(aws) = aws().await else { return };
    let stream = unique("race");
    let table = unique("leases");
    create_stream(&aws.kinesis, &stream, 4).await;
    let log = Arc::new(Log::default());
    let producer = Producer::new(aws.kinesis.clone(), &stream);
    let keys: Vec<String> = (0..16).map(|i| format!("org-{i:02}")).collect();
    let rounds = 80u64;
    let prod_keys = keys.clone();
    let production = tokio::spawn(async move {
        for round in 0..rounds {
            let events = prod_keys
                .iter()
                .map(|k| Event::new(k.clone(), payload(k, round)))
                .collect();
            producer.send(events).await.expect("produce");
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let mut workers = Vec::new();
    for i in 0..5 {
        let name = format!("w{i}");
        let config = WorkerConfig::new(&stream, &table)
            .with_worker_id(&name)
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200));
        workers.push(
            Worker::start(
                config,
                aws.kinesis.clone(),
                aws.dynamodb.clone(),
                Recorder::factory(&name, &log, 10),
            )
            .await
            .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    production.await.unwrap();
    eventually("every event delivered", Duration::from_secs(60), || async {
        (log.delivered_ids().len() >= keys.len() * rounds as usize).then_some(())
    })
    .await;

    // Leases spread over the workers (4 shards, 5 workers: nobody holds more than one).
    eventually(
        "leases balanced, one per worker at most",
        Duration::from_secs(20),
        || async {
            let held: Vec<usize> = workers.iter().map(|w| w.held_shards().len()).collect();
            (held.iter().sum::<usize>() == 4 && held.iter().all(|&n| n <= 1)).then_some(())
        },
    )
    .await;

    // No shard processed by two workers at once.
    let overlaps = overlapping_processing(&log);
    assert!(overlaps.is_empty(), "{overlaps:#?}");

    let per_key: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), rounds)).collect();
    let duplicates = check_order_and_completeness(&log, &per_key);
    assert!(
        duplicates.is_empty(),
        "{} duplicates although every move was a handoff",
        duplicates.len()
    );

    for w in workers {
        w.shutdown().await;
    }
}

/// Regression (issue 11, item 2): a second steal while a handoff is under way must be refused.
/// Otherwise the marker would name the first thief, and the original owner (still processing
/// until it hands off) and the newest owner could both run the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_steal_cannot_overwrite_an_ongoing_handoff() {
    let Some(aws) = aws().await else { return };
    let store = LeaseStore::new(aws.dynamodb.clone(), unique("steal"));
    store.ensure_table().await.unwrap();
    store
        .create_if_absent(&Lease::new("shard-0", Checkpoint::TrimHorizon))
        .await
        .unwrap();
    let counter = store.take("shard-0", 0, None, "victim").await.unwrap();
    store
        .steal("shard-0", counter, "thief-1", "victim")
        .await
        .unwrap();
    let row = store.get("shard-0").await.unwrap().unwrap();
    assert_eq!(row.checkpoint_owner.as_deref(), Some("victim"));
    // The second thief read the row after the first steal: owner thief-1, same counter.
    let second = store
        .steal("shard-0", row.lease_counter, "thief-2", "thief-1")
        .await;
    assert!(
        second.as_ref().is_err_and(|e| e.is_condition_failed()),
        "second steal: {second:?}"
    );
    let row = store.get("shard-0").await.unwrap().unwrap();
    assert_eq!(row.lease_owner.as_deref(), Some("thief-1"));
    assert_eq!(row.checkpoint_owner.as_deref(), Some("victim"));
}

/// Regression (issue 11, item 2): a take planned from a scan made before a steal must not land
/// after it. A steal leaves `leaseCounter` alone, so a take conditional on the counter only
/// overwrote the handoff marker (and the new owner) of a handoff under way. Take and steal are
/// now one acquire, conditional on the owner and marker the scan saw as well as the counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_planned_before_a_steal_cannot_overwrite_its_handoff() {
    let Some(aws) = aws().await else { return };
    let store = LeaseStore::new(aws.dynamodb.clone(), unique("steal"));
    store.ensure_table().await.unwrap();
    store
        .create_if_absent(&Lease::new("shard-0", Checkpoint::TrimHorizon))
        .await
        .unwrap();
    let counter = store.take("shard-0", 0, None, "victim").await.unwrap();
    // Another worker scans: owned by victim at `counter` (and, say, expired for it).
    let seen = store.get("shard-0").await.unwrap().unwrap();
    store
        .steal("shard-0", counter, "thief", "victim")
        .await
        .unwrap();
    let late = store
        .take(
            "shard-0",
            seen.lease_counter,
            seen.lease_owner.as_deref(),
            "latecomer",
        )
        .await;
    assert!(
        late.as_ref().is_err_and(|e| e.is_condition_failed()),
        "a take from a stale scan overwrote the handoff: {late:?}"
    );
    let row = store.get("shard-0").await.unwrap().unwrap();
    assert_eq!(row.lease_owner.as_deref(), Some("thief"));
    assert_eq!(row.checkpoint_owner.as_deref(), Some("victim"));
}
