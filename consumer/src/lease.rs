//! The lease row: one row per shard in the lease table, KCL single-stream schema.
//!
//! The model is plain data with no I/O. [`crate::store`] maps it to and from DynamoDB items using
//! exactly the attribute names and types the Kinesis Client Library writes, so a table written by a
//! KCL fleet and one written by this library read the same.

use std::collections::BTreeSet;
use std::fmt;

/// Attribute names of the KCL single-stream lease schema.
pub mod attr {
    /// Hash key, the shard id (`S`).
    pub const LEASE_KEY: &str = "leaseKey";
    /// Worker id of the current owner (`S`), absent when nobody owns the lease.
    pub const LEASE_OWNER: &str = "leaseOwner";
    /// Fencing counter (`N`), incremented by every take, renew, steal and checkpoint.
    pub const LEASE_COUNTER: &str = "leaseCounter";
    /// Sequence number or sentinel (`S`).
    pub const CHECKPOINT: &str = "checkpoint";
    /// Sub-sequence number of the checkpoint (`N`), 0 unless records are aggregated.
    pub const CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "checkpointSubSequenceNumber";
    /// Number of owner changes since the last checkpoint (`N`).
    pub const OWNER_SWITCHES_SINCE_CHECKPOINT: &str = "ownerSwitchesSinceCheckpoint";
    /// Parent shard ids (`SS`).
    pub const PARENT_SHARD_ID: &str = "parentShardId";
    /// Child shard ids (`SS`), written when the shard reaches its end.
    pub const CHILD_SHARD_IDS: &str = "childShardIds";
    /// First hash key of the shard (`S`, decimal).
    pub const STARTING_HASH_KEY: &str = "startingHashKey";
    /// Last hash key of the shard (`S`, decimal).
    pub const ENDING_HASH_KEY: &str = "endingHashKey";
    /// Graceful handoff marker (`S`): the previous owner of a stolen lease, allowed to write one
    /// last checkpoint before the new owner starts. Not part of the KCL 2 schema; KCL 2 readers
    /// ignore unknown attributes.
    pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
}

/// Where processing of a shard stands, as stored in the `checkpoint` attribute.
///
/// ```
/// use shardctl_consumer::Checkpoint;
/// assert_eq!(Checkpoint::parse("SHARD_END", 0), Checkpoint::ShardEnd);
/// assert_eq!(Checkpoint::ShardEnd.as_str(), "SHARD_END");
/// let cp = Checkpoint::parse("49590338271490256608559692538361571095921575989136588898", 0);
/// assert!(matches!(cp, Checkpoint::Sequence { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// Start from the oldest record still retained.
    TrimHorizon,
    /// Start from records written after the iterator is created.
    Latest,
    /// Start from a timestamp (KCL sentinel; this library does not create it).
    AtTimestamp,
    /// The shard was read to its end and the processor confirmed it. Children may start.
    ShardEnd,
    /// Processing continues after this record.
    Sequence {
        /// Kinesis sequence number (decimal string).
        sequence_number: String,
        /// Sub-sequence number within an aggregated record, 0 otherwise.
        sub_sequence_number: u64,
    },
}

impl Checkpoint {
    /// Sentinel string for [`Checkpoint::TrimHorizon`].
    pub const TRIM_HORIZON: &'static str = "TRIM_HORIZON";
    /// Sentinel string for [`Checkpoint::Latest`].
    pub const LATEST: &'static str = "LATEST";
    /// Sentinel string for [`Checkpoint::AtTimestamp`].
    pub const AT_TIMESTAMP: &'static str = "AT_TIMESTAMP";
    /// Sentinel string for [`Checkpoint::ShardEnd`].
    pub const SHARD_END: &'static str = "SHARD_END";

    /// Reads the stored `checkpoint` and `checkpointSubSequenceNumber` values.
    ///
    /// ```
    /// use shardctl_consumer::Checkpoint;
    /// assert_eq!(Checkpoint::parse("TRIM_HORIZON", 0), Checkpoint::TrimHorizon);
    /// ```
    pub fn parse(value: &str, sub_sequence_number: u64) -> Self {
        match value {
            Self::TRIM_HORIZON => Self::TrimHorizon,
            Self::LATEST => Self::Latest,
            Self::AT_TIMESTAMP => Self::AtTimestamp,
            Self::SHARD_END => Self::ShardEnd,
            other => Self::Sequence {
                sequence_number: other.to_owned(),
                sub_sequence_number,
            },
        }
    }

    /// The value stored in the `checkpoint` attribute.
    ///
    /// ```
    /// use shardctl_consumer::Checkpoint;
    /// assert_eq!(Checkpoint::Latest.as_str(), "LATEST");
    /// ```
    pub fn as_str(&self) -> &str {
        match self {
            Self::TrimHorizon => Self::TRIM_HORIZON,
            Self::Latest => Self::LATEST,
            Self::AtTimestamp => Self::AT_TIMESTAMP,
            Self::ShardEnd => Self::SHARD_END,
            Self::Sequence {
                sequence_number, ..
            } => sequence_number,
        }
    }

    /// The value stored in the `checkpointSubSequenceNumber` attribute.
    ///
    /// ```
    /// use shardctl_consumer::Checkpoint;
    /// assert_eq!(Checkpoint::ShardEnd.sub_sequence_number(), 0);
    /// ```
    pub fn sub_sequence_number(&self) -> u64 {
        match self {
            Self::Sequence {
                sub_sequence_number,
                ..
            } => *sub_sequence_number,
            _ => 0,
        }
    }

    /// True for [`Checkpoint::ShardEnd`].
    ///
    /// ```
    /// use shardctl_consumer::Checkpoint;
    /// assert!(Checkpoint::ShardEnd.is_shard_end());
    /// ```
    pub fn is_shard_end(&self) -> bool {
        matches!(self, Self::ShardEnd)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sequence {
                sequence_number,
                sub_sequence_number: 0,
            } => f.write_str(sequence_number),
            Self::Sequence {
                sequence_number,
                sub_sequence_number,
            } => write!(f, "{sequence_number}.{sub_sequence_number}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// One row of the lease table (KCL single-stream schema).
///
/// ```
/// use shardctl_consumer::{Checkpoint, Lease};
/// let lease = Lease::new("shardId-000000000002", Checkpoint::TrimHorizon)
///     .with_parents(["shardId-000000000000"]);
/// assert!(lease.lease_owner.is_none());
/// assert!(lease.parent_shard_ids.contains("shardId-000000000000"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `leaseKey`: the shard id.
    pub lease_key: String,
    /// `leaseOwner`: the worker that holds the lease, `None` when free.
    pub lease_owner: Option<String>,
    /// `leaseCounter`: fencing token; every write that changes ownership or progress is
    /// conditional on it and increments it.
    pub lease_counter: u64,
    /// `checkpoint` + `checkpointSubSequenceNumber`.
    pub checkpoint: Checkpoint,
    /// `ownerSwitchesSinceCheckpoint`.
    pub owner_switches_since_checkpoint: u64,
    /// `parentShardId`: the shards this one was split or merged from.
    pub parent_shard_ids: BTreeSet<String>,
    /// `childShardIds`: the shards that follow this one, known once it ended.
    pub child_shard_ids: BTreeSet<String>,
    /// `startingHashKey`, decimal, when known.
    pub starting_hash_key: Option<String>,
    /// `endingHashKey`, decimal, when known.
    pub ending_hash_key: Option<String>,
    /// `checkpointOwner`: set while a stolen lease is being handed off by its previous owner.
    pub checkpoint_owner: Option<String>,
}

impl Lease {
    /// A fresh, unowned lease for `shard_id` starting at `checkpoint`.
    ///
    /// ```
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// let lease = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
    /// assert_eq!(lease.lease_counter, 0);
    /// ```
    pub fn new(shard_id: impl Into<String>, checkpoint: Checkpoint) -> Self {
        Self {
            lease_key: shard_id.into(),
            lease_owner: None,
            lease_counter: 0,
            checkpoint,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: BTreeSet::new(),
            child_shard_ids: BTreeSet::new(),
            starting_hash_key: None,
            ending_hash_key: None,
            checkpoint_owner: None,
        }
    }

    /// Sets the parent shard ids.
    ///
    /// ```
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// let lease = Lease::new("c", Checkpoint::TrimHorizon).with_parents(["a", "b"]);
    /// assert_eq!(lease.parent_shard_ids.len(), 2);
    /// ```
    pub fn with_parents<I, S>(mut self, parents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.parent_shard_ids = parents.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the owner and counter (handy in tests and examples).
    ///
    /// ```
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// let lease = Lease::new("a", Checkpoint::TrimHorizon).owned_by("w1", 7);
    /// assert_eq!(lease.lease_owner.as_deref(), Some("w1"));
    /// ```
    pub fn owned_by(mut self, owner: impl Into<String>, counter: u64) -> Self {
        self.lease_owner = Some(owner.into());
        self.lease_counter = counter;
        self
    }

    /// True once the shard was processed to its end (`checkpoint = SHARD_END`).
    ///
    /// ```
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// assert!(Lease::new("a", Checkpoint::ShardEnd).is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        self.checkpoint.is_shard_end()
    }
}
