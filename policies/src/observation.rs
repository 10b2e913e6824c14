//! What the controller saw of a stream: status, shards, per-shard metrics, key distributions and
//! the drain state of every consumer group. Everything is plain data; a missing datapoint is
//! `None` (unknown), never zero.

use crate::hash::{HashKey, decimal};
use crate::shard_map::Shard;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use shardctl_lease::{Checkpoint, CheckpointRows, DrainState};

/// Kinesis' write limit per shard in bytes per second (1 MiB, partition keys included).
pub const SHARD_BYTES_PER_SECOND: f64 = 1024.0 * 1024.0;
/// Kinesis' write limit per shard in records per second.
pub const SHARD_RECORDS_PER_SECOND: f64 = 1000.0;

/// The stream status as `DescribeStreamSummary` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatus {
    /// Ready for writes and for resharding.
    Active,
    /// Being created.
    Creating,
    /// Being deleted.
    Deleting,
    /// A reshard or another update is in progress.
    Updating,
}

impl std::fmt::Display for StreamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StreamStatus::Active => "ACTIVE",
            StreamStatus::Creating => "CREATING",
            StreamStatus::Deleting => "DELETING",
            StreamStatus::Updating => "UPDATING",
        })
    }
}

/// A stream as observed at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The stream name.
    pub stream_name: String,
    /// The stream status.
    pub stream_status: StreamStatus,
    /// When the observation was made.
    pub observed_at: DateTime<Utc>,
    /// The minute of the first datapoint of every metric series; series are per minute from here.
    pub metrics_start: DateTime<Utc>,
    /// Every shard `ListShards` returned, open and closed.
    pub shards: Vec<Shard>,
    /// The drain state of each consumer group the policy names.
    #[serde(default)]
    pub consumer_groups: Vec<ConsumerGroupState>,
}

/// Per-minute sums of one open shard's CloudWatch metrics (`Sum`, period 60 s), aligned to
/// [`Observation::metrics_start`]. `null` is a minute with no datapoint: unknown, not zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardMetrics {
    /// `IncomingBytes` per minute.
    #[serde(default)]
    pub incoming_bytes: Vec<Option<f64>>,
    /// `IncomingRecords` per minute.
    #[serde(default)]
    pub incoming_records: Vec<Option<f64>>,
    /// `WriteProvisionedThroughputExceeded` (throttled records) per minute.
    #[serde(default)]
    pub write_provisioned_throughput_exceeded: Vec<Option<f64>>,
}

impl ShardMetrics {
    /// Whether no series has any entry.
    pub fn is_empty(&self) -> bool {
        self.incoming_bytes.is_empty()
            && self.incoming_records.is_empty()
            && self.write_provisioned_throughput_exceeded.is_empty()
    }
}

/// A sample of where a shard's traffic falls in its hash key range, for traffic-weighted splits.
///
/// Buckets describe the spread of many light keys (their traffic is taken as even inside a
/// bucket); heavy keys are single hash keys whose traffic sits on one point and cannot be divided.
/// Units are arbitrary but consistent (records or bytes over the same sample period).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyDistribution {
    /// Traffic per hash key bucket; buckets must not overlap.
    #[serde(default)]
    pub buckets: Vec<KeyBucket>,
    /// The heaviest individual keys.
    #[serde(default)]
    pub heavy_keys: Vec<HeavyKey>,
}

/// Traffic observed in a range of hash keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyBucket {
    /// First key of the bucket (inclusive).
    #[serde(with = "decimal")]
    #[schemars(with = "decimal::Schema")]
    pub starting_hash_key: HashKey,
    /// Last key of the bucket (inclusive).
    #[serde(with = "decimal")]
    #[schemars(with = "decimal::Schema")]
    pub ending_hash_key: HashKey,
    /// The bucket's share of the traffic.
    pub weight: f64,
}

/// One heavy partition key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeavyKey {
    /// The key's hash key (MD5 of the partition key).
    #[serde(with = "decimal")]
    #[schemars(with = "decimal::Schema")]
    pub hash_key: HashKey,
    /// The partition key itself, when known (for reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// The key's share of the traffic, in the same unit as the buckets.
    pub weight: f64,
}

/// What one consumer group's lease table says about the shards of the stream, read by the one
/// lease model ([`shardctl_lease`]): KCL 2.x, 3.x and 3.5+ tables, single- or multi-stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupState {
    /// The group name from the policy.
    pub name: String,
    /// The DynamoDB lease table read.
    pub lease_table: String,
    /// Why the table could not be read, if it could not; the group then counts as not drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The checkpoint of each readable lease of this stream, by shard id (the `checkpoint`
    /// attribute: a sentinel or a decimal sequence number).
    #[serde(default, with = "checkpoint_map")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub checkpoints: BTreeMap<String, Checkpoint>,
    /// Lease rows of this stream that could not be read, by shard id: why. Such a shard is
    /// unknown, so not drained.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreadable: BTreeMap<String, String>,
    /// What else the table held (non-lease rows, other streams of a multi-stream table), for
    /// reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ConsumerGroupState {
    /// The group's rows as the drain rule reads them.
    pub fn rows(&self) -> CheckpointRows<'_> {
        CheckpointRows {
            checkpoints: &self.checkpoints,
            unreadable: &self.unreadable,
        }
    }
}

/// Checkpoints written as the `checkpoint` attribute's text.
mod checkpoint_map {
    use super::Checkpoint;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Checkpoint>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&str, &str> =
            map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        text.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Checkpoint>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                Checkpoint::parse(&v, 0)
                    .map(|c| (k, c))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}
