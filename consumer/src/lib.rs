//! Ordered Kinesis consumer with a KCL-compatible lease table.
//!
//! A fleet of [`Worker`]s shares a stream's shards through a DynamoDB lease table. Each worker
//! runs one task per shard it holds; the task reads the shard with `GetRecords` and hands the
//! batches, in order, to that shard's [`ShardProcessor`]. Children of a
//! split or merge start only after every parent checkpointed `SHARD_END`, so the events of one
//! partition key (an organisation) are processed in order across resharding.
//!
//! ```no_run
//! use aws_config::BehaviorVersion;
//! use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
//! use shardctl_consumer::producer::event_payload;
//! use shardctl_consumer::{Worker, WorkerConfig};
//!
//! struct PrintOrgEvents;
//!
//! impl ShardProcessor for PrintOrgEvents {
//!     async fn initialize(&mut self, input: InitInput) {
//!         println!("{} resumes after {}", input.shard_id, input.checkpoint);
//!     }
//!     async fn process_records(&mut self, batch: RecordBatch, checkpointer: &Checkpointer) {
//!         for r in &batch.records {
//!             println!("{}: {}", r.partition_key, String::from_utf8_lossy(event_payload(&r.data)));
//!         }
//!         // At the batch end; `checkpoint_at(&record)` checkpoints after one record.
//!         if let Err(e) = checkpointer.checkpoint().await {
//!             eprintln!("checkpoint: {e}");
//!         }
//!     }
//!     async fn shard_ended(&mut self, checkpointer: &Checkpointer) {
//!         // Required: children of this shard wait for it.
//!         let _ = checkpointer.checkpoint_shard_end().await;
//!     }
//! }
//!
//! # async fn run() -> Result<(), shardctl_consumer::WorkerError> {
//! // Endpoints, region and credentials from the standard AWS environment
//! // (AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL_DYNAMODB point it at emulators).
//! let aws = aws_config::defaults(BehaviorVersion::latest()).load().await;
//! let worker = Worker::start(
//!     WorkerConfig::new("events", "events-printer"),
//!     aws_sdk_kinesis::Client::new(&aws),
//!     aws_sdk_dynamodb::Client::new(&aws),
//!     |_shard: &str| PrintOrgEvents,
//! )
//! .await?;
//! tokio::signal::ctrl_c().await.ok();
//! worker.shutdown().await; // checkpoint, release: the next owner resumes exactly here
//! # Ok(()) }
//! ```
//!
//! # The API
//!
//! What an application uses is re-exported here: [`Worker`] and [`WorkerConfig`] (with
//! [`Retrieval`], [`InitialPosition`], [`ConsumerMetrics`]), the callbacks it implements
//! ([`ShardProcessor`], [`Checkpointer`], [`RecordBatch`], [`Record`]), the [`Producer`] and its
//! event envelope, and [`DedupStore`]. The modules [`processor`], [`producer`] and [`dedup`]
//! hold the rest of their items. The crate's workings (the lease rules, the drain rule, the
//! lease store, the reader, shard sync) are internal: public only for the crate's own
//! integration tests and benchmarks, hidden from these docs, and they may change in any
//! release. `consumer/public-api.txt` lists the supported API; a test fails when it changes
//! unnoticed.
//!
//! Inside: `lease` (the KCL lease row), `ownership` (the lease rules as a pure, property-tested
//! state machine), `drain` (parent-before-child over the drain rule the controller's gate
//! shares, [`shardctl_lease`]), `store` (the lease table: every write conditional, every call
//! bounded), `shards` (`ListShards` and shard sync), `reader` (`GetRecords` within the per-shard
//! limits, KPL de-aggregation), `fanout` (`SubscribeToShard`), `worker` (the loops).
//!
//! # Guarantees and their limits
//!
//! * At least once: nothing is skipped. A record is processed again only when its shard's lease
//!   moves without a handoff (a worker died, stalled or was cut off) and the record came after
//!   the last checkpoint; [`dedup`] removes those replays. Shard sync creates a lease for every
//!   shard unless the drain rule has evidence that it was read (see below), so no shard is left
//!   out.
//! * Per-shard order, and per-key order across splits and merges, also while the fleet lags
//!   behind the stream: a child starts after every parent is drained, and "drained" needs
//!   evidence that cannot be stale: the parent's lease at `SHARD_END`, or its row deleted under
//!   KCL's cleanup precondition (a descendant's lease past its start), or a listing that shows a
//!   child of it but not the parent itself (it left retention). A parent missing from a listing
//!   that may be older than it is unknown, not drained. Child rows are created in lineage
//!   order. (KCL treats any missing row as drained, KCL issue #150.)
//! * One processor per shard at a time: two workers never both believe they hold a lease (see
//!   [`ownership`]); take and steal are one conditional write on the row as scanned (counter,
//!   owner, handoff marker), so a stale plan cannot land; a steal lets the previous owner
//!   checkpoint before the new one starts. A batch is dispatched only after the tenure was
//!   checked right before it, and every lease-table call is bounded, so neither a worker paused
//!   past its lease nor a hung call makes it process alongside the next owner. The limit: a
//!   `process_records` call that is still running when the tenure ends (a stalled process, a
//!   call longer than the failover time) overlaps the next owner; checkpoints in it fail with
//!   `LeaseLost` from that moment.
//! * Checkpoints never go backwards nor past the last record delivered, and the last checkpoint
//!   of a handoff is conditional on the lease counter.
//! * A dead worker's shards move after the failover time (default 10 s) plus at most two lease
//!   scans (an eighth of it each). One hung lease-table call costs one renewal attempt of one
//!   lease, not the leases.
//! * KPL aggregates are split into their user records as KCL splits them; a checkpoint can sit within an aggregate and the next owner
//!   resumes right after it. Enhanced fan-out ([`Retrieval::FanOut`]) keeps every guarantee
//!   above. Metrics: [`ConsumerMetrics`].

pub mod dedup;
mod fanout;
mod metrics;
pub mod processor;
pub mod producer;

#[doc(hidden)]
pub mod drain;
#[doc(hidden)]
pub mod lease;
#[doc(hidden)]
pub mod ownership;
#[doc(hidden)]
pub mod reader;
#[doc(hidden)]
pub mod shards;
#[doc(hidden)]
pub mod store;
mod worker;

pub use dedup::DedupStore;
pub use fanout::{FanOutError, Retrieval};
#[doc(inline)]
pub use lease::{Checkpoint, Lease};
pub use metrics::ConsumerMetrics;
pub use processor::{
    CheckpointError, Checkpointer, InitInput, ProcessorFactory, Record, RecordBatch, ShardProcessor,
};
pub use producer::{
    Event, ProduceError, Producer, SendReport, encode_event, event_id, event_payload,
};
pub use worker::{InitialPosition, Worker, WorkerConfig, WorkerError};
