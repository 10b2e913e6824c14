//! Ordered Kinesis consumer with a KCL-compatible lease table.
//!
//! A fleet of [`Worker`]s shares a stream's shards through a DynamoDB lease table. Each worker
//! runs one task per shard it holds; the task reads the shard with `GetRecords` and hands the
//! batches, in order, to that shard's [`ShardProcessor`](processor::ShardProcessor). Children of a
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
//! # Modules
//!
//! * [`lease`]: the lease row (KCL single-stream schema) and [`Checkpoint`].
//! * [`ownership`]: the lease rules as a pure state machine (expiry, take, steal, balance,
//!   tenure). No I/O, `now` is passed in; property-tested.
//! * [`drain`]: parent-before-child and the rows created at a shard's end, as pure functions over
//!   the drain rule the controller's gate shares ([`shardctl_lease`]).
//! * [`store`]: the lease table in DynamoDB; every take, steal, renew, checkpoint and release is a
//!   conditional write, and every call is bounded in time.
//! * [`shards`]: `ListShards` and the pure shard-sync plan (which lease rows must exist).
//! * [`reader`]: `GetRecords` within the per-shard limits (5 calls/s, 2 MiB/s), back-off.
//! * [`worker`]: the loops that tie it together.
//! * [`processor`]: the callbacks an application implements and the [`Checkpointer`](processor::Checkpointer).
//! * [`dedup`]: drops already-processed event ids (DynamoDB with an in-memory front).
//! * [`producer`]: batched `PutRecords` with event ids, retrying only failed records, keeping
//!   per-key order.
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
//! * KPL aggregates are split into their user records as KCL splits them (see
//!   [`reader::deaggregate`]); a checkpoint can sit within an aggregate and the next owner
//!   resumes right after it. Enhanced fan-out ([`Retrieval::FanOut`]) keeps every guarantee
//!   above. Metrics: [`ConsumerMetrics`].

pub mod dedup;
pub mod drain;
mod fanout;
pub mod lease;
mod metrics;
pub mod ownership;
pub mod processor;
pub mod producer;
pub mod reader;
pub mod shards;
pub mod store;
pub mod worker;

pub use fanout::{FanOutError, Retrieval};
pub use lease::{Checkpoint, Lease};
pub use metrics::ConsumerMetrics;
pub use worker::{Worker, WorkerConfig, WorkerError};
