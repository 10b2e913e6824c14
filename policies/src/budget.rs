//! Which budgets are active at an instant, and the strictest limits they impose together.

use crate::policy::Budget;
use chrono::{DateTime, Utc};

/// The combined effect of the budgets active at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActiveBudgets {
    /// The lowest `splits` of the active budgets, with the budget that sets it and when it ends.
    pub splits: Option<BudgetLimit>,
    /// The lowest `merges` of the active budgets.
    pub merges: Option<BudgetLimit>,
    /// The highest `minShards` of the active budgets.
    pub min_shards: Option<BudgetLimit>,
}

/// One limit and the budget that imposes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetLimit {
    /// The limit value.
    pub value: u32,
    /// The budget's label (name or schedule).
    pub budget: String,
    /// When the budget's current window ends; `None` for a budget without schedule.
    pub until: Option<DateTime<Utc>>,
}

/// Whether `budget` is active at `now`, and until when: active from each firing of its schedule
/// for its duration. A budget without a schedule is always active.
pub fn active_window(budget: &Budget, now: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
    let (Some(schedule), Some(duration)) = (&budget.schedule, &budget.duration) else {
        return Some(None);
    };
    // The latest firing at or before `now`; the budget is active while that firing's window lasts.
    let fired = schedule.cron().find_previous_occurrence(&now, true).ok()?;
    let until = duration.after(fired);
    (now < until).then_some(Some(until))
}

/// The strictest limits of the budgets active at `now`.
pub fn evaluate(budgets: &[Budget], now: DateTime<Utc>) -> ActiveBudgets {
    let mut out = ActiveBudgets::default();
    for b in budgets {
        let Some(until) = active_window(b, now) else {
            continue;
        };
        let limit = |value| BudgetLimit {
            value,
            budget: b.label(),
            until,
        };
        if let Some(v) = b.splits
            && out.splits.as_ref().is_none_or(|l| v < l.value)
        {
            out.splits = Some(limit(v));
        }
        if let Some(v) = b.merges
            && out.merges.as_ref().is_none_or(|l| v < l.value)
        {
            out.merges = Some(limit(v));
        }
        if let Some(v) = b.min_shards
            && out.min_shards.as_ref().is_none_or(|l| v > l.value)
        {
            out.min_shards = Some(limit(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HumanDuration;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    fn budget(schedule: &str, duration: HumanDuration) -> Budget {
        Budget {
            name: Some("night".into()),
            schedule: Some(schedule.parse().expect("cron")),
            duration: Some(duration),
            splits: None,
            merges: Some(0),
            min_shards: None,
        }
    }

    #[test]
    fn window_spans_midnight() {
        let b = budget("0 22 * * *", HumanDuration::mins(8 * 60));
        assert_eq!(
            active_window(&b, at("2026-03-01T23:30:00Z")),
            Some(Some(at("2026-03-02T06:00:00Z")))
        );
        assert_eq!(
            active_window(&b, at("2026-03-02T05:59:59Z")),
            Some(Some(at("2026-03-02T06:00:00Z")))
        );
        assert_eq!(active_window(&b, at("2026-03-02T06:00:00Z")), None);
        assert_eq!(
            active_window(&b, at("2026-03-02T22:00:00Z")),
            Some(Some(at("2026-03-03T06:00:00Z")))
        );
    }

    #[test]
    fn strictest_active_budget_wins() {
        let mut a = budget("0 * * * *", HumanDuration::mins(30));
        a.name = Some("a".into());
        a.merges = Some(2);
        a.min_shards = Some(4);
        let mut b = budget("0 * * * *", HumanDuration::mins(30));
        b.name = Some("b".into());
        b.merges = Some(0);
        b.min_shards = Some(8);
        let mut inactive = budget("0 3 * * *", HumanDuration::mins(1));
        inactive.min_shards = Some(100);
        let active = evaluate(&[a, b, inactive], at("2026-03-01T10:10:00Z"));
        assert_eq!(
            active.merges.as_ref().map(|l| (l.value, l.budget.as_str())),
            Some((0, "b"))
        );
        assert_eq!(active.min_shards.map(|l| l.value), Some(8));
        assert_eq!(active.splits, None);
    }

    #[test]
    fn budget_without_schedule_is_always_active() {
        let b = Budget {
            name: None,
            schedule: None,
            duration: None,
            splits: Some(0),
            merges: None,
            min_shards: None,
        };
        let active = evaluate(&[b], at("2026-03-01T10:10:00Z"));
        assert_eq!(active.splits.map(|l| (l.value, l.until)), Some((0, None)));
    }
}
