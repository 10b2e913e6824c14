//! The worker: shard sync, lease taking and renewal, one ordered reader task per held shard.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::drain::{Lineage, Readiness, ScannedRows, child_rows, lineage_of, readiness};
use crate::lease::{Checkpoint, Lease};
use crate::ownership::{AcquireKind, BalancePolicy, LeaseObserver, Tenure, plan_acquisitions};
use crate::processor::{
    Checkpointer, InitInput, LeaseCell, ProcessorFactory, RecordBatch, ShardProcessor, SharedLease,
};
use crate::reader::{self, ReadError, ReadPacer, StartPosition, backoff};
use crate::shards::{InitialPosition, ListShardsError, list_shards, plan_shard_sync};
use crate::store::{LeaseStore, LeaseStoreError};

/// Settings of a [`Worker`].
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
        }
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

    fn balance_policy(&self) -> BalancePolicy {
        BalancePolicy {
            failover: self.failover,
            max_steal_at_once: self.max_steal_at_once,
            max_leases_per_worker: self.max_leases_per_worker,
        }
    }
}

/// Errors starting a [`Worker`].
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The lease table could not be created or read.
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
    /// The stream's shards could not be listed.
    #[error(transparent)]
    ListShards(#[from] ListShardsError),
    /// The configuration is invalid.
    #[error("invalid worker configuration: {0}")]
    Config(&'static str),
}

impl WorkerError {
    /// Fixed label for metrics.
    ///
    /// ```
    /// use shardctl_consumer::WorkerError;
    /// assert_eq!(WorkerError::Config("x").label(), "config");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Self::Store(e) => e.label(),
            Self::ListShards(_) => "list_shards",
            Self::Config(_) => "config",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Run,
    LeaseLost,
    /// Stolen with a graceful handoff: checkpoint, then stop.
    Handoff,
    Shutdown,
}

struct Held {
    cell: SharedLease,
    signal: watch::Sender<Signal>,
    task: Option<JoinHandle<()>>,
    /// Renews this lease, on its own: a slow renewal of another lease never delays it.
    renewer: Option<JoinHandle<()>>,
}

/// What the coordinator last read: lease rows and, once synced, the listed shard ids.
#[derive(Debug, Default)]
struct Snapshot {
    leases: Vec<Lease>,
    unreadable: BTreeSet<String>,
    /// The stream's lineage, once shards were listed.
    listed: Option<Arc<Lineage>>,
}

struct Inner<F: ProcessorFactory> {
    config: WorkerConfig,
    store: LeaseStore,
    kinesis: aws_sdk_kinesis::Client,
    factory: F,
    held: StdMutex<HashMap<String, Held>>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    sync_now: Notify,
}

/// A running consumer worker. Dropping it does not stop it: call [`Worker::shutdown`] (graceful:
/// processors checkpoint, leases are released) or [`Worker::kill`] (as if the process died).
///
/// ```no_run
/// use aws_config::BehaviorVersion;
/// use shardctl_consumer::{Worker, WorkerConfig};
/// use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
///
/// struct Printer;
/// impl ShardProcessor for Printer {
///     async fn initialize(&mut self, _: InitInput) {}
///     async fn process_records(&mut self, batch: RecordBatch, c: &Checkpointer) {
///         println!("{} records from {}", batch.records.len(), batch.shard_id);
///         let _ = c.checkpoint().await;
///     }
///     async fn shard_ended(&mut self, c: &Checkpointer) {
///         let _ = c.checkpoint_shard_end().await;
///     }
/// }
///
/// # async fn demo() -> Result<(), shardctl_consumer::WorkerError> {
/// let aws = aws_config::defaults(BehaviorVersion::latest()).load().await;
/// let worker = Worker::start(
///     WorkerConfig::new("events", "printer-app"),
///     aws_sdk_kinesis::Client::new(&aws),
///     aws_sdk_dynamodb::Client::new(&aws),
///     |_shard: &str| Printer,
/// )
/// .await?;
/// tokio::signal::ctrl_c().await.ok();
/// worker.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Worker {
    worker_id: String,
    held: Arc<dyn HeldView>,
    coordinator: JoinHandle<()>,
    stop: watch::Sender<bool>,
    shutdown_all: Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>,
}

trait HeldView: Send + Sync {
    fn held_shards(&self) -> Vec<String>;
    fn abort_all(&self);
}

impl<F: ProcessorFactory> HeldView for Inner<F> {
    fn held_shards(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.held).keys().cloned().collect();
        keys.sort();
        keys
    }
    fn abort_all(&self) {
        for held in lock(&self.held).values_mut() {
            if let Some(task) = held.task.take() {
                task.abort();
            }
            if let Some(renewer) = held.renewer.take() {
                renewer.abort();
            }
        }
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the map lock leaves it consistent (only inserts/removes).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Creates the lease table if needed, syncs shards into it, and starts taking leases.
    ///
    /// ```no_run
    /// # use shardctl_consumer::{Worker, WorkerConfig};
    /// # use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
    /// # struct Nop;
    /// # impl ShardProcessor for Nop {
    /// #     async fn initialize(&mut self, _: InitInput) {}
    /// #     async fn process_records(&mut self, _: RecordBatch, _: &Checkpointer) {}
    /// #     async fn shard_ended(&mut self, c: &Checkpointer) { let _ = c.checkpoint_shard_end().await; }
    /// # }
    /// # async fn demo(k: aws_sdk_kinesis::Client, d: aws_sdk_dynamodb::Client) -> Result<(), shardctl_consumer::WorkerError> {
    /// let worker = Worker::start(WorkerConfig::new("events", "app"), k, d, |_: &str| Nop).await?;
    /// println!("{} holds {:?}", worker.worker_id(), worker.held_shards());
    /// # Ok(()) }
    /// ```
    pub async fn start<F: ProcessorFactory>(
        config: WorkerConfig,
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        factory: F,
    ) -> Result<Self, WorkerError> {
        if config.failover < Duration::from_millis(300) {
            return Err(WorkerError::Config("failover must be at least 300 ms"));
        }
        if !(1..=10_000).contains(&config.max_records_per_call) {
            return Err(WorkerError::Config(
                "max_records_per_call must be in 1..=10000",
            ));
        }
        if config.worker_id.is_empty() {
            return Err(WorkerError::Config("worker_id must not be empty"));
        }
        let store = LeaseStore::new(dynamodb, config.table_name.clone())
            .with_call_timeout(Some(config.lease_call_timeout()));
        store.ensure_table().await?;
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
        let inner = Arc::new(Inner {
            config,
            store,
            kinesis,
            factory,
            held: StdMutex::new(HashMap::new()),
            snapshot,
            sync_now: Notify::new(),
        });
        let listed = inner.shard_sync().await?;
        inner.snapshot.send_modify(|s| {
            let mut next = Snapshot {
                listed: Some(listed),
                ..Snapshot::default()
            };
            next.leases = s.leases.clone();
            *s = Arc::new(next);
        });
        info!(worker = %inner.config.worker_id, stream = %inner.config.stream_name,
              table = %inner.config.table_name, failover_ms = inner.config.failover.as_millis() as u64,
              "worker started");
        let (stop, stop_rx) = watch::channel(false);
        let coordinator = tokio::spawn(Arc::clone(&inner).coordinate(stop_rx));
        let for_shutdown = Arc::clone(&inner);
        Ok(Self {
            worker_id: inner.config.worker_id.clone(),
            held: inner,
            coordinator,
            stop,
            shutdown_all: Box::new(move || Box::pin(for_shutdown.graceful_shutdown())),
        })
    }

    /// This worker's id (`leaseOwner` of its leases).
    ///
    /// ```no_run
    /// # fn demo(w: &shardctl_consumer::Worker) { println!("{}", w.worker_id()); }
    /// ```
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Shard ids whose leases this worker holds now.
    ///
    /// ```no_run
    /// # fn demo(w: &shardctl_consumer::Worker) { assert!(w.held_shards().len() < 10_000); }
    /// ```
    pub fn held_shards(&self) -> Vec<String> {
        self.held.held_shards()
    }

    /// Graceful stop: no new leases; each processor gets
    /// [`ShardProcessor::shutdown_requested`] and checkpoints; then the leases are released so
    /// other workers take them at once, resuming exactly at the checkpoints.
    ///
    /// ```no_run
    /// # async fn demo(w: shardctl_consumer::Worker) { w.shutdown().await; }
    /// ```
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.coordinator.await;
        (self.shutdown_all)().await;
        info!(worker = %self.worker_id, "worker stopped");
    }

    /// Stops everything at once without checkpointing or releasing, like a crashed process. Its
    /// leases expire after the failover time and other workers resume from the last checkpoints.
    ///
    /// ```no_run
    /// # fn demo(w: shardctl_consumer::Worker) { w.kill(); }
    /// ```
    pub fn kill(self) {
        self.coordinator.abort();
        self.held.abort_all();
        warn!(worker = %self.worker_id, "worker killed without releasing its leases");
    }
}

impl<F: ProcessorFactory> Inner<F> {
    fn me(&self) -> &str {
        &self.config.worker_id
    }

    /// Lists shards and creates missing leases. Returns the stream's lineage.
    async fn shard_sync(&self) -> Result<Arc<Lineage>, WorkerError> {
        let shards = list_shards(&self.kinesis, &self.config.stream_name).await?;
        let scan = self.store.scan().await?;
        for lease in plan_shard_sync(&shards, &scan.leases, self.config.initial_position) {
            if self.store.create_if_absent(&lease).await? {
                info!(worker = %self.me(), shard = %lease.lease_key, checkpoint = %lease.checkpoint,
                      parents = ?lease.parent_shard_ids, "lease created");
            }
        }
        Ok(Arc::new(lineage_of(&shards)))
    }

    async fn coordinate(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut observer = LeaseObserver::default();
        let mut last_sync = Instant::now();
        let mut last_cleanup = Instant::now();
        let mut listed: Option<Arc<Lineage>> = self.snapshot.borrow().listed.clone();
        let policy = self.config.balance_policy();
        loop {
            if *stop.borrow() {
                return;
            }
            if last_sync.elapsed() >= self.config.shard_sync_interval {
                match self.shard_sync().await {
                    Ok(lineage) => listed = Some(lineage),
                    Err(e) => warn!(worker = %self.me(), error = %e, "shard sync failed"),
                }
                last_sync = Instant::now();
            }
            match self.store.scan().await {
                Ok(scan) => {
                    let now = Instant::now();
                    observer.observe(&scan.leases, now);
                    let unreadable: BTreeSet<String> = scan
                        .unreadable
                        .iter()
                        .filter_map(|(k, _)| k.clone())
                        .collect();
                    for (key, err) in &scan.unreadable {
                        warn!(worker = %self.me(), lease = ?key, error = %err, "unreadable lease row ignored");
                    }
                    let held: std::collections::HashSet<String> = {
                        let mut map = lock(&self.held);
                        map.retain(|_, h| h.task.as_ref().is_some_and(|t| !t.is_finished()));
                        map.keys().cloned().collect()
                    };
                    // An AT_TIMESTAMP lease can be read only with the application's instant
                    // (KCL stores none); without it, leave it to workers that have it.
                    let at_timestamp = self.config.at_timestamp();
                    let candidates: Vec<Lease> = scan
                        .leases
                        .iter()
                        .filter(|l| !unreadable.contains(&l.lease_key))
                        .filter(|l| {
                            let readable = at_timestamp.is_some()
                                || l.checkpoint != Checkpoint::AtTimestamp;
                            if !readable {
                                warn!(worker = %self.me(), shard = %l.lease_key,
                                      "lease starts AT_TIMESTAMP but this worker has no initial timestamp (InitialPosition::AtTimestamp); not taking it");
                            }
                            readable
                        })
                        .cloned()
                        .collect();
                    if let (Some(every), Some(lineage)) =
                        (self.config.lease_cleanup_interval, listed.as_deref())
                        && last_cleanup.elapsed() >= every
                    {
                        last_cleanup = Instant::now();
                        self.clean_up_finished(&scan.leases, &unreadable, lineage)
                            .await;
                    }
                    let plan =
                        plan_acquisitions(self.me(), &candidates, &held, &observer, now, &policy);
                    self.snapshot.send_replace(Arc::new(Snapshot {
                        leases: scan.leases,
                        unreadable,
                        listed: listed.clone(),
                    }));
                    for acq in plan {
                        let sent = Instant::now();
                        let result = self.store.acquire(&acq, self.me()).await;
                        match result {
                            Ok(counter) => {
                                info!(worker = %self.me(), shard = %acq.lease_key, kind = ?acq.kind,
                                      from = ?acq.previous_owner, "lease acquired");
                                let tenure =
                                    Tenure::acquired(counter, sent, self.config.failover, acq.kind);
                                self.spawn_shard(acq.lease_key, tenure, acq.kind);
                            }
                            Err(e) if e.is_condition_failed() => {
                                debug!(worker = %self.me(), shard = %acq.lease_key, "lost the race for a lease");
                            }
                            Err(e) => {
                                warn!(worker = %self.me(), shard = %acq.lease_key, error = %e, "taking lease failed");
                            }
                        }
                    }
                }
                Err(e) => warn!(worker = %self.me(), error = %e, "lease scan failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.take_interval()) => {}
                _ = self.sync_now.notified() => { last_sync = Instant::now() - self.config.shard_sync_interval; }
                _ = stop.changed() => {}
            }
        }
    }

    /// Deletes the finished leases that KCL's lease cleanup would delete (see
    /// [`shardctl_lease::DrainView::may_delete`]); the drain rule reads them as drained after.
    async fn clean_up_finished(
        &self,
        leases: &[Lease],
        unreadable: &BTreeSet<String>,
        lineage: &Lineage,
    ) {
        let rows = ScannedRows::new(leases, unreadable);
        let view = shardctl_lease::DrainView::new(lineage, &rows);
        for lease in leases.iter().filter(|l| view.may_delete(l)) {
            match self.store.delete_finished(&lease.lease_key).await {
                Ok(true) => {
                    info!(worker = %self.me(), shard = %lease.lease_key, "finished lease cleaned up")
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(worker = %self.me(), shard = %lease.lease_key, error = %e, "lease cleanup failed")
                }
            }
        }
    }

    fn spawn_shard(self: &Arc<Self>, key: String, tenure: Tenure, kind: AcquireKind) {
        let cell = Arc::new(Mutex::new(LeaseCell {
            tenure,
            lost: false,
            handoff: false,
            awaiting_handoff: kind == AcquireKind::Steal,
            checkpoint: Checkpoint::TrimHorizon,
        }));
        let (signal, signal_rx) = watch::channel(Signal::Run);
        let task =
            tokio::spawn(Arc::clone(self).run_shard(key.clone(), Arc::clone(&cell), signal_rx));
        let renewer = tokio::spawn(Arc::clone(self).renew_lease(
            key.clone(),
            Arc::clone(&cell),
            signal.clone(),
        ));
        lock(&self.held).insert(
            key,
            Held {
                cell,
                signal,
                task: Some(task),
                renewer: Some(renewer),
            },
        );
    }

    /// Renews one lease every third of the failover time until it is lost, handed off or
    /// released. Each call is bounded ([`WorkerConfig::lease_call_timeout`]), and each lease has
    /// its own renewer, so one hung call costs one attempt on one lease.
    async fn renew_lease(
        self: Arc<Self>,
        key: String,
        cell: SharedLease,
        signal: watch::Sender<Signal>,
    ) {
        let every = self.config.renew_interval();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            {
                let c = cell.lock().await;
                if c.lost || c.handoff {
                    return;
                }
            }
            self.renew_one(&key, &cell, &signal).await;
        }
    }

    async fn renew_one(&self, key: &str, cell: &SharedLease, signal: &watch::Sender<Signal>) {
        let mut cell = cell.lock().await;
        if cell.lost || cell.handoff || cell.awaiting_handoff {
            return;
        }
        let sent = Instant::now();
        if cell.tenure.is_lapsed(sent) {
            warn!(worker = %self.me(), shard = %key, "lease tenure lapsed before renewal");
            cell.lost = true;
            let _ = signal.send(Signal::LeaseLost);
            return;
        }
        match self.store.renew(key, cell.tenure.counter, self.me()).await {
            Ok(counter) => cell.tenure.renewed(counter, sent, self.config.failover),
            Err(e) if e.is_condition_failed() => match self.store.get(key).await {
                Ok(Some(row)) if row.checkpoint_owner.as_deref() == Some(self.me()) => {
                    info!(worker = %self.me(), shard = %key, to = ?row.lease_owner, "lease stolen; handing off");
                    cell.handoff = true;
                    let _ = signal.send(Signal::Handoff);
                }
                Ok(Some(row))
                    if row.lease_owner.as_deref() == Some(self.me())
                        && row.checkpoint_owner.is_none()
                        && row.lease_counter > cell.tenure.counter =>
                {
                    // Still ours: an earlier renewal that timed out was applied after all. Adopt
                    // its counter (without counting its unknown time) and renew on it now.
                    debug!(worker = %self.me(), shard = %key, counter = row.lease_counter,
                           "a renewal that timed out had been applied");
                    cell.tenure.counter = row.lease_counter;
                    let sent = Instant::now();
                    match self.store.renew(key, row.lease_counter, self.me()).await {
                        Ok(counter) => cell.tenure.renewed(counter, sent, self.config.failover),
                        Err(e) => {
                            warn!(worker = %self.me(), shard = %key, error = %e, "lease renewal failed")
                        }
                    }
                }
                Err(e) if !e.is_condition_failed() && !cell.tenure.is_lapsed(Instant::now()) => {
                    // Unknown: keep the tenure we have and ask again next time.
                    warn!(worker = %self.me(), shard = %key, error = %e, "reading a lease after a failed renewal failed");
                }
                _ => {
                    info!(worker = %self.me(), shard = %key, "lease lost on renewal");
                    cell.lost = true;
                    let _ = signal.send(Signal::LeaseLost);
                }
            },
            Err(e) => warn!(worker = %self.me(), shard = %key, error = %e, "lease renewal failed"),
        }
    }

    /// Releases a held lease if that is safe, and forgets it.
    async fn release(&self, key: &str, cell: &SharedLease) {
        let mut c = cell.lock().await;
        if c.lost {
            return;
        }
        if c.handoff {
            // Stolen: we are not the owner any more; let the new owner start now.
            match self
                .store
                .end_handoff(key, self.me(), c.tenure.counter)
                .await
            {
                Ok(()) => info!(worker = %self.me(), shard = %key, "lease handed off"),
                Err(e) if e.is_condition_failed() => {
                    debug!(worker = %self.me(), shard = %key, "handoff already ended by the new owner");
                }
                Err(e) => {
                    warn!(worker = %self.me(), shard = %key, error = %e, "ending handoff failed; the new owner will time out");
                }
            }
        } else if c.tenure.may_release(Instant::now()) {
            match self.store.release(key, c.tenure.counter, self.me()).await {
                Ok(_) => info!(worker = %self.me(), shard = %key, "lease released"),
                Err(e) => {
                    warn!(worker = %self.me(), shard = %key, error = %e, "lease release failed")
                }
            }
        }
        c.lost = true;
    }

    async fn graceful_shutdown(self: Arc<Self>) {
        let tasks: Vec<(String, SharedLease, Option<JoinHandle<()>>)> = {
            let mut map = lock(&self.held);
            map.values().for_each(|h| {
                let _ = h.signal.send(Signal::Shutdown);
            });
            map.iter_mut()
                .map(|(k, h)| (k.clone(), Arc::clone(&h.cell), h.task.take()))
                .collect()
        };
        // Processors get one failover time (together) to checkpoint; leases cannot be trusted
        // longer. One that overruns is stopped before its lease is released, so the next owner
        // never runs alongside it (it resumes at the last checkpoint instead).
        // A failover too long to add is as good as "no deadline" (about 30 years from now).
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(self.config.failover)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        for (key, cell, task) in tasks {
            if let Some(mut task) = task
                && tokio::time::timeout_at(deadline, &mut task).await.is_err()
            {
                warn!(worker = %self.me(), shard = %key, "processor did not stop in time; aborting it");
                task.abort();
                let _ = task.await;
            }
            self.release(&key, &cell).await;
        }
        lock(&self.held).clear();
    }

    /// Whether every parent of `key` is drained according to the latest snapshot (see
    /// [`crate::drain::readiness`]).
    fn parents_ready(&self, key: &str) -> Readiness {
        let snap = Arc::clone(&self.snapshot.borrow());
        readiness(key, &snap.leases, &snap.unreadable, snap.listed.as_deref())
    }

    /// Reads the row after an acquisition. For a steal, waits until the previous owner wrote its
    /// last checkpoint and cleared `checkpointOwner` (graceful handoff), or until the failover time
    /// since the steal passed (then it fences the previous owner off by clearing the marker).
    /// Returns the checkpoint to start from, or `None` if the lease is gone or a signal arrived.
    async fn await_handoff(
        &self,
        key: &str,
        cell: &SharedLease,
        signal: &mut watch::Receiver<Signal>,
    ) -> Option<Checkpoint> {
        let valid_from = cell.lock().await.tenure.valid_from();
        let mut attempt = 0;
        // After a fence, a previous owner that renewed on the counter alone (KCL 2.x knows no
        // checkpointOwner; KCL 3 renews while it is the checkpoint owner) may act until its own
        // lease times out: one failover time after the fence.
        let mut fenced_until: Option<Instant> = None;
        loop {
            match self.store.get(key).await {
                Ok(Some(row)) if row.lease_owner.as_deref() != Some(self.me()) => return None,
                Ok(Some(row)) => match row.checkpoint_owner.as_deref() {
                    None if fenced_until.is_some_and(|t| Instant::now() < t) => {}
                    None => {
                        // The previous owner (or our fence) cleared the marker and bumped the
                        // counter. Our tenure starts with a renewal of that counter: the others
                        // time our lease's expiry from that write, not from the handoff.
                        let sent = Instant::now();
                        match self.store.renew(key, row.lease_counter, self.me()).await {
                            Ok(counter) => {
                                let mut c = cell.lock().await;
                                c.tenure.renewed(counter, sent, self.config.failover);
                                c.tenure.handed_over(Instant::now());
                                c.awaiting_handoff = false;
                                return Some(row.checkpoint);
                            }
                            Err(e) if e.is_condition_failed() => return None,
                            Err(e) => {
                                attempt += 1;
                                warn!(worker = %self.me(), shard = %key, error = %e, attempt, "renewing a handed-over lease failed");
                            }
                        }
                    }
                    Some(previous) if Instant::now() >= valid_from => {
                        // The fence bumps leaseCounter, so a previous owner that still renews
                        // (a KCL 3 worker renews while it is the checkpoint owner) loses it.
                        warn!(worker = %self.me(), shard = %key, previous = %previous,
                              "previous owner did not hand off in time; fencing it off");
                        let sent = Instant::now();
                        match self
                            .store
                            .end_handoff(key, previous, row.lease_counter)
                            .await
                        {
                            Ok(()) => fenced_until = Some(sent + self.config.failover),
                            Err(e) if e.is_condition_failed() => {}
                            Err(e) => {
                                warn!(worker = %self.me(), shard = %key, error = %e, "clearing handoff failed")
                            }
                        }
                        continue;
                    }
                    Some(_) => {}
                },
                Ok(None) => return None,
                Err(e) => {
                    attempt += 1;
                    warn!(worker = %self.me(), shard = %key, error = %e, attempt, "reading lease failed");
                }
            }
            let until = tokio::time::Instant::now() + Duration::from_millis(200);
            if wait_or_signal(signal, until).await.is_some() {
                return None;
            }
        }
    }

    async fn run_shard(
        self: Arc<Self>,
        key: String,
        cell: SharedLease,
        mut signal: watch::Receiver<Signal>,
    ) {
        let outcome = self.drive_shard(&key, &cell, &mut signal).await;
        match outcome {
            ShardExit::Finished | ShardExit::Shutdown | ShardExit::HandedOff => {
                self.release(&key, &cell).await;
            }
            ShardExit::LeaseLost => {
                cell.lock().await.lost = true;
            }
        }
        debug!(worker = %self.me(), shard = %key, exit = ?outcome, "shard task ended");
        lock(&self.held).remove(&key);
    }

    async fn drive_shard(
        &self,
        key: &str,
        cell: &SharedLease,
        signal: &mut watch::Receiver<Signal>,
    ) -> ShardExit {
        let config = &self.config;
        let Some(checkpoint) = self.await_handoff(key, cell, signal).await else {
            let current = *signal.borrow();
            return match current {
                Signal::Shutdown => ShardExit::Shutdown,
                Signal::Handoff => ShardExit::HandedOff,
                Signal::Run | Signal::LeaseLost => ShardExit::LeaseLost,
            };
        };
        cell.lock().await.checkpoint = checkpoint.clone();
        if checkpoint.is_shard_end() {
            return ShardExit::Finished;
        }
        // Parent before child.
        let mut snapshots = self.snapshot.subscribe();
        let mut waited = false;
        let mut warned_missing = false;
        let mut synced_for_unknown = false;
        loop {
            match self.parents_ready(key) {
                Readiness::Ready => break,
                Readiness::Waiting => {}
                Readiness::Unknown {
                    parents,
                    shard_listed,
                } => {
                    if !shard_listed && !synced_for_unknown {
                        // The listing predates this shard: a fresh one can tell whether the
                        // parents left retention, and shard sync creates their rows if not.
                        self.sync_now.notify_one();
                        synced_for_unknown = true;
                    }
                    if !warned_missing {
                        // Unlike KCL, a parent without a row and without evidence that it was
                        // drained is unknown, not drained: the child waits.
                        warn!(worker = %self.me(), shard = %key, parents = ?parents, shard_listed,
                              "parent lease rows missing and no evidence that the parents were drained; child waits");
                        warned_missing = true;
                    }
                }
            }
            if !waited {
                debug!(worker = %self.me(), shard = %key, "waiting for parent shards to reach SHARD_END");
                waited = true;
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return ShardExit::LeaseLost; },
                r = signal.changed() => match (r.is_ok(), *signal.borrow()) {
                    (false, _) | (_, Signal::LeaseLost) => return ShardExit::LeaseLost,
                    (_, Signal::Shutdown) => return ShardExit::Shutdown,
                    (_, Signal::Handoff) => return ShardExit::HandedOff,
                    (_, Signal::Run) => {}
                },
            }
        }

        let mut processor = self.factory.create(key);
        let Some(start) = StartPosition::from_checkpoint(&checkpoint, config.at_timestamp()) else {
            warn!(worker = %self.me(), shard = %key, checkpoint = %checkpoint, "unsupported checkpoint; not processing");
            return ShardExit::Shutdown;
        };
        processor
            .initialize(InitInput {
                shard_id: key.to_owned(),
                checkpoint: checkpoint.clone(),
            })
            .await;
        info!(worker = %self.me(), shard = %key, checkpoint = %checkpoint, "processing shard");

        let mut checkpointer = Checkpointer {
            store: Some(self.store.clone()),
            lease_key: key.to_owned(),
            worker_id: self.me().to_owned(),
            failover: config.failover,
            cell: Arc::clone(cell),
            last_delivered: Arc::default(),
            ended_children: None,
        };
        let pacer = ReadPacer {
            idle_interval: config.idle_poll_interval,
        };
        let mut position = start;
        let mut iterator: Option<String> = None;
        let mut attempt = 0u32;
        let mut next_call = tokio::time::Instant::now();

        loop {
            let current = *signal.borrow();
            match current {
                Signal::LeaseLost => {
                    processor.lease_lost().await;
                    return ShardExit::LeaseLost;
                }
                Signal::Shutdown => {
                    processor.shutdown_requested(&checkpointer).await;
                    return ShardExit::Shutdown;
                }
                Signal::Handoff => {
                    processor.shutdown_requested(&checkpointer).await;
                    return ShardExit::HandedOff;
                }
                Signal::Run => {}
            }
            let (lost, handoff) = {
                let c = cell.lock().await;
                (c.lost || !c.tenure.is_valid(Instant::now()), c.handoff)
            };
            if lost {
                processor.lease_lost().await;
                return ShardExit::LeaseLost;
            }
            if handoff {
                // A checkpoint found the lease stolen (before the renewer did): hand off now.
                processor.shutdown_requested(&checkpointer).await;
                return ShardExit::HandedOff;
            }
            match wait_or_signal(signal, next_call).await {
                None => {}
                Some(exit @ (ShardExit::Shutdown | ShardExit::HandedOff)) => {
                    processor.shutdown_requested(&checkpointer).await;
                    return exit;
                }
                Some(_) => {
                    processor.lease_lost().await;
                    return ShardExit::LeaseLost;
                }
            }
            let it = match &iterator {
                Some(it) => it.clone(),
                None => {
                    match reader::shard_iterator(&self.kinesis, &config.stream_name, key, &position)
                        .await
                    {
                        Ok(it) => {
                            debug!(worker = %self.me(), shard = %key, from = ?position, "got shard iterator");
                            iterator = Some(it.clone());
                            it
                        }
                        Err(e) => {
                            attempt += 1;
                            warn!(worker = %self.me(), shard = %key, error = %e, attempt, "getting shard iterator failed");
                            next_call = tokio::time::Instant::now()
                                + backoff(
                                    attempt,
                                    Duration::from_millis(200),
                                    Duration::from_secs(5),
                                );
                            continue;
                        }
                    }
                }
            };
            let call_started = Instant::now();
            match reader::get_records(&self.kinesis, key, &it, config.max_records_per_call).await {
                Ok(fetched) => {
                    attempt = 0;
                    let caught_up =
                        fetched.records.is_empty() || fetched.millis_behind_latest == Some(0);
                    next_call = tokio::time::Instant::from_std(pacer.next_call(
                        call_started,
                        fetched.bytes,
                        caught_up && fetched.next_iterator.is_some(),
                    ));
                    if !fetched.records.is_empty() {
                        // The wait and the call took time: check again right before dispatch,
                        // so no batch reaches the processor after the lease may have moved on.
                        match self.may_dispatch(cell, signal).await {
                            Dispatch::Go => {}
                            Dispatch::Lost => {
                                debug!(worker = %self.me(), shard = %key, records = fetched.records.len(),
                                       "lease lost while reading; batch not dispatched");
                                processor.lease_lost().await;
                                return ShardExit::LeaseLost;
                            }
                            Dispatch::Stop(exit) => {
                                processor.shutdown_requested(&checkpointer).await;
                                return exit;
                            }
                        }
                    }
                    if let Some(last) = fetched.records.last() {
                        position = StartPosition::After(last.sequence_number.clone());
                        checkpointer.set_batch_end(last.sequence_number.clone());
                        processor
                            .process_records(
                                RecordBatch {
                                    shard_id: key.to_owned(),
                                    records: fetched.records,
                                    millis_behind_latest: fetched.millis_behind_latest,
                                },
                                &checkpointer,
                            )
                            .await;
                    }
                    match fetched.next_iterator {
                        Some(next) => iterator = Some(next),
                        None => {
                            return self
                                .finish_shard(
                                    key,
                                    fetched.child_shards,
                                    &mut processor,
                                    &mut checkpointer,
                                    signal,
                                )
                                .await;
                        }
                    }
                }
                Err(e @ ReadError::Throttled { .. }) => {
                    attempt += 1;
                    debug!(worker = %self.me(), shard = %key, error = %e, attempt, "read throttled; backing off");
                    next_call = tokio::time::Instant::now()
                        + backoff(attempt, Duration::from_millis(500), Duration::from_secs(10));
                }
                Err(e) => {
                    // Expired or invalid iterator, or a transport error: resume after the last
                    // record handed to the processor (not the last checkpoint), so nothing is
                    // skipped and nothing is delivered twice by this worker.
                    attempt += 1;
                    warn!(worker = %self.me(), shard = %key, error = %e, attempt, "reading failed; renewing iterator");
                    iterator = None;
                    next_call = tokio::time::Instant::now()
                        + backoff(attempt, Duration::from_millis(200), Duration::from_secs(5));
                }
            }
        }
    }

    /// The check right before a batch is dispatched: the tenure is valid now, and no signal says
    /// otherwise.
    async fn may_dispatch(&self, cell: &SharedLease, signal: &watch::Receiver<Signal>) -> Dispatch {
        let current = *signal.borrow();
        match current {
            Signal::LeaseLost => return Dispatch::Lost,
            Signal::Shutdown => return Dispatch::Stop(ShardExit::Shutdown),
            Signal::Handoff => return Dispatch::Stop(ShardExit::HandedOff),
            Signal::Run => {}
        }
        let c = cell.lock().await;
        if c.lost || !c.tenure.is_valid(Instant::now()) {
            Dispatch::Lost
        } else if c.handoff {
            Dispatch::Stop(ShardExit::HandedOff)
        } else {
            Dispatch::Go
        }
    }

    async fn finish_shard(
        &self,
        key: &str,
        children: Vec<reader::ChildShardInfo>,
        processor: &mut F::Processor,
        checkpointer: &mut Checkpointer,
        signal: &mut watch::Receiver<Signal>,
    ) -> ShardExit {
        info!(worker = %self.me(), shard = %key, children = ?children.iter().map(|c| &c.shard_id).collect::<Vec<_>>(), "shard ended");
        // Children's leases right away (KCL does the same), so they do not wait for a shard sync.
        let mut has_row = std::collections::HashSet::new();
        for parent in children.iter().flat_map(|c| c.parents.iter()) {
            if parent != key && !has_row.contains(parent) {
                match self.store.get(parent).await {
                    Ok(Some(_)) => {
                        has_row.insert(parent.clone());
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(worker = %self.me(), shard = %parent, error = %e, "reading a co-parent's lease failed");
                    }
                }
            }
        }
        let rows = child_rows(key, &children, |p| p == key || has_row.contains(p));
        for lease in &rows.create {
            if let Err(e) = self.store.create_if_absent(lease).await {
                warn!(worker = %self.me(), shard = %lease.lease_key, error = %e, "creating child lease failed; shard sync will retry");
                self.sync_now.notify_one();
            }
        }
        if !rows.deferred.is_empty() {
            info!(worker = %self.me(), shard = %key, children = ?rows.deferred,
                  "children left to shard sync: another parent has no lease row yet");
            self.sync_now.notify_one();
        }
        checkpointer.ended_children = Some(children.into_iter().map(|c| c.shard_id).collect());
        let mut attempt = 0;
        loop {
            processor.shard_ended(checkpointer).await;
            let c = checkpointer.cell.lock().await;
            if c.checkpoint.is_shard_end() {
                return ShardExit::Finished;
            }
            if c.lost {
                drop(c);
                processor.lease_lost().await;
                return ShardExit::LeaseLost;
            }
            drop(c);
            attempt += 1;
            error!(worker = %self.me(), shard = %key, attempt,
                   "processor returned from shard_ended without checkpointing SHARD_END; children stay blocked; retrying");
            let until = tokio::time::Instant::now()
                + backoff(attempt, Duration::from_millis(500), Duration::from_secs(30));
            match wait_or_signal(signal, until).await {
                None => {}
                Some(exit @ (ShardExit::Shutdown | ShardExit::HandedOff)) => {
                    processor.shutdown_requested(checkpointer).await;
                    return exit;
                }
                Some(exit) => {
                    processor.lease_lost().await;
                    return exit;
                }
            }
        }
    }
}

/// Whether a fetched batch may go to the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    Go,
    /// The tenure lapsed or the lease was lost.
    Lost,
    /// Asked to stop (shutdown or handoff): the batch is not delivered, the checkpoint stays at
    /// what was, so the next owner reads it.
    Stop(ShardExit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardExit {
    Finished,
    LeaseLost,
    Shutdown,
    HandedOff,
}

/// Sleeps until `until` unless a signal other than `Run` arrives first.
async fn wait_or_signal(
    signal: &mut watch::Receiver<Signal>,
    until: tokio::time::Instant,
) -> Option<ShardExit> {
    loop {
        let current = *signal.borrow();
        match current {
            Signal::LeaseLost => return Some(ShardExit::LeaseLost),
            Signal::Shutdown => return Some(ShardExit::Shutdown),
            Signal::Handoff => return Some(ShardExit::HandedOff),
            Signal::Run => {}
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return None,
            r = signal.changed() => if r.is_err() { return Some(ShardExit::LeaseLost); },
        }
    }
}
