//! Reading one shard with `GetRecords` within Kinesis' per-shard read limits.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;

use crate::lease::Checkpoint;
use crate::ownership::saturating_after;
use crate::processor::Record;

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
    /// The record after this sequence number.
    After(String),
    /// The first record written at or after this instant.
    AtTimestamp(SystemTime),
}

impl StartPosition {
    /// The position a checkpoint resumes from; `None` for `SHARD_END` (nothing left), and for
    /// `AT_TIMESTAMP` when no timestamp is configured (KCL stores only the sentinel).
    ///
    /// ```
    /// use shardctl_consumer::Checkpoint;
    /// use shardctl_consumer::reader::StartPosition;
    /// assert_eq!(StartPosition::from_checkpoint(&Checkpoint::TrimHorizon, None), Some(StartPosition::TrimHorizon));
    /// assert_eq!(StartPosition::from_checkpoint(&Checkpoint::ShardEnd, None), None);
    /// let t = std::time::SystemTime::UNIX_EPOCH;
    /// assert_eq!(StartPosition::from_checkpoint(&Checkpoint::AtTimestamp, Some(t)), Some(StartPosition::AtTimestamp(t)));
    /// ```
    pub fn from_checkpoint(checkpoint: &Checkpoint, timestamp: Option<SystemTime>) -> Option<Self> {
        match checkpoint {
            Checkpoint::TrimHorizon => Some(Self::TrimHorizon),
            Checkpoint::Latest => Some(Self::Latest),
            Checkpoint::Sequence {
                sequence_number, ..
            } => Some(Self::After(sequence_number.clone())),
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
    req = match position {
        StartPosition::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        StartPosition::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
        StartPosition::After(seq) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(seq),
        StartPosition::AtTimestamp(at) => req
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(aws_smithy_types::DateTime::from(*at)),
    };
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
        let mut bytes = 0u64;
        let records = out
            .records
            .into_iter()
            .map(|r| {
                let data = Bytes::from(r.data.into_inner());
                bytes += data.len() as u64 + r.partition_key.len() as u64;
                Record {
                    sequence_number: r.sequence_number,
                    partition_key: r.partition_key,
                    data,
                    approximate_arrival: r
                        .approximate_arrival_timestamp
                        .and_then(|t| SystemTime::try_from(t).ok()),
                }
            })
            .collect();
        let child_shards = out
            .child_shards
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
            next_iterator: out.next_shard_iterator.filter(|s| !s.is_empty()),
            millis_behind_latest: out.millis_behind_latest,
            child_shards,
        }
    }
}
