//! The lease row and checkpoint: the one lease model shared with shardctl's drain gate lives in
//! [`shardctl_lease`]; this module re-exports it.
//!
//! [`crate::store`] maps it to and from DynamoDB items with exactly the attribute names and types
//! the Kinesis Client Library writes, so a table written by a KCL fleet and one written by this
//! library read the same.

pub use shardctl_lease::{Checkpoint, CheckpointError, Lease, attr};
