//! The controller's backend traits over the simulated world: Kinesis, CloudWatch, the lease
//! tables and the clock read and drive the [`World`]; the state table is an in-memory store that
//! keeps DynamoDB's contract (one contract test runs the same cases against both).

use crate::world::SharedWorld;
use chrono::{DateTime, TimeDelta, Utc};
use shardctl_controller::backend::{
    BackendError, Clock, Fence, JournalEntry, Kinesis, LeaderRecord, LeaderToken, LeaseTables,
    Metrics, ShardMetric, StateStore, StreamDescription, StreamMode,
};
use shardctl_lease::{Lease, StreamFilter, TableRows};
use shardctl_policies::duration::add_saturating;
use shardctl_policies::history::{OperationOutcome, OperationRecord};
use shardctl_policies::{HashKey, Shard, ShardMetrics};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The simulator's leases run on virtual time; by the process's own clock they last one lease
/// from now (a simulated day passes in seconds, so a pass never outlives it).
fn local_deadline(ttl: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(ttl).unwrap_or(now)
}

/// Kinesis over the simulated stream.
#[derive(Debug, Clone)]
pub struct SimKinesis(pub SharedWorld);

impl Kinesis for SimKinesis {
    async fn describe_stream(&self, stream: &str) -> Result<StreamDescription, BackendError> {
        let w = self.0.lock();
        w.check_stream("DescribeStreamSummary", stream)?;
        Ok(StreamDescription {
            name: stream.to_string(),
            status: w.status,
            mode: StreamMode::Provisioned,
            open_shard_count: w.open.len() as u32,
            shard_level_metrics: ShardMetric::ALL
                .iter()
                .map(|m| m.cloudwatch_name().to_string())
                .collect(),
            retention: Duration::from_secs(24 * 3600),
            account: None,
            creation_epoch: None,
        })
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, BackendError> {
        let w = self.0.lock();
        w.check_stream("ListShards", stream)?;
        Ok(w.list())
    }

    async fn split_shard(
        &self,
        stream: &str,
        shard_id: &str,
        new_starting_hash_key: HashKey,
        fence: &Fence,
    ) -> Result<(), BackendError> {
        fence.check("SplitShard")?;
        let mut w = self.0.lock();
        w.check_stream("SplitShard", stream)?;
        w.split(shard_id, new_starting_hash_key)
    }

    async fn merge_shards(
        &self,
        stream: &str,
        shard_id: &str,
        adjacent_shard_id: &str,
        fence: &Fence,
    ) -> Result<(), BackendError> {
        fence.check("MergeShards")?;
        let mut w = self.0.lock();
        w.check_stream("MergeShards", stream)?;
        w.merge(shard_id, adjacent_shard_id)
    }

    async fn sample_records(
        &self,
        stream: &str,
        shard_id: &str,
        _since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        let mut w = self.0.lock();
        w.check_stream("GetRecords", stream)?;
        w.sample(shard_id, limit)
    }

    async fn enable_shard_metrics(
        &self,
        stream: &str,
        _metrics: &[ShardMetric],
    ) -> Result<(), BackendError> {
        self.0
            .lock()
            .check_stream("EnableEnhancedMonitoring", stream)
    }
}

/// CloudWatch over the simulated stream.
#[derive(Debug, Clone)]
pub struct SimMetrics(pub SharedWorld);

impl Metrics for SimMetrics {
    async fn shard_metrics(
        &self,
        stream: &str,
        shard_ids: &[String],
        start: DateTime<Utc>,
        minutes: usize,
    ) -> Result<HashMap<String, ShardMetrics>, BackendError> {
        let w = self.0.lock();
        w.check_stream("GetMetricData", stream)?;
        Ok(shard_ids
            .iter()
            .map(|id| (id.clone(), w.shard_series(id, start, minutes)))
            .collect())
    }
}

/// Lease tables of the simulated consumer groups: every table name holds a group that drains
/// closed shards after the world's drain lag.
#[derive(Debug, Clone)]
pub struct SimLeases(pub SharedWorld);

impl LeaseTables for SimLeases {
    async fn rows(&self, _table: &str, stream: &StreamFilter) -> Result<TableRows, BackendError> {
        let mut rows = TableRows::new(stream.clone());
        for (id, checkpoint) in self.0.lock().checkpoints() {
            rows.leases.insert(id.clone(), Lease::new(id, checkpoint));
        }
        Ok(rows)
    }
}

/// Virtual time: `sleep` runs the world forward instead of waiting.
#[derive(Debug, Clone)]
pub struct SimClock(pub SharedWorld);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().now()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        self.0.lock().advance(duration);
        std::future::ready(())
    }
}

#[derive(Debug, Default)]
struct StateInner {
    entries: Vec<(String, JournalEntry)>,
    leader: Option<LeaderToken>,
    next: u64,
}

/// The controller's state table, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStateStore(Arc<Mutex<StateInner>>);

impl MemoryStateStore {
    fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for MemoryStateStore {
    async fn ensure(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn history(
        &self,
        stream: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<JournalEntry>, BackendError> {
        Ok(self
            .lock()
            .entries
            .iter()
            .filter(|(s, e)| s == stream && e.record.started_at >= since)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn begin(
        &self,
        stream: &str,
        record: &OperationRecord,
        leader: &LeaderToken,
    ) -> Result<String, BackendError> {
        let mut s = self.lock();
        let current = s
            .leader
            .as_ref()
            .is_some_and(|l| l.owner == leader.owner && l.fence == leader.fence);
        if !current {
            return Err(BackendError::ConditionFailed {
                api: "TransactWriteItems",
                message: "leadership lost".to_string(),
            });
        }
        s.next += 1;
        let id = format!("op-{:08}", s.next);
        s.entries.push((
            stream.to_string(),
            JournalEntry {
                id: id.clone(),
                record: record.clone(),
                fence: Some(leader.fence),
            },
        ));
        Ok(id)
    }

    async fn finish(
        &self,
        stream: &str,
        id: &str,
        outcome: OperationOutcome,
    ) -> Result<(), BackendError> {
        let mut s = self.lock();
        match s
            .entries
            .iter_mut()
            .find(|(st, e)| st == stream && e.id == id)
        {
            Some((_, e)) if e.record.outcome == OperationOutcome::InFlight => {
                e.record.outcome = outcome;
                Ok(())
            }
            _ => Err(BackendError::ConditionFailed {
                api: "UpdateItem",
                message: format!("journal entry {id} is missing or no longer in flight"),
            }),
        }
    }

    async fn leader_record(&self) -> Result<Option<LeaderRecord>, BackendError> {
        Ok(self.lock().leader.as_ref().map(|l| LeaderRecord {
            owner: l.owner.clone(),
            fence: l.fence,
            expires_at: l.expires_at,
        }))
    }

    async fn acquire_leadership(
        &self,
        owner: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<LeaderToken>, BackendError> {
        let mut s = self.lock();
        if let Some(l) = &s.leader
            && l.owner != owner
            && l.expires_at > now
        {
            return Ok(None);
        }
        // As the DynamoDB store: the same owner keeps its fence; a new owner bumps it; a
        // released lease keeps its fence (release expires it, never deletes it).
        let fence = match &s.leader {
            None => 1,
            Some(l) if l.owner == owner => l.fence,
            Some(l) => l.fence.saturating_add(1),
        };
        let token = LeaderToken::new(
            owner,
            fence,
            add_saturating(now, TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX)),
            ttl,
            tokio::time::Instant::now(),
        );
        s.leader = Some(token.clone());
        Ok(Some(token))
    }

    async fn renew_leadership(
        &self,
        token: &LeaderToken,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<LeaderToken>, BackendError> {
        let mut s = self.lock();
        match &mut s.leader {
            Some(l) if l.owner == token.owner && l.fence == token.fence => {
                l.expires_at =
                    add_saturating(now, TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX));
                l.ttl = ttl;
                l.local_deadline = local_deadline(ttl);
                Ok(Some(l.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn release_leadership(&self, token: &LeaderToken) -> Result<(), BackendError> {
        let mut s = self.lock();
        if let Some(l) = s.leader.as_mut()
            && l.owner == token.owner
            && l.fence == token.fence
        {
            l.expires_at = DateTime::<Utc>::UNIX_EPOCH;
        }
        Ok(())
    }
}
