//! One reconcile cycle of one stream: observe, plan, re-validate, act, record.
//!
//! The cycle is not told why it runs: it reads everything afresh, resolves any operation the
//! journal still shows in flight from the shard map, and only then plans. Operations on one stream
//! run one at a time; before each, the stream must be `ACTIVE` and the shards as planned; after
//! each, the cycle waits for `ACTIVE` again.

use crate::backend::{
    BackendError, Clock, Fence, JournalEntry, Kinesis, LeaderToken, LeaseTables, Metrics,
    ShardMetric, StateStore, StreamDescription, StreamMode,
};
use crate::telemetry::{HeldLabels, OperationLabels, StreamLabels, Telemetry};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use shardctl_policies::duration::{add_minutes_saturating, sub_saturating};
use shardctl_policies::history::{OperationKind, OperationOutcome, OperationRecord};
use shardctl_policies::key_sample::distribution_from_samples;
use shardctl_policies::plan::{Decision, PlanError, PlannedOperation, SplitPointUsed};
use shardctl_policies::policy::{SplitPoint, limits};
use shardctl_policies::{
    ConsumerGroupState, History, Observation, Shard, ShardMap, StreamPolicy, StreamStatus,
};
use std::collections::BTreeMap;
use std::future::Future;
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

/// Carries out planned operations. The live executor calls Kinesis; the dry-run executor only
/// reports. Nothing else differs between the two modes.
pub trait Executor: Send + Sync {
    /// Whether this executor mutates anything (selects journalling and waiting).
    fn is_live(&self) -> bool;

    /// Performs (or reports) `op` on `stream`. A live executor sends nothing without a `fence`
    /// that passes right before each attempt.
    fn perform(
        &self,
        stream: &str,
        op: &PlannedOperation,
        fence: Option<&Fence>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// The executor that calls `SplitShard` / `MergeShards`.
#[derive(Debug, Clone)]
pub struct LiveExecutor<K> {
    kinesis: K,
}

impl<K> LiveExecutor<K> {
    /// Wraps a Kinesis backend.
    pub fn new(kinesis: K) -> Self {
        LiveExecutor { kinesis }
    }
}

impl<K: Kinesis> Executor for LiveExecutor<K> {
    fn is_live(&self) -> bool {
        true
    }

    async fn perform(
        &self,
        stream: &str,
        op: &PlannedOperation,
        fence: Option<&Fence>,
    ) -> Result<(), BackendError> {
        let api = match op {
            PlannedOperation::Split { .. } => "SplitShard",
            PlannedOperation::Merge { .. } => "MergeShards",
        };
        let fence = fence.ok_or_else(|| BackendError::Fenced {
            api,
            message: "no leadership to act under".into(),
        })?;
        match op {
            PlannedOperation::Split {
                shard_id,
                new_starting_hash_key,
                ..
            } => {
                self.kinesis
                    .split_shard(stream, shard_id, *new_starting_hash_key, fence)
                    .await
            }
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                ..
            } => {
                self.kinesis
                    .merge_shards(stream, shard_id, adjacent_shard_id, fence)
                    .await
            }
        }
    }
}

/// The executor of `--dry-run`: logs and prints what it would do.
#[derive(Debug, Clone, Copy, Default)]
pub struct DryRunExecutor;

impl Executor for DryRunExecutor {
    fn is_live(&self) -> bool {
        false
    }

    async fn perform(
        &self,
        stream: &str,
        op: &PlannedOperation,
        _fence: Option<&Fence>,
    ) -> Result<(), BackendError> {
        // Reported by the caller (the cycle report; the CLI prints it).
        tracing::info!(stream = %stream, operation = %op, "dry run: would execute");
        Ok(())
    }
}

/// The executor chosen at start-up: live, or `--dry-run`.
#[derive(Debug, Clone)]
pub enum ModeExecutor<K> {
    /// Calls Kinesis.
    Live(LiveExecutor<K>),
    /// Prints only.
    DryRun(DryRunExecutor),
}

impl<K> ModeExecutor<K> {
    /// The live executor over `kinesis`, or the dry-run one.
    pub fn new(kinesis: K, dry_run: bool) -> Self {
        if dry_run {
            ModeExecutor::DryRun(DryRunExecutor)
        } else {
            ModeExecutor::Live(LiveExecutor::new(kinesis))
        }
    }
}

impl<K: Kinesis> Executor for ModeExecutor<K> {
    fn is_live(&self) -> bool {
        matches!(self, ModeExecutor::Live(_))
    }

    async fn perform(
        &self,
        stream: &str,
        op: &PlannedOperation,
        fence: Option<&Fence>,
    ) -> Result<(), BackendError> {
        match self {
            ModeExecutor::Live(e) => e.perform(stream, op, fence).await,
            ModeExecutor::DryRun(e) => e.perform(stream, op, fence).await,
        }
    }
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
    /// [`Services::cycle`] is checked as it is.
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

/// Everything a cycle needs, injected.
#[derive(Clone)]
pub struct Services<K, M, L, S, C> {
    /// Kinesis.
    pub kinesis: K,
    /// CloudWatch.
    pub metrics: M,
    /// Consumer lease tables.
    pub leases: L,
    /// The controller's state table.
    pub state: S,
    /// Time.
    pub clock: C,
    /// Metrics export.
    pub telemetry: Telemetry,
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

impl<K, M, L, S, C> Services<K, M, L, S, C>
where
    K: Kinesis,
    M: Metrics,
    L: LeaseTables,
    S: StateStore,
    C: Clock,
{
    /// Observes `policy`'s stream now: status, shards with metrics over the policy's lookback,
    /// and every consumer group's checkpoints. An unreadable lease table is an error.
    pub async fn observe(&self, policy: &StreamPolicy) -> Result<Observation, ReconcileError> {
        Ok(self.observe_described(policy).await?.0)
    }

    /// Turns on the shard-level metrics shardctl reads, if any is off.
    async fn enable_metrics(
        &self,
        stream: &str,
        description: &StreamDescription,
    ) -> Result<(), ReconcileError> {
        let missing: Vec<ShardMetric> = ShardMetric::ALL
            .into_iter()
            .filter(|m| {
                !description
                    .shard_level_metrics
                    .iter()
                    .any(|have| have == m.cloudwatch_name() || have == "ALL")
            })
            .collect();
        if !missing.is_empty() {
            tracing::info!(stream = %stream, metrics = ?missing, "enabling shard-level metrics");
            self.kinesis.enable_shard_metrics(stream, &missing).await?;
        }
        Ok(())
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

    /// Reads the stream's recent history from the state table.
    pub async fn history(&self, stream: &str) -> Result<Vec<JournalEntry>, ReconcileError> {
        let since = sub_saturating(self.clock.now(), HISTORY_WINDOW);
        Ok(self.state.history(stream, since).await?)
    }

    /// Settles journal entries still in flight from what the shard map shows: the shards
    /// closed means the operation happened; the shards open on an `ACTIVE` stream means it never
    /// did. While the stream is `UPDATING` the entry stays in flight and nothing new starts.
    ///
    /// An entry another leader began is settled only once this leader has led for a lease plus
    /// one reshard attempt: until then that leader's last call may still land.
    pub async fn resolve_in_flight(
        &self,
        stream: &str,
        obs: &Observation,
        journal: &mut [JournalEntry],
        leader: Option<&LeaderToken>,
    ) -> Result<Vec<(String, OperationOutcome)>, ReconcileError> {
        let mut resolved = Vec::new();
        for entry in journal
            .iter_mut()
            .filter(|e| e.record.outcome == OperationOutcome::InFlight)
        {
            if let Some(token) = leader
                && entry.fence != Some(token.fence)
                && token.acquired_at.elapsed() < token.ttl + token.attempt_timeout()
            {
                tracing::info!(stream = %stream, entry = %entry.id, fence = ?entry.fence,
                    "another leader's operation is in flight; settling it once its last call cannot land");
                continue;
            }
            let closed = entry
                .record
                .shard_ids
                .iter()
                .all(|id| obs.shards.iter().any(|s| &s.shard_id == id && !s.is_open()));
            let outcome = if closed {
                OperationOutcome::Succeeded
            } else if obs.stream_status == StreamStatus::Active {
                OperationOutcome::Failed
            } else {
                continue;
            };
            self.settle(stream, &entry.id, outcome).await?;
            tracing::warn!(stream = %stream, entry = %entry.id, kind = %entry.record.kind,
                outcome = ?outcome, "resolved an operation left in flight");
            entry.record.outcome = outcome;
            resolved.push((entry.id.clone(), outcome));
        }
        Ok(resolved)
    }

    /// One full cycle for one stream. `leader` is required for a live executor.
    pub async fn cycle<E: Executor>(
        &self,
        policy: &StreamPolicy,
        executor: &E,
        leader: Option<&LeaderToken>,
        settings: &CycleSettings,
    ) -> Result<CycleReport, ReconcileError> {
        let stream = policy.name.as_str();
        let (obs, description) = self.observe_described(policy).await?;
        if executor.is_live() && policy.enable_shard_metrics {
            self.enable_metrics(stream, &description).await?;
        }
        let mut journal = match self.history(stream).await {
            // A dry run never creates the state table; without one there is no history yet.
            Err(ReconcileError::Backend(BackendError::NotFound { .. })) if !executor.is_live() => {
                Vec::new()
            }
            other => other?,
        };
        let resolved = if executor.is_live() {
            self.resolve_in_flight(stream, &obs, &mut journal, leader)
                .await?
        } else {
            Vec::new()
        };
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
            if !executor.is_live() {
                executor.perform(stream, op, None).await?;
                self.count(stream, op.kind(), "dry_run");
                executed.push(Executed::DryRun(op.clone()));
                continue;
            }
            let leader = leader.ok_or(ReconcileError::NotLeader)?;
            let fence = match &settings.leader {
                Some(rx) => Fence::new(rx.clone(), leader),
                None => Fence::fixed(leader),
            };
            self.revalidate(stream, op).await?;
            // A deposed or lapsing leader journals nothing (and the Kinesis call checks again
            // before every attempt).
            if let Err(error) = fence.check("TransactWriteItems") {
                tracing::warn!(stream = %stream, %error, "not acting");
                return Err(ReconcileError::NotLeader);
            }
            let record = OperationRecord {
                kind: op.kind(),
                shard_ids: op.shard_ids().iter().map(|s| s.to_string()).collect(),
                started_at: self.clock.now(),
                outcome: OperationOutcome::InFlight,
            };
            let id = match self.state.begin(stream, &record, leader).await {
                Ok(id) => id,
                Err(BackendError::ConditionFailed { .. }) => return Err(ReconcileError::NotLeader),
                Err(e) => return Err(e.into()),
            };
            match executor.perform(stream, op, Some(&fence)).await {
                Ok(()) => {
                    tracing::info!(stream = %stream, operation = %op, "executed");
                    // Until ACTIVE the entry stays in flight; if waiting fails, the shard map
                    // settles it on a later cycle.
                    self.wait_active(stream, op, settings).await?;
                    self.settle(stream, &id, OperationOutcome::Succeeded)
                        .await?;
                    self.count(stream, op.kind(), "succeeded");
                    executed.push(Executed::Done(op.clone()));
                }
                Err(e) if e.is_definite_rejection() => {
                    // Kinesis said no, or nothing was sent: the shards did not change.
                    self.settle(stream, &id, OperationOutcome::Failed).await?;
                    self.count(stream, op.kind(), "failed");
                    return Err(e.into());
                }
                Err(e) => {
                    // The call may have landed: the entry stays in flight (it holds every new
                    // operation of this stream) until the shard map settles it.
                    tracing::warn!(stream = %stream, operation = %op, error = %e,
                        "outcome unknown; the journal entry stays in flight until the shard map settles it");
                    self.count(stream, op.kind(), "unknown");
                    return Err(e.into());
                }
            }
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

    /// Records an outcome unless the entry was settled already (by another leader, from the
    /// shard map): that is logged, not an error.
    async fn settle(
        &self,
        stream: &str,
        id: &str,
        outcome: OperationOutcome,
    ) -> Result<(), ReconcileError> {
        match self.state.finish(stream, id, outcome).await {
            Ok(()) => Ok(()),
            Err(BackendError::ConditionFailed { message, .. }) => {
                tracing::warn!(stream = %stream, entry = %id, %message, "entry already settled");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
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
        let wanted: Vec<&str> = decision
            .operations
            .iter()
            .filter_map(|op| match op {
                PlannedOperation::Split {
                    shard_id,
                    split_point: SplitPointUsed::MidpointNoDistribution,
                    ..
                } => Some(shard_id.as_str()),
                _ => None,
            })
            .take(MAX_SAMPLED_SHARDS)
            .collect();
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
        for label in ALL_LIMIT_LABELS {
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

    /// Just before acting: the stream is `ACTIVE` and the operation's shards are still open
    /// with the planned ranges.
    async fn revalidate(&self, stream: &str, op: &PlannedOperation) -> Result<(), ReconcileError> {
        let summary = self.kinesis.describe_stream(stream).await?;
        if summary.status != StreamStatus::Active {
            return Err(ReconcileError::Stale {
                stream: stream.to_string(),
                detail: format!("stream is {}", summary.status),
            });
        }
        let shards = self.kinesis.list_shards(stream).await?;
        let map = ShardMap::new(&shards).map_err(|source| PlanError::BrokenShardMap {
            stream: stream.to_string(),
            source,
        })?;
        let check = |id: &str| -> Result<&Shard, ReconcileError> {
            map.get(id)
                .filter(|s| s.is_open())
                .ok_or_else(|| ReconcileError::Stale {
                    stream: stream.to_string(),
                    detail: format!("{id} is no longer open"),
                })
        };
        match op {
            PlannedOperation::Split {
                shard_id,
                hash_key_range,
                ..
            } => {
                if check(shard_id)?.hash_key_range != *hash_key_range {
                    return Err(ReconcileError::Stale {
                        stream: stream.to_string(),
                        detail: format!("{shard_id} changed its range"),
                    });
                }
            }
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                ..
            } => {
                let (a, b) = (check(shard_id)?, check(adjacent_shard_id)?);
                if !a.hash_key_range.is_adjacent_to(&b.hash_key_range) {
                    return Err(ReconcileError::Stale {
                        stream: stream.to_string(),
                        detail: format!("{shard_id} and {adjacent_shard_id} are not adjacent"),
                    });
                }
            }
        }
        Ok(())
    }

    async fn wait_active(
        &self,
        stream: &str,
        op: &PlannedOperation,
        settings: &CycleSettings,
    ) -> Result<(), ReconcileError> {
        let started = self.clock.now();
        loop {
            let status = match self.kinesis.describe_stream(stream).await {
                Ok(s) => s.status,
                Err(e) if e.is_retriable() => StreamStatus::Updating,
                Err(e) => return Err(e.into()),
            };
            if status == StreamStatus::Active {
                return Ok(());
            }
            // Waiting for ACTIVE is progress: keep the liveness probe fed.
            if let Some(progress) = &settings.progress {
                progress
                    .last_tick
                    .store(self.clock.now().timestamp(), Ordering::Relaxed);
            }
            let waited = (self.clock.now() - started).to_std().unwrap_or_default();
            if waited >= settings.active_timeout {
                return Err(ReconcileError::NotActive {
                    stream: stream.to_string(),
                    status,
                    waited,
                    kind: op.kind(),
                    shards: op.shard_ids().join("+"),
                });
            }
            self.clock.sleep(settings.active_poll).await;
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

const ALL_LIMIT_LABELS: [&str; 13] = [
    "stream_not_active",
    "operation_in_flight",
    "disabled",
    "unsplittable_hot_key",
    "single_key_range",
    "drain_pending",
    "budget",
    "cooldown",
    "max_shards",
    "min_shards",
    "rate_limit",
    "max_operations_per_cycle",
    "incomplete_data",
];
