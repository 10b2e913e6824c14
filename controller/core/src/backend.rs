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

/// A failed backend call, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Request rate exceeded (`ThrottlingException`, `ProvisionedThroughputExceededException`,
    /// CloudWatch `Throttling`). Retriable.
    #[error("{api}: throttled: {message}")]
    Throttled {
        /// The API called, e.g. `SplitShard`.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// The stream is being updated (`ResourceInUseException`). Retriable after the update.
    #[error("{api}: stream busy: {message}")]
    ResourceInUse {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// A rate or quota limit (`LimitExceededException`). Retriable with backoff; may also mean a
    /// shard quota is exhausted, which retries will not fix.
    #[error("{api}: limit exceeded: {message}")]
    LimitExceeded {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// The stream, table or shard does not exist.
    #[error("{api}: not found: {message}")]
    NotFound {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// The request was rejected as invalid (bad split key, non-adjacent merge, closed shard...).
    #[error("{api}: rejected: {message}")]
    Invalid {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// Missing permissions.
    #[error("{api}: access denied: {message}")]
    AccessDenied {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// A conditional write lost (leadership or journal fencing).
    #[error("{api}: condition failed: {message}")]
    ConditionFailed {
        /// The API called.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// Timeouts, connection errors, 5xx: retriable.
    #[error("{api}: transient failure: {message}")]
    Transient {
        /// The API called.
        api: &'static str,
        /// What happened.
        message: String,
    },
    /// This replica may no longer act: its leadership changed or its lease, by the local
    /// monotonic clock, would not outlast the call. Nothing was sent.
    #[error("{api}: not sent, leadership not current: {message}")]
    Fenced {
        /// The API.
        api: &'static str,
        /// Why.
        message: String,
    },
    /// Anything else.
    #[error("{api}: {message}")]
    Other {
        /// The API called.
        api: &'static str,
        /// What happened.
        message: String,
    },
}

impl BackendError {
    /// A fixed label for metrics (`outcome` of `shardctl_aws_calls_total`).
    pub fn label(&self) -> &'static str {
        match self {
            BackendError::Throttled { .. } => "throttled",
            BackendError::ResourceInUse { .. } => "resource_in_use",
            BackendError::LimitExceeded { .. } => "limit_exceeded",
            BackendError::NotFound { .. } => "not_found",
            BackendError::Invalid { .. } => "invalid",
            BackendError::AccessDenied { .. } => "access_denied",
            BackendError::ConditionFailed { .. } => "condition_failed",
            BackendError::Transient { .. } => "transient",
            BackendError::Fenced { .. } => "fenced",
            BackendError::Other { .. } => "other",
        }
    }

    /// Whether retrying the same call later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            BackendError::Throttled { .. }
                | BackendError::ResourceInUse { .. }
                | BackendError::LimitExceeded { .. }
                | BackendError::Transient { .. }
        )
    }

    /// True when the call certainly changed nothing: the service answered with a rejection, or
    /// nothing was sent. Timeouts, dropped connections and 5xx answers are not: the call may
    /// have landed.
    pub fn is_definite_rejection(&self) -> bool {
        !matches!(
            self,
            BackendError::Transient { .. } | BackendError::Other { .. }
        )
    }

    /// The API the error came from.
    pub fn api(&self) -> &'static str {
        match self {
            BackendError::Throttled { api, .. }
            | BackendError::ResourceInUse { api, .. }
            | BackendError::LimitExceeded { api, .. }
            | BackendError::NotFound { api, .. }
            | BackendError::Invalid { api, .. }
            | BackendError::AccessDenied { api, .. }
            | BackendError::ConditionFailed { api, .. }
            | BackendError::Transient { api, .. }
            | BackendError::Fenced { api, .. }
            | BackendError::Other { api, .. } => api,
        }
    }
}

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

/// Proof of leadership: the owner and the fencing token it holds. Writes that change shards or
/// the journal are conditional on the token still being current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderToken {
    /// This replica's identity.
    pub owner: String,
    /// Increases every time leadership changes hands.
    pub fence: u64,
    /// When the lease lapses unless renewed (wall clock, as stored; informational).
    pub expires_at: DateTime<Utc>,
    /// The lease length.
    pub ttl: Duration,
    /// When the lease lapses by this process's monotonic clock: when the acquiring or renewing
    /// call was *sent*, plus the lease. Other replicas take over only after they have seen the
    /// record unchanged for a whole lease on their own clocks, so no other replica acts before.
    pub local_deadline: tokio::time::Instant,
    /// When this replica's leadership under this fence began (the acquiring call was sent), by
    /// the monotonic clock.
    pub acquired_at: tokio::time::Instant,
}

impl LeaderToken {
    /// A token for leadership acquired (or renewed) by a call sent at `sent`, for `ttl`.
    pub fn new(
        owner: impl Into<String>,
        fence: u64,
        expires_at: DateTime<Utc>,
        ttl: Duration,
        sent: tokio::time::Instant,
    ) -> Self {
        LeaderToken {
            owner: owner.into(),
            fence,
            expires_at,
            ttl,
            local_deadline: sent.checked_add(ttl).unwrap_or(sent),
            acquired_at: sent,
        }
    }

    /// How long one reshard attempt may take: a third of the lease, at most 5 s.
    pub fn attempt_timeout(&self) -> Duration {
        (self.ttl / 3).min(Duration::from_secs(5))
    }

    /// Whether this token still allows starting a call that takes up to `call`, now: the local
    /// deadline lies beyond `call` plus a tenth of the lease.
    pub fn outlasts(&self, call: Duration) -> bool {
        tokio::time::Instant::now()
            .checked_add(call + self.ttl / 10)
            .is_some_and(|end| end < self.local_deadline)
    }
}

/// The check every reshard call passes right before each attempt: this replica still leads with
/// the fence it journalled the operation under, and its lease, by the local monotonic clock,
/// outlasts the attempt. The leader's latest token is read from the leadership task's channel,
/// so renewals during a long pass count.
#[derive(Debug, Clone)]
pub struct Fence {
    leader: tokio::sync::watch::Receiver<Option<LeaderToken>>,
    owner: String,
    fence: u64,
    attempt_timeout: Duration,
}

impl Fence {
    /// A fence over the leadership channel, for the operations journalled under `token`.
    pub fn new(
        leader: tokio::sync::watch::Receiver<Option<LeaderToken>>,
        token: &LeaderToken,
    ) -> Self {
        Fence {
            leader,
            owner: token.owner.clone(),
            fence: token.fence,
            attempt_timeout: token.attempt_timeout(),
        }
    }

    /// A fence over one token that is never renewed (a single pass, tests).
    pub fn fixed(token: &LeaderToken) -> Self {
        let (_tx, rx) = tokio::sync::watch::channel(Some(token.clone()));
        Fence::new(rx, token)
    }

    /// The leader the operation was journalled under: (owner, fence).
    pub fn holder(&self) -> (&str, u64) {
        (&self.owner, self.fence)
    }

    /// How long one attempt may take; the adapters enforce it (a timed-out attempt has an
    /// unknown outcome and is not sent again).
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// `Ok` when an attempt may be sent now.
    pub fn check(&self, api: &'static str) -> Result<(), BackendError> {
        let current = self.leader.borrow().clone();
        match current {
            Some(t) if t.owner == self.owner && t.fence == self.fence => {
                if t.outlasts(self.attempt_timeout) {
                    Ok(())
                } else {
                    Err(BackendError::Fenced {
                        api,
                        message: format!(
                            "the leader lease (fence {}) would lapse before a {:?} call ends",
                            self.fence, self.attempt_timeout
                        ),
                    })
                }
            }
            Some(t) => Err(BackendError::Fenced {
                api,
                message: format!(
                    "leadership changed from {} (fence {}) to {} (fence {})",
                    self.owner, self.fence, t.owner, t.fence
                ),
            }),
            None => Err(BackendError::Fenced {
                api,
                message: format!("{} (fence {}) no longer leads", self.owner, self.fence),
            }),
        }
    }
}

/// One journalled operation.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// Unique id of the entry.
    pub id: String,
    /// The operation and how it ended.
    pub record: OperationRecord,
    /// The fence of the leader that began it (`None` in entries written before fences were
    /// recorded).
    pub fence: Option<u64>,
}

/// The leader item as stored: who leads, under which fence, until when (wall clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRecord {
    /// The leader's identity.
    pub owner: String,
    /// Its fence.
    pub fence: u64,
    /// Its wall-clock expiry (the Unix epoch once released).
    pub expires_at: DateTime<Utc>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn token(owner: &str, fence: u64, ttl: Duration, sent: Instant) -> LeaderToken {
        LeaderToken::new(owner, fence, Utc::now(), ttl, sent)
    }

    #[test]
    fn a_fence_lets_a_call_through_only_while_the_lease_outlasts_it() {
        let ttl = Duration::from_secs(15);
        let (tx, rx) = tokio::sync::watch::channel(Some(token("a", 3, ttl, Instant::now())));
        let fence = Fence::new(rx, &token("a", 3, ttl, Instant::now()));
        assert_eq!(fence.attempt_timeout(), Duration::from_secs(5));
        assert!(fence.check("SplitShard").is_ok());
        // The last renewal was sent 9 s ago: 6 s left, less than 5 s + 1.5 s.
        let stale = Instant::now()
            .checked_sub(Duration::from_secs(9))
            .expect("a monotonic clock 9 s old");
        tx.send_replace(Some(token("a", 3, ttl, stale)));
        let error = fence.check("SplitShard").expect_err("lapsing");
        assert_eq!(error.label(), "fenced");
        assert!(error.is_definite_rejection());
        // Renewed: through again. Deposed, or another fence: never.
        tx.send_replace(Some(token("a", 3, ttl, Instant::now())));
        assert!(fence.check("SplitShard").is_ok());
        tx.send_replace(Some(token("b", 4, ttl, Instant::now())));
        assert!(fence.check("SplitShard").is_err());
        tx.send_replace(None);
        assert!(fence.check("SplitShard").is_err());
    }

    #[test]
    fn unknown_outcomes_are_not_definite_rejections() {
        let transient = BackendError::Transient {
            api: "SplitShard",
            message: "timed out".into(),
        };
        assert!(!transient.is_definite_rejection());
        let rejected = BackendError::LimitExceeded {
            api: "SplitShard",
            message: "no".into(),
        };
        assert!(rejected.is_definite_rejection());
    }
}
