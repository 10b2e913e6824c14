//! Prometheus metrics of the controller, in one registry.
//!
//! Label values are fixed strings or policy-defined names (stream, group), never `Debug` output.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Labels of `shardctl_aws_calls_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The API, e.g. `GetMetricData`.
    pub api: &'static str,
    /// `ok` or a `BackendError` label.
    pub outcome: &'static str,
}

/// Labels of `shardctl_operations_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The stream.
    pub stream: String,
    /// `split` or `merge`.
    pub kind: &'static str,
    /// `succeeded`, `failed`, `dry_run`.
    pub result: &'static str,
}

/// Labels of per-stream gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// The stream.
    pub stream: String,
}

/// Labels of `shardctl_held_candidates`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeldLabels {
    /// The stream.
    pub stream: String,
    /// The `Limit` label.
    pub reason: &'static str,
}

/// Every metric the controller exports.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
    /// AWS calls by API and outcome.
    pub aws_calls: Family<CallLabels, Counter>,
    /// Resharding operations by stream, kind and result.
    pub operations: Family<OperationLabels, Counter>,
    /// Candidates held back in the last cycle, by stream and reason.
    pub held: Family<HeldLabels, Gauge>,
    /// Open shards per stream.
    pub open_shards: Family<StreamLabels, Gauge>,
    /// Reconcile errors per stream.
    pub reconcile_errors: Family<StreamLabels, Counter>,
    /// Unix time of the last successful reconcile per stream.
    pub last_success: Family<StreamLabels, Gauge<f64, AtomicU64>>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Policy reloads rejected as invalid.
    pub policy_reload_errors: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shardctl");
        let t = Telemetry {
            registry: Arc::new(Mutex::new(Registry::default())),
            aws_calls: Family::default(),
            operations: Family::default(),
            held: Family::default(),
            open_shards: Family::default(),
            reconcile_errors: Family::default(),
            last_success: Family::default(),
            leader: Gauge::default(),
            policy_reload_errors: Counter::default(),
        };
        registry.register(
            "aws_calls",
            "AWS API calls by API and outcome",
            t.aws_calls.clone(),
        );
        registry.register(
            "operations",
            "Resharding operations by stream, kind and result",
            t.operations.clone(),
        );
        registry.register(
            "held_candidates",
            "Candidates held back in the last cycle, by limiting reason",
            t.held.clone(),
        );
        registry.register(
            "open_shards",
            "Open shards per stream",
            t.open_shards.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile cycles that failed, per stream",
            t.reconcile_errors.clone(),
        );
        registry.register(
            "last_successful_reconcile_timestamp_seconds",
            "Unix time of the last successful reconcile per stream",
            t.last_success.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader",
            t.leader.clone(),
        );
        registry.register(
            "policy_reload_errors",
            "Policy file edits rejected as invalid (the previous policy stays in force)",
            t.policy_reload_errors.clone(),
        );
        Telemetry {
            registry: Arc::new(Mutex::new(registry)),
            ..t
        }
    }

    /// Counts one AWS call.
    pub fn call(&self, api: &'static str, outcome: &'static str) {
        self.aws_calls
            .get_or_create(&CallLabels { api, outcome })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}
