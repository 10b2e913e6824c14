//! What shardctl did to a stream before: the input to cooldowns and rate limits, and the journal
//! that keeps a crash from repeating an operation.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Past operations on one stream, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Operations, oldest first.
    #[serde(default)]
    pub operations: Vec<OperationRecord>,
}

/// One split or merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationRecord {
    /// Split or merge.
    pub kind: OperationKind,
    /// The shard split, or the two shards merged (lower first).
    pub shard_ids: Vec<String>,
    /// When the call was made.
    pub started_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: OperationOutcome,
}

/// The kind of a resharding operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OperationKind {
    /// `SplitShard`.
    Split,
    /// `MergeShards`.
    Merge,
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OperationKind::Split => "split",
            OperationKind::Merge => "merge",
        })
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OperationOutcome {
    /// Journalled before the call; not yet known to have finished. Nothing else starts on the
    /// stream until the controller resolves it from the shard map.
    InFlight,
    /// Kinesis accepted it and the stream returned to `ACTIVE`.
    Succeeded,
    /// Kinesis rejected it; the shards did not change.
    Failed,
}

impl History {
    /// Operations that changed the shard map (or may have), newest last.
    pub fn effective(&self) -> impl DoubleEndedIterator<Item = &OperationRecord> {
        self.operations
            .iter()
            .filter(|o| o.outcome != OperationOutcome::Failed)
    }

    /// The operation still in flight, if any.
    pub fn in_flight(&self) -> Option<&OperationRecord> {
        self.operations
            .iter()
            .rev()
            .find(|o| o.outcome == OperationOutcome::InFlight)
    }

    /// The start of the latest effective operation of `kind`.
    pub fn last(&self, kind: OperationKind) -> Option<DateTime<Utc>> {
        self.effective()
            .filter(|o| o.kind == kind)
            .map(|o| o.started_at)
            .max()
    }
}
