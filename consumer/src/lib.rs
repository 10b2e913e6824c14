//! Ordered Kinesis consumer with a KCL-compatible lease table.
//!
//! ```
//! use shardctl_consumer::{Checkpoint, Lease};
//! let lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
//! assert!(!lease.is_finished());
//! ```

pub mod drain;
pub mod lease;
pub mod ownership;

pub use lease::{Checkpoint, Lease};
