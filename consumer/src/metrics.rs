//! Consumer metrics on a [`prometheus_client`] registry the application owns and serves.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `shardctl_consumer_millis_behind_latest` | gauge | `shard` | `MillisBehindLatest` of the last batch read |
//! | `shardctl_consumer_records_processed_total` | counter | `shard` | records handed to the processor (user records after de-aggregation) |
//! | `shardctl_consumer_bytes_processed_total` | counter | `shard` | their payload bytes |
//! | `shardctl_consumer_checkpoint_age_seconds` | gauge | `shard` | time since the held lease's checkpoint last moved, measured at each renewal |
//! | `shardctl_consumer_leases_held` | gauge | | leases this worker holds |
//! | `shardctl_consumer_lease_steals_total` | counter | | leases this worker stole to balance the fleet |
//! | `shardctl_consumer_lease_handoffs_total` | counter | | leases this worker handed to a thief after its last checkpoint |
//! | `shardctl_consumer_leases_lost_total` | counter | | leases lost without a handoff (expired, taken, renewal refused) |
//!
//! A shard's series are removed when its lease leaves the worker, so a fleet's sum counts each
//! shard once. Label the registry with the worker id
//! ([`Registry::sub_registry_with_label`]) when several workers share one.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `shard` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Debug, Default)]
struct Families {
    millis_behind: Family<ShardLabel, Gauge>,
    records: Family<ShardLabel, Counter>,
    bytes: Family<ShardLabel, Counter>,
    checkpoint_age: Family<ShardLabel, Gauge<f64, AtomicU64>>,
    leases_held: Gauge,
    steals: Counter,
    handoffs: Counter,
    lost: Counter,
}

/// The metrics of one worker; pass them in [`WorkerConfig::metrics`](crate::WorkerConfig::metrics).
/// Cheap to clone.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use shardctl_consumer::{ConsumerMetrics, WorkerConfig};
///
/// let mut registry = Registry::default();
/// let mut config = WorkerConfig::new("events", "app");
/// config.metrics = Some(ConsumerMetrics::register(&mut registry));
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("shardctl_consumer_leases_held 0"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConsumerMetrics {
    families: Arc<Families>,
}

impl ConsumerMetrics {
    /// Registers the metrics under the `shardctl_consumer` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let f = &metrics.families;
        let r = registry.sub_registry_with_prefix("shardctl_consumer");
        r.register(
            "millis_behind_latest",
            "MillisBehindLatest of the last batch read from the shard",
            f.millis_behind.clone(),
        );
        r.register(
            "records_processed",
            "Records handed to the processor (user records after de-aggregation)",
            f.records.clone(),
        );
        r.register(
            "bytes_processed",
            "Payload bytes handed to the processor",
            f.bytes.clone(),
        );
        r.register(
            "checkpoint_age_seconds",
            "Seconds since the held lease's checkpoint last moved (measured at each renewal)",
            f.checkpoint_age.clone(),
        );
        r.register(
            "leases_held",
            "Leases this worker holds",
            f.leases_held.clone(),
        );
        r.register(
            "lease_steals",
            "Leases this worker stole to balance the fleet",
            f.steals.clone(),
        );
        r.register(
            "lease_handoffs",
            "Leases handed to a thief after the last checkpoint",
            f.handoffs.clone(),
        );
        r.register(
            "leases_lost",
            "Leases lost without a handoff (expired, taken, renewal refused)",
            f.lost.clone(),
        );
        metrics
    }

    fn label(shard: &str) -> ShardLabel {
        ShardLabel {
            shard: shard.to_owned(),
        }
    }

    /// A batch was handed to the processor.
    pub(crate) fn batch(&self, shard: &str, records: usize, bytes: u64, behind: Option<i64>) {
        let label = Self::label(shard);
        let f = &self.families;
        f.records.get_or_create(&label).inc_by(records as u64);
        f.bytes.get_or_create(&label).inc_by(bytes);
        if let Some(behind) = behind {
            f.millis_behind.get_or_create(&label).set(behind);
        }
    }

    /// The checkpoint of a held lease has not moved for `age`.
    pub(crate) fn checkpoint_age(&self, shard: &str, age: std::time::Duration) {
        self.families
            .checkpoint_age
            .get_or_create(&Self::label(shard))
            .set(age.as_secs_f64());
    }

    /// The worker now holds `n` leases.
    pub(crate) fn leases_held(&self, n: usize) {
        self.families
            .leases_held
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A steal landed.
    pub(crate) fn stole(&self) {
        self.families.steals.inc();
    }

    /// A lease was handed off.
    pub(crate) fn handed_off(&self) {
        self.families.handoffs.inc();
    }

    /// A lease was lost without a handoff.
    pub(crate) fn lost(&self) {
        self.families.lost.inc();
    }

    /// The lease of `shard` left this worker: its series go.
    pub(crate) fn forget(&self, shard: &str) {
        let label = Self::label(shard);
        let f = &self.families;
        f.millis_behind.remove(&label);
        f.records.remove(&label);
        f.bytes.remove(&label);
        f.checkpoint_age.remove(&label);
    }
}
