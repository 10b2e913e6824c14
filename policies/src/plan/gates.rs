//! May this candidate go ahead? The gates every split and merge passes, in a fixed order: the
//! blanket holds (stream not `ACTIVE`, an operation in flight), `selectPolicy: Disabled`, the
//! consumer groups' drain, then budgets, cooldown, min/max shards, rate policies and
//! `maxOperationsPerCycle`. The first gate that says no names the [`Limit`].

use super::limits::Limit;
use crate::budget::{self, BudgetLimit};
use crate::history::{History, OperationKind};
use crate::observation::{Observation, StreamStatus};
use crate::policy::{SelectPolicy, StreamPolicy};
use crate::rate;
use crate::shard_map::ShardMap;
use chrono::{DateTime, Utc};
use shardctl_lease::{DrainView, Lineage};

/// The state of the gates while candidates are accepted in priority order: what holds every
/// candidate, what each kind is allowed, and the counters of what was accepted so far.
pub(super) struct Gates<'a> {
    policy: &'a StreamPolicy,
    obs: &'a Observation,
    map: &'a ShardMap<'a>,
    /// A limit that holds every candidate (stream not `ACTIVE`, operation in flight).
    blanket: Option<Limit>,
    budgets: budget::ActiveBudgets,
    /// The minimum in force: the policy's, or a higher one from an active budget.
    pub(super) min_shards: u32,
    /// Where `min_shards` comes from: `policy` or `budget <label>`.
    pub(super) min_source: String,
    split_rate: rate::Allowance,
    merge_rate: rate::Allowance,
    split_cooldown: Option<DateTime<Utc>>,
    merge_cooldown: Option<DateTime<Utc>>,
    /// Splits accepted so far.
    pub(super) splits: u32,
    /// Merges accepted so far.
    pub(super) merges: u32,
    /// The stream's lineage, when a consumer group gates resharding.
    lineage: Option<Lineage>,
}

impl<'a> Gates<'a> {
    /// The gates for one plan: the budgets active at `now`, the minimum in force, the blanket
    /// hold, the cooldowns and rate allowances from `history`, and no operation accepted yet.
    pub(super) fn new(
        policy: &'a StreamPolicy,
        obs: &'a Observation,
        map: &'a ShardMap<'a>,
        history: &History,
        now: DateTime<Utc>,
    ) -> Self {
        let active = budget::evaluate(&policy.budgets, now);
        let (min_shards, min_source) = match &active.min_shards {
            Some(l) if l.value > policy.min_shards => (
                l.value.min(policy.max_shards),
                format!("budget {}", l.budget),
            ),
            _ => (policy.min_shards, "policy".to_string()),
        };
        let blanket = if obs.stream_status != StreamStatus::Active {
            Some(Limit::StreamNotActive {
                status: obs.stream_status,
            })
        } else {
            history.in_flight().map(|op| Limit::OperationInFlight {
                kind: op.kind,
                shard_ids: op.shard_ids.clone(),
                since: op.started_at,
            })
        };
        let cooldown = |last: Option<DateTime<Utc>>, d: crate::HumanDuration| {
            last.map(|t| d.after(t)).filter(|until| *until > now)
        };
        let open = map.open_count();
        Gates {
            policy,
            obs,
            map,
            blanket,
            budgets: active,
            min_shards,
            min_source,
            split_rate: rate::allowance(
                policy.split.select_policy,
                &policy.split.policies,
                OperationKind::Split,
                history,
                open,
                now,
            ),
            merge_rate: rate::allowance(
                policy.merge.select_policy,
                &policy.merge.policies,
                OperationKind::Merge,
                history,
                open,
                now,
            ),
            split_cooldown: cooldown(history.last(OperationKind::Merge), policy.split.cooldown),
            merge_cooldown: cooldown(history.last(OperationKind::Split), policy.merge.cooldown),
            splits: 0,
            merges: 0,
            lineage: (!policy.consumer_groups.is_empty()).then(|| {
                Lineage::new(
                    obs.shards
                        .iter()
                        .map(|s| (s.shard_id.as_str(), s.parents())),
                )
            }),
        }
    }
}

impl Gates<'_> {
    fn ops(&self) -> u32 {
        self.splits + self.merges
    }

    /// Open shards once the operations accepted so far have run.
    pub(super) fn open_after(&self) -> i64 {
        self.map.open_count() as i64 + self.splits as i64 - self.merges as i64
    }

    /// The drain gate: every listed ancestor of `shard_id` must be drained for every consumer
    /// group, by the one rule of [`shardctl_lease::DrainView`].
    pub(super) fn drain(&self, shard_id: &str) -> Result<(), Limit> {
        let Some(lineage) = &self.lineage else {
            return Ok(());
        };
        for group in &self.policy.consumer_groups {
            let state = self
                .obs
                .consumer_groups
                .iter()
                .find(|g| g.name == group.name);
            let hold = match state {
                Some(s) if s.error.is_none() => DrainView::new(lineage, &s.rows())
                    .first_undrained_ancestor(shard_id)
                    .map(|(ancestor, state)| (ancestor, state.to_string())),
                other => {
                    let detail = match other.and_then(|s| s.error.as_deref()) {
                        Some(e) => format!("lease table unreadable: {e}"),
                        None => "no drain state observed".to_string(),
                    };
                    lineage
                        .ancestors(shard_id)
                        .first()
                        .map(|a| ((*a).to_string(), detail))
                }
            };
            if let Some((ancestor, detail)) = hold {
                return Err(Limit::DrainPending {
                    group: group.name.clone(),
                    shard_id: ancestor,
                    detail,
                });
            }
        }
        Ok(())
    }

    /// The gates checked before anything else: the blanket hold, then `selectPolicy: Disabled`.
    pub(super) fn common(&self, kind: OperationKind) -> Result<(), Limit> {
        if let Some(l) = &self.blanket {
            return Err(l.clone());
        }
        let select = match kind {
            OperationKind::Split => self.policy.split.select_policy,
            OperationKind::Merge => self.policy.merge.select_policy,
        };
        if select == SelectPolicy::Disabled {
            return Err(Limit::Disabled { kind });
        }
        Ok(())
    }

    fn budget_limit(limit: &Option<BudgetLimit>, used: u32) -> Result<(), Limit> {
        match limit {
            Some(l) if used >= l.value => Err(Limit::Budget {
                budget: l.budget.clone(),
                allowed: l.value,
                until: l.until,
            }),
            _ => Ok(()),
        }
    }

    /// The gates checked last, in order: budget, cooldown, max/min shards, rate policies,
    /// `maxOperationsPerCycle`.
    pub(super) fn rest(&self, kind: OperationKind) -> Result<(), Limit> {
        let (budget, used, cooldown, allowance, select) = match kind {
            OperationKind::Split => (
                &self.budgets.splits,
                self.splits,
                self.split_cooldown,
                self.split_rate,
                self.policy.split.select_policy,
            ),
            OperationKind::Merge => (
                &self.budgets.merges,
                self.merges,
                self.merge_cooldown,
                self.merge_rate,
                self.policy.merge.select_policy,
            ),
        };
        Self::budget_limit(budget, used)?;
        if let Some(until) = cooldown {
            return Err(Limit::Cooldown {
                until,
                after: match kind {
                    OperationKind::Split => OperationKind::Merge,
                    OperationKind::Merge => OperationKind::Split,
                },
            });
        }
        match kind {
            OperationKind::Split if self.open_after() >= self.policy.max_shards as i64 => {
                return Err(Limit::MaxShards {
                    max: self.policy.max_shards,
                });
            }
            OperationKind::Merge if self.open_after() <= self.min_shards as i64 => {
                return Err(Limit::MinShards {
                    min: self.min_shards,
                    source: self.min_source.clone(),
                });
            }
            _ => {}
        }
        if used >= allowance.remaining {
            return Err(Limit::RateLimit {
                next_at: allowance.next_at,
                select_policy: select,
            });
        }
        if self.ops() >= self.policy.max_operations_per_cycle {
            return Err(Limit::MaxOperationsPerCycle {
                max: self.policy.max_operations_per_cycle,
            });
        }
        Ok(())
    }
}
