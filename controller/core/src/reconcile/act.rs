//! The act phase, owned by the executor: what a cycle does with its plan.
//!
//! The live executor prepares the stream (shard-level metrics on), settles journal entries left
//! in flight from the shard map, and carries out each operation as revalidate → journal (under
//! the leader's fence) → call (the fence checked right before every attempt) → wait for `ACTIVE`
//! → record. The dry-run executor reads the journal if there is one and reports what it would do.
//! Nothing outside this module asks which mode runs.

use super::{Context, CycleSettings, Executed, ReconcileError};
use crate::backend::{
    BackendError, Backends, Clock, Fence, JournalEntry, Kinesis, LeaderToken, ShardMetric,
    StateStore, StreamDescription,
};
use shardctl_policies::history::{OperationOutcome, OperationRecord};
use shardctl_policies::plan::{PlanError, PlannedOperation};
use shardctl_policies::{Observation, Shard, ShardMap, StreamPolicy, StreamStatus};
use std::future::Future;
use std::sync::atomic::Ordering;

/// The journal a cycle plans against, and the entries it settled on the way.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The stream's recent journal (settled entries updated).
    pub journal: Vec<JournalEntry>,
    /// Entries settled from the shard map: (id, outcome).
    pub resolved: Vec<(String, OperationOutcome)>,
}

/// Carries out a cycle's plan. [`LiveExecutor`] changes the stream; [`DryRunExecutor`] only
/// reports. The cycle and the loop ask the executor, never the mode.
pub trait Executor: Send + Sync {
    /// Whether a replica must hold the leader lease to run passes with this executor (a dry run
    /// plans on every replica and needs no state table).
    fn requires_leadership(&self) -> bool;

    /// Before planning: readies the stream and returns the journal to plan against.
    fn prepare<B: Backends>(
        &self,
        ctx: &Context<B>,
        policy: &StreamPolicy,
        observation: &Observation,
        description: &StreamDescription,
        leader: Option<&LeaderToken>,
    ) -> impl Future<Output = Result<Prepared, ReconcileError>> + Send;

    /// Carries out (or reports) one planned operation.
    fn act<B: Backends>(
        &self,
        ctx: &Context<B>,
        stream: &str,
        op: &PlannedOperation,
        leader: Option<&LeaderToken>,
        settings: &CycleSettings,
    ) -> impl Future<Output = Result<Executed, ReconcileError>> + Send;
}

/// The executor that reshards: `SplitShard` / `MergeShards` under the leader's fence.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveExecutor;

impl Executor for LiveExecutor {
    fn requires_leadership(&self) -> bool {
        true
    }

    async fn prepare<B: Backends>(
        &self,
        ctx: &Context<B>,
        policy: &StreamPolicy,
        observation: &Observation,
        description: &StreamDescription,
        leader: Option<&LeaderToken>,
    ) -> Result<Prepared, ReconcileError> {
        let stream = policy.name.as_str();
        if policy.enable_shard_metrics {
            enable_metrics(ctx, stream, description).await?;
        }
        let mut journal = ctx.history(stream).await?;
        let resolved = resolve_in_flight(ctx, stream, observation, &mut journal, leader).await?;
        Ok(Prepared { journal, resolved })
    }

    async fn act<B: Backends>(
        &self,
        ctx: &Context<B>,
        stream: &str,
        op: &PlannedOperation,
        leader: Option<&LeaderToken>,
        settings: &CycleSettings,
    ) -> Result<Executed, ReconcileError> {
        let leader = leader.ok_or(ReconcileError::NotLeader)?;
        let fence = match &settings.leader {
            Some(rx) => Fence::new(rx.clone(), leader),
            None => Fence::fixed(leader),
        };
        revalidate(ctx, stream, op).await?;
        // A deposed or lapsing leader journals nothing (and the Kinesis call checks again
        // before every attempt).
        if let Err(error) = fence.check("TransactWriteItems") {
            tracing::warn!(stream = %stream, %error, "not acting");
            return Err(ReconcileError::NotLeader);
        }
        let record = OperationRecord {
            kind: op.kind(),
            shard_ids: op.shard_ids().iter().map(|s| s.to_string()).collect(),
            started_at: ctx.clock.now(),
            outcome: OperationOutcome::InFlight,
        };
        let id = match ctx.state.begin(stream, &record, leader).await {
            Ok(id) => id,
            Err(BackendError::ConditionFailed { .. }) => return Err(ReconcileError::NotLeader),
            Err(e) => return Err(e.into()),
        };
        let call = match op {
            PlannedOperation::Split {
                shard_id,
                new_starting_hash_key,
                ..
            } => {
                ctx.kinesis
                    .split_shard(stream, shard_id, *new_starting_hash_key, &fence)
                    .await
            }
            PlannedOperation::Merge {
                shard_id,
                adjacent_shard_id,
                ..
            } => {
                ctx.kinesis
                    .merge_shards(stream, shard_id, adjacent_shard_id, &fence)
                    .await
            }
        };
        match call {
            Ok(()) => {
                tracing::info!(stream = %stream, operation = %op, "executed");
                // Until ACTIVE the entry stays in flight; if waiting fails, the shard map
                // settles it on a later cycle.
                wait_active(ctx, stream, op, settings).await?;
                settle(ctx, stream, &id, OperationOutcome::Succeeded).await?;
                ctx.count(stream, op.kind(), "succeeded");
                Ok(Executed::Done(op.clone()))
            }
            Err(e) if e.is_definite_rejection() => {
                // Kinesis said no, or nothing was sent: the shards did not change.
                settle(ctx, stream, &id, OperationOutcome::Failed).await?;
                ctx.count(stream, op.kind(), "failed");
                Err(e.into())
            }
            Err(e) => {
                // The call may have landed: the entry stays in flight (it holds every new
                // operation of this stream) until the shard map settles it.
                tracing::warn!(stream = %stream, operation = %op, error = %e,
                    "outcome unknown; the journal entry stays in flight until the shard map settles it");
                ctx.count(stream, op.kind(), "unknown");
                Err(e.into())
            }
        }
    }
}

/// The executor of `--dry-run`: changes nothing, creates nothing, and reports what it would do.
#[derive(Debug, Clone, Copy, Default)]
pub struct DryRunExecutor;

impl Executor for DryRunExecutor {
    fn requires_leadership(&self) -> bool {
        false
    }

    async fn prepare<B: Backends>(
        &self,
        ctx: &Context<B>,
        policy: &StreamPolicy,
        _observation: &Observation,
        _description: &StreamDescription,
        _leader: Option<&LeaderToken>,
    ) -> Result<Prepared, ReconcileError> {
        let journal = match ctx.history(&policy.name).await {
            // A dry run never creates the state table; without one there is no history yet.
            Err(ReconcileError::Backend(BackendError::NotFound { .. })) => Vec::new(),
            other => other?,
        };
        Ok(Prepared {
            journal,
            resolved: Vec::new(),
        })
    }

    async fn act<B: Backends>(
        &self,
        ctx: &Context<B>,
        stream: &str,
        op: &PlannedOperation,
        _leader: Option<&LeaderToken>,
        _settings: &CycleSettings,
    ) -> Result<Executed, ReconcileError> {
        // Printed by the caller (the cycle report); logged here.
        tracing::info!(stream = %stream, operation = %op, "dry run: would execute");
        ctx.count(stream, op.kind(), "dry_run");
        Ok(Executed::DryRun(op.clone()))
    }
}

/// The executor chosen at start-up: live, or `--dry-run`.
#[derive(Debug, Clone, Copy)]
pub enum ModeExecutor {
    /// Reshards.
    Live(LiveExecutor),
    /// Reports only.
    DryRun(DryRunExecutor),
}

impl ModeExecutor {
    /// The dry-run executor if `dry_run`, else the live one.
    pub fn new(dry_run: bool) -> Self {
        if dry_run {
            ModeExecutor::DryRun(DryRunExecutor)
        } else {
            ModeExecutor::Live(LiveExecutor)
        }
    }
}

impl Executor for ModeExecutor {
    fn requires_leadership(&self) -> bool {
        match self {
            ModeExecutor::Live(e) => e.requires_leadership(),
            ModeExecutor::DryRun(e) => e.requires_leadership(),
        }
    }

    async fn prepare<B: Backends>(
        &self,
        ctx: &Context<B>,
        policy: &StreamPolicy,
        observation: &Observation,
        description: &StreamDescription,
        leader: Option<&LeaderToken>,
    ) -> Result<Prepared, ReconcileError> {
        match self {
            ModeExecutor::Live(e) => {
                e.prepare(ctx, policy, observation, description, leader)
                    .await
            }
            ModeExecutor::DryRun(e) => {
                e.prepare(ctx, policy, observation, description, leader)
                    .await
            }
        }
    }

    async fn act<B: Backends>(
        &self,
        ctx: &Context<B>,
        stream: &str,
        op: &PlannedOperation,
        leader: Option<&LeaderToken>,
        settings: &CycleSettings,
    ) -> Result<Executed, ReconcileError> {
        match self {
            ModeExecutor::Live(e) => e.act(ctx, stream, op, leader, settings).await,
            ModeExecutor::DryRun(e) => e.act(ctx, stream, op, leader, settings).await,
        }
    }
}

/// Turns on the shard-level metrics shardctl reads, if any is off.
async fn enable_metrics<B: Backends>(
    ctx: &Context<B>,
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
        ctx.kinesis.enable_shard_metrics(stream, &missing).await?;
    }
    Ok(())
}

/// Settles journal entries still in flight from what the shard map shows: the shards closed
/// means the operation happened; the shards open on an `ACTIVE` stream means it never did. While
/// the stream is `UPDATING` the entry stays in flight and nothing new starts.
///
/// An entry another leader began is settled only once this leader has led for a lease plus one
/// reshard attempt: until then that leader's last call may still land.
pub async fn resolve_in_flight<B: Backends>(
    ctx: &Context<B>,
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
        settle(ctx, stream, &entry.id, outcome).await?;
        tracing::warn!(stream = %stream, entry = %entry.id, kind = %entry.record.kind,
            outcome = ?outcome, "resolved an operation left in flight");
        entry.record.outcome = outcome;
        resolved.push((entry.id.clone(), outcome));
    }
    Ok(resolved)
}

/// Records an outcome unless the entry was settled already (by another leader, from the shard
/// map): that is logged, not an error.
async fn settle<B: Backends>(
    ctx: &Context<B>,
    stream: &str,
    id: &str,
    outcome: OperationOutcome,
) -> Result<(), ReconcileError> {
    match ctx.state.finish(stream, id, outcome).await {
        Ok(()) => Ok(()),
        Err(BackendError::ConditionFailed { message, .. }) => {
            tracing::warn!(stream = %stream, entry = %id, %message, "entry already settled");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Just before acting: the stream is `ACTIVE` and the operation's shards are still open with
/// the planned ranges.
async fn revalidate<B: Backends>(
    ctx: &Context<B>,
    stream: &str,
    op: &PlannedOperation,
) -> Result<(), ReconcileError> {
    let summary = ctx.kinesis.describe_stream(stream).await?;
    if summary.status != StreamStatus::Active {
        return Err(ReconcileError::Stale {
            stream: stream.to_string(),
            detail: format!("stream is {}", summary.status),
        });
    }
    let shards = ctx.kinesis.list_shards(stream).await?;
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

/// Waits for the stream to be `ACTIVE` again after `op`, feeding the liveness probe meanwhile.
async fn wait_active<B: Backends>(
    ctx: &Context<B>,
    stream: &str,
    op: &PlannedOperation,
    settings: &CycleSettings,
) -> Result<(), ReconcileError> {
    let started = ctx.clock.now();
    loop {
        let status = match ctx.kinesis.describe_stream(stream).await {
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
                .store(ctx.clock.now().timestamp(), Ordering::Relaxed);
        }
        let waited = (ctx.clock.now() - started).to_std().unwrap_or_default();
        if waited >= settings.active_timeout {
            return Err(ReconcileError::NotActive {
                stream: stream.to_string(),
                status,
                waited,
                kind: op.kind(),
                shards: op.shard_ids().join("+"),
            });
        }
        ctx.clock.sleep(settings.active_poll).await;
    }
}
