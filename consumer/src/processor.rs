//! The processor API: what the application implements, one instance per shard lease.
//!
//! The worker calls, for each shard it holds, in this order:
//!
//! 1. [`ShardProcessor::initialize`] once, with the checkpoint processing starts after;
//! 2. [`ShardProcessor::process_records`] for every batch, strictly in shard order, never
//!    concurrently;
//! 3. exactly one of
//!    * [`ShardProcessor::shard_ended`]: the shard is closed and fully read. The processor **must**
//!      call [`Checkpointer::checkpoint_shard_end`]. If it does not, the lease is not marked
//!      `SHARD_END`, the child shards stay blocked, and the worker calls `shard_ended` again after
//!      a back-off, for as long as it holds the lease;
//!    * [`ShardProcessor::lease_lost`]: another worker owns the shard now; checkpointing is no
//!      longer possible, and records after the last checkpoint will be processed again elsewhere;
//!    * [`ShardProcessor::shutdown_requested`]: the worker is shutting down gracefully; checkpoint
//!      what was processed, then the worker releases the lease so the next owner starts exactly
//!      there.
//!
//! Over 500 lines by choice: a third is documentation with examples (it is the page an
//! application author reads); the checkpoint rules belong beside the trait they serve.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::Mutex;
use tracing::warn;

use crate::lease::Checkpoint;
use crate::ownership::Tenure;
use crate::store::{LeaseStore, LeaseStoreError};

/// One record as the processor sees it: a Kinesis record, or one user record of a KPL aggregate
/// (see [`WorkerConfig::deaggregate`](crate::WorkerConfig::deaggregate)).
///
/// Its position in the shard is (`sequence_number`, `sub_sequence_number`): the user records of
/// one aggregate share the aggregate's sequence number and are numbered 0, 1, 2, ... after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number (decimal string, unique within the shard, increasing); for a user record
    /// of an aggregate, the aggregate's.
    pub sequence_number: String,
    /// Position within the aggregate (0 for a record that is not a user record of one).
    pub sub_sequence_number: u64,
    /// Whether this is a user record taken out of a KPL aggregate (KCL's `aggregated()`).
    pub aggregated: bool,
    /// Partition key the producer gave this record (a user record's own key, not the
    /// aggregate's).
    pub partition_key: String,
    /// Explicit hash key of a user record of an aggregate, if its producer set one. Kinesis does
    /// not return the explicit hash key of a plain record.
    pub explicit_hash_key: Option<String>,
    /// Payload.
    pub data: Bytes,
    /// When Kinesis accepted the record (for a user record, its aggregate), if reported.
    pub approximate_arrival: Option<SystemTime>,
}

/// What [`ShardProcessor::initialize`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitInput {
    /// The shard this processor instance serves.
    pub shard_id: String,
    /// Processing continues after this checkpoint (`TRIM_HORIZON` for a new shard).
    pub checkpoint: Checkpoint,
}

/// One `GetRecords` result, in shard order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// The shard the records come from.
    pub shard_id: String,
    /// Records, in sequence-number order.
    pub records: Vec<Record>,
    /// How far behind the tip of the shard this batch is, if reported.
    pub millis_behind_latest: Option<i64>,
}

/// Errors of [`Checkpointer`] calls.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The lease is no longer ours (or its tenure lapsed); nothing was written.
    #[error("lease {lease_key} is no longer held by this worker")]
    LeaseLost {
        /// Shard id.
        lease_key: String,
    },
    /// `SHARD_END` can only be written from [`ShardProcessor::shard_ended`].
    #[error("shard {lease_key} has not ended; SHARD_END cannot be checkpointed")]
    ShardNotEnded {
        /// Shard id.
        lease_key: String,
    },
    /// The position is before the lease's current checkpoint (KCL refuses it too). Positions
    /// are (sequence number, sub-sequence number) pairs, shown as `sequence.sub` when the
    /// sub-sequence number is not 0.
    #[error("checkpoint {requested} on {lease_key} is before its current checkpoint {current}")]
    Backwards {
        /// Shard id.
        lease_key: String,
        /// The position asked for.
        requested: String,
        /// The checkpoint the lease has.
        current: String,
    },
    /// The position is past the last record handed to the processor (KCL refuses it too): a
    /// checkpoint there would skip records nobody processed.
    #[error(
        "checkpoint {requested} on {lease_key} is past the last record delivered ({})",
        delivered.as_deref().unwrap_or("none yet")
    )]
    BeyondDelivered {
        /// Shard id.
        lease_key: String,
        /// The position asked for.
        requested: String,
        /// The position of the last record delivered, if any.
        delivered: Option<String>,
    },
    /// The value is not a Kinesis sequence number (1 to 128 decimal digits).
    #[error("`{value}` is not a sequence number (checkpoint on {lease_key})")]
    InvalidSequenceNumber {
        /// Shard id.
        lease_key: String,
        /// The value, shortened.
        value: String,
    },
    /// The store failed; the checkpoint may or may not be written. Retrying is safe.
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
}

impl CheckpointError {
    /// Fixed label for metrics.
    ///
    /// ```
    /// use shardctl_consumer::processor::CheckpointError;
    /// assert_eq!(CheckpointError::LeaseLost { lease_key: "s".into() }.label(), "lease_lost");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Self::LeaseLost { .. } => "lease_lost",
            Self::ShardNotEnded { .. } => "shard_not_ended",
            Self::Backwards { .. } => "checkpoint_backwards",
            Self::BeyondDelivered { .. } => "checkpoint_beyond_delivered",
            Self::InvalidSequenceNumber { .. } => "invalid_sequence_number",
            Self::Store(e) => e.label(),
        }
    }
}

/// The state shared by the renewer and the checkpointer of one held lease. Writes to the lease
/// are serialized through its mutex so that each one is conditional on the latest counter.
#[derive(Debug)]
pub(crate) struct LeaseCell {
    pub(crate) tenure: Tenure,
    pub(crate) lost: bool,
    /// The lease was stolen with a graceful handoff: we may write one last checkpoint.
    pub(crate) handoff: bool,
    /// We stole the lease and wait for its previous owner's last checkpoint (KCL 3's graceful
    /// handoff: the previous owner is the real owner until it clears `checkpointOwner`), so we
    /// neither renew nor process yet.
    pub(crate) awaiting_handoff: bool,
    pub(crate) checkpoint: Checkpoint,
}

pub(crate) type SharedLease = Arc<Mutex<LeaseCell>>;

/// Writes checkpoints for one shard. Cheap to clone.
///
/// ```no_run
/// # async fn demo(checkpointer: shardctl_consumer::processor::Checkpointer,
/// #               batch: shardctl_consumer::processor::RecordBatch)
/// #   -> Result<(), shardctl_consumer::processor::CheckpointError> {
/// // after handling every record of the batch:
/// checkpointer.checkpoint().await?;
/// // or after one record (for a user record of an aggregate: after it, within the aggregate):
/// checkpointer.checkpoint_at(&batch.records[0]).await?;
/// # Ok(()) }
/// ```
///
/// Only the worker records what was delivered, so an application cannot make it checkpoint
/// records it never received:
///
/// ```compile_fail
/// let mut c = shardctl_consumer::processor::Checkpointer::unleased("shardId-000000000000");
/// c.set_batch_end("42", 0);
/// ```
#[derive(Debug, Clone)]
pub struct Checkpointer {
    /// `None` for an [unleased](Checkpointer::unleased) checkpointer.
    pub(crate) store: Option<LeaseStore>,
    pub(crate) lease_key: String,
    pub(crate) worker_id: String,
    pub(crate) failover: std::time::Duration,
    pub(crate) cell: SharedLease,
    /// Position of the last record handed to the processor (batch end), shared by clones.
    pub(crate) last_delivered: Arc<StdMutex<Option<(String, u64)>>>,
    /// Set when the shard ended: child shard ids to record with `SHARD_END`.
    pub(crate) ended_children: Option<BTreeSet<String>>,
}

impl Checkpointer {
    /// Checkpoints at the end of the last batch handed to the processor.
    ///
    /// ```no_run
    /// # async fn demo(c: shardctl_consumer::processor::Checkpointer) -> Result<(), shardctl_consumer::processor::CheckpointError> {
    /// c.checkpoint().await?;
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint(&self) -> Result<(), CheckpointError> {
        match self.delivered() {
            Some((seq, sub)) => self.checkpoint_sub_sequence(&seq, sub).await,
            None => Ok(()),
        }
    }

    fn delivered(&self) -> Option<(String, u64)> {
        self.last_delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Checkpoints after `record`: processing resumes with the record that follows it, also
    /// within an aggregate (the checkpoint is at its sequence and sub-sequence number).
    ///
    /// ```no_run
    /// # async fn demo(c: shardctl_consumer::processor::Checkpointer, r: shardctl_consumer::processor::Record) -> Result<(), shardctl_consumer::processor::CheckpointError> {
    /// c.checkpoint_at(&r).await?;
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint_at(&self, record: &Record) -> Result<(), CheckpointError> {
        self.checkpoint_sub_sequence(&record.sequence_number, record.sub_sequence_number)
            .await
    }

    /// Checkpoints after the record with `sequence_number` (sub-sequence number 0, as KCL's
    /// `checkpoint(sequenceNumber)`: for an aggregate, after its first user record only). It
    /// must be a sequence number, not before the current checkpoint
    /// ([`CheckpointError::Backwards`]) and not past the last record delivered
    /// ([`CheckpointError::BeyondDelivered`]), as KCL requires.
    ///
    /// ```no_run
    /// # async fn demo(c: shardctl_consumer::processor::Checkpointer) -> Result<(), shardctl_consumer::processor::CheckpointError> {
    /// c.checkpoint_sequence("49590338271490256608559692538361571095921575989136588898").await?;
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint_sequence(&self, sequence_number: &str) -> Result<(), CheckpointError> {
        self.checkpoint_sub_sequence(sequence_number, 0).await
    }

    /// Checkpoints after user record `sub_sequence_number` of the aggregate at
    /// `sequence_number` (KCL's `checkpoint(sequenceNumber, subSequenceNumber)`); written to the
    /// lease's `checkpoint` and `checkpointSubSequenceNumber`. The same rules as
    /// [`Checkpointer::checkpoint_sequence`], on (sequence, sub-sequence) pairs.
    ///
    /// ```no_run
    /// # async fn demo(c: shardctl_consumer::processor::Checkpointer) -> Result<(), shardctl_consumer::processor::CheckpointError> {
    /// // The first 13 user records (0 to 12) of this aggregate are done.
    /// c.checkpoint_sub_sequence("49590338271490256608559692538361571095921575989136588898", 12).await?;
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint_sub_sequence(
        &self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<(), CheckpointError> {
        if self.store.is_none() {
            return Err(self.lost());
        }
        let requested = match Checkpoint::parse(sequence_number, sub_sequence_number) {
            Ok(c @ Checkpoint::Sequence { .. }) => c,
            Ok(_) | Err(_) => {
                return Err(CheckpointError::InvalidSequenceNumber {
                    lease_key: self.lease_key.clone(),
                    value: sequence_number.chars().take(40).collect(),
                });
            }
        };
        let delivered = self.delivered();
        if !delivered.as_ref().is_some_and(|(seq, sub)| {
            compare_positions((sequence_number, sub_sequence_number), (seq, *sub)).is_le()
        }) {
            return Err(CheckpointError::BeyondDelivered {
                lease_key: self.lease_key.clone(),
                requested: requested.to_string(),
                delivered: delivered.map(|(sequence_number, sub_sequence_number)| {
                    Checkpoint::Sequence {
                        sequence_number,
                        sub_sequence_number,
                    }
                    .to_string()
                }),
            });
        }
        self.write(requested, &BTreeSet::new()).await
    }

    /// Marks the shard as fully processed (`SHARD_END`, with its child shard ids). Only valid in
    /// [`ShardProcessor::shard_ended`]; children start once every parent has it.
    ///
    /// ```no_run
    /// # async fn demo(c: shardctl_consumer::processor::Checkpointer) -> Result<(), shardctl_consumer::processor::CheckpointError> {
    /// c.checkpoint_shard_end().await?;
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint_shard_end(&self) -> Result<(), CheckpointError> {
        match &self.ended_children {
            Some(children) => self.write(Checkpoint::ShardEnd, children).await,
            None => Err(CheckpointError::ShardNotEnded {
                lease_key: self.lease_key.clone(),
            }),
        }
    }

    /// A checkpointer not backed by any lease, for unit tests and benchmarks of processors: every
    /// write fails with [`CheckpointError::LeaseLost`] and nothing leaves the process.
    ///
    /// ```
    /// use shardctl_consumer::processor::{CheckpointError, Checkpointer};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let c = Checkpointer::unleased("shardId-000000000000");
    /// assert!(matches!(c.checkpoint_sequence("1").await, Err(CheckpointError::LeaseLost { .. })));
    /// # });
    /// ```
    pub fn unleased(shard_id: impl Into<String>) -> Self {
        let now = std::time::Instant::now();
        Self {
            store: None,
            lease_key: shard_id.into(),
            worker_id: String::new(),
            failover: std::time::Duration::ZERO,
            cell: Arc::new(Mutex::new(LeaseCell {
                tenure: Tenure::acquired(
                    0,
                    now,
                    std::time::Duration::ZERO,
                    crate::ownership::AcquireKind::Take,
                ),
                lost: true,
                handoff: false,
                awaiting_handoff: false,
                checkpoint: Checkpoint::TrimHorizon,
            })),
            last_delivered: Arc::default(),
            ended_children: None,
        }
    }

    /// Records the position of the last record handed to the processor; what
    /// [`Checkpointer::checkpoint`] writes and the furthest a checkpoint may go. Only the worker
    /// calls it, before each batch.
    pub(crate) fn set_batch_end(
        &mut self,
        sequence_number: impl Into<String>,
        sub_sequence_number: u64,
    ) {
        *self
            .last_delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((sequence_number.into(), sub_sequence_number));
    }

    /// The shard this checkpointer writes to.
    ///
    /// ```no_run
    /// # fn demo(c: shardctl_consumer::processor::Checkpointer) { println!("{}", c.shard_id()); }
    /// ```
    pub fn shard_id(&self) -> &str {
        &self.lease_key
    }

    async fn write(
        &self,
        checkpoint: Checkpoint,
        children: &BTreeSet<String>,
    ) -> Result<(), CheckpointError> {
        let mut cell = self.cell.lock().await;
        let sent = std::time::Instant::now();
        let Some(store) = &self.store else {
            return Err(self.lost());
        };
        if cell.lost || !cell.tenure.is_valid(sent) {
            return Err(self.lost());
        }
        if let Checkpoint::Sequence {
            sequence_number,
            sub_sequence_number,
        } = &checkpoint
        {
            let backwards = match &cell.checkpoint {
                Checkpoint::Sequence {
                    sequence_number: current,
                    sub_sequence_number: current_sub,
                } => compare_positions(
                    (sequence_number, *sub_sequence_number),
                    (current, *current_sub),
                )
                .is_lt(),
                Checkpoint::ShardEnd => true,
                Checkpoint::TrimHorizon | Checkpoint::Latest | Checkpoint::AtTimestamp => false,
            };
            if backwards {
                return Err(CheckpointError::Backwards {
                    lease_key: self.lease_key.clone(),
                    requested: checkpoint.to_string(),
                    current: cell.checkpoint.to_string(),
                });
            }
        }
        // A checkpoint never waits past the tenure: after it, the lease may be someone else's.
        let until = tokio::time::Instant::from_std(cell.tenure.valid_until());
        if cell.handoff {
            let write = self.handoff_write(store, &mut cell, checkpoint, children);
            return match tokio::time::timeout_at(until, write).await {
                Ok(result) => result,
                Err(_) => Err(self.lost()),
            };
        }
        let write = store.checkpoint(
            &self.lease_key,
            cell.tenure.counter,
            &self.worker_id,
            &checkpoint,
            children,
        );
        let Ok(result) = tokio::time::timeout_at(until, write).await else {
            cell.lost = true;
            return Err(self.lost());
        };
        match result {
            Ok(counter) => {
                cell.tenure.renewed(counter, sent, self.failover);
                cell.checkpoint = checkpoint;
                Ok(())
            }
            Err(e) if e.is_condition_failed() => {
                // Stolen? If the thief left us the handoff marker, write the last checkpoint there.
                match store.get(&self.lease_key).await {
                    Ok(Some(row)) if row.checkpoint_owner.as_deref() == Some(&self.worker_id) => {
                        cell.handoff = true;
                        self.handoff_write(store, &mut cell, checkpoint, children)
                            .await
                    }
                    _ => {
                        warn!(shard = %self.lease_key, worker = %self.worker_id, "checkpoint found the lease taken");
                        cell.lost = true;
                        Err(self.lost())
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn handoff_write(
        &self,
        store: &LeaseStore,
        cell: &mut LeaseCell,
        checkpoint: Checkpoint,
        children: &BTreeSet<String>,
    ) -> Result<(), CheckpointError> {
        match store
            .handoff_checkpoint(
                &self.lease_key,
                &self.worker_id,
                cell.tenure.counter,
                &checkpoint,
                children,
            )
            .await
        {
            Ok(()) => {
                cell.checkpoint = checkpoint;
                Ok(())
            }
            Err(e) if e.is_condition_failed() => {
                cell.lost = true;
                Err(self.lost())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn lost(&self) -> CheckpointError {
        CheckpointError::LeaseLost {
            lease_key: self.lease_key.clone(),
        }
    }
}

/// Orders two decimal sequence numbers by value (Kinesis' are up to 56 digits, beyond `u128`).
///
/// ```
/// use std::cmp::Ordering;
/// use shardctl_consumer::processor::compare_sequence_numbers;
/// assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
/// assert_eq!(compare_sequence_numbers("0042", "42"), Ordering::Equal);
/// ```
pub fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Orders two (sequence number, sub-sequence number) positions: by sequence number, then by
/// sub-sequence number (KCL's `ExtendedSequenceNumber` order).
pub(crate) fn compare_positions(a: (&str, u64), b: (&str, u64)) -> Ordering {
    compare_sequence_numbers(a.0, b.0).then(a.1.cmp(&b.1))
}

/// The application's per-shard logic, in the spirit of the KCL record processor.
///
/// Methods return futures that must be `Send`; implement them with `async fn`.
///
/// ```
/// use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
///
/// struct Printer;
///
/// impl ShardProcessor for Printer {
///     async fn initialize(&mut self, input: InitInput) {
///         println!("{} starts after {}", input.shard_id, input.checkpoint);
///     }
///     async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
///         for r in &batch.records {
///             println!("{} {}", r.partition_key, r.sequence_number);
///         }
///         if let Err(e) = checkpointer.checkpoint().await {
///             eprintln!("checkpoint failed: {e}");
///         }
///     }
///     async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
///         let _ = checkpointer.checkpoint_shard_end().await;
///     }
/// }
/// ```
pub trait ShardProcessor: Send + 'static {
    /// Called once before any batch.
    fn initialize(&mut self, input: InitInput) -> impl Future<Output = ()> + Send;

    /// Called for each batch, in order. Checkpoint with `checkpointer` when it suits the sink.
    fn process_records(
        &mut self,
        batch: RecordBatch,
        checkpointer: &Checkpointer,
    ) -> impl Future<Output = ()> + Send;

    /// The shard is closed and every record was delivered. Must call
    /// [`Checkpointer::checkpoint_shard_end`]; see the [module docs](self) for what happens if it
    /// does not.
    fn shard_ended(&mut self, checkpointer: &Checkpointer) -> impl Future<Output = ()> + Send;

    /// The lease moved to another worker; do not expect further calls.
    fn lease_lost(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The worker is shutting down gracefully. Checkpoint what was processed; the lease is released
    /// right after this returns. The default checkpoints at the end of the last batch delivered.
    fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> impl Future<Output = ()> + Send {
        async move {
            if let Err(e) = checkpointer.checkpoint().await {
                warn!(shard = %checkpointer.shard_id(), error = %e, "checkpoint on shutdown failed");
            }
        }
    }
}

/// Creates one processor per shard lease.
///
/// Any `Fn(&str) -> P + Send + Sync + 'static` is a factory:
///
/// ```
/// use shardctl_consumer::processor::{Checkpointer, InitInput, ProcessorFactory, RecordBatch, ShardProcessor};
/// struct Nop;
/// impl ShardProcessor for Nop {
///     async fn initialize(&mut self, _: InitInput) {}
///     async fn process_records(&mut self, _: RecordBatch, _: &Checkpointer) {}
///     async fn shard_ended(&mut self, c: &Checkpointer) { let _ = c.checkpoint_shard_end().await; }
/// }
/// let factory = |_shard: &str| Nop;
/// let _processor = factory.create("shardId-000000000000");
/// ```
pub trait ProcessorFactory: Send + Sync + 'static {
    /// The processor type.
    type Processor: ShardProcessor;
    /// A new processor for `shard_id`.
    fn create(&self, shard_id: &str) -> Self::Processor;
}

impl<F, P> ProcessorFactory for F
where
    F: Fn(&str) -> P + Send + Sync + 'static,
    P: ShardProcessor,
{
    type Processor = P;
    fn create(&self, shard_id: &str) -> P {
        self(shard_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn positions_order_by_sequence_then_sub_sequence() {
        assert_eq!(compare_positions(("10", 0), ("9", 24)), Ordering::Greater);
        assert_eq!(compare_positions(("10", 3), ("10", 12)), Ordering::Less);
        assert_eq!(compare_positions(("010", 12), ("10", 12)), Ordering::Equal);
    }

    #[tokio::test]
    async fn a_checkpoint_is_never_past_the_last_user_record_delivered() {
        // Unleased: a checkpoint inside what was delivered fails only on the lease; past it, on
        // the position, whatever the lease.
        let mut c = Checkpointer::unleased("shardId-000000000000");
        c.store = Some(crate::store::LeaseStore::new(
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::Config::builder()
                    .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                    .build(),
            ),
            "unused",
        ));
        c.set_batch_end("10", 24);
        let beyond = c.checkpoint_sub_sequence("10", 25).await.unwrap_err();
        assert_eq!(beyond.label(), "checkpoint_beyond_delivered");
        assert_eq!(
            beyond.to_string(),
            "checkpoint 10.25 on shardId-000000000000 is past the last record delivered (10.24)"
        );
        for (seq, sub) in [("10", 24), ("10", 0), ("9", 99)] {
            let err = c.checkpoint_sub_sequence(seq, sub).await.unwrap_err();
            assert_eq!(err.label(), "lease_lost", "{seq}.{sub}");
        }
    }
}
