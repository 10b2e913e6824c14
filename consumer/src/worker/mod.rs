//! The worker: shard sync, lease taking and renewal, one ordered reader task per held shard.
//!
//! `config`: the settings. `coordinator`: shard sync, lease scans, taking and stealing,
//! renewal, cleanup and graceful shutdown. `shard_task`: one task per held shard, reading it in
//! order and handing batches to the processor.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, Span, debug, error, info, info_span, warn};

use crate::drain::{Lineage, Readiness, ScannedRows, child_rows, lineage_of, readiness};
use crate::fanout::{self, FanOutError, Retrieval, Subscription};
use crate::lease::{Checkpoint, Lease};
use crate::ownership::{AcquireKind, LeaseObserver, Tenure, plan_acquisitions};
use crate::processor::{
    Checkpointer, InitInput, LeaseCell, ProcessorFactory, RecordBatch, ShardProcessor, SharedLease,
};
use crate::reader::{self, ReadError, ReadPacer, StartPosition, backoff};
use crate::shards::{ListShardsError, list_shards, plan_shard_sync};
use crate::store::{LeaseStore, LeaseStoreError};

mod config;
mod coordinator;
mod shard_task;

pub use config::{InitialPosition, WorkerConfig};

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
    /// Enhanced fan-out was asked for and its stream consumer could not be registered or found.
    #[error(transparent)]
    FanOut(#[from] FanOutError),
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
            Self::FanOut(_) => "fan_out",
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
    /// The stream consumer's ARN when reading with enhanced fan-out.
    consumer_arn: Option<String>,
    /// The `worker` span every task of this worker runs in (shard tasks in a child `shard` span).
    span: Span,
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
        let consumer_arn = match &config.retrieval {
            Retrieval::Polling => None,
            Retrieval::FanOut { consumer_name } => {
                Some(fanout::ensure_consumer(&kinesis, &config.stream_name, consumer_name).await?)
            }
        };
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
        let span = info_span!("worker", worker = %config.worker_id);
        let inner = Arc::new(Inner {
            config,
            store,
            kinesis,
            factory,
            held: StdMutex::new(HashMap::new()),
            snapshot,
            sync_now: Notify::new(),
            consumer_arn,
            span,
        });
        let listed = inner.shard_sync().instrument(inner.span.clone()).await?;
        inner.snapshot.send_modify(|s| {
            let mut next = Snapshot {
                listed: Some(listed),
                ..Snapshot::default()
            };
            next.leases = s.leases.clone();
            *s = Arc::new(next);
        });
        inner.span.in_scope(|| {
            info!(stream = %inner.config.stream_name, table = %inner.config.table_name,
                  failover_ms = inner.config.failover.as_millis() as u64, "worker started")
        });
        let (stop, stop_rx) = watch::channel(false);
        let coordinator = tokio::spawn(
            Arc::clone(&inner)
                .coordinate(stop_rx)
                .instrument(inner.span.clone()),
        );
        let for_shutdown = Arc::clone(&inner);
        Ok(Self {
            worker_id: inner.config.worker_id.clone(),
            held: inner,
            coordinator,
            stop,
            shutdown_all: Box::new(move || {
                let span = for_shutdown.span.clone();
                Box::pin(for_shutdown.graceful_shutdown().instrument(span))
            }),
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
