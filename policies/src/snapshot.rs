//! The snapshot file: one observation of a stream and its history, as JSON.
//!
//! `shardctl observe` writes it, `shardctl plan --snapshot` reads it, and the controller records
//! it for bug reports. The format is versioned by `apiVersion` and `kind`:
//!
//! ```json
//! {
//!   "apiVersion": "shardctl.io/v1alpha1",
//!   "kind": "StreamSnapshot",
//!   "observation": {
//!     "streamName": "org-events", "streamStatus": "ACTIVE",
//!     "observedAt": "2026-11-02T14:00:00Z", "metricsStart": "2026-11-02T13:00:00Z",
//!     "shards": [{ "shardId": "shardId-000000000000", "state": "open",
//!                  "hashKeyRange": { "startingHashKey": "0", "endingHashKey": "340282366920938463463374607431768211455" },
//!                  "metrics": { "incomingBytes": [1024.0, null], "incomingRecords": [10.0, null],
//!                               "writeProvisionedThroughputExceeded": [0.0, null] } }],
//!     "consumerGroups": []
//!   },
//!   "history": { "operations": [] }
//! }
//! ```
//!
//! Metric values are per-minute sums (CloudWatch `Sum`, period 60 s) starting at `metricsStart`;
//! `null` is a missing datapoint. Hash keys are decimal strings.

use crate::history::History;
use crate::observation::Observation;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A recorded observation and history of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// Format version: `shardctl.io/v1alpha1`.
    pub api_version: crate::policy::ApiVersion,
    /// Always `StreamSnapshot`.
    pub kind: SnapshotKind,
    /// What was observed.
    pub observation: Observation,
    /// What shardctl had done before.
    #[serde(default)]
    pub history: History,
}

/// The document kind of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SnapshotKind {
    /// A stream snapshot.
    StreamSnapshot,
}

impl Snapshot {
    /// Wraps an observation and history.
    pub fn new(observation: Observation, history: History) -> Self {
        Snapshot {
            api_version: crate::policy::ApiVersion::V1Alpha1,
            kind: SnapshotKind::StreamSnapshot,
            observation,
            history,
        }
    }
}
