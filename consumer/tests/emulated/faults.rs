//! Fault injection the emulators cannot produce: read throttling and expired iterators. Kinesis
//! answers come from `aws-smithy-mocks` rules (typed SDK outputs and errors through the real
//! client stack); the lease table is moto's DynamoDB.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorOutput;
use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::error::{
    ExpiredIteratorException, ProvisionedThroughputExceededException,
};
use aws_sdk_kinesis::types::{
    HashKeyRange, Record as SdkRecord, SequenceNumberRange, Shard, ShardIteratorType,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::store::LeaseStore;
use shardctl_consumer::{Checkpoint, Worker, WorkerConfig};

use crate::common::*;

const SHARD: &str = "shardId-000000000000";

fn record(seq: &str) -> SdkRecord {
    SdkRecord::builder()
        .sequence_number(seq)
        .partition_key("org-1")
        .data(Blob::new(format!("org-1:{seq}")))
        .build()
        .unwrap()
}

#[derive(Default)]
struct Seen {
    sequence_numbers: Mutex<Vec<String>>,
    ended: Mutex<bool>,
}

struct Collect(Arc<Seen>);

impl ShardProcessor for Collect {
    async fn initialize(&mut self, _: InitInput) {}
    async fn process_records(&mut self, batch: RecordBatch, c: &Checkpointer) {
        for r in &batch.records {
            self.0
                .sequence_numbers
                .lock()
                .unwrap()
                .push(r.sequence_number.clone());
        }
        c.checkpoint().await.unwrap();
    }
    async fn shard_ended(&mut self, c: &Checkpointer) {
        c.checkpoint_shard_end().await.unwrap();
        *self.0.ended.lock().unwrap() = true;
    }
}

/// Throttled: the reader retries the same iterator (after a back-off; its length is `backoff`'s,
/// tested as a pure function, not timed here). Expired iterator: it gets a new
/// one after the last record it handed out (not from the start, not from the checkpoint), so
/// every record arrives exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_and_an_expired_iterator_resumes_after_the_last_record() {
    let Some(aws) = aws().await else { return };

    let list = mock!(Client::list_shards).then_output(|| {
        ListShardsOutput::builder()
            .shards(
                Shard::builder()
                    .shard_id(SHARD)
                    .hash_key_range(
                        HashKeyRange::builder()
                            .starting_hash_key("0")
                            .ending_hash_key(u128::MAX.to_string())
                            .build()
                            .unwrap(),
                    )
                    .sequence_number_range(
                        SequenceNumberRange::builder()
                            .starting_sequence_number("1")
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
    });
    let from_start = mock!(Client::get_shard_iterator)
        .match_requests(|r| r.shard_iterator_type() == Some(&ShardIteratorType::TrimHorizon))
        .then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("it-0")
                .build()
        });
    let after_two = mock!(Client::get_shard_iterator)
        .match_requests(|r| {
            r.shard_iterator_type() == Some(&ShardIteratorType::AfterSequenceNumber)
                && r.starting_sequence_number() == Some("2")
        })
        .then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("it-after-2")
                .build()
        });
    let first_reads = mock!(Client::get_records)
        .match_requests(|r| r.shard_iterator() == Some("it-0"))
        .sequence()
        .error(|| {
            GetRecordsError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("Rate exceeded for shard")
                    .build(),
            )
        })
        .output(|| {
            GetRecordsOutput::builder()
                .records(record("1"))
                .records(record("2"))
                .next_shard_iterator("it-1")
                .millis_behind_latest(1000)
                .build()
                .unwrap()
        })
        .build();
    let expired = mock!(Client::get_records)
        .match_requests(|r| r.shard_iterator() == Some("it-1"))
        .sequence()
        .error(|| {
            GetRecordsError::ExpiredIteratorException(
                ExpiredIteratorException::builder()
                    .message("Iterator expired")
                    .build(),
            )
        })
        .build();
    let last_read = mock!(Client::get_records)
        .match_requests(|r| r.shard_iterator() == Some("it-after-2"))
        .sequence()
        .output(|| {
            GetRecordsOutput::builder()
                .records(record("3"))
                .millis_behind_latest(0)
                .build()
                .unwrap()
        })
        .build();
    let kinesis = mock_client!(
        aws_sdk_kinesis,
        RuleMode::MatchAny,
        [
            &list,
            &from_start,
            &after_two,
            &first_reads,
            &expired,
            &last_read
        ]
    );

    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    let table = unique("faults");
    let worker = Worker::start(
        WorkerConfig::new("mocked-stream", &table)
            .with_failover(Duration::from_secs(3))
            .with_idle_poll_interval(Duration::from_millis(200)),
        kinesis,
        aws.dynamodb.clone(),
        move |_: &str| Collect(Arc::clone(&s)),
    )
    .await
    .unwrap();
    eventually("shard read to its end", Duration::from_secs(30), || async {
        (*seen.ended.lock().unwrap()).then_some(())
    })
    .await;

    assert_eq!(*seen.sequence_numbers.lock().unwrap(), ["1", "2", "3"]);
    assert_eq!(first_reads.num_calls(), 2, "throttled call retried once");
    assert_eq!(expired.num_calls(), 1);
    assert_eq!(
        after_two.num_calls(),
        1,
        "iterator renewed after the last record handed out"
    );
    assert_eq!(from_start.num_calls(), 1, "never re-read from the start");
    let lease = LeaseStore::new(aws.dynamodb.clone(), &table)
        .get(SHARD)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.checkpoint, Checkpoint::ShardEnd);
    worker.shutdown().await;
}
