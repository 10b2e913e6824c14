//! HPA-style rate limits: how many more splits (or merges) the rolling periods allow now.

use crate::history::{History, OperationKind};
use crate::policy::{RatePolicy, RatePolicyKind, SelectPolicy};
use chrono::{DateTime, Utc};

/// What the rate policies of one direction allow at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Operations that may still start now.
    pub remaining: u32,
    /// When at least one more becomes available, if none remain and it can be known.
    pub next_at: Option<DateTime<Utc>>,
}

/// The operations of `kind` that `policies` still allow at `now`, given the history and the
/// current number of open shards. `Shards` counts operations in the period; `Percent` allows
/// `ceil(base * value / 100)` where `base` is the open shard count at the start of the period.
pub fn allowance(
    select: SelectPolicy,
    policies: &[RatePolicy],
    kind: OperationKind,
    history: &History,
    open_now: usize,
    now: DateTime<Utc>,
) -> Allowance {
    if select == SelectPolicy::Disabled {
        return Allowance {
            remaining: 0,
            next_at: None,
        };
    }
    let mut combined: Option<Allowance> = None;
    for p in policies {
        let since = p.period.before(now);
        let mut used = 0u32;
        let mut net_change = 0i64;
        let mut oldest_of_kind: Option<DateTime<Utc>> = None;
        for op in history
            .effective()
            .filter(|o| o.started_at > since && o.started_at <= now)
        {
            match op.kind {
                OperationKind::Split => net_change += 1,
                OperationKind::Merge => net_change -= 1,
            }
            if op.kind == kind {
                used += 1;
                oldest_of_kind =
                    Some(oldest_of_kind.map_or(op.started_at, |t| t.min(op.started_at)));
            }
        }
        let allowed = match p.kind {
            RatePolicyKind::Shards => p.value as u64,
            RatePolicyKind::Percent => {
                let base = (open_now as i64 - net_change).max(1) as u64;
                base.saturating_mul(p.value as u64).div_ceil(100)
            }
        };
        let remaining = allowed.saturating_sub(used as u64).min(u32::MAX as u64) as u32;
        let next_at = (remaining == 0)
            .then(|| oldest_of_kind.map(|t| p.period.after(t)))
            .flatten();
        let this = Allowance { remaining, next_at };
        combined = Some(match combined {
            None => this,
            Some(prev) => match select {
                SelectPolicy::Max => Allowance {
                    remaining: prev.remaining.max(this.remaining),
                    next_at: earliest(prev.next_at, this.next_at),
                },
                _ => Allowance {
                    remaining: prev.remaining.min(this.remaining),
                    next_at: latest(prev.next_at, this.next_at),
                },
            },
        });
    }
    let mut out = combined.unwrap_or(Allowance {
        remaining: 0,
        next_at: None,
    });
    if out.remaining > 0 {
        out.next_at = None;
    }
    out
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HumanDuration;
    use crate::history::{OperationOutcome, OperationRecord};

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + min * 60, 0).expect("time")
    }

    fn history(ops: &[(OperationKind, i64, OperationOutcome)]) -> History {
        History {
            operations: ops
                .iter()
                .map(|&(kind, at, outcome)| OperationRecord {
                    kind,
                    shard_ids: vec!["s".into()],
                    started_at: t(at),
                    outcome,
                })
                .collect(),
        }
    }

    fn shards(value: u32, mins: u64) -> RatePolicy {
        RatePolicy {
            kind: RatePolicyKind::Shards,
            value,
            period: HumanDuration::mins(mins),
        }
    }

    fn percent(value: u32, mins: u64) -> RatePolicy {
        RatePolicy {
            kind: RatePolicyKind::Percent,
            value,
            period: HumanDuration::mins(mins),
        }
    }

    use OperationKind::{Merge, Split};
    use OperationOutcome::{Failed, Succeeded};

    #[test]
    fn shards_policy_counts_operations_in_the_period() {
        let h = history(&[
            (Split, 0, Succeeded),
            (Split, 3, Succeeded),
            (Split, 4, Failed),
        ]);
        let a = allowance(SelectPolicy::Max, &[shards(2, 5)], Split, &h, 10, t(4));
        assert_eq!(a.remaining, 0);
        assert_eq!(a.next_at, Some(t(5)));
        let a = allowance(SelectPolicy::Max, &[shards(2, 5)], Split, &h, 10, t(5));
        assert_eq!(a.remaining, 1, "the split at minute 0 left the period");
    }

    #[test]
    fn percent_uses_shard_count_at_period_start_and_rounds_up() {
        // 10 open now after 2 splits: 8 at the start; 50% of 8 = 4 allowed, 2 used.
        let h = history(&[(Split, 1, Succeeded), (Split, 2, Succeeded)]);
        let a = allowance(SelectPolicy::Max, &[percent(50, 5)], Split, &h, 10, t(3));
        assert_eq!(a.remaining, 2);
        // 10% of 3 shards rounds up to 1.
        let a = allowance(
            SelectPolicy::Max,
            &[percent(10, 5)],
            Merge,
            &History::default(),
            3,
            t(3),
        );
        assert_eq!(a.remaining, 1);
    }

    #[test]
    fn select_policy_picks_most_or_least_permissive() {
        let policies = [shards(1, 5), percent(100, 5)];
        let h = History::default();
        assert_eq!(
            allowance(SelectPolicy::Max, &policies, Split, &h, 8, t(0)).remaining,
            8
        );
        assert_eq!(
            allowance(SelectPolicy::Min, &policies, Split, &h, 8, t(0)).remaining,
            1
        );
        assert_eq!(
            allowance(SelectPolicy::Disabled, &policies, Split, &h, 8, t(0)).remaining,
            0
        );
    }

    #[test]
    fn merges_do_not_consume_the_split_allowance() {
        let h = history(&[(Merge, 1, Succeeded), (Merge, 2, Succeeded)]);
        assert_eq!(
            allowance(SelectPolicy::Max, &[shards(2, 5)], Split, &h, 6, t(3)).remaining,
            2
        );
    }
}
