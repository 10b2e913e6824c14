//! One reconcile cycle of one stream: observe, plan, re-validate, act, record.
//!
//! The cycle is not told why it runs: it reads everything afresh, resolves any operation the
//! journal still shows in flight from the shard map, and only then plans. Operations on one stream
//! run one at a time; before each, the stream must be `ACTIVE` and the shards as planned; after
//! each, the cycle waits for `ACTIVE` again.

mod act;

pub use act::{DryRunExecutor, Executor, LiveExecutor, ModeExecutor, Prepared, resolve_in_flight};

use crate::backend::{
    BackendError, Backends, Clock, JournalEntry, Kinesis, LeaderToken, LeaseTables, Metrics,
    StateStore, StreamDescription, StreamMode,
};
use crate::telemetry::{HeldLabels, OperationLabels, StreamLabels, Telemetry};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use shardctl_policies::duration::{add_minutes_saturating, sub_saturating};
use shardctl_policies::history::{OperationKind, OperationOutcome};
use shardctl_policies::key_sample::distribution_from_samples;
use shardctl_policies::plan::{Decision, Limit, PlanError, PlannedOperation};
use shardctl_policies::policy::{SplitPoint, limits};
use shardctl_policies::{
    ConsumerGroupState, History, Observation, Snapshot, StreamPolicy, StreamStatus,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How far back the history is read for cooldowns and rate limits: as far as the longest
/// cooldown or rate period a valid policy can set.
pub const HISTORY_WINDOW: TimeDelta = TimeDelta::seconds(limits::HISTORY.0.as_secs() as i64);

/// Why a cycle of one stream failed. Other streams are unaffected.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A backend call failed after its retries.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The planner refused (broken shard map).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The stream is in on-demand mode.
    #[error("stream {0} is in on-demand mode; shardctl manages provisioned streams only")]
    OnDemand(String),
    /// A consumer group's lease table could not be read: resharding is not safe.
    #[error(
        "stream {stream}: lease table {table} of consumer group {group} cannot be read, not resharding: {source}"
    )]
    LeaseTable {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
        /// The table.
        table: String,
        /// Why.
        source: BackendError,
    },
    /// The shards changed between planning and acting.
    #[error("stream {stream}: shards changed since planning ({detail}); replanning next cycle")]
    Stale {
        /// The stream.
        stream: String,
        /// What changed.
        detail: String,
    },
    /// The stream did not return to `ACTIVE` in time after an operation.
    #[error("stream {stream} still {status} {waited:?} after {kind} of {shards}")]
    NotActive {
        /// The stream.
        stream: String,
        /// The last status seen.
        status: StreamStatus,
        /// How long we waited.
        waited: Duration,
        /// The operation.
        kind: OperationKind,
        /// Its shards.
        shards: String,
    },
    /// Leadership was lost; nothing more is done until it is regained.
    #[error("leadership lost")]
    NotLeader,
}

impl ReconcileError {
    /// A fixed label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ReconcileError::Backend(e) => e.label(),
            ReconcileError::Plan(e) => e.label(),
            ReconcileError::OnDemand(_) => "on_demand",
            ReconcileError::LeaseTable { .. } => "lease_table",
            ReconcileError::Stale { .. } => "stale",
            ReconcileError::NotActive { .. } => "not_active",
            ReconcileError::NotLeader => "not_leader",
        }
    }
}

/// What happened to one planned operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Executed {
    /// Kinesis accepted it and the stream is `ACTIVE` again.
    Done(PlannedOperation),
    /// Dry run: printed, not called.
    DryRun(PlannedOperation),
}

/// The result of one cycle.
#[derive(Debug, Clone)]
pub struct CycleReport {
    /// The planner's decision.
    pub decision: Decision,
    /// What was executed, in order.
    pub executed: Vec<Executed>,
    /// Journal entries resolved at the start of the cycle: (id, outcome).
    pub resolved: Vec<(String, OperationOutcome)>,
}

/// Tuning of the cycle.
#[derive(Debug, Clone)]
pub struct CycleSettings {
    /// Set on shutdown: no new operation starts (the one running finishes or stays journalled).
    pub stop: Arc<AtomicBool>,
    /// How long to wait for `ACTIVE` after an operation.
    pub active_timeout: Duration,
    /// How often to poll the stream status while waiting.
    pub active_poll: Duration,
    /// The leadership task's channel: reshard calls check the latest token right before each
    /// attempt (renewals during a long pass count). Without it the token passed to
    /// [`Context::cycle`] is checked as it is.
    pub leader: Option<watch::Receiver<Option<LeaderToken>>>,
    /// Loop progress, advanced inside long waits too (so `/healthz` sees a busy loop alive).
    pub progress: Option<Arc<crate::daemon::Progress>>,
}

impl Default for CycleSettings {
    fn default() -> Self {
        CycleSettings {
            stop: Arc::new(AtomicBool::new(false)),
            active_timeout: Duration::from_secs(15 * 60),
            active_poll: Duration::from_secs(2),
            leader: None,
            progress: None,
        }
    }
}

/// Everything a cycle and the loop need, injected once: the backends of one [`Backends`]
/// bundle and the metrics export.
pub struct Context<B: Backends> {
    /// Kinesis.
    pub kinesis: B::Kinesis,
    /// CloudWatch.
    pub metrics: B::Metrics,
    /// Consumer lease tables.
    pub leases: B::Leases,
    /// The controller's state table.
    pub state: B::State,
    /// Time.
    pub clock: B::Clock,
    /// Metrics export.
    pub telemetry: Telemetry,
}

impl<B: Backends> Clone for Context<B> {
    fn clone(&self) -> Self {
        Context {
            kinesis: self.kinesis.clone(),
            metrics: self.metrics.clone(),
            leases: self.leases.clone(),
            state: self.state.clone(),
            clock: self.clock.clone(),
            telemetry: self.telemetry.clone(),
        }
    }
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

impl<B: Backends> Context<B> {
    /// Observes `policy`'s stream now: status, shards with metrics over the policy's lookback,
    /// and every consumer group's checkpoints. An unreadable lease table is an error.
    pub async fn observe(&self, policy: &StreamPolicy) -> Result<Observation, ReconcileError> {
        Ok(self.observe_described(policy).await?.0)
    }

    async fn observe_described(
        &self,
        policy: &StreamPolicy,
    ) -> Result<(Observation, StreamDescription), ReconcileError> {
        let stream = &policy.name;
        let summary = self.kinesis.describe_stream(stream).await?;
        if summary.mode == StreamMode::OnDemand {
            return Err(ReconcileError::OnDemand(stream.clone()));
        }
        let mut shards = self.kinesis.list_shards(stream).await?;
        let now = self.clock.now();
        let end = floor_minute(now);
        let minutes = policy.lookback().whole_minutes_ceil().saturating_add(1);
        let start = add_minutes_saturating(end, -i64::try_from(minutes).unwrap_or(i64::MAX));
        let open: Vec<String> = shards
            .iter()
            .filter(|s| s.is_open())
            .map(|s| s.shard_id.clone())
            .collect();
        let mut metrics = self
            .metrics
            .shard_metrics(stream, &open, start, minutes)
            .await?;
        for s in shards.iter_mut().filter(|s| s.is_open()) {
            if let Some(m) = metrics.remove(&s.shard_id) {
                s.metrics = m;
            }
        }
        let mut groups = Vec::new();
        let filter = summary.lease_filter();
        for g in &policy.consumer_groups {
            match self.leases.rows(&g.lease_table, &filter).await {
                Ok(rows) => {
                    let note = (!rows.non_lease_rows.is_empty()
                        || rows.multi_stream_rows > 0
                        || rows.other_stream_rows > 0)
                        .then(|| rows.summary());
                    if let Some(note) = &note {
                        tracing::info!(stream = %stream, group = %g.name, table = %g.lease_table, %note, "read lease table");
                    }
                    groups.push(ConsumerGroupState {
                        name: g.name.clone(),
                        lease_table: g.lease_table.clone(),
                        error: None,
                        checkpoints: rows.checkpoints(),
                        unreadable: rows.malformed,
                        note,
                    })
                }
                Err(source) => {
                    return Err(ReconcileError::LeaseTable {
                        stream: stream.clone(),
                        group: g.name.clone(),
                        table: g.lease_table.clone(),
                        source,
                    });
                }
            }
        }
        let observation = Observation {
            stream_name: stream.clone(),
            stream_status: summary.status,
            observed_at: now,
            metrics_start: start,
            shards,
            consumer_groups: groups,
        };
        Ok((observation, summary))
    }

    /// What `shardctl observe` writes and `plan` reads: the observation now and the recent
    /// history. Without a state table (nothing ever acted) the history is empty.
    pub async fn snapshot(&self, policy: &StreamPolicy) -> Result<Snapshot, ReconcileError> {
        let observation = self.observe(policy).await?;
        let operations = match self.history(&policy.name).await {
            Ok(entries) => entries.into_iter().map(|e| e.record).collect(),
            Err(ReconcileError::Backend(BackendError::NotFound { .. })) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Snapshot::new(observation, History { operations }))
    }

    /// Reads the stream's recent history from the state table.
    pub async fn history(&self, stream: &str) -> Result<Vec<JournalEntry>, ReconcileError> {
        let since = sub_saturating(self.clock.now(), HISTORY_WINDOW);
        Ok(self.state.history(stream, since).await?)
    }

    /// One full cycle for one stream: observe, let the executor prepare (journal), plan, and
    /// let the executor act on each planned operation. `leader` is required by an executor that
    /// [requires leadership](Executor::requires_leadership).
    pub async fn cycle<E: Executor>(
        &self,
        policy: &StreamPolicy,
        executor: &E,
        leader: Option<&LeaderToken>,
        settings: &CycleSettings,
    ) -> Result<CycleReport, ReconcileError> {
        let stream = policy.name.as_str();
        let (obs, description) = self.observe_described(policy).await?;
        let Prepared { journal, resolved } = executor
            .prepare(self, policy, &obs, &description, leader)
            .await?;
        let history = History {
            operations: journal.iter().map(|e| e.record.clone()).collect(),
        };
        let now = self.clock.now();
        let mut decision = shardctl_policies::plan(policy, &obs, &history, now)?;
        if let Some(sampled) = self.sample_hot_shards(policy, &obs, &decision).await {
            decision = shardctl_policies::plan(policy, &sampled, &history, now)?;
        }
        self.export(&decision);
        for op in &decision.operations {
            tracing::info!(stream = %stream, operation = %op, "planned");
        }
        for held in &decision.held {
            tracing::debug!(stream = %stream, candidate = %held, "held");
        }

        let mut executed = Vec::new();
        for op in &decision.operations {
            if settings.stop.load(Ordering::Relaxed) {
                tracing::info!(stream = %stream, "shutting down: no further operations this cycle");
                break;
            }
            executed.push(executor.act(self, stream, op, leader, settings).await?);
        }
        self.telemetry
            .last_success
            .get_or_create(&StreamLabels {
                stream: stream.to_string(),
            })
            .set(self.clock.now().timestamp_millis() as f64 / 1000.0);
        Ok(CycleReport {
            decision,
            executed,
            resolved,
        })
    }

    /// For `splitPoint: trafficWeighted`: samples the records of the shards the planner wants to
    /// split without a key distribution, and returns the observation with their distributions,
    /// or `None` if there is nothing to sample. A failed sample only costs the better split
    /// point: it is logged and the midpoint stays.
    async fn sample_hot_shards(
        &self,
        policy: &StreamPolicy,
        obs: &Observation,
        decision: &Decision,
    ) -> Option<Observation> {
        if policy.split.split_point != SplitPoint::TrafficWeighted {
            return None;
        }
        let mut wanted = decision.wants_key_samples();
        wanted.truncate(MAX_SAMPLED_SHARDS);
        if wanted.is_empty() {
            return None;
        }
        let since = policy.split.stabilization_window.before(obs.observed_at);
        let mut sampled = obs.clone();
        let mut any = false;
        for id in wanted {
            let Some(shard) = sampled.shards.iter_mut().find(|s| s.shard_id == id) else {
                continue;
            };
            match self
                .kinesis
                .sample_records(&obs.stream_name, id, since, SAMPLE_RECORDS)
                .await
            {
                Ok(records) if !records.is_empty() => {
                    let by_bytes = bytes_dominate(decision, id);
                    let dist = distribution_from_samples(
                        shard.hash_key_range,
                        records.iter().map(|(k, size)| {
                            (k.as_str(), if by_bytes { *size as f64 } else { 1.0 })
                        }),
                        32,
                        8,
                    );
                    tracing::debug!(stream = %obs.stream_name, shard = %id, records = records.len(),
                        heavy = dist.heavy_keys.len(), "sampled keys for a traffic-weighted split");
                    shard.key_distribution = Some(dist);
                    any = true;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(stream = %obs.stream_name, shard = %id, %error,
                        "could not sample records; splitting at the midpoint")
                }
            }
        }
        any.then_some(sampled)
    }

    fn count(&self, stream: &str, kind: OperationKind, result: &'static str) {
        self.telemetry
            .operations
            .get_or_create(&OperationLabels {
                stream: stream.to_string(),
                kind: match kind {
                    OperationKind::Split => "split",
                    OperationKind::Merge => "merge",
                },
                result,
            })
            .inc();
    }

    fn export(&self, d: &Decision) {
        let labels = StreamLabels {
            stream: d.stream_name.clone(),
        };
        self.telemetry
            .open_shards
            .get_or_create(&labels)
            .set(d.open_shards as i64);
        let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
        for label in Limit::LABELS {
            counts.insert(label, 0);
        }
        for h in &d.held {
            *counts.entry(h.limit.label()).or_default() += 1;
        }
        for (reason, n) in counts {
            self.telemetry
                .held
                .get_or_create(&HeldLabels {
                    stream: d.stream_name.clone(),
                    reason,
                })
                .set(n);
        }
    }
}

/// At most this many shards are sampled per cycle.
const MAX_SAMPLED_SHARDS: usize = 4;
/// Records read per sampled shard: enough to find the heavy keys, small enough not to starve the
/// shard's consumers of their 2 MiB/s read budget for long.
const SAMPLE_RECORDS: usize = 1_000;

/// Whether the shard is hotter on bytes than on records (then samples are weighed by size).
fn bytes_dominate(decision: &Decision, shard_id: &str) -> bool {
    decision
        .shards
        .iter()
        .find(|s| s.shard_id == shard_id)
        .is_none_or(|s| s.bytes_peak.unwrap_or(0.0) >= s.records_peak.unwrap_or(0.0))
}
