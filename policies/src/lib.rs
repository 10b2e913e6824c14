//! The pure core of shardctl: the policy model, shard map and hash arithmetic, observations,
//! history, and the planner that turns them into an explained list of `SplitShard` /
//! `MergeShards` operations.
//!
//! Nothing here does I/O, reads a clock or spawns a task: the same inputs give the same plan.
//!
//! ```
//! use shardctl_policies::{load_policy, plan, History, Snapshot};
//!
//! let policy = load_policy(include_str!("../examples/telecom-org-events.yaml"), "telecom.yaml")?;
//! let snapshot: Snapshot = serde_json::from_str(include_str!("../examples/snapshots/telecom-hot-org.json"))?;
//! let stream = policy.stream(&snapshot.observation.stream_name).expect("policy names the stream");
//! let decision = plan(stream, &snapshot.observation, &snapshot.history, snapshot.observation.observed_at)?;
//! for op in &decision.operations {
//!     println!("{op}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod budget;
pub mod duration;
pub mod fixture;
pub mod hash;
pub mod history;
pub mod key_sample;
pub mod observation;
pub mod plan;
pub mod policy;
pub mod rate;
pub mod schema;
pub mod shard_map;
pub mod snapshot;
pub mod validate;

pub use duration::HumanDuration;
pub use hash::{HashKey, HashRange, MAX_HASH_KEY};
pub use history::{History, OperationKind, OperationOutcome, OperationRecord};
pub use observation::{
    Checkpoint, ConsumerGroupState, KeyDistribution, Observation, ShardMetrics, StreamStatus,
};
pub use plan::{Decision, HeldCandidate, Limit, PlanError, PlannedOperation, plan};
pub use policy::{PolicyFile, StreamPolicy};
pub use shard_map::{Shard, ShardMap, ShardMapError, ShardState};
pub use snapshot::Snapshot;
pub use validate::{PolicyError, PolicyIssue, load_policy};
