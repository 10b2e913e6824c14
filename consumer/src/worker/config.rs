//! [`WorkerConfig`]: the settings of a worker and the intervals derived from them.

use std::time::Duration;

use crate::fanout::Retrieval;
use crate::metrics::ConsumerMetrics;
use crate::ownership::BalancePolicy;

/// Where a consumer starts on shards that have no history in the lease table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialPosition {
    /// Oldest retained record (nothing is skipped).
    #[default]
    TrimHorizon,
    /// Only records written from now on; closed shards without history are skipped.
    Latest,
    /// Records written at or after this instant. The lease stores KCL's `AT_TIMESTAMP` sentinel
    /// (KCL keeps no timestamp in the table), so every worker of the application must be
    /// configured with the same instant.
    AtTimestamp(std::time::SystemTime),
}

/// Settings of a [`Worker`](super::Worker).
///
/// ```
/// use std::time::Duration;
/// use shardctl_consumer::WorkerConfig;
/// let config = WorkerConfig::new("events", "billing-consumer")
///     .with_failover(Duration::from_secs(3))
///     .with_worker_id("worker-a");
/// assert_eq!(config.renew_interval(), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Kinesis stream to consume.
    pub stream_name: String,
    /// Lease table (one per consumer application).
    pub table_name: String,
    /// This worker's id, written as `leaseOwner`. Must be unique in the fleet.
    pub worker_id: String,
    /// Failover time: a lease not renewed for this long is taken by another worker. Default 10 s.
    ///
    /// # Warning
    /// Short values fail over faster but cost more DynamoDB writes and make leases move on
    /// short stalls (GC-free, but a slow network counts).
    pub failover: Duration,
    /// Where shards without history start. Default `TRIM_HORIZON`.
    pub initial_position: InitialPosition,
    /// `Limit` of each `GetRecords` call (1..=10000). Default 10000.
    pub max_records_per_call: i32,
    /// Wait between reads when a shard is caught up. Default 1 s (never below 200 ms).
    pub idle_poll_interval: Duration,
    /// How often the stream's shard list is synced into the lease table. Default 60 s; a shard
    /// that ends also creates its children's leases at once.
    pub shard_sync_interval: Duration,
    /// At most this many leases stolen per round. Default 1.
    pub max_steal_at_once: usize,
    /// Upper bound of leases held by this worker. Default unbounded.
    pub max_leases_per_worker: usize,
    /// How often finished leases are deleted under KCL's precondition (every child started, no
    /// parent row left), so the table stops growing; `None` keeps every row. Default 5 minutes,
    /// KCL's completed-lease cleanup interval.
    pub lease_cleanup_interval: Option<Duration>,
    /// Split KPL aggregates into their user records (see [`crate::reader::deaggregate`]), as
    /// KCL always does. Default on.
    ///
    /// # Warning
    /// Off, processors get aggregates as they are (sub-sequence number 0), and a checkpoint that
    /// a splitting consumer (this library with the option on, or KCL) wrote *within* an
    /// aggregate makes that aggregate come again whole; a checkpoint at it is then refused as
    /// [`Backwards`](crate::processor::CheckpointError::Backwards) (the lease is already within
    /// it), while checkpoints at later records work.
    pub deaggregate: bool,
    /// Where the worker reports lag, throughput, checkpoint age and lease movements (see
    /// [`ConsumerMetrics`]). Default none.
    pub metrics: Option<ConsumerMetrics>,
    /// How shards are read: `GetRecords` polling (the default) or enhanced fan-out, as KCL's
    /// retrieval modes (see [`Retrieval`]).
    pub retrieval: Retrieval,
}

impl WorkerConfig {
    /// Defaults with a random worker id.
    ///
    /// ```
    /// use shardctl_consumer::WorkerConfig;
    /// let config = WorkerConfig::new("events", "app");
    /// assert_eq!(config.failover.as_secs(), 10);
    /// ```
    pub fn new(stream_name: impl Into<String>, table_name: impl Into<String>) -> Self {
        Self {
            stream_name: stream_name.into(),
            table_name: table_name.into(),
            worker_id: uuid::Uuid::new_v4().to_string(),
            failover: Duration::from_secs(10),
            initial_position: InitialPosition::TrimHorizon,
            max_records_per_call: 10_000,
            idle_poll_interval: Duration::from_secs(1),
            shard_sync_interval: Duration::from_secs(60),
            max_steal_at_once: 1,
            max_leases_per_worker: usize::MAX,
            lease_cleanup_interval: Some(Duration::from_secs(300)),
            deaggregate: true,
            metrics: None,
            retrieval: Retrieval::Polling,
        }
    }

    /// Reads shards with enhanced fan-out through the stream consumer `consumer_name`
    /// (registered at start if missing), or polls them (`None`, the default).
    ///
    /// ```
    /// use shardctl_consumer::{Retrieval, WorkerConfig};
    /// let c = WorkerConfig::new("s", "t").with_fan_out(Some("billing"));
    /// assert_eq!(c.retrieval, Retrieval::FanOut { consumer_name: "billing".into() });
    /// ```
    pub fn with_fan_out(mut self, consumer_name: Option<&str>) -> Self {
        self.retrieval = match consumer_name {
            Some(name) => Retrieval::FanOut {
                consumer_name: name.to_owned(),
            },
            None => Retrieval::Polling,
        };
        self
    }

    /// Reports the worker's metrics to `metrics` (registered on the application's registry).
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use shardctl_consumer::{ConsumerMetrics, WorkerConfig};
    /// let mut registry = Registry::default();
    /// let c = WorkerConfig::new("s", "t").with_metrics(ConsumerMetrics::register(&mut registry));
    /// assert!(c.metrics.is_some());
    /// ```
    pub fn with_metrics(mut self, metrics: ConsumerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Turns the splitting of KPL aggregates on (the default) or off.
    ///
    /// ```
    /// use shardctl_consumer::WorkerConfig;
    /// assert!(WorkerConfig::new("s", "t").deaggregate);
    /// assert!(!WorkerConfig::new("s", "t").with_deaggregation(false).deaggregate);
    /// ```
    pub fn with_deaggregation(mut self, deaggregate: bool) -> Self {
        self.deaggregate = deaggregate;
        self
    }

    /// Sets how often finished leases are cleaned up (`None`: never).
    ///
    /// ```
    /// use shardctl_consumer::WorkerConfig;
    /// let c = WorkerConfig::new("s", "t").with_lease_cleanup_interval(None);
    /// assert!(c.lease_cleanup_interval.is_none());
    /// ```
    pub fn with_lease_cleanup_interval(mut self, interval: Option<std::time::Duration>) -> Self {
        self.lease_cleanup_interval = interval;
        self
    }

    /// Sets the failover time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shardctl_consumer::WorkerConfig;
    /// let c = WorkerConfig::new("s", "t").with_failover(Duration::from_secs(3));
    /// assert_eq!(c.failover, Duration::from_secs(3));
    /// ```
    pub fn with_failover(mut self, failover: Duration) -> Self {
        self.failover = failover;
        self
    }

    /// Sets the worker id.
    ///
    /// ```
    /// use shardctl_consumer::WorkerConfig;
    /// assert_eq!(WorkerConfig::new("s", "t").with_worker_id("w1").worker_id, "w1");
    /// ```
    pub fn with_worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }

    /// Sets the idle poll interval.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shardctl_consumer::WorkerConfig;
    /// let c = WorkerConfig::new("s", "t").with_idle_poll_interval(Duration::from_millis(250));
    /// assert_eq!(c.idle_poll_interval.as_millis(), 250);
    /// ```
    pub fn with_idle_poll_interval(mut self, interval: Duration) -> Self {
        self.idle_poll_interval = interval;
        self
    }

    /// Sets the shard sync interval.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shardctl_consumer::WorkerConfig;
    /// let c = WorkerConfig::new("s", "t").with_shard_sync_interval(Duration::from_secs(5));
    /// assert_eq!(c.shard_sync_interval.as_secs(), 5);
    /// ```
    pub fn with_shard_sync_interval(mut self, interval: Duration) -> Self {
        self.shard_sync_interval = interval;
        self
    }

    /// The instant of [`InitialPosition::AtTimestamp`], if configured.
    ///
    /// ```
    /// use shardctl_consumer::WorkerConfig;
    /// assert!(WorkerConfig::new("s", "t").at_timestamp().is_none());
    /// ```
    pub fn at_timestamp(&self) -> Option<std::time::SystemTime> {
        match self.initial_position {
            InitialPosition::AtTimestamp(t) => Some(t),
            _ => None,
        }
    }

    /// Renewal period: a third of the failover time.
    ///
    /// ```
    /// use shardctl_consumer::WorkerConfig;
    /// assert_eq!(WorkerConfig::new("s", "t").renew_interval().as_millis(), 3333);
    /// ```
    pub fn renew_interval(&self) -> Duration {
        self.failover / 3
    }

    /// Bound of every lease-table call: a quarter of the failover time. A hung call fails after
    /// it and costs one renewal attempt of one lease, never the tenure (renewals come every
    /// third of the failover time, and the tenure lasts a whole one).
    ///
    /// ```
    /// use shardctl_consumer::WorkerConfig;
    /// assert_eq!(WorkerConfig::new("s", "t").lease_call_timeout().as_millis(), 2500);
    /// ```
    pub fn lease_call_timeout(&self) -> Duration {
        self.failover / 4
    }

    /// Period of the lease-taking round (a table scan): an eighth of the failover time (at least
    /// 100 ms). The expiry clock starts when a scan first sees a counter, and the take happens at
    /// the first round after it ran out, so a dead worker's leases move within about
    /// `failover + 2 * take_interval` = 1.25 failover times of its last renewal.
    ///
    /// ```
    /// use shardctl_consumer::WorkerConfig;
    /// assert_eq!(WorkerConfig::new("s", "t").take_interval().as_millis(), 1250);
    /// ```
    pub fn take_interval(&self) -> Duration {
        (self.failover / 8).max(Duration::from_millis(100))
    }

    pub(super) fn balance_policy(&self) -> BalancePolicy {
        BalancePolicy {
            failover: self.failover,
            max_steal_at_once: self.max_steal_at_once,
            max_leases_per_worker: self.max_leases_per_worker,
        }
    }
}
