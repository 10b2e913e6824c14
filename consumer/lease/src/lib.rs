//! The lease table of a Kinesis consumer group, as KCL 2.x, 3.x and `shardctl-consumer` write it,
//! and the one rule for when a closed shard is *drained*.
//!
//! Pure: no I/O, no clock, no SDK unless the `dynamodb` feature is on. shardctl's drain gate and
//! the consumer library both read rows and decide "drained" here, so they cannot disagree.
//!
//! ```
//! use shardctl_lease::{DrainView, Item, Lineage, StreamFilter, TableRows, Value};
//!
//! // A KCL lease table after a split of shardId-0 and KCL's lease cleanup: shardId-0's row is
//! // gone, both children are under way, and a KCL 3.5 coordinator row sits beside them.
//! let row = |key: &str, checkpoint: &str| Item::from([
//!     ("leaseKey".to_string(), Value::S(key.into())),
//!     ("leaseCounter".to_string(), Value::N("7".into())),
//!     ("checkpoint".to_string(), Value::S(checkpoint.into())),
//! ]);
//! let coordinator = Item::from([
//!     ("leaseKey".to_string(), Value::S("Migration3.0".into())),
//!     ("entityType".to_string(), Value::S("COORDINATOR_STATE".into())),
//! ]);
//! let rows = TableRows::read(
//!     StreamFilter::named("orders"),
//!     [&row("shardId-1", "49590338271490256608559692538361571095921575989136588898"),
//!      &row("shardId-2", "TRIM_HORIZON"), &coordinator],
//! );
//! let lineage = Lineage::new([
//!     ("shardId-0", vec![]), ("shardId-1", vec!["shardId-0"]), ("shardId-2", vec!["shardId-0"]),
//! ]);
//! let view = DrainView::new(&lineage, &rows);
//! assert!(view.state("shardId-0").is_drained()); // cleaned up after a child progressed
//! assert!(!view.state("shardId-2").is_drained());
//! assert_eq!(rows.non_lease_rows, ["Migration3.0"]);
//! ```
//!
//! # Table shapes read
//!
//! * KCL 2.x single-stream rows (`leaseKey` = shard id).
//! * KCL 3.0–3.4 rows, which add `checkpointOwner` (graceful handoff) and `throughputKBps`
//!   (ignored).
//! * KCL 3.5+ tables that also hold coordinator-state and worker-metrics rows: rows whose
//!   `entityType` is present and not `LEASE` are skipped.
//! * Multi-stream tables: keys `account:stream:creationEpoch:shardId`, bare parent ids; rows of
//!   other streams are skipped ([`StreamFilter`]).
//!
//! Unknown attributes are ignored. A row that cannot be read is kept apart
//! ([`TableRows::malformed`]) and counts as neither drained nor free.

mod checkpoint;
mod drain;
mod row;
#[cfg(feature = "dynamodb")]
pub mod sdk;
mod table;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use drain::{CheckpointRows, DrainState, DrainView, LeaseRows, Lineage, RowState};
pub use row::{
    ENTITY_TYPE_LEASE, Item, Lease, LeaseKey, Row, RowError, StreamIdentifier, Value, attr,
    lease_from_item, lease_to_item,
};
pub use table::{StreamFilter, TableRows};
