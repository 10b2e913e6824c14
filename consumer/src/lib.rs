//! Ordered Kinesis consumer with a KCL-compatible lease table.
//!
//! ```
//! use shardctl_consumer::{Checkpoint, Lease};
//! let lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
//! assert!(!lease.is_finished());
//! ```

pub mod dedup;
pub mod drain;
pub mod lease;
pub mod ownership;
pub mod processor;
pub mod producer;
pub mod reader;
pub mod shards;
pub mod store;
pub mod worker;

pub use lease::{Checkpoint, Lease};
pub use worker::{Worker, WorkerConfig, WorkerError};
