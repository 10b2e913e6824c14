//! Reading one shard with `GetRecords` within Kinesis' per-shard read limits, and turning what
//! it returns into the records a processor sees: KPL aggregates split into their user records
//! ([`deaggregate`]), and what a checkpoint already covers left out ([`ResumeFilter`]).
//!
//! Over 500 lines by choice: a third is documentation with examples and a sixth tests; reading,
//! de-aggregation and the resume filter share one record shape and one position order.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use tracing::{error, warn};

use crate::lease::Checkpoint;
use crate::ownership::saturating_after;
use crate::processor::{Record, compare_sequence_numbers};

/// Kinesis allows 5 `GetRecords` calls per second per shard.
pub const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);
/// Kinesis allows 2 MiB/s of reads per shard.
pub const MAX_BYTES_PER_SECOND: u64 = 2 * 1024 * 1024;

/// Decides when the next `GetRecords` call on a shard may be made.
///
/// At most one call per [`MIN_CALL_INTERVAL`]; after a batch of `n` bytes, wait long enough that the
/// shard's read rate stays at or below [`MAX_BYTES_PER_SECOND`]; when the shard is caught up, wait
/// the idle interval.
///
/// ```
/// use std::time::{Duration, Instant};
/// use shardctl_consumer::reader::ReadPacer;
/// let pacer = ReadPacer { idle_interval: Duration::from_secs(1) };
/// let t0 = Instant::now();
/// assert_eq!(pacer.next_call(t0, 0, true), t0 + Duration::from_secs(1));
/// assert_eq!(pacer.next_call(t0, 100, false), t0 + Duration::from_millis(200));
/// // 4 MiB read: 2 s before the next call.
/// assert_eq!(pacer.next_call(t0, 4 * 1024 * 1024, false), t0 + Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPacer {
    /// Wait after a call that found the shard caught up (no records, nothing behind).
    pub idle_interval: Duration,
}

impl ReadPacer {
    /// When the next call may start, given when the last one started, how many bytes it returned,
    /// and whether the shard is caught up.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::reader::ReadPacer;
    /// let t0 = Instant::now();
    /// let p = ReadPacer { idle_interval: Duration::from_millis(50) };
    /// // Never faster than 5 calls/s, even with a short idle interval.
    /// assert_eq!(p.next_call(t0, 0, true), t0 + Duration::from_millis(200));
    /// ```
    pub fn next_call(&self, last_call: Instant, bytes: u64, caught_up: bool) -> Instant {
        let by_bytes =
            Duration::from_micros(bytes.saturating_mul(1_000_000) / MAX_BYTES_PER_SECOND);
        let mut wait = MIN_CALL_INTERVAL.max(by_bytes);
        if caught_up {
            wait = wait.max(self.idle_interval);
        }
        saturating_after(last_call, wait)
    }
}

/// Exponential back-off with full jitter.
///
/// ```
/// use std::time::Duration;
/// use shardctl_consumer::reader::backoff;
/// let d = backoff(3, Duration::from_millis(100), Duration::from_secs(5));
/// assert!(d <= Duration::from_millis(800));
/// ```
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(max);
    let millis = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::random_range(millis / 2..=millis))
}

/// Errors reading a shard.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `ProvisionedThroughputExceededException` (or KMS throttling): back off and retry.
    #[error("read throughput exceeded on {shard}")]
    Throttled {
        /// Shard id.
        shard: String,
    },
    /// `ExpiredIteratorException`: get a new iterator from the last position.
    #[error("shard iterator expired on {shard}")]
    ExpiredIterator {
        /// Shard id.
        shard: String,
    },
    /// Any other failure (network, invalid iterator, ...): back off, get a new iterator.
    #[error("Kinesis {operation} on {shard} failed: {message}")]
    Kinesis {
        /// API operation.
        operation: &'static str,
        /// Shard id.
        shard: String,
        /// The SDK error with context.
        message: String,
    },
}

impl ReadError {
    /// Fixed label for metrics.
    ///
    /// ```
    /// use shardctl_consumer::reader::ReadError;
    /// assert_eq!(ReadError::Throttled { shard: "s".into() }.label(), "throttled");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::ExpiredIterator { .. } => "expired_iterator",
            Self::Kinesis { .. } => "kinesis",
        }
    }
}

/// Where to (re)start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// Oldest retained record.
    TrimHorizon,
    /// Records written from now on.
    Latest,
    /// The record with this sequence number, then on (`AT_SEQUENCE_NUMBER`): where a checkpoint
    /// resumes, as in KCL, so that an aggregate checkpointed part-way is read again.
    At(String),
    /// The record after this sequence number (`AFTER_SEQUENCE_NUMBER`): where a reader that
    /// already handed a record to the processor goes on.
    After(String),
    /// The first record written at or after this instant.
    AtTimestamp(SystemTime),
}

impl StartPosition {
    /// The Kinesis start type with its sequence number or timestamp, as `GetShardIterator` and
    /// `SubscribeToShard` both take it.
    pub(crate) fn to_kinesis(
        &self,
    ) -> (
        ShardIteratorType,
        Option<String>,
        Option<aws_smithy_types::DateTime>,
    ) {
        match self {
            Self::TrimHorizon => (ShardIteratorType::TrimHorizon, None, None),
            Self::Latest => (ShardIteratorType::Latest, None, None),
            Self::At(seq) => (ShardIteratorType::AtSequenceNumber, Some(seq.clone()), None),
            Self::After(seq) => (
                ShardIteratorType::AfterSequenceNumber,
                Some(seq.clone()),
                None,
            ),
            Self::AtTimestamp(at) => (
                ShardIteratorType::AtTimestamp,
                None,
                Some(aws_smithy_types::DateTime::from(*at)),
            ),
        }
    }

    /// The position a checkpoint resumes from; `None` for `SHARD_END` (nothing left), and for
    /// `AT_TIMESTAMP` when no timestamp is configured (KCL stores only the sentinel). A sequence
    /// number resumes *at* itself, as KCL does: a checkpoint names a position within a record
    /// (its sub-sequence number), so the record is read again and [`ResumeFilter`] drops what the
    /// checkpoint covers.
    ///
    /// ```
    /// use shardctl_consumer::Checkpoint;
    /// use shardctl_consumer::reader::StartPosition;
    /// assert_eq!(StartPosition::from_checkpoint(&Checkpoint::TrimHorizon, None), Some(StartPosition::TrimHorizon));
    /// assert_eq!(StartPosition::from_checkpoint(&Checkpoint::ShardEnd, None), None);
    /// let t = std::time::SystemTime::UNIX_EPOCH;
    /// assert_eq!(StartPosition::from_checkpoint(&Checkpoint::AtTimestamp, Some(t)), Some(StartPosition::AtTimestamp(t)));
    /// let within = Checkpoint::parse("42", 12).unwrap();
    /// assert_eq!(StartPosition::from_checkpoint(&within, None), Some(StartPosition::At("42".into())));
    /// ```
    pub fn from_checkpoint(checkpoint: &Checkpoint, timestamp: Option<SystemTime>) -> Option<Self> {
        match checkpoint {
            Checkpoint::TrimHorizon => Some(Self::TrimHorizon),
            Checkpoint::Latest => Some(Self::Latest),
            Checkpoint::Sequence {
                sequence_number, ..
            } => Some(Self::At(sequence_number.clone())),
            Checkpoint::AtTimestamp => timestamp.map(Self::AtTimestamp),
            Checkpoint::ShardEnd => None,
        }
    }
}

/// A child shard reported at the end of a closed shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShardInfo {
    /// Child shard id.
    pub shard_id: String,
    /// All of its parents (two after a merge).
    pub parents: BTreeSet<String>,
    /// Hash range, when reported.
    pub hash_range: Option<(String, String)>,
}

/// One `GetRecords` answer.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Payload bytes returned (for pacing).
    pub bytes: u64,
    /// `NextShardIterator`; `None` means the shard is closed and fully read.
    pub next_iterator: Option<String>,
    /// `MillisBehindLatest`.
    pub millis_behind_latest: Option<i64>,
    /// `ChildShards`, present at the end of a closed shard.
    pub child_shards: Vec<ChildShardInfo>,
}

/// The read loop is the one retry layer for reads: it backs off on throttling and renews the
/// iterator itself, so the SDK must not retry `GetRecords` / `GetShardIterator` underneath it
/// (each SDK retry would spend one of the shard's 5 calls per second).
fn no_sdk_retries() -> aws_sdk_kinesis::config::Builder {
    aws_sdk_kinesis::config::Builder::default()
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
}

/// Gets a shard iterator.
pub(crate) async fn shard_iterator(
    client: &Client,
    stream: &str,
    shard: &str,
    position: &StartPosition,
) -> Result<String, ReadError> {
    let mut req = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let (kind, sequence, timestamp) = position.to_kinesis();
    req = req
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence)
        .set_timestamp(timestamp);
    match req
        .customize()
        .config_override(no_sdk_retries())
        .send()
        .await
    {
        Ok(out) => out.shard_iterator.ok_or_else(|| ReadError::Kinesis {
            operation: "GetShardIterator",
            shard: shard.to_owned(),
            message: "response had no ShardIterator".to_owned(),
        }),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_provisioned_throughput_exceeded_exception()) =>
        {
            Err(ReadError::Throttled {
                shard: shard.to_owned(),
            })
        }
        Err(e) => Err(ReadError::Kinesis {
            operation: "GetShardIterator",
            shard: shard.to_owned(),
            message: DisplayErrorContext(&e).to_string(),
        }),
    }
}

/// Calls `GetRecords` once.
pub(crate) async fn get_records(
    client: &Client,
    shard: &str,
    iterator: &str,
    limit: i32,
) -> Result<Fetched, ReadError> {
    let out = match client
        .get_records()
        .shard_iterator(iterator)
        .limit(limit)
        .customize()
        .config_override(no_sdk_retries())
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            let service = e.as_service_error();
            return Err(
                if service.is_some_and(|s| {
                    s.is_provisioned_throughput_exceeded_exception()
                        || s.is_kms_throttling_exception()
                }) {
                    ReadError::Throttled {
                        shard: shard.to_owned(),
                    }
                } else if service.is_some_and(|s| s.is_expired_iterator_exception()) {
                    ReadError::ExpiredIterator {
                        shard: shard.to_owned(),
                    }
                } else {
                    ReadError::Kinesis {
                        operation: "GetRecords",
                        shard: shard.to_owned(),
                        message: DisplayErrorContext(&e).to_string(),
                    }
                },
            );
        }
    };
    Ok(Fetched::from_output(out))
}

impl Fetched {
    /// Converts a `GetRecords` answer: our records (payload bytes moved, not copied), bytes read,
    /// `NextShardIterator` (`None` or empty: the shard ended) and `ChildShards`.
    ///
    /// ```
    /// use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
    /// use aws_sdk_kinesis::primitives::Blob;
    /// use aws_sdk_kinesis::types::Record;
    /// use shardctl_consumer::reader::Fetched;
    /// let record = Record::builder()
    ///     .sequence_number("1")
    ///     .partition_key("org-1")
    ///     .data(Blob::new("hi"))
    ///     .build()
    ///     .unwrap();
    /// let out = GetRecordsOutput::builder().records(record).next_shard_iterator("it").build().unwrap();
    /// let fetched = Fetched::from_output(out);
    /// assert_eq!(fetched.records[0].partition_key, "org-1");
    /// assert_eq!(fetched.bytes, 7);
    /// assert!(fetched.next_iterator.is_some());
    /// ```
    pub fn from_output(out: aws_sdk_kinesis::operation::get_records::GetRecordsOutput) -> Self {
        Self::from_parts(
            out.records,
            out.child_shards,
            out.next_shard_iterator,
            out.millis_behind_latest,
        )
    }

    /// Converts the parts a `GetRecords` answer and a `SubscribeToShard` event share; `next`
    /// `None` or empty means the shard ended.
    pub(crate) fn from_parts(
        records: Vec<aws_sdk_kinesis::types::Record>,
        child_shards: Option<Vec<aws_sdk_kinesis::types::ChildShard>>,
        next: Option<String>,
        millis_behind_latest: Option<i64>,
    ) -> Self {
        let mut bytes = 0u64;
        let records = records
            .into_iter()
            .map(|r| {
                let data = Bytes::from(r.data.into_inner());
                bytes += data.len() as u64 + r.partition_key.len() as u64;
                Record {
                    sequence_number: r.sequence_number,
                    sub_sequence_number: 0,
                    aggregated: false,
                    partition_key: r.partition_key,
                    explicit_hash_key: None,
                    data,
                    approximate_arrival: r
                        .approximate_arrival_timestamp
                        .and_then(|t| SystemTime::try_from(t).ok()),
                }
            })
            .collect();
        let child_shards = child_shards
            .unwrap_or_default()
            .into_iter()
            .map(|c| ChildShardInfo {
                shard_id: c.shard_id,
                parents: c.parent_shards.into_iter().collect(),
                hash_range: c
                    .hash_key_range
                    .map(|r| (r.starting_hash_key, r.ending_hash_key)),
            })
            .collect();
        Self {
            records,
            bytes,
            next_iterator: next.filter(|s| !s.is_empty()),
            millis_behind_latest,
            child_shards,
        }
    }
}

/// Splits the KPL aggregates among `records` into their user records, in order; other records
/// pass through. On by default in the worker ([`WorkerConfig::deaggregate`](crate::WorkerConfig)).
///
/// Each user record carries the aggregate's sequence number, its index in the aggregate as
/// sub-sequence number, its own partition key and explicit hash key, and the aggregate's arrival
/// time. KCL's rules decide what is an aggregate ([`shardctl_kpl::deaggregate`]): a record whose
/// checksum or message is invalid is delivered as it is. Unlike KCL, which logs and drops the
/// rest of an aggregate that names a key outside its tables, such an aggregate is delivered as it
/// is too (logged as an error), so nothing is lost.
///
/// Also unlike KCL, user records whose hash key lies outside the shard's range are delivered.
/// KCL drops a whole aggregate with such a record: the KPL sends an aggregate again when it went
/// to another shard than the KPL's shard map predicted, so that copy is a duplicate. But an
/// aggregator without a shard map (aws-kinesis-agg, or this crate's producer) may put any keys in
/// one aggregate, and dropping them would lose them. The cost: a KPL re-send after a reshard is
/// delivered twice (once per shard it reached); [`crate::dedup`] removes it when the records carry
/// event ids.
///
/// ```
/// use shardctl_consumer::processor::Record;
/// use shardctl_consumer::reader::deaggregate;
/// use shardctl_kpl::{Aggregator, UserRecord};
///
/// let mut aggregator = Aggregator::new();
/// aggregator.add(UserRecord::new("org-1", "a"))?;
/// aggregator.add(UserRecord::new("org-2", "b"))?;
/// let aggregate = aggregator.flush().unwrap();
/// let kinesis_record = |seq: &str, key: &str, data: bytes::Bytes| Record {
///     sequence_number: seq.into(),
///     sub_sequence_number: 0,
///     aggregated: false,
///     partition_key: key.into(),
///     explicit_hash_key: None,
///     data,
///     approximate_arrival: None,
/// };
/// let records = deaggregate(vec![
///     kinesis_record("1", &aggregate.partition_key, aggregate.data),
///     kinesis_record("2", "org-3", "plain".into()),
/// ]);
/// let seen: Vec<(&str, u64, &str)> = records
///     .iter()
///     .map(|r| (r.sequence_number.as_str(), r.sub_sequence_number, r.partition_key.as_str()))
///     .collect();
/// assert_eq!(seen, [("1", 0, "org-1"), ("1", 1, "org-2"), ("2", 0, "org-3")]);
/// assert!(records[1].aggregated && !records[2].aggregated);
/// # Ok::<(), shardctl_kpl::AggregateError>(())
/// ```
pub fn deaggregate(records: Vec<Record>) -> Vec<Record> {
    if !records
        .iter()
        .any(|r| shardctl_kpl::has_aggregate_framing(&r.data))
    {
        return records;
    }
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        match shardctl_kpl::deaggregate(&record.data) {
            Ok(Some(users)) => {
                out.extend(users.into_iter().enumerate().map(|(i, user)| Record {
                    sequence_number: record.sequence_number.clone(),
                    sub_sequence_number: i as u64,
                    aggregated: true,
                    partition_key: user.partition_key,
                    explicit_hash_key: user.explicit_hash_key,
                    data: user.data,
                    approximate_arrival: record.approximate_arrival,
                }));
            }
            Ok(None) => {
                if shardctl_kpl::has_aggregate_framing(&record.data) {
                    warn!(sequence_number = %record.sequence_number,
                          "record starts like a KPL aggregate but its checksum or message is invalid; delivered as it is");
                }
                out.push(record);
            }
            Err(e) => {
                error!(sequence_number = %record.sequence_number, error = %e, kind = e.label(),
                       "invalid KPL aggregate; delivered as it is");
                out.push(record);
            }
        }
    }
    out
}

/// What a checkpoint already covers, dropped from what reading at its sequence number returns.
///
/// A worker resumes a checkpoint (sequence `S`, sub-sequence `k`) at `S` itself
/// ([`StartPosition::At`]), as KCL does, and drops, like KCL, every record at or before the
/// checkpoint: the user records `0..=k` of the aggregate `S`, and `S` itself if it is a plain
/// record. Records after `S` are delivered in full.
///
/// One difference: a record at `S` that is delivered whole (not split: de-aggregation is off, or
/// the aggregate is invalid) while the checkpoint is within it (`k > 0`, written by a consumer
/// that split it) is delivered, not dropped: dropping it would lose its user records after `k`.
///
/// ```
/// use shardctl_consumer::Checkpoint;
/// use shardctl_consumer::processor::Record;
/// use shardctl_consumer::reader::ResumeFilter;
///
/// let user = |seq: &str, sub: u64| Record {
///     sequence_number: seq.into(),
///     sub_sequence_number: sub,
///     aggregated: true,
///     partition_key: "k".into(),
///     explicit_hash_key: None,
///     data: Default::default(),
///     approximate_arrival: None,
/// };
/// let filter = ResumeFilter::from_checkpoint(&Checkpoint::parse("7", 1).unwrap()).unwrap();
/// let mut records = vec![user("7", 0), user("7", 1), user("7", 2), user("8", 0)];
/// assert!(filter.apply(&mut records)); // done: the checkpoint's record was seen
/// let left: Vec<(&str, u64)> = records.iter().map(|r| (r.sequence_number.as_str(), r.sub_sequence_number)).collect();
/// assert_eq!(left, [("7", 2), ("8", 0)]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeFilter {
    sequence_number: String,
    sub_sequence_number: u64,
}

impl ResumeFilter {
    /// The filter for a checkpoint; `None` unless it is a sequence number.
    ///
    /// ```
    /// use shardctl_consumer::Checkpoint;
    /// use shardctl_consumer::reader::ResumeFilter;
    /// assert!(ResumeFilter::from_checkpoint(&Checkpoint::TrimHorizon).is_none());
    /// ```
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Option<Self> {
        match checkpoint {
            Checkpoint::Sequence {
                sequence_number,
                sub_sequence_number,
            } => Some(Self {
                sequence_number: sequence_number.clone(),
                sub_sequence_number: *sub_sequence_number,
            }),
            _ => None,
        }
    }

    /// Drops the records the checkpoint covers from `records` (one `GetRecords` answer, after
    /// de-aggregation). Returns true once the filter has nothing left to do: a record at or
    /// after the checkpoint's sequence number was seen, so later answers are all new.
    ///
    /// ```
    /// use shardctl_consumer::Checkpoint;
    /// use shardctl_consumer::reader::ResumeFilter;
    /// let filter = ResumeFilter::from_checkpoint(&Checkpoint::parse("7", 0).unwrap()).unwrap();
    /// assert!(!filter.apply(&mut Vec::new())); // nothing read yet
    /// ```
    pub fn apply(&self, records: &mut Vec<Record>) -> bool {
        let reached = records.last().is_some_and(|r| {
            compare_sequence_numbers(&r.sequence_number, &self.sequence_number).is_ge()
        });
        records.retain(|r| !self.covers(r));
        reached
    }

    fn covers(&self, record: &Record) -> bool {
        match compare_sequence_numbers(&record.sequence_number, &self.sequence_number) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal if record.aggregated => {
                record.sub_sequence_number <= self.sub_sequence_number
            }
            Ordering::Equal => self.sub_sequence_number == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use shardctl_kpl::{Aggregator, UserRecord};

    fn kinesis_record(seq: u64, key: &str, data: Bytes) -> Record {
        Record {
            sequence_number: seq.to_string(),
            sub_sequence_number: 0,
            aggregated: false,
            partition_key: key.to_owned(),
            explicit_hash_key: None,
            data,
            approximate_arrival: None,
        }
    }

    fn position(r: &Record) -> (String, u64, bool) {
        (
            r.sequence_number.clone(),
            r.sub_sequence_number,
            r.aggregated,
        )
    }

    #[test]
    fn an_aggregate_with_a_bad_key_index_is_delivered_whole() {
        // A valid frame around a message whose record names partition key 5 of a 1-entry table:
        // field 1 "k", field 3 { field 1 = 5, field 3 = "x" }.
        let body = [0x0a, 0x01, b'k', 0x1a, 0x05, 0x08, 0x05, 0x1a, 0x01, b'x'];
        let digest: [u8; 16] = {
            use md5::Digest;
            md5::Md5::digest(body).into()
        };
        let data: Bytes = [shardctl_kpl::MAGIC.as_slice(), &body, &digest]
            .concat()
            .into();
        let records = deaggregate(vec![kinesis_record(1, "k", data.clone())]);
        assert_eq!(records, [kinesis_record(1, "k", data)]);
    }

    proptest! {
        /// Aggregates and plain records, any checkpoint among the records delivered: resuming
        /// from it delivers exactly the records after it, in order.
        #[test]
        fn resuming_from_any_checkpoint_delivers_exactly_what_follows_it(
            sizes in proptest::collection::vec(0usize..5, 1..8),
            pick in any::<prop::sample::Index>(),
            chunk in 1usize..4,
        ) {
            // Record i of the stream: plain when its size is 0, else an aggregate of that many.
            let mut stream = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let seq = 100 + i as u64;
                if *n == 0 {
                    stream.push(kinesis_record(seq, "plain", Bytes::from(format!("{seq}"))));
                    continue;
                }
                let mut a = Aggregator::new();
                for j in 0..*n {
                    a.add(UserRecord::new(format!("k{j}"), format!("{seq}.{j}"))).unwrap();
                }
                let agg = a.flush().unwrap();
                stream.push(kinesis_record(seq, &agg.partition_key, agg.data));
            }
            let delivered = deaggregate(stream.clone());
            prop_assume!(!delivered.is_empty());
            let at = pick.index(delivered.len());
            let cp = Checkpoint::parse(&delivered[at].sequence_number, delivered[at].sub_sequence_number).unwrap();
            // Resume: read at the checkpoint's sequence number, in GetRecords answers of `chunk`.
            let from = stream.iter().position(|r| r.sequence_number == delivered[at].sequence_number).unwrap();
            let mut filter = ResumeFilter::from_checkpoint(&cp);
            let mut resumed = Vec::new();
            for answer in stream[from..].chunks(chunk) {
                let mut records = deaggregate(answer.to_vec());
                if let Some(f) = &filter
                    && f.apply(&mut records)
                {
                    filter = None;
                }
                resumed.extend(records);
            }
            prop_assert!(filter.is_none());
            let want: Vec<_> = delivered[at + 1..].iter().map(position).collect();
            let got: Vec<_> = resumed.iter().map(position).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_whole_record_checkpointed_within_is_delivered_again() {
        // De-aggregation off, checkpoint written by a consumer that split record 7 at user
        // record 3: record 7 comes again whole (its user records after 3 are in it).
        let filter = ResumeFilter::from_checkpoint(&Checkpoint::parse("7", 3).unwrap()).unwrap();
        let mut records = vec![
            kinesis_record(7, "k", Bytes::new()),
            kinesis_record(8, "k", Bytes::new()),
        ];
        assert!(filter.apply(&mut records));
        assert_eq!(records.len(), 2);
        // Checkpointed at a whole record: it is not delivered again.
        let filter = ResumeFilter::from_checkpoint(&Checkpoint::parse("7", 0).unwrap()).unwrap();
        assert!(filter.apply(&mut records));
        assert_eq!(records.len(), 1);
    }
}
