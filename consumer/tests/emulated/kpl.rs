//! KPL aggregates written by a third-party aggregator (aws-kinesis-agg from PyPI, run by
//! `tests/kpl/aggregate.py`) reach the processor as their user records, checkpoint within an
//! aggregate in KCL's columns, and a new owner resumes in the middle of the aggregate.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::{Worker, WorkerConfig};
use shardctl_test_support::{peer_python, repo_root};

use crate::common::{aws, create_stream, eventually, open_shards, unique};

/// One user record as a processor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) sequence_number: String,
    pub(crate) sub_sequence_number: u64,
    pub(crate) aggregated: bool,
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) data: String,
}

/// Records what it sees; checkpoints once, after the user record with index `checkpoint_after`
/// (counted over everything it saw), and never on shutdown, so the lease keeps that checkpoint.
pub(crate) struct KplRecorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    checkpoint_after: Option<usize>,
}

impl KplRecorder {
    /// A processor per shard, all recording into `seen`.
    pub(crate) fn factory(
        seen: &Arc<Mutex<Vec<Seen>>>,
        checkpoint_after: Option<usize>,
    ) -> impl Fn(&str) -> KplRecorder + Send + Sync + 'static {
        let seen = Arc::clone(seen);
        move |_: &str| KplRecorder {
            seen: Arc::clone(&seen),
            checkpoint_after,
        }
    }
}

impl ShardProcessor for KplRecorder {
    async fn initialize(&mut self, _input: InitInput) {}

    async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
        for r in &batch.records {
            let index = {
                let mut seen = self.seen.lock().unwrap();
                seen.push(Seen {
                    sequence_number: r.sequence_number.clone(),
                    sub_sequence_number: r.sub_sequence_number,
                    aggregated: r.aggregated,
                    partition_key: r.partition_key.clone(),
                    explicit_hash_key: r.explicit_hash_key.clone(),
                    data: String::from_utf8_lossy(&r.data).into_owned(),
                });
                seen.len() - 1
            };
            if self.checkpoint_after == Some(index) {
                checkpointer
                    .checkpoint_at(r)
                    .await
                    .expect("checkpoint within the aggregate");
            }
        }
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
        checkpointer
            .checkpoint_shard_end()
            .await
            .expect("SHARD_END");
    }

    async fn shutdown_requested(&mut self, _checkpointer: &Checkpointer) {}
}

/// An aggregate as `tests/kpl/aggregate.py` prints it.
#[derive(serde::Deserialize)]
struct Aggregate {
    pk: String,
    ehk: Option<String>,
    data: String,
    records: usize,
}

/// The user records: five organisations in turn, each numbered from 0; org-4's carry an
/// explicit hash key.
fn user_records() -> Vec<(String, Option<String>, String)> {
    let mut next = [0u32; 5];
    (0..200)
        .map(|i| {
            let org = i % 5;
            let n = next[org];
            next[org] += 1;
            let ehk = (org == 4).then(|| "170141183460469231731687303715884105728".to_owned());
            (format!("org-{org}"), ehk, format!("org-{org}:{n}"))
        })
        .collect()
}

/// Aggregates `records` with aws-kinesis-agg, 25 to an aggregate.
fn aggregate_with_aws_kinesis_agg(records: &[(String, Option<String>, String)]) -> Vec<Aggregate> {
    let mut child = Command::new(peer_python())
        .arg(repo_root().join("tests/kpl/aggregate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tests/kpl/aggregate.py");
    let mut input = String::new();
    for (i, (pk, ehk, data)) in records.iter().enumerate() {
        let line = serde_json::json!({ "pk": pk, "ehk": ehk, "data": data });
        input.push_str(&format!("{line}\n"));
        if (i + 1) % 25 == 0 {
            input.push_str("{\"flush\": true}\n");
        }
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "aggregate.py failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("aggregate line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_aggregates_are_split_checkpointed_within_and_resumed_mid_aggregate() {
    let Some(aws) = aws().await else { return };
    let stream = unique("kpl");
    let table = unique("leases");
    create_stream(&aws.kinesis, &stream, 1).await;
    let users = user_records();
    let aggregates = aggregate_with_aws_kinesis_agg(&users);
    assert_eq!(
        aggregates.iter().map(|a| a.records).collect::<Vec<_>>(),
        vec![25; 8]
    );

    // Eight aggregates, then three plain records.
    let mut sequence_numbers = Vec::new();
    for a in &aggregates {
        let data: Vec<u8> = (0..a.data.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&a.data[i..i + 2], 16).expect("hex"))
            .collect();
        let put = aws
            .kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key(&a.pk)
            .set_explicit_hash_key(a.ehk.clone())
            .data(Blob::new(data))
            .send()
            .await
            .expect("PutRecord of an aggregate");
        sequence_numbers.push(put.sequence_number);
    }
    for n in 0..3 {
        let put = aws
            .kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key("plain")
            .data(Blob::new(format!("plain:{n}")))
            .send()
            .await
            .unwrap();
        sequence_numbers.push(put.sequence_number);
    }
    let expected: Vec<Seen> = users
        .iter()
        .enumerate()
        .map(|(i, (pk, ehk, data))| Seen {
            sequence_number: sequence_numbers[i / 25].clone(),
            sub_sequence_number: (i % 25) as u64,
            aggregated: true,
            partition_key: pk.clone(),
            explicit_hash_key: ehk.clone(),
            data: data.clone(),
        })
        .chain((0..3).map(|n| Seen {
            sequence_number: sequence_numbers[8 + n].clone(),
            sub_sequence_number: 0,
            aggregated: false,
            partition_key: "plain".into(),
            explicit_hash_key: None,
            data: format!("plain:{n}"),
        }))
        .collect();

    let config = |id: &str| {
        WorkerConfig::new(&stream, &table)
            .with_worker_id(id)
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200))
    };
    // The first worker sees everything and checkpoints after user record 12 of the fifth
    // aggregate (index 112).
    let first = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&first);
    let a = Worker::start(
        config("kpl-a"),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        KplRecorder::factory(&seen, Some(112)),
    )
    .await
    .unwrap();
    eventually("203 user records", Duration::from_secs(30), || async {
        (first.lock().unwrap().len() >= 203).then_some(())
    })
    .await;
    a.shutdown().await;
    assert_eq!(
        *first.lock().unwrap(),
        expected,
        "user records as written, in order"
    );

    // KCL's columns: the aggregate's sequence number and the sub-sequence number.
    let shard = open_shards(&aws.kinesis, &stream).await.remove(0).shard_id;
    let row = aws
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("leaseKey", AttributeValue::S(shard))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("lease row");
    assert_eq!(
        row.get("checkpoint").and_then(|v| v.as_s().ok()),
        Some(&sequence_numbers[4])
    );
    assert_eq!(
        row.get("checkpointSubSequenceNumber")
            .and_then(|v| v.as_n().ok())
            .map(String::as_str),
        Some("12")
    );

    // A new owner resumes within the aggregate: user record 13 of the fifth aggregate first,
    // nothing before it, nothing twice.
    let second = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&second);
    let b = Worker::start(
        config("kpl-b"),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        KplRecorder::factory(&seen, None),
    )
    .await
    .unwrap();
    eventually(
        "the 90 records after the checkpoint",
        Duration::from_secs(30),
        || async { (second.lock().unwrap().len() >= 90).then_some(()) },
    )
    .await;
    // Give a replay the time to show up before comparing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.shutdown().await;
    assert_eq!(*second.lock().unwrap(), expected[113..]);
}

/// The producer's own aggregates: one surging key and a few quiet ones, every event once and in
/// per-key order through the worker's de-aggregation, in far fewer Kinesis records than events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregating_producer_keeps_per_key_order_through_the_consumer() {
    use crate::common::{Log, Recorder, check_order_and_completeness, payload};
    use shardctl_consumer::producer::{Event, Producer};
    use std::collections::BTreeMap;

    let Some(aws) = aws().await else { return };
    let stream = unique("kpl-producer");
    create_stream(&aws.kinesis, &stream, 2).await;
    let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut events = Vec::new();
    for i in 0..600u64 {
        let key = if i % 6 == 0 {
            format!("quiet-{}", i % 4)
        } else {
            "surge".to_owned()
        };
        let n = per_key.entry(key.clone()).or_default();
        events.push(Event::new(key.clone(), payload(&key, *n)));
        *n += 1;
    }
    let report = Producer::new(aws.kinesis.clone(), &stream)
        .with_aggregation(true)
        .send(events)
        .await
        .unwrap();
    assert_eq!(report.acknowledged, 600);
    assert!(
        report.records < 60,
        "600 events in {} records",
        report.records
    );

    let log = Arc::new(Log::default());
    let worker = Worker::start(
        WorkerConfig::new(&stream, unique("leases"))
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200)),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        Recorder::factory("w", &log, 7),
    )
    .await
    .unwrap();
    eventually("600 events", Duration::from_secs(30), || async {
        (log.deliveries.lock().unwrap().len() >= 600).then_some(())
    })
    .await;
    worker.shutdown().await;
    let duplicates = check_order_and_completeness(&log, &per_key);
    assert!(
        duplicates.is_empty(),
        "{} delivered twice",
        duplicates.len()
    );
}
