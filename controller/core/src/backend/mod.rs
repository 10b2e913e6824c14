//! The small interfaces shardctl needs from AWS, in our own types.
//!
//! The reconcile loop only talks to these traits. The AWS SDK stands behind them in production
//! (`crate::aws`), and the simulator stands behind them in `shardctl simulate` and
//! `shardctl run --simulate`. Every method returns a [`BackendError`] classified for retries and
//! metrics; retries happen in exactly one place (the adapters' retry layer), never in callers.

use chrono::{DateTime, Utc};
use shardctl_lease::{StreamFilter, TableRows};
use shardctl_policies::history::{OperationOutcome, OperationRecord};
use shardctl_policies::{HashKey, Shard, ShardMetrics, StreamStatus};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

mod error;
mod fence;

pub use error::BackendError;
pub use fence::{Fence, JournalEntry, LeaderRecord, LeaderToken};

/// Capacity mode of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// Provisioned: shards are managed by `SplitShard` / `MergeShards` (what shardctl manages).
    Provisioned,
    /// On-demand: AWS manages shards; shardctl leaves such a stream alone.
    OnDemand,
}

/// What `DescribeStreamSummary` says of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// The stream name.
    pub name: String,
    /// Its status.
    pub status: StreamStatus,
    /// Its capacity mode.
    pub mode: StreamMode,
    /// Open shards.
    pub open_shard_count: u32,
    /// Shard-level metrics enabled (`EnhancedMonitoring`), CloudWatch names.
    pub shard_level_metrics: Vec<String>,
    /// Data retention.
    pub retention: Duration,
    /// The AWS account that owns the stream (from `StreamARN`), when reported.
    pub account: Option<String>,
    /// `StreamCreationTimestamp` in Unix seconds, when reported.
    pub creation_epoch: Option<u64>,
}

impl StreamDescription {
    /// Which rows of a lease table belong to this stream (multi-stream tables key rows by
    /// `account:stream:creationEpoch:shardId`).
    pub fn lease_filter(&self) -> StreamFilter {
        StreamFilter::named(self.name.clone())
            .with_account(self.account.clone())
            .with_creation_epoch(self.creation_epoch)
    }
}

/// The shard-level CloudWatch metrics shardctl reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardMetric {
    /// `IncomingBytes`.
    IncomingBytes,
    /// `IncomingRecords`.
    IncomingRecords,
    /// `WriteProvisionedThroughputExceeded`.
    WriteProvisionedThroughputExceeded,
}

impl ShardMetric {
    /// Every metric shardctl reads, in a fixed order.
    pub const ALL: [ShardMetric; 3] = [
        ShardMetric::IncomingBytes,
        ShardMetric::IncomingRecords,
        ShardMetric::WriteProvisionedThroughputExceeded,
    ];

    /// The CloudWatch metric name (namespace `AWS/Kinesis`).
    pub fn cloudwatch_name(self) -> &'static str {
        match self {
            ShardMetric::IncomingBytes => "IncomingBytes",
            ShardMetric::IncomingRecords => "IncomingRecords",
            ShardMetric::WriteProvisionedThroughputExceeded => "WriteProvisionedThroughputExceeded",
        }
    }
}

/// Kinesis control-plane calls.
pub trait Kinesis: Send + Sync {
    /// `DescribeStreamSummary`.
    fn describe_stream(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<StreamDescription, BackendError>> + Send;

    /// Every shard of the stream, open and closed, with lineage (paginated `ListShards`). The
    /// returned shards carry no metrics.
    fn list_shards(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Vec<Shard>, BackendError>> + Send;

    /// `SplitShard`. Returns once Kinesis accepted the call (the stream is then `UPDATING`).
    fn split_shard(
        &self,
        stream: &str,
        shard_id: &str,
        new_starting_hash_key: HashKey,
        fence: &Fence,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// `MergeShards` of `shard_id` with the adjacent `adjacent_shard_id`.
    fn merge_shards(
        &self,
        stream: &str,
        shard_id: &str,
        adjacent_shard_id: &str,
        fence: &Fence,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// `EnableEnhancedMonitoring` for the given shard-level metrics.
    fn enable_shard_metrics(
        &self,
        stream: &str,
        metrics: &[ShardMetric],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// A sample of the records written to `shard_id` since `since`: at most `limit` of them, as
    /// (partition key, size in bytes including the key). Used to place traffic-weighted split
    /// points. A backend that cannot sample returns an empty list (the split falls back to the
    /// midpoint).
    fn sample_records(
        &self,
        stream: &str,
        shard_id: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, BackendError>> + Send {
        let _ = (stream, shard_id, since, limit);
        std::future::ready(Ok(Vec::new()))
    }
}

/// Shard-level CloudWatch metrics.
pub trait Metrics: Send + Sync {
    /// Per-minute `Sum`s of every [`ShardMetric`] for each shard, over `minutes` minutes from
    /// `start` (minute-aligned). Every returned series has exactly `minutes` entries; a minute
    /// with no datapoint is `None`. Shards with no data at all map to all-`None` series.
    /// Implementations batch: `ceil(shards * 3 / 500)` `GetMetricData` calls per page of results.
    fn shard_metrics(
        &self,
        stream: &str,
        shard_ids: &[String],
        start: DateTime<Utc>,
        minutes: usize,
    ) -> impl Future<Output = Result<HashMap<String, ShardMetrics>, BackendError>> + Send;
}

/// Reads of consumer lease tables (KCL single-stream schema).
pub trait LeaseTables: Send + Sync {
    /// The rows of `stream` in `table` (every page, read by the one lease model). A missing
    /// table is [`BackendError::NotFound`], never an empty table.
    fn rows(
        &self,
        table: &str,
        stream: &StreamFilter,
    ) -> impl Future<Output = Result<TableRows, BackendError>> + Send;
}

/// The controller's own state: per-stream history and in-flight journal, and the leader lease.
pub trait StateStore: Send + Sync {
    /// Creates the state table if it is missing (idempotent).
    fn ensure(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The leader item as stored now (strongly consistent), `None` before anybody led.
    fn leader_record(
        &self,
    ) -> impl Future<Output = Result<Option<LeaderRecord>, BackendError>> + Send;

    /// Journal entries of `stream` started at or after `since`, oldest first.
    fn history(
        &self,
        stream: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<JournalEntry>, BackendError>> + Send;

    /// Journals `record` (outcome `InFlight`) before the Kinesis call, conditional on `leader`
    /// still holding leadership. Returns the entry id.
    fn begin(
        &self,
        stream: &str,
        record: &OperationRecord,
        leader: &LeaderToken,
    ) -> impl Future<Output = Result<String, BackendError>> + Send;

    /// Records how entry `id` ended, only while it is still in flight:
    /// [`BackendError::ConditionFailed`] when it is missing or was settled already (by another
    /// leader, from the shard map).
    fn finish(
        &self,
        stream: &str,
        id: &str,
        outcome: OperationOutcome,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Takes leadership if nobody holds an unexpired lease. `None` if another replica leads.
    fn acquire_leadership(
        &self,
        owner: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<LeaderToken>, BackendError>> + Send;

    /// Extends `token`'s lease. `None` if leadership was lost meanwhile.
    fn renew_leadership(
        &self,
        token: &LeaderToken,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<LeaderToken>, BackendError>> + Send;

    /// Gives leadership up (on shutdown) so a standby takes over at once.
    fn release_leadership(
        &self,
        token: &LeaderToken,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// Time, injected: the real clock in production, virtual time in the simulator and in tests.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
    /// Waits `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The wall clock and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// The backends of one controller, named once: the AWS SDK in production
/// ([`crate::aws::Aws`]), the simulator in `shardctl simulate` (`shardctl_sim::Sim`), fault
/// wrappers in tests. Code that touches the backends is generic over one `B: Backends` and
/// reaches them through a [`crate::reconcile::Context`].
pub trait Backends: Send + Sync + 'static {
    /// Kinesis.
    type Kinesis: Kinesis + Clone + 'static;
    /// CloudWatch.
    type Metrics: Metrics + Clone + 'static;
    /// Consumer lease tables.
    type Leases: LeaseTables + Clone + 'static;
    /// The controller's state table.
    type State: StateStore + Clone + 'static;
    /// Time.
    type Clock: Clock + Clone + 'static;
}
